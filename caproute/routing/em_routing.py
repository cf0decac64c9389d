"""EM routing between matrix capsules (Hinton, Sabour and Frosst 2018; seed equations 20-29):
the public functions. The math is in ``_em_math.py``; this module validates and dispatches."""

from __future__ import annotations

from collections.abc import Sequence

from .._backend import Array, adopt, array_namespace, select_impl
from .._lib.validation import (
    as_array,
    check_bool,
    check_float_array,
    check_outputs_finite,
    check_scalar,
)
from ._options import (
    DEFAULT_EM_EPS,
    DEFAULT_MIN_VAR,
    broadcast_param,
    check_activations,
    check_assignments,
    check_em_options,
    check_n_iter,
    official_schedule,
)

VOTES_LAYOUT = "(batch, n_in, n_out, pose_dim)"


def official_inverse_temperature(n_iter: int, final_lambda: float = 0.01) -> tuple[float, ...]:
    """The inverse-temperature schedule of the official code: ``final_lambda * (1 - 0.95**(t+1))``.

    Parameters
    ----------
    n_iter : int
        Number of routing iterations, from 1 to 1,000,000.
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
    n_iter = check_n_iter(n_iter)
    final_lambda = check_scalar(final_lambda, name="final_lambda", low=0, low_inclusive=False)
    return official_schedule(n_iter, final_lambda)


def em_routing(
    votes: Array,
    a_in: Array,
    beta_u: float | Array,
    beta_a: float | Array,
    n_iter: int = 3,
    *,
    inverse_temperature: float | Sequence[float] | None = None,
    min_var: float = DEFAULT_MIN_VAR,
    eps: float = DEFAULT_EM_EPS,
    initial_assignments: Array | None = None,
    return_assignments: bool = False,
    backend: str | None = None,
) -> tuple[Array, Array] | tuple[Array, Array, Array]:
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
        Number of routing iterations, from 1 to 1,000,000.
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
        Wrong or mismatched shapes, NaN or inf, activations outside [0, 1], ``n_iter`` out of
        range, ``min_var < 0``, ``eps <= 0``, non-positive inverse temperatures, values that
        the votes' dtype cannot hold, or votes so large that routing overflows in that dtype
        (the message names the argument).

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

    a_in = check_activations(a_in, votes, xp=xp)
    beta_u = broadcast_param(
        beta_u, name="beta_u", like=votes, xp=xp, shapes=[(n_out, pose_dim), (n_out,)]
    )
    beta_a = broadcast_param(beta_a, name="beta_a", like=votes, xp=xp, shapes=[(n_out,)])
    n_iter, schedule, min_var, eps = check_em_options(
        n_iter, inverse_temperature, min_var, eps, like=votes, ref_name="votes"
    )
    return_assignments = check_bool(return_assignments, name="return_assignments")
    if initial_assignments is not None:
        initial_assignments = check_assignments(initial_assignments, votes, xp=xp)

    plan = select_impl("em_routing", xp, backend)
    votes, a_in, beta_u, beta_a, initial_assignments = adopt(
        plan, votes, a_in, beta_u, beta_a, initial_assignments
    )
    pose, act, R = plan.func(
        votes,
        a_in,
        beta_u,
        beta_a,
        inverse_temperature=schedule,
        min_var=min_var,
        eps=eps,
        initial_assignments=initial_assignments,
        xp=plan.xp,
    )
    check_outputs_finite(
        (pose, act, R),
        given=votes,
        name="votes",
        others=(("beta_u", beta_u), ("beta_a", beta_a)),
        xp=plan.xp,
    )
    return (pose, act, R) if return_assignments else (pose, act)
