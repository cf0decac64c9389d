"""Numba kernel for EM routing: one sample per parallel iteration, its votes read from cache
across all iterations, no (batch, n_in, n_out, pose_dim) temporary.

Each sample's votes are transposed once into a per-call buffer (n_out, pose_dim, n_in), so
every loop runs over the children and vectorises (float32 in hand-written 8 x 8 shuffle
tiles, with the next sample's votes prefetched into L2 during this one's variance passes).
Each iteration takes one parent at a time: its votes are read from L2 once, then twice more
from L1, for the means, the centred variances (the same two-pass formula as the reference,
which keeps float32 exact where the one-pass E[V^2] - mu^2 would cancel) and the E-step (for
4x4 poses with each child's sum over the pose in a register); then the softmax over parents.
The loops are compiled for 512-bit vectors where the CPU has them (``vector_width.py``).
Float32 votes take float32 exponentials. Uniform starting assignments are set in
the per-thread buffer, never read from a (batch, n_in, n_out) array. The callbacks
``on_nonfinite`` and ``on_overflow`` are those of ``dynamic_routing.py``: the first means'
sums prove the votes finite, and each sample's outputs are checked while in cache.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ._jit import njit_cached
from .aligned import empty_aligned, zeros_aligned
from .dynamic_routing import all_finite, transpose_into
from .ir_vectors import prefetch as _prefetch
from .vector_exp import exp_nonpositive_as
from .vector_width import HAS_512_BIT_VECTORS, prefer_wide_vectors

_FAST = {"reassoc", "contract"}  # vectorisable sums; nothing that assumes finite values
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _tile_io(context, builder, signature, args, n):
    """The loads and stores of an n x n float32 tile intrinsic (x, xo, xs, y, yo, ys): the n
    rows x[xo + b xs : + n] as <n x float> vectors, and store_row(a, value) writing
    y[yo + a ys : + n]."""
    xa = context.make_array(signature.args[0])(context, builder, args[0])
    ya = context.make_array(signature.args[3])(context, builder, args[3])
    vp = ir.VectorType(ir.FloatType(), n).as_pointer()
    i64 = ir.IntType(64)
    xo, xs = builder.sext(args[1], i64), builder.sext(args[2], i64)
    yo, ys = builder.sext(args[4], i64), builder.sext(args[5], i64)
    rows = []
    for b in range(n):
        off = builder.add(xo, builder.mul(xs, i64(b)))
        rows.append(builder.load(builder.bitcast(builder.gep(xa.data, [off]), vp), align=4))

    def store_row(a, value):
        off = builder.add(yo, builder.mul(ys, i64(a)))
        builder.store(value, builder.bitcast(builder.gep(ya.data, [off]), vp), align=4)

    return rows, store_row


@intrinsic
def _tile8(typingctx, x, xo, xs, y, yo, ys):
    """The 8 x 8 float32 tile x[xo + b xs + a] -> y[yo + a ys + b] (a, b < 8) of contiguous 1-D
    arrays: eight row loads, the unpack/shuffle/lane-permute network, eight row stores."""
    sig = types.void(x, xo, xs, y, yo, ys)

    def codegen(context, builder, signature, args):
        rows, store_row = _tile_io(context, builder, signature, args, 8)

        def shuf(u, v, idx):
            return builder.shuffle_vector(u, v, ir.Constant(ir.VectorType(ir.IntType(32), 8), idx))

        lo, hi = [0, 8, 1, 9, 4, 12, 5, 13], [2, 10, 3, 11, 6, 14, 7, 15]
        t = []
        for k in range(0, 8, 2):
            t += [shuf(rows[k], rows[k + 1], lo), shuf(rows[k], rows[k + 1], hi)]
        s0, s1 = [0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15]
        u = [
            shuf(t[0], t[2], s0),
            shuf(t[0], t[2], s1),
            shuf(t[1], t[3], s0),
            shuf(t[1], t[3], s1),
            shuf(t[4], t[6], s0),
            shuf(t[4], t[6], s1),
            shuf(t[5], t[7], s0),
            shuf(t[5], t[7], s1),
        ]
        p0, p1 = [0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]
        out = [shuf(u[a], u[a + 4], p0) for a in range(4)] + [
            shuf(u[a], u[a + 4], p1) for a in range(4)
        ]
        for a in range(8):
            store_row(a, out[a])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _tile16(typingctx, x, xo, xs, y, yo, ys):
    """The 16 x 16 float32 tile x[xo + b xs + a] -> y[yo + a ys + b] (a, b < 16) of contiguous
    1-D arrays, for 512-bit registers: sixteen row loads, four stages of sixteen two-source
    shuffles (32-bit and 64-bit interleaves within 128-bit lanes, then two 128-bit lane
    selections), sixteen row stores; 0.25 shuffles per element against the 8 x 8 tile's
    0.375."""
    sig = types.void(x, xo, xs, y, yo, ys)

    def codegen(context, builder, signature, args):
        r, store_row = _tile_io(context, builder, signature, args, 16)

        def shuf(u, v, idx):
            mask = ir.Constant(ir.VectorType(ir.IntType(32), 16), idx)
            return builder.shuffle_vector(u, v, mask)

        lo = [0, 16, 1, 17, 4, 20, 5, 21, 8, 24, 9, 25, 12, 28, 13, 29]
        hi = [i + 2 for i in lo]
        pdlo = [0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29]
        pdhi = [i + 2 for i in pdlo]
        even = [0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27]  # lanes a0 a2 b0 b2
        odd = [i + 4 for i in even]  # lanes a1 a3 b1 b3
        t = [None] * 16
        for k in range(8):
            t[2 * k] = shuf(r[2 * k], r[2 * k + 1], lo)
            t[2 * k + 1] = shuf(r[2 * k], r[2 * k + 1], hi)
        u = [None] * 16
        for k in range(4):
            u[4 * k] = shuf(t[4 * k], t[4 * k + 2], pdlo)
            u[4 * k + 1] = shuf(t[4 * k], t[4 * k + 2], pdhi)
            u[4 * k + 2] = shuf(t[4 * k + 1], t[4 * k + 3], pdlo)
            u[4 * k + 3] = shuf(t[4 * k + 1], t[4 * k + 3], pdhi)
        v = [None] * 16
        for base in (0, 8):
            for k in range(4):
                v[base + k] = shuf(u[base + k], u[base + k + 4], even)
                v[base + k + 4] = shuf(u[base + k], u[base + k + 4], odd)
        for k in range(16):  # output row a = k holds column k of the tile
            store_row(k, shuf(v[k % 8], v[k % 8 + 8], even if k < 8 else odd))
        return context.get_dummy_value()

    return sig, codegen


# 16 x 16 tiles where the registers hold 16 float32 (ConvCaps, paired runs: 1.03x the whole
# call; one position in cache 129 against about 150 us)
_TILE = 16 if HAS_512_BIT_VECTORS else 8


@njit_cached(inline="always")
def _transpose_f32(x, y):
    """y[:, :rows] = x.T for float32 2-D x (rows, cols) and C-contiguous y (cols, >= rows), in
    _TILE x _TILE tiles (:func:`_tile16` or :func:`_tile8`); y's other columns are left."""
    rows, cols = x.shape
    ys = y.shape[1]
    r_full = rows - rows % _TILE
    c_full = cols - cols % _TILE
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    for r0 in range(0, r_full, _TILE):
        for c0 in range(0, c_full, _TILE):
            if _TILE == 16:
                _tile16(xf, r0 * cols + c0, cols, yf, c0 * ys + r0, ys)
            else:
                _tile8(xf, r0 * cols + c0, cols, yf, c0 * ys + r0, ys)
        for c in range(c_full, cols):
            for b in range(_TILE):
                y[c, r0 + b] = x[r0 + b, c]
    for r in range(r_full, rows):
        for c in range(cols):
            y[c, r] = x[r, c]


