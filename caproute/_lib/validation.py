"""Input checks for the public edge. Every message names the argument, the expectation and
what was given, e.g. "`votes` must be 4-D (batch, n_in, n_out, pose_dim); got ndim=3 with
shape (8, 32, 16)."
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from .._backend import (
    array_namespace,
    check_plain_array,
    device,
    is_array,
    overflow_quiet,
    to_device,
)


def dtype_name(dtype):
    return str(dtype).rsplit(".", 1)[-1]


def shape_str(shape):
    return "(" + ", ".join(str(int(s)) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def as_array(x, *, name, xp=None, like=None, ref_name=None):
    """Return ``x`` as an array: arrays pass through, array-likes become arrays of ``xp``.

    With ``like`` given, array-likes take its dtype and device (for parameters such as biases
    that follow the main input, named ``ref_name`` in messages).
    """
    check_plain_array(x, name=name)  # before np.asarray quietly drops a mask or a matrix
    if is_array(x):
        return x
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(
            f"`{name}` must be an array of real floating numbers; got {type(x).__name__}."
        )
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError, OverflowError):
        raise TypeError(
            f"`{name}` must be an array of real floating numbers; got a {type(x).__name__} "
            "that does not convert to one (nested sequences of unequal lengths, or elements "
            "that are not numbers)."
        ) from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"`{name}` must be an array of real floating numbers; got dtype {arr.dtype}."
        )
    if xp is None:
        return arr
    if like is not None:
        if arr.dtype.kind != "f":
            arr = arr.astype(np.float64)
        check_fits_dtype(arr, like, name=name, xp=np, ref_name=ref_name)  # on the host
        return xp.astype(to_device(arr, xp, device=device(like)), like.dtype, copy=False)
    return to_device(arr, xp)


def check_float_array(x, *, name, ndim=None, layout=None, xp, allow_empty=False, finite=True):
    """Check ``x`` is a finite float32/float64 array of ``ndim`` dimensions; return it.

    ``layout`` names the axes for the message, e.g. ``"(batch, n_in, n_out, dim)"``.
    ``finite=False`` leaves the finiteness to the caller (:func:`check_finite` later, e.g. the
    routing functions' deferred check, which a Numba kernel proves in its own first pass).
    """
    if x.dtype not in (xp.float32, xp.float64):
        raise TypeError(
            f"`{name}` must have a real floating dtype (float32 or float64); "
            f"got {dtype_name(x.dtype)}."
        )
    if ndim is not None and x.ndim != ndim:
        axes = f" {layout}" if layout else ""
        raise ValueError(
            f"`{name}` must be {ndim}-D{axes}; got ndim={x.ndim} with shape {shape_str(x.shape)}."
        )
    if not allow_empty and any(int(s) == 0 for s in x.shape):
        raise ValueError(
            f"`{name}` must have at least one element along every axis; "
            f"got shape {shape_str(x.shape)}."
        )
    if finite:
        check_finite(x, name=name, xp=xp)
    return x


def check_finite(x, *, name, xp):
    # A finite sum proves every element finite (NaN and inf propagate through it), in one pass
    # and without an element-sized temporary; only a non-finite sum needs a closer look (finite
    # values whose sum overflowed pass that second check). NumPy's "overflow in reduce" warning
    # is hidden per thread (np.errstate), never through the process-wide warnings filters.
    with overflow_quiet(x):
        total = xp.sum(x)
    if bool(xp.isfinite(total)):
        return
    if not bool(xp.all(xp.isfinite(x))):
        n_nan = int(xp.sum(xp.astype(xp.isnan(x), xp.int64)))
        n_inf = int(xp.sum(xp.astype(xp.isinf(x), xp.int64)))
        raise ValueError(
            f"`{name}` must contain only finite values; got {n_nan} NaN and {n_inf} inf."
        )


def check_shape(x, expected, *, name, what):
    """Check ``x.shape == expected``; ``what`` says where the expectation comes from."""
    if tuple(int(s) for s in x.shape) != tuple(expected):
        raise ValueError(
            f"`{name}` must have shape {what} = {shape_str(expected)}; "
            f"got shape {shape_str(x.shape)}."
        )


def check_same_namespace(x, ref, *, name, ref_name):
    """Arrays combined in one call must come from one library: no hidden host/device copies."""
    try:
        xp_x = array_namespace(x)
        xp_ref = array_namespace(ref)
    except TypeError as exc:
        raise TypeError(
            f"`{name}` and `{ref_name}` are arrays of different libraries: {exc}"
        ) from None
    if xp_x is not xp_ref:
        raise TypeError(
            f"`{name}` must be an array of the same library as `{ref_name}` "
            f"({xp_ref.__name__}); got {xp_x.__name__}. Convert one of them explicitly "
            "(caproute.to_numpy, or backend='cupy')."
        )
    if device(x) != device(ref):
        raise ValueError(
            f"`{name}` must be on the same device as `{ref_name}` ({device(ref)!r}); got "
            f"{device(x)!r}. Move it explicitly (caproute.to_numpy, or the library's to_device)."
        )


def check_int(value, *, name, min_value, noun="integer", max_value=None, why=""):
    """Check an integer (not a bool) >= ``min_value`` (and <= ``max_value``); return it as a
    Python int.

    TypeError for a non-integer, ValueError for one out of range. ``noun`` is the word the
    message uses for the type: the model layers' messages have always said "int" ("`filters`
    must be an int >= 1; got 0."), the functions' "integer". ``why`` follows the upper bound in
    its message, to say where the bound comes from.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"`{name}` must be an {noun} >= {min_value}; got {value!r} ({type(value).__name__})."
        )
    if value < min_value:
        raise ValueError(f"`{name}` must be an {noun} >= {min_value}; got {value}.")
    if max_value is not None and value > max_value:
        got = str(int(value)) if len(str(int(value))) <= 24 else f"{float(value):.3g}"
        raise ValueError(f"`{name}` must be an {noun} <= {max_value}{why}; got {got}.")
    return int(value)


