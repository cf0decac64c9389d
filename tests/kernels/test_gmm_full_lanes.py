"""The full-covariance E-step with the points in the vector lanes (``gmm_full_lanes``): its
tile plan, its sums against the reference at every remainder of a chunk and a block, with
sample weights and a component far from every point, independence from the thread count, and which
kernel ``fit_stats`` sends a call to."""

import importlib.util

import numpy as np
import pytest

from tests.kernels.test_gmm_estep_full import _check
from tests.kernels.test_gmm_sample_weight import _problem, _sample_weight

HAVE_NUMBA = importlib.util.find_spec("numba") is not None
pytestmark = pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed")

DTYPES = pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])


@pytest.mark.parametrize("D", range(1, 17))
def test_tiles_cover_the_upper_triangle_once(D):
    """Every (i, j >= i) in exactly one tile, every row's first-order sum in one, and no
    tile holds more sums than registers allow (a lone row's at most)."""
    from caproute.kernels.numba import gmm_full_lanes as F

    seen, first = [], []
    for i0, rows, j0, j1 in F._tiles(D):
        pairs = [(i, j) for i in range(i0, i0 + rows) for j in range(max(i, j0), j1)]
        seen += pairs
        if j0 == i0:
            first += range(i0, i0 + rows)
        assert rows == 1 or len(pairs) + (rows if j0 == i0 else 0) <= F._MAX_SUMS
    assert sorted(seen) == [(i, j) for i in range(D) for j in range(i, D)]
    assert sorted(first) == list(range(D))
    pairs = [(i, j) for i in range(D) for j in range(i, D)]
    assert sorted(F._tri(D, i, j) for i, j in pairs) == list(range(D * (D + 1) // 2))


def test_wide_rows_go_in_pairs_of_column_segments():
    from caproute.kernels.numba import gmm_full_lanes as F

    tiles = F._tiles(16)
    assert tiles[:2] == [(0, 2, 0, F._SEGMENT), (0, 2, F._SEGMENT, 16)]
    assert all(rows > 1 for _, rows, _, _ in tiles)


@DTYPES
@pytest.mark.parametrize("n", [1, 7, 8, 9, 17, 127, 128, 129, 256, 257, 1000])
def test_every_remainder_matches_the_reference(dtype, n):
    """n below a chunk (8 float64 / 16 float32 points), at and past one, and past a block
    (128 / 256 points): padding lanes add nothing."""
    _check(_problem("full", n, 4, dtype, seed=n), "full", dtype)


@DTYPES
@pytest.mark.parametrize("D", [4, 8, 16])
def test_weighted_matches_the_reference(dtype, D):
    n = 300
    problem = _problem("full", n, D, dtype, seed=300 + D)
    _check(problem, "full", dtype, _sample_weight(np.random.default_rng(D), n, dtype))


@DTYPES
def test_a_component_far_from_every_point_takes_no_share(dtype):
    """A component 1e4 away from every point: its responsibilities fall below the cut
    (exactly 0, no NaN), its sums stay 0, and the others match the reference."""
    from caproute.kernels.numba.gmm_estep import fit_stats

    X, weights, means, prec_chol, shift = _problem("full", 200, 8, dtype, seed=9)
    means = np.array(means, copy=True)
    means[1] += 1e4
    problem = (X, weights, means, prec_chol, shift)
    _check(problem, "full", dtype)
    got = fit_stats(*problem[:4], "full", shift=shift)
    assert got.nk[1] == 0.0
    assert np.all(got.sxx[1] == 0.0)
    assert np.isfinite(got.loglik)


@DTYPES
def test_results_do_not_depend_on_the_threads(dtype):
    import numba

    from caproute.kernels.numba import gmm_full_lanes as F

    X, weights, means, prec_chol, shift = _problem("full", 3000, 8, dtype, seed=4)
    D = X.shape[1]
    pc = np.asarray(prec_chol, dtype=np.float64)
    lk = np.log(np.asarray(weights, dtype=np.float64))
    lk = (lk + np.log(np.diagonal(pc, axis1=1, axis2=2)).sum(axis=1) - 3.0).astype(dtype)
    nmuU = -np.matmul(np.asarray(means, np.float64)[:, None], pc)[:, 0].astype(dtype)
    args = (X, np.empty(0), False, pc.astype(dtype), nmuU, lk, np.asarray(shift, dtype), 8)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = F.full_stats(*args)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = F.full_stats(*args)
    finally:
        numba.set_num_threads(before)
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)
    assert one[2].shape == (len(means), D, D)


@pytest.mark.parametrize("D, lanes", [(4, True), (5, False), (12, True), (16, True), (17, False)])
def test_fit_stats_sends_full_covariances_of_its_feature_counts(monkeypatch, D, lanes):
    from caproute.kernels.numba import gmm_estep, gmm_full_lanes

    calls = []
    real = gmm_full_lanes.full_stats
    monkeypatch.setattr(
        gmm_full_lanes, "full_stats", lambda *a: calls.append(a[0].shape) or real(*a)
    )
    X, weights, means, prec_chol, shift = _problem("full", 50, D, np.float64, seed=D)
    gmm_estep.fit_stats(X, weights, means, prec_chol, "full", shift=shift)
    assert bool(calls) == lanes


def _load(X, start, n, xb, dlit):
    import numba

    from caproute.kernels.numba import gmm_full_lanes as F
    from caproute.kernels.numba.vector_width import prefer_wide_vectors

    global _LOAD
    if _LOAD is None:

        @numba.njit
        def run(X, start, n, xb, dlit):
            prefer_wide_vectors()
            F._load_chunks(X, start, n, xb, dlit)

        _LOAD = run
    _LOAD(X, start, n, xb, dlit)


_LOAD = None


@pytest.mark.parametrize(
    "dtype, D",
    [(np.float64, 4), (np.float64, 8), (np.float64, 16), (np.float32, 8), (np.float32, 16)],
)
def test_chunks_load_transposed(dtype, D):
    """_load_chunks: the squares' transposes (D a multiple of the lanes) and the joined
    columns of smaller squares (D a power of two below them) give X's rows in the lanes."""
    from caproute.kernels.numba import gmm_full_lanes as F

    L = F.lanes_of(dtype)
    assert F._transposes(D, L)
    X = np.arange(100 * D, dtype=dtype).reshape(100, D)
    xb = np.full((5, D, L), -1.0, dtype=dtype)
    _load(X, 3, 4, xb, (0,) * D)
    np.testing.assert_array_equal(xb[:4], X[3 : 3 + 4 * L].reshape(4, L, D).transpose(0, 2, 1))
    assert np.all(xb[4] == -1.0)


@pytest.mark.parametrize("D", [1, 3, 5, 6, 12])
def test_other_feature_counts_take_the_loop(D):
    from caproute.kernels.numba import gmm_full_lanes as F

    assert not F._transposes(D, 8)
