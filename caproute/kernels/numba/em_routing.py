"""Numba kernel for EM routing: one sample per parallel iteration, its votes read from cache
across all iterations, no (batch, n_in, n_out, pose_dim) temporary.

Per iteration the votes are read twice: once for the E-step fused with the next M-step's means
(each child's assignments are added to the parents' sums as soon as they are known), once for
the centred variances (the same two-pass formula as the reference, which keeps float32 exact
where the one-pass E[V^2] - mu^2 would cancel).
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ._jit import njit_cached
from .vector_exp import exp_nonpositive

_FAST = {"reassoc", "contract"}  # vectorisable sums; nothing that assumes finite values
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@njit_cached(inline="always")
def _log_sigmoid(x):
    if x >= 0.0:
        return -np.log1p(np.exp(-x))
    return x - np.log1p(np.exp(x))


@njit_cached(inline="always", fastmath=_FAST)
def _accumulate_means(V, R, a, sum_r, mu, i):
    n_out, dim = mu.shape
    for j in range(n_out):
        ra = R[i, j] * a[i]
        sum_r[j] += ra
        for h in range(dim):
            mu[j, h] += ra * V[i, j, h]


@njit_cached(inline="always")
def _renormalised_weight(R, a, eps, aw, i):
    """``aw[i]`` such that ``R[i, j] aw[i] = R_ij a_i / (sum_k R_ik a_i + eps)``."""
    total = 0.0
    for j in range(R.shape[1]):
        total += R[i, j] * a[i]
    aw[i] = a[i] / (total + eps)


@njit_cached(fastmath=_FAST)
def _em_one(V, a, beta_u, beta_a, lambdas, min_var, eps, R, mu, act, opts):
    """EM-route one sample in place. V (n_in, n_out, D); a (n_in,); R (n_in, n_out) holds the
    starting assignments and ends with those of the last M-step; mu (n_out, D), act (n_out,).
    ``opts`` = (momentum or -1, E-step log-variance weight, ratio E-step?, mass + eps?,
    cost mode 0/1/2, renormalise R a?) -- the variants of ``caproute.em_routing``."""
    momentum, lv_weight, ratio, add_floor, cost_mode, renorm = opts
    has_momentum = momentum >= 0.0
    n_in, n_out, dim = V.shape
    n_iter = lambdas.shape[0]
    sum_r = np.zeros(n_out, dtype=V.dtype)
    var = np.empty((n_out, dim), dtype=V.dtype)
    logit = np.empty(n_out, dtype=V.dtype)
    const = np.empty(n_out, dtype=V.dtype)
    log_p = np.empty(n_out, dtype=V.dtype)
    mu_prev = np.zeros((n_out, dim), dtype=V.dtype)
    aw = a.copy()  # the children's weights: a, or a renormalised with R (renorm)
    mu[:, :] = 0.0
    for i in range(n_in):
        if renorm:
            _renormalised_weight(R, a, eps, aw, i)
        _accumulate_means(V, R, aw, sum_r, mu, i)
    for it in range(n_iter):
        # M-step: means (sums already accumulated), centred variances, cost, activation logit
        for j in range(n_out):
            den = sum_r[j] + eps if add_floor else max(sum_r[j], eps)
            for h in range(dim):
                mu[j, h] /= den
                if has_momentum:
                    mu[j, h] = momentum * mu[j, h] + (1.0 - momentum) * mu_prev[j, h]
                    mu_prev[j, h] = mu[j, h]
        var[:, :] = 0.0
        for i in range(n_in):
            for j in range(n_out):
                ra = R[i, j] * aw[i]
                for h in range(dim):
                    dv = V[i, j, h] - mu[j, h]
                    var[j, h] += ra * dv * dv
        for j in range(n_out):
            den = sum_r[j] + eps if add_floor else max(sum_r[j], eps)
            cost = 0.0
            for h in range(dim):
                vh = max(var[j, h] / den + min_var, eps)
                var[j, h] = vh
                if cost_mode == 0:
                    cost += beta_u[j, h] + 0.5 * np.log(vh)
                elif cost_mode == 1:
                    cost += beta_u[j, h] + 0.5 * np.log(vh + eps)
                else:
                    cost += beta_u[j, h] + np.log(vh + eps)
            logit[j] = lambdas[it] * (beta_a[j] - cost * sum_r[j])
        if it + 1 == n_iter:
            break
        # E-step in log space, fused with the next M-step's sums
        for j in range(n_out):
            half_log_det = 0.0
            for h in range(dim):
                half_log_det += lv_weight * np.log(var[j, h])
                var[j, h] = 0.5 / var[j, h]  # var now holds 1 / (2 sigma^2)
            const[j] = _log_sigmoid(logit[j]) - half_log_det - dim * _HALF_LOG_2PI
        new_mu_sum = np.zeros((n_out, dim), dtype=V.dtype)
        sum_r[:] = 0.0
        for i in range(n_in):
            m = -np.inf
            for j in range(n_out):
                dv = V[i, j, 0] - mu[j, 0]
                q = dv * dv * var[j, 0]  # typed like the data, so the sum vectorises
                for h in range(1, dim):
                    dv = V[i, j, h] - mu[j, h]
                    q += dv * dv * var[j, h]
                lp = const[j] - q
                log_p[j] = lp
                if lp > m:
                    m = lp
            z = 0.0
            for j in range(n_out):
                e = exp_nonpositive(log_p[j] - m)
                R[i, j] = e
                z += e
            inv = 1.0 / (z + eps) if ratio else 1.0 / z
            for j in range(n_out):
                R[i, j] *= inv
            if renorm:
                _renormalised_weight(R, a, eps, aw, i)
            _accumulate_means(V, R, aw, sum_r, new_mu_sum, i)
        mu[:, :] = new_mu_sum
    for j in range(n_out):
        act[j] = np.exp(_log_sigmoid(logit[j]))


@njit_cached(parallel=True)
def _em_batch(V, a, beta_u, beta_a, lambdas, min_var, eps, R, mu, act, opts):
    for n in prange(V.shape[0]):
        _em_one(V[n], a[n], beta_u, beta_a, lambdas, min_var, eps, R[n], mu[n], act[n], opts)


_COST_MODES = {"half_log_var": 0, "half_log_var_eps": 1, "log_var_eps": 2}


def em_routing(
    votes,
    a_in,
    beta_u,
    beta_a,
    *,
    inverse_temperature,
    min_var,
    eps,
    initial_assignments=None,
    pose_momentum=None,
    e_step_log_var_weight=0.5,
    e_step_norm="softmax",
    mass_floor="max",
    cost_log_var="half_log_var",
    renormalize_assignments=False,
    xp=None,
):
    """Numba EM routing with the reference's signature; returns ``(pose, activation, R)``.

    Implements every variant of ``caproute.em_routing`` except ``e_step_norm`` "ratio_sample"
    and "ratio_batch" (the dispatch sends those to the reference)."""
    if e_step_norm not in ("softmax", "ratio_child"):
        raise ValueError(f"the Numba EM kernel has no e_step_norm={e_step_norm!r}.")
    votes = np.ascontiguousarray(votes)
    dtype = votes.dtype
    batch, n_in, n_out, dim = votes.shape
    if initial_assignments is None:
        R = np.full((batch, n_in, n_out), 1.0 / n_out, dtype=dtype)
    else:
        R = np.array(initial_assignments, dtype=dtype, order="C", copy=True)
    mu = np.empty((batch, n_out, dim), dtype=dtype)
    act = np.empty((batch, n_out), dtype=dtype)
    opts = (
        -1.0 if pose_momentum is None else float(pose_momentum),
        float(e_step_log_var_weight),
        e_step_norm == "ratio_child",
        mass_floor == "add",
        _COST_MODES[cost_log_var],
        bool(renormalize_assignments),
    )
    _em_batch(
        votes,
        np.ascontiguousarray(a_in, dtype=dtype),
        np.ascontiguousarray(beta_u, dtype=dtype),
        np.ascontiguousarray(beta_a, dtype=dtype),
        np.asarray(inverse_temperature, dtype=dtype),
        dtype.type(min_var),
        dtype.type(eps),
        R,
        mu,
        act,
        opts,
    )
    return mu, act, R
