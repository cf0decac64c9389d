"""EM routing between matrix capsules (Hinton, Sabour and Frosst 2018; seed equations 20-29)."""

from __future__ import annotations

import math

import numpy as np

from .._backend import adopt, array_namespace, device, is_array, select_impl, to_numpy
from .._lib import stable_math as _math
from .._lib.validation import (
    as_array,
    check_bool,
    check_float_array,
    check_int,
    check_outputs_finite,
    check_same_namespace,
    check_scalar,
    check_shape,
    is_sequence,
    shape_str,
)

VOTES_LAYOUT = "(batch, n_in, n_out, pose_dim)"
DEFAULT_MIN_VAR = 5e-4  # the official code's variance floor
DEFAULT_EPS = 1e-8
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def official_inverse_temperature(n_iter, final_lambda=0.01):
    """The inverse-temperature schedule of the official code: ``final_lambda * (1 - 0.95**(t+1))``.

    Parameters
    ----------
    n_iter : int
        Number of routing iterations.
    final_lambda : float, default=0.01
        The value the schedule approaches.

    Returns
    -------
    schedule : tuple of float
        One inverse temperature per iteration, ``t = 0 .. n_iter - 1``.

    Examples
    --------
    >>> import caproute as cr
    >>> [round(x, 6) for x in cr.routing.official_inverse_temperature(3)]
    [0.0005, 0.000975, 0.001426]
    """
    n_iter = check_int(n_iter, name="n_iter", min_value=1)
    final_lambda = check_scalar(final_lambda, name="final_lambda", low=0, low_inclusive=False)
    return tuple(final_lambda * (1.0 - 0.95 ** (t + 1)) for t in range(n_iter))


def _m_step(votes, R, a_in, beta_u, beta_a, *, lam, min_var, eps, xp):
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


def _log_weighted_density(votes, mu, var, logit, *, xp):
    """``log(a_j p_j(V_ij))`` for every child and parent: (batch, n_in, n_out)."""
    pose_dim = votes.shape[-1]
    diff = votes - xp.expand_dims(mu, axis=1)
    log_p = (
        -xp.sum(diff * diff / (2.0 * xp.expand_dims(var, axis=1)), axis=-1)
        - xp.expand_dims(0.5 * xp.sum(xp.log(var), axis=-1), axis=1)
        - pose_dim * _HALF_LOG_2PI
    )
    return log_p + xp.expand_dims(_math.log_sigmoid(logit, xp=xp), axis=1)


def _e_step(votes, mu, var, logit, *, xp):
    """Eqs. 28-29 in log space: ``R_ij = a_j p_j(V_ij) / sum_k a_k p_k(V_ik)``.

    votes (batch, n_in, n_out, D) -- broadcasting views are fine; mu, var (batch, n_out, D);
    logit (batch, n_out). Returns ``(R, log_norm)`` with ``log_norm`` (batch, n_in) the log of
    the normaliser ``sum_k a_k p_k(V_ik)``.
    """
    log_ap = _log_weighted_density(votes, mu, var, logit, xp=xp)
    log_norm = _math.logsumexp(log_ap, axis=-1, keepdims=True, xp=xp)
    return xp.exp(log_ap - log_norm), xp.squeeze(log_norm, axis=-1)