def _transpose_rows(x, y):
    """y = x.T (compiled: by :func:`_transpose_f32` for float32, else ``transpose_into``)."""
    y[:, :] = x.T


@overload(_transpose_rows, inline="always")
def _transpose_rows_impl(x, y):
    if x.dtype == types.float32:

        def impl(x, y):
            _transpose_f32(x, y)

    else:

        def impl(x, y):
            transpose_into(x, y)

    return impl


# the lane that ends up holding pose element h after the reduction tree of _pose_sums16 is
# the bit reversal of h, so the accumulators enter the tree in bit-reversed order
_BITREV16 = (0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15)


@intrinsic
def _pose_sums16(typingctx, Vj, w, mu, out, centred):
    """For float32 Vj (16, n) (n a multiple of 16) and w (>= n,): out[h] = sum_i w[i] Vj[h, i],
    or with ``centred`` sum_i w[i] (Vj[h, i] - mu[h])^2. Sixteen vector sums over the children
    at once (one per pose element, lanes over children), then one reduction tree (four levels
    of two-source shuffles) that leaves the sixteen totals in one vector: where sixteen
    separate loops each ended in a horizontal sum."""
    sig = types.void(Vj, w, mu, out, centred)

    def codegen(context, builder, signature, args):
        va, wa, ma, oa = (
            context.make_array(signature.args[n])(context, builder, args[n]) for n in range(4)
        )
        centred_ = args[4]
        fty = ir.FloatType()
        vty = ir.VectorType(fty, 16)
        vp = vty.as_pointer()
        i64 = ir.IntType(64)
        n = builder.extract_value(va.shape, 1)
        zero = ir.Constant(vty, [ir.Constant(fty, 0.0)] * 16)
        undef = ir.Constant(vty, ir.Undefined)
        splat0 = ir.Constant(ir.VectorType(ir.IntType(32), 16), [0] * 16)
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vty, [vty] * 3), "llvm.fma.v16f32"
        )
        accs = [cgutils.alloca_once_value(builder, zero) for _ in range(16)]
        mus = []
        for h in range(16):
            m = builder.load(builder.gep(ma.data, [i64(h)]))
            m = builder.insert_element(undef, m, ir.Constant(ir.IntType(32), 0))
            mus.append(builder.shuffle_vector(m, undef, splat0))
        with cgutils.for_range(builder, builder.udiv(n, i64(16))) as loop:
            i0 = builder.mul(loop.index, i64(16))
            wv = builder.load(builder.bitcast(builder.gep(wa.data, [i0]), vp), align=4)
            for h in range(16):
                off = builder.add(builder.mul(i64(h), n), i0)
                v = builder.load(builder.bitcast(builder.gep(va.data, [off]), vp), align=4)
                acc = builder.load(accs[h])
                with builder.if_else(centred_) as (then, otherwise):
                    with then:
                        d = builder.fsub(v, mus[h])
                        c_acc = builder.call(fma, [builder.fmul(wv, d), d, acc])
                        then_block = builder.block
                    with otherwise:
                        p_acc = builder.call(fma, [wv, v, acc])
                        other_block = builder.block
                phi = builder.phi(vty)
                phi.add_incoming(c_acc, then_block)
                phi.add_incoming(p_acc, other_block)
                builder.store(phi, accs[h])

        def shuf(a, b, idx):
            return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32), 16), idx))

        level = [builder.load(accs[h]) for h in _BITREV16]
        masks = (
            (list(range(0, 8)) + list(range(16, 24)), list(range(8, 16)) + list(range(24, 32))),
            (
                [0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27],
                [4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31],
            ),
            (
                [0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29],
                [2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31],
            ),
            (
                [0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30],
                [1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31],
            ),
        )
        for lo, hi in masks:
            level = [
                builder.fadd(shuf(level[k], level[k + 1], lo), shuf(level[k], level[k + 1], hi))
                for k in range(0, len(level), 2)
            ]
        builder.store(level[0], builder.bitcast(oa.data, vp), align=4)
        return context.get_dummy_value()

    return sig, codegen


