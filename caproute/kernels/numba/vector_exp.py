"""A vectorisable ``exp`` for the max-shifted exponents of softmaxes and responsibilities.

LLVM cannot vectorise a loop that calls libm's ``exp`` (Numba has no vector math library
unless Intel's SVML is installed), so a softmax over a block of points or children costs one
scalar call per entry. :func:`exp_nonpositive` is plain arithmetic that LLVM vectorises:

- Cody-Waite reduction ``x = k ln2 + r`` with ``|r| <= ln2 / 2`` (ln2 split in a high part with
  trailing zero bits and a low part, so ``k * LN2_HI`` is exact);
- ``exp(r)`` by its Taylor series to degree 13 (truncation below 2e-17 relative on that range);
- ``2**k`` built from its bits: ``(k + 1023) << 52`` read as a float64.

Measured against NumPy's ``exp`` on 2e5 draws in [-708, 0]: at most 1 ulp apart
(``tests/kernels/test_exp.py`` allows 2).
Below -708 the result is 0 (libm would return a subnormal there: nothing next to the max term's
1 of a shifted softmax); NaN stays NaN and -inf gives 0.

:func:`softmax_columns` is the softmax the kernels build on it: over the rows of a block,
every loop over its columns (the GMM's points, dynamic routing's children).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from ._jit import njit_cached

_INV_LN2 = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_UNDERFLOW = -708.0


@intrinsic
def _bits_to_float64(typingctx, bits):
    """Reinterpret an int64's bits as a float64 (what ``view`` does for arrays)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


@intrinsic
def _bits_to_float32(typingctx, bits):
    """Reinterpret an int32's bits as a float32."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


_INV_LN2_F = np.float32(_INV_LN2)
# ln2 = _LN2_HI_F + _LN2_LO_F with _LN2_HI_F's low 12 mantissa bits zero, so k * _LN2_HI_F is
# exact for |k| < 2**12
_LN2_HI_F = np.float32(0.693145751953125)
_LN2_LO_F = np.float32(1.428606765330187e-06)
_UNDERFLOW_F = np.float32(-87.0)


# not inlined at Numba level, for the same reason as exp_nonpositive below
@njit_cached()
def exp_nonpositive_f32(x):
    """``exp(x)`` for float32 ``x <= 0`` in float32 arithmetic (8 or 16 to a vector): the
    same reduction as :func:`exp_nonpositive`, ``exp(r)`` by its Taylor series to degree 7
    (truncation below 1e-8 relative on ``|r| <= ln2 / 2``, under float32's half ulp), ``2**k``
    built from its bits. Within 2 ulp of NumPy's float32 ``exp``; 0 below -87 (NumPy would
    give a subnormal there), NaN stays NaN, -inf gives 0."""
    k = np.floor(x * _INV_LN2_F + np.float32(0.5))
    r = (x - k * _LN2_HI_F) - k * _LN2_LO_F
    p = np.float32(1.0 / 5040.0)
    p = p * r + np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    # k clamped so the exponent field stays valid (those x are sent to 0 below anyway)
    scale = _bits_to_float32((np.int32(max(k, np.float32(-126.0))) + np.int32(127)) << 23)
    return np.float32(0.0) if x < _UNDERFLOW_F else p * scale


def exp_nonpositive_as(x):
    """``exp(x)`` for ``x <= 0`` in the precision of ``x`` (compiled: float32 arithmetic for
    float32, :func:`exp_nonpositive` otherwise), for the float32 kernels' softmaxes."""
    return np.exp(x)


@overload(exp_nonpositive_as, inline="always")
def _exp_nonpositive_as(x):
    if x == types.float32:
        return lambda x: exp_nonpositive_f32(x)
    return lambda x: exp_nonpositive(x)


# not inlined at Numba level: its instructions keep their own strict flags (a caller's
# reassociation would undo the two-part ln2 reduction); LLVM still inlines and vectorises it
@njit_cached()
def exp_nonpositive(x):
    """``exp(x)`` for ``x <= 0`` (float64 arithmetic; the caller casts)."""
    x = np.float64(x)
    k = np.floor(x * _INV_LN2 + 0.5)
    r = (x - k * _LN2_HI) - k * _LN2_LO
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    # k is clamped so the exponent field stays valid; those x are sent to 0 below anyway
    scale = _bits_to_float64((np.int64(max(k, -1022.0)) + 1023) << 52)
    return 0.0 if x < _UNDERFLOW else p * scale


