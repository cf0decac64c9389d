"""Online EM over sufficient statistics: the statistics a mixture's parameters stand for,
and the step that moves them toward a chunk's (Cappé and Moulines, 2009)."""

from __future__ import annotations

from .._backend import device
from .._lib.gmm_stats import Stats


def stats_from_params(params, covariance_type, reg_covar, *, xp):
    """Statistics of unit total weight whose M-step (``_gmm_math.mstep``) gives back
    ``params`` = (weights, means, covariances, precisions_cholesky): the M-step inverted.

    Full covariance statistics are centred on the means (``shift = means``), so a chunk's
    E-step statistics taken around the same means add to them directly. Spherical
    covariances store the same second moment in every dimension, whose mean over dimensions
    is what the M-step reads.
    """
    weights, means, cov, _ = params
    nk = weights / xp.sum(weights)
    sx = xp.expand_dims(nk, axis=1) * means
    D = int(means.shape[1])
    eye = xp.eye(D, dtype=means.dtype, device=device(means))
    if covariance_type == "full":
        sxx = xp.reshape(nk, (-1, 1, 1)) * (cov - reg_covar * eye)
        return Stats(nk, sx, sxx, xp.zeros((), dtype=means.dtype), 1.0, means)
    if covariance_type == "tied":
        sxx = (cov - reg_covar * eye) + xp.matmul(xp.matrix_transpose(sx), means)
    else:
        per_dim = cov if covariance_type == "diag" else xp.expand_dims(cov, axis=1)
        sxx = xp.expand_dims(nk, axis=1) * (per_dim - reg_covar + means * means)
    return Stats(nk, sx, sxx, xp.zeros((), dtype=means.dtype), 1.0, None)


def scale_stats(stats, factor):
    """Statistics multiplied by ``factor`` (a chunk's per unit of weight)."""
    return stats._replace(
        nk=stats.nk * factor,
        sx=stats.sx * factor,
        sxx=stats.sxx * factor,
        loglik=stats.loglik * factor,
        n=stats.n * factor,
    )


def blend_stats(running, chunk, gamma):
    """``(1 - gamma) running + gamma chunk`` (same shift)."""
    keep = 1.0 - gamma
    return Stats(
        keep * running.nk + gamma * chunk.nk,
        keep * running.sx + gamma * chunk.sx,
        keep * running.sxx + gamma * chunk.sxx,
        keep * running.loglik + gamma * chunk.loglik,
        keep * running.n + gamma * chunk.n,
        running.shift,
    )