def _pose_sums(Vj, w, mu, out, centred, hlit):
    """out[h] = sum_i w[i] Vj[h, i], or sum_i w[i] (Vj[h, i] - mu[h])^2 when ``centred``
    (compiled: :func:`_pose_sums16` for float32 16-element poses, loops otherwise)."""


@overload(_pose_sums)  # (not inlined in Numba IR: inlining its loops there made Numba warn)
def _pose_sums_impl(Vj, w, mu, out, centred, hlit):
    if Vj.dtype == types.float32 and len(hlit) == 16:

        def impl(Vj, w, mu, out, centred, hlit):
            _pose_sums16(Vj, w, mu, out, centred)

    else:

        def impl(Vj, w, mu, out, centred, hlit):
            dim, n = Vj.shape
            for h in range(dim):
                c = mu[h] if centred else w[0] * 0.0  # (mu may be the unwritten output)
                acc = w[0] * 0.0
                for i in range(n):  # (a select, not a branch: LLVM unswitches it)
                    dv = Vj[h, i] - c
                    acc += w[i] * (dv * dv if centred else dv)
                out[h] = acc

    return impl


@njit_cached(inline="always")
def _log_sigmoid(x):
    if x >= 0.0:
        return -np.log1p(np.exp(-x))
    return x - np.log1p(np.exp(x))


