"""Numba kernels for dynamic routing: one sample per parallel iteration, that sample's votes
read from cache across all routing iterations, no (batch, n_in, n_out, dim) temporary.

Entry points have the reference's signature (NumPy in, NumPy out) and validate nothing.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import njit_cached
from .vector_exp import exp_nonpositive, softmax_columns

# Reassociation lets LLVM vectorise the sums; no flag that assumes finite values (nnan, ninf).
_FAST = {"reassoc", "contract"}


@njit_cached(inline="always", fastmath=_FAST)
def _softmax_into(logits, out, leaky):
    """out = softmax(logits) over parents (max-shifted; the leaky orphan has logit 0).
    Used on a child's row."""
    m = logits[0]
    for j in range(1, logits.shape[0]):
        if logits[j] > m:
            m = logits[j]
    if leaky and m < 0.0:
        m = 0.0
    z = exp_nonpositive(-m) if leaky else 0.0
    for j in range(logits.shape[0]):
        e = exp_nonpositive(logits[j] - m)
        out[j] = e
        z += e
    inv = 1.0 / z
    for j in range(logits.shape[0]):
        out[j] *= inv


@njit_cached(inline="always", fastmath=_FAST)
def _squash_parents(s, eps, v):
    """v_j = squash(s_j) for every parent, eps inside the square root."""
    n_out, dim = s.shape
    for j in range(n_out):
        n2 = s[j, 0] * s[j, 0]
        for d in range(1, dim):
            n2 += s[j, d] * s[j, d]
        scale = n2 / ((1.0 + n2) * np.sqrt(n2 + eps))
        for d in range(dim):
            v[j, d] = s[j, d] * scale


@njit_cached(inline="always", fastmath=_FAST)
def _route_one(u, n_iter, bias, has_bias, leaky, eps, b, c, s, v):
    """Route one sample in place. u (n_in, n_out, dim); b, c (n_in, n_out) with b holding the
    starting logits; s, v (n_out, dim) buffers. Leaves c and v of the last iteration.

    One pass over the votes per iteration: for each child, the agreement update with the
    previous parents, its softmax and its contribution to the new parents' inputs are done
    while its votes are in L1 (the textbook order reads all votes twice per iteration).
    """
    n_in, n_out, dim = u.shape
    for it in range(n_iter):
        for j in range(n_out):
            for d in range(dim):
                s[j, d] = bias[j, d] if has_bias else 0.0
        for i in range(n_in):
            if it > 0:  # agreement with the previous iteration's parents
                for j in range(n_out):
                    acc = u[i, j, 0] * v[j, 0]  # typed like the data, so the sum vectorises
                    for d in range(1, dim):
                        acc += u[i, j, d] * v[j, d]
                    b[i, j] += acc
            _softmax_into(b[i], c[i], leaky)
            for j in range(n_out):
                cij = c[i, j]
                for d in range(dim):
                    s[j, d] += cij * u[i, j, d]
        _squash_parents(s, eps, v)


@njit_cached(parallel=True, fastmath=_FAST)
def _dynamic_routing_batch(u_hat, n_iter, bias, has_bias, leaky, eps, b0, has_b0, v_out, c_out):
    batch, n_in, n_out, dim = u_hat.shape
    for n in prange(batch):
        # per-sample (so per-thread) buffers: no thread writes another's memory
        b = np.empty((n_in, n_out), dtype=u_hat.dtype)
        if has_b0:
            b[:, :] = b0[n]
        else:
            b[:, :] = 0.0
        s = np.empty((n_out, dim), dtype=u_hat.dtype)
        _route_one(u_hat[n], n_iter, bias, has_bias, leaky, eps, b, c_out[n], s, v_out[n])


@njit_cached(inline="always", fastmath=_FAST)
def _route_one_soa(U, n_iter, bias, has_bias, leaky, eps, b, e, s, v, m, z):
    """Route one sample whose votes are laid out U[j, d, i] (n_out, dim, n_in): every sum
    runs over the children, contiguous and long, so it vectorises without horizontal
    reductions. b (n_out, n_in) holds the starting logits; e (n_out, n_in) ends with the
    couplings; s, v (n_out, dim); m, z (n_in,) float64 softmax buffers."""
    n_out, dim, n_in = U.shape
    for it in range(n_iter):
        if it > 0:
            for j in range(n_out):
                for d in range(dim):
                    vjd = v[j, d]
                    for i in range(n_in):
                        b[j, i] += vjd * U[j, d, i]
        softmax_columns(b, e, n_in, leaky, False, m, z)
        for j in range(n_out):
            for d in range(dim):
                acc = e[j, 0] * U[j, d, 0]
                for i in range(1, n_in):
                    acc += e[j, i] * U[j, d, i]
                s[j, d] = acc + bias[j, d] if has_bias else acc
        _squash_parents(s, eps, v)


