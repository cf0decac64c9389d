"""Numba kernels for dynamic routing: one sample per parallel iteration (a block of samples for
the votes-fused layer), that sample's votes laid out in cache for all routing iterations, no
(batch, n_in, n_out, dim) temporary.

Entry points have the reference's signature (NumPy in, NumPy out) and validate nothing. They
take two optional callbacks from the public functions: ``on_nonfinite`` (called when some
sample's first sums were not finite, which they are exactly when its votes are, or overflow:
the public edge then needs no pass of its own over the votes to prove them finite) and
``on_overflow`` (called with the outputs when some are not finite; each sample's outputs are
checked while in cache, so the edge need not scan them again).

Layout. Each sample's votes are routed from a per-thread buffer ``U[j, d, i]`` (n_out, dim,
n_in): every loop of the routing then runs over the children, long and contiguous, so it
vectorises with no horizontal reductions. ``dynamic_routing`` on given votes transposes each
sample into that buffer as it reads it (the only pass over the input in memory);
``dense_routing`` computes the votes straight into it, summing each row as it goes, which is
the first iteration's (uniform couplings') sums. Every later iteration reads the buffer once:
the children in chunks of ``_CHUNK``, each chunk's agreement update, softmax over parents
(float32 exponentials for float32 votes, :func:`exp_nonpositive_as`) and contribution to the
parents' sums in turn, while its votes are in L1. The loops over a chunk run on one-row views
with unsigned bounds: with signed bounds Numba's negative-index wraparound kept LLVM from
vectorising them (measured 4-8x slower).

The fused layer's common input size runs specialised code: a tuple whose *length* is the
input dimension (8) is passed in, and ``len`` of a tuple is a compile-time constant, so the
sum over it is unrolled, each vote summed in a register, and the loop over children around it
vectorises; two samples share each pass over a row of W. Other sizes take the generic loop
(``()``), with the same results up to summation order.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from ._jit import njit_cached
from .vector_exp import exp_nonpositive, exp_nonpositive_as

# Reassociation lets LLVM vectorise the sums; no flag that assumes finite values (nnan, ninf).
_FAST = {"reassoc", "contract"}
# input dims with specialised, unrolled vote loops in the fused layer
_UNROLLED_IN_DIMS = (8,)
# samples per pass over W in the fused layer (at most; fewer where the batch would otherwise
# leave threads idle): 8 x 737 KB of DigitCaps votes per thread, so W (6 MB) streams 16 times
# per batch of 128 instead of 128; measured on DigitCaps, 8 and 16 ran alike, 4 slower
_IMAGES_PER_BLOCK = 8
# children per chunk of a routing iteration (their votes stay in L1 between the agreement
# update, the softmax and the parents' sums)
_CHUNK = 128


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
def _softmax_chunk(b, e, i0, i1, leaky, m, z):
    """e[:, i0:i1] = softmax over parents (axis 0) of b[:, i0:i1], every loop over those
    children; as :func:`softmax_columns` (max-shifted, by 0 where the max is not finite, by at
    least 0 when leaky). m, z (>= i1 - i0,) buffers of b's dtype; i0, i1 unsigned (see
    :func:`_route_soa`)."""
    n_out = b.shape[0]
    b0 = b[0]
    for i in range(i0, i1):
        m[i - i0] = b0[i]
    for j in range(1, n_out):
        bj = b[j]
        for i in range(i0, i1):
            x = bj[i]
            m[i - i0] = x if x > m[i - i0] else m[i - i0]
    for i in range(i0, i1):
        c = i - i0
        if not np.isfinite(m[c]):
            m[c] = 0.0
        if leaky and m[c] < 0.0:
            m[c] = 0.0
        z[c] = exp_nonpositive_as(-m[c]) if leaky else 0.0
    for j in range(n_out):
        bj = b[j]
        ej = e[j]
        for i in range(i0, i1):
            x = exp_nonpositive_as(bj[i] - m[i - i0])
            ej[i] = x
            z[i - i0] += x
    for i in range(i0, i1):
        z[i - i0] = 1.0 / z[i - i0]
    for j in range(n_out):
        ej = e[j]
        for i in range(i0, i1):
            ej[i] *= z[i - i0]


@njit_cached(inline="always", fastmath=_FAST)
def _route_soa(
    U, n_iter, bias, has_bias, leaky, eps, b, e, s, v, m, z, uniform, nonfinite, n, first_done
):
    """Route one sample whose votes are laid out U[j, d, i] (n_out, dim, n_in). b (n_out,
    n_in) holds the starting logits (all zero when ``uniform``: the first couplings are then
    1 / n_out, or 1 / (n_out + 1) when leaky, exactly what the softmax of zeros gives, and no
    exponential is computed); e (n_out, n_in) ends with the couplings; s, v (n_out, dim);
    m, z (>= _CHUNK,) softmax buffers of U's dtype (float32 exponentials for float32 votes).
    ``first_done`` (with ``uniform`` only): s already holds the first iteration's sums of
    the votes (not yet divided by n_out; the fused layer sums them as it computes them).

    Every iteration after the first reads the votes once: children in chunks of _CHUNK (their
    votes, 20 KB for 10 x 16 dims, stay in L1), each chunk's agreement update, softmax over
    parents and contribution to the parents' sums in turn.

    nonfinite[n, 0] is set to whether the first iteration's sums s were not all finite: they are
    finite exactly when every vote is (the couplings are finite, and a zero coupling times inf
    or NaN gives NaN), short of an overflow of finite votes; the caller's exact check tells
    the two apart."""
    n_out, dim, n_in = U.shape
    for it in range(n_iter):
        if it == 0 and uniform:
            c0 = 1.0 / (n_out + 1.0 if leaky else n_out)
            e[:, :] = c0
            if not first_done:
                for j in range(n_out):
                    for d in range(dim):
                        acc = U[j, d, 0]
                        for i in range(1, n_in):
                            acc += U[j, d, i]
                        s[j, d] = acc
            for j in range(n_out):
                for d in range(dim):
                    s[j, d] = s[j, d] * c0 + bias[j, d] if has_bias else s[j, d] * c0
        else:
            s[:, :] = 0.0
            for start in range(0, n_in, _CHUNK):
                # unsigned chunk bounds and rows indexed one at a time: Numba then emits no
                # negative-index wraparound, and LLVM vectorises these loops (4-8x faster)
                i0 = np.uint64(start)
                i1 = np.uint64(min(start + _CHUNK, n_in))
                if it > 0:  # agreement with the previous iteration's parents
                    for j in range(n_out):
                        bj = b[j]
                        for d in range(dim):
                            vjd = v[j, d]
                            Ujd = U[j, d]
                            for i in range(i0, i1):
                                bj[i] += vjd * Ujd[i]
                _softmax_chunk(b, e, i0, i1, leaky, m, z)
                for j in range(n_out):
                    ej = e[j]
                    for d in range(dim):
                        Ujd = U[j, d]
                        acc = s[j, d]
                        for i in range(i0, i1):
                            acc += ej[i] * Ujd[i]
                        s[j, d] = acc
            if has_bias:
                for j in range(n_out):
                    for d in range(dim):
                        s[j, d] += bias[j, d]
        if it == 0:
            nonfinite[n, 0] = not all_finite(s)
        _squash_parents(s, eps, v)


@njit_cached(inline="always")
def all_finite(x):
    """Whether every element of the C-contiguous array x is finite."""
    flat = x.reshape(-1)
    for k in range(flat.shape[0]):
        if not np.isfinite(flat[k]):
            return False
    return True


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
def _dynamic_routing_batch(
    u_hat, n_iter, bias, has_bias, leaky, eps, b0, has_b0, v_out, c_out, nonfinite
):
    batch, n_in, n_out, dim = u_hat.shape
    for n in prange(batch):
        # per-sample (so per-thread) buffers: no thread writes another's memory
        U = np.empty((n_out, dim, n_in), dtype=u_hat.dtype)
        transpose_into(u_hat[n].reshape((n_in, n_out * dim)), U.reshape((n_out * dim, n_in)))
        b = np.empty((n_out, n_in), dtype=u_hat.dtype)
        _start_logits(b, b0, has_b0, n)
        e = np.empty((n_out, n_in), dtype=u_hat.dtype)
        s = np.empty((n_out, dim), dtype=u_hat.dtype)
        m = np.empty(_CHUNK, dtype=u_hat.dtype)
        z = np.empty(_CHUNK, dtype=u_hat.dtype)
        _route_soa(
            U,
            n_iter,
            bias,
            has_bias,
            leaky,
            eps,
            b,
            e,
            s,
            v_out[n],
            m,
            z,
            not has_b0,
            nonfinite,
            n,
            False,
        )
        nonfinite[n, 1] = not (all_finite(e) and all_finite(v_out[n]))
        _store_couplings(e, c_out, n)


@njit_cached(parallel=True)
def _transpose_weights(W, Wt):
    """W (n_in, n_out * out_dim, in_dim) -> Wt (n_out * out_dim, in_dim, n_in): the 2-D
    transpose of W seen as (n_in, n_out * out_dim * in_dim), in column blocks of 64 (8 x 8
    tiles each; measured 1.5x faster than strided reads of W)."""
    n_in, JD, K = W.shape
    x = W.reshape((n_in, JD * K))
    y = Wt.reshape((JD * K, n_in))
    n_blocks = (JD * K + 63) // 64
    for blk in prange(n_blocks):
        c0 = blk * 64
        c1 = min(c0 + 64, JD * K)
        transpose_into(x[:, c0:c1], y[c0:c1, :])


@njit_cached(inline="always", fastmath=_FAST)
def _vote(Wr, utq, i, klit):
    """sum_k Wr[k, i] utq[k, i], the sum over k unrolled (len(klit) terms)."""
    acc = Wr[0, i] * utq[0, i]
    for k in range(1, len(klit)):
        acc += Wr[k, i] * utq[k, i]
    return acc


@njit_cached(inline="always", fastmath=_FAST)
def _row_sum(r):
    """sum_i r[i] (one code path for every row, so the order of the sum never depends on the
    row's place in a block)."""
    t = r[0]
    for i in range(1, r.shape[0]):
        t += r[i]
    return t


@njit_cached(inline="always", fastmath=_FAST)
def _votes_row(Wr, ut, U, jd, sums, klit):
    """One vote row jd for every sample q of a block: U[q, jd, i] = sum_k Wr[k, i] ut[q, k, i],
    and sums[q, jd] = sum_i U[q, jd, i] (the first routing iteration's sums, read from L1 right
    after, so they need no pass over the votes of their own). Two samples per pass over the
    row: each W value is loaded once for two products (measured 1.3x faster than one sample;
    with four the loop no longer vectorised); the loops over children vectorise (one-row
    views: no wraparound)."""
    nn, _, n_in = ut.shape
    for q in range(0, nn - 1, 2):
        u0, u1 = ut[q], ut[q + 1]
        r0, r1 = U[q, jd], U[q + 1, jd]
        for i in range(n_in):
            a0 = _vote(Wr, u0, i, klit)
            a1 = _vote(Wr, u1, i, klit)
            r0[i] = a0
            r1[i] = a1
    if nn % 2 == 1:
        uq = ut[nn - 1]
        rq = U[nn - 1, jd]
        for i in range(n_in):
            rq[i] = _vote(Wr, uq, i, klit)
    for q in range(nn):
        sums[q, jd] = _row_sum(U[q, jd])


@njit_cached(parallel=True, fastmath=_FAST)
def _dense_routing_batch(
    u,
    Wt,
    n_out,
    klit,
    block,
    n_iter,
    bias,
    has_bias,
    leaky,
    eps,
    b0,
    has_b0,
    v_out,
    c_out,
    nonfinite,
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
        sums = np.empty((nn, n_out, dim), dtype=u.dtype)  # each vote row's sum over children
        sums2 = sums.reshape((nn, JD))
        summed = len(klit) > 0 and not has_b0
        if len(klit) > 0:  # in_dim unrolled: each vote summed in a register
            for jd in range(JD):
                _votes_row(Wt[jd], ut, U, jd, sums2, klit)
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
        m = np.empty(_CHUNK, dtype=u.dtype)
        z = np.empty(_CHUNK, dtype=u.dtype)
        for q in range(nn):
            _start_logits(b, b0, has_b0, n0 + q)
            Uq = U[q].reshape((n_out, dim, n_in))
            if summed:
                s[:, :] = sums[q]
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
                nonfinite,
                n0 + q,
                summed,
            )
            nonfinite[n0 + q, 1] = not (all_finite(e) and all_finite(v_out[n0 + q]))
            _store_couplings(e, c_out, n0 + q)


def _common(dtype, batch, n_in, n_out, dim, bias, initial_logits):
    has_bias = bias is not None
    bias = np.ascontiguousarray(bias) if has_bias else np.zeros((1, 1), dtype=dtype)
    has_b0 = initial_logits is not None
    b0 = np.ascontiguousarray(initial_logits) if has_b0 else np.zeros((1, 1, 1), dtype=dtype)
    v = np.empty((batch, n_out, dim), dtype=dtype)
    c = np.empty((batch, n_in, n_out), dtype=dtype)
    return bias, has_bias, b0, has_b0, v, c


def dynamic_routing(
    u_hat,
    *,
    n_iter,
    bias,
    leaky,
    eps,
    initial_logits=None,
    xp=None,
    on_nonfinite=None,
    on_overflow=None,
):
    """Numba dynamic routing with the reference's signature; returns ``(v, c)``.

    ``on_nonfinite``: called (with no arguments) when some sample's first sums were not finite,
    which they are exactly when its votes are (or overflow): the public function passes its
    deferred finiteness check, so the votes need no pass of their own at the edge.
    ``on_overflow``: called with the outputs ``(v, c)`` when some of them are not finite (the
    kernel checks each sample's outputs while they are in cache), so that the caller need not
    scan them again; without it, nothing is checked."""
    u_hat = np.ascontiguousarray(u_hat)
    batch, n_in, n_out, dim = u_hat.shape
    bias, has_bias, b0, has_b0, v, c = _common(
        u_hat.dtype, batch, n_in, n_out, dim, bias, initial_logits
    )
    eps = u_hat.dtype.type(eps)
    nonfinite = np.zeros((batch, 2), dtype=np.bool_)  # (inputs, outputs) per sample
    _dynamic_routing_batch(u_hat, n_iter, bias, has_bias, leaky, eps, b0, has_b0, v, c, nonfinite)
    _report(nonfinite, on_nonfinite, on_overflow, (v, c))
    return v, c


def _report(nonfinite, on_nonfinite, on_overflow, outputs):
    """Call the callbacks the per-sample flags (inputs, outputs) ask for, inputs first."""
    if on_nonfinite is not None and nonfinite[:, 0].any():
        on_nonfinite()
    if on_overflow is not None and nonfinite[:, 1].any():
        on_overflow(outputs)


def dense_routing(
    u,
    W,
    *,
    n_iter,
    bias,
    leaky,
    eps,
    initial_logits=None,
    xp=None,
    block=None,
    on_nonfinite=None,
    on_overflow=None,
):
    """Numba votes-and-routing: u (batch, n_in, in_dim), W (n_in, n_out, out_dim, in_dim).
    Without initial logits (and for sizes it unrolls) the images-in-lanes kernel of
    ``dense_lanes.py`` runs; otherwise, or with ``block`` given, the per-image kernel below.
    ``block``: its samples per pass over W (default: up to 8, so that every thread has a
    block); results do not depend on it. ``on_nonfinite`` and ``on_overflow`` as in
    :func:`dynamic_routing` (the votes are finite exactly when u and W are, short of an
    overflow)."""
    from . import dense_lanes  # (here: it imports all_finite from this module)

    u = np.ascontiguousarray(u)
    if block is None and dense_lanes.supported(u.shape, W.shape, u.dtype, initial_logits):
        v, c, nonfinite = dense_lanes.dense_routing_lanes(
            u, W, n_iter=n_iter, bias=bias, leaky=leaky, eps=eps
        )
        _report(nonfinite, on_nonfinite, on_overflow, (v, c))
        return v, c
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
    nonfinite = np.zeros((batch, 2), dtype=np.bool_)  # (inputs, outputs) per sample
    _dense_routing_batch(
        u, Wt, n_out, klit, block, n_iter, bias, has_bias, leaky, eps, b0, has_b0, v, c, nonfinite
    )
    _report(nonfinite, on_nonfinite, on_overflow, (v, c))
    return v, c
