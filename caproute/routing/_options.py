"""Validation of routing options, shared by the public functions, the model layers and the
clustering estimators (one vocabulary: ``caproute._lib.validation``)."""

from __future__ import annotations

import numbers

import numpy as np

from .._backend import check_plain_array, device, is_array, to_numpy
from .._lib.validation import (
    as_array,
    cast_like,
    check_bool,
    check_choice,
    check_finite,
    check_float_array,
    check_int,
    check_same_namespace,
    check_scalar,
    check_scalar_fits,
    check_shape,
    is_sequence,
    shape_str,
)

DEFAULT_SQUASH_EPS = 1e-8
DEFAULT_MIN_VAR = 5e-4  # the official EM-routing code's variance floor
DEFAULT_EM_EPS = 1e-8
# Routing converges in a few iterations (the papers use 3); the bound keeps a mistyped count
# from running for hours, overflowing the kernels' int64 loop counter, or filling memory with
# an EM schedule of one value per iteration.
MAX_N_ITER = 1_000_000
_MAX_N_ITER_WHY = " (routing converges in a few iterations; the papers use 3)"


class DeferredFinite:
    """The finiteness checks of a routing function's large inputs, moved after the rest of its
    validation so that a Numba kernel can prove them in its own first pass over the input (its
    first sums are finite exactly when every input they read is, short of an overflow), instead
    of one more pass over the votes at the edge.

    Used as ``with DeferredFinite(xp) as deferred:`` around the validation that follows the
    array's own checks, with ``deferred.add(x, name)`` where the eager check stood. Errors come
    as if the checks had run there: a later check that fails inside the block first runs the
    deferred ones added before it (a non-finite input is then reported, as before). After the
    block, :meth:`check` runs them (in the order they were added); a Numba kernel calls it only
    when its first sums were not finite (``on_nonfinite=deferred.check``).
    """

    def __init__(self, xp):
        self._xp = xp
        self._arrays = []

    def add(self, x, name):
        self._arrays.append((x, name))

    def check(self):
        """Raise the first deferred input's "must contain only finite values" error, if any."""
        for x, name in self._arrays:
            check_finite(x, name=name, xp=self._xp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and issubclass(exc_type, Exception):
            try:
                self.check()
            except ValueError as finite_error:  # what the eager check would have raised first
                raise finite_error from None
        return False


def check_n_iter(n_iter):
    """Validated number of routing iterations: an integer in [1, MAX_N_ITER]."""
    return check_int(n_iter, name="n_iter", min_value=1, max_value=MAX_N_ITER, why=_MAX_N_ITER_WHY)


def check_dynamic_options(n_iter, leaky, eps, return_coupling, *, like=None, ref_name=None):
    """Validated ``(n_iter, leaky, eps, return_coupling)`` of dynamic routing.

    With ``like`` (the routed array, named ``ref_name``), ``eps`` must also be a positive
    normal number of its dtype: one that rounds to 0 there would divide 0 by 0 in the squash.
    """
    eps = check_scalar(eps, name="eps", low=0, low_inclusive=False)
    if like is not None:
        check_scalar_fits(eps, like, name="eps", ref_name=ref_name, positive=True)
    return (
        check_n_iter(n_iter),
        check_bool(leaky, name="leaky"),
        eps,
        check_bool(return_coupling, name="return_coupling"),
    )


def check_bias(bias, like, shape, *, xp, ref_name, what):
    """None, or the (n_out, dim) bias checked and cast to the dtype of ``like``."""
    if bias is None:
        return None
    bias = as_array(bias, name="bias", xp=xp, like=like, ref_name=ref_name)
    check_same_namespace(bias, like, name="bias", ref_name=ref_name)
    check_float_array(bias, name="bias", ndim=2, layout="(n_out, dim)", xp=xp)
    check_shape(bias, shape, name="bias", what=what)
    return cast_like(bias, like, name="bias", ref_name=ref_name, xp=xp)


def check_initial_logits(b0, like, shape, *, xp, ref_name="u_hat"):
    """Validate starting logits of ``shape`` (batch, n_in, n_out), or (n_in, n_out) shared by
    the batch; returns them broadcast and cast to the dtype of ``like``."""
    b0 = as_array(b0, name="initial_logits", xp=xp, like=like, ref_name=ref_name)
    check_same_namespace(b0, like, name="initial_logits", ref_name=ref_name)
    check_float_array(b0, name="initial_logits", xp=xp)
    if tuple(int(s) for s in b0.shape) == shape[1:]:
        b0 = xp.broadcast_to(b0, shape)
    check_shape(
        b0,
        shape,
        name="initial_logits",
        what=f"(batch, n_in, n_out) or (n_in, n_out) of `{ref_name}`",
    )
    return cast_like(b0, like, name="initial_logits", ref_name=ref_name, xp=xp)


def official_schedule(n_iter, final_lambda=0.01):
    """``final_lambda * (1 - 0.95**(t+1))`` for ``t = 0 .. n_iter - 1`` (validated inputs)."""
    return tuple(final_lambda * (1.0 - 0.95 ** (t + 1)) for t in range(n_iter))


def inverse_temperature_schedule(inverse_temperature, n_iter):
    """One positive inverse temperature per iteration, from None (the official schedule), one
    number, or a sequence of ``n_iter`` numbers."""
    if inverse_temperature is None:
        return official_schedule(n_iter)
    if (
        is_array(inverse_temperature)
        or is_sequence(inverse_temperature)
        or isinstance(inverse_temperature, np.ndarray)  # np.matrix, masked: refused by name
    ):
        values = _host_reals(inverse_temperature, name="inverse_temperature")
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


def _host_reals(value, *, name):
    """A sequence or array of real numbers as a float64 NumPy array (a small host copy)."""
    check_plain_array(value, name=name)
    expect = f"`{name}` as a sequence must hold real numbers"
    try:
        values = np.asarray(to_numpy(value) if is_array(value) else value)
    except (TypeError, ValueError, OverflowError):
        raise TypeError(
            f"{expect}; got a {type(value).__name__} that does not convert to an array of "
            "numbers (nested sequences of unequal lengths, or elements that are not numbers)."
        ) from None
    if values.dtype.kind not in "iuf":
        raise TypeError(f"{expect}; got dtype {values.dtype}.")
    with np.errstate(over="ignore"):  # integers beyond float64 become inf, refused as such
        return values.astype(np.float64)


def check_em_options(n_iter, inverse_temperature, min_var, eps, *, like=None, ref_name=None):
    """Validated ``(n_iter, schedule, min_var, eps)`` of EM routing.

    With ``like`` (the votes, named ``ref_name``), the values must also be representable in
    its dtype: ``eps`` a positive normal number (0 would divide by 0), ``min_var`` and the
    inverse temperatures no larger than its largest value.
    """
    n_iter = check_n_iter(n_iter)
    schedule = inverse_temperature_schedule(inverse_temperature, n_iter)
    min_var = check_scalar(min_var, name="min_var", low=0)
    eps = check_scalar(eps, name="eps", low=0, low_inclusive=False)
    if like is not None:
        check_scalar_fits(max(schedule), like, name="inverse_temperature", ref_name=ref_name)
        check_scalar_fits(min_var, like, name="min_var", ref_name=ref_name)
        check_scalar_fits(eps, like, name="eps", ref_name=ref_name, positive=True)
    return n_iter, schedule, min_var, eps


def broadcast_param(value, *, name, like, xp, shapes, ref_name="votes"):
    """Broadcast a scalar or array parameter to the first of ``shapes`` it matches."""
    value = as_array(value, name=name, xp=xp, like=like, ref_name=ref_name)
    check_same_namespace(value, like, name=name, ref_name=ref_name)
    check_float_array(value, name=name, xp=xp, allow_empty=True)
    value = cast_like(value, like, name=name, ref_name=ref_name, xp=xp)
    shape = tuple(int(s) for s in value.shape)
    target = shapes[0]
    if shape == () or shape in shapes:
        # trailing singleton axes so that (n_out,) lines up with the first axis of the target
        value = xp.reshape(value, shape + (1,) * (len(target) - len(shape)))
        return xp.zeros(target, dtype=like.dtype, device=device(like)) + value
    allowed = ", ".join(["a scalar"] + [shape_str(s) for s in shapes])
    raise ValueError(f"`{name}` must be {allowed}; got shape {shape_str(shape)}.")


def check_activations(a_in, votes, *, xp):
    """``a_in`` (batch, n_in) of ``votes``, in [0, 1], cast to the dtype of ``votes``."""
    batch, n_in = (int(s) for s in votes.shape[:2])
    a_in = as_array(a_in, name="a_in", xp=xp, like=votes, ref_name="votes")
    check_same_namespace(a_in, votes, name="a_in", ref_name="votes")
    check_float_array(a_in, name="a_in", ndim=2, layout="(batch, n_in)", xp=xp)
    check_shape(a_in, (batch, n_in), name="a_in", what="(batch, n_in) of `votes`")
    a_in = cast_like(a_in, votes, name="a_in", ref_name="votes", xp=xp)
    lo, hi = float(xp.min(a_in)), float(xp.max(a_in))
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"`a_in` must hold activations in [0, 1]; got values in [{lo}, {hi}].")
    return a_in


