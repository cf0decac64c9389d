"""Numba kernels for the Gaussian-mixture E-step fused with its sufficient statistics.

The points are processed in blocks of ``_BLOCK`` transposed to (D, B), so every product and
sum runs over the points of the block: contiguous, long enough to vectorise. Groups of blocks
run in parallel, each with its own accumulators (no thread writes another's), summed at the end
in a fixed order, so results do not depend on scheduling. The (n_samples, n_components)
responsibilities are never stored: only a block's (K, B) at a time.

Sample weights: each kernel takes ``sw`` (float64, one weight per point) and a flag
``weighted``; unweighted calls pass ``False`` and a zero-length array, and run exactly the code
they ran before. Weighted, a block's points of weight 0 are set to 0 as they are loaded (they
take no part, and no huge value of theirs can overflow), and right after the softmax each
point's responsibilities and log-normaliser are multiplied by its weight (0 for weight 0,
never 0 times an inf); tied's ``X^T X`` becomes ``X^T W X``.

Entry point: :func:`fit_stats`, with the reference's signature (``caproute.mixture._em``).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from ..._lib.gmm_stats import Stats
from ._jit import njit_cached
from .vector_exp import softmax_columns

_FAST = {"reassoc", "contract"}  # vectorisable sums; nothing that assumes finite values
_BLOCK = 128
_LOG_2PI = math.log(2.0 * math.pi)


@njit_cached(inline="always", fastmath=_FAST)
def _load_block(X, start, stop, xb):
    """xb[:, :nb] = X[start:stop].T"""
    D = X.shape[1]
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
        wl = w * (m[b] - np.log(zinv[b]))  # log_norm = m + log(sum exp)
        total += wl if w > 0.0 else 0.0
    for k in range(K):
        for b in range(nb):
            w = sw[start + b]
            r[k, b] = r[k, b] * w if w > 0.0 else 0.0
    return total


@njit_cached(inline="always", fastmath=_FAST)
def _responsibilities(logp, nb, sw, start, weighted, m_buf, z_buf):
    """logp[:, :nb] = the block's responsibilities, times the points' weights when
    ``weighted``; returns the sum of the points' (weighted) log-normalisers."""
    if weighted:
        softmax_columns(logp, logp, nb, False, False, m_buf, z_buf)
        return _weigh_responsibilities(logp, sw, start, nb, m_buf, z_buf)
    return softmax_columns(logp, logp, nb, False, True, m_buf, z_buf)


@njit_cached(inline="always", fastmath=_FAST)
def _add_nk_sx(r, xb, nb, nk, sx):
    K, D = sx.shape
    for k in range(K):
        acc = 0.0
        for b in range(nb):
            acc += r[k, b]
        nk[k] += acc
        for i in range(D):
            acc = 0.0
            for b in range(nb):
                acc += r[k, b] * xb[i, b]
            sx[k, i] += acc


@njit_cached(inline="always")
def _upper(U, i, j):
    return U[i, j] if i <= j else 0.0  # U is upper triangular: never read below its diagonal


@njit_cached(inline="always", fastmath=_FAST)
def _maha_triangular(U, mu, xb, nb, db, y, out):
    """out[:nb] = |(x - mu) U|^2 for an upper-triangular U (D, D); db, y (D, B) buffers.

    Rows of U in fours, columns in pairs: one pass over the points adds four rows' terms to two
    outputs, in the order a row at a time would (a plain row-by-row loop loads and stores y
    for every multiply-add, and is bound by those)."""
    D = U.shape[0]
    for i in range(D):
        m = mu[i]
        for b in range(nb):
            db[i, b] = xb[i, b] - m
    for j in range(D):
        for b in range(nb):
            y[j, b] = 0.0
    i = 0
    while i + 4 <= D:
        j = i
        while j + 2 <= D:
            u00, u01 = _upper(U, i, j), _upper(U, i, j + 1)
            u10, u11 = _upper(U, i + 1, j), _upper(U, i + 1, j + 1)
            u20, u21 = _upper(U, i + 2, j), _upper(U, i + 2, j + 1)
            u30, u31 = _upper(U, i + 3, j), _upper(U, i + 3, j + 1)
            for b in range(nb):
                d0, d1, d2, d3 = db[i, b], db[i + 1, b], db[i + 2, b], db[i + 3, b]
                y[j, b] = (((y[j, b] + d0 * u00) + d1 * u10) + d2 * u20) + d3 * u30
                y[j + 1, b] = (((y[j + 1, b] + d0 * u01) + d1 * u11) + d2 * u21) + d3 * u31
            j += 2
        if j < D:
            u0, u1, u2, u3 = U[i, j], U[i + 1, j], U[i + 2, j], U[i + 3, j]
            for b in range(nb):
                y[j, b] = (
                    ((y[j, b] + db[i, b] * u0) + db[i + 1, b] * u1) + db[i + 2, b] * u2
                ) + db[i + 3, b] * u3
        i += 4
    for i in range(i, D):
        for j in range(i, D):
            uij = U[i, j]
            for b in range(nb):
                y[j, b] += db[i, b] * uij
    for b in range(nb):
        out[b] = 0.0
    for j in range(D):
        for b in range(nb):
            out[b] += y[j, b] * y[j, b]


