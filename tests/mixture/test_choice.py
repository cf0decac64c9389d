"""choice_without_replacement against RandomState.choice(n, size, replace=False): the same
indices, the generator left in the same state, and memory that does not grow with n."""

import tracemalloc

import numpy as np
import pytest

from caproute.mixture._choice import _replay_choice, choice_without_replacement


def _assert_same_state(a, b):
    """Two RandomStates in the same state: get_state() element for element, and their next
    draws (a Gaussian among them, which reads the cached one when there is one)."""
    sa, sb = a.get_state(), b.get_state()
    assert sa[0] == sb[0]
    np.testing.assert_array_equal(sa[1], sb[1])
    assert sa[1].dtype == sb[1].dtype
    assert sa[2:] == sb[2:]  # pos, has_gauss, cached gaussian
    np.testing.assert_array_equal(a.uniform(size=5), b.uniform(size=5))
    assert a.standard_normal() == b.standard_normal()
    np.testing.assert_array_equal(a.randint(0, 2**40, size=3), b.randint(0, 2**40, size=3))


def _check(choose, n, size, seed, advance=0, gauss=False):
    """``choose(rng, n, size)`` against ``rng.choice`` from two equal RandomStates, after
    ``advance`` raw 32-bit draws and, if ``gauss``, one Gaussian (which caches a second)."""
    a, b = np.random.RandomState(seed), np.random.RandomState(seed)
    for rng in (a, b):
        rng._bit_generator.random_raw(advance)
        if gauss:
            rng.standard_normal()
    expected = a.choice(n, size=size, replace=False)
    got = choose(b, n, size)
    assert got.dtype == expected.dtype == np.int64
    assert got.shape == expected.shape == (size,)
    np.testing.assert_array_equal(got, expected)
    _assert_same_state(a, b)


@pytest.mark.parametrize("n", range(1, 11))
def test_replay_exhaustive_small(n):
    """The replay itself (which the public function leaves to rng.choice this small) for every
    size, and many seeds and starting positions in the stream."""
    for size in range(n + 1):
        for seed in range(25):
            _check(_replay_choice, n, size, seed, advance=seed * 37 % 700, gauss=seed % 3 == 0)


@pytest.mark.parametrize("n", [37, 100, 257, 1000])
def test_replay_medium(n):
    """The replay where its segments span many steps and powers of two (for n <= 10 each
    segment is a single step)."""
    for size in (1, 2, 5, n // 3, n - 1):
        for seed in range(15):
            _check(_replay_choice, n, size, seed, advance=seed * 53 % 900)


@pytest.mark.parametrize(
    ("n", "size"),
    [
        (4097, 0),
        (4097, 1),
        (4097, 64),
        (5000, 3),
        (100_003, 2),
        (100_003, 10),
        (100_003, 1562),
        (2_000_000, 1),
        (2_000_000, 7),
        (2_000_000, 100),
        (2_000_000, 31_250),
    ],
)
def test_large_n(n, size):
    for seed in (0, 1, 12345):
        _check(choice_without_replacement, n, size, seed)


@pytest.mark.parametrize("advance", [0, 1, 2, 311, 623, 624, 625, 1248, 5000])
def test_mid_stream(advance):
    """A RandomState whose MT19937 is anywhere in its 624-word block (the refill happens
    before a draw at position 624, not after the draw at 623), with and without a cached
    Gaussian."""
    for gauss in (False, True):
        _check(choice_without_replacement, 300_007, 5, 7, advance=advance, gauss=gauss)


def test_seed_sequence_state():
    """A RandomState over MT19937(seed), seeded through SeedSequence: it starts at pos 623."""
    a = np.random.RandomState(np.random.MT19937(11))
    b = np.random.RandomState(np.random.MT19937(11))
    assert a.get_state()[2] == 623
    np.testing.assert_array_equal(
        choice_without_replacement(a, 123_457, 6), b.choice(123_457, 6, replace=False)
    )
    _assert_same_state(a, b)


def test_gauss_untouched():
    rng = np.random.RandomState(3)
    rng.standard_normal()  # draws a pair and caches the second
    before = rng.get_state()
    assert before[3] == 1
    choice_without_replacement(rng, 50_000, 4)
    after = rng.get_state()
    assert after[3:] == before[3:]


@pytest.mark.parametrize(("n", "size"), [(5000, 5000), (5000, 4999), (20_000, 3000), (9, 9)])
def test_replay_large_sample(n, size):
    """The replay with a sample of the order of n (the public function calls rng.choice for
    those), up to the whole permutation."""
    for seed in (0, 5):
        _check(_replay_choice, n, size, seed, advance=seed)


@pytest.mark.parametrize("n", [0, 1, 4096, 4097, 100_000])
def test_zero_size(n):
    """Even with nothing drawn, choice shuffles all of arange(n) and so advances the stream."""
    _check(choice_without_replacement, n, 0, 4)
    _check(_replay_choice, n, 0, 4)


def test_fallbacks_and_errors():
    # another bit generator than MT19937: rng.choice itself
    a = np.random.RandomState(np.random.PCG64(1))
    b = np.random.RandomState(np.random.PCG64(1))
    np.testing.assert_array_equal(
        choice_without_replacement(a, 10_000, 3), b.choice(10_000, 3, replace=False)
    )
    assert a.uniform() == b.uniform()
    # NumPy's own errors, before any draw
    rng = np.random.RandomState(0)
    with pytest.raises(ValueError, match="Cannot take a larger sample than population"):
        choice_without_replacement(rng, 10, 11)
    with pytest.raises(ValueError, match="Negative dimensions are not allowed"):
        choice_without_replacement(rng, 100_000, -1)
    with pytest.raises(ValueError, match="a must be greater than 0 unless no samples are taken"):
        choice_without_replacement(rng, 0, 1)
    _assert_same_state(rng, np.random.RandomState(0))
    with pytest.raises(TypeError, match="rng must be a numpy.random.RandomState, got Generator"):
        choice_without_replacement(np.random.default_rng(0), 100_000, 3)
    with pytest.raises(NotImplementedError, match=r"supports n <= 2\*\*32, got n=4294967297"):
        choice_without_replacement(np.random.RandomState(0), 2**32 + 1, 3)


def _peak_bytes(n, size):
    rng = np.random.RandomState(0)
    tracemalloc.start()
    try:
        choice_without_replacement(rng, n, size)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_flat_in_n():
    choice_without_replacement(np.random.RandomState(0), 10_000, 3)  # compile / load first
    small, large = _peak_bytes(100_000, 10), _peak_bytes(1_000_000, 10)
    assert abs(large - small) < 200_000, (small, large)
    assert large < 400_000, large  # rng.choice: 8 MB
