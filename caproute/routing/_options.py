"""Validation of routing options, shared by the public functions, the model layers and the
clustering estimators (one vocabulary: ``caproute._lib.validation``)."""

from __future__ import annotations

import numpy as np

from .._backend import device, is_array, to_numpy
from .._lib.validation import (
    as_array,
    check_bool,
    check_float_array,
    check_int,
    check_same_namespace,
    check_scalar,
    check_shape,
    is_sequence,
    shape_str,
)

DEFAULT_SQUASH_EPS = 1e-8
DEFAULT_MIN_VAR = 5e-4  # the official EM-routing code's variance floor
DEFAULT_EM_EPS = 1e-8


def check_dynamic_options(n_iter, leaky, eps, return_coupling):
    """Validated ``(n_iter, leaky, eps, return_coupling)`` of dynamic routing."""
    return (
        check_int(n_iter, name="n_iter", min_value=1),
        check_bool(leaky, name="leaky"),
        check_scalar(eps, name="eps", low=0, low_inclusive=False),
        check_bool(return_coupling, name="return_coupling"),
    )


def check_bias(bias, like, shape, *, xp, ref_name, what):
    """None, or the (n_out, dim) bias checked and cast to the dtype of ``like``."""
    if bias is None:
        return None
    bias = as_array(bias, name="bias", xp=xp, like=like)
    check_same_namespace(bias, like, name="bias", ref_name=ref_name)
    check_float_array(bias, name="bias", ndim=2, layout="(n_out, dim)", xp=xp)
    check_shape(bias, shape, name="bias", what=what)
    return xp.astype(bias, like.dtype)


def check_initial_logits(b0, like, shape, *, xp, ref_name="u_hat"):
    """Validate starting logits of ``shape`` (batch, n_in, n_out), or (n_in, n_out) shared by
    the batch; returns them broadcast and cast to the dtype of ``like``."""
    b0 = as_array(b0, name="initial_logits", xp=xp, like=like)
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
    return xp.astype(b0, like.dtype)


def official_schedule(n_iter, final_lambda=0.01):
    """``final_lambda * (1 - 0.95**(t+1))`` for ``t = 0 .. n_iter - 1`` (validated inputs)."""
    return tuple(final_lambda * (1.0 - 0.95 ** (t + 1)) for t in range(n_iter))


def inverse_temperature_schedule(inverse_temperature, n_iter):
    """One positive inverse temperature per iteration, from None (the official schedule), one
    number, or a sequence of ``n_iter`` numbers."""
    if inverse_temperature is None:
        return official_schedule(n_iter)
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


def check_em_options(n_iter, inverse_temperature, min_var, eps):
    """Validated ``(n_iter, schedule, min_var, eps)`` of EM routing."""
    n_iter = check_int(n_iter, name="n_iter", min_value=1)
    return (
        n_iter,
        inverse_temperature_schedule(inverse_temperature, n_iter),
        check_scalar(min_var, name="min_var", low=0),
        check_scalar(eps, name="eps", low=0, low_inclusive=False),
    )


def broadcast_param(value, *, name, like, xp, shapes, ref_name="votes"):
    """Broadcast a scalar or array parameter to the first of ``shapes`` it matches."""
    value = as_array(value, name=name, xp=xp, like=like)
    check_same_namespace(value, like, name=name, ref_name=ref_name)
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


def check_activations(a_in, votes, *, xp):
    """``a_in`` (batch, n_in) of ``votes``, in [0, 1], cast to the dtype of ``votes``."""
    batch, n_in = (int(s) for s in votes.shape[:2])
    a_in = as_array(a_in, name="a_in", xp=xp, like=votes)
    check_same_namespace(a_in, votes, name="a_in", ref_name="votes")
    check_float_array(a_in, name="a_in", ndim=2, layout="(batch, n_in)", xp=xp)
    check_shape(a_in, (batch, n_in), name="a_in", what="(batch, n_in) of `votes`")
    a_in = xp.astype(a_in, votes.dtype)
    lo, hi = float(xp.min(a_in)), float(xp.max(a_in))
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"`a_in` must hold activations in [0, 1]; got values in [{lo}, {hi}].")
    return a_in


def check_assignments(R, votes, *, xp):
    """Starting assignments (batch, n_in, n_out) in [0, 1] whose rows sum to 1."""
    name = "initial_assignments"
    R = as_array(R, name=name, xp=xp, like=votes)
    check_same_namespace(R, votes, name=name, ref_name="votes")
    check_float_array(R, name=name, ndim=3, layout="(batch, n_in, n_out)", xp=xp)
    check_shape(
        R, tuple(int(s) for s in votes.shape[:3]), name=name, what="(batch, n_in, n_out) of `votes`"
    )
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
