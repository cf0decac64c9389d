"""Dynamic routing between capsules (Sabour, Frosst and Hinton 2017, Procedure 1): the public
function. The math is in ``_dynamic_math.py``; this module validates and dispatches."""

from __future__ import annotations

from .._backend import Array, adopt, array_namespace, select_impl
from .._lib.validation import as_array, check_float_array, check_outputs_finite
from ._options import (
    DEFAULT_SQUASH_EPS,
    DeferredFinite,
    check_bias,
    check_dynamic_options,
    check_initial_logits,
)

U_HAT_LAYOUT = "(batch, n_in, n_out, dim)"


def dynamic_routing(
    u_hat: Array,
    n_iter: int = 3,
    *,
    bias: Array | None = None,
    leaky: bool = False,
    eps: float = DEFAULT_SQUASH_EPS,
    initial_logits: Array | None = None,
    return_coupling: bool = False,
    backend: str | None = None,
) -> Array | tuple[Array, Array]:
    """Route child capsules' predictions to parent capsules by agreement (Sabour et al. 2017).

    Each child's logits ``b_ij`` start at 0. Every iteration takes the couplings
    ``c_ij = softmax_j(b_ij)`` (over the **parents**, so each child's couplings sum to 1), the
    parents' inputs ``s_j = sum_i c_ij u_hat_ij (+ bias_j)``, their outputs ``v_j = squash(s_j)``
    and, except after the last iteration, the agreement update ``b_ij += u_hat_ij . v_j``.

    Parameters
    ----------
    u_hat : array of shape (batch, n_in, n_out, dim)
        The predictions ("votes") of every child ``i`` for every parent ``j``, float32 or
        float64, finite, from any Array API library (NumPy, CuPy, array_api_strict, ...).
    n_iter : int, default=3
        Number of routing iterations, from 1 to 1,000,000 (the paper uses 3).
    bias : array of shape (n_out, dim), optional
        Added to ``s_j`` before the squash in every iteration (the official TensorFlow code and
        Efficient-CapsNet have it; the paper does not). Cast to the dtype of ``u_hat``.
    leaky : bool, default=False
        Leaky routing: an extra orphan parent with a fixed zero logit takes part in the softmax
        and is dropped afterwards, so couplings sum to less than 1.
    eps : float, default=1e-8
        Positive constant inside the square root of the squash.
    initial_logits : array of shape (batch, n_in, n_out) or (n_in, n_out), optional
        Starting logits ``b_ij`` instead of zeros: logits learned or carried across samples
        (as some public implementations do), or a previous call's ``log(c)`` to continue
        routing where it stopped. Cast to the dtype of ``u_hat``.
    return_coupling : bool, default=False
        Also return the couplings ``c`` used in the last iteration.
    backend : {"auto", "numpy", "numba", "cupy"} or None, default=None
        Where to run (see :func:`caproute.set_config`); None takes the configured backend.

    Returns
    -------
    v : array of shape (batch, n_out, dim)
        Parent capsules, each of length < 1; same dtype and namespace as ``u_hat``.
    c : array of shape (batch, n_in, n_out)
        Couplings of the last iteration (only with ``return_coupling=True``).

    Raises
    ------
    TypeError
        Non-float ``u_hat`` or ``bias``, wrongly typed options.
    ValueError
        Wrong shapes, NaN or inf in the input, ``n_iter`` out of range, ``eps <= 0``, a
        ``bias``, ``initial_logits`` or ``eps`` that ``u_hat``'s dtype cannot hold, or input so
        large that routing overflows in that dtype (the message names the argument).

    Examples
    --------
    Three children, two of which agree on parent 0:

    >>> import numpy as np
    >>> import caproute as cr
    >>> u_hat = np.zeros((1, 3, 2, 2))
    >>> u_hat[0, :2, 0] = [1.0, 1.0]         # children 0 and 1 predict (1, 1) for parent 0
    >>> u_hat[0, 2, 0] = [-1.0, 1.0]
    >>> u_hat[0, :, 1] = [[1, 0], [0, 1], [-1, -1]]   # no agreement on parent 1
    >>> v, c = cr.dynamic_routing(u_hat, n_iter=3, return_coupling=True)
    >>> v.shape, c.shape
    ((1, 2, 2), (1, 3, 2))
    >>> bool(c[0, 0, 0] > 0.5)                 # child 0 routes mostly to parent 0
    True
    >>> np.allclose(c.sum(axis=-1), 1.0)
    True
    """
    u_hat = as_array(u_hat, name="u_hat")
    xp = array_namespace(u_hat)
    check_float_array(u_hat, name="u_hat", ndim=4, layout=U_HAT_LAYOUT, xp=xp, finite=False)
    with DeferredFinite(xp) as deferred:
        deferred.add(u_hat, "u_hat")
        n_iter, leaky, eps, return_coupling = check_dynamic_options(
            n_iter, leaky, eps, return_coupling, like=u_hat, ref_name="u_hat"
        )
        bias = check_bias(
            bias,
            u_hat,
            tuple(int(s) for s in u_hat.shape[2:]),
            xp=xp,
            ref_name="u_hat",
            what="(n_out, dim) of `u_hat`",
        )
        if initial_logits is not None:
            initial_logits = check_initial_logits(
                initial_logits, u_hat, tuple(int(s) for s in u_hat.shape[:3]), xp=xp
            )
        plan = select_impl("dynamic_routing", xp, backend)

    def overflow_check(outputs):
        check_outputs_finite(outputs, given=u_hat, name="u_hat", xp=plan.xp)

    # the Numba kernel proves the votes finite in its first pass, and checks its outputs while
    # they are in cache; elsewhere the votes are checked now and the outputs after the call
    kernel = plan.impl == "numba"
    kernel_checks = {"on_nonfinite": deferred.check, "on_overflow": overflow_check}
    if not kernel:
        deferred.check()
    u_hat, bias, initial_logits = adopt(plan, u_hat, bias, initial_logits)
    v, c = plan.func(
        u_hat,
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
