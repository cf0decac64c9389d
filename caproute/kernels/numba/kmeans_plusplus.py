"""Numba kernels for k-means++ seeding over one chunk of points at a time.

scikit-learn's seeding keeps ``closest_dist_sq`` (one number per point); these kernels
recompute it inside each pass from the centres chosen so far instead, so nothing grows with
the number of points. A minimum is exact, so the recomputed values are scikit-learn's as long
as every distance follows its formula: ``max(-2 x.c + |c|^2 + |x|^2, 0)`` in the data's dtype,
computed in float64 and rounded to float32 for float32 data (scikit-learn's upcast path).

The points of a chunk are processed in blocks of ``_BLOCK`` transposed to (D, B), so every
product runs over the points of the block (contiguous, vectorisable without reordering any
sum). Each point's dot products and squared norm are summed over the features in order, the
same operations for ``x.x`` and ``|x|^2``, so a point's distance to itself is exactly 0.
(scikit-learn's BLAS and einsum may sum the features in another order, with FMA: a float64
distance can differ in its last bit, which rounding to float32 almost always removes.)
Nothing here uses fast-math: the running sums must keep their order.

Entry points: :func:`search_chunk` (the carried cumulative sum and its searches) and
:func:`potentials_chunk` (each candidate's potential).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import njit_cached

_BLOCK = 256
_GROUP = 16  # blocks per parallel task: a fixed partition, so sums do not depend on threads


@njit_cached()
def squared_norms(C):
    """|c|^2 of each row in float64, summed over the features in the kernels' order."""
    K, D = C.shape
    out = np.empty(K)
    for j in range(K):
        s = 0.0
        for k in range(D):
            v = np.float64(C[j, k])
            s += v * v
        out[j] = s
    return out


@njit_cached(inline="always")
def _load_block(X, start, nb, xb, xn):
    """xb[:, :nb] = X[start:start + nb].T in float64; xn[:nb] = their squared norms."""
    D = X.shape[1]
    for b in range(nb):
        for k in range(D):
            xb[k, b] = X[start + b, k]
    for b in range(nb):
        xn[b] = 0.0
    for k in range(D):
        for b in range(nb):
            xn[b] += xb[k, b] * xb[k, b]


@njit_cached(inline="always")
def _distances(xb, xn, nb, c, cn, out):
    """out[:nb] = max(-2 x.c + |c|^2 + |x|^2, 0) in float64."""
    D = xb.shape[0]
    for b in range(nb):
        out[b] = 0.0
    for k in range(D):
        ck = np.float64(c[k])
        for b in range(nb):
            out[b] += xb[k, b] * ck
    for b in range(nb):
        d = (-2.0 * out[b] + cn) + xn[b]
        out[b] = 0.0 if d < 0 else d


@njit_cached(inline="always")
def _closest(xb, xn, nb, C, cn, nc, acc, closest):
    """closest[:nb] = the smallest distance to the first ``nc`` rows of C (inf when none).

    In float64: rounding to float32 afterwards gives the minimum of the rounded distances
    (rounding is monotonic), so float32 data get scikit-learn's float32 values.
    """
    for b in range(nb):
        closest[b] = np.inf
    for j in range(nc):
        _distances(xb, xn, nb, C[j], cn[j], acc)
        for b in range(nb):
            d = acc[b]
            c = closest[b]
            closest[b] = d if d < c else c


@njit_cached(parallel=True)
def _closest_rows(X, C, cn, nc, out):
    """out[i] = closest squared distance of row i of X to the first ``nc`` rows of C."""
    m, D = X.shape
    nblocks = (m + _BLOCK - 1) // _BLOCK
    ngroups = (nblocks + _GROUP - 1) // _GROUP
    for g in prange(ngroups):
        xb = np.empty((D, _BLOCK))
        xn = np.empty(_BLOCK)
        acc = np.empty(_BLOCK)
        closest = np.empty(_BLOCK)
        for blk in range(g * _GROUP, min((g + 1) * _GROUP, nblocks)):
            start = blk * _BLOCK
            nb = min(_BLOCK, m - start)
            _load_block(X, start, nb, xb, xn)
            _closest(xb, xn, nb, C, cn, nc, acc, closest)
            for b in range(nb):
                out[start + b] = closest[b]  # rounded to X's dtype


