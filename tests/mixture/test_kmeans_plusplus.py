"""The chunked, flat-memory k-means++ seeding against scikit-learn's ``kmeans_plusplus``.

The seeding sums potentials over chunks where scikit-learn takes one BLAS dot product, so the
two can differ in the last bits, and a random draw that falls within that much of a point's
boundary in the cumulative sum (or two candidates whose potentials tie in exact arithmetic)
can go either way. ``_sklearn_margins`` replays scikit-learn's algorithm with its own private
helpers (checked to give ``kmeans_plusplus``'s indices) and measures, for every centre, how
clearly its random choice was decided; the indices must agree up to the first centre decided
by less than the dtype's rounding, and entirely in almost every run.
"""

import tracemalloc

import numpy as np
import pytest
from sklearn.cluster import kmeans_plusplus
from sklearn.datasets import make_blobs
from sklearn.metrics.pairwise import _euclidean_distances
from sklearn.utils.extmath import row_norms

from caproute.mixture._kmeans_plusplus import _pairwise_sum, kmeans_plusplus_indices

# a choice decided by less than this (relative to the potential) may go either way: a float32
# potential is scikit-learn's float32 BLAS sum here and a float64 sum rounded once in caproute
MARGIN = {np.float32: 1e-6, np.float64: 1e-10}


def _chunker(X, w, sizes):
    """chunks() over X and w, in chunks of ``sizes`` (an int, or a cycle of lengths)."""
    sizes = [sizes] if np.isscalar(sizes) else list(sizes)

    def chunks():
        start, i = 0, 0
        while start < X.shape[0]:
            stop = min(X.shape[0], start + sizes[i % len(sizes)])
            yield start, X[start:stop], None if w is None else w[start:stop]
            start, i = stop, i + 1

    return chunks


def _ours(X, K, w, seed, sizes, n_local_trials=None):
    rng = np.random.RandomState(seed)
    idx, centers = kmeans_plusplus_indices(
        _chunker(X, w, sizes),
        X.shape[0],
        X.shape[1],
        K,
        random_state=rng,
        weighted=w is not None,
        dtype=X.dtype,
        n_local_trials=n_local_trials,
    )
    return idx, centers, rng


def _sklearn(X, K, w, seed, n_local_trials=None):
    rng = np.random.RandomState(seed)
    centers, idx = kmeans_plusplus(
        X, K, sample_weight=w, random_state=rng, n_local_trials=n_local_trials
    )
    return idx, centers, rng


def _sklearn_margins(X, K, w, seed, n_local_trials=None):
    """scikit-learn 1.9's ``_kmeans_plusplus`` replayed: (indices, how many leading centres
    were decided by at least MARGIN).

    A centre's margin: the smallest distance of a draw to a boundary of the cumulative sum
    and the gap from the best candidate to the next distinct one, relative to the potential;
    0 once the potential is rounding noise (every point at a centre, up to rounding).
    """
    rs = np.random.RandomState(seed)
    n = X.shape[0]
    w = np.ones(n, X.dtype) if w is None else w.astype(X.dtype)
    xn = row_norms(X, squared=True)
    if n_local_trials is None:
        n_local_trials = 2 + int(np.log(K))
    tol = MARGIN[X.dtype.type]
    floor = 100 * n * np.finfo(np.float64).eps * float(np.max(xn)) * float(np.max(w))
    cdf = (w / w.sum()).astype(np.float64).cumsum()
    cdf /= cdf[-1]
    u = rs.random_sample()
    idx = [int(cdf.searchsorted(u, side="right"))]
    decided = 1 if np.min(np.abs(cdf - u)) >= 1e-12 else 0
    closest = _euclidean_distances(X[idx], X, Y_norm_squared=xn, squared=True)
    pot = closest @ w
    for _ in range(1, K):
        rand_vals = rs.uniform(size=n_local_trials) * pot
        cumsum = np.cumsum(w * closest)
        ids = np.clip(np.searchsorted(cumsum, rand_vals), None, n - 1)
        dist = _euclidean_distances(X[ids], X, Y_norm_squared=xn, squared=True)
        np.minimum(closest, dist, out=dist)
        cand_pot = (dist @ w.reshape(-1, 1)).ravel()
        best = int(np.argmin(cand_pot))
        margin = 0.0
        if float(pot[0]) > floor:
            gaps = np.abs(cumsum.astype(np.float64)[None, :] - rand_vals[:, None])
            margin = np.min(gaps) / float(pot[0])
            others = cand_pot[ids != ids[best]]
            if others.size:
                margin = min(margin, (float(others.min()) - float(cand_pot[best])) / float(pot[0]))
        if decided == len(idx) and margin >= tol:
            decided += 1
        pot, closest = cand_pot[[best]], dist[best]
        idx.append(int(ids[best]))
    return np.array(idx), decided


