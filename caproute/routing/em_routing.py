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
    check_scalar_fits,
)
from ._options import (
    DEFAULT_EM_EPS,
    DEFAULT_MIN_VAR,
    DeferredFinite,
    apply_last_inverse_temperature,
    broadcast_param,
    changed_em_variant,
    check_activations,
    check_assignments,
    check_em_options,
    check_em_variant,
    check_last_inverse_temperature,
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
    pose_momentum: float | None = None,
    e_step_log_var_weight: float = 0.5,
    e_step_norm: str = "softmax",
    mass_floor: str = "max",
    cost_log_var: str = "half_log_var",
    renormalize_assignments: bool = False,
    last_inverse_temperature: str | float = "schedule",
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

    Public implementations differ from the paper in details that change their outputs; the
    options from ``pose_momentum`` to ``last_inverse_temperature`` reproduce them (their
    defaults are the paper's equations above, so results do not change unless they are set).
    With any of them set, the Numba and GPU kernels run only where they implement it; otherwise
    ``backend="auto"`` (and ``"cupy"``, on the GPU) runs the reference implementation and
    ``backend="numba"`` raises BackendUnavailableError naming the option; ``caproute info``
    lists which options each kernel lacks.

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
    pose_momentum : float in [0, 1] or None, default=None
        With a value ``m``, each M-step's mean is mixed with the previous one,
        ``mu = m mu_new + (1 - m) mu_prev`` (``mu_prev = 0`` at the first M-step), and the
        variance is taken around the mixed mean; the returned pose is the mixed mean. Some
        public code uses ``m = 0.9``. None: no mixing (the paper).
    e_step_log_var_weight : {0.5, 1.0}, default=0.5
        Weight of ``sum_h log sigma_jh^2`` in the E-step's log-density: 0.5 is the Gaussian
        density (the paper; ``log sigma``); 1.0 reproduces code that writes ``log sigma^2``
        where the density has ``log sigma``.
    e_step_norm : {"softmax", "ratio_child", "ratio_sample", "ratio_batch"}, default="softmax"
        How the E-step normalises ``l_ij = log(a_j p_j(V_ij))`` over the parents. "softmax":
        exactly, in log space (the paper's equation). The others reproduce the TensorFlow
        ports that compute ``R_ij = a_j p_j / (sum_k a_k p_k + eps)`` after shifting the
        log-densities by their maximum ``s``: ``exp(l - s) / (sum_k exp(l - s) + eps)``, with
        ``s`` the maximum over the child's parents ("ratio_child"), over every child and
        parent of one sample ("ratio_sample"; rows of children far below it then sum to less
        than 1), or over the whole batch ("ratio_batch").
    mass_floor : {"max", "add"}, default="max"
        How the M-step divides by a parent's mass ``S_j = sum_i R_ij a_i``: by
        ``max(S_j, eps)`` (exact wherever ``S_j >= eps``), or by ``S_j + eps`` as the common
        PyTorch port and the common TensorFlow port do.
    cost_log_var : {"half_log_var", "half_log_var_eps", "log_var_eps"}, default="half_log_var"
        The log-variance term ``L`` of the cost ``(beta_u + L) S_j``: ``0.5 log(sigma^2)``
        (the paper's ``log sigma``), ``0.5 log(sigma^2 + eps)``, or ``log(sigma^2 + eps)``
        (code that writes ``log sigma^2`` in the cost).
    renormalize_assignments : bool, default=False
        Whether the M-step first divides ``R_ij a_i`` by ``sum_k R_ik a_i + eps`` (its sum over
        the child's parents), as the common PyTorch port does.
    last_inverse_temperature : {"schedule", "next"} or float, default="schedule"
        The inverse temperature of the last M-step (the one that gives the output
        activations). "schedule": the schedule's own last value. "next": the official
        schedule one step further, ``0.01 * (1 - 0.95**(n_iter + 1))``, as in code whose
        iteration index runs one ahead at the final M-step (with one inverse temperature for
        every iteration it is that value; not allowed with a sequence). A number: that value.
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
        range, ``min_var < 0``, ``eps <= 0``, non-positive inverse temperatures, options
        outside their sets of values, values that
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

    The common PyTorch port's variant (divisions by ``sum + eps``, ``R a`` renormalised,
    a fixed inverse temperature of 1e-3 and ``eps`` as the variance floor):

    >>> pose, act = cr.em_routing(votes, a_in, 0.0, 0.0, 3, inverse_temperature=1e-3,
    ...                           min_var=1e-8, mass_floor="add", renormalize_assignments=True)
    >>> act.shape
    (2, 3)
    """
    votes = as_array(votes, name="votes")
    xp = array_namespace(votes)
    check_float_array(votes, name="votes", ndim=4, layout=VOTES_LAYOUT, xp=xp, finite=False)
    batch, n_in, n_out, pose_dim = (int(s) for s in votes.shape)
    with DeferredFinite(xp) as deferred:
        deferred.add(votes, "votes")
        a_in = check_activations(a_in, votes, xp=xp)
        beta_u = broadcast_param(
            beta_u, name="beta_u", like=votes, xp=xp, shapes=[(n_out, pose_dim), (n_out,)]
        )
        beta_a = broadcast_param(beta_a, name="beta_a", like=votes, xp=xp, shapes=[(n_out,)])
        last = check_last_inverse_temperature(last_inverse_temperature, inverse_temperature)
        if not isinstance(last, str):
            check_scalar_fits(last, votes, name="last_inverse_temperature", ref_name="votes")
        n_iter, schedule, min_var, eps = check_em_options(
            n_iter, inverse_temperature, min_var, eps, like=votes, ref_name="votes"
        )
        schedule = apply_last_inverse_temperature(schedule, last, inverse_temperature)
        variant = changed_em_variant(
            check_em_variant(
                pose_momentum=pose_momentum,
                e_step_log_var_weight=e_step_log_var_weight,
                e_step_norm=e_step_norm,
                mass_floor=mass_floor,
                cost_log_var=cost_log_var,
                renormalize_assignments=renormalize_assignments,
            )
        )
        return_assignments = check_bool(return_assignments, name="return_assignments")
        if initial_assignments is not None:
            initial_assignments = check_assignments(initial_assignments, votes, xp=xp)

        options = tuple(variant.items())
        if last != "schedule":
            options += (("last_inverse_temperature", last),)
        plan = select_impl("em_routing", xp, backend, options=options)

    def overflow_check(outputs):
        check_outputs_finite(
            outputs,
            given=votes,
            name="votes",
            others=(("beta_u", beta_u), ("beta_a", beta_a)),
            xp=plan.xp,
        )

    # the Numba kernel proves the votes finite in its first pass, and checks its outputs while
    # they are in cache; elsewhere the votes are checked now and the outputs after the call
    kernel = plan.impl == "numba"
    kernel_checks = {
        "on_nonfinite": deferred.check,
        "on_overflow": overflow_check,
        "want_assignments": return_assignments,  # else not even written
    }
    if not kernel:
        deferred.check()
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
        **variant,
        **(kernel_checks if kernel else {}),
    )
    if not kernel:
        overflow_check((pose, act, R))
    return (pose, act, R) if return_assignments else (pose, act)
