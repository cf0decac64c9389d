"""The squash non-linearity of dynamic routing: the public function. The math is
``caproute._lib.stable_math.squash``; this module validates and dispatches."""

from __future__ import annotations

from .._backend import Array, adopt, array_namespace, select_impl
from .._lib.validation import (
    as_array,
    check_axis,
    check_float_array,
    check_outputs_finite,
    check_scalar,
    check_scalar_fits,
)
from ._options import DEFAULT_SQUASH_EPS


def squash(
    s: Array, axis: int = -1, *, eps: float = DEFAULT_SQUASH_EPS, backend: str | None = None
) -> Array:
    """Squash vectors to a length in [0, 1) keeping their direction (Sabour et al., eq. 1).

    ``v = |s|^2 / (1 + |s|^2) * s / sqrt(|s|^2 + eps)``; ``eps`` inside the square root makes
    ``s = 0`` map to ``0`` instead of ``0/0``.

    Parameters
    ----------
    s : array of shape (..., dim, ...)
        Float32 or float64 vectors, finite, from any Array API library.
    axis : int, default=-1
        The axis that holds the vector components.
    eps : float, default=1e-8
        Positive constant inside the square root.
    backend : {"auto", "numpy", "numba", "cupy"} or None, default=None
        Where to run (see :func:`caproute.set_config`); None takes the configured backend.

    Returns
    -------
    v : array of the same shape, dtype and namespace as ``s``
        The squashed vectors, each of length ``|s|^2 / (1 + |s|^2)`` (up to eps).

    Raises
    ------
    TypeError
        Non-float ``s``, a non-integer ``axis``, a non-real ``eps``.
    ValueError
        NaN or inf in ``s``, an ``axis`` out of range, an ``eps`` that is not positive or that
        ``s``'s dtype cannot hold, or ``s`` so large that ``|s|^2`` overflows in its dtype.

    Examples
    --------
    >>> import numpy as np
    >>> import caproute as cr
    >>> v = cr.squash(np.array([[3.0, 4.0], [0.0, 0.0]]))
    >>> np.round(v, 4)
    array([[0.5769, 0.7692],
           [0.    , 0.    ]])
    """
    s = as_array(s, name="s")
    xp = array_namespace(s)
    check_float_array(s, name="s", xp=xp)
    if s.ndim < 1:
        raise ValueError(
            f"`s` must have at least 1 dimension (the vector axis); got ndim={s.ndim}."
        )
    axis = check_axis(axis, s.ndim)
    eps = check_scalar(eps, name="eps", low=0, low_inclusive=False)
    check_scalar_fits(eps, s, name="eps", ref_name="s", positive=True)
    plan = select_impl("squash", xp, backend)
    (s,) = adopt(plan, s)
    v = plan.func(s, axis=axis, eps=eps, xp=plan.xp)
    check_outputs_finite((v,), given=s, name="s", xp=plan.xp)
    return v
