"""GPU EM routing (numba-cuda): one launch per call, every EM iteration inside it.

Layout of the work: one block per sample (blocks stride over the batch when it exceeds
``GRID_LIMIT``), the block's threads over the children. Per iteration:

1. one pass per child: its E-step in log space (from the previous M-step's means, inverse
   variances and log-activations; the initial assignments in the first iteration), fused with
   its contribution ``R_ij a_i`` and ``R_ij a_i V_ij`` to the thread's partial M-step sums;
2. a fixed-order block reduction of the partial sums (no atomics, no shuffles), the means;
3. one pass per child for the centred variances ``sum_i R_ij a_i (V_ij - mu_j)^2`` (the
   reference's two-pass formula, which keeps float32 accurate where ``E[V^2] - mu^2`` cancels),
   a second reduction, then per parent: the floored variance, the cost, the activation logit and
   what the next E-step needs.

The E-step after the last M-step is skipped, and R ends with the assignments of the last M-step,
as in the reference (``caproute.routing._em_math.em_routing``). The partial sums and the
parents' statistics live in global scratch, so any n_in, n_out and pose_dim work.

The entry point has the reference's signature, takes arrays of ``xp`` (CuPy on a GPU, NumPy in
the CUDA simulator) and validates nothing.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
from numba import cuda

from . import dynamic_routing as _dr
from ._launch import launch, per_dtype

__all__ = ["BLOCK_SIZE", "GRID_LIMIT", "PTX_SPECS", "em_routing"]

BLOCK_SIZE = 128  # most threads per block (children per pass); tests lower it for the simulator
GRID_LIMIT = 1024  # most blocks per launch: bounds the scratch; blocks loop over the samples
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@per_dtype
def _kernels(dtype):
    zero = dtype(0)
    one = dtype(1)
    half = dtype(0.5)
    neg_inf = dtype(-np.inf)
    reduce_partials = _dr.reduce_partials

    @cuda.jit(device=True, inline="always")
    def log_sigmoid(x):
        if x >= zero:
            return -math.log1p(math.exp(-x))
        return x - math.log1p(math.exp(x))

    def em_kernel(
        V,
        a,
        beta_u,
        beta_a,
        lam,
        min_var,
        eps,
        r_init,
        half_d_log_2pi,
        R0,
        has_r0,
        mu,
        act,
        R,
        S,
        P,
    ):
        """V (batch, n_in, n_out, D), a (batch, n_in), beta_u (n_out, D), beta_a (n_out,),
        lam (n_iter,); outputs mu (batch, n_out * D), act (batch, n_out), R (batch, n_in, n_out).
        Scratch: S (grid, 2 + D, n_out) holds sum_j R_ij a_i, the E-step's constant and
        1 / (2 var); P (grid, >= n_out * (D + 1), blockDim.x) the per-thread partial sums.
        ``r_init`` = 1 / n_out, ``half_d_log_2pi`` = D log(2 pi) / 2."""
        tid = cuda.threadIdx.x
        T = cuda.blockDim.x
        slot = cuda.blockIdx.x
        batch = R.shape[0]
        n_in = R.shape[1]
        n_out = R.shape[2]
        dim = V.shape[3]
        K = n_out * dim
        n_iter = lam.shape[0]
        for n in range(slot, batch, cuda.gridDim.x):
            for it in range(n_iter):
                # 1. per child: E-step (or the initial R), then its share of the M-step's sums
                if tid >= n_in:
                    for k in range(K + n_out):
                        P[slot, k, tid] = zero
                for i in range(tid, n_in, T):
                    first = i == tid
                    if it == 0:
                        for j in range(n_out):
                            R[n, i, j] = R0[n, i, j] if has_r0 else r_init
                        inv = one
                    else:
                        m = neg_inf
                        for j in range(n_out):
                            q = zero
                            for h in range(dim):
                                dv = V[n, i, j, h] - mu[n, j * dim + h]
                                q += dv * dv * S[slot, 2 + h, j]
                            lp = S[slot, 1, j] - q
                            R[n, i, j] = lp
                            if lp > m:
                                m = lp
                        z = zero
                        for j in range(n_out):
                            e = math.exp(R[n, i, j] - m)
                            R[n, i, j] = e
                            z += e
                        inv = one / z
                    ai = a[n, i]
                    for j in range(n_out):
                        r = R[n, i, j] * inv
                        R[n, i, j] = r
                        ra = r * ai
                        if first:
                            P[slot, K + j, tid] = ra
                        else:
                            P[slot, K + j, tid] += ra
                        for h in range(dim):
                            x = ra * V[n, i, j, h]
                            if first:
                                P[slot, j * dim + h, tid] = x
                            else:
                                P[slot, j * dim + h, tid] += x
                cuda.syncthreads()
                # 2. sums of the block; means
                reduce_partials(P, slot, K + n_out)
                for j in range(tid, n_out, T):
                    sum_r = P[slot, K + j, 0]
                    S[slot, 0, j] = sum_r
                    den = max(sum_r, eps)
                    for h in range(dim):
                        mu[n, j * dim + h] = P[slot, j * dim + h, 0] / den
                cuda.syncthreads()
                # 3. per child: centred squared deviations; then per parent: var, cost, logit
                if tid >= n_in:
                    for k in range(K):
                        P[slot, k, tid] = zero
                for i in range(tid, n_in, T):
                    ai = a[n, i]
                    for j in range(n_out):
                        ra = R[n, i, j] * ai
                        for h in range(dim):
                            dv = V[n, i, j, h] - mu[n, j * dim + h]
                            x = ra * dv * dv
                            if i == tid:
                                P[slot, j * dim + h, tid] = x
                            else:
                                P[slot, j * dim + h, tid] += x
                cuda.syncthreads()
                reduce_partials(P, slot, K)
                lam_it = lam[it]
                for j in range(tid, n_out, T):
                    sum_r = S[slot, 0, j]
                    den = max(sum_r, eps)
                    cost = zero
                    half_log_det = zero
                    for h in range(dim):
                        var = max(P[slot, j * dim + h, 0] / den + min_var, eps)
                        half_log_var = half * math.log(var)
                        cost += beta_u[j, h] + half_log_var
                        half_log_det += half_log_var
                        S[slot, 2 + h, j] = half / var
                    log_a = log_sigmoid(lam_it * (beta_a[j] - cost * sum_r))
                    S[slot, 1, j] = log_a - half_log_det - half_d_log_2pi
                    if it + 1 == n_iter:
                        act[n, j] = math.exp(log_a)
                cuda.syncthreads()

    return SimpleNamespace(em_py=em_kernel, em=cuda.jit(em_kernel))


def _contiguous(x, dtype, xp):
    if x.dtype != dtype:
        x = xp.astype(x, dtype)
    return xp.ascontiguousarray(x) if hasattr(xp, "ascontiguousarray") else xp.asarray(x, copy=True)


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
    xp,
):
    """GPU EM routing with the reference's signature; returns ``(pose, activation, R)``.

    votes (batch, n_in, n_out, D), a_in (batch, n_in), beta_u (n_out, D), beta_a (n_out,),
    inverse_temperature: one float per iteration; initial_assignments None (uniform) or
    (batch, n_in, n_out). R is the assignment used by the last M-step.
    """
    dtype = votes.dtype
    scalar = np.dtype(dtype).type
    votes = _contiguous(votes, dtype, xp)
    batch, n_in, n_out, dim = votes.shape
    has_r0 = initial_assignments is not None
    if has_r0:
        R0 = _contiguous(initial_assignments, dtype, xp)
    else:
        R0 = xp.zeros((1, 1, 1), dtype=dtype)
    lam = xp.asarray([float(x) for x in inverse_temperature], dtype=dtype)
    mu = xp.empty((batch, n_out * dim), dtype=dtype)
    act = xp.empty((batch, n_out), dtype=dtype)
    R = xp.empty((batch, n_in, n_out), dtype=dtype)
    if batch and n_out:
        threads = _dr.threads_for(n_in, BLOCK_SIZE)
        grid = min(batch, GRID_LIMIT)
        S = xp.empty((grid, 2 + dim, n_out), dtype=dtype)
        P = xp.empty((grid, n_out * (dim + 1), threads), dtype=dtype)
        launch(_kernels(dtype).em, grid, threads)(
            votes,
            _contiguous(a_in, dtype, xp),
            _contiguous(beta_u, dtype, xp),
            _contiguous(beta_a, dtype, xp),
            lam,
            scalar(min_var),
            scalar(eps),
            scalar(1.0 / n_out),
            scalar(dim * _HALF_LOG_2PI),
            R0,
            has_r0,
            mu,
            act,
            R,
            S,
            P,
        )
    return xp.reshape(mu, (batch, n_out, dim)), act, R


def _specs():
    specs = []
    for name in ("float32", "float64"):
        k = _kernels(np.dtype(name))
        a1, a2, a3, a4 = (_dr.array_sig(name, ndim) for ndim in (1, 2, 3, 4))
        sig = (
            f"void({a4}, {a2}, {a2}, {a1}, {a1}, {name}, {name}, {name}, {name}, {a3}, boolean, "
            f"{a2}, {a2}, {a3}, {a3}, {a3})"
        )
        specs.append(("em_routing", k.em_py, sig))
    return specs


# (name, python function, numba signature) for every kernel here, in float32 and float64:
# ``numba.cuda.compile_ptx(pyfunc, signature, cc=(9, 0))`` compiles each without a GPU.
PTX_SPECS = _specs()
