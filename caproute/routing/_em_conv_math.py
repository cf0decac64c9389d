"""EM routing of a convolutional capsule layer in which parents at every output position
compete for a child (``competition="all"``), as pure Array API math.

A child of a k x k, stride-s convolutional capsule layer feeds the parents of every receptive
field that holds it. Here its assignments are normalised over all of them, so they sum to 1
over every (position, parent type) it feeds. The M-step is the usual per-parent one
(:func:`caproute.routing._em_math.m_step`); the E-step's normaliser is summed per child over
the fields that hold it, by folding the fields back onto the child map (the transpose of
im2col). The variants of :func:`caproute.em_routing` apply here too, with "the child's
parents" meaning all of them, at every position, and "a sample" one image.
"""

from __future__ import annotations

from .._backend import device
from .._lib.patches import fold, patches
from ._em_math import activation, log_weighted_density, m_step


def em_routing_all_positions(
    votes,
    a_in,
    beta_u,
    beta_a,
    *,
    grid,
    kernel,
    stride,
    inverse_temperature,
    min_var,
    eps,
    competition_init="all",
    pose_momentum=None,
    e_step_log_var_weight=0.5,
    e_step_norm="softmax",
    mass_floor="max",
    cost_log_var="half_log_var",
    renormalize_assignments=False,
    xp,
):
    """Returns ``(pose, activation)``.

    votes (b*ho*wo, k*k*t_in, t_out, D), a_in (b*ho*wo, k*k*t_in), beta_u (t_out, D),
    beta_a (t_out,); ``grid = (b, h, w, ho, wo)`` the batch and the child and parent map sizes.
    ``competition_init``: "all" starts uniform over every parent a child feeds, "position" at
    ``1 / t_out`` in each field.
    """
    b, h, w, ho, wo = grid
    n, n_in, t_out, _ = (int(s) for s in votes.shape)
    t_in = n_in // (kernel * kernel)
    field = (b, ho, wo, kernel, kernel, t_in)

    def to_children(per_field, reduce):
        return fold(xp.reshape(per_field, field), (h, w), stride, xp=xp, reduce=reduce)

    def to_fields(per_child):
        return xp.reshape(patches(per_child, (kernel, kernel), stride, xp=xp), (n, n_in, 1))

    if competition_init == "position":
        R = xp.full((n, n_in, t_out), 1.0 / t_out, dtype=votes.dtype, device=device(votes))
    else:
        # uniform over every parent a child feeds: 1 / (t_out * number of fields holding it)
        ones = xp.ones((n, n_in), dtype=votes.dtype, device=device(votes))
        count = to_fields(to_children(ones, "sum"))
        R = xp.zeros((n, n_in, t_out), dtype=votes.dtype, device=device(votes)) + 1.0 / (
            t_out * count
        )
    m_opts = dict(pose_momentum=pose_momentum, mass_floor=mass_floor, cost_log_var=cost_log_var)
    mu = None
    for it, lam in enumerate(inverse_temperature):
        Ra = R * xp.expand_dims(a_in, axis=-1)
        if renormalize_assignments:  # over every parent the child feeds, at every position
            Ra = Ra / (to_fields(to_children(xp.sum(Ra, axis=-1), "sum")) + eps)
        mu, var, logit = m_step(
            votes,
            R,
            a_in,
            beta_u,
            beta_a,
            lam=lam,
            min_var=min_var,
            eps=eps,
            Ra=Ra,
            mu_prev=mu,
            xp=xp,
            **m_opts,
        )
        if it + 1 == len(inverse_temperature):
            break
        log_ap = log_weighted_density(
            votes, mu, var, logit, xp=xp, e_step_log_var_weight=e_step_log_var_weight
        )  # (n, n_in, t_out)
        if e_step_norm in ("softmax", "ratio_child"):
            peak = to_children(xp.max(log_ap, axis=-1), "max")
            peak = xp.where(xp.isfinite(peak), peak, xp.zeros_like(peak))  # uncovered children
            shift = to_fields(peak)
        elif e_step_norm == "ratio_sample":  # the largest of each image
            per_image = xp.max(xp.reshape(log_ap, (b, ho * wo * n_in * t_out)), axis=-1)
            per_image = xp.where(xp.isfinite(per_image), per_image, xp.zeros_like(per_image))
            shift = xp.reshape(
                xp.broadcast_to(xp.reshape(per_image, (b, 1)), (b, ho * wo)), (n, 1, 1)
            )
        else:  # ratio_batch
            top = xp.max(log_ap)
            shift = xp.reshape(xp.where(xp.isfinite(top), top, xp.zeros_like(top)), (1, 1, 1))
        shifted = xp.exp(log_ap - shift)
        total = to_children(xp.sum(shifted, axis=-1), "sum")
        if e_step_norm == "softmax":
            total = xp.where(total > 0, total, xp.ones_like(total))
        else:
            total = total + eps
        R = shifted / to_fields(total)
    return mu, activation(logit, xp=xp)