@njit_cached(inline="always", fastmath=_FAST)
def _add_scatter_upper(rc, db, nb, out):
    """out[i, j] += sum_b rc[i, b] db[j, b] for j >= i (the caller mirrors the rest).

    Tiles of two rows by four columns: six loads feed eight multiply-adds (a dot product at a
    time needs two loads for each)."""
    D = db.shape[0]
    i = 0
    while i + 2 <= D:
        j = i
        while j + 4 <= D:
            a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = 0.0
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
            a0 = a1 = 0.0
            for b in range(nb):
                d = db[j, b]
                a0 += rc[i, b] * d
                a1 += rc[i + 1, b] * d
            out[i, j] += a0
            if j > i:
                out[i + 1, j] += a1
        i += 2
    if i < D:
        acc = 0.0
        for b in range(nb):
            acc += rc[i, b] * db[i, b]
        out[i, i] += acc


@njit_cached(parallel=True, fastmath=_FAST)
def _full(
    X, sw, weighted, log_w, means, U, log_det, shift, shift_is_means, n_groups, nk, sx, sxx, loglik
):
    N, D = X.shape
    K = means.shape[0]
    n_blocks = (N + _BLOCK - 1) // _BLOCK
    for g in prange(n_groups):
        xb = np.empty((D, _BLOCK))
        dk = np.empty((K, D, _BLOCK))  # x - mu_k for every k: reused as x - shift_k below
        y = np.empty((D, _BLOCK))
        logp = np.empty((K, _BLOCK))
        maha = np.empty(_BLOCK)
        m_buf = np.empty(_BLOCK)
        z_buf = np.empty(_BLOCK)
        rc = np.empty((D, _BLOCK))
        acc_ll = 0.0
        for blk in range(g, n_blocks, n_groups):
            start = blk * _BLOCK
            nb = min(N, start + _BLOCK) - start
            _load_block(X, start, start + nb, xb)
            if weighted:
                _zero_weightless(sw, start, nb, xb)
            for k in range(K):
                _maha_triangular(U[k], means[k], xb, nb, dk[k], y, maha)
                for b in range(nb):
                    logp[k, b] = -0.5 * (D * _LOG_2PI + maha[b]) + log_det[k] + log_w[k]
            acc_ll += _responsibilities(logp, nb, sw, start, weighted, m_buf, z_buf)
            _add_nk_sx(logp, xb, nb, nk[g], sx[g])
            for k in range(K):
                # sum_b r (x - c)(x - c)^T, upper triangle (mirrored by the caller)
                db = dk[k]
                if not shift_is_means:
                    for i in range(D):
                        for b in range(nb):
                            db[i, b] = xb[i, b] - shift[k, i]
                for i in range(D):
                    for b in range(nb):
                        rc[i, b] = logp[k, b] * db[i, b]
                _add_scatter_upper(rc, db, nb, sxx[g, k])
        loglik[g] = acc_ll


