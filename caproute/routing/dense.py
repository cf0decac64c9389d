"""Votes and dynamic routing in one call (a fully connected capsule layer's routing step): the
public function. The math is in ``_dynamic_math.py``; this module validates and dispatches."""

from __future__ import annotations

from .._backend import Array, adopt, array_namespace, select_impl
from .._lib.validation import (
    as_array,
    cast_like,
    check_float_array,
    check_outputs_finite,
    check_same_namespace,
    check_shape,
)
from ._options import (
    DEFAULT_SQUASH_EPS,
    DeferredFinite,
    check_bias,
    check_dynamic_options,
    check_initial_logits,
)


def dense_dynamic_routing(
    u: Array,
    W: Array,
    n_iter: int = 3,
    *,
    bias: Array | None = None,
    leaky: bool = False,
    eps: float = DEFAULT_SQUASH_EPS,
    initial_logits: Array | None = None,
    return_coupling: bool = False,
    backend: str | None = None,
) -> Array | tuple[Array, Array]:
    """Compute the votes ``u_hat[b, i, j] = W[i, j] @ u[b, i]`` and route them dynamically.

    The same result as ``dynamic_routing(votes, ...)`` with the votes written out, but the
    Numba kernel computes the votes on the fly (for a vector of 16 float32 or 8 float64
    images at a time, in registers, again in each iteration), so the (batch, n_in, n_out,
    out_dim) votes tensor never exists: memory stays at the size of the inputs and outputs.

    Parameters
    ----------
    u : array of shape (batch, n_in, in_dim)
        Child capsules (for CapsNet, the squashed primary capsules), float32 or float64.
    W : array of shape (n_in, n_out, out_dim, in_dim)
        Transformation matrices, one per (child, parent) pair; cast to the dtype of ``u``.
    n_iter : int, default=3
        Number of routing iterations, from 1 to 1,000,000.
    bias : array of shape (n_out, out_dim), optional
        Added to ``s_j`` before the squash in every iteration, as in
        :func:`caproute.dynamic_routing`. Cast to the dtype of ``u``.
    leaky : bool, default=False
        Leaky routing (an orphan parent with a zero logit, dropped after the softmax).
    eps : float, default=1e-8
        Positive constant inside the square root of the squash.
    initial_logits : array of shape (batch, n_in, n_out) or (n_in, n_out), optional
        Starting logits instead of zeros. Cast to the dtype of ``u``.
    return_coupling : bool, default=False
        Also return the couplings of the last iteration.
    backend : {"auto", "numpy", "numba", "cupy"} or None, default=None
        Where to run (see :func:`caproute.set_config`); None takes the configured backend.

    Returns
    -------
    v : array of shape (batch, n_out, out_dim)
        Parent capsules.
    c : array of shape (batch, n_in, n_out)
        Couplings of the last iteration (only with ``return_coupling=True``).

    Raises
    ------
    TypeError
        Non-float ``u``, ``W`` or ``bias``, arrays of different libraries, wrongly typed
        options.
    ValueError
        Wrong or mismatched shapes, NaN or inf in the input, ``n_iter`` out of range,
        ``eps <= 0``, a ``W``, ``bias``, ``initial_logits`` or ``eps`` that ``u``'s dtype cannot
        hold, or ``u`` and ``W`` so large that routing overflows in that dtype (the message
        names the larger of the two).

    Examples
    --------
    >>> import numpy as np
    >>> import caproute as cr
    >>> rng = np.random.default_rng(0)
    >>> u = rng.normal(size=(2, 6, 4))
    >>> W = rng.normal(size=(6, 3, 5, 4))
    >>> v = cr.dense_dynamic_routing(u, W, n_iter=3)
    >>> votes = np.einsum("jiok,bjk->bjio", W, u)       # u_hat[b, i, j] = W[i, j] @ u[b, i]
    >>> np.allclose(v, cr.dynamic_routing(votes, n_iter=3))
    True
    """
    u = as_array(u, name="u")
    xp = array_namespace(u)
    check_float_array(u, name="u", ndim=3, layout="(batch, n_in, in_dim)", xp=xp, finite=False)
    with DeferredFinite(xp) as deferred:
        deferred.add(u, "u")
        batch, n_in, in_dim = (int(s) for s in u.shape)
        W = as_array(W, name="W", xp=xp, like=u, ref_name="u")
        check_same_namespace(W, u, name="W", ref_name="u")
        check_float_array(
            W, name="W", ndim=4, layout="(n_in, n_out, out_dim, in_dim)", xp=xp, finite=False
        )
        deferred.add(W, "W")
        n_out, out_dim = int(W.shape[1]), int(W.shape[2])
        check_shape(
            W,
            (n_in, n_out, out_dim, in_dim),
            name="W",
            what="(n_in, n_out, out_dim, in_dim) with n_in, in_dim of `u`",
        )
        W = cast_like(W, u, name="W", ref_name="u", xp=xp)
        n_iter, leaky, eps, return_coupling = check_dynamic_options(
            n_iter, leaky, eps, return_coupling, like=u, ref_name="u"
        )
        bias = check_bias(
            bias, u, (n_out, out_dim), xp=xp, ref_name="u", what="(n_out, out_dim) of `W`"
        )
        if initial_logits is not None:
            initial_logits = check_initial_logits(
                initial_logits, u, (batch, n_in, n_out), xp=xp, ref_name="u"
            )
        plan = select_impl("dense_dynamic_routing", xp, backend)

    def overflow_check(outputs):
        check_outputs_finite(outputs, given=u, name="u", others=(("W", W),), xp=plan.xp)

    # the Numba kernel proves u and W finite in its first pass, and checks its outputs while
    # they are in cache; elsewhere the inputs are checked now and the outputs after the call
    kernel = plan.impl == "numba"
    kernel_checks = {"on_nonfinite": deferred.check, "on_overflow": overflow_check}
    if not kernel:
        deferred.check()
    u, W, bias, initial_logits = adopt(plan, u, W, bias, initial_logits)
    v, c = plan.func(
        u,
        W,
        n_iter=n_iter,
        bias=bias,
        leaky=leaky,
        eps=eps,
        initial_logits=initial_logits,
        xp=plan.xp,
        **(kernel_checks if kernel else {}),
    )
    if not kernel:
        overflow_check((v, c))
    return (v, c) if return_coupling else v
