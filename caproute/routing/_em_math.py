"""EM routing between matrix capsules (Hinton, Sabour and Frosst 2018; seed eqs. 20-29) as
pure Array API math: the reference every kernel is tested against. Nothing here validates.

Besides the paper's equations, the functions take the variants found in public
implementations (validated and documented at the public edge, ``em_routing.py``); their
defaults are the paper's choices and leave the computation exactly as it was without them.
"""

from __future__ import annotations

import math

from .._backend import device
from .._lib import stable_math

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def weighted_assignments(R, a_in, *, eps, renormalize=False, xp):
    """``R_ij a_i`` (batch, n_in, n_out); with ``renormalize``, divided by its sum over the
    parents plus ``eps``."""
    Ra = R * xp.expand_dims(a_in, axis=-1)
    if renormalize:
        Ra = Ra / (xp.sum(Ra, axis=-1, keepdims=True) + eps)
    return Ra


def m_step(
    votes,
    R,
    a_in,
    beta_u,
    beta_a,
    *,
    lam,
    min_var,
    eps,
    xp,
    Ra=None,
    mu_prev=None,
    pose_momentum=None,
    mass_floor="max",
    cost_log_var="half_log_var",
    renormalize_assignments=False,
):
    """Eqs. 21-27: parents' means, variances and activation logits from assignments ``R``.

    Returns ``(mu, var, logit)``, shapes (batch, n_out, D), (batch, n_out, D), (batch, n_out).
    The floors only bite where a sum or a variance is ~0, so the results equal the plain
    equations everywhere else. ``Ra`` (the weighted assignments) replaces ``R * a_in`` when
    given. With ``pose_momentum`` m, the mean is ``m mu + (1 - m) mu_prev`` (``mu_prev`` None
    means 0) and the variance is taken around it.
    """
    if Ra is None:
        Ra = weighted_assignments(R, a_in, eps=eps, renormalize=renormalize_assignments, xp=xp)
    Ra4 = xp.expand_dims(Ra, axis=-1)
    sum_R = xp.sum(Ra, axis=1)  # (batch, n_out)
    if mass_floor == "add":
        denom = xp.expand_dims(sum_R + eps, axis=-1)
    else:
        denom = xp.expand_dims(xp.maximum(sum_R, eps), axis=-1)
    mu = xp.sum(Ra4 * votes, axis=1) / denom
    if pose_momentum is not None:
        mu = pose_momentum * mu
        if mu_prev is not None:
            mu = mu + (1.0 - pose_momentum) * mu_prev
    diff = votes - xp.expand_dims(mu, axis=1)
    var = xp.maximum(xp.sum(Ra4 * (diff * diff), axis=1) / denom + min_var, eps)
    if cost_log_var == "half_log_var_eps":
        log_term = 0.5 * xp.log(var + eps)
    elif cost_log_var == "log_var_eps":
        log_term = xp.log(var + eps)
    else:
        log_term = 0.5 * xp.log(var)
    cost = (beta_u + log_term) * xp.expand_dims(sum_R, axis=-1)
    logit = lam * (beta_a - xp.sum(cost, axis=-1))
    return mu, var, logit


def log_weighted_density(votes, mu, var, logit, *, xp, e_step_log_var_weight=0.5):
    """``log(a_j p_j(V_ij))`` for every child and parent: (batch, n_in, n_out); the log-variance
    term weighted by ``e_step_log_var_weight`` (0.5 for the Gaussian density)."""
    pose_dim = votes.shape[-1]
    diff = votes - xp.expand_dims(mu, axis=1)
    log_p = (
        -xp.sum(diff * diff / (2.0 * xp.expand_dims(var, axis=1)), axis=-1)
        - xp.expand_dims(e_step_log_var_weight * xp.sum(xp.log(var), axis=-1), axis=1)
        - pose_dim * HALF_LOG_2PI
    )
    return log_p + xp.expand_dims(stable_math.log_sigmoid(logit, xp=xp), axis=1)