@njit_cached(parallel=True, fastmath=_FAST)
def _tied(X, sw, weighted, log_w, means, U, log_det, n_groups, nk, sx, sxx, loglik):
    N, D = X.shape
    K = means.shape[0]
    n_blocks = (N + _BLOCK - 1) // _BLOCK
    for g in prange(n_groups):
        xb = np.empty((D, _BLOCK))
        db = np.empty((D, _BLOCK))
        y = np.empty((D, _BLOCK))
        logp = np.empty((K, _BLOCK))
        maha = np.empty(_BLOCK)
        m_buf = np.empty(_BLOCK)
        z_buf = np.empty(_BLOCK)
        acc_ll = 0.0
        for blk in range(g, n_blocks, n_groups):
            start = blk * _BLOCK
            nb = min(N, start + _BLOCK) - start
            _load_block(X, start, start + nb, xb)
            if weighted:
                _zero_weightless(sw, start, nb, xb)
            for k in range(K):
                _maha_triangular(U, means[k], xb, nb, db, y, maha)
                for b in range(nb):
                    logp[k, b] = -0.5 * (D * _LOG_2PI + maha[b]) + log_det[0] + log_w[k]
            acc_ll += _responsibilities(logp, nb, sw, start, weighted, m_buf, z_buf)
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
    n_blocks = (N + _BLOCK - 1) // _BLOCK
    for g in prange(n_groups):
        xb = np.empty((D, _BLOCK))
        logp = np.empty((K, _BLOCK))
        m_buf = np.empty(_BLOCK)
        z_buf = np.empty(_BLOCK)
        acc_ll = 0.0
        for blk in range(g, n_blocks, n_groups):
            start = blk * _BLOCK
            nb = min(N, start + _BLOCK) - start
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
                    logp[k, b] = -0.5 * (D * _LOG_2PI + logp[k, b]) + log_det[k] + log_w[k]
            acc_ll += _responsibilities(logp, nb, sw, start, weighted, m_buf, z_buf)
            _add_nk_sx(logp, xb, nb, nk[g], sx[g])
            for k in range(K):
                for i in range(D):
                    acc = 0.0
                    for b in range(nb):
                        acc += logp[k, b] * xb[i, b] * xb[i, b]
                    sxx[g, k, i] += acc
        loglik[g] = acc_ll


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
    ignored: the kernel works in blocks of 128 points).

    ``sample_weight`` (n,), optional: a point of weight w counts as w copies of itself; ``n``
    is then the total weight, a Python float (added in float64)."""
    Xf = np.ascontiguousarray(X)
    dtype = Xf.dtype
    # blocks are converted to float64 as they are loaded (accumulators and buffers are float64);
    # the statistics come back in X's dtype, and X itself is never copied
    N, D = Xf.shape
    K = means.shape[0]
    n_groups = int(max(1, min(4 * numba.get_num_threads(), (N + _BLOCK - 1) // _BLOCK)))
    f64 = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # noqa: E731
    log_w = np.log(f64(weights))
    mu = f64(means)
    pc = f64(prec_chol)
    nk = np.zeros((n_groups, K))
    sx = np.zeros((n_groups, K, D))
    loglik = np.zeros(n_groups)
    weighted = sample_weight is not None
    sw = f64(sample_weight) if weighted else _NO_WEIGHTS  # float64: one kernel per X dtype
    if covariance_type == "full":
        log_det = np.log(np.diagonal(pc, axis1=1, axis2=2)).sum(axis=1)
        sxx = np.zeros((n_groups, K, D, D))
        shift64 = f64(shift)
        _full(
            Xf,
            sw,
            weighted,
            log_w,
            mu,
            pc,
            log_det,
            shift64,
            bool(np.array_equal(shift64, mu)),
            n_groups,
            nk,
            sx,
            sxx,
            loglik,
        )
        sxx = _mirror(sxx.sum(axis=0))
    elif covariance_type == "tied":
        log_det = np.array([np.log(np.diagonal(pc)).sum()])
        sxx = np.zeros((n_groups, D, D))
        _tied(Xf, sw, weighted, log_w, mu, pc, log_det, n_groups, nk, sx, sxx, loglik)
        sxx = _mirror(sxx.sum(axis=0))
    else:
        prec = pc * pc if covariance_type == "diag" else np.repeat((pc * pc)[:, None], D, axis=1)
        log_det = np.log(pc).sum(axis=1) if covariance_type == "diag" else D * np.log(pc)
        sxx = np.zeros((n_groups, K, D))
        _diag(Xf, sw, weighted, log_w, mu, f64(prec), f64(log_det), n_groups, nk, sx, sxx, loglik)
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
