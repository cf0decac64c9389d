"""Numba kernels for the Gaussian-mixture E-step fused with its sufficient statistics.

The points are processed in blocks (``_BLOCK`` = 128 float64 points, ``_BLOCK32`` = 512
float32 ones) transposed to (D, B), so every product and sum runs over the points of the
block: contiguous, long enough to vectorise. Groups of blocks
run in parallel, each with its own accumulators (no thread writes another's), summed at the end
in a fixed order, so results do not depend on scheduling. The (n_samples, n_components)
responsibilities are never stored: only a block's (K, B) at a time.

Sample weights: each kernel takes ``sw`` (float64, one weight per point) and a flag
``weighted``; unweighted calls pass ``False`` and a zero-length array, and run exactly the code
they ran before. Weighted, a block's points of weight 0 are set to 0 as they are loaded (they
take no part, and no huge value of theirs can overflow), and right after the softmax each
point's responsibilities and log-normaliser are multiplied by its weight (0 for weight 0,
never 0 times an inf); tied's ``X^T X`` becomes ``X^T W X``.

Precision: the kernels compute in the dtype of the parameters they are given, X's dtype (see
``FLOAT32_COMPUTE``; the points are converted as blocks load). float32 points run float32
products, softmax and exponentials (twice the vector lanes of float64), as scikit-learn's
float32 fit does; what accuracy needs is added in float64: each block's sums (512 points) are
added into per-group float64 accumulators, and so are the log-likelihoods. float64 points run
float64 throughout. Responsibilities below exp(-64) (float32) or exp(-512) (float64) of their
point's largest are 0: they change no sum, and would make its products subnormal (``_CUT32``).
A float32 sum depends on where the blocks are cut, so float32 statistics of X in two parts
(chunks, Dask blocks) differ from those of X at once by about a float32 rounding.

Full covariances with ``gmm_full_lanes.FEATURES`` features (4, 8, 12 or 16) go to
:mod:`gmm_full_lanes` (the points in the vector lanes, 512-bit, no horizontal reductions;
1.3-1.5x faster than :func:`_full`, which takes every other D with one compilation per dtype).

Entry point: :func:`fit_stats`, with the reference's signature (``caproute.mixture._em``).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange, types
from numba.extending import overload

from ..._lib.gmm_stats import Stats
from . import gmm_full_lanes
from ._jit import njit_cached
from .vector_exp import exp_nonpositive_as as _exp  # float32 arithmetic for float32

_FAST = {"reassoc", "contract"}  # vectorisable sums; nothing that assumes finite values
_BLOCK = 128  # float64 points per block
_BLOCK32 = 512  # float32 points per block: each block's sums end in horizontal additions of
# vector lanes, whose cost float32 halves nothing of; four times the points pay for them


def _block(X):
    """Points per block for X's dtype (compiled: a constant)."""
    return _BLOCK32 if X.dtype == np.float32 else _BLOCK


@overload(_block, inline="always")
def _block_impl(X):
    size = _BLOCK32 if X.dtype == types.float32 else _BLOCK

    def impl(X):
        return size

    return impl


#: Responsibilities below exp(cut) times their point's largest are set to 0 (float32 -64,
#: float64 -512). They change none of the sums: e^-64 = 1.6e-28 is below float32's eps**3,
#: e^-512 below float64's eps**14, so each is far below a rounding of its point's largest
#: term, and a component far from every point still gets nk = 0 + 10 eps in the M-step
#: either way. What it saves: products r (x - c)_i (x - c)_j of a tiny r fall below the
#: dtype's smallest normal number, and every subnormal operand costs the core a microcode
#: assist (about 100 cycles): on 1e6 points of 8 separated clusters (the benchmark's data)
#: a float32 E-step took 45 ms instead of 39 (one thread). NaN still propagates (d < cut).
_CUT32 = -64.0
_CUT64 = -512.0


def _cut(a):
    """The exponent below which a responsibility is 0, in the dtype of ``a`` (compiled: a
    constant)."""
    return a.dtype.type(_CUT32 if a.dtype == np.float32 else _CUT64)


@overload(_cut, inline="always")
def _cut_impl(a):
    t = a.dtype
    value = _CUT32 if t == types.float32 else _CUT64

    def impl(a):
        return t(value)

    return impl


_LOG_2PI = math.log(2.0 * math.pi)


def _zero(a):
    """0 in the dtype of the array ``a`` (compiled: a constant of that type)."""
    return a.dtype.type(0)


@overload(_zero, inline="always")
def _zero_impl(a):
    t = a.dtype

    def impl(a):
        return t(0)

    return impl


def _like(a, v):
    """``v`` in the dtype of the array ``a`` (compiled: a cast to that type)."""
    return a.dtype.type(v)


@overload(_like, inline="always")
def _like_impl(a, v):
    t = a.dtype

    def impl(a, v):
        return t(v)

    return impl