def check_assignments(R, votes, *, xp):
    """Starting assignments (batch, n_in, n_out) in [0, 1] whose rows sum to 1."""
    name = "initial_assignments"
    R = as_array(R, name=name, xp=xp, like=votes, ref_name="votes")
    check_same_namespace(R, votes, name=name, ref_name="votes")
    check_float_array(R, name=name, ndim=3, layout="(batch, n_in, n_out)", xp=xp)
    check_shape(
        R, tuple(int(s) for s in votes.shape[:3]), name=name, what="(batch, n_in, n_out) of `votes`"
    )
    R = cast_like(R, votes, name=name, ref_name="votes", xp=xp)
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


# ----------------------------------------------------------------- EM-routing variants
# The values each variant takes; the first is the default (the paper's choice). The math is
# in _em_math.py, the documentation in em_routing.py's docstring.
EM_NORMS = ("softmax", "ratio_child", "ratio_sample", "ratio_batch")
EM_MASS_FLOORS = ("max", "add")
EM_COST_LOG_VARS = ("half_log_var", "half_log_var_eps", "log_var_eps")
EM_LOG_VAR_WEIGHTS = (0.5, 1.0)
EM_LAST_LAMBDAS = ("schedule", "next")
COMPETITION_INITS = ("all", "position")
EM_VARIANT_DEFAULTS = {
    "pose_momentum": None,
    "e_step_log_var_weight": 0.5,
    "e_step_norm": "softmax",
    "mass_floor": "max",
    "cost_log_var": "half_log_var",
    "renormalize_assignments": False,
}


