"""GPU Gaussian-mixture E-step fused with its sufficient statistics (numba-cuda).

Two launches per E-step, whatever the number of points:

1. ``estep_<type>``: a grid of ``G`` blocks of ``BLOCK`` threads. Block ``g`` takes the tiles of
   ``BLOCK`` points ``g, g + G, g + 2G, ...``. Per tile, three phases separated by
   ``syncthreads``:

   a. log-probabilities: one (point, component) pair per thread (points fastest, so a warp
      reads one component's parameters), ``-0.5 (D log 2 pi + maha) + log_det_k + log w_k``
      into the block's own rows of a global scratch ``(K, BLOCK)``;
   b. one point per thread: max-shifted log-sum-exp over the components (the point's
      log-likelihood, kept in shared memory), the responsibilities overwrite the scratch;
   c. every statistic entry (``nk[k]``, ``sx[k, i]``, the upper triangle of ``sxx[k]`` or the
      diagonal terms, the log-likelihood) has one owner thread, which adds the tile's points in
      order to the block's row of partial sums.

   Per-component ``log_det`` and ``log w`` are computed by each block once, into its scratch.
2. ``reduce``: one thread per output value adds the blocks' partial sums in block order and
   mirrors the symmetric scatter matrices.

No float atomics, no warp shuffles: every sum has a fixed order, so the results are the same
from run to run (they depend only on the shapes, through the grid size). D and K may be any
size: the only shared array holds one value per point of a tile. The (n_samples, K)
responsibilities are never stored, only a tile's.

Sample weights: every E-step kernel takes ``sample_weight`` (one weight per point) and comes in
two builds, ``estep`` (unweighted: the array is a zero-length dummy, never read, and the code is
the unweighted one) and ``estep_weighted``, where a point of weight w counts as w copies of
itself: in b. its responsibilities and log-likelihood are multiplied by w; in a. and c. a
point of weight 0 is skipped (a huge value of its own never reaches the arithmetic, and
0 * inf never makes a NaN), and tied's ``X^T X`` is ``X^T W X``. The branches on the build
are compile-time constants.

Entry point: :func:`fit_stats`, with the reference's signature
(``caproute.mixture._gmm_math.fit_stats``); it takes arrays of ``xp`` (CuPy on a GPU, NumPy in
the CUDA simulator) and validates nothing.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
from numba import cuda

from ..._lib.gmm_stats import Stats
from ._launch import launch, per_dtype

__all__ = ["BLOCK", "MAX_GRID", "PTX_SPECS", "SCRATCH_BUDGET", "fit_stats"]

BLOCK = 256  # threads per block = points per tile; the simulator tests lower it
MAX_GRID = 1024  # most blocks of the E-step kernel (each owns a row of partial sums)
SCRATCH_BUDGET = 1 << 23  # most elements of partial sums and scratch, all blocks together
_SHARED_POINTS = 1024  # size of the per-point shared buffer: CUDA's most threads per block
_LOG_2PI = math.log(2.0 * math.pi)
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


@per_dtype
def _kernels(dtype):
    """The E-step kernels (one per covariance type) and the reduction, for one dtype."""
    zero = dtype(0)
    neg_half = dtype(-0.5)
    neg_inf = dtype(-np.inf)

    # ------------------------------------------------------------------ device functions
    @cuda.jit(device=True, inline="always")
    def tri_row(t, D):
        """Row i of the t-th entry of a D x D upper triangle stored row by row (exact)."""
        lo = 0
        hi = D - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if (mid * (2 * D - mid + 1)) // 2 <= t:
                lo = mid
            else:
                hi = mid - 1
        return lo

    @cuda.jit(device=True, inline="always")
    def maha_tri(X, p, means, prec, k, ku, D):
        """|(x_p - mu_k) U|^2 for the upper-triangular U = prec[ku]."""
        acc = zero
        for j in range(D):
            y = zero
            for i in range(j + 1):
                y += (X[p, i] - means[k, i]) * prec[ku, i, j]
            acc += y * y
        return acc

    @cuda.jit(device=True, inline="always")
    def maha_diag(X, p, means, prec, k, ku, D):
        acc = zero
        for i in range(D):
            d = X[p, i] - means[k, i]
            u = prec[k, i]
            acc += (d * d) * (u * u)
        return acc

    @cuda.jit(device=True, inline="always")
    def maha_spherical(X, p, means, prec, k, ku, D):
        acc = zero
        for i in range(D):
            d = X[p, i] - means[k, i]
            acc += d * d
        u = prec[k, 0]
        return acc * (u * u)

    @cuda.jit(device=True, inline="always")
    def logdet_tri(prec, ku, D, n_feat):
        acc = zero
        for i in range(D):
            acc += math.log(prec[ku, i, i])
        return acc

    @cuda.jit(device=True, inline="always")
    def logdet_diag(prec, ku, D, n_feat):
        acc = zero
        for i in range(D):
            acc += math.log(prec[ku, i])
        return acc

    @cuda.jit(device=True, inline="always")
    def logdet_spherical(prec, ku, D, n_feat):
        return n_feat * math.log(prec[ku, 0])

    # sxx entry q of a tile: sums over its nb points, in order; r[k, b] = sc[lp0 + k * tp + b]
    # (already times the points' weights when weighted, which also skips points of weight 0)
    @cuda.jit(device=True, inline="always")
    def skipped(sw, p, weighted):
        """Whether point p takes no part: weighted, and its weight is not > 0."""
        return weighted and not sw[p] > zero

    @cuda.jit(device=True, inline="always")
    def sxx_full(X, sw, weighted, shift, sc, lp0, tp, p0, nb, q, D):
        """sum_b r_bk (x_bi - c_ki)(x_bj - c_kj), i <= j."""
        T = (D * (D + 1)) // 2
        k = q // T
        t = q - k * T
        i = tri_row(t, D)
        j = i + t - (i * (2 * D - i + 1)) // 2
        ci = shift[k, i]
        cj = shift[k, j]
        base = lp0 + k * tp
        acc = zero
        for b in range(nb):
            if skipped(sw, p0 + b, weighted):
                continue
            acc += ((X[p0 + b, i] - ci) * sc[base + b]) * (X[p0 + b, j] - cj)
        return acc

    @cuda.jit(device=True, inline="always")
    def sxx_tied(X, sw, weighted, shift, sc, lp0, tp, p0, nb, q, D):
        """sum_b x_bi x_bj, i <= j (sum_b w_b x_bi x_bj when weighted)."""
        i = tri_row(q, D)
        j = i + q - (i * (2 * D - i + 1)) // 2
        acc = zero
        for b in range(nb):
            if weighted:
                if skipped(sw, p0 + b, weighted):
                    continue
                acc += (sw[p0 + b] * X[p0 + b, i]) * X[p0 + b, j]
            else:
                acc += X[p0 + b, i] * X[p0 + b, j]
        return acc

    @cuda.jit(device=True, inline="always")
    def sxx_diag(X, sw, weighted, shift, sc, lp0, tp, p0, nb, q, D):
        """sum_b r_bk x_bi^2."""
        k = q // D
        i = q - k * D
        base = lp0 + k * tp
        acc = zero
        for b in range(nb):
            if skipped(sw, p0 + b, weighted):
                continue
            x = X[p0 + b, i]
            acc += sc[base + b] * (x * x)
        return acc

    # ------------------------------------------------------------------ E-step kernels
    def make_estep(maha, logdet, sxx_entry, per_component_prec, weighted):
        uk = 1 if per_component_prec else 0  # prec[k * uk]: tied shares prec[0]

        def estep(X, sample_weight, weights, means, prec, shift, dlog2pi, n_feat, scratch, partial):
            """Partial statistics of this block's tiles into partial[blockIdx]; scratch[blockIdx]
            holds log_det (K), log w (K) and a tile's log-probabilities (K, blockDim).
            ``sample_weight`` is read only when ``weighted`` (a constant of the build)."""
            N = X.shape[0]
            D = X.shape[1]
            K = means.shape[0]
            L = partial.shape[1]
            tid = cuda.threadIdx.x
            tp = cuda.blockDim.x
            blk = cuda.blockIdx.x
            n_blk = cuda.gridDim.x
            sc = scratch[blk]
            acc = partial[blk]
            lnorm = cuda.shared.array(_SHARED_POINTS, dtype)  # points' log-likelihoods
            lp0 = 2 * K
            n_nk_sx = K + K * D
            for k in range(tid, K, tp):
                sc[k] = logdet(prec, k * uk, D, n_feat)
                sc[K + k] = math.log(weights[k])
            for e in range(tid, L, tp):
                acc[e] = zero
            cuda.syncthreads()
            n_tiles = (N + tp - 1) // tp
            for tile in range(blk, n_tiles, n_blk):
                p0 = tile * tp
                nb = min(tp, N - p0)
                # a. log-probabilities, one (point, component) pair per thread
                for pair in range(tid, K * nb, tp):
                    k = pair // nb
                    b = pair - k * nb
                    if skipped(sample_weight, p0 + b, weighted):
                        m = zero  # the point takes no part: its coordinates are never read
                    else:
                        m = maha(X, p0 + b, means, prec, k, k * uk, D)
                    sc[lp0 + k * tp + b] = neg_half * (dlog2pi + m) + sc[k] + sc[K + k]
                cuda.syncthreads()
                # b. responsibilities and log-likelihood, one point per thread
                for b in range(tid, nb, tp):
                    mx = neg_inf
                    for k in range(K):
                        v = sc[lp0 + k * tp + b]
                        if v > mx:
                            mx = v
                    if not math.isfinite(mx):
                        mx = zero
                    s = zero
                    for k in range(K):
                        s += math.exp(sc[lp0 + k * tp + b] - mx)
                    ln = math.log(s) + mx
                    if weighted:  # r and log-likelihood times w; exactly 0 for weight 0
                        w = sample_weight[p0 + b]
                        if w > zero:
                            for k in range(K):
                                sc[lp0 + k * tp + b] = math.exp(sc[lp0 + k * tp + b] - ln) * w
                            lnorm[b] = ln * w
                        else:
                            for k in range(K):
                                sc[lp0 + k * tp + b] = zero
                            lnorm[b] = zero
                    else:
                        for k in range(K):
                            sc[lp0 + k * tp + b] = math.exp(sc[lp0 + k * tp + b] - ln)
                        lnorm[b] = ln
                cuda.syncthreads()
                # c. every entry of the statistics has one owner; points added in order
                for e in range(tid, L, tp):
                    s = zero
                    if e < K:
                        base = lp0 + e * tp
                        for b in range(nb):
                            s += sc[base + b]
                    elif e < n_nk_sx:
                        k = (e - K) // D
                        i = e - K - k * D
                        base = lp0 + k * tp
                        for b in range(nb):
                            s += sc[base + b] * X[p0 + b, i]
                    elif e < L - 1:
                        s = sxx_entry(
                            X, sample_weight, weighted, shift, sc, lp0, tp, p0, nb, e - n_nk_sx, D
                        )
                    else:
                        for b in range(nb):
                            s += lnorm[b]
                    acc[e] += s
                cuda.syncthreads()

        return estep

    def make_esteps(weighted):
        return {
            "full": make_estep(maha_tri, logdet_tri, sxx_full, True, weighted),
            "tied": make_estep(maha_tri, logdet_tri, sxx_tied, False, weighted),
            "diag": make_estep(maha_diag, logdet_diag, sxx_diag, True, weighted),
            "spherical": make_estep(maha_spherical, logdet_spherical, sxx_diag, True, weighted),
        }

    estep_py = make_esteps(False)
    estep_weighted_py = make_esteps(True)

    # ------------------------------------------------------------------ reduction
    def reduce(partial, K, D, n_sym, out):
        """out = [nk (K), sx (K*D), sxx, loglik]: the blocks' partial sums added in block
        order; with n_sym > 0, sxx is n_sym full D x D matrices rebuilt from upper triangles."""
        o = cuda.grid(1)
        n_out = out.shape[0]
        if o >= n_out:
            return
        n_nk_sx = K + K * D
        L = partial.shape[1]
        e = o
        if o == n_out - 1:
            e = L - 1
        elif o >= n_nk_sx and n_sym > 0:
            q = o - n_nk_sx
            m = q // (D * D)
            r = q - m * (D * D)
            i = r // D
            j = r - i * D
            if i > j:
                i, j = j, i
            e = n_nk_sx + m * ((D * (D + 1)) // 2) + (i * (2 * D - i + 1)) // 2 + (j - i)
        s = zero
        for g in range(partial.shape[0]):
            s += partial[g, e]
        out[o] = s

    return SimpleNamespace(
        estep_py=estep_py,
        estep={kind: cuda.jit(f) for kind, f in estep_py.items()},
        estep_weighted_py=estep_weighted_py,
        estep_weighted={kind: cuda.jit(f) for kind, f in estep_weighted_py.items()},
        reduce_py=reduce,
        reduce=cuda.jit(reduce),
    )


def _sxx_entries(covariance_type, K, D):
    """Entries of sxx in a block's partial sums (upper triangles for full and tied)."""
    tri = D * (D + 1) // 2
    return {"full": K * tri, "tied": tri}.get(covariance_type, K * D)


