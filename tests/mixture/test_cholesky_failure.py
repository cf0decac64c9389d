"""A covariance that is not positive definite gives scikit-learn's "ill-defined empirical
covariance" error on every library, including those whose Cholesky factorisation (CuPy's) raises
nothing and returns a matrix that looks like any other."""

import types

import array_api_compat
import array_api_compat.numpy as npx
import numpy as np
import pytest

from caproute.mixture import GaussianMixture, _gmm_math

ILL_DEFINED = r"Fitting the mixture model failed because some components have ill-defined"

# What a library may hand back for a matrix that is not positive definite, without raising
GARBAGE = {
    "lower-triangle": lambda A: npx.tril(A),  # finite, positive diagonal: looks fine
    "partial-factor": lambda A: _partial_factor(A),  # LAPACK's potrf stopped at the bad pivot
    "nan": lambda A: npx.full_like(A, np.nan),
    "zeros": lambda A: npx.zeros_like(A),
    "upper-factor": lambda A: npx.matrix_transpose(np.linalg.cholesky(A + 10 * np.eye(2))),
}


def _partial_factor(A):
    """The leading columns factorised up to the first non-positive pivot, the rest of the lower
    triangle left as it was (what potrf leaves behind, and CuPy returns, on failure)."""
    A = np.array(A, dtype=float)
    out = np.tril(A.copy())
    for stack_index in np.ndindex(A.shape[:-2]):
        a, L = A[stack_index], out[stack_index]
        for j in range(a.shape[0]):
            pivot = a[j, j] - L[j, :j] @ L[j, :j]
            if pivot <= 0:
                break
            L[j, j] = np.sqrt(pivot)
            for i in range(j + 1, a.shape[0]):
                L[i, j] = (a[i, j] - L[i, :j] @ L[j, :j]) / L[j, j]
    return out


def _lenient_namespace(garbage):
    """NumPy's namespace whose cholesky never raises: the real factor where it exists, else
    ``garbage(A)`` (for the whole stack, as a batched GPU call would)."""

    def cholesky(A, /, *, upper=False):
        try:
            return npx.linalg.cholesky(A)
        except np.linalg.LinAlgError:
            return garbage(A)

    linalg = types.SimpleNamespace(**{k: getattr(npx.linalg, k) for k in dir(npx.linalg)})
    linalg.cholesky = cholesky
    ns = types.SimpleNamespace(**{k: getattr(npx, k) for k in dir(npx) if not k.startswith("__")})
    ns.linalg = linalg
    ns.__name__ = "lenient_numpy"
    return ns


INDEFINITE = np.array([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues 3 and -1, positive diagonal
SINGULAR = np.array([[1.0, 1.0], [1.0, 1.0]])


@pytest.mark.parametrize("kind", sorted(GARBAGE))
@pytest.mark.parametrize("matrix", [INDEFINITE, SINGULAR], ids=["indefinite", "singular"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_garbage_factor_is_an_ill_defined_covariance(kind, matrix, dtype):
    xp = _lenient_namespace(GARBAGE[kind])
    good = np.eye(2) * 2.0
    stack = np.stack([good, matrix]).astype(dtype)  # one bad component among good ones
    message = ILL_DEFINED + (".*passing float64 data" if dtype == "float32" else "")
    with pytest.raises(ValueError, match=message):
        _gmm_math.precision_cholesky(stack, "full", xp=xp)
    with pytest.raises(ValueError, match=ILL_DEFINED):
        _gmm_math.precision_cholesky(matrix.astype(dtype), "tied", xp=xp)
    with pytest.raises(ValueError, match=ILL_DEFINED):
        _gmm_math.precision_cholesky_from_precisions(stack, "full", xp=xp)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("condition", [1.0, 1e6, 1e12, 1e16])
@pytest.mark.parametrize("scale", [1e-8, 1.0, 1e8])
def test_true_factors_pass_however_ill_conditioned(dtype, condition, scale):
    """No false alarm: the check allows the rounding of a successful factorisation."""
    rng = np.random.default_rng(0)
    D = 6
    Q, _ = np.linalg.qr(rng.normal(size=(4, D, D)))
    eig = np.geomspace(1.0, 1.0 / condition, D)
    cov = scale * (Q * eig) @ np.swapaxes(Q, -1, -2)
    cov = (cov + np.swapaxes(cov, -1, -2)) / 2 + scale * 1e-6 * np.eye(D)  # reg_covar-like
    cov = cov.astype(dtype)
    try:
        expected = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        pytest.skip("not positive definite in this dtype")
    U = _gmm_math.precision_cholesky(cov, "full", xp=_lenient_namespace(GARBAGE["nan"]))
    np.testing.assert_allclose(
        np.swapaxes(U, -1, -2), np.linalg.inv(expected), rtol=1e-3 if dtype == "float32" else 1e-6
    )


def test_a_fit_raises_with_a_cholesky_that_never_raises(monkeypatch):
    """End to end: GaussianMixture on NumPy data, with NumPy's Cholesky made to behave like
    CuPy's (no error, a partial factor back), still raises scikit-learn's error."""
    xp = array_api_compat.array_namespace(np.zeros(1))
    real = xp.linalg.cholesky

    def lenient(A, /, **kwargs):
        try:
            return real(A, **kwargs)
        except np.linalg.LinAlgError:
            return npx.asarray(_partial_factor(A), dtype=A.dtype)

    monkeypatch.setattr(xp.linalg, "cholesky", lenient)
    X = np.repeat(np.random.default_rng(0).normal(size=(2, 2)), 10, axis=0)
    X = np.vstack([X, [[5.0, 5.0], [5.0, 5.0]]])
    with pytest.raises(ValueError, match=ILL_DEFINED):
        GaussianMixture(3, reg_covar=0.0, init_params="random_from_data", random_state=0).fit(X)
