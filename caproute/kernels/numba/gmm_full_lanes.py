"""Numba kernel for the full-covariance E-step and its statistics with the points in the
vector lanes (8 float64 or 16 float32 points per 512-bit vector, a "chunk").

Per block of ``_CHUNKS`` chunks, everything stays in L1 and in registers:

- :func:`_logp_chunk`: a chunk's ``D`` feature vectors are loaded once; for each component the
  columns of ``x U_k - mu_k U_k`` (``U_k`` upper triangular, its entries broadcast from
  memory in the order :func:`pack_factors` lays them out, each column starting from
  ``-mu_k U_k``) are multiply-added in registers and their squares summed, giving the
  chunk's log-probabilities and their max over the components;
- :func:`_softmax_chunk`: their softmax over the components (max-shifted, the exp of
  ``vector_exp.exp_nonpositive_ir`` with fused multiply-adds, terms below exp(cut) times the
  max set to 0 as in ``gmm_estep``), keeping each point's shift and sum for the
  log-normaliser;
- per component, :func:`_centre_chunks` forms ``d = x - shift_k`` for the block (and
  ``sum r``), then :func:`_scatter_tiles` adds ``sum r d_i d_j`` over the upper triangle and
  ``sum r d_i``, in tiles of rows whose sums stay in registers over the block's chunks
  (:func:`_tiles`).

No sum ends in a horizontal reduction: a tile's sums are added lane by lane into a
per-group array of the compute dtype; float32 ones go into float64 every ``_FOLD`` blocks
(64 float32 terms per lane at most), float64 ones stay until the end. At the end each group
adds its lanes in order, and the caller adds the groups in order: results depend on the
number of groups (the caller's ``4 x threads``), not on scheduling. Each group takes a
contiguous range of blocks, and prefetches the next block while it computes one.

The unrolled code depends on ``D`` (a literal, one of ``FEATURES``); the number of
components is a run-time loop, so a sweep over ``n_components`` compiles nothing new.
Point by point the arithmetic follows ``gmm_estep._full`` (``x U - mu U``, sums centred on
the shift); the log-probabilities are one fused ``lk - maha / 2`` with the constant folded into
``lk``, and the exp's steps are fused, so values differ from that kernel's by roundings, and
the sums are grouped differently.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._jit import njit_cached
from .aligned import empty_aligned, zeros_aligned
from .ir_vectors import as_i64, lanes_of, prefetch, transpose_square, vector_ops
from .vector_exp import exp_nonpositive_ir
from .vector_width import prefer_wide_vectors

_FAST = {"reassoc", "contract"}
_CHUNKS = 16  # chunks per block: 128 float64 or 256 float32 points
_FOLD = 4  # blocks whose float32 sums add up before they go to the float64 ones
#: the feature counts this kernel takes (gmm_estep._full takes the others). Each one is a
#: compilation of its own (about 5 s on the 2-core machine; cached on disk), so they are few:
#: multiples of 4 up to 16 (the unrolled code grows with D^2)
FEATURES = (4, 8, 12, 16)


def supported(D):
    """Whether :func:`full_stats` takes points of D features."""
    return D in FEATURES


_MAX_SUMS = 26  # a scatter tile's sums held in registers (of 32)
_SEGMENT = 8  # columns per tile of a pair of wide rows (at most 17 sums)
_CUT = {32: -64.0, 64: -512.0}  # gmm_estep._CUT32 / _CUT64


def block_size(dtype):
    """Points per block."""
    return _CHUNKS * lanes_of(dtype)


def n_sums(D):
    """Accumulators per component: the upper triangle, D first-order sums, and sum r."""
    return D * (D + 1) // 2 + D + 1


def _tri(D, i, j):
    """Index of (i, j), j >= i, in the row-major upper triangle of a (D, D) matrix."""
    return i * D - i * (i - 1) // 2 + (j - i)


def _tiles(D):
    """The scatter's tiles, (first row, rows, first column, end column): a tile adds
    r d_i d_j for its rows i and the columns max(i, first) <= j < end, and r d_i where its
    first column is its first row. Rows go together while all their columns' sums (and
    their first-order sums) fit in _MAX_SUMS registers; a row too wide for that goes with
    the next one in segments of _SEGMENT columns (each d_j load then feeds two
    multiply-adds: a lone row's tile loaded as much as it multiplied)."""
    out = []
    i0 = 0
    while i0 < D:
        rows, width = 1, D - i0
        while i0 + rows < D and width + (D - i0 - rows) + rows + 1 <= _MAX_SUMS:
            width += D - i0 - rows
            rows += 1
        if rows == 1 and i0 + 1 < D and 2 * (D - i0) + 1 > _MAX_SUMS:
            rows = 2
            out.extend((i0, 2, j0, min(D, j0 + _SEGMENT)) for j0 in range(i0, D, _SEGMENT))
        else:
            out.append((i0, rows, i0, D))
        i0 += rows
    return out


def _splat(vty, value):
    return ir.Constant(vty, [ir.Constant(vty.element, value)] * vty.count)


def _flush(builder, vty, acc_ptr, offset, value):
    """acc[offset : offset + lanes] += value (acc of the compute dtype)."""
    ptr = builder.bitcast(builder.gep(acc_ptr, [offset]), vty.as_pointer())
    builder.store(builder.fadd(builder.load(ptr, align=4), value), ptr, align=4)


def _transposes(D, L):
    """Whether :func:`_load_chunks` transposes chunks of D features: D a multiple of the
    lanes L, or a power of two dividing L (D = 1 needs no transpose, and takes the loop)."""
    return D % L == 0 or (1 < D < L and L % D == 0 and D & (D - 1) == 0)


@intrinsic
def _load_chunks(typingctx, X, start, n_chunks, xb, dlit):
    """xb[c, i] = X[start + c L : start + (c + 1) L, i] for c < n_chunks, where
    :func:`_transposes`: each chunk's L rows of X are loaded as whole vectors and transposed
    in registers (:func:`ir_vectors.transpose_square`): D / L squares of L x L when D is a
    multiple of L, else L / D squares of D x D (each vector holds L / D points) whose columns
    are joined. (Strided loads went one element at a time: about 13 cycles per float64
    point of 8 features.)"""
    D = dlit.count
    sig = types.void(X, start, n_chunks, xb, dlit)

    def codegen(context, builder, signature, args):
        L, vty, i64, load, store, _, _ = vector_ops(builder, signature.args[0].dtype)
        xa, ba = (context.make_array(signature.args[n])(context, builder, args[n]) for n in (0, 3))
        if not _transposes(D, L):  # (compiled in the driver's other branch, never run)
            return context.get_dummy_value()
        start_, nc_ = as_i64(builder, args[1]), as_i64(builder, args[2])
        i32 = ir.IntType(32)
        with cgutils.for_range(builder, nc_) as loop:
            c = loop.index
            src = builder.mul(builder.add(start_, builder.mul(c, i64(L))), i64(D))
            dst = builder.mul(c, i64(D * L))
            if D % L == 0:
                for s in range(D // L):
                    rows = [load(xa.data, builder.add(src, i64(q * D + s * L))) for q in range(L)]
                    for i, col in enumerate(transpose_square(builder, rows)):
                        store(col, ba.data, builder.add(dst, i64((s * L + i) * L)))
            else:
                per = L // D  # points per loaded vector
                vecs = [load(xa.data, builder.add(src, i64(v * L))) for v in range(D)]
                points = [
                    builder.shuffle_vector(
                        vecs[p // per],
                        vecs[p // per],
                        ir.Constant(ir.VectorType(i32, D), [(p % per) * D + e for e in range(D)]),
                    )
                    for p in range(L)
                ]
                groups = [
                    transpose_square(builder, points[g * D : (g + 1) * D]) for g in range(per)
                ]
                for i in range(D):
                    parts = [groups[g][i] for g in range(per)]
                    while len(parts) > 1:  # join the groups' columns, pairwise
                        w = parts[0].type.count
                        mask = ir.Constant(ir.VectorType(i32, 2 * w), list(range(2 * w)))
                        parts = [
                            builder.shuffle_vector(parts[k], parts[k + 1], mask)
                            for k in range(0, len(parts), 2)
                        ]
                    store(parts[0], ba.data, builder.add(dst, i64(i * L)))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _logp_chunk(typingctx, xb, c, Up, lk, LP, MZ, dlit):
    """LP[k] = lk[k] - |x U_k - mu_k U_k|^2 / 2 for chunk c of xb (C, D, L) and every k < K,
    and MZ[0, c] = their max over k; Up (K, D + D (D + 1) / 2) = each component's -mu_k U_k
    and then the columns of its upper triangular U_k (:func:`pack_factors`), lk (K,),
    LP (K, L), MZ (2, C, L)."""
    D = dlit.count
    sig = types.void(xb, c, Up, lk, LP, MZ, dlit)

    def codegen(context, builder, signature, args):
        L, vty, i64, load, store, broadcast, fma = vector_ops(builder, signature.args[0].dtype)
        xa, ua, la, pa, za = (
            context.make_array(signature.args[n])(context, builder, args[n])
            for n in (0, 2, 3, 4, 5)
        )
        c_ = as_i64(builder, args[1])
        K = builder.extract_value(ua.shape, 0)
        xbase = builder.mul(c_, i64(D * L))
        xs = [load(xa.data, builder.add(xbase, i64(i * L))) for i in range(D)]
        minus_half = _splat(vty, -0.5)
        m_ = cgutils.alloca_once(builder, vty)
        builder.store(_splat(vty, -math.inf), m_)
        with cgutils.for_range(builder, K) as loop:
            k = loop.index
            base = builder.mul(k, i64(D + D * (D + 1) // 2))
            maha = None
            for j in range(D):
                y = broadcast(ua.data, builder.add(base, i64(j)))
                col = D + j * (j + 1) // 2  # column j's entries U[0..j, j]
                for i in range(j + 1):
                    y = fma(xs[i], broadcast(ua.data, builder.add(base, i64(col + i))), y)
                maha = builder.fmul(y, y) if maha is None else fma(y, y, maha)
            v = fma(maha, minus_half, broadcast(la.data, k))
            store(v, pa.data, builder.mul(k, i64(L)))
            m = builder.load(m_)
            builder.store(builder.select(builder.fcmp_ordered(">", v, m), v, m), m_)
        store(builder.load(m_), za.data, builder.mul(c_, i64(L)))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _softmax_chunk(typingctx, LP, R, c, MZ):
    """R[k, c] = softmax over k of LP[k] (K, L): shifted by the max over k that MZ[0, c]
    holds (by 0 where it is not finite), terms below exp(cut) of it set to 0; MZ[0, c] = the
    shift, MZ[1, c] = the sum of the exponentials. R (K, C, L), MZ (2, C, L)."""
    sig = types.void(LP, R, c, MZ)

    def codegen(context, builder, signature, args):
        L, vty, i64, load, store, _, _ = vector_ops(builder, signature.args[0].dtype)
        pa, ra, za = (
            context.make_array(signature.args[n])(context, builder, args[n]) for n in (0, 1, 3)
        )
        c_ = as_i64(builder, args[2])
        K = builder.extract_value(pa.shape, 0)
        C = builder.extract_value(ra.shape, 1)
        zero = _splat(vty, 0.0)
        bits = 32 if vty.element == ir.FloatType() else 64
        cut = _splat(vty, _CUT[bits])
        rbase = builder.mul(c_, i64(L))
        m = load(za.data, rbase)
        m = builder.select(builder.fcmp_ordered("==", builder.fsub(m, m), zero), m, zero)
        z_ = cgutils.alloca_once(builder, vty)
        builder.store(zero, z_)
        stride = builder.mul(C, i64(L))
        with cgutils.for_range(builder, K) as loop:
            d = builder.fsub(load(pa.data, builder.mul(loop.index, i64(L))), m)
            e = builder.select(
                builder.fcmp_ordered("<", d, cut), zero, exp_nonpositive_ir(builder, d, fused=True)
            )
            store(e, ra.data, builder.add(rbase, builder.mul(loop.index, stride)))
            builder.store(builder.fadd(builder.load(z_), e), z_)
        z = builder.load(z_)
        zinv = builder.fdiv(_splat(vty, 1.0), z)
        with cgutils.for_range(builder, K) as loop:
            off = builder.add(rbase, builder.mul(loop.index, stride))
            store(builder.fmul(load(ra.data, off), zinv), ra.data, off)
        store(m, za.data, rbase)
        store(z, za.data, builder.add(rbase, stride))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _centre_chunks(typingctx, xb, R, k, shift, nc, DD, acc, dlit):
    """For chunks c < nc: DD[c, i] = xb[c, i] - shift[k, i]; acc[P - 1] += sum_c R[k, c]
    (acc (P, L) of the compute dtype)."""
    D = dlit.count
    sig = types.void(xb, R, k, shift, nc, DD, acc, dlit)

    def codegen(context, builder, signature, args):
        L, vty, i64, load, store, broadcast, _ = vector_ops(builder, signature.args[0].dtype)
        xa, ra, sa, da, aa = (
            context.make_array(signature.args[n])(context, builder, args[n])
            for n in (0, 1, 3, 5, 6)
        )
        k_, nc_ = as_i64(builder, args[2]), as_i64(builder, args[4])
        C = builder.extract_value(ra.shape, 1)
        kD = builder.mul(k_, i64(D))
        shifts = [broadcast(sa.data, builder.add(kD, i64(i))) for i in range(D)]
        sr = cgutils.alloca_once(builder, vty)
        builder.store(_splat(vty, 0.0), sr)
        rbase = builder.mul(builder.mul(k_, C), i64(L))
        with cgutils.for_range(builder, nc_) as loop:
            c = loop.index
            r = load(ra.data, builder.add(rbase, builder.mul(c, i64(L))))
            base = builder.mul(c, i64(D * L))
            for i in range(D):
                off = builder.add(base, i64(i * L))
                store(builder.fsub(load(xa.data, off), shifts[i]), da.data, off)
            builder.store(builder.fadd(builder.load(sr), r), sr)
        _flush(builder, vty, aa.data, i64((n_sums(D) - 1) * L), builder.load(sr))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _scatter_tiles(typingctx, DD, R, k, nc, acc, dlit):
    """Over chunks c < nc, with r = R[k, c] and d = DD[c]: acc[tri(i, j)] += r d_i d_j for
    j >= i and acc[tri + i] += r d_i (acc (P, L) of the compute dtype, tri = D (D + 1) / 2):
    tile after tile (:func:`_tiles`), each one's sums in registers; r d_i is formed in each
    tile of row i."""
    D = dlit.count
    sig = types.void(DD, R, k, nc, acc, dlit)

    def codegen(context, builder, signature, args):
        L, vty, i64, load, _, _, fma = vector_ops(builder, signature.args[0].dtype)
        da, ra, aa = (
            context.make_array(signature.args[n])(context, builder, args[n]) for n in (0, 1, 4)
        )
        k_, nc_ = as_i64(builder, args[2]), as_i64(builder, args[3])
        C = builder.extract_value(ra.shape, 1)
        rbase = builder.mul(builder.mul(k_, C), i64(L))
        tri = D * (D + 1) // 2
        for i0, rows, j0, j1 in _tiles(D):
            pairs = [(i, j) for i in range(i0, i0 + rows) for j in range(max(i, j0), j1)]
            keys = pairs + ([(i, None) for i in range(i0, i0 + rows)] if j0 == i0 else [])
            sums = {p: cgutils.alloca_once(builder, vty) for p in keys}
            for s in sums.values():
                builder.store(_splat(vty, 0.0), s)
            with cgutils.for_range(builder, nc_) as loop:
                c = loop.index
                r = load(ra.data, builder.add(rbase, builder.mul(c, i64(L))))
                base = builder.mul(c, i64(D * L))
                need = sorted(set(range(i0, i0 + rows)) | set(range(j0, j1)))
                d = {j: load(da.data, builder.add(base, i64(j * L))) for j in need}
                rd = {i: builder.fmul(r, d[i]) for i in range(i0, i0 + rows)}
                for i, j in pairs:
                    builder.store(fma(rd[i], d[j], builder.load(sums[(i, j)])), sums[(i, j)])
                for i, j in keys[len(pairs) :]:  # the first-order sums, if this tile has them
                    s = sums[(i, j)]
                    builder.store(builder.fadd(builder.load(s), rd[i]), s)
            for (i, j), s in sums.items():
                p = tri + i if j is None else _tri(D, i, j)
                _flush(builder, vty, aa.data, i64(p * L), builder.load(s))
        return context.get_dummy_value()

    return sig, codegen


@njit_cached(parallel=True, fastmath=_FAST)
def _full_lanes(X, sw, weighted, Up, lk, shift, acc, loglik, dlit, transposes):
    """Full-covariance E-step statistics of X (N, D) into acc (n_groups, K, P) (each
    group's sums, its lanes added in order) and loglik (n_groups,). Padding lanes of the
    last chunk and points of weight 0 have responsibilities 0. ``transposes``: whether
    :func:`_load_chunks` takes this D."""
    N, D = X.shape
    K = Up.shape[0]
    n_groups, _, P = acc.shape
    dt = Up.dtype
    L = 64 // Up.itemsize
    C = _CHUNKS
    bs = C * L
    n_blocks = (N + bs - 1) // bs
    line = 64 // X.itemsize
    for g in prange(n_groups):
        prefer_wide_vectors()
        xb = empty_aligned((C, D, L), dt)
        LP = empty_aligned((K, L), dt)
        R = empty_aligned((K, C, L), dt)
        MZ = empty_aligned((2, C, L), dt)
        DD = empty_aligned((C, D, L), dt)
        ag = zeros_aligned((K, P, L), np.float64)
        part = zeros_aligned((K, P, L), dt)  # the last blocks' sums, in the compute dtype
        mq = np.empty(L)  # a block's sum of shifts and product of sums, lane by lane
        pq = np.empty(L)
        ll = 0.0
        b0, b1 = g * n_blocks // n_groups, (g + 1) * n_blocks // n_groups
        fold = _FOLD if L == 16 else b1 - b0  # (float64 sums: at the end only)
        for blk in range(b0, b1):
            start = blk * bs
            nb = min(N, start + bs) - start
            if blk + 1 < b1:  # the next block's points, into L2 while this one computes
                for e in range((start + bs) * D, min(N, start + 2 * bs) * D, line):
                    prefetch(X, e)
            nc = (nb + L - 1) // L
            full = nb // L
            if transposes:
                _load_chunks(X, start, full, xb, dlit)
            else:
                for c in range(full):
                    for i in range(D):
                        for q in range(L):
                            xb[c, i, q] = X[start + c * L + q, i]
            if full < nc:
                for i in range(D):
                    for q in range(L):
                        p = full * L + q
                        xb[full, i, q] = X[start + p, i] if p < nb else 0.0
            if weighted:
                for p in range(nb):
                    if not sw[start + p] > 0.0:
                        for i in range(D):
                            xb[p // L, i, p % L] = 0.0
            for c in range(nc):
                _logp_chunk(xb, c, Up, lk, LP, MZ, dlit)
                _softmax_chunk(LP, R, c, MZ)
            for p in range(nb, nc * L):  # padding lanes: no share in any sum
                for k in range(K):
                    R[k, p // L, p % L] = 0.0
            if weighted:
                for p in range(nb):
                    w = sw[start + p]
                    c, q = p // L, p % L
                    if w > 0.0:
                        ll += w * (np.float64(MZ[0, c, q]) + np.log(np.float64(MZ[1, c, q])))
                        for k in range(K):
                            R[k, c, q] *= w
                    else:
                        for k in range(K):
                            R[k, c, q] = 0.0
            else:
                # sum of m + log z, one logarithm per lane and block: 1 <= z <= K wherever
                # m is finite, so a product of 16 of them holds in float64 (inf, 0 stay so)
                for q in range(L):
                    mq[q] = 0.0
                    pq[q] = 1.0
                for c in range(full):
                    for q in range(L):
                        mq[q] += np.float64(MZ[0, c, q])
                        pq[q] *= np.float64(MZ[1, c, q])
                for q in range(nb - full * L):  # the last chunk's points, if it is partial
                    mq[q] += np.float64(MZ[0, full, q])
                    pq[q] *= np.float64(MZ[1, full, q])
                for q in range(L):
                    ll += mq[q] + np.log(pq[q])
            for k in range(K):
                _centre_chunks(xb, R, k, shift, nc, DD, part[k], dlit)
                _scatter_tiles(DD, R, k, nc, part[k], dlit)
            if (blk - b0 + 1) % fold == 0 or blk + 1 == b1:
                for k in range(K):
                    for p in range(P):
                        for q in range(L):
                            ag[k, p, q] += np.float64(part[k, p, q])
                            part[k, p, q] = 0.0
        for k in range(K):
            for p in range(P):
                t = 0.0
                for q in range(L):
                    t += ag[k, p, q]
                acc[g, k, p] = t
        loglik[g] = ll


def pack_factors(U, nmuU):
    """(K, D + D (D + 1) / 2): each component's -mu_k U_k, then its U_k's upper triangle
    column by column (U[0, j], ..., U[j, j] for j = 0 ... D - 1), the order
    :func:`_logp_chunk` reads them in: one contiguous run per component, on about 60% of the
    cache lines of the (D, D) factor (19 of 32 at D = 16 in float64)."""
    cols_j, rows_i = np.tril_indices(U.shape[1])  # the lower triangle row by row, transposed
    return np.ascontiguousarray(np.concatenate([nmuU, U[:, rows_i, cols_j]], axis=1))


def full_stats(X, sw, weighted, U, nmuU, lk, shift, n_groups):
    """(nk (K,), sum r x (K, D), sum r (x - shift)(x - shift)^T's upper triangle (K, D, D),
    log-likelihood) in float64, from X (N, D) in the compute dtype of U (K, D, D), nmuU
    (K, D) = -mu_k U_k, lk (K,) = log w_k + log det U_k - D log(2 pi) / 2 and shift (K, D)."""
    N, D = X.shape
    K = U.shape[0]
    acc = np.empty((n_groups, K, n_sums(D)))
    loglik = np.empty(n_groups)
    transposes = _transposes(D, lanes_of(U.dtype))
    Up = pack_factors(U, nmuU)
    _full_lanes(X, sw, weighted, Up, lk, shift, acc, loglik, (0,) * D, transposes)
    tot = acc.sum(axis=0)  # (a fixed order)
    tri = D * (D + 1) // 2
    iu = np.triu_indices(D)
    sxx = np.zeros((K, D, D))
    sxx[:, iu[0], iu[1]] = tot[:, :tri]
    nk = tot[:, tri + D]
    sx = tot[:, tri : tri + D] + np.asarray(shift, dtype=np.float64) * nk[:, None]
    return nk, sx, sxx, float(loglik.sum())
