"""Sample weights in the Gaussian-mixture E-step statistics: a point of weight w counts as w
copies of itself, in the reference (``caproute.mixture._gmm_math``, over every ``xp``) and in
the Numba kernel (against the reference). The CUDA kernel's cases are in
tests/kernels/cuda/test_cuda_gmm.py.
"""

import importlib.util
import math

import array_api_compat
import numpy as np
import pytest

import caproute as cr
from caproute.mixture import _gmm_math
from tests._helpers import as_xp, assert_close, device_of, tolerance
from tests.kernels.test_kernels import assert_matches_reference

HAVE_NUMBA = importlib.util.find_spec("numba") is not None
COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]
DTYPES = ["float32", "float64"]
FIELDS = ("nk", "sx", "sxx", "loglik")
K = 4


def _problem(covariance_type, n, D, dtype, seed=0):
    """NumPy ``(X, weights, means, prec_chol, shift)`` of ``dtype`` for an E-step."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, D)) * 3.0
    means = rng.normal(size=(K, D))
    weights = rng.dirichlet(np.ones(K))
    A = rng.normal(size=(K, D, D))
    cov = {
        "full": A @ np.swapaxes(A, 1, 2) + D * np.eye(D),
        "tied": A[0] @ A[0].T + D * np.eye(D),
        "diag": rng.uniform(0.5, 2.0, size=(K, D)),
        "spherical": rng.uniform(0.5, 2.0, size=K),
    }[covariance_type]
    prec_chol = _gmm_math.precision_cholesky(cov.astype(dtype), covariance_type, xp=np)
    shift = means + 0.1 if covariance_type == "full" else None
    cast = lambda a: None if a is None else np.asarray(a, dtype=dtype)  # noqa: E731
    return cast(X), cast(weights), cast(means), cast(prec_chol), cast(shift)


def _huge_row(D, dtype):
    """A point whose every product overflows (x^2 and (x - mu) U alike, with mixed signs: an
    unguarded E-step would make inf - inf and 0 * inf, NaN either way)."""
    huge = np.finfo(dtype).max / 8
    return np.asarray([huge if i % 2 == 0 else -huge for i in range(D)], dtype=dtype)


def _sample_weight(rng, n, dtype):
    """Weights with zeros, fractions and values above 1."""
    w = rng.uniform(0.1, 3.0, size=n)
    w[rng.uniform(size=n) < 0.25] = 0.0
    return w.astype(dtype)


def _reference(xp, problem, covariance_type, *, X=None, sample_weight=None, chunk_size=7):
    """``_gmm_math.fit_stats`` on ``xp``'s arrays (``X`` replaces the problem's points)."""
    X0, weights, means, prec_chol, shift = problem
    X = X0 if X is None else X
    on = lambda a: None if a is None else as_xp(a, xp)  # noqa: E731
    Xx = on(X)
    return _gmm_math.fit_stats(
        Xx,
        on(weights),
        on(means),
        on(prec_chol),
        covariance_type,
        shift=on(shift),
        chunk_size=chunk_size,
        xp=array_api_compat.array_namespace(Xx),
        sample_weight=on(sample_weight),
    )


def _assert_same_stats(got, want, xp, dtype, **overrides):
    """Every field of ``got`` on ``xp``'s device, of ``dtype``, within the "exact" tolerance
    of ``want`` (atol scaled by the field's largest value)."""
    for field in FIELDS:
        g, w = getattr(got, field), getattr(want, field)
        scale = max(1.0, float(np.max(np.abs(cr.to_numpy(w).astype(np.float64)))))
        assert_close(
            g, w, xp=xp, device=device_of(xp), dtype=dtype, scale=scale, err_msg=field, **overrides
        )


by_type = pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
by_dtype = pytest.mark.parametrize("dtype", DTYPES)


# ----------------------------------------------------------------------------- the reference
@by_type
@by_dtype
def test_integer_weights_are_repeated_rows(xp, covariance_type, dtype):
    """fit_stats over chunks of 7 (which the repeated rows do not line up with) and
    stats_from_resp: weight k gives what k copies of the row give."""
    problem = _problem(covariance_type, 40, 3, dtype, seed=1)
    X = problem[0]
    w = np.random.default_rng(2).integers(0, 4, size=X.shape[0])
    repeated = np.repeat(X, w, axis=0)
    got = _reference(xp, problem, covariance_type, sample_weight=w.astype(dtype))
    want = _reference(xp, problem, covariance_type, X=repeated)
    _assert_same_stats(got, want, xp, dtype)
    assert got.n == float(want.n) == float(w.sum())

    resp = np.random.default_rng(3).dirichlet(np.ones(K), size=X.shape[0]).astype(dtype)
    shift = None if problem[4] is None else as_xp(problem[4], xp)
    namespace = array_api_compat.array_namespace(as_xp(X, xp))
    got = _gmm_math.stats_from_resp(
        as_xp(X, xp),
        as_xp(resp, xp),
        covariance_type,
        shift=shift,
        xp=namespace,
        sample_weight=as_xp(w, xp, dtype),
    )
    want = _gmm_math.stats_from_resp(
        as_xp(repeated, xp),
        as_xp(np.repeat(resp, w, axis=0), xp),
        covariance_type,
        shift=shift,
        xp=namespace,
    )
    _assert_same_stats(got, want, xp, dtype)
    assert got.n == float(w.sum())


@by_type
@by_dtype
def test_zero_weights_drop_the_points(xp, covariance_type, dtype):
    """Points of weight 0, a huge one among them, add exactly nothing: the statistics are those
    of the other points alone, finite, with no RuntimeWarning (which fails a test here)."""
    problem = _problem(covariance_type, 45, 4, dtype, seed=4)
    X = problem[0].copy()
    X[10] = _huge_row(X.shape[1], dtype)
    w = _sample_weight(np.random.default_rng(5), X.shape[0], dtype)
    w[10] = 0.0
    kept = w > 0
    got = _reference(xp, problem, covariance_type, X=X, sample_weight=w)
    want = _reference(xp, problem, covariance_type, X=X[kept], sample_weight=w[kept])
    for field in FIELDS:
        assert np.all(np.isfinite(cr.to_numpy(getattr(got, field)))), field
    _assert_same_stats(got, want, xp, dtype)
    # and estep_stats in one piece
    on = lambda a: None if a is None else as_xp(a, xp)  # noqa: E731
    Xx = on(X)
    one = _gmm_math.estep_stats(
        Xx,
        *map(on, problem[1:4]),
        covariance_type,
        shift=on(problem[4]),
        xp=array_api_compat.array_namespace(Xx),
        sample_weight=on(w),
    )
    _assert_same_stats(one, want, xp, dtype)


@by_type
@by_dtype
def test_unit_weights_give_the_unweighted_numbers(xp, covariance_type, dtype):
    """w = 1 multiplies by 1, exactly: the same numbers, bit for bit (n a float)."""
    problem = _problem(covariance_type, 33, 3, dtype, seed=6)
    got = _reference(xp, problem, covariance_type, sample_weight=np.ones(33, dtype=dtype))
    want = _reference(xp, problem, covariance_type)
    _assert_same_stats(got, want, xp, dtype, rtol=0, atol=0)
    assert isinstance(got.n, float) and got.n == 33.0


@by_type
@by_dtype
def test_n_is_the_total_weight(xp, covariance_type, dtype):
    """Unweighted, n is the int count; weighted, the weights' sum in float64 as a Python float,
    the same however the points are chunked."""
    problem = _problem(covariance_type, 50, 2, dtype, seed=7)
    w = _sample_weight(np.random.default_rng(8), 50, dtype)
    unweighted = _reference(xp, problem, covariance_type)
    assert type(unweighted.n) is int and unweighted.n == 50
    total = math.fsum(w.astype(np.float64))
    for chunk_size in (7, 50):
        got = _reference(xp, problem, covariance_type, sample_weight=w, chunk_size=chunk_size)
        assert type(got.n) is float
        np.testing.assert_allclose(got.n, total, **tolerance("float64"))
        assert got.n == float(np.sum(w, dtype=np.float64))


# ----------------------------------------------------------------------------- the Numba kernel
numba_only = pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed")


def _numba_and_reference(problem, covariance_type, sample_weight):
    """(Numba's statistics, the reference's in the problem's dtype, the reference's in float64)."""
    from caproute.kernels.numba import gmm_estep

    X, weights, means, prec_chol, shift = problem
    args = (covariance_type,)
    np_xp = array_api_compat.array_namespace(X)
    got = gmm_estep.fit_stats(
        X, weights, means, prec_chol, *args, shift=shift, chunk_size=50, sample_weight=sample_weight
    )
    ref = _gmm_math.fit_stats(
        X,
        weights,
        means,
        prec_chol,
        *args,
        shift=shift,
        chunk_size=50,
        xp=np_xp,
        sample_weight=sample_weight,
    )
    f64 = lambda a: None if a is None else np.asarray(a, dtype=np.float64)  # noqa: E731
    ref64 = _gmm_math.fit_stats(
        *map(f64, (X, weights, means, prec_chol)),
        *args,
        shift=f64(shift),
        chunk_size=50,
        xp=np_xp,
        sample_weight=f64(sample_weight),
    )
    return got, ref, ref64


@numba_only
@by_type
@by_dtype
# around the 128-point blocks, and D over the remainders of the kernels' tiles
@pytest.mark.parametrize("n, D", [(1, 5), (127, 13), (128, 2), (300, 5), (300, 1), (130, 7)])
def test_numba_matches_the_reference(covariance_type, dtype, n, D):
    problem = _problem(covariance_type, n, D, dtype, seed=n + D)
    X = problem[0]
    w = _sample_weight(np.random.default_rng(n * D), n, dtype)
    if n > 3:
        X[n // 2] = _huge_row(D, dtype)
        w[n // 2] = 0.0
    got, ref, ref64 = _numba_and_reference(problem, covariance_type, w)
    assert type(got.n) is float and got.n == ref.n
    for field in FIELDS:
        g = getattr(got, field)
        assert g.dtype == np.dtype(dtype), field
        assert np.all(np.isfinite(g)), field
        assert_matches_reference(
            g, getattr(ref, field), np.asarray(getattr(ref64, field)), dtype, scale=100.0
        )


@numba_only
@by_type
@by_dtype
def test_numba_unit_and_integer_weights(covariance_type, dtype):
    """Numba: weights 1 give its unweighted numbers; integer weights its numbers for the
    repeated rows (both within the kernel tolerance: the blocks fall differently)."""
    from caproute.kernels.numba import gmm_estep

    problem = _problem(covariance_type, 200, 6, dtype, seed=9)
    X, rest, shift = problem[0], problem[1:4], problem[4]
    run = lambda X, **kw: gmm_estep.fit_stats(X, *rest, covariance_type, shift=shift, **kw)  # noqa: E731
    w = np.random.default_rng(10).integers(0, 4, size=200)
    for got, want in (
        (run(X, sample_weight=np.ones(200, dtype=dtype)), run(X)),
        (run(X, sample_weight=w.astype(dtype)), run(np.repeat(X, w, axis=0))),
    ):
        assert got.n == float(want.n)
        for field in FIELDS:
            g, r = getattr(got, field), getattr(want, field)
            scale = max(1.0, float(np.max(np.abs(r.astype(np.float64)))))
            np.testing.assert_allclose(g, r, **tolerance(dtype, "kernel", scale), err_msg=field)
