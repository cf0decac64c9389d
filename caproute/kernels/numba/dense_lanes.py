"""Numba kernel for votes-fused dynamic routing with the images in the vector lanes.

``u_hat[n, i, j] = W[i, j] u[n, i]`` is never stored for the batch: a child's votes for one
vector of images (16 float32 or 8 float64 lanes, a "chunk") are computed in registers from
``u[:, i]`` (laid out ``ut[i, c, k, lane]``) and ``W[i]`` (broadcast one scalar at a time),
used at once and dropped; every routing iteration computes them again. That costs the votes'
multiply-adds once per iteration instead of once, but W then streams from L2 in blocks of 64
children, and each chunk's working set (its votes, parents and sums, 30 KB for DigitCaps)
stays in L1, where the earlier kernel wrote and re-read 737 KB of votes per image.

The logits need no array of their own: with ``b_ij`` starting at zero, after ``t``
iterations ``b_ij = sum_s u_hat_ij . v_j(s) = u_hat_ij . V_j`` with ``V_j`` the sum of the
parents so far (a (n_out, dim) vector per image), so one dot product per vote gives them.

The inner work is LLVM IR written out for fixed sizes (:func:`_route_child`,
:func:`_first_block`): one child's votes for a chunk, their logits, the softmax over parents
(the exp of ``vector_exp.exp_nonpositive_ir``, within 1 ulp of the scalar one) and the
parents' sums; and the first iteration's sums (uniform couplings), their sums held in
registers over a block of children. The children are split into _PARTS fixed ranges, each
with its own partial sums, added in a fixed order: results do not depend on the number of
threads.

Runs where the votes-fused layer is used without initial logits and with sizes whose
unrolled code stays small (:func:`supported`); ``dynamic_routing.dense_routing`` sends
the rest to its per-image kernel.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._jit import njit_cached
from .aligned import empty_aligned, zeros_aligned
from .dynamic_routing import all_finite
from .ir_vectors import as_i64, lanes_of, vector_ops
from .vector_exp import exp_nonpositive_ir
from .vector_width import prefer_wide_vectors

_FAST = {"reassoc", "contract"}
# fixed ranges of children, each with its partial sums (results independent of the threads)
_PARTS = 16
# children per block: their rows of W (64 x 5 KB for DigitCaps) stay in L2 across the chunks
_BLOCK = 64
# images per group (a multiple of both lane counts); larger batches run group after group
_GROUP = 128
# the unrolled code grows with n_out * out_dim * in_dim; beyond these the per-image kernel
_MAX_UNROLLED = 4096
_MAX_REGISTERS = 28  # out_dim sums + in_dim inputs held in registers by the first pass


def supported(u_shape, W_shape, dtype, initial_logits):
    """Whether :func:`dense_routing_lanes` takes this call."""
    if initial_logits is not None or np.dtype(dtype) not in (np.float32, np.float64):
        return False
    n_in, n_out, out_dim, in_dim = W_shape
    return (
        n_out * out_dim * in_dim <= _MAX_UNROLLED
        and out_dim + in_dim <= _MAX_REGISTERS
        and u_shape[0] > 0
        and n_in > 0
    )


@intrinsic
def _route_child(typingctx, ut, W2, Vc, Uh, lg, st, i, c, dlit, klit, jlit, leaky):
    """One routing iteration's work for child i and chunk c of the images:
    - votes Uh[j*D + d] = sum_k W2[i, j*D + d, k] ut[i, c, k] (D = len(dlit), K = len(klit));
    - logits sum_d Uh[j*D + d] Vc[c, j, d] and their softmax over the J = len(jlit) parents
      into lg[j] (max-shifted: by 0 where the max is not finite, by at least 0 with the leaky
      orphan, whose share is dropped);
    - st[c, j*D + d] += lg[j] Uh[j*D + d].
    Layouts: ut (I, C, K, L), W2 (I, J*D, K), Vc (C, J, D, L), Uh (J*D, L), lg (J, L),
    st (C, J*D, L): the vectors one chunk touches are contiguous (strided rows would share a
    few L1 sets)."""
    D, K, J = dlit.count, klit.count, jlit.count
    sig = types.void(ut, W2, Vc, Uh, lg, st, i, c, dlit, klit, jlit, leaky)

    def codegen(context, builder, signature, args):
        L, vty, i64, load, store, broadcast, fma = vector_ops(builder, signature.args[0].dtype)
        uta, wa, va, ua, la, sa = (
            context.make_array(signature.args[n])(context, builder, args[n]) for n in range(6)
        )
        C = builder.extract_value(uta.shape, 1)
        JD = builder.extract_value(wa.shape, 1)
        i_, c_ = as_i64(builder, args[6]), as_i64(builder, args[7])
        leaky_ = args[11]
        ubase = builder.mul(builder.add(builder.mul(i_, C), c_), i64(K * L))
        xs = [load(uta.data, builder.add(ubase, i64(k * L))) for k in range(K)]
        wbase = builder.mul(builder.mul(i_, JD), i64(K))
        vbase = builder.mul(c_, i64(J * D * L))
        zero = ir.Constant(vty, [ir.Constant(vty.element, 0.0)] * L)
        one = ir.Constant(vty, [ir.Constant(vty.element, 1.0)] * L)
        for j in range(J):
            logit = None
            for d in range(D):
                jd = j * D + d
                acc = builder.fmul(broadcast(wa.data, builder.add(wbase, i64(jd * K))), xs[0])
                for k in range(1, K):
                    w = broadcast(wa.data, builder.add(wbase, i64(jd * K + k)))
                    acc = fma(w, xs[k], acc)
                store(acc, ua.data, i64(jd * L))
                vc = load(va.data, builder.add(vbase, i64(jd * L)))
                logit = builder.fmul(acc, vc) if logit is None else fma(acc, vc, logit)
            store(logit, la.data, i64(j * L))
        # (the logits go through L1: kept in registers across the vote loops, LLVM spilled)
        logits = [load(la.data, i64(j * L)) for j in range(J)]
        m = logits[0]
        for j in range(1, J):
            m = builder.select(builder.fcmp_ordered(">", logits[j], m), logits[j], m)
        m = builder.select(builder.fcmp_ordered("==", builder.fsub(m, m), zero), m, zero)
        m = builder.select(leaky_, builder.select(builder.fcmp_ordered(">", m, zero), m, zero), m)
        z = builder.select(leaky_, exp_nonpositive_ir(builder, builder.fsub(zero, m)), zero)
        es = []
        for j in range(J):
            e = exp_nonpositive_ir(builder, builder.fsub(logits[j], m))
            es.append(e)
            z = builder.fadd(z, e)
        zinv = builder.fdiv(one, z)
        for j in range(J):
            cj = builder.fmul(es[j], zinv)
            store(cj, la.data, i64(j * L))
            for d in range(D):
                jd = j * D + d
                off = builder.add(vbase, i64(jd * L))
                store(fma(cj, load(ua.data, i64(jd * L)), load(sa.data, off)), sa.data, off)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _first_block(typingctx, ut, W2, st, i0, i1, j, c, dlit, klit):
    """st[c, j*D + d] += sum over children i0 <= i < i1 and k of W2[i, j*D + d, k] ut[i, c, k]
    (the first iteration's sums, uniform couplings), the D sums held in registers."""
    D, K = dlit.count, klit.count
    sig = types.void(ut, W2, st, i0, i1, j, c, dlit, klit)

    def codegen(context, builder, signature, args):
        L, vty, i64, load, store, broadcast, fma = vector_ops(builder, signature.args[0].dtype)
        uta, wa, sa = (
            context.make_array(signature.args[n])(context, builder, args[n]) for n in range(3)
        )
        C = builder.extract_value(uta.shape, 1)
        JD = builder.extract_value(wa.shape, 1)
        i0_, i1_, j_, c_ = (as_i64(builder, a) for a in args[3:7])
        sbase = builder.mul(builder.add(builder.mul(c_, JD), builder.mul(j_, i64(D))), i64(L))
        sums = [cgutils.alloca_once(builder, vty) for _ in range(D)]  # (promoted to registers)
        for d in range(D):
            builder.store(load(sa.data, builder.add(sbase, i64(d * L))), sums[d])
        with cgutils.for_range(builder, builder.sub(i1_, i0_)) as loop:
            i = builder.add(i0_, loop.index)
            ubase = builder.mul(builder.add(builder.mul(i, C), c_), i64(K * L))
            xs = [load(uta.data, builder.add(ubase, i64(k * L))) for k in range(K)]
            wbase = builder.mul(builder.add(builder.mul(i, JD), builder.mul(j_, i64(D))), i64(K))
            for d in range(D):
                acc = builder.load(sums[d])
                for k in range(K):
                    acc = fma(broadcast(wa.data, builder.add(wbase, i64(d * K + k))), xs[k], acc)
                builder.store(acc, sums[d])
        for d in range(D):
            store(builder.load(sums[d]), sa.data, builder.add(sbase, i64(d * L)))
        return context.get_dummy_value()

    return sig, codegen


@njit_cached(parallel=True)
def _lanes_in(u, n0, G, ut):
    """ut[i, c, k, q] = u[n0 + c L + q, i, k] where c L + q < G, 0 in the padding lanes."""
    n_in, C, K, L = ut.shape
    for p in prange(_PARTS):
        for i in range(p * n_in // _PARTS, (p + 1) * n_in // _PARTS):
            for c in range(C):
                for q in range(L):
                    g = c * L + q
                    if g < G:
                        for k in range(K):
                            ut[i, c, k, q] = u[n0 + g, i, k]
                    else:
                        for k in range(K):
                            ut[i, c, k, q] = 0.0


@njit_cached(parallel=True)
def _first_pass(ut, W2, dlit, klit, s_part):
    """s_part[p] = each part's sums of its children's votes (the first iteration)."""
    _, C, JD, L = s_part.shape
    n_in = ut.shape[0]
    J = JD // len(dlit)
    for p in prange(_PARTS):
        prefer_wide_vectors()
        sp = s_part[p]
        sp[:, :, :] = 0.0
        i1 = (p + 1) * n_in // _PARTS
        for ib in range(p * n_in // _PARTS, i1, _BLOCK):
            ie = min(ib + _BLOCK, i1)
            for c in range(C):
                for j in range(J):
                    _first_block(ut, W2, sp, ib, ie, j, c, dlit, klit)


@njit_cached(parallel=True)
def _later_pass(ut, W2, dlit, klit, jlit, Vc, leaky, s_part, c_out, n0, G, last, bad):
    """One iteration after the first: s_part[p] = each part's sums c_ij u_hat_ij with the
    couplings from the logits u_hat . Vc. On the ``last`` one the couplings go to c_out
    (batch, n_in, n_out) and bad[p] says whether some of them were not finite."""
    _, C, JD, L = s_part.shape
    n_in = ut.shape[0]
    J = len(jlit)
    dt = ut.dtype
    for p in prange(_PARTS):
        prefer_wide_vectors()
        sp = s_part[p]
        sp[:, :, :] = 0.0
        Uh = empty_aligned((JD, L), dt)
        lg = empty_aligned((J, L), dt)
        ok = True
        i1 = (p + 1) * n_in // _PARTS
        for ib in range(p * n_in // _PARTS, i1, _BLOCK):
            ie = min(ib + _BLOCK, i1)
            for c in range(C):
                for i in range(ib, ie):
                    _route_child(ut, W2, Vc, Uh, lg, sp, i, c, dlit, klit, jlit, leaky)
                    if last:
                        for q in range(min(L, G - c * L)):
                            for j in range(J):
                                x = lg[j, q]
                                ok = ok and x - x == 0.0
                                c_out[n0 + c * L + q, i, j] = x
        bad[p] = not ok


@njit_cached(fastmath=_FAST)
def _finish_pass(s_part, D, scale, bias, has_bias, eps, Vc, v, check):
    """s = the parts' sums added in order, times scale, plus the bias; v = squash(s) per image
    and parent; Vc += v. Returns whether every s was finite (with ``check``; else True)."""
    n_parts, C, JD, L = s_part.shape
    J = JD // D
    finite = True
    n2 = empty_aligned((L,), s_part.dtype)
    s = empty_aligned((D, L), s_part.dtype)
    for c in range(C):
        for j in range(J):
            for d in range(D):
                for q in range(L):
                    acc = s_part[0, c, j * D + d, q]
                    for p in range(1, n_parts):
                        acc += s_part[p, c, j * D + d, q]
                    acc *= scale
                    if has_bias:
                        acc += bias[j, d]
                    s[d, q] = acc
            if check:
                finite = finite and all_finite(s)
            for q in range(L):
                n2[q] = 0.0
            for d in range(D):
                for q in range(L):
                    n2[q] += s[d, q] * s[d, q]
            for q in range(L):
                x = n2[q]
                n2[q] = x / ((1.0 + x) * np.sqrt(x + eps))
            for d in range(D):
                for q in range(L):
                    v[c, j, d, q] = s[d, q] * n2[q]
                    Vc[c, j, d, q] += v[c, j, d, q]
    return finite


def dense_routing_lanes(u, W, *, n_iter, bias, leaky, eps):
    """Votes-fused dynamic routing of u (batch, n_in, in_dim) with W (n_in, n_out, out_dim,
    in_dim); returns ``(v, c, nonfinite)``: parents (batch, n_out, out_dim), the last
    couplings (batch, n_in, n_out), and per image whether (its first sums, its outputs) were
    not all finite (the first for the whole group of up to _GROUP images it ran in)."""
    u = np.ascontiguousarray(u)
    dt = u.dtype
    batch, n_in, in_dim = u.shape
    n_out, out_dim = W.shape[1], W.shape[2]
    L = lanes_of(dt)
    W2 = np.ascontiguousarray(W, dtype=dt).reshape(n_in, n_out * out_dim, in_dim)
    has_bias = bias is not None
    bias = np.ascontiguousarray(bias, dtype=dt) if has_bias else np.zeros((1, 1), dtype=dt)
    v_out = np.empty((batch, n_out, out_dim), dtype=dt)
    c_out = np.empty((batch, n_in, n_out), dtype=dt)
    nonfinite = np.zeros((batch, 2), dtype=np.bool_)
    dlit, klit, jlit = (0,) * out_dim, (0,) * in_dim, (0,) * n_out
    eps = dt.type(eps)
    c0 = 1.0 / (n_out + 1.0 if leaky else n_out)
    bad = np.zeros(_PARTS, dtype=np.bool_)
    for n0 in range(0, batch, _GROUP):
        G = min(_GROUP, batch - n0)
        C = -(-G // L)
        ut = empty_aligned((n_in, C, in_dim, L), dt)
        _lanes_in(u, n0, G, ut)
        s_part = empty_aligned((_PARTS, C, n_out * out_dim, L), dt)
        Vc = zeros_aligned((C, n_out, out_dim, L), dt)
        v = empty_aligned((C, n_out, out_dim, L), dt)
        for it in range(n_iter):
            last = it + 1 == n_iter
            if it == 0:
                _first_pass(ut, W2, dlit, klit, s_part)
                if last:
                    c_out[n0 : n0 + G] = c0
            else:
                _later_pass(ut, W2, dlit, klit, jlit, Vc, leaky, s_part, c_out, n0, G, last, bad)
                if last:
                    nonfinite[n0 : n0 + G, 1] = bad.any()
            scale = dt.type(c0 if it == 0 else 1.0)
            ok = _finish_pass(s_part, out_dim, scale, bias, has_bias, eps, Vc, v, it == 0)
            if it == 0:
                nonfinite[n0 : n0 + G, 0] = not ok
        v_out[n0 : n0 + G] = v.transpose(0, 3, 1, 2).reshape(C * L, n_out, out_dim)[:G]
    nonfinite[:, 1] |= ~np.isfinite(v_out).all(axis=(1, 2))
    return v_out, c_out, nonfinite