@njit_cached(inline="always", fastmath=_FAST)
def _child_weights(Rt, a, aw, renorm, eps):
    """aw: the children's weights in the M-step, a, or a renormalised with the assignments
    Rt (n_out, n_in): aw_i = a_i / (sum_j R_ij a_i + eps)."""
    n_out, n_in = Rt.shape
    if renorm:
        for i in range(n_in):
            aw[i] = 0.0
        for j in range(n_out):
            for i in range(n_in):
                aw[i] += Rt[j, i] * a[i]
        for i in range(n_in):
            aw[i] = a[i] / (aw[i] + eps)
    else:
        for i in range(n_in):
            aw[i] = a[i]


@njit_cached(inline="always", fastmath=_FAST)
def _parent_mean_sums(Vj, Rj, aw, raj, muj, hlit):
    """One parent's M-step sums: raj = Rj aw, muj[h] = sum_i raj[i] Vj[h, i] (not yet
    divided); returns sum_i raj[i]. Vj (D, n_pad), raj (n_pad,): the columns past the
    children are zero in both."""
    n_in = Rj.shape[0]
    acc = Rj[0] * aw[0]
    raj[0] = acc
    for i in range(1, n_in):
        r = Rj[i] * aw[i]
        raj[i] = r
        acc += r
    _pose_sums(Vj, raj, muj, muj, False, hlit)
    return acc


