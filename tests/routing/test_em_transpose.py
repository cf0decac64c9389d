"""The Numba EM kernel's float32 vote transpose (hand-written 8 x 8 or 16 x 16 shuffle tiles)
and its prefetch of the next sample's votes: exact against NumPy's transpose, every remainder
of the tiles, and per-sample results independent of the batch and its split over threads."""

import numba
import numpy as np
import pytest

from caproute.kernels.numba import em_routing as k


@pytest.mark.parametrize(
    "rows, cols", [(8, 8), (16, 24), (13, 8), (8, 21), (19, 37), (3, 5), (288, 512)]
)
def test_transpose_f32_exact(rows, cols):
    x = np.random.default_rng(rows * cols).normal(size=(rows, cols)).astype(np.float32)
    y = np.full((cols, rows), np.nan, dtype=np.float32)
    k._transpose_f32(x, y)
    np.testing.assert_array_equal(y, x.T)


def _run(votes, a_in, beta_u, beta_a):
    return k.em_routing(
        votes,
        a_in,
        beta_u,
        beta_a,
        inverse_temperature=np.array([0.5, 1.0, 1.5]),
        min_var=1e-4,
        eps=1e-8,
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n_in, n_out, dim", [(19, 3, 5), (24, 4, 16), (9, 2, 4)])
def test_batch_matches_single_samples(dtype, n_in, n_out, dim):
    """Each sample alone equals it inside a batch split over threads (the prefetch reads the
    next sample's votes only as a hint; the transpose's remainders are covered)."""
    rng = np.random.default_rng(n_in)
    batch = 7
    votes = rng.normal(size=(batch, n_in, n_out, dim)).astype(dtype)
    a_in = rng.uniform(0.05, 1.0, size=(batch, n_in)).astype(dtype)
    beta_u = rng.normal(size=(n_out, dim)).astype(dtype)
    beta_a = rng.normal(size=n_out).astype(dtype)
    saved = numba.get_num_threads()
    try:
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        mu, act, R = _run(votes, a_in, beta_u, beta_a)
    finally:
        numba.set_num_threads(saved)
    assert np.all(np.isfinite(mu)) and np.all(np.isfinite(R))
    for n in range(batch):
        m1, a1, r1 = _run(votes[n : n + 1], a_in[n : n + 1], beta_u, beta_a)
        np.testing.assert_array_equal(m1[0], mu[n])
        np.testing.assert_array_equal(a1[0], act[n])
        np.testing.assert_array_equal(r1[0], R[n])
    if dtype == "float32":  # the float32 kernel against the float64 one
        m64, a64, _ = _run(votes.astype(np.float64), a_in.astype(np.float64), beta_u, beta_a)
        np.testing.assert_allclose(mu, m64, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(act, a64, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("tile, n", [("_tile8", 8), ("_tile16", 16)])
def test_tile_exact_inside_larger_arrays(tile, n):
    """Both tile sizes (the kernel uses one, chosen by the CPU's register width; the other is
    checked here): an n x n tile at an offset, with row strides, and nothing else written."""
    f = getattr(k, tile)

    @numba.njit
    def run(x, xo, xs, y, yo, ys):
        f(x, xo, xs, y, yo, ys)

    rows, cols, r0, c0 = n + 3, n + 5, 2, 3
    x = np.random.default_rng(n).normal(size=(rows, cols)).astype(np.float32)
    y = np.full((cols, rows), np.nan, dtype=np.float32)
    run(x.reshape(-1), r0 * cols + c0, cols, y.reshape(-1), c0 * rows + r0, rows)
    np.testing.assert_array_equal(y[c0 : c0 + n, r0 : r0 + n], x[r0 : r0 + n, c0 : c0 + n].T)
    y[c0 : c0 + n, r0 : r0 + n] = np.nan
    assert np.isnan(y).all()