def _same_state(a, b):
    sa, sb = a.get_state(), b.get_state()
    return sa[0] == sb[0] and np.array_equal(sa[1], sb[1]) and sa[2:] == sb[2:]


def _check(X, K, w, seed, sizes, n_local_trials=None):
    """Compare with scikit-learn; True when every centre agreed (False: an undecided draw)."""
    ref_idx, ref_centers, ref_rng = _sklearn(X, K, w, seed, n_local_trials)
    replay, decided = _sklearn_margins(X, K, w, seed, n_local_trials)
    np.testing.assert_array_equal(replay, ref_idx)  # the replay is scikit-learn's algorithm
    idx, centers, rng = _ours(X, K, w, seed, sizes, n_local_trials)
    assert idx.dtype == np.int64 and idx.shape == (K,)
    assert centers.dtype == X.dtype and centers.shape == (K, X.shape[1])
    np.testing.assert_array_equal(centers, X[idx])
    assert _same_state(rng, ref_rng)  # consumed exactly as scikit-learn consumes it
    np.testing.assert_array_equal(idx[:decided], ref_idx[:decided])
    if decided == K:
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_array_equal(centers, ref_centers)
    return np.array_equal(idx, ref_idx)


def _data(kind, n, D, seed, dtype):
    rng = np.random.RandomState(seed)
    if kind == "blobs":
        X = make_blobs(n, D, centers=6, cluster_std=0.5 + seed % 3, random_state=seed)[0]
    else:
        X = rng.uniform(-2, 3, size=(n, D))
    return X.astype(dtype)


def _weights(n, seed, zero_fraction=0.25):
    rng = np.random.RandomState(1000 + seed)
    w = rng.uniform(0, 3, n)
    w[rng.uniform(size=n) < zero_fraction] = 0
    return w