@njit_cached(inline="always", fastmath=_FAST)
def _softmax_block(x, n, want_lognorm, m, z, have_max):
    """x[:, :n] = softmax over axis 0 of x[:, :n], in x's dtype (m, z (>= n,) buffers of it);
    each column shifted by its max (by 0 where the max is not finite), terms below exp(cut)
    times the max set to 0 (see ``_CUT32``). Returns the sum of the
    columns' log-normalisers (float64) when ``want_lognorm``, else 0. For float64 the
    arithmetic of ``vector_exp.softmax_columns`` but for the log-normalisers' sum.
    ``have_max``: m[:n] holds the columns' max already (the full kernel finds it as it
    writes x), else it is found here."""
    rows = x.shape[0]
    zero = _zero(x)
    if not have_max:  # else the caller has put each column's max in m already
        for b in range(n):
            m[b] = x[0, b]
        for k in range(1, rows):
            for b in range(n):
                v = x[k, b]
                m[b] = v if v > m[b] else m[b]
    for b in range(n):
        if not np.isfinite(m[b]):
            m[b] = zero
        z[b] = zero
    cut = _cut(x)
    for k in range(rows):
        for b in range(n):
            d = x[k, b] - m[b]
            e = zero if d < cut else _exp(d)  # see _CUT32
            x[k, b] = e
            z[b] += e
    total = 0.0
    if want_lognorm:
        # sum_b (m_b + log z_b), with one logarithm per 8 points: 1 <= z_b <= rows wherever
        # m_b is finite, so a product of 8 of them holds in float64 (inf and 0 stay so)
        for b in range(n):
            total += np.float64(m[b])
        for b0 in range(0, n, 8):
            p = 1.0
            for b in range(b0, min(n, b0 + 8)):
                p *= np.float64(z[b])
            total += np.log(p)
    one = _like(x, 1.0)
    for b in range(n):
        z[b] = one / z[b]
    for k in range(rows):
        for b in range(n):
            x[k, b] *= z[b]
    return total


@njit_cached(inline="always", fastmath=_FAST)
def _load_block(X, start, stop, xb):
    """xb[:, :nb] = X[start:stop].T

    Few features: a row of xb at a time (strided loads, which vectorise as gathers, and
    contiguous stores), twice as fast as a point at a time for D = 8 (float32: 8.6 -> 4.9 ms
    for a pass over 1e6 points on one core). Rows of 16 or more features: a point at a time
    (its contiguous row of X, loaded once), which is then the faster."""
    D = X.shape[1]
    if D <= 8:
        for i in range(D):
            for b in range(stop - start):
                xb[i, b] = X[start + b, i]
    else:
        for b in range(stop - start):
            for i in range(D):
                xb[i, b] = X[start + b, i]


@njit_cached(inline="always", fastmath=_FAST)
def _zero_weightless(sw, start, nb, xb):
    """xb[:, b] = 0 for the block's points of weight 0 (sw[start + b] not > 0)."""
    D = xb.shape[0]
    for b in range(nb):
        if not sw[start + b] > 0.0:
            for i in range(D):
                xb[i, b] = 0.0


@njit_cached(inline="always", fastmath=_FAST)
def _weigh_responsibilities(r, sw, start, nb, m, zinv):
    """r[:, b] *= w_b after ``softmax_columns`` (whose buffers give each point's shift m and
    1 / sum of exponentials zinv); returns sum_b w_b log_norm_b. A point of weight 0 gets
    responsibilities 0 and adds nothing, whatever its log-normaliser."""
    K = r.shape[0]
    total = 0.0
    for b in range(nb):
        w = sw[start + b]
        wl = w * np.float64(m[b] - np.log(zinv[b]))  # log_norm = m + log(sum exp)
        total += wl if w > 0.0 else 0.0
    for k in range(K):
        for b in range(nb):
            w = sw[start + b]
            r[k, b] = r[k, b] * w if w > 0.0 else 0.0
    return total


@njit_cached(inline="always", fastmath=_FAST)
def _responsibilities(logp, nb, sw, start, weighted, m_buf, z_buf, have_max):
    """logp[:, :nb] = the block's responsibilities, times the points' weights when
    ``weighted``; returns the sum of the points' (weighted) log-normalisers."""
    if weighted:
        _softmax_block(logp, nb, False, m_buf, z_buf, have_max)
        return _weigh_responsibilities(logp, sw, start, nb, m_buf, z_buf)
    return _softmax_block(logp, nb, True, m_buf, z_buf, have_max)


@njit_cached(inline="always", fastmath=_FAST)
def _add_nk_sx(r, xb, nb, nk, sx):
    K, D = sx.shape
    zero = _zero(r)  # a block's sums in r's dtype, added into the float64 accumulators
    for k in range(K):
        acc = zero
        for b in range(nb):
            acc += r[k, b]
        nk[k] += acc
        for i in range(D):
            acc = zero
            for b in range(nb):
                acc += r[k, b] * xb[i, b]
            sx[k, i] += acc


@njit_cached(inline="always", fastmath=_FAST)
def _maha_tile(U, xb, i, j, nb, y, c, first):
    """Rows i..i+3 of U times columns j..j+3 into y[j..j+3, :nb], for all the block's points
    (``first``: the columns start from -c[j..j+3], else they are added to y). Each point's
    terms are added in the order of rows."""
    u00, u01, u02, u03 = U[i, j], U[i, j + 1], U[i, j + 2], U[i, j + 3]
    u10, u11, u12, u13 = U[i + 1, j], U[i + 1, j + 1], U[i + 1, j + 2], U[i + 1, j + 3]
    u20, u21, u22, u23 = U[i + 2, j], U[i + 2, j + 1], U[i + 2, j + 2], U[i + 2, j + 3]
    u30, u31, u32, u33 = U[i + 3, j], U[i + 3, j + 1], U[i + 3, j + 2], U[i + 3, j + 3]
    c0, c1, c2, c3 = c[j], c[j + 1], c[j + 2], c[j + 3]
    if first:
        for b in range(nb):
            d0, d1, d2, d3 = xb[i, b], xb[i + 1, b], xb[i + 2, b], xb[i + 3, b]
            y[j, b] = (((-c0 + d0 * u00) + d1 * u10) + d2 * u20) + d3 * u30
            y[j + 1, b] = (((-c1 + d0 * u01) + d1 * u11) + d2 * u21) + d3 * u31
            y[j + 2, b] = (((-c2 + d0 * u02) + d1 * u12) + d2 * u22) + d3 * u32
            y[j + 3, b] = (((-c3 + d0 * u03) + d1 * u13) + d2 * u23) + d3 * u33
    else:
        for b in range(nb):
            d0, d1, d2, d3 = xb[i, b], xb[i + 1, b], xb[i + 2, b], xb[i + 3, b]
            y[j, b] = (((y[j, b] + d0 * u00) + d1 * u10) + d2 * u20) + d3 * u30
            y[j + 1, b] = (((y[j + 1, b] + d0 * u01) + d1 * u11) + d2 * u21) + d3 * u31
            y[j + 2, b] = (((y[j + 2, b] + d0 * u02) + d1 * u12) + d2 * u22) + d3 * u32
            y[j + 3, b] = (((y[j + 3, b] + d0 * u03) + d1 * u13) + d2 * u23) + d3 * u33


