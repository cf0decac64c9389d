"""Numba kernels for dynamic routing: one sample per parallel iteration (a block of samples for
the votes-fused layer), that sample's votes laid out in cache for all routing iterations, no
(batch, n_in, n_out, dim) temporary.

Entry points have the reference's signature (NumPy in, NumPy out) and validate nothing.

Layout. Each sample's votes are routed from a per-thread buffer ``U[j, d, i]`` (n_out, dim,
n_in): every loop of the routing then runs over the children, long and contiguous, so it
vectorises with no horizontal reductions (the softmax over parents too, through
:func:`softmax_columns`). ``dynamic_routing`` on given votes transposes each sample into that
buffer as it reads it (the only pass over the input in memory; the routing iterations read
the 737 KB buffer from L2); ``dense_routing`` computes the votes straight into it.

The fused layer's common input size runs specialised code: a tuple whose *length* is the
input dimension (8) is passed in, and ``len`` of a tuple is a compile-time constant, so the
sum over it is unrolled, each vote summed in a register, and the loop over children around it
vectorises. Other sizes take the generic loop (``()``), with the same results up to summation
order. (Unrolling the capsule dimension, 16, measured no faster, so it is not done.)
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from ._jit import njit_cached
from .vector_exp import exp_nonpositive, softmax_columns

# Reassociation lets LLVM vectorise the sums; no flag that assumes finite values (nnan, ninf).
_FAST = {"reassoc", "contract"}
# input dims with specialised, unrolled vote loops in the fused layer
_UNROLLED_IN_DIMS = (8,)
# samples per pass over W in the fused layer (at most; fewer where the batch would otherwise
# leave threads idle): 8 x 737 KB of DigitCaps votes per thread, so W (6 MB) streams 16 times
# per batch of 128 instead of 128; measured on DigitCaps, 8 and 16 ran alike, 4 slower
_IMAGES_PER_BLOCK = 8


def _size_tuple(n, sizes):
    """A tuple of length n if n is a specialised size, else () (the generic loops)."""
    return (0,) * n if n in sizes else ()


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
def _route_soa(U, n_iter, bias, has_bias, leaky, eps, b, e, s, v, m, z, uniform):
    """Route one sample whose votes are laid out U[j, d, i] (n_out, dim, n_in). b (n_out,
    n_in) holds the starting logits (all zero when ``uniform``: the first couplings are then
    1 / n_out, or 1 / (n_out + 1) when leaky, exactly what the softmax of zeros gives, and no
    exponential is computed); e (n_out, n_in) ends with the couplings; s, v (n_out, dim);
    m, z (n_in,) float64 softmax buffers."""
    n_out, dim, n_in = U.shape
    for it in range(n_iter):
        if it > 0:  # agreement with the previous iteration's parents
            for j in range(n_out):
                for d in range(dim):
                    vjd = v[j, d]
                    for i in range(n_in):
                        b[j, i] += vjd * U[j, d, i]
        if it == 0 and uniform:
            e[:, :] = 1.0 / (n_out + 1.0 if leaky else n_out)
        else:
            softmax_columns(b, e, n_in, leaky, False, m, z)
        for j in range(n_out):
            for d in range(dim):
                acc = e[j, 0] * U[j, d, 0]
                for i in range(1, n_in):
                    acc += e[j, i] * U[j, d, i]
                s[j, d] = acc + bias[j, d] if has_bias else acc
        _squash_parents(s, eps, v)


@njit_cached(inline="always")
def transpose_into(x, y):
    """y = x.T for 2-D x (rows, cols), in 8 x 8 tiles: each tile's loads and stores stay in a
    few cache lines and LLVM turns the constant-size tile into vector shuffles (measured 1.5x
    faster on a DigitCaps sample than a 16-row blocked loop, whose inner loop is a gather)."""
    rows, cols = x.shape
    r_full = rows - rows % 8
    c_full = cols - cols % 8
    for r0 in range(0, r_full, 8):
        for c0 in range(0, c_full, 8):
            for a in range(8):
                for b in range(8):
                    y[c0 + a, r0 + b] = x[r0 + b, c0 + a]
        for c in range(c_full, cols):
            for b in range(8):
                y[c, r0 + b] = x[r0 + b, c]
    for r in range(r_full, rows):
        for c in range(cols):
            y[c, r] = x[r, c]


@njit_cached(inline="always")
def _start_logits(b, b0, has_b0, n):
    """b (n_out, n_in) = the sample's initial logits, transposed, or zeros."""
    n_out, n_in = b.shape
    if has_b0:
        for i in range(n_in):
            for j in range(n_out):
                b[j, i] = b0[n, i, j]
    else:
        b[:, :] = 0.0


@njit_cached(inline="always")
def _store_couplings(e, c_out, n):
    transpose_into(e, c_out[n])


