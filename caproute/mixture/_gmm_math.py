"""Gaussian-mixture EM as pure Array API functions over sufficient statistics.

The estimator, a chunked fit and a distributed fit all run the same loop::

    stats = sum(estep_stats(chunk, params) for chunk in chunks)    # one reduction over points
    lower_bound = stats.loglik / n_samples
    params = mstep(stats, ...)

Statistics are sums over points, so chunks (or workers) add theirs. The formulas follow
scikit-learn's GaussianMixture so that the numbers agree with it:

- ``nk = sum(resp) + 10 * eps`` everywhere it divides;
- full covariance is the *centred* scatter around the new means. To get it from one pass
  without keeping the responsibilities, the scatter is accumulated around a fixed shift
  ``c_k`` (the previous means) and re-centred exactly:
  ``sum r (x-mu)(x-mu)^T = S - a d^T - d a^T + n d d^T`` with ``d = mu - c``,
  ``a = sum r (x - c)`` and ``n = sum r`` (no cancellation, since ``c`` is close to ``mu``);
- tied, diag and spherical use scikit-learn's uncentred formulas (``X^T X - sum nk mu mu^T``,
  ``resp^T X^2 / nk - mu^2``), so they reproduce its numbers, rounding included.
"""

from __future__ import annotations

import math

from .._backend import device, linalg_errors
from .._lib import stable_math as _math
from .._lib.gmm_stats import Stats, add_stats

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

ILL_DEFINED = (
    "Fitting the mixture model failed because some components have ill-defined empirical "
    "covariance (for instance caused by singleton or collapsed samples). Try to decrease the "
    "number of components, increase reg_covar, or scale the input data."
)
ILL_DEFINED_FLOAT32 = (
    " The numerical accuracy can also be improved by passing float64 data instead of float32."
)


# ----------------------------------------------------------------------------- precisions
def _ill_defined(dtype, *, xp):
    msg = ILL_DEFINED + (ILL_DEFINED_FLOAT32 if dtype == xp.float32 else "")
    return ValueError(msg)


def _cholesky_lower(A, *, xp):
    """Lower Cholesky factor of A (D, D) or a stack (K, D, D), or ValueError where A is not
    positive definite.

    Libraries disagree on failure: NumPy raises; CuPy raises nothing and returns NaN or a
    partly factored matrix that looks like any other. So the factor is checked, not trusted:
    ``L L^T`` must give back ``A`` within a few times the rounding of a Cholesky
    factorisation, ``|A - L L^T| <= c (D + 1) eps max_i A_ii`` per matrix (a successful
    factorisation is backward stable, within ``2 (D + 1) eps sqrt(A_ii A_jj)``), with a positive
    diagonal and finite entries. It costs one product of the size of the factorisation and one
    host synchronisation, the same on every library.
    """
    try:
        L = xp.linalg.cholesky(A)
    except linalg_errors() as exc:  # not in the Array API standard: each library has its own
        raise _ill_defined(A.dtype, xp=xp) from exc
    if not bool(_factor_reproduces(A, L, xp=xp)):
        raise _ill_defined(A.dtype, xp=xp)
    return L


#: How many times the rounding bound of a Cholesky factorisation ``L L^T`` may miss ``A`` by.
_CHOLESKY_SLACK = 8.0


def _factor_reproduces(A, L, *, xp):
    """A 0-d boolean array: whether ``L`` is a lower Cholesky factor of ``A`` (see
    :func:`_cholesky_lower`). NaN anywhere makes it False."""
    n = A.shape[-1]
    diag_L = xp.linalg.diagonal(L)
    scale = xp.max(xp.abs(xp.linalg.diagonal(A)), axis=-1)
    residual = xp.max(xp.abs(xp.matmul(L, xp.matrix_transpose(L)) - A), axis=(-2, -1))
    bound = _CHOLESKY_SLACK * (n + 1) * xp.finfo(A.dtype).eps * scale
    lower = xp.all(L == xp.tril(L))
    return xp.all(xp.isfinite(L)) & lower & xp.all(diag_L > 0.0) & xp.all(residual <= bound)


def _eye_like(A, *, xp):
    n = A.shape[-1]
    return xp.eye(n, dtype=A.dtype, device=device(A))