@njit_cached(inline="always", fastmath=_FAST)
def _maha_tile_diag(U, xb, j, nb, y, out, c, first):
    """The diagonal tile (rows and columns j..j+3), the last of its columns: the terms of U's
    zero lower triangle left out (10 multiply-adds where a square tile has 16); the columns'
    squares go to out (y is not written)."""
    u00, u01, u02, u03 = U[j, j], U[j, j + 1], U[j, j + 2], U[j, j + 3]
    u11, u12, u13 = U[j + 1, j + 1], U[j + 1, j + 2], U[j + 1, j + 3]
    u22, u23 = U[j + 2, j + 2], U[j + 2, j + 3]
    u33 = U[j + 3, j + 3]
    c0, c1, c2, c3 = c[j], c[j + 1], c[j + 2], c[j + 3]
    if first:
        for b in range(nb):
            d0, d1, d2, d3 = xb[j, b], xb[j + 1, b], xb[j + 2, b], xb[j + 3, b]
            y0 = -c0 + d0 * u00
            y1 = (-c1 + d0 * u01) + d1 * u11
            y2 = ((-c2 + d0 * u02) + d1 * u12) + d2 * u22
            y3 = (((-c3 + d0 * u03) + d1 * u13) + d2 * u23) + d3 * u33
            out[b] = (((out[b] + y0 * y0) + y1 * y1) + y2 * y2) + y3 * y3
    else:
        for b in range(nb):
            d0, d1, d2, d3 = xb[j, b], xb[j + 1, b], xb[j + 2, b], xb[j + 3, b]
            y0 = y[j, b] + d0 * u00
            y1 = (y[j + 1, b] + d0 * u01) + d1 * u11
            y2 = ((y[j + 2, b] + d0 * u02) + d1 * u12) + d2 * u22
            y3 = (((y[j + 3, b] + d0 * u03) + d1 * u13) + d2 * u23) + d3 * u33
            out[b] = (((out[b] + y0 * y0) + y1 * y1) + y2 * y2) + y3 * y3


