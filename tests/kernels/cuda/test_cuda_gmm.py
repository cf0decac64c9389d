"""The GPU Gaussian-mixture E-step (caproute.kernels.cuda.gmm_estep) against the reference
(caproute.mixture._gmm_math.fit_stats), in numba-cuda's CUDA simulator.

Blocks of 32 threads and at most 2 blocks, so 70 points make 3 tiles: one block takes two
(its grid-stride loop), the last tile is partial, and the partial sums of two blocks are added.
The simulator computes float32 maths in float64: the dtypes of the results are checked here,
the float32 arithmetic by the compile gate (no float64 instructions) and on a GPU.
"""

import numpy as np
import pytest

from caproute._backend import numpy_namespace
from caproute.mixture import _gmm_math
from tests._helpers import CUDA_KERNELS_REASON, cuda_kernels_runnable, tolerance

pytestmark = [
    pytest.mark.cudasim,
    pytest.mark.skipif(not cuda_kernels_runnable(), reason=CUDA_KERNELS_REASON),
]

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]
DTYPES = [np.float32, np.float64]
FIELDS = ("nk", "sx", "sxx", "loglik")


@pytest.fixture
def gmm_estep(monkeypatch):
    from caproute.kernels.cuda import gmm_estep

    monkeypatch.setattr(gmm_estep, "BLOCK", 32)
    monkeypatch.setattr(gmm_estep, "MAX_GRID", 2)
    return gmm_estep


def _parameters(rng, covariance_type, n, D, K, dtype):
    """Points, weights, means, prec_chol (from random SPD covariances) and shift."""
    xp = numpy_namespace()
    X = rng.normal(size=(n, D)) * 2.0
    means = rng.normal(size=(K, D))
    weights = rng.dirichlet(np.ones(K) * 2.0)
    A = rng.normal(size=(K, D, D)) * 0.5
    cov = {
        "full": A @ np.swapaxes(A, 1, 2) + np.eye(D),
        "tied": A[0] @ A[0].T + np.eye(D),
        "diag": rng.uniform(0.5, 2.0, size=(K, D)),
        "spherical": rng.uniform(0.5, 2.0, size=K),
    }[covariance_type]
    prec_chol = _gmm_math.precision_cholesky(xp.asarray(cov, dtype=dtype), covariance_type, xp=xp)
    shift = means + 0.1 * rng.normal(size=(K, D)) if covariance_type == "full" else None
    cast = lambda a: None if a is None else np.asarray(a, dtype=dtype)  # noqa: E731
    return cast(X), cast(weights), cast(means), cast(prec_chol), cast(shift)