def normalize(log_ap, *, norm, eps, xp):
    """Assignments from ``log(a_j p_j)`` (batch, n_in, n_out): ``(R, log_norm)``.

    "softmax": the exact normalisation over the parents. "ratio_child" / "ratio_sample" /
    "ratio_batch": ``exp(l - s) / (sum_j exp(l - s) + eps)`` with ``s`` the largest ``l`` of the
    child, of the sample or of the batch. ``log_norm`` (batch, n_in) is the log of the
    denominator, scaled back by ``exp(s)``.
    """
    if norm == "softmax":
        log_norm = stable_math.logsumexp(log_ap, axis=-1, keepdims=True, xp=xp)
        return xp.exp(log_ap - log_norm), xp.squeeze(log_norm, axis=-1)
    if norm == "ratio_child":
        shift = xp.max(log_ap, axis=-1, keepdims=True)
    elif norm == "ratio_sample":
        shift = xp.max(xp.max(log_ap, axis=-1, keepdims=True), axis=-2, keepdims=True)
    else:  # ratio_batch
        shift = xp.reshape(xp.max(log_ap), (1, 1, 1))
    shift = xp.where(xp.isfinite(shift), shift, xp.zeros_like(shift))
    ap = xp.exp(log_ap - shift)
    total = xp.sum(ap, axis=-1, keepdims=True) + eps
    log_norm = xp.log(total) + shift
    return ap / total, xp.squeeze(log_norm, axis=-1)


def e_step(
    votes,
    mu,
    var,
    logit,
    *,
    xp,
    e_step_log_var_weight=0.5,
    e_step_norm="softmax",
    eps=1e-8,
):
    """Eqs. 28-29 in log space: ``R_ij = a_j p_j(V_ij) / sum_k a_k p_k(V_ik)``.

    votes (batch, n_in, n_out, D) -- broadcasting views are fine; mu, var (batch, n_out, D);
    logit (batch, n_out). Returns ``(R, log_norm)`` with ``log_norm`` (batch, n_in) the log of
    the normaliser ``sum_k a_k p_k(V_ik)``. ``eps`` is used by the "ratio_*" normalisations only.
    """
    log_ap = log_weighted_density(
        votes, mu, var, logit, xp=xp, e_step_log_var_weight=e_step_log_var_weight
    )
    return normalize(log_ap, norm=e_step_norm, eps=eps, xp=xp)


def activation(logit, *, xp):
    """``a_j = logistic(logit_j)``, through the stable log-sigmoid."""
    return xp.exp(stable_math.log_sigmoid(logit, xp=xp))


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
    xp,
):
    """Reference EM routing; returns ``(pose, activation, R)``.

    votes (batch, n_in, n_out, D), a_in (batch, n_in), beta_u (n_out, D), beta_a (n_out,),
    inverse_temperature: one float per iteration; initial_assignments: None (uniform) or
    (batch, n_in, n_out). R is the assignment used by the last M-step. The variants are those
    of :func:`caproute.em_routing`.
    """
    batch, n_in, n_out, _ = votes.shape
    if initial_assignments is None:
        R = xp.full((batch, n_in, n_out), 1.0 / n_out, dtype=votes.dtype, device=device(votes))
    else:
        R = initial_assignments
    m_opts = dict(
        pose_momentum=pose_momentum,
        mass_floor=mass_floor,
        cost_log_var=cost_log_var,
        renormalize_assignments=renormalize_assignments,
    )
    e_opts = dict(e_step_log_var_weight=e_step_log_var_weight, e_step_norm=e_step_norm, eps=eps)
    n_iter = len(inverse_temperature)
    mu = None
    for it, lam in enumerate(inverse_temperature):
        mu, var, logit = m_step(
            votes,
            R,
            a_in,
            beta_u,
            beta_a,
            lam=lam,
            min_var=min_var,
            eps=eps,
            mu_prev=mu,
            xp=xp,
            **m_opts,
        )
        if it + 1 < n_iter:
            R, _ = e_step(votes, mu, var, logit, xp=xp, **e_opts)
    return mu, activation(logit, xp=xp), R


def em_routing_step(votes, a_in, mu, var, logit, beta_u, beta_a, *, lam, min_var, eps, xp):
    """One routing iteration from given parents: an E-step, then an M-step.

    Returns ``(mu, var, logit, R, log_norm)``: the new parents, the assignments the M-step used,
    and the E-step's log-normaliser (batch, n_in). ``votes`` may be a broadcasting view (the
    same vote for every parent): nothing here copies it.
    """
    R, log_norm = e_step(votes, mu, var, logit, xp=xp)
    mu, var, logit = m_step(
        votes, R, a_in, beta_u, beta_a, lam=lam, min_var=min_var, eps=eps, xp=xp
    )
    return mu, var, logit, R, log_norm