@njit_cached(inline="always", fastmath=_FAST)
def _maha_tile8(U, xb, i, j, nb, y, c, first):
    """Rows i..i+7 of U times columns j..j+7 for all the block's points, the eight
    columns held per point and stored in y (``first``: they start from -c, else from y).
    Written out, so that LLVM keeps the tile of U and the columns in registers."""
    row = U[i + 0]
    u00, u01, u02, u03 = row[j], row[j + 1], row[j + 2], row[j + 3]
    u04, u05, u06, u07 = row[j + 4], row[j + 5], row[j + 6], row[j + 7]
    row = U[i + 1]
    u10, u11, u12, u13 = row[j], row[j + 1], row[j + 2], row[j + 3]
    u14, u15, u16, u17 = row[j + 4], row[j + 5], row[j + 6], row[j + 7]
    row = U[i + 2]
    u20, u21, u22, u23 = row[j], row[j + 1], row[j + 2], row[j + 3]
    u24, u25, u26, u27 = row[j + 4], row[j + 5], row[j + 6], row[j + 7]
    row = U[i + 3]
    u30, u31, u32, u33 = row[j], row[j + 1], row[j + 2], row[j + 3]
    u34, u35, u36, u37 = row[j + 4], row[j + 5], row[j + 6], row[j + 7]
    row = U[i + 4]
    u40, u41, u42, u43 = row[j], row[j + 1], row[j + 2], row[j + 3]
    u44, u45, u46, u47 = row[j + 4], row[j + 5], row[j + 6], row[j + 7]
    row = U[i + 5]
    u50, u51, u52, u53 = row[j], row[j + 1], row[j + 2], row[j + 3]
    u54, u55, u56, u57 = row[j + 4], row[j + 5], row[j + 6], row[j + 7]
    row = U[i + 6]
    u60, u61, u62, u63 = row[j], row[j + 1], row[j + 2], row[j + 3]
    u64, u65, u66, u67 = row[j + 4], row[j + 5], row[j + 6], row[j + 7]
    row = U[i + 7]
    u70, u71, u72, u73 = row[j], row[j + 1], row[j + 2], row[j + 3]
    u74, u75, u76, u77 = row[j + 4], row[j + 5], row[j + 6], row[j + 7]
    c0, c1, c2, c3 = c[j], c[j + 1], c[j + 2], c[j + 3]
    c4, c5, c6, c7 = c[j + 4], c[j + 5], c[j + 6], c[j + 7]
    if first:
        for b in range(nb):
            x0, x1, x2, x3 = xb[i, b], xb[i + 1, b], xb[i + 2, b], xb[i + 3, b]
            x4, x5, x6, x7 = xb[i + 4, b], xb[i + 5, b], xb[i + 6, b], xb[i + 7, b]
            y[j + 0, b] = (
                -c0
                + x0 * u00
                + x1 * u10
                + x2 * u20
                + x3 * u30
                + x4 * u40
                + x5 * u50
                + x6 * u60
                + x7 * u70
            )
            y[j + 1, b] = (
                -c1
                + x0 * u01
                + x1 * u11
                + x2 * u21
                + x3 * u31
                + x4 * u41
                + x5 * u51
                + x6 * u61
                + x7 * u71
            )
            y[j + 2, b] = (
                -c2
                + x0 * u02
                + x1 * u12
                + x2 * u22
                + x3 * u32
                + x4 * u42
                + x5 * u52
                + x6 * u62
                + x7 * u72
            )
            y[j + 3, b] = (
                -c3
                + x0 * u03
                + x1 * u13
                + x2 * u23
                + x3 * u33
                + x4 * u43
                + x5 * u53
                + x6 * u63
                + x7 * u73
            )
            y[j + 4, b] = (
                -c4
                + x0 * u04
                + x1 * u14
                + x2 * u24
                + x3 * u34
                + x4 * u44
                + x5 * u54
                + x6 * u64
                + x7 * u74
            )
            y[j + 5, b] = (
                -c5
                + x0 * u05
                + x1 * u15
                + x2 * u25
                + x3 * u35
                + x4 * u45
                + x5 * u55
                + x6 * u65
                + x7 * u75
            )
            y[j + 6, b] = (
                -c6
                + x0 * u06
                + x1 * u16
                + x2 * u26
                + x3 * u36
                + x4 * u46
                + x5 * u56
                + x6 * u66
                + x7 * u76
            )
            y[j + 7, b] = (
                -c7
                + x0 * u07
                + x1 * u17
                + x2 * u27
                + x3 * u37
                + x4 * u47
                + x5 * u57
                + x6 * u67
                + x7 * u77
            )
    else:
        for b in range(nb):
            x0, x1, x2, x3 = xb[i, b], xb[i + 1, b], xb[i + 2, b], xb[i + 3, b]
            x4, x5, x6, x7 = xb[i + 4, b], xb[i + 5, b], xb[i + 6, b], xb[i + 7, b]
            y[j + 0, b] = (
                y[j + 0, b]
                + x0 * u00
                + x1 * u10
                + x2 * u20
                + x3 * u30
                + x4 * u40
                + x5 * u50
                + x6 * u60
                + x7 * u70
            )
            y[j + 1, b] = (
                y[j + 1, b]
                + x0 * u01
                + x1 * u11
                + x2 * u21
                + x3 * u31
                + x4 * u41
                + x5 * u51
                + x6 * u61
                + x7 * u71
            )
            y[j + 2, b] = (
                y[j + 2, b]
                + x0 * u02
                + x1 * u12
                + x2 * u22
                + x3 * u32
                + x4 * u42
                + x5 * u52
                + x6 * u62
                + x7 * u72
            )
            y[j + 3, b] = (
                y[j + 3, b]
                + x0 * u03
                + x1 * u13
                + x2 * u23
                + x3 * u33
                + x4 * u43
                + x5 * u53
                + x6 * u63
                + x7 * u73
            )
            y[j + 4, b] = (
                y[j + 4, b]
                + x0 * u04
                + x1 * u14
                + x2 * u24
                + x3 * u34
                + x4 * u44
                + x5 * u54
                + x6 * u64
                + x7 * u74
            )
            y[j + 5, b] = (
                y[j + 5, b]
                + x0 * u05
                + x1 * u15
                + x2 * u25
                + x3 * u35
                + x4 * u45
                + x5 * u55
                + x6 * u65
                + x7 * u75
            )
            y[j + 6, b] = (
                y[j + 6, b]
                + x0 * u06
                + x1 * u16
                + x2 * u26
                + x3 * u36
                + x4 * u46
                + x5 * u56
                + x6 * u66
                + x7 * u76
            )
            y[j + 7, b] = (
                y[j + 7, b]
                + x0 * u07
                + x1 * u17
                + x2 * u27
                + x3 * u37
                + x4 * u47
                + x5 * u57
                + x6 * u67
                + x7 * u77
            )