@njit_cached(parallel=True, fastmath=_FAST)
def _dense_routing_batch(u, Wt, n_iter, bias, has_bias, leaky, eps, b0, has_b0, v_out, c_out):
    """Votes U[j, d, i] = sum_k Wt[j, d, k, i] u[n, i, k] computed per sample into a
    per-thread buffer, then routed: the batch's votes tensor is never materialised.
    Wt is W transposed to (n_out, out_dim, in_dim, n_in) so the products run over children."""
    batch, n_in, in_dim = u.shape
    n_out, out_dim = Wt.shape[0], Wt.shape[1]
    for n in prange(batch):
        ut = np.empty((in_dim, n_in), dtype=u.dtype)
        for i in range(n_in):
            for k in range(in_dim):
                ut[k, i] = u[n, i, k]
        U = np.zeros((n_out, out_dim, n_in), dtype=u.dtype)
        for j in range(n_out):
            for d in range(out_dim):
                for k in range(in_dim):
                    for i in range(n_in):
                        U[j, d, i] += Wt[j, d, k, i] * ut[k, i]
        b = np.zeros((n_out, n_in), dtype=u.dtype)
        if has_b0:
            for i in range(n_in):
                for j in range(n_out):
                    b[j, i] = b0[n, i, j]
        e = np.empty((n_out, n_in), dtype=u.dtype)
        s = np.empty((n_out, out_dim), dtype=u.dtype)
        _route_one_soa(
            U, n_iter, bias, has_bias, leaky, eps, b, e, s, v_out[n], np.empty(n_in), np.empty(n_in)
        )
        for i in range(n_in):
            for j in range(n_out):
                c_out[n, i, j] = e[j, i]


def _common(dtype, batch, n_in, n_out, dim, bias, initial_logits):
    has_bias = bias is not None
    bias = np.ascontiguousarray(bias) if has_bias else np.zeros((1, 1), dtype=dtype)
    has_b0 = initial_logits is not None
    b0 = np.ascontiguousarray(initial_logits) if has_b0 else np.zeros((1, 1, 1), dtype=dtype)
    v = np.empty((batch, n_out, dim), dtype=dtype)
    c = np.empty((batch, n_in, n_out), dtype=dtype)
    return bias, has_bias, b0, has_b0, v, c


def dynamic_routing(u_hat, *, n_iter, bias, leaky, eps, initial_logits=None, xp=None):
    """Numba dynamic routing with the reference's signature; returns ``(v, c)``."""
    u_hat = np.ascontiguousarray(u_hat)
    batch, n_in, n_out, dim = u_hat.shape
    bias, has_bias, b0, has_b0, v, c = _common(
        u_hat.dtype, batch, n_in, n_out, dim, bias, initial_logits
    )
    eps = u_hat.dtype.type(eps)
    _dynamic_routing_batch(u_hat, n_iter, bias, has_bias, leaky, eps, b0, has_b0, v, c)
    return v, c


def dense_routing(u, W, *, n_iter, bias, leaky, eps, initial_logits=None, xp=None):
    """Numba votes-and-routing: u (batch, n_in, in_dim), W (n_in, n_out, out_dim, in_dim)."""
    u = np.ascontiguousarray(u)
    batch, n_in, _ = u.shape
    n_out, out_dim = W.shape[1], W.shape[2]
    Wt = np.ascontiguousarray(np.transpose(W, (1, 2, 3, 0)))  # the size of W, once per call
    bias, has_bias, b0, has_b0, v, c = _common(
        u.dtype, batch, n_in, n_out, out_dim, bias, initial_logits
    )
    eps = u.dtype.type(eps)
    _dense_routing_batch(u, Wt, n_iter, bias, has_bias, leaky, eps, b0, has_b0, v, c)
    return v, c