def _sxx_shape(covariance_type, K, D):
    return {"full": (K, D, D), "tied": (D, D)}.get(covariance_type, (K, D))


def _contiguous(x, xp):
    """x itself when C-contiguous, else a C-contiguous copy (the kernels index C layouts)."""
    return xp.ascontiguousarray(x) if hasattr(xp, "ascontiguousarray") else xp.asarray(x, copy=True)


def fit_stats(
    X,
    weights,
    means,
    prec_chol,
    covariance_type,
    *,
    shift,
    chunk_size=None,
    xp,
    sample_weight=None,
):
    """GPU E-step statistics over all of X (the reference's signature and results).

    ``chunk_size`` is ignored: the GPU works in tiles of ``BLOCK`` points, at most
    ``MAX_GRID`` blocks (fewer when K, D make the per-block partial sums large), two launches
    in all. Returns ``Stats(nk, sx, sxx, loglik, n, shift)`` in X's dtype.

    ``sample_weight`` (n,), optional, in X's namespace and dtype: a point of weight w counts as
    w copies of itself; ``n`` is then the total weight, a Python float (added in float64: one
    host synchronisation).
    """
    dtype = np.dtype(X.dtype)
    N, D = int(X.shape[0]), int(X.shape[1])
    K = int(means.shape[0])
    kernels = _kernels(dtype)
    tp = int(BLOCK)
    n_tiles = (N + tp - 1) // tp
    n_entries = K + K * D + _sxx_entries(covariance_type, K, D) + 1
    n_scratch = 2 * K + K * tp
    grid = max(1, min(n_tiles, MAX_GRID, SCRATCH_BUDGET // (n_entries + n_scratch)))
    X, weights, means = (_contiguous(a, xp) for a in (X, weights, means))
    # tied and spherical prec_chol as (1, D, D) and (K, 1): one kernel body per layout
    prec = _contiguous(prec_chol, xp)
    if covariance_type == "tied":
        prec = xp.reshape(prec, (1, D, D))
    elif covariance_type == "spherical":
        prec = xp.reshape(prec, (K, 1))
    # the shift is read by the full kernel only; the others get the means in its place
    shift_arg = _contiguous(shift, xp) if covariance_type == "full" else means
    if sample_weight is None:
        # the unweighted build never reads its sample_weight: any 1-D array of the dtype will do
        estep, sw, n = kernels.estep[covariance_type], weights, N
    else:
        estep, sw = kernels.estep_weighted[covariance_type], _contiguous(sample_weight, xp)
        n = float(xp.sum(sample_weight, dtype=xp.float64))
    scratch = xp.empty((grid, n_scratch), dtype=dtype)
    partial = xp.empty((grid, n_entries), dtype=dtype)
    launch(estep, grid, tp)(
        X,
        sw,
        weights,
        means,
        prec,
        shift_arg,
        dtype.type(D * _LOG_2PI),
        dtype.type(D),
        scratch,
        partial,
    )
    sxx_shape = _sxx_shape(covariance_type, K, D)
    n_sym = {"full": K, "tied": 1}.get(covariance_type, 0)
    n_out = K + K * D + math.prod(sxx_shape) + 1
    out = xp.empty((n_out,), dtype=dtype)
    launch(kernels.reduce, (n_out + tp - 1) // tp, tp)(partial, K, D, n_sym, out)
    start = K + K * D
    return Stats(
        out[:K],
        xp.reshape(out[K:start], (K, D)),
        xp.reshape(out[start : n_out - 1], sxx_shape),
        xp.reshape(out[n_out - 1 :], ()),
        n,
        shift,
    )


def _specs():
    """(name, python function, numba signature) of every kernel, float32 and float64."""
    specs = []
    prec_types = {"full": "{t}[:, :, ::1]", "tied": "{t}[:, :, ::1]"}
    for t in ("float32", "float64"):
        kernels = _kernels(np.dtype(t))
        for kind in COVARIANCE_TYPES:
            prec = prec_types.get(kind, "{t}[:, ::1]").format(t=t)
            signature = (
                f"void({t}[:, ::1], {t}[::1], {t}[::1], {t}[:, ::1], {prec}, {t}[:, ::1], {t}, "
                f"{t}, {t}[:, ::1], {t}[:, ::1])"
            )
            specs.append((f"estep_{kind}_{t}", kernels.estep_py[kind], signature))
            specs.append((f"estep_weighted_{kind}_{t}", kernels.estep_weighted_py[kind], signature))
        signature = f"void({t}[:, ::1], int64, int64, int64, {t}[::1])"
        specs.append((f"reduce_{t}", kernels.reduce_py, signature))
    return specs


# ``numba.cuda.compile_ptx(pyfunc, signature, cc=(9, 0))`` compiles each without a GPU.
PTX_SPECS = _specs()
