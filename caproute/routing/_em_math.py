"""EM routing between matrix capsules (Hinton, Sabour and Frosst 2018; seed eqs. 20-29) as
pure Array API math: the reference every kernel is tested against. Nothing here validates."""

from __future__ import annotations

import math

from .._backend import device
from .._lib import stable_math

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def m_step(votes, R, a_in, beta_u, beta_a, *, lam, min_var, eps, xp):
    """Eqs. 21-27: parents' means, variances and activation logits from assignments ``R``.

    Returns ``(mu, var, logit)``, shapes (batch, n_out, D), (batch, n_out, D), (batch, n_out).
    The floors only bite where a sum or a variance is ~0, so the results equal the plain
    equations everywhere else.
    """
    Ra = R * xp.expand_dims(a_in, axis=-1)  # (batch, n_in, n_out)
    Ra4 = xp.expand_dims(Ra, axis=-1)
    sum_R = xp.sum(Ra, axis=1)  # (batch, n_out)
    denom = xp.expand_dims(xp.maximum(sum_R, eps), axis=-1)
    mu = xp.sum(Ra4 * votes, axis=1) / denom
    diff = votes - xp.expand_dims(mu, axis=1)
    var = xp.maximum(xp.sum(Ra4 * (diff * diff), axis=1) / denom + min_var, eps)
    cost = (beta_u + 0.5 * xp.log(var)) * xp.expand_dims(sum_R, axis=-1)
    logit = lam * (beta_a - xp.sum(cost, axis=-1))
    return mu, var, logit


def log_weighted_density(votes, mu, var, logit, *, xp):
    """``log(a_j p_j(V_ij))`` for every child and parent: (batch, n_in, n_out)."""
    pose_dim = votes.shape[-1]
    diff = votes - xp.expand_dims(mu, axis=1)
    log_p = (
        -xp.sum(diff * diff / (2.0 * xp.expand_dims(var, axis=1)), axis=-1)
        - xp.expand_dims(0.5 * xp.sum(xp.log(var), axis=-1), axis=1)
        - pose_dim * HALF_LOG_2PI
    )
    return log_p + xp.expand_dims(stable_math.log_sigmoid(logit, xp=xp), axis=1)


def e_step(votes, mu, var, logit, *, xp):
    """Eqs. 28-29 in log space: ``R_ij = a_j p_j(V_ij) / sum_k a_k p_k(V_ik)``.

    votes (batch, n_in, n_out, D) -- broadcasting views are fine; mu, var (batch, n_out, D);
    logit (batch, n_out). Returns ``(R, log_norm)`` with ``log_norm`` (batch, n_in) the log of
    the normaliser ``sum_k a_k p_k(V_ik)``.
    """
    log_ap = log_weighted_density(votes, mu, var, logit, xp=xp)
    log_norm = stable_math.logsumexp(log_ap, axis=-1, keepdims=True, xp=xp)
    return xp.exp(log_ap - log_norm), xp.squeeze(log_norm, axis=-1)


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
    xp,
):
    """Reference EM routing; returns ``(pose, activation, R)``.

    votes (batch, n_in, n_out, D), a_in (batch, n_in), beta_u (n_out, D), beta_a (n_out,),
    inverse_temperature: one float per iteration; initial_assignments: None (uniform) or
    (batch, n_in, n_out). R is the assignment used by the last M-step.
    """
    batch, n_in, n_out, _ = votes.shape
    if initial_assignments is None:
        R = xp.full((batch, n_in, n_out), 1.0 / n_out, dtype=votes.dtype, device=device(votes))
    else:
        R = initial_assignments
    n_iter = len(inverse_temperature)
    for it, lam in enumerate(inverse_temperature):
        mu, var, logit = m_step(
            votes, R, a_in, beta_u, beta_a, lam=lam, min_var=min_var, eps=eps, xp=xp
        )
        if it + 1 < n_iter:
            R, _ = e_step(votes, mu, var, logit, xp=xp)
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