def _check(kernel, X, weights, means, prec_chol, covariance_type, shift, sample_weight=None):
    """The kernel's statistics against the reference's, field by field."""
    xp = numpy_namespace()
    dtype = X.dtype
    args = (X, weights, means, prec_chol, covariance_type)
    kw = dict(shift=shift, chunk_size=32, xp=xp, sample_weight=sample_weight)
    ref = _gmm_math.fit_stats(*args, **kw)
    got = kernel.fit_stats(*args, **kw)
    if sample_weight is None:
        assert type(got.n) is int and got.n == X.shape[0]
    else:  # the total weight, added in float64
        assert type(got.n) is float and got.n == float(np.sum(sample_weight, dtype=np.float64))
    assert got.shift is shift
    for field in FIELDS:
        g, r = np.asarray(getattr(got, field)), np.asarray(getattr(ref, field))
        assert g.dtype == dtype, f"{field}: {g.dtype} instead of {dtype}"
        assert g.shape == r.shape, f"{field}: shape {g.shape} instead of {r.shape}"
        assert np.all(np.isfinite(g)), field
        scale = max(1.0, float(np.max(np.abs(r.astype(np.float64)))))
        np.testing.assert_allclose(
            g, r, **tolerance(dtype, "kernel", scale), err_msg=f"{covariance_type} {field}"
        )
    return got


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("n, D, K", [(70, 1, 1), (70, 3, 2), (71, 5, 3)])
def test_matches_reference(gmm_estep, covariance_type, dtype, n, D, K):
    rng = np.random.default_rng(1000 * n + 10 * D + K)
    params = _parameters(rng, covariance_type, n, D, K, dtype)
    _check(gmm_estep, *params[:4], covariance_type, params[4])


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_extremes(gmm_estep, covariance_type, dtype):
    """A point far from every component (its responsibilities underflow for all but one) and a
    component with a tiny weight (its nk, about 1e-29, compared relatively)."""
    xp = numpy_namespace()
    rng = np.random.default_rng(7)
    n, D, K = 67, 3, 3
    X, weights, means, prec_chol, shift = _parameters(rng, covariance_type, n, D, K, dtype)
    X[40] = np.asarray([3000.0, -2500.0, 4000.0], dtype=dtype)
    _, log_resp = _gmm_math.estimate_log_prob_resp(
        X[40:41], weights, means, prec_chol, covariance_type, xp=xp
    )
    resp = np.exp(np.asarray(log_resp[0], dtype=np.float64))
    assert np.count_nonzero(resp) == 1, resp  # the far point is extreme
    tiny = (int(np.argmax(resp)) + 1) % K  # a component the far point does not take
    weights = np.full(K, 0.5, dtype=dtype)
    weights[tiny] = 1e-30
    got = _check(gmm_estep, X, weights, means, prec_chol, covariance_type, shift)
    ref = _gmm_math.fit_stats(
        X, weights, means, prec_chol, covariance_type, shift=shift, chunk_size=32, xp=xp
    )
    assert 0.0 < float(got.nk[tiny]) < 1e-20
    np.testing.assert_allclose(
        np.asarray(got.nk), np.asarray(ref.nk), rtol=tolerance(dtype, "kernel")["rtol"], atol=0
    )


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_one_block_takes_every_tile(gmm_estep, monkeypatch, covariance_type):
    """A partial-sum budget too small for two blocks: one block adds all the tiles."""
    monkeypatch.setattr(gmm_estep, "SCRATCH_BUDGET", 1)
    rng = np.random.default_rng(3)
    params = _parameters(rng, covariance_type, 75, 2, 2, np.float64)
    _check(gmm_estep, *params[:4], covariance_type, params[4])


def _sample_weight(rng, n, dtype):
    """Weights with zeros, fractions and values above 1."""
    w = rng.uniform(0.1, 3.0, size=n)
    w[rng.uniform(size=n) < 0.25] = 0.0
    return w.astype(dtype)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("n, D, K", [(70, 1, 1), (71, 5, 3)])
def test_weighted_matches_reference(gmm_estep, covariance_type, dtype, n, D, K):
    """Sample weights (zeros, fractions, above 1) and a point of weight 0 whose every product
    overflows: it adds nothing, and nothing becomes NaN (``_check`` asserts finite results)."""
    rng = np.random.default_rng(1000 * n + 10 * D + K + 1)
    X, weights, means, prec_chol, shift = _parameters(rng, covariance_type, n, D, K, dtype)
    w = _sample_weight(rng, n, dtype)
    huge = np.finfo(dtype).max / 8
    X[33] = [huge if i % 2 == 0 else -huge for i in range(D)]
    w[33] = 0.0
    _check(gmm_estep, X, weights, means, prec_chol, covariance_type, shift, sample_weight=w)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_unit_weights_give_the_unweighted_numbers(gmm_estep, covariance_type, dtype):
    xp = numpy_namespace()
    rng = np.random.default_rng(11)
    X, weights, means, prec_chol, shift = _parameters(rng, covariance_type, 70, 3, 2, dtype)
    args = (X, weights, means, prec_chol, covariance_type)
    got = gmm_estep.fit_stats(*args, shift=shift, xp=xp, sample_weight=np.ones(70, dtype=dtype))
    want = gmm_estep.fit_stats(*args, shift=shift, xp=xp)
    assert got.n == 70.0
    for field in FIELDS:
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)