def check_choice(value, *, name, choices):
    """Check ``value`` is one of ``choices``; return that choice.

    A value matches a choice it equals and whose type it has (a ``numpy.str_`` matches the
    ``str`` it equals, and comes back as that ``str``; an array never matches a string).
    """
    choices = tuple(choices)
    for choice in choices:
        if value is choice or (isinstance(value, type(choice)) and value == choice):
            return choice
    allowed = ", ".join(repr(c) for c in choices)
    raise ValueError(f"`{name}` must be one of {allowed}; got {value!r}.")


def check_scalar(value, *, name, low=None, low_inclusive=True):
    """Check a finite real number (optionally bounded below); return it as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        bound = _bound_text(low, low_inclusive)
        raise TypeError(
            f"`{name}` must be a real number{bound}; got {value!r} ({type(value).__name__})."
        )
    try:
        value = float(value)
    except OverflowError:  # an int beyond the largest float
        raise ValueError(
            f"`{name}` must be a finite real number{_bound_text(low, low_inclusive)}; got an "
            f"integer of {len(str(abs(int(value))))} digits, beyond the largest float."
        ) from None
    bad = not np.isfinite(value)
    if low is not None:
        bad = bad or (value < low if low_inclusive else value <= low)
    if bad:
        raise ValueError(
            f"`{name}` must be a finite real number{_bound_text(low, low_inclusive)}; "
            f"got {value!r}."
        )
    return value


def _bound_text(low, inclusive):
    if low is None:
        return ""
    return f" {'>=' if inclusive else '>'} {low}"


def check_bool(value, *, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False; got {value!r} ({type(value).__name__}).")
    return bool(value)


def check_axis(axis, ndim, *, name="axis"):
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer; got {axis!r} ({type(axis).__name__}).")
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"`{name}` must be in [{-ndim}, {ndim - 1}] for a {ndim}-D input; got {axis}."
        )
    return int(axis) % ndim


def is_sequence(value):
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def check_outputs_finite(outputs, *, given, name, xp, others=()):
    """Raise a clear error where finite input overflowed inside the computation.

    Validation accepts every finite input, but |s|^2 or (V - mu)^2 can still overflow when the
    input is near the dtype's largest values (about 1e19 for float32, 1e154 for float64). The
    outputs are small, so checking them costs little (one host synchronisation for all of
    them); the inputs' largest magnitudes are computed only on failure.

    ``given`` is the main input, named ``name``; ``others`` holds ``(name, array)`` pairs of
    the other inputs that enter the same products (``W`` for ``u``, the betas for the votes).
    The message names the one of largest magnitude, and suggests float64 only to float32
    input.
    """
    finite = None
    for o in outputs:
        ok = xp.all(xp.isfinite(o))
        finite = ok if finite is None else xp.logical_and(finite, ok)
    if finite is None or bool(finite):
        return
    sizes = [(name, float(xp.max(xp.abs(given))))]
    sizes += [(n, float(xp.max(xp.abs(a)))) for n, a in others if a is not None]
    culprit, largest = max(sizes, key=lambda item: item[1])
    dtype = dtype_name(given.dtype)
    # the other inputs, where they are large enough to matter in a product
    rest = "; ".join(f"`{n}` up to {m:.3g}" for n, m in sizes if n != culprit and m > 1.0)
    rest = f"; {rest}" if rest else ""
    if dtype == "float64":
        remedy = f"Scale `{culprit}` down: float64 is the widest dtype caproute computes in."
    else:
        remedy = f"Scale `{culprit}` down or pass float64."
    raise ValueError(
        f"`{culprit}` is too large for {dtype}: routing overflowed (largest "
        f"magnitude {largest:.3g}{rest}). {remedy}"
    )


def _finfo(dtype):
    return np.finfo(np.float32 if dtype_name(dtype) == "float32" else np.float64)


def check_fits_dtype(x, like, *, name, xp, ref_name=None):
    """Check that the finite values of float array ``x`` fit in the dtype of ``like``.

    Casting float64 to float32 turns values beyond float32's largest (3.4e38) into inf, which
    then reads as an overflow inside the computation or as "non-finite input". Only a cast to
    a narrower dtype is checked (one reduction, one host synchronisation, on that rare path).
    """
    if _finfo(x.dtype).max <= _finfo(like.dtype).max:
        return
    limit = float(_finfo(like.dtype).max)
    with overflow_quiet(x):
        too_big = xp.logical_and(xp.isfinite(x), xp.abs(x) > limit)
    if bool(xp.any(too_big)):
        largest = float(xp.max(xp.where(too_big, xp.abs(x), 0.0)))
        whose = f", the dtype of `{ref_name}`" if ref_name else ""
        raise ValueError(
            f"`{name}` must fit in {dtype_name(like.dtype)}{whose} (magnitudes up to "
            f"{limit:.3g}); got a value of magnitude {largest:.3g}. Scale it down or pass "
            "float64 arrays."
        )


def cast_like(x, like, *, name, ref_name, xp):
    """``x`` (checked, finite) cast to the dtype of ``like``, refusing values it cannot hold."""
    if x.dtype == like.dtype:
        return x
    check_fits_dtype(x, like, name=name, xp=xp, ref_name=ref_name)
    return xp.astype(x, like.dtype)


def check_scalar_fits(value, like, *, name, ref_name, positive=False):
    """Check that the (validated) float ``value`` is representable in the dtype of ``like``:
    at most its largest value and, with ``positive``, at least its smallest normal value, so
    that it neither becomes inf nor rounds to 0 (an ``eps`` of 0 divides 0 by 0)."""
    info = _finfo(like.dtype)
    dtype = dtype_name(like.dtype)
    if abs(value) > float(info.max):
        raise ValueError(
            f"`{name}` must fit in {dtype}, the dtype of `{ref_name}` (at most "
            f"{float(info.max):.3g}); got {value!r}."
        )
    if positive and value < float(info.smallest_normal):
        raise ValueError(
            f"`{name}` must be at least {float(info.smallest_normal):.3g} in {dtype}, the dtype "
            f"of `{ref_name}` (smaller values round to 0 there); got {value!r}."
        )
    return value