@njit_cached(inline="always", fastmath=_FAST)
def _maha_tile8_diag(U, xb, j, nb, y, out, c, first):
    """The diagonal 8x8 tile (rows and columns j..j+7, the last of its columns):
    :func:`_maha_tile8` without the terms of U's zero lower triangle."""
    i = j
    row = U[i + 0]
    u00, u01, u02, u03 = row[j], row[j + 1], row[j + 2], row[j + 3]
    u04, u05, u06, u07 = row[j + 4], row[j + 5], row[j + 6], row[j + 7]
    row = U[i + 1]
    u11, u12, u13, u14 = row[j + 1], row[j + 2], row[j + 3], row[j + 4]
    u15, u16, u17 = row[j + 5], row[j + 6], row[j + 7]
    row = U[i + 2]
    u22, u23, u24, u25 = row[j + 2], row[j + 3], row[j + 4], row[j + 5]
    u26, u27 = row[j + 6], row[j + 7]
    row = U[i + 3]
    u33, u34, u35, u36 = row[j + 3], row[j + 4], row[j + 5], row[j + 6]
    u37 = row[j + 7]
    row = U[i + 4]
    u44, u45, u46, u47 = row[j + 4], row[j + 5], row[j + 6], row[j + 7]
    row = U[i + 5]
    u55, u56, u57 = row[j + 5], row[j + 6], row[j + 7]
    row = U[i + 6]
    u66, u67 = row[j + 6], row[j + 7]
    row = U[i + 7]
    u77 = row[j + 7]
    c0, c1, c2, c3 = c[j], c[j + 1], c[j + 2], c[j + 3]
    c4, c5, c6, c7 = c[j + 4], c[j + 5], c[j + 6], c[j + 7]
    if first:
        for b in range(nb):
            x0, x1, x2, x3 = xb[i, b], xb[i + 1, b], xb[i + 2, b], xb[i + 3, b]
            x4, x5, x6, x7 = xb[i + 4, b], xb[i + 5, b], xb[i + 6, b], xb[i + 7, b]
            y0 = -c0 + x0 * u00
            y1 = -c1 + x0 * u01 + x1 * u11
            y2 = -c2 + x0 * u02 + x1 * u12 + x2 * u22
            y3 = -c3 + x0 * u03 + x1 * u13 + x2 * u23 + x3 * u33
            y4 = -c4 + x0 * u04 + x1 * u14 + x2 * u24 + x3 * u34 + x4 * u44
            y5 = -c5 + x0 * u05 + x1 * u15 + x2 * u25 + x3 * u35 + x4 * u45 + x5 * u55
            y6 = -c6 + x0 * u06 + x1 * u16 + x2 * u26 + x3 * u36 + x4 * u46 + x5 * u56 + x6 * u66
            y7 = (
                -c7
                + x0 * u07
                + x1 * u17
                + x2 * u27
                + x3 * u37
                + x4 * u47
                + x5 * u57
                + x6 * u67
                + x7 * u77
            )
            out[b] = (
                ((((((out[b] + y0 * y0) + y1 * y1) + y2 * y2) + y3 * y3) + y4 * y4) + y5 * y5)
                + y6 * y6
            ) + y7 * y7
    else:
        for b in range(nb):
            x0, x1, x2, x3 = xb[i, b], xb[i + 1, b], xb[i + 2, b], xb[i + 3, b]
            x4, x5, x6, x7 = xb[i + 4, b], xb[i + 5, b], xb[i + 6, b], xb[i + 7, b]
            y0 = y[j + 0, b] + x0 * u00
            y1 = y[j + 1, b] + x0 * u01 + x1 * u11
            y2 = y[j + 2, b] + x0 * u02 + x1 * u12 + x2 * u22
            y3 = y[j + 3, b] + x0 * u03 + x1 * u13 + x2 * u23 + x3 * u33
            y4 = y[j + 4, b] + x0 * u04 + x1 * u14 + x2 * u24 + x3 * u34 + x4 * u44
            y5 = y[j + 5, b] + x0 * u05 + x1 * u15 + x2 * u25 + x3 * u35 + x4 * u45 + x5 * u55
            y6 = (
                y[j + 6, b]
                + x0 * u06
                + x1 * u16
                + x2 * u26
                + x3 * u36
                + x4 * u46
                + x5 * u56
                + x6 * u66
            )
            y7 = (
                y[j + 7, b]
                + x0 * u07
                + x1 * u17
                + x2 * u27
                + x3 * u37
                + x4 * u47
                + x5 * u57
                + x6 * u67
                + x7 * u77
            )
            out[b] = (
                ((((((out[b] + y0 * y0) + y1 * y1) + y2 * y2) + y3 * y3) + y4 * y4) + y5 * y5)
                + y6 * y6
            ) + y7 * y7