def _em_routing(
    votes, a_in, beta_u, beta_a, *, inverse_temperature, min_var, eps,
    initial_assignments=None, xp,
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
        mu, var, logit = _m_step(
            votes, R, a_in, beta_u, beta_a, lam=lam, min_var=min_var, eps=eps, xp=xp
        )
        if it + 1 < n_iter:
            R, _ = _e_step(votes, mu, var, logit, xp=xp)
    activation = xp.exp(_math.log_sigmoid(logit, xp=xp))
    return mu, activation, R


def _as_param(value, *, name, like, xp, shapes):
    """Broadcast a scalar or array parameter to the first of ``shapes`` it matches."""
    value = as_array(value, name=name, xp=xp, like=like)
    check_same_namespace(value, like, name=name, ref_name="votes")
    check_float_array(value, name=name, xp=xp, allow_empty=True)
    value = xp.astype(value, like.dtype)
    shape = tuple(int(s) for s in value.shape)
    target = shapes[0]
    if shape == () or shape in shapes:
        # trailing singleton axes so that (n_out,) lines up with the first axis of the target
        value = xp.reshape(value, shape + (1,) * (len(target) - len(shape)))
        return xp.zeros(target, dtype=like.dtype, device=device(like)) + value
    allowed = ", ".join(["a scalar"] + [shape_str(s) for s in shapes])
    raise ValueError(f"`{name}` must be {allowed}; got shape {shape_str(shape)}.")


def _check_assignments(R, votes, *, xp):
    name = "initial_assignments"
    R = as_array(R, name=name, xp=xp, like=votes)
    check_same_namespace(R, votes, name=name, ref_name="votes")
    check_float_array(R, name=name, ndim=3, layout="(batch, n_in, n_out)", xp=xp)
    check_shape(R, tuple(int(s) for s in votes.shape[:3]), name=name,
                what="(batch, n_in, n_out) of `votes`")
    R = xp.astype(R, votes.dtype)
    lo, hi = float(xp.min(R)), float(xp.max(R))
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"`{name}` must hold values in [0, 1]; got values in [{lo}, {hi}].")
    # rows are sums of n_out rounded terms: allow sqrt(machine epsilon) of slack
    tol = float(np.sqrt(np.finfo(np.float32 if R.dtype == xp.float32 else np.float64).eps))
    worst = float(xp.max(xp.abs(xp.sum(R, axis=-1) - 1.0)))
    if worst > tol:
        raise ValueError(
            f"`{name}` rows must sum to 1 over the parents (axis -1); "
            f"the largest deviation is {worst:.3g}."
        )
    return R


def _schedule(inverse_temperature, n_iter):
    if inverse_temperature is None:
        return official_inverse_temperature(n_iter)
    if is_array(inverse_temperature) or is_sequence(inverse_temperature):
        values = np.asarray(to_numpy(inverse_temperature), dtype=np.float64)
        if values.ndim != 1 or values.shape[0] != n_iter:
            raise ValueError(
                f"`inverse_temperature` as a sequence must hold one value per iteration "
                f"(n_iter={n_iter}); got shape {shape_str(values.shape)}."
            )
        if not (np.all(np.isfinite(values)) and np.all(values > 0)):
            raise ValueError(
                f"`inverse_temperature` must hold finite values > 0; got {values.tolist()}."
            )
        return tuple(float(v) for v in values)
    lam = check_scalar(inverse_temperature, name="inverse_temperature", low=0, low_inclusive=False)
    return (lam,) * n_iter