def precision_cholesky(covariances, covariance_type, *, xp):
    """``U`` with ``precision = U U^T`` (upper factor ``L^-T`` of ``cov = L L^T``); per type
    the shapes are (K, D, D), (D, D), (K, D) and (K,)."""
    if covariance_type in ("full", "tied"):
        L = _cholesky_lower(covariances, xp=xp)
        eye = _eye_like(L, xp=xp)
        L_inv = xp.linalg.solve(L, xp.broadcast_to(eye, L.shape) if L.ndim == 3 else eye)
        return xp.matrix_transpose(L_inv)
    if bool(xp.any(covariances <= 0.0)):
        raise _ill_defined(covariances.dtype, xp=xp)
    return 1.0 / xp.sqrt(covariances)


def precision_cholesky_from_precisions(precisions, covariance_type, *, xp):
    """Upper factor ``U`` of ``precision = U U^T``, from the precisions themselves.

    Reversing rows and columns turns the lower Cholesky factor into an upper one:
    ``P = J (J P J) J`` with ``J P J = M M^T`` gives ``P = (J M J)(J M J)^T``.
    """
    if covariance_type in ("full", "tied"):
        flipped = xp.flip(xp.flip(precisions, axis=-1), axis=-2)
        M = _cholesky_lower(flipped, xp=xp)
        return xp.flip(xp.flip(M, axis=-1), axis=-2)
    return xp.sqrt(precisions)


def precisions_from_cholesky(prec_chol, covariance_type, *, xp):
    if covariance_type in ("full", "tied"):
        return xp.matmul(prec_chol, xp.matrix_transpose(prec_chol))
    return prec_chol * prec_chol


def covariances_from_precisions(precisions, covariance_type, *, xp):
    if covariance_type in ("full", "tied"):
        return xp.linalg.inv(precisions)
    return 1.0 / precisions


def log_det_cholesky(prec_chol, covariance_type, n_features, *, xp):
    """log det(U) = -1/2 log det(covariance), per component (a scalar for tied)."""
    if covariance_type == "full":
        return xp.sum(xp.log(xp.linalg.diagonal(prec_chol)), axis=-1)
    if covariance_type == "tied":
        return xp.sum(xp.log(xp.linalg.diagonal(prec_chol)))
    if covariance_type == "diag":
        return xp.sum(xp.log(prec_chol), axis=1)
    return n_features * xp.log(prec_chol)


# ----------------------------------------------------------------------------- E-step
def log_gaussian_prob(X, means, prec_chol, covariance_type, *, xp):
    """log N(x_i | mu_k, Sigma_k), shape (n_samples, K)."""
    n_features = X.shape[1]
    log_det = log_det_cholesky(prec_chol, covariance_type, n_features, xp=xp)
    if covariance_type in ("full", "tied"):
        # y = x U_k - mu_k U_k for every k at once: (K, n, D)
        U = prec_chol if covariance_type == "full" else xp.expand_dims(prec_chol, axis=0)
        y = xp.matmul(xp.expand_dims(X, axis=0), U) - xp.expand_dims(
            xp.squeeze(xp.matmul(xp.expand_dims(means, axis=1), U), axis=1), axis=1
        )
        maha = xp.matrix_transpose(xp.sum(y * y, axis=-1))
    elif covariance_type == "diag":
        prec = prec_chol * prec_chol
        maha = (
            xp.sum(means * means * prec, axis=1)
            - 2.0 * xp.matmul(X, xp.matrix_transpose(means * prec))
            + xp.matmul(X * X, xp.matrix_transpose(prec))
        )
    else:
        prec = prec_chol * prec_chol
        maha = (
            xp.sum(means * means, axis=1) * prec
            - 2.0 * xp.matmul(X, xp.matrix_transpose(means)) * prec
            + xp.expand_dims(xp.sum(X * X, axis=1), axis=1) * prec
        )
    return -0.5 * (n_features * math.log(2.0 * math.pi) + maha) + log_det


def estimate_log_prob_resp(X, weights, means, prec_chol, covariance_type, *, xp):
    """``(log_prob_norm, log_resp)``: each point's log-likelihood (n,) and log
    responsibilities (n, K)."""
    weighted = log_gaussian_prob(X, means, prec_chol, covariance_type, xp=xp) + xp.log(weights)
    log_norm = _math.logsumexp(weighted, axis=1, xp=xp)
    return log_norm, weighted - xp.expand_dims(log_norm, axis=1)


