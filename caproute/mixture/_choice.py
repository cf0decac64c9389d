"""``RandomState.choice(n, size=size, replace=False)`` without its array of size ``n``.

scikit-learn's ``init_params="random_from_data"`` draws
``random_state.choice(n_samples, size=n_components, replace=False)``. A legacy ``RandomState``
does that (``numpy/random/mtrand.pyx``) as ``self.permutation(n)[:size]``: a Fisher-Yates
shuffle of ``arange(n)`` (``_shuffle_raw``: for ``i = n-1, ..., 1``, ``j = random_interval(i)``,
swap ``x[i]`` and ``x[j]``), which allocates ``n`` int64 (80 MB for ``n = 1e7``) to return a
handful. ``random_interval`` (``numpy/random/src/distributions/distributions.c``) draws 32-bit
words from the bit generator under the smallest all-ones mask ``>= i`` until one is ``<= i``
(64-bit words when ``i > 0xFFFFFFFF``). The MT19937 of a RandomState has no buffered half word
(each 32-bit draw is one ``mt19937_next``), and the shuffle does not touch the RandomState's
cached Gaussian (``has_gauss``).

:func:`choice_without_replacement` replays that stream from a copy of the MT19937 state and
keeps only what ends up in the first ``size`` positions (the kernel's docstring,
``caproute/kernels/numba/permutation_prefix.py``, says how), then sets the generator to the state
the shuffle leaves. Same indices, same state afterwards, memory ``O(size)`` (about 150
bytes per sample) plus 160 KB.
"""

from __future__ import annotations

import operator

import numpy as np

# Up to here (or for a sample of more than 1/64 of the population, where the sample itself is
# of the order of n), ``rng.choice`` is called as it is: its memory is of no concern.
_SMALL_N = 4096
_LARGE_FRACTION = 64


def choice_without_replacement(rng, n, size):
    """Exactly ``rng.choice(n, size=size, replace=False)`` for a legacy NumPy RandomState.

    The same int64 array, and ``rng`` left in exactly the same state afterwards (MT19937 key
    and position; the cached Gaussian is not touched, as ``choice`` does not touch it), using
    memory independent of ``n`` (``O(size)``).

    Parameters
    ----------
    rng : numpy.random.RandomState
        The generator to draw from; advanced as ``rng.choice`` advances it.
    n : int
        Population size: the sample is drawn from ``arange(n)``.
    size : int
        Number of indices drawn, ``0 <= size <= n``.

    Returns
    -------
    indices : ndarray of shape (size,), dtype int64
        ``rng.choice(n, size=size, replace=False)``.

    Raises
    ------
    TypeError
        If ``rng`` is not a ``numpy.random.RandomState``.
    NotImplementedError
        If ``n > 2**32`` (then NumPy draws 64-bit words, not replayed here).

    Notes
    -----
    For ``n <= 4096``, for ``size > n / 64``, and for a RandomState built on another bit
    generator than MT19937, this calls ``rng.choice`` itself (with its memory of ``8 n``
    bytes), as it does for invalid arguments, which then raise NumPy's errors.
    Otherwise it replays the ``1.4 n`` or so 32-bit draws of the shuffle two to four times:
    0.1 to 0.25 s for ``n = 1e7`` and ``size`` from 3 to 1000 (``rng.choice``: 0.3 to 0.45 s),
    0.45 to 1.5 s for ``n = 5e7``, measured on a busy 2-core machine.

    Examples
    --------
    >>> import numpy as np
    >>> from caproute.mixture._choice import choice_without_replacement
    >>> a, b = np.random.RandomState(0), np.random.RandomState(0)
    >>> idx = choice_without_replacement(a, 100_000, 3)
    >>> bool((idx == b.choice(100_000, 3, replace=False)).all())
    True
    >>> bool(a.uniform() == b.uniform())
    True
    """
    if not isinstance(rng, np.random.RandomState):
        raise TypeError(f"rng must be a numpy.random.RandomState, got {type(rng).__name__}")
    n = operator.index(n)
    size = operator.index(size)
    if (
        n <= _SMALL_N
        or size < 0
        or size > n // _LARGE_FRACTION
        or not isinstance(rng._bit_generator, np.random.MT19937)
    ):
        return rng.choice(n, size=size, replace=False)
    if n > 2**32:
        raise NotImplementedError(
            f"choice_without_replacement supports n <= 2**32, got n={n}: above, NumPy's "
            "shuffle draws 64-bit words (two MT19937 outputs each), which are not replayed "
            "here; call rng.choice(n, size, replace=False) instead"
        )
    return _replay_choice(rng, n, size)


def _replay_choice(rng, n, size):
    """The replay itself, for any ``0 <= size <= n <= 2**32`` (MT19937 RandomState)."""
    from ..kernels.numba.permutation_prefix import permutation_prefix

    bit_generator = rng._bit_generator
    with bit_generator.lock:
        state = bit_generator.state["state"]
        key = np.array(state["key"], dtype=np.uint32)  # a copy, advanced by the kernel
        indices, pos = permutation_prefix(key, np.int64(state["pos"]), np.int64(n), np.int64(size))
        bit_generator.state = {"bit_generator": "MT19937", "state": {"key": key, "pos": int(pos)}}
    return indices