@njit_cached(inline="always", fastmath=_FAST)
def _maha_triangular(U, c, xb, nb, y, out):
    """out[:nb] = |x U - c|^2 for an upper-triangular U (D, D) and c = mu U (the reference's
    ``x U - mu U``: no pass forms x - mu); y (D, B) a buffer.

    A column of ``x U`` takes terms from the rows up to it only. Columns in eights, then in
    fours: each group runs over the rows above its diagonal in tiles of as many rows
    (:func:`_maha_tile8`, :func:`_maha_tile`: one pass over the points adds those rows' terms
    to the group's columns, held in registers), the diagonal tile last, adding the columns'
    squares to out without storing them. The D % 4 last columns, if any, a row at a time.
    out sums the columns' squares in the order of the columns."""
    D = U.shape[0]
    for b in range(nb):
        out[b] = 0.0
    j = 0
    while j + 8 <= D:
        for q in range(j // 8):  # rows 0 .. j - 1
            _maha_tile8(U, xb, 8 * q, j, nb, y, c, q == 0)
        _maha_tile8_diag(U, xb, j, nb, y, out, c, j == 0)
        j += 8
    while j + 4 <= D:
        for q in range(j // 4):
            _maha_tile(U, xb, 4 * q, j, nb, y, c, q == 0)
        _maha_tile_diag(U, xb, j, nb, y, out, c, j == 0)
        j += 4
    for j in range(j, D):
        cj = c[j]
        for b in range(nb):
            y[j, b] = -cj
        for i in range(j + 1):
            uij = U[i, j]
            for b in range(nb):
                y[j, b] += xb[i, b] * uij
        for b in range(nb):
            out[b] += y[j, b] * y[j, b]


@njit_cached(inline="always", fastmath=_FAST)
def _add_scatter_upper_r(r, db, nb, out, s):
    """out[i, j] += sum_b r[b] db[i, b] db[j, b] for j >= i (the caller mirrors the rest);
    s[i] = sum_b r[b] db[i, b] and s[D] = sum_b r[b] (the block's sums, in db's dtype).

    :func:`_add_scatter_upper` of ``rc = r db`` with the products ``r[b] db[i, b]`` formed in
    the tiles (the same values; no pass to store them). The first tile of each pair of rows
    (the one on the diagonal) also sums those products and r, so the first-order sums take no
    pass of their own."""
    D = db.shape[0]
    zero = _zero(db)  # a block's sums in db's dtype, added into the float64 ``out``
    i = 0
    while i + 2 <= D:
        if i + 4 <= D:  # the diagonal tile, with the row sums
            a00 = a01 = a02 = a03 = a11 = a12 = a13 = s0 = s1 = sr = zero
            for b in range(nb):
                w = r[b]
                r0, r1 = w * db[i, b], w * db[i + 1, b]
                d0, d1, d2, d3 = db[i, b], db[i + 1, b], db[i + 2, b], db[i + 3, b]
                sr += w
                s0 += r0
                s1 += r1
                a00 += r0 * d0
                a01 += r0 * d1
                a02 += r0 * d2
                a03 += r0 * d3
                a11 += r1 * d1
                a12 += r1 * d2
                a13 += r1 * d3
            out[i, i] += a00
            out[i, i + 1] += a01
            out[i, i + 2] += a02
            out[i, i + 3] += a03
            out[i + 1, i + 1] += a11
            out[i + 1, i + 2] += a12
            out[i + 1, i + 3] += a13
            j = i + 4
        else:  # two or three columns left: the diagonal pair, with the row sums
            a00 = a01 = a11 = s0 = s1 = sr = zero
            for b in range(nb):
                w = r[b]
                r0, r1 = w * db[i, b], w * db[i + 1, b]
                d0, d1 = db[i, b], db[i + 1, b]
                sr += w
                s0 += r0
                s1 += r1
                a00 += r0 * d0
                a01 += r0 * d1
                a11 += r1 * d1
            out[i, i] += a00
            out[i, i + 1] += a01
            out[i + 1, i + 1] += a11
            j = i + 2
        s[i] = s0
        s[i + 1] = s1
        if i == 0:
            s[D] = sr
        while j + 4 <= D:
            a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = zero
            for b in range(nb):
                w = r[b]
                r0, r1 = w * db[i, b], w * db[i + 1, b]
                d0, d1, d2, d3 = db[j, b], db[j + 1, b], db[j + 2, b], db[j + 3, b]
                a00 += r0 * d0
                a01 += r0 * d1
                a02 += r0 * d2
                a03 += r0 * d3
                a10 += r1 * d0
                a11 += r1 * d1
                a12 += r1 * d2
                a13 += r1 * d3
            out[i, j] += a00
            out[i, j + 1] += a01
            out[i, j + 2] += a02
            out[i, j + 3] += a03
            out[i + 1, j] += a10
            out[i + 1, j + 1] += a11
            out[i + 1, j + 2] += a12
            out[i + 1, j + 3] += a13
            j += 4
        if j + 3 == D:  # the columns left in one pass: three, two or one
            a00 = a01 = a02 = a10 = a11 = a12 = zero
            for b in range(nb):
                w = r[b]
                r0, r1 = w * db[i, b], w * db[i + 1, b]
                d0, d1, d2 = db[j, b], db[j + 1, b], db[j + 2, b]
                a00 += r0 * d0
                a01 += r0 * d1
                a02 += r0 * d2
                a10 += r1 * d0
                a11 += r1 * d1
                a12 += r1 * d2
            out[i, j] += a00
            out[i, j + 1] += a01
            out[i, j + 2] += a02
            out[i + 1, j] += a10
            out[i + 1, j + 1] += a11
            out[i + 1, j + 2] += a12
        elif j + 2 == D:
            a00 = a01 = a10 = a11 = zero
            for b in range(nb):
                w = r[b]
                r0, r1 = w * db[i, b], w * db[i + 1, b]
                d0, d1 = db[j, b], db[j + 1, b]
                a00 += r0 * d0
                a01 += r0 * d1
                a10 += r1 * d0
                a11 += r1 * d1
            out[i, j] += a00
            out[i, j + 1] += a01
            out[i + 1, j] += a10
            out[i + 1, j + 1] += a11
        elif j + 1 == D:
            a0 = a1 = zero
            for b in range(nb):
                w = r[b]
                d = db[j, b]
                a0 += (w * db[i, b]) * d
                a1 += (w * db[i + 1, b]) * d
            out[i, j] += a0
            out[i + 1, j] += a1
        i += 2
    if i < D:
        acc = s0 = sr = zero
        for b in range(nb):
            w = r[b]
            r0 = w * db[i, b]
            sr += w
            s0 += r0
            acc += r0 * db[i, b]
        out[i, i] += acc
        s[i] = s0
        if i == 0:
            s[D] = sr


@njit_cached(inline="always", fastmath=_FAST)
def _add_scatter_upper(rc, db, nb, out):
    """out[i, j] += sum_b rc[i, b] db[j, b] for j >= i (the caller mirrors the rest).

    Tiles of two rows by four columns: six loads feed eight multiply-adds (a dot product at a
    time needs two loads for each)."""
    D = db.shape[0]
    zero = _zero(db)  # a block's sums in db's dtype, added into the float64 ``out``
    i = 0
    while i + 2 <= D:
        j = i
        while j + 4 <= D:
            a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = zero
            for b in range(nb):
                r0, r1 = rc[i, b], rc[i + 1, b]
                d0, d1, d2, d3 = db[j, b], db[j + 1, b], db[j + 2, b], db[j + 3, b]
                a00 += r0 * d0
                a01 += r0 * d1
                a02 += r0 * d2
                a03 += r0 * d3
                a10 += r1 * d0
                a11 += r1 * d1
                a12 += r1 * d2
                a13 += r1 * d3
            out[i, j] += a00
            out[i, j + 1] += a01
            out[i, j + 2] += a02
            out[i, j + 3] += a03
            if j > i:  # (i + 1, i) is below the diagonal
                out[i + 1, j] += a10
            out[i + 1, j + 1] += a11
            out[i + 1, j + 2] += a12
            out[i + 1, j + 3] += a13
            j += 4
        for j in range(j, D):
            a0 = a1 = zero
            for b in range(nb):
                d = db[j, b]
                a0 += rc[i, b] * d
                a1 += rc[i + 1, b] * d
            out[i, j] += a0
            if j > i:
                out[i + 1, j] += a1
        i += 2
    if i < D:
        acc = zero
        for b in range(nb):
            acc += rc[i, b] * db[i, b]
        out[i, i] += acc


@njit_cached(parallel=True, fastmath=_FAST)
def _full(X, sw, weighted, log_w, means, U, muU, log_det, shift, n_groups, nk, sx, sxx, loglik):
    """Full covariances. Per block: each component's ``|x U_k - mu_k U_k|^2`` straight from
    the block (``muU`` = mu_k U_k, no pass forms x - mu), its log-probabilities written with
    each point's running max over k (the softmax's shift), the softmax; then per component
    ``x - shift_k`` once (in L1), whose scatter tiles also give ``sum r (x - shift_k)`` and
    ``sum r``: sx = that + shift_k sum r, with no pass of its own."""
    N, D = X.shape
    K = means.shape[0]
    bs = _block(means)
    n_blocks = (N + bs - 1) // bs
    half = _like(means, 0.5)  # constants in the compute dtype (the parameters' dtype)
    c2pi = _like(means, D * _LOG_2PI)
    for g in prange(n_groups):
        xb = np.empty((D, bs), means.dtype)
        db = np.empty((D, bs), means.dtype)  # x - shift_k, one k at a time
        y = np.empty((D, bs), means.dtype)
        logp = np.empty((K, bs), means.dtype)
        maha = np.empty(bs, means.dtype)
        m_buf = np.empty(bs, means.dtype)
        z_buf = np.empty(bs, means.dtype)
        s_buf = np.empty(D + 1, means.dtype)
        acc_ll = 0.0
        for blk in range(g, n_blocks, n_groups):
            start = blk * bs
            nb = min(N, start + bs) - start
            _load_block(X, start, start + nb, xb)
            if weighted:
                _zero_weightless(sw, start, nb, xb)
            for k in range(K):
                _maha_triangular(U[k], muU[k], xb, nb, y, maha)
                lk = log_det[k] + log_w[k]
                if k == 0:  # and each point's max over k, for the softmax
                    for b in range(nb):
                        v = -(half * (c2pi + maha[b])) + lk
                        logp[k, b] = v
                        m_buf[b] = v
                else:
                    for b in range(nb):
                        v = -(half * (c2pi + maha[b])) + lk
                        logp[k, b] = v
                        m_buf[b] = v if v > m_buf[b] else m_buf[b]
            acc_ll += _responsibilities(logp, nb, sw, start, weighted, m_buf, z_buf, True)
            for k in range(K):
                # sum_b r (x - c)(x - c)^T, upper triangle (mirrored by the caller), with
                # sum_b r (x - c) and sum_b r: sx gets sum_b r x = those + c sum_b r
                for i in range(D):
                    c = shift[k, i]
                    for b in range(nb):
                        db[i, b] = xb[i, b] - c
                _add_scatter_upper_r(logp[k], db, nb, sxx[g, k], s_buf)
                rk = s_buf[D]
                nk[g, k] += rk
                for i in range(D):
                    sx[g, k, i] += np.float64(s_buf[i]) + np.float64(shift[k, i]) * np.float64(rk)
        loglik[g] = acc_ll


@njit_cached(parallel=True, fastmath=_FAST)
def _tied(X, sw, weighted, log_w, means, U, muU, log_det, n_groups, nk, sx, sxx, loglik):
    N, D = X.shape
    K = means.shape[0]
    bs = _block(means)
    n_blocks = (N + bs - 1) // bs
    half = _like(means, 0.5)  # constants in the compute dtype (the parameters' dtype)
    c2pi = _like(means, D * _LOG_2PI)
    for g in prange(n_groups):
        xb = np.empty((D, bs), means.dtype)
        db = np.empty((D, bs), means.dtype)
        y = np.empty((D, bs), means.dtype)
        logp = np.empty((K, bs), means.dtype)
        maha = np.empty(bs, means.dtype)
        m_buf = np.empty(bs, means.dtype)
        z_buf = np.empty(bs, means.dtype)
        acc_ll = 0.0
        for blk in range(g, n_blocks, n_groups):
            start = blk * bs
            nb = min(N, start + bs) - start
            _load_block(X, start, start + nb, xb)
            if weighted:
                _zero_weightless(sw, start, nb, xb)
            for k in range(K):
                _maha_triangular(U, muU[k], xb, nb, y, maha)
                for b in range(nb):
                    logp[k, b] = -(half * (c2pi + maha[b])) + log_det[0] + log_w[k]
            acc_ll += _responsibilities(logp, nb, sw, start, weighted, m_buf, z_buf, False)
            _add_nk_sx(logp, xb, nb, nk[g], sx[g])
            if weighted:  # X^T W X, upper triangle; db is free once the maha are done
                for i in range(D):
                    for b in range(nb):
                        db[i, b] = xb[i, b] * sw[start + b]
                _add_scatter_upper(db, xb, nb, sxx[g])
            else:
                _add_scatter_upper(xb, xb, nb, sxx[g])  # X^T X, upper triangle
        loglik[g] = acc_ll


@njit_cached(parallel=True, fastmath=_FAST)
def _diag(X, sw, weighted, log_w, means, prec, log_det, n_groups, nk, sx, sxx, loglik):
    """prec (K, D): diagonal precisions (spherical passes them broadcast over D)."""
    N, D = X.shape
    K = means.shape[0]
    bs = _block(means)
    n_blocks = (N + bs - 1) // bs
    half = _like(means, 0.5)  # constants in the compute dtype (the parameters' dtype)
    c2pi = _like(means, D * _LOG_2PI)
    for g in prange(n_groups):
        xb = np.empty((D, bs), means.dtype)
        logp = np.empty((K, bs), means.dtype)
        m_buf = np.empty(bs, means.dtype)
        z_buf = np.empty(bs, means.dtype)
        acc_ll = 0.0
        for blk in range(g, n_blocks, n_groups):
            start = blk * bs
            nb = min(N, start + bs) - start
            _load_block(X, start, start + nb, xb)
            if weighted:
                _zero_weightless(sw, start, nb, xb)
            for k in range(K):
                for b in range(nb):
                    logp[k, b] = 0.0
                for i in range(D):
                    m, p = means[k, i], prec[k, i]
                    for b in range(nb):
                        dv = xb[i, b] - m
                        logp[k, b] += dv * dv * p
                for b in range(nb):
                    logp[k, b] = -(half * (c2pi + logp[k, b])) + log_det[k] + log_w[k]
            acc_ll += _responsibilities(logp, nb, sw, start, weighted, m_buf, z_buf, False)
            _add_nk_sx(logp, xb, nb, nk[g], sx[g])
            for k in range(K):
                for i in range(D):
                    acc = _zero(xb)
                    for b in range(nb):
                        acc += logp[k, b] * xb[i, b] * xb[i, b]
                    sxx[g, k, i] += acc
        loglik[g] = acc_ll


#: float32 points computed in float32 kernels (True), or converted to float64 block by block
#: as they are loaded (False: the kernels of float64 points, and their results to float32
#: rounding of the float64 computation)
FLOAT32_COMPUTE = True

_NO_WEIGHTS = np.empty(0)  # what the kernels get for ``sw`` when they are unweighted


def fit_stats(
    X,
    weights,
    means,
    prec_chol,
    covariance_type,
    *,
    shift,
    chunk_size=None,
    xp=None,
    sample_weight=None,
):
    """Numba E-step statistics over all of X (the reference's signature; ``chunk_size`` is
    ignored: the kernel works in blocks of 128 float64 or 512 float32 points).

    ``sample_weight`` (n,), optional: a point of weight w counts as w copies of itself; ``n``
    is then the total weight, a Python float (added in float64)."""
    Xf = np.ascontiguousarray(X)
    dtype = Xf.dtype
    if dtype not in (np.float32, np.float64):
        Xf, dtype = Xf.astype(np.float64), np.dtype(np.float64)
    # the kernels compute in the dtype of the parameters they get (float32 for float32 X when
    # FLOAT32_COMPUTE, else float64: blocks are then converted as they are loaded) and
    # accumulate in float64; the statistics come back in X's dtype, and X itself is never
    # copied. The few values derived from the parameters (log weights, log determinants) are
    # computed in float64, then cast.
    compute = dtype if FLOAT32_COMPUTE else np.dtype(np.float64)
    N, D = Xf.shape
    K = means.shape[0]
    bs = _BLOCK32 if compute == np.float32 else _BLOCK
    n_groups = int(max(1, min(4 * numba.get_num_threads(), (N + bs - 1) // bs)))
    f64 = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # noqa: E731
    cx = lambda a: np.ascontiguousarray(a, dtype=compute)  # noqa: E731
    log_w = cx(np.log(f64(weights)))
    mu = cx(means)
    pc = f64(prec_chol)
    nk = np.zeros((n_groups, K))
    sx = np.zeros((n_groups, K, D))
    loglik = np.zeros(n_groups)
    weighted = sample_weight is not None
    sw = f64(sample_weight) if weighted else _NO_WEIGHTS  # float64: one kernel per X dtype
    if covariance_type == "full" and gmm_full_lanes.supported(D):
        log_det = np.log(np.diagonal(pc, axis1=1, axis2=2)).sum(axis=1)
        lk = cx(np.log(f64(weights)) + log_det - 0.5 * D * _LOG_2PI)
        nmuU = cx(-np.matmul(f64(means)[:, None, :], pc)[:, 0, :])  # -mu_k U_k, in float64
        bs = gmm_full_lanes.block_size(compute)
        groups = int(max(1, min(4 * numba.get_num_threads(), (N + bs - 1) // bs)))
        nk_, sx_, sxx_, ll_ = gmm_full_lanes.full_stats(
            Xf, sw, weighted, cx(pc), nmuU, lk, cx(shift), groups
        )
        nk, sx, loglik = nk_[None], sx_[None], np.array([ll_])
        sxx = _mirror(sxx_)
    elif covariance_type == "full":
        log_det = cx(np.log(np.diagonal(pc, axis1=1, axis2=2)).sum(axis=1))
        sxx = np.zeros((n_groups, K, D, D))
        shift_x = cx(shift)
        muU = cx(np.matmul(f64(means)[:, None, :], pc)[:, 0, :])  # mu_k U_k, in float64
        _full(
            Xf,
            sw,
            weighted,
            log_w,
            mu,
            cx(pc),
            muU,
            log_det,
            shift_x,
            n_groups,
            nk,
            sx,
            sxx,
            loglik,
        )
        sxx = _mirror(sxx.sum(axis=0))
    elif covariance_type == "tied":
        log_det = cx(np.array([np.log(np.diagonal(pc)).sum()]))
        sxx = np.zeros((n_groups, D, D))
        muU = cx(f64(means) @ pc)  # mu_k U, in float64
        _tied(Xf, sw, weighted, log_w, mu, cx(pc), muU, log_det, n_groups, nk, sx, sxx, loglik)
        sxx = _mirror(sxx.sum(axis=0))
    else:
        prec = pc * pc if covariance_type == "diag" else np.repeat((pc * pc)[:, None], D, axis=1)
        log_det = np.log(pc).sum(axis=1) if covariance_type == "diag" else D * np.log(pc)
        sxx = np.zeros((n_groups, K, D))
        _diag(Xf, sw, weighted, log_w, mu, cx(prec), cx(log_det), n_groups, nk, sx, sxx, loglik)
        sxx = sxx.sum(axis=0)
    cast = lambda a: np.asarray(a, dtype=dtype)  # noqa: E731
    n = float(np.sum(sample_weight, dtype=np.float64)) if weighted else int(N)
    return Stats(
        cast(nk.sum(axis=0)), cast(sx.sum(axis=0)), cast(sxx), cast(loglik.sum()), n, shift
    )


def _mirror(upper):
    """Fill the lower triangle of (..., D, D) matrices from their upper triangle."""
    D = upper.shape[-1]
    lower = np.tril_indices(D, -1)
    out = upper.copy()
    out[..., lower[0], lower[1]] = np.swapaxes(upper, -1, -2)[..., lower[0], lower[1]]
    return out
