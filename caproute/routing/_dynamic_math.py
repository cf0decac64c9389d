"""Dynamic routing (Sabour, Frosst and Hinton 2017, Procedure 1) as pure Array API math.

The reference implementations every kernel is tested against. Nothing here validates: the
public edge (``dynamic.py``) does, once, and passes the namespace down as ``xp``.
"""

from __future__ import annotations

from .._backend import device
from .._lib import stable_math


def couplings(b, *, leaky, xp):
    """softmax over parents (the last axis) of the routing logits ``b``.

    Leaky routing appends a zero logit for an extra "orphan" parent and drops its column
    after the softmax, so a child that agrees with no parent can send most of its vote nowhere.
    """
    if not leaky:
        return stable_math.softmax(b, axis=-1, xp=xp)
    orphan = xp.zeros((*b.shape[:-1], 1), dtype=b.dtype, device=device(b))
    c = stable_math.softmax(xp.concat([b, orphan], axis=-1), axis=-1, xp=xp)
    return c[..., :-1]


def parents(u_hat, c, *, bias, eps, xp):
    """``v_j = squash(sum_i c_ij u_hat_ij + bias_j)``: (batch, n_out, dim)."""
    s = xp.sum(xp.expand_dims(c, axis=-1) * u_hat, axis=1)
    if bias is not None:
        s = s + bias
    return stable_math.squash(s, axis=-1, eps=eps, xp=xp)


def agreement(u_hat, v, *, xp):
    """``u_hat_ij . v_j`` for every child and parent: (batch, n_in, n_out)."""
    return xp.sum(u_hat * xp.expand_dims(v, axis=1), axis=-1)


def dynamic_routing(u_hat, *, n_iter, bias, leaky, eps, initial_logits=None, xp):
    """Reference dynamic routing; returns ``(v, c)`` with c the couplings of the last iteration.

    u_hat: (batch, n_in, n_out, dim); bias: None or (n_out, dim);
    initial_logits: None (zeros) or (batch, n_in, n_out).
    """
    batch, n_in, n_out, _ = u_hat.shape
    if initial_logits is None:
        b = xp.zeros((batch, n_in, n_out), dtype=u_hat.dtype, device=device(u_hat))
    else:
        b = initial_logits
    for it in range(n_iter):
        c = couplings(b, leaky=leaky, xp=xp)
        v = parents(u_hat, c, bias=bias, eps=eps, xp=xp)
        if it + 1 < n_iter:  # the logits after the last iteration are never used
            b = b + agreement(u_hat, v, xp=xp)
    return v, c


def dynamic_routing_step(u_hat, logits, v, *, bias, leaky, eps, xp):
    """One routing iteration from a given state; returns ``(v, c, logits)``.

    The logits first take the agreement with the previous parents ``v``
    (``b_ij += u_hat_ij . v_j``; a zero ``v`` leaves them as they are), then give the couplings
    and the new parents. ``u_hat`` may be a broadcasting view (the same vote for every parent):
    nothing here copies it.
    """
    logits = logits + agreement(u_hat, v, xp=xp)
    c = couplings(logits, leaky=leaky, xp=xp)
    return parents(u_hat, c, bias=bias, eps=eps, xp=xp), c, logits


def votes(u, W, *, xp):
    """u_hat[b, i, j] = W[i, j] @ u[b, i]: (batch, n_in, n_out, out_dim)."""
    u5 = xp.expand_dims(xp.expand_dims(u, axis=2), axis=-1)  # (batch, n_in, 1, in_dim, 1)
    return xp.squeeze(xp.matmul(xp.expand_dims(W, axis=0), u5), axis=-1)


def dense_dynamic_routing(u, W, *, n_iter, bias, leaky, eps, initial_logits=None, xp):
    """Votes from ``u`` and ``W``, then :func:`dynamic_routing`; returns ``(v, c)``."""
    return dynamic_routing(
        votes(u, W, xp=xp),
        n_iter=n_iter,
        bias=bias,
        leaky=leaky,
        eps=eps,
        initial_logits=initial_logits,
        xp=xp,
    )
