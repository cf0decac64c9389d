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
from numba.extending import intrinsic

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
    vectorises; ``out`` may be ``x``. m, z (>= n,) float64 buffers.

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
        z[b] = exp_nonpositive(-m[b]) if leaky else 0.0
    for k in range(rows):
        for b in range(n):
            e = exp_nonpositive(x[k, b] - m[b])
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