def stats_from_resp(X, resp, covariance_type, *, shift, xp, sample_weight=None):
    """Sufficient statistics of points X with responsibilities resp (loglik left at 0).

    ``sample_weight`` (n,), optional: a point of weight w counts as w copies of itself (see
    :func:`_weighted_stats_from_resp`); ``n`` is then their total weight, a Python float.
    """
    if sample_weight is not None:
        stats = _weighted_stats_from_resp(
            X, resp, covariance_type, shift=shift, sample_weight=sample_weight, xp=xp
        )
        return stats._replace(n=_total_weight(sample_weight, xp=xp))
    nk = xp.sum(resp, axis=0)
    respT = xp.matrix_transpose(resp)
    sx = xp.matmul(respT, X)
    if covariance_type == "full":
        # sum_i r_ik (x_i - c_k)(x_i - c_k)^T for every k: (K, D, D)
        diff = xp.expand_dims(X, axis=0) - xp.expand_dims(shift, axis=1)  # (K, n, D)
        weighted = diff * xp.expand_dims(respT, axis=-1)
        sxx = xp.matmul(xp.matrix_transpose(weighted), diff)
    elif covariance_type == "tied":
        sxx = xp.matmul(xp.matrix_transpose(X), X)
    else:
        sxx = xp.matmul(respT, X * X)
    zero = xp.zeros((), dtype=X.dtype, device=device(X))
    return Stats(nk, sx, sxx, zero, int(X.shape[0]), shift)


def estep_stats(X, weights, means, prec_chol, covariance_type, *, shift, xp, sample_weight=None):
    """E-step over the points X and their sufficient statistics (the reference).

    ``sample_weight`` (n,), optional: a point of weight w counts as w copies of itself, its
    log-likelihood included; ``n`` is then their total weight, a Python float.
    """
    if sample_weight is not None:
        stats = _weighted_estep_stats(
            X,
            weights,
            means,
            prec_chol,
            covariance_type,
            shift=shift,
            sample_weight=sample_weight,
            xp=xp,
        )
        return stats._replace(n=_total_weight(sample_weight, xp=xp))
    log_norm, log_resp = estimate_log_prob_resp(
        X, weights, means, prec_chol, covariance_type, xp=xp
    )
    stats = stats_from_resp(X, xp.exp(log_resp), covariance_type, shift=shift, xp=xp)
    return stats._replace(loglik=xp.sum(log_norm))


def _total_weight(sample_weight, *, xp):
    """``Stats.n`` of weighted points: the sum of their weights, added in float64, as a Python
    float (one host synchronisation)."""
    return float(xp.sum(sample_weight, dtype=xp.float64))


def _without_weightless(X, sample_weight, *, xp):
    """``(X with the rows of zero-weight points set to 0, w (n, 1), w > 0 (n, 1))``.

    A point of weight 0 takes no part, whatever its values: its row is replaced before any
    arithmetic (a huge value would overflow into inf, and 0 * inf is NaN), and its terms are
    selected away (``where``), never multiplied by 0.
    """
    w = xp.expand_dims(sample_weight, axis=1)
    keep = w > 0.0
    zero = xp.zeros((), dtype=X.dtype, device=device(X))
    return xp.where(keep, X, zero), w, keep


def _weighted_stats_from_resp(X, resp, covariance_type, *, shift, sample_weight, xp):
    """:func:`stats_from_resp` with a point of weight w counted as w copies of itself:
    ``nk = sum w r``, ``sx = sum w r x``, full ``sum w r (x-c)(x-c)^T``, tied ``X^T W X``,
    diag and spherical ``sum w r x^2``. ``n`` is left at 0.0 (the caller sets it: see
    :func:`_total_weight`), so that chunks wait for nothing."""
    X, w, keep = _without_weightless(X, sample_weight, xp=xp)
    zero = xp.zeros((), dtype=X.dtype, device=device(X))
    resp = xp.where(keep, resp * w, zero)
    if covariance_type == "tied":  # X^T W X: the scatter does not involve resp
        nk = xp.sum(resp, axis=0)
        sx = xp.matmul(xp.matrix_transpose(resp), X)
        sxx = xp.matmul(xp.matrix_transpose(X * w), X)
        return Stats(nk, sx, sxx, zero, 0.0, shift)
    return stats_from_resp(X, resp, covariance_type, shift=shift, xp=xp)._replace(n=0.0)