@njit_cached()
def search_chunk(X, w, weighted, C, cn, nc, carry, thresholds, found, n_found, start):
    """The cumulative weighted potential over one chunk, carried, and its searches.

    ``carry`` (1,) of X's dtype holds the cumulative sum before the chunk and is updated, as
    NumPy's ``cumsum(sample_weight * closest_dist_sq)`` (sequential, in the data's dtype)
    would reach it. ``thresholds`` (L,) float64, ascending: ``found[l]`` becomes the first
    global index whose cumulative sum is >= ``thresholds[l]`` (``searchsorted`` side left,
    compared in float64). Returns the new number found (``found[:n_found]`` are set).
    """
    m = X.shape[0]
    L = thresholds.shape[0]
    dist = np.empty(m, dtype=X.dtype)
    _closest_rows(X, C, cn, nc, dist)
    c = carry[0]
    for i in range(m):
        p = w[i] * dist[i] if weighted else dist[i]
        c = c + p
        while n_found < L and c >= thresholds[n_found]:
            found[n_found] = start + i
            n_found += 1
        if n_found == L:
            break
    carry[0] = c
    return n_found


@njit_cached(parallel=True)
def _potential_blocks(X, w, weighted, C, cn, nc, cand, candn, partial):
    m, D = X.shape
    L = cand.shape[0]
    nblocks = partial.shape[0]
    ngroups = (nblocks + _GROUP - 1) // _GROUP
    for g in prange(ngroups):
        xb = np.empty((D, _BLOCK))
        xn = np.empty(_BLOCK)
        acc = np.empty(_BLOCK)
        closest = np.empty(_BLOCK)
        v = np.empty(_BLOCK, dtype=X.dtype)
        for blk in range(g * _GROUP, min((g + 1) * _GROUP, nblocks)):
            start = blk * _BLOCK
            nb = min(_BLOCK, m - start)
            _load_block(X, start, nb, xb, xn)
            _closest(xb, xn, nb, C, cn, nc, acc, closest)
            for j in range(L):
                _distances(xb, xn, nb, cand[j], candn[j], acc)
                for b in range(nb):
                    d = acc[b]
                    c = closest[b]
                    v[b] = d if d < c else c  # rounded to X's dtype
                s = 0.0
                if weighted:
                    for b in range(nb):
                        s += np.float64(w[start + b]) * np.float64(v[b])
                else:
                    for b in range(nb):
                        s += np.float64(v[b])
                partial[blk, j] = s


@njit_cached()
def potentials_chunk(X, w, weighted, C, cn, nc, cand, candn, total):
    """total[l] += sum over the chunk of w * min(closest distance, distance to cand[l]).

    In float64 (a float32 product of float32 numbers is exact in float64); blocks are summed
    in order, so the result does not depend on the number of threads.
    """
    m = X.shape[0]
    partial = np.empty(((m + _BLOCK - 1) // _BLOCK, cand.shape[0]))
    _potential_blocks(X, w, weighted, C, cn, nc, cand, candn, partial)
    for blk in range(partial.shape[0]):
        for j in range(partial.shape[1]):
            total[j] += partial[blk, j]


@njit_cached()
def probability_scan(w, total, carry, T, u):
    """Legacy ``RandomState.choice(n, p=w / total)`` over one chunk, carried.

    ``carry`` (1,) float64 is ``cumsum(p)`` before the chunk (p = w / total in w's dtype,
    then float64, as ``choice`` converts it) and is updated. With ``T`` > 0 (the full cumsum,
    ``cdf[-1]``) returns the first index i of the chunk with ``cdf[i] / T > u`` (searchsorted
    side right), or -1; with ``T`` <= 0 only carries.
    """
    c = carry[0]
    for i in range(w.shape[0]):
        c = c + np.float64(w[i] / total)
        if T > 0 and c / T > u:
            carry[0] = c
            return i
    carry[0] = c
    return -1
