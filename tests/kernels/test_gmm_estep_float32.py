"""The Numba Gaussian-mixture E-step in float32: float32 points run float32 kernels (blocks of
512 points, a float32 exponential, float32 block sums added into float64 accumulators), and
must still match the reference within what float32 rounding does to it. The float64 kernel
keeps its blocks of 128 (tests/kernels/test_kernels.py covers both dtypes around 128).
"""

import importlib.util

import numpy as np
import pytest

from tests.kernels.test_gmm_sample_weight import _problem, _sample_weight
from tests.kernels.test_kernels import _f64, assert_matches_reference

HAVE_NUMBA = importlib.util.find_spec("numba") is not None
pytestmark = pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed")
COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]
FIELDS = ("nk", "sx", "sxx", "loglik")


def _reference(problem, covariance_type, sample_weight=None, dtype=None):
    from caproute.mixture import _gmm_math

    X, weights, means, prec_chol, shift = problem if dtype is None else _f64(*problem)
    sw = None if sample_weight is None else np.asarray(sample_weight, dtype=X.dtype)
    return _gmm_math.fit_stats(
        X,
        weights,
        means,
        prec_chol,
        covariance_type,
        shift=shift,
        chunk_size=97,
        xp=np,
        sample_weight=sw,
    )


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
# around the 512-point float32 blocks; D covers every remainder of the 4x4 (Mahalanobis) and
# 2x4 (scatter) tiles
@pytest.mark.parametrize("n, D", [(511, 5), (512, 8), (513, 13), (1100, 16), (1030, 1), (700, 4)])
def test_float32_kernel_matches_the_reference(covariance_type, weighted, n, D):
    from caproute.kernels.numba.gmm_estep import fit_stats

    problem = _problem(covariance_type, n, D, np.float32, seed=n + D)
    sw = _sample_weight(np.random.default_rng(n), n, np.float32) if weighted else None
    X, weights, means, prec_chol, shift = problem
    got = fit_stats(X, weights, means, prec_chol, covariance_type, shift=shift, sample_weight=sw)
    ref = _reference(problem, covariance_type, sw)
    ref64 = _reference(problem, covariance_type, sw, dtype=np.float64)
    assert got.n == (n if sw is None else float(np.sum(sw, dtype=np.float64)))
    for field in FIELDS:
        g = np.asarray(getattr(got, field))
        assert g.dtype == np.float32, field
        assert_matches_reference(
            g,
            getattr(ref, field),
            np.asarray(getattr(ref64, field)),
            np.float32,
            scale=100.0,
        )


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_float32_kernel_runs_in_float32_and_is_deterministic(covariance_type):
    from caproute.kernels.numba import gmm_estep

    problem = _problem(covariance_type, 3000, 6, np.float32, seed=7)
    X, weights, means, prec_chol, shift = problem
    a = gmm_estep.fit_stats(X, weights, means, prec_chol, covariance_type, shift=shift)
    b = gmm_estep.fit_stats(X, weights, means, prec_chol, covariance_type, shift=shift)
    for field in FIELDS:
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    kernel = {"full": gmm_estep._full, "tied": gmm_estep._tied}.get(
        covariance_type, gmm_estep._diag
    )
    kernel = getattr(kernel, "_dispatcher", kernel)
    if hasattr(kernel, "signatures"):  # not under NUMBA_DISABLE_JIT
        assert any(str(sig[0].dtype) == "float32" for sig in kernel.signatures)


def test_float32_exponential():
    """The float32 exponential of the softmax (vector_exp.exp_nonpositive_as): within 2 float32 ulps of exp on [-87, 0], 0
    below, NaN for NaN, 0 for -inf."""
    import numba

    from caproute.kernels.numba.gmm_estep import _exp

    @numba.njit
    def apply(x, out):
        for i in range(x.shape[0]):
            out[i] = _exp(x[i])

    x = np.concatenate(
        [
            -np.random.default_rng(0).uniform(0.0, 87.0, size=200_000),
            [0.0, -0.0, -1e-30, -0.5 * np.log(2.0), -87.0],
        ]
    ).astype(np.float32)
    out = np.empty_like(x)
    apply(x, out)
    want = np.exp(x.astype(np.float64))
    ulp = np.spacing(want.astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(out - want) / ulp) <= 2.0
    special = np.array([-87.5, -1000.0, -np.inf, np.nan], dtype=np.float32)
    out = np.empty_like(special)
    apply(special, out)
    assert out[0] == 0.0 and out[1] == 0.0 and out[2] == 0.0 and np.isnan(out[3])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_negligible_responsibilities_are_zero_and_nan_propagates(dtype):
    """Responsibilities below exp(-64) (float32) or exp(-512) (float64) of their point's
    largest are 0 (they change no sum by a rounding, and their products with the points would
    be subnormal and slow); the statistics still match the reference, and a NaN point still
    makes every statistic it touches NaN."""
    from caproute.kernels.numba.gmm_estep import fit_stats

    X, weights, means, prec_chol, shift = _problem("full", 600, 3, dtype, seed=3)
    # component 0 is component 1 with a weight exp(-70) (float32) or exp(-600) (float64)
    # times smaller: below the cut for every point, yet above the dtype's exp underflow
    gap = 70.0 if dtype == np.float32 else 600.0
    means, prec_chol, shift = means.copy(), prec_chol.copy(), shift.copy()
    means[0], prec_chol[0], shift[0] = means[1], prec_chol[1], shift[1]
    weights = weights.astype(np.float64)
    weights[0] = weights[1] * np.exp(-gap)
    weights = weights.astype(dtype)
    assert weights[0] > 0.0
    got = fit_stats(X, weights, means, prec_chol, "full", shift=shift)
    assert got.nk[0] == 0.0 and np.all(got.sx[0] == 0.0) and np.all(got.sxx[0] == 0.0)
    problem = (X, weights, means, prec_chol, shift)
    ref = _reference(problem, "full")
    ref64 = _reference(problem, "full", dtype=np.float64)
    for field in FIELDS:
        assert_matches_reference(
            np.asarray(getattr(got, field)),
            getattr(ref, field),
            np.asarray(getattr(ref64, field)),
            dtype,
            scale=100.0,
        )
    X_nan = X.copy()
    X_nan[17, 1] = np.nan
    bad = fit_stats(X_nan, weights, means, prec_chol, "full", shift=shift)
    for field in FIELDS:
        assert np.isnan(np.asarray(getattr(bad, field))).any(), field
    assert np.isnan(bad.loglik)