def _weighted_estep_stats(
    X, weights, means, prec_chol, covariance_type, *, shift, sample_weight, xp
):
    """:func:`estep_stats` with sample weights; ``loglik = sum w log_norm`` and ``n`` left at
    0.0 (see :func:`_weighted_stats_from_resp`)."""
    X, _, _ = _without_weightless(X, sample_weight, xp=xp)
    log_norm, log_resp = estimate_log_prob_resp(
        X, weights, means, prec_chol, covariance_type, xp=xp
    )
    stats = _weighted_stats_from_resp(
        X, xp.exp(log_resp), covariance_type, shift=shift, sample_weight=sample_weight, xp=xp
    )
    zero = xp.zeros((), dtype=X.dtype, device=device(X))
    loglik = xp.sum(xp.where(sample_weight > 0.0, sample_weight * log_norm, zero))
    return stats._replace(loglik=loglik)


# ----------------------------------------------------------------------------- M-step
def mstep(stats, covariance_type, reg_covar, *, xp, weights_over="sum"):
    """``(weights, means, covariances)`` from sufficient statistics.

    ``weights_over="sum"`` normalises the weights to sum to 1 (an EM iteration);
    ``"n_samples"`` divides by the number of points (scikit-learn's initialisation).
    """
    eps = xp.finfo(stats.nk.dtype).eps
    nk = stats.nk + 10 * eps
    nk_col = xp.expand_dims(nk, axis=1)
    means = stats.sx / nk_col
    n_features = means.shape[1]
    if covariance_type == "full":
        c = stats.shift
        d = means - c  # (K, D)
        a = stats.sx - xp.expand_dims(stats.nk, axis=1) * c
        outer = lambda p, q: xp.expand_dims(p, axis=2) * xp.expand_dims(q, axis=1)  # noqa: E731
        scatter = (
            stats.sxx - outer(a, d) - outer(d, a) + xp.reshape(stats.nk, (-1, 1, 1)) * outer(d, d)
        )
        cov = scatter / xp.reshape(nk, (-1, 1, 1)) + reg_covar * _eye_like(scatter, xp=xp)
    elif covariance_type == "tied":
        avg_means2 = xp.matmul(xp.matrix_transpose(means) * nk, means)
        cov = (stats.sxx - avg_means2) / xp.sum(nk) + reg_covar * xp.eye(
            n_features, dtype=means.dtype, device=device(means)
        )
    else:
        cov = stats.sxx / nk_col - means * means + reg_covar
        if covariance_type == "spherical":
            cov = xp.mean(cov, axis=1)
    weights = nk / (xp.sum(nk) if weights_over == "sum" else stats.n)
    return weights, means, cov


# ----------------------------------------------------------------------------- chunked passes
DEFAULT_CHUNK_BYTES = 16 * 2**20


def auto_chunk_size(n_samples, n_features, n_components):
    """Rows per chunk so that one chunk's responsibilities and per-component temporaries stay
    near 16 MiB whatever N is: the extra memory of a fit does not grow with N x K."""
    # the full and tied E-step and scatter hold two (K, rows, D) temporaries, and the
    # responsibilities, their logarithms and the draws of "random" about two (rows, K)
    per_row = 8 * max(1, n_components) * (2 * n_features + 2)
    return int(max(256, min(n_samples, DEFAULT_CHUNK_BYTES // per_row)))


def chunks(n_samples, chunk_size):
    for start in range(0, n_samples, chunk_size):
        yield start, min(n_samples, start + chunk_size)


def fit_stats(
    X, weights, means, prec_chol, covariance_type, *, shift, chunk_size, xp, sample_weight=None
):
    """E-step statistics over all of X, one chunk at a time (the reference implementation).

    ``sample_weight`` (n,), optional: a point of weight w counts as w copies of itself; it is
    cut into the same chunks as X, and ``n`` is the total weight, a Python float (one host
    synchronisation per call, none per chunk).
    """
    if sample_weight is not None:
        total = None
        for start, stop in chunks(int(X.shape[0]), chunk_size):
            part = _weighted_estep_stats(
                X[start:stop, ...],
                weights,
                means,
                prec_chol,
                covariance_type,
                shift=shift,
                sample_weight=sample_weight[start:stop],
                xp=xp,
            )
            total = part if total is None else add_stats(total, part)
        return total._replace(n=_total_weight(sample_weight, xp=xp))
    total = None
    for start, stop in chunks(int(X.shape[0]), chunk_size):
        part = estep_stats(
            X[start:stop, ...], weights, means, prec_chol, covariance_type, shift=shift, xp=xp
        )
        total = part if total is None else add_stats(total, part)
    return total