@njit_cached(parallel=True, fastmath=_FAST)
def _dynamic_routing_batch(u_hat, n_iter, bias, has_bias, leaky, eps, b0, has_b0, v_out, c_out):
    batch, n_in, n_out, dim = u_hat.shape
    for n in prange(batch):
        # per-sample (so per-thread) buffers: no thread writes another's memory
        U = np.empty((n_out, dim, n_in), dtype=u_hat.dtype)
        transpose_into(u_hat[n].reshape((n_in, n_out * dim)), U.reshape((n_out * dim, n_in)))
        b = np.empty((n_out, n_in), dtype=u_hat.dtype)
        _start_logits(b, b0, has_b0, n)
        e = np.empty((n_out, n_in), dtype=u_hat.dtype)
        s = np.empty((n_out, dim), dtype=u_hat.dtype)
        m = np.empty(n_in)
        z = np.empty(n_in)
        _route_soa(U, n_iter, bias, has_bias, leaky, eps, b, e, s, v_out[n], m, z, not has_b0)
        _store_couplings(e, c_out, n)


@njit_cached(parallel=True)
def _transpose_weights(W, Wt):
    """W (n_in, n_out * out_dim, in_dim) -> Wt (n_out * out_dim, in_dim, n_in)."""
    n_in, JD, K = W.shape
    for jd in prange(JD):
        for k in range(K):
            for i in range(n_in):
                Wt[jd, k, i] = W[i, jd, k]


@njit_cached(parallel=True, fastmath=_FAST)
def _dense_routing_batch(
    u, Wt, n_out, klit, block, n_iter, bias, has_bias, leaky, eps, b0, has_b0, v_out, c_out
):
    """Votes U[j, d, i] = sum_k Wt[jd, k, i] u[n, i, k] computed into per-thread buffers for a
    block of samples, each row of Wt (36 KB for DigitCaps) read once for the whole block, so W
    streams from memory once per block of samples instead of once per sample; then each
    sample is routed. The batch's votes tensor is never materialised."""
    batch, n_in, in_dim = u.shape
    JD = Wt.shape[0]
    dim = JD // n_out
    n_blocks = (batch + block - 1) // block
    for blk in prange(n_blocks):
        n0 = blk * block
        nn = min(n0 + block, batch) - n0
        ut = np.empty((nn, in_dim, n_in), dtype=u.dtype)
        for q in range(nn):
            transpose_into(u[n0 + q], ut[q])
        U = np.empty((nn, JD, n_in), dtype=u.dtype)
        if len(klit) > 0:  # in_dim unrolled: each vote summed in a register
            for jd in range(JD):
                for q in range(nn):
                    for i in range(n_in):
                        acc = Wt[jd, 0, i] * ut[q, 0, i]
                        for k in range(1, len(klit)):
                            acc += Wt[jd, k, i] * ut[q, k, i]
                        U[q, jd, i] = acc
        else:
            U[:, :, :] = 0.0
            for jd in range(JD):
                for q in range(nn):
                    for k in range(in_dim):
                        for i in range(n_in):
                            U[q, jd, i] += Wt[jd, k, i] * ut[q, k, i]
        b = np.empty((n_out, n_in), dtype=u.dtype)
        e = np.empty((n_out, n_in), dtype=u.dtype)
        s = np.empty((n_out, dim), dtype=u.dtype)
        m = np.empty(n_in)
        z = np.empty(n_in)
        for q in range(nn):
            _start_logits(b, b0, has_b0, n0 + q)
            Uq = U[q].reshape((n_out, dim, n_in))
            _route_soa(
                Uq,
                n_iter,
                bias,
                has_bias,
                leaky,
                eps,
                b,
                e,
                s,
                v_out[n0 + q],
                m,
                z,
                not has_b0,
            )
            _store_couplings(e, c_out, n0 + q)


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


def dense_routing(u, W, *, n_iter, bias, leaky, eps, initial_logits=None, xp=None, block=None):
    """Numba votes-and-routing: u (batch, n_in, in_dim), W (n_in, n_out, out_dim, in_dim).
    ``block``: samples per pass over W (default: up to 8, so that every thread has a block);
    results do not depend on it."""
    u = np.ascontiguousarray(u)
    batch, n_in, in_dim = u.shape
    n_out, out_dim = W.shape[1], W.shape[2]
    W3 = np.ascontiguousarray(W, dtype=u.dtype).reshape(n_in, n_out * out_dim, in_dim)
    Wt = np.empty((n_out * out_dim, in_dim, n_in), dtype=u.dtype)  # the size of W, per call
    _transpose_weights(W3, Wt)
    bias, has_bias, b0, has_b0, v, c = _common(
        u.dtype, batch, n_in, n_out, out_dim, bias, initial_logits
    )
    eps = u.dtype.type(eps)
    klit = _size_tuple(in_dim, _UNROLLED_IN_DIMS)
    if block is None:
        block = min(_IMAGES_PER_BLOCK, -(-batch // numba.get_num_threads()))
    block = max(1, int(block))
    _dense_routing_batch(
        u, Wt, n_out, klit, block, n_iter, bias, has_bias, leaky, eps, b0, has_b0, v, c
    )
    return v, c
