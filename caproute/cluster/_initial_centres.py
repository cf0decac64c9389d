"""Initial cluster centres for the routing estimators, written against the Array API.

k-means++ (Arthur and Vassilvitskii 2007) in its greedy form: each new centre is the best of
``2 + floor(log k)`` candidates drawn with probability proportional to the weighted squared
distance to the nearest centre chosen so far. Random numbers come from a NumPy RandomState on the
host; for k-means++ only the drawn thresholds (a few floats) travel to the array's device, for
"random" the per-sample weights come to the host, so the same seed gives the same centres on
every backend.
"""

from __future__ import annotations

import math

import numpy as np

from .._backend import device


def _sq_dist_to(X, centres, *, xp, x_sq=None):
    """Squared distances, shape (n_centres, n_samples), as |c|^2 - 2 c.x + |x|^2 (one matrix
    product instead of an (n_centres, n_samples, n_features) difference), clipped at 0."""
    if x_sq is None:
        x_sq = xp.sum(X * X, axis=1)
    c_sq = xp.sum(centres * centres, axis=1, keepdims=True)
    cross = xp.matmul(centres, xp.matrix_transpose(X))
    return xp.maximum(c_sq - 2.0 * cross + xp.expand_dims(x_sq, axis=0), 0.0)


def _draw(cumulative, total, size, rng, *, xp):
    """Indices drawn with probability proportional to the increments of ``cumulative``."""
    thresholds = xp.asarray(
        rng.uniform(size=size) * total, dtype=cumulative.dtype, device=device(cumulative)
    )
    idx = xp.searchsorted(cumulative, thresholds, side="right")
    return xp.clip(idx, 0, cumulative.shape[0] - 1)


def kmeans_plusplus(X, n_clusters, *, sample_weight, rng, xp):
    """``n_clusters`` centres (rows of X) chosen by greedy k-means++; X is (n_samples,
    n_features)."""
    n_samples = X.shape[0]
    n_trials = 2 + int(math.log(n_clusters))
    cum_w = xp.cumulative_sum(sample_weight)
    first = _draw(cum_w, float(cum_w[-1]), 1, rng, xp=xp)
    centres = [xp.take(X, first, axis=0)]
    x_sq = xp.sum(X * X, axis=1)
    closest = _sq_dist_to(X, centres[0], xp=xp, x_sq=x_sq)[0, :]
    potential = float(xp.sum(sample_weight * closest))
    for _ in range(1, n_clusters):
        if potential <= 0.0:  # every point coincides with a centre: any point will do
            idx = xp.asarray(rng.randint(n_samples, size=1), device=device(X))
            centres.append(xp.take(X, idx, axis=0))
            continue
        cand = _draw(xp.cumulative_sum(sample_weight * closest), potential, n_trials, rng, xp=xp)
        cand_X = xp.take(X, cand, axis=0)
        cand_closest = xp.minimum(
            _sq_dist_to(X, cand_X, xp=xp, x_sq=x_sq), xp.expand_dims(closest, axis=0)
        )
        pots = xp.sum(xp.expand_dims(sample_weight, axis=0) * cand_closest, axis=1)
        best = int(xp.argmin(pots))
        centres.append(cand_X[best : best + 1, :])
        closest = cand_closest[best, :]
        potential = float(pots[best])
    return xp.concat(centres, axis=0)


def random_rows(X, n_clusters, *, sample_weight, rng, xp):
    """``n_clusters`` distinct rows of X drawn with probability proportional to their weight."""
    w = np.asarray(_to_host_floats(sample_weight, xp=xp))
    idx = rng.choice(X.shape[0], size=n_clusters, replace=False, p=w / w.sum())
    return xp.take(X, xp.asarray(idx, device=device(X)), axis=0)


def _to_host_floats(x, *, xp):
    from .._backend import to_numpy

    return to_numpy(xp.astype(x, xp.float64))