@njit_cached(fastmath=_FAST)
def _em_one(V, a, beta_u, beta_a, lambdas, min_var, eps, R, mu, act, opts, bufs, hlit, Vnext):
    """EM-route one sample in place. V (n_in, n_out, D); a (n_in,); R (n_in, n_out) holds the
    starting assignments and ends with those of the last M-step; mu (n_out, D), act (n_out,).
    ``opts`` = (momentum or -1, E-step log-variance weight, ratio E-step?, mass + eps?,
    cost mode 0/1/2, renormalise R a?, start from R = 1 / n_out instead of R's values?) -- the
    variants of ``caproute.em_routing``.

    The votes are first transposed into a per-call buffer Vt (n_out, D, n_pad) (590 KB for a
    ConvCaps position, in L2 for all iterations; the columns past n_in are zero), the
    assignments kept as Rt (n_out, n_in): every loop then runs over the children, contiguous,
    and vectorises -- the E-step's Mahalanobis sums and its softmax over parents (column-wise,
    with the vectorisable exp) with no horizontal reductions, the M-step's pose sums with one
    reduction tree per parent (:func:`_pose_sums`). Each iteration takes one parent at a
    time through its means, centred variances, cost and E-step, so that the parent's votes
    Vt[j] (18 KB for 4x4 poses and 288 children) are read from L2 once per iteration and then
    from L1; only the softmax over parents needs them all. ``bufs`` = (Vt, Rt, ra, lp, aw, mx,
    z), the calling thread's buffers (:func:`_em_buffers`). ``hlit``: a tuple whose length is
    the pose dimension where the E-step's sum over it is unrolled (16: each child's sum stays
    in a register, measured 1.45x faster than a pass per pose element), else ().

    Returns whether the first means' sums were all finite: they are exactly when every vote is
    (the weights R a are finite, and a zero weight times inf or NaN gives NaN), short of an
    overflow of finite votes, which the caller's exact check tells apart."""
    prefer_wide_vectors()
    momentum, lv_weight, ratio, add_floor, cost_mode, renorm, uniform_start = opts
    has_momentum = momentum >= 0.0
    n_in, n_out, dim = V.shape
    n_iter = lambdas.shape[0]
    dt = V.dtype
    Vt, Rt, ra, lp, aw, mx, z = bufs
    _transpose_rows(V.reshape((n_in, n_out * dim)), Vt.reshape((n_out * dim, Vt.shape[2])))
    if uniform_start:  # R is only written (no (batch, n_in, n_out) array of 1 / n_out to read)
        Rt[:, :] = 1.0 / n_out
    else:
        transpose_into(R, Rt)
    sum_r = np.zeros(n_out, dtype=dt)
    var = np.empty((n_out, dim), dtype=dt)
    logit = np.empty(n_out, dtype=dt)
    mu_prev = np.zeros((n_out, dim), dtype=dt)
    finite = True
    # the next sample's votes are prefetched a few lines per (parent, pose) row of the
    # variance passes, spread over all iterations, so that its transpose reads them from L2
    # while this sample's iterations (compute-bound) hide the memory's latency
    nxt = Vnext.reshape(-1)
    n_lines = (nxt.size * nxt.itemsize + 63) // 64
    per_row = (n_lines + n_iter * n_out * dim - 1) // (n_iter * n_out * dim)
    step = 64 // nxt.itemsize
    line = 0
    for it in range(n_iter):
        last = it + 1 == n_iter
        _child_weights(Rt, a, aw, renorm, eps)
        # one parent at a time: its votes Vt[j] (D, n_in) stay in L1 for the means, the
        # centred variances and the E-step
        for j in range(n_out):
            Vj = Vt[j]
            muj = mu[j]
            raj = ra[j]
            vj = var[j]
            srj = _parent_mean_sums(Vj, Rt[j], aw, raj, muj, hlit)
            sum_r[j] = srj
            if it == 0 and finite:
                finite = all_finite(muj)
            den = srj + eps if add_floor else max(srj, eps)
            for h in range(dim):
                muj[h] /= den
                if has_momentum:
                    muj[h] = momentum * muj[h] + (1.0 - momentum) * mu_prev[j, h]
                    mu_prev[j, h] = muj[h]
            for _ in range(dim * per_row):
                if line < n_lines:
                    _prefetch(nxt, line * step)
                    line += 1
            _pose_sums(Vj, raj, muj, vj, True, hlit)
            cost = 0.0
            for h in range(dim):
                vh = max(vj[h] / den + min_var, eps)
                vj[h] = vh
                if cost_mode == 0:
                    cost += beta_u[j, h] + 0.5 * np.log(vh)
                elif cost_mode == 1:
                    cost += beta_u[j, h] + 0.5 * np.log(vh + eps)
                else:
                    cost += beta_u[j, h] + np.log(vh + eps)
            logit[j] = lambdas[it] * (beta_a[j] - cost * srj)
            if last:
                continue
            # E-step for this parent, in log space
            half_log_det = 0.0
            for h in range(dim):
                half_log_det += lv_weight * np.log(vj[h])
                vj[h] = 0.5 / vj[h]  # var now holds 1 / (2 sigma^2)
            cj = _log_sigmoid(logit[j]) - half_log_det - dim * _HALF_LOG_2PI
            lpj = lp[j]
            if len(hlit) > 0:  # pose_dim unrolled: each child's sum over h in a register
                for i in range(n_in):
                    dv = Vj[0, i] - muj[0]
                    acc = dv * dv * vj[0]
                    for h in range(1, len(hlit)):
                        dv = Vj[h, i] - muj[h]
                        acc += dv * dv * vj[h]
                    lpj[i] = cj - acc
            else:
                for i in range(n_in):
                    lpj[i] = 0.0
                for h in range(dim):
                    mjh = muj[h]
                    w = vj[h]
                    for i in range(n_in):
                        dv = Vj[h, i] - mjh
                        lpj[i] += dv * dv * w
                for i in range(n_in):
                    lpj[i] = cj - lpj[i]
        if last:
            break
        # the softmax over parents, column by column
        for i in range(n_in):
            mx[i] = -np.inf
            z[i] = 0.0
        for j in range(n_out):
            for i in range(n_in):
                v = lp[j, i]
                mx[i] = v if v > mx[i] else mx[i]
        for j in range(n_out):
            for i in range(n_in):
                e = exp_nonpositive_as(lp[j, i] - mx[i])
                Rt[j, i] = e
                z[i] += e
        for i in range(n_in):
            z[i] = 1.0 / (z[i] + eps) if ratio else 1.0 / z[i]
        for j in range(n_out):
            for i in range(n_in):
                Rt[j, i] *= z[i]
    if R.shape[0] > 0:  # (an empty R: the caller does not want the assignments)
        transpose_into(Rt, R)
    for j in range(n_out):
        act[j] = np.exp(_log_sigmoid(logit[j]))
    return finite


@njit_cached(inline="always")
def _em_buffers(dt, n_in, n_out, dim):
    """One thread's buffers: Vt, Rt, ra, lp, aw, mx, z (all of the votes' dtype: float32
    votes take float32 exponentials)."""
    n_pad = (n_in + 15) // 16 * 16  # the pose sums run over whole vectors of 16 children
    return (
        zeros_aligned((n_out, dim, n_pad), dt),
        empty_aligned((n_out, n_in), dt),
        zeros_aligned((n_out, n_pad), dt),
        empty_aligned((n_out, n_in), dt),
        empty_aligned((n_in,), dt),
        empty_aligned((n_in,), dt),
        empty_aligned((n_in,), dt),
    )