def em_routing(
    votes,
    a_in,
    beta_u,
    beta_a,
    n_iter=3,
    *,
    inverse_temperature=None,
    min_var=DEFAULT_MIN_VAR,
    eps=DEFAULT_EPS,
    initial_assignments=None,
    return_assignments=False,
    backend=None,
):
    """EM routing: fit one axis-aligned Gaussian per parent to the children's votes.

    ``R_ij`` starts at ``1 / n_out``. Each iteration runs the M-step for every parent:
    ``R_ij <- R_ij a_i``; ``mu_j = sum_i R_ij V_ij / sum_i R_ij``;
    ``sigma_j^2 = sum_i R_ij (V_ij - mu_j)^2 / sum_i R_ij + min_var``;
    ``cost_j^h = (beta_u + log sigma_j^h) sum_i R_ij``;
    ``a_j = logistic(lambda (beta_a - sum_h cost_j^h))``; and then, except after the last
    iteration, the E-step for every child, in log space:
    ``R_ij = a_j p_j(V_ij) / sum_k a_k p_k(V_ik)`` with ``p_j`` the Gaussian density.

    Parameters
    ----------
    votes : array of shape (batch, n_in, n_out, pose_dim)
        Votes ``V_ij = M_i W_ij`` of every child for every parent (pose_dim is 16 for 4x4
        poses), float32 or float64, finite, from any Array API library.
    a_in : array of shape (batch, n_in)
        Children's activations, in [0, 1].
    beta_u : float or array of shape (n_out,) or (n_out, pose_dim)
        The per-parent (or per-parent, per-pose-element) cost offset.
    beta_a : float or array of shape (n_out,)
        The per-parent activation threshold.
    n_iter : int, default=3
        Number of routing iterations (>= 1).
    inverse_temperature : float, sequence of n_iter floats, or None, default=None
        ``lambda``: one positive value for every iteration, one per iteration, or None for the
        official schedule ``0.01 * (1 - 0.95**(t + 1))`` (see
        :func:`caproute.routing.official_inverse_temperature`).
    min_var : float, default=5e-4
        Added to every variance (the official code's floor); must be >= 0.
    eps : float, default=1e-8
        Lower bound of ``sum_i R_ij`` where it divides and of the variance where its log or
        reciprocal is taken, so an unused or collapsed parent gives no NaN.
    initial_assignments : array of shape (batch, n_in, n_out), optional
        Starting assignments instead of ``1 / n_out``: values in [0, 1] whose rows sum to 1
        over the parents (for instance a previous call's ``R``, to continue routing). Cast to
        the dtype of ``votes``.
    return_assignments : bool, default=False
        Also return ``R``, the assignments the last M-step used (rows sum to 1 over parents).
    backend : {"auto", "numpy", "numba", "cupy"} or None, default=None
        Where to run (see :func:`caproute.set_config`); None takes the configured backend.

    Returns
    -------
    pose : array of shape (batch, n_out, pose_dim)
        The parents' poses ``mu_j``; same dtype and namespace as ``votes``.
    activation : array of shape (batch, n_out)
        The parents' activations ``a_j`` in (0, 1).
    R : array of shape (batch, n_in, n_out)
        Assignments (only with ``return_assignments=True``).

    Raises
    ------
    TypeError
        Non-float arrays, wrongly typed options.
    ValueError
        Wrong or mismatched shapes, NaN or inf, activations outside [0, 1], ``n_iter < 1``,
        ``min_var < 0``, ``eps <= 0``, non-positive inverse temperatures.

    Examples
    --------
    >>> import numpy as np
    >>> import caproute as cr
    >>> rng = np.random.default_rng(0)
    >>> votes = rng.normal(size=(2, 8, 3, 16))
    >>> votes[:, :, 0] = 1.0 + 0.01 * rng.normal(size=(2, 8, 16))   # tight agreement on parent 0
    >>> a_in = np.ones((2, 8))
    >>> pose, act, R = cr.em_routing(votes, a_in, beta_u=0.0, beta_a=0.0, n_iter=3,
    ...                              inverse_temperature=1.0, return_assignments=True)
    >>> pose.shape, act.shape, R.shape
    ((2, 3, 16), (2, 3), (2, 8, 3))
    >>> bool(np.all(act[:, 0] > act[:, 1]))
    True
    >>> np.allclose(R.sum(axis=-1), 1.0)
    True
    """
    votes = as_array(votes, name="votes")
    xp = array_namespace(votes)
    check_float_array(votes, name="votes", ndim=4, layout=VOTES_LAYOUT, xp=xp)
    batch, n_in, n_out, pose_dim = (int(s) for s in votes.shape)

    a_in = as_array(a_in, name="a_in", xp=xp, like=votes)
    check_same_namespace(a_in, votes, name="a_in", ref_name="votes")
    check_float_array(a_in, name="a_in", ndim=2, layout="(batch, n_in)", xp=xp)
    check_shape(a_in, (batch, n_in), name="a_in", what="(batch, n_in) of `votes`")
    a_in = xp.astype(a_in, votes.dtype)
    lo, hi = float(xp.min(a_in)), float(xp.max(a_in))
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"`a_in` must hold activations in [0, 1]; got values in [{lo}, {hi}].")

    beta_u = _as_param(
        beta_u, name="beta_u", like=votes, xp=xp, shapes=[(n_out, pose_dim), (n_out,)]
    )
    beta_a = _as_param(beta_a, name="beta_a", like=votes, xp=xp, shapes=[(n_out,)])
    n_iter = check_int(n_iter, name="n_iter", min_value=1)
    schedule = _schedule(inverse_temperature, n_iter)
    min_var = check_scalar(min_var, name="min_var", low=0)
    eps = check_scalar(eps, name="eps", low=0, low_inclusive=False)
    return_assignments = check_bool(return_assignments, name="return_assignments")

    if initial_assignments is not None:
        initial_assignments = _check_assignments(initial_assignments, votes, xp=xp)

    plan = select_impl("em_routing", xp, backend)
    votes, a_in, beta_u, beta_a, initial_assignments = adopt(
        plan, votes, a_in, beta_u, beta_a, initial_assignments
    )
    pose, act, R = plan.func(
        votes, a_in, beta_u, beta_a,
        inverse_temperature=schedule, min_var=min_var, eps=eps,
        initial_assignments=initial_assignments, xp=plan.xp,
    )
    check_outputs_finite((pose, act, R), given=votes, name="votes", xp=plan.xp)
    return (pose, act, R) if return_assignments else (pose, act)