@njit_cached(inline="always")
def softmax_columns(x, out, n, leaky, want_lognorm, m, z):
    """out[:, :n] = softmax over axis 0 of x[:, :n], every loop over the columns so that it
    vectorises; ``out`` may be ``x``. m, z (>= n,) buffers: float32 ones (with float32 x) make
    the exponentials float32 arithmetic (:func:`exp_nonpositive_f32`), float64 ones float64.

    Each column is shifted by its max (by 0 where the max is not finite, so -inf columns give
    NaN as the plain formula does; by at least 0 when ``leaky``: an extra zero logit takes its
    share and is dropped). Returns the sum of the columns' log-normalisers when
    ``want_lognorm`` (a responsibility pass's log-likelihood), else 0.
    """
    rows = x.shape[0]
    for b in range(n):
        m[b] = x[0, b]
    for k in range(1, rows):
        for b in range(n):
            v = x[k, b]
            m[b] = v if v > m[b] else m[b]
    for b in range(n):
        if not np.isfinite(m[b]):
            m[b] = 0.0
        if leaky and m[b] < 0.0:
            m[b] = 0.0
        z[b] = exp_nonpositive_as(-m[b]) if leaky else 0.0
    for k in range(rows):
        for b in range(n):
            e = exp_nonpositive_as(x[k, b] - m[b])
            out[k, b] = e
            z[b] += e
    total = 0.0
    for b in range(n):
        if want_lognorm:
            total += m[b] + np.log(z[b])
        z[b] = 1.0 / z[b]
    for k in range(rows):
        for b in range(n):
            out[k, b] *= z[b]
    return total


# -- the same exp on LLVM vectors, for kernels written as LLVM IR -----------------------------
_IR_EXP = {
    32: (_INV_LN2_F, _LN2_HI_F, _LN2_LO_F, (5040.0, 720.0, 120.0, 24.0, 6.0, 2.0, 1.0, 1.0)),
    64: (
        _INV_LN2,
        _LN2_HI,
        _LN2_LO,
        (6227020800.0, 479001600.0, 39916800.0, 3628800.0, 362880.0, 40320.0, 5040.0, 720.0)
        + (120.0, 24.0, 6.0, 2.0, 1.0, 1.0),
    ),
}
# (k clamp, exponent bias, mantissa bits, underflow bound) per width
_IR_EXP_BITS = {32: (-126.0, 127, 23, float(_UNDERFLOW_F)), 64: (-1022.0, 1023, 52, _UNDERFLOW)}


def exp_nonpositive_ir(builder, x, fused=False):
    """Emit ``exp(x)`` for an LLVM vector ``x`` of float or double (lanes ``x <= 0``): the
    operations of :func:`exp_nonpositive_f32` / :func:`exp_nonpositive` in the same order,
    each rounded to the element type. Within 1 ulp of those functions (equal in about 91% of
    float32 lanes; tests/kernels/test_dense_lanes.py), 0 below the same bound, NaN for NaN.

    ``fused``: the range reduction and the polynomial's steps as fused multiply-adds (one
    rounding each instead of two): half the operations and half the latency of the chain,
    for kernels where the exp dominates; still within 1 ulp of the scalar functions, with
    the same special values (tests/kernels/test_dense_lanes.py)."""
    vty = x.type
    fty = vty.element
    lanes = vty.count
    bits = 32 if isinstance(fty, ir.FloatType) else 64
    inv_ln2, ln2_hi, ln2_lo, denominators = _IR_EXP[bits]
    kmin, bias, shift, under = _IR_EXP_BITS[bits]

    def splat(value, ty=fty, vt=vty):
        return ir.Constant(vt, [ir.Constant(ty, value)] * lanes)

    floor = builder.module.globals.get(f"llvm.floor.v{lanes}f{bits}") or ir.Function(
        builder.module, ir.FunctionType(vty, [vty]), f"llvm.floor.v{lanes}f{bits}"
    )
    if fused:
        fma = builder.module.globals.get(f"llvm.fma.v{lanes}f{bits}") or ir.Function(
            builder.module, ir.FunctionType(vty, [vty] * 3), f"llvm.fma.v{lanes}f{bits}"
        )

        def mul_add(a, b, c):
            return builder.call(fma, [a, b, c])
    else:

        def mul_add(a, b, c):
            return builder.fadd(builder.fmul(a, b), c)

    k = builder.call(floor, [mul_add(x, splat(float(inv_ln2)), splat(0.5))])
    if fused:
        r = mul_add(k, splat(-float(ln2_lo)), mul_add(k, splat(-float(ln2_hi)), x))
    else:
        r = builder.fsub(
            builder.fsub(x, builder.fmul(k, splat(float(ln2_hi)))),
            builder.fmul(k, splat(float(ln2_lo))),
        )
    coeffs = [1.0 / d for d in denominators]
    if bits == 32:  # the float32 function's constants are float32 roundings of these
        coeffs = [float(np.float32(c)) for c in coeffs]
    p = splat(coeffs[0])
    for c in coeffs[1:]:
        p = mul_add(p, r, splat(c))
    kc = builder.select(builder.fcmp_ordered(">", k, splat(kmin)), k, splat(kmin))
    ity = ir.IntType(bits)
    ivty = ir.VectorType(ity, lanes)
    biased = builder.add(builder.fptosi(kc, ivty), splat(bias, ity, ivty))
    e = builder.shl(biased, splat(shift, ity, ivty))
    result = builder.fmul(p, builder.bitcast(e, vty))
    return builder.select(builder.fcmp_ordered("<", x, splat(under)), splat(0.0), result)