@njit_cached(parallel=True)
def _em_batch(
    V, a, beta_u, beta_a, lambdas, min_var, eps, R, mu, act, opts, n_chunks, nonfinite, hlit
):
    """Samples in n_chunks contiguous ranges, one per thread, each with buffers allocated once
    (a sample's result does not depend on the chunking)."""
    batch, n_in, n_out, dim = V.shape
    for t in prange(n_chunks):
        bufs = _em_buffers(V.dtype, n_in, n_out, dim)
        end = (t + 1) * batch // n_chunks
        for n in range(t * batch // n_chunks, end):
            ok = _em_one(
                V[n],
                a[n],
                beta_u,
                beta_a,
                lambdas,
                min_var,
                eps,
                R[n],
                mu[n],
                act[n],
                opts,
                bufs,
                hlit,
                V[n + 1] if n + 1 < end else V[n],
            )
            nonfinite[n, 0] = not ok
            nonfinite[n, 1] = not (
                all_finite(R[n]) and all_finite(mu[n]) and all_finite(act[n : n + 1])
            )


# pose dimensions whose E-step sum is unrolled (4x4 poses)
_UNROLLED_POSE_DIMS = (16,)
_COST_MODES = {"half_log_var": 0, "half_log_var_eps": 1, "log_var_eps": 2}


def em_routing(
    votes,
    a_in,
    beta_u,
    beta_a,
    *,
    inverse_temperature,
    min_var,
    eps,
    initial_assignments=None,
    pose_momentum=None,
    e_step_log_var_weight=0.5,
    e_step_norm="softmax",
    mass_floor="max",
    cost_log_var="half_log_var",
    renormalize_assignments=False,
    xp=None,
    on_nonfinite=None,
    on_overflow=None,
    want_assignments=True,
):
    """Numba EM routing with the reference's signature; returns ``(pose, activation, R)``.

    Implements every variant of ``caproute.em_routing`` except ``e_step_norm`` "ratio_sample"
    and "ratio_batch" (the dispatch sends those to the reference). ``on_nonfinite``: called
    (with no arguments) when some sample's first sums were not finite, which they are exactly
    when its votes are (or overflow): the public function passes its deferred finiteness check,
    so the votes need no pass of their own at the edge. ``on_overflow``: called with the
    outputs ``(pose, activation, R)`` when some of them are not finite (checked per sample
    while in cache, so the caller need not scan them again). ``want_assignments=False``: R is
    returned empty, (batch, 0, 0), never written (for ConvCaps a 42 MB array the caller would
    drop), unless initial assignments are given."""
    if e_step_norm not in ("softmax", "ratio_child"):
        raise ValueError(f"the Numba EM kernel has no e_step_norm={e_step_norm!r}.")
    votes = np.ascontiguousarray(votes)
    dtype = votes.dtype
    batch, n_in, n_out, dim = votes.shape
    if initial_assignments is None:  # the kernel starts from 1 / n_out
        R = np.empty((batch, n_in, n_out) if want_assignments else (batch, 0, 0), dtype=dtype)
    else:
        R = np.array(initial_assignments, dtype=dtype, order="C", copy=True)
    mu = np.empty((batch, n_out, dim), dtype=dtype)
    act = np.empty((batch, n_out), dtype=dtype)
    nonfinite = np.zeros((batch, 2), dtype=np.bool_)  # (inputs, outputs) per sample
    opts = (
        -1.0 if pose_momentum is None else float(pose_momentum),
        float(e_step_log_var_weight),
        e_step_norm == "ratio_child",
        mass_floor == "add",
        _COST_MODES[cost_log_var],
        bool(renormalize_assignments),
        initial_assignments is None,
    )
    _em_batch(
        votes,
        np.ascontiguousarray(a_in, dtype=dtype),
        np.ascontiguousarray(beta_u, dtype=dtype),
        np.ascontiguousarray(beta_a, dtype=dtype),
        np.asarray(inverse_temperature, dtype=dtype),
        dtype.type(min_var),
        dtype.type(eps),
        R,
        mu,
        act,
        opts,
        max(1, min(batch, numba.get_num_threads())),
        nonfinite,
        (0,) * dim if dim in _UNROLLED_POSE_DIMS else (),
    )
    if on_nonfinite is not None and nonfinite[:, 0].any():
        on_nonfinite()
    if on_overflow is not None and nonfinite[:, 1].any():
        on_overflow((mu, act, R))
    return mu, act, R