SHAPES = [(300, 2), (1000, 5), (2000, 8), (777, 3)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", ["blobs", "uniform"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_matches_sklearn(dtype, kind, weighted):
    agreed = 0
    for seed in range(30):
        n, D = SHAPES[seed % len(SHAPES)]
        X = _data(kind, n, D, seed, dtype)
        w = _weights(n, seed) if weighted else None
        K = 1 + seed % 20
        sizes = [97, 256, 1000, 4096, n][seed % 5]  # most do not divide n; the last is one chunk
        agreed += _check(X, K, w, seed, sizes)
    assert agreed >= 28, agreed


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_n_local_trials_and_irregular_chunks(dtype):
    for seed in range(12):
        X = _data("blobs", 500, 4, seed, dtype)
        w = _weights(500, seed) if seed % 2 else None
        trials = [1, 2, 5, None][seed % 4]
        assert _check(X, 10, w, seed, [1, 7, 130, 3, 64, 255], n_local_trials=trials)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tiny_data_every_chunk_size(dtype):
    runs = agreed = 0
    for seed in range(25):
        rng = np.random.RandomState(seed)
        n, D = rng.randint(1, 12), rng.randint(1, 4)
        X = rng.normal(size=(n, D)).astype(dtype)
        w = None
        if seed % 2:
            w = _weights(n, seed, zero_fraction=0.3)
            w[rng.randint(n)] = 1.5  # at least one positive weight
        for K in range(1, n + 1):
            for size in range(1, 8):
                runs += 1
                agreed += _check(X, K, w, seed, size, n_local_trials=[None, 1, 3][seed % 3])
    # the rest are draws among points all at distance ~0 (rounding noise decides them) or
    # exact ties between two candidates: scikit-learn's rounding breaks those
    assert agreed >= 0.9 * runs, (agreed, runs)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_more_clusters_than_distinct_points(dtype, weighted):
    # integer coordinates: every distance is exact, so once every distinct point is a centre
    # all potentials are exactly 0 and scikit-learn takes index 0 from then on
    for seed in range(10):
        rng = np.random.RandomState(seed)
        distinct = rng.randint(-3, 4, size=(4, 2))
        X = distinct[rng.randint(0, 4, size=60)].astype(dtype)
        w = rng.randint(0, 3, 60).astype(float) if weighted else None
        idx, _, ref_rng = _sklearn(X, 12, w, seed)
        ours, centers, rng = _ours(X, 12, w, seed, 7)
        np.testing.assert_array_equal(ours, idx)
        np.testing.assert_array_equal(centers, X[idx])
        assert _same_state(rng, ref_rng)
    X = np.full((9, 3), 0.5, dtype=dtype)  # every point the same
    for seed in range(5):
        np.testing.assert_array_equal(_ours(X, 5, None, seed, 2)[0], _sklearn(X, 5, None, seed)[0])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_zero_weight_never_chosen(dtype):
    for seed in range(20):
        X = _data(["blobs", "uniform"][seed % 2], 600, 3, seed, dtype)
        w = _weights(600, seed, zero_fraction=0.6)
        idx = _ours(X, 15, w, seed, 128)[0]
        assert np.all(w[idx] > 0), idx
        _check(X, 15, w, seed, 128)
    # one positive weight among zeros: the first centre is it, whatever the draw
    w = np.zeros(50)
    w[37] = 0.25
    X = _data("uniform", 50, 2, 0, dtype)
    for seed in range(10):
        assert _ours(X, 1, w, seed, 6)[0][0] == 37


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_first_centre_weight_sum_is_numpys(dtype):
    # w.sum() is NumPy's pairwise sum: reproduced exactly across any chunking
    rng = np.random.RandomState(0)
    for n in [1, 7, 8, 9, 127, 128, 129, 1000, 4099, 70000]:
        w = (rng.uniform(size=n) ** 4 * 1e3).astype(dtype)
        for sizes in [1, 5, 128, 1000, [3, 200, 17], n]:
            chunks = ((start, X) for start, X, _ in _chunker(w, None, sizes)())
            total = _pairwise_sum(chunks, n, np.dtype(dtype))
            assert total.dtype == dtype and total == w.sum(), (n, sizes)


def _counting(X, w, sizes):
    chunks = _chunker(X, w, sizes)
    calls = []

    def counted():
        calls.append(1)
        return chunks()

    return counted, calls


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_passes_per_centre(weighted):
    # unweighted: the first centre's row, its potential, then two passes per centre (some
    # stop early); weighted: three more passes over the weights for the first centre
    X = _data("blobs", 1000, 3, 0, np.float64)
    w = _weights(1000, 0) if weighted else None
    for K in [1, 2, 9]:
        chunks, calls = _counting(X, w, 100)
        kmeans_plusplus_indices(
            chunks,
            1000,
            3,
            K,
            random_state=np.random.RandomState(0),
            weighted=weighted,
            dtype=X.dtype,
        )
        assert len(calls) == 2 * K + (2 if weighted else 0)


def _generated_chunks(n, D, size):
    """chunks() that make their points on the fly: no array of n points exists anywhere."""

    def chunks():
        for start in range(0, n, size):
            m = min(size, n - start)
            rng = np.random.RandomState(start)
            yield start, rng.normal(size=(m, D)) + 5 * rng.randint(0, 4, size=(m, 1)), None

    return chunks


def test_memory_does_not_grow_with_n_samples():
    # tracemalloc sees NumPy's allocations (the kernels' own scratch is per chunk and block)
    def peak(n):
        chunks = _generated_chunks(n, 8, 8192)
        tracemalloc.start()
        try:
            kmeans_plusplus_indices(
                chunks, n, 8, 6, random_state=np.random.RandomState(0), weighted=False, dtype=float
            )
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak(20000)  # warm up: compiled kernels, thread pool
    small, large = peak(200_000), peak(400_000)
    assert abs(large - small) < 300_000, (small, large)  # 200k more points are 12.8 MB
    assert large < 3_000_000, large  # a few chunks of 8192 x 8 float64 (0.5 MB each)