def check_em_variant(
    *,
    pose_momentum=None,
    e_step_log_var_weight=0.5,
    e_step_norm="softmax",
    mass_floor="max",
    cost_log_var="half_log_var",
    renormalize_assignments=False,
):
    """The validated EM-routing variants, as a dict of keyword arguments of the math."""
    if pose_momentum is not None:
        pose_momentum = check_scalar(pose_momentum, name="pose_momentum", low=0)
        if pose_momentum > 1.0:
            raise ValueError(
                f"`pose_momentum` must be None or a real number in [0, 1] (the weight of the "
                f"new mean); got {pose_momentum!r}."
            )
    weight = check_scalar(e_step_log_var_weight, name="e_step_log_var_weight")
    if weight not in EM_LOG_VAR_WEIGHTS:
        raise ValueError(
            "`e_step_log_var_weight` must be 0.5 (the Gaussian density: log sigma) or 1.0 "
            f"(code that writes log sigma^2); got {e_step_log_var_weight!r}."
        )
    return {
        "pose_momentum": pose_momentum,
        "e_step_log_var_weight": weight,
        "e_step_norm": check_choice(e_step_norm, name="e_step_norm", choices=EM_NORMS),
        "mass_floor": check_choice(mass_floor, name="mass_floor", choices=EM_MASS_FLOORS),
        "cost_log_var": check_choice(cost_log_var, name="cost_log_var", choices=EM_COST_LOG_VARS),
        "renormalize_assignments": check_bool(
            renormalize_assignments, name="renormalize_assignments"
        ),
    }


def changed_em_variant(variant):
    """The entries of ``variant`` that differ from their defaults (a dict)."""
    return {k: v for k, v in variant.items() if v != EM_VARIANT_DEFAULTS[k]}


def check_last_inverse_temperature(value, inverse_temperature):
    """``"schedule"``, ``"next"`` or a positive float; "next" only where it is defined."""
    if isinstance(value, str) or not isinstance(value, numbers.Real) or isinstance(value, bool):
        if not isinstance(value, str) or value not in EM_LAST_LAMBDAS:
            raise ValueError(
                "`last_inverse_temperature` must be 'schedule', 'next' or a real number > 0; "
                f"got {value!r}."
            )
        if value == "next" and (
            is_array(inverse_temperature)
            or is_sequence(inverse_temperature)
            or isinstance(inverse_temperature, np.ndarray)
        ):
            raise ValueError(
                "`last_inverse_temperature='next'` continues the official schedule "
                "(inverse_temperature=None) or repeats a single inverse temperature; with a "
                "sequence of inverse temperatures, give the last M-step's value as a number."
            )
        return value
    return check_scalar(value, name="last_inverse_temperature", low=0, low_inclusive=False)


def apply_last_inverse_temperature(schedule, last, inverse_temperature):
    """The schedule with its last entry replaced as ``last`` (validated) says."""
    if last == "schedule":
        return schedule
    if last == "next":
        if inverse_temperature is not None:  # a single value: the next one is the same
            return schedule
        return schedule[:-1] + official_schedule(len(schedule) + 1)[-1:]
    return schedule[:-1] + (float(last),)
