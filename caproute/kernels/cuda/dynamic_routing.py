"""GPU dynamic routing (numba-cuda): one launch per call, every routing iteration inside it.

Layout of the work: one block per sample (blocks stride over the batch when it exceeds
``GRID_LIMIT``), the block's threads over the children. Per iteration, one pass per child fuses

1. the agreement update with the previous parents, ``b_ij += u_hat_ij . v_j``,
2. the softmax over parents (max-shifted; the leaky orphan has logit 0),
3. the child's contribution ``c_ij u_hat_ij`` to the thread's partial sums of ``s``,

then the block adds the per-thread partial sums in a fixed order (no atomics, no shuffles: the
same bits on every run) and squashes the parents. The child's votes are loaded twice in that
pass (agreement, then contribution, a few hundred bytes apart, so the second load hits L1);
the batch's votes are never copied. The partial sums, the logits and the parents live in global
scratch, so any n_in, n_out and dim work without a shared-memory limit.

:func:`dense_routing` runs the same kernel with each vote computed on the fly from ``W`` and
``u`` (``W[i, j] @ u[b, i]``): no (batch, n_in, n_out, out_dim) tensor is ever made.

Entry points have the reference's signatures (``caproute.routing._dynamic_math``), take arrays
of ``xp`` (CuPy on a GPU, NumPy in the CUDA simulator) and validate nothing.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numba
import numpy as np
from numba import cuda

from ._launch import launch, per_dtype

__all__ = ["BLOCK_SIZE", "GRID_LIMIT", "PTX_SPECS", "dense_routing", "dynamic_routing"]

BLOCK_SIZE = 128  # most threads per block (children per pass); tests lower it for the simulator
GRID_LIMIT = 1024  # most blocks per launch: bounds the scratch; blocks loop over the samples
WARP = 32
REDUCE_CHUNK = 16  # partial sums added per thread in the first stage of the block reduction
# A child's votes (n_out * dim values) are staged in the thread's local memory when they fit, so
# that each iteration reads them from global memory once: for the agreement with the previous
# parents, then from the local copy for the child's share of the new parents' sums.
LOCAL_VOTES = 256


@cuda.jit(device=True, inline="always")
def reduce_partials(P, slot, rows):
    """``P[slot, k, 0] = sum_t P[slot, k, t]`` for k < rows, t < blockDim.x, in a fixed order:
    chunks of REDUCE_CHUNK consecutive t first (each chunk's sum left in its first entry), then
    the chunk sums in order. Called by every thread of the block; ends synchronised."""
    tid = cuda.threadIdx.x
    T = cuda.blockDim.x
    n_chunks = (T + REDUCE_CHUNK - 1) // REDUCE_CHUNK
    for task in range(tid, rows * n_chunks, T):
        k = task // n_chunks
        t0 = (task - k * n_chunks) * REDUCE_CHUNK
        t1 = min(t0 + REDUCE_CHUNK, T)
        acc = P[slot, k, t0]
        for t in range(t0 + 1, t1):
            acc += P[slot, k, t]
        P[slot, k, t0] = acc
    cuda.syncthreads()
    for k in range(tid, rows, T):
        acc = P[slot, k, 0]
        for g in range(1, n_chunks):
            acc += P[slot, k, g * REDUCE_CHUNK]
        P[slot, k, 0] = acc
    cuda.syncthreads()


def threads_for(n_children, block_size):
    """Threads per block: ``block_size``, or fewer (whole warps) for fewer children."""
    return min(block_size, max(WARP, -(-n_children // WARP) * WARP))


@per_dtype
def _kernels(dtype):
    zero = dtype(0)
    one = dtype(1)
    neg_inf = dtype(-np.inf)
    local_type = numba.from_dtype(np.dtype(dtype))

    @cuda.jit(device=True, inline="always")
    def vote_given(X, W, n, i, j, d):
        """u_hat[n, i, j, d] read from the votes tensor X (W unused)."""
        return X[n, i, j, d]

    @cuda.jit(device=True, inline="always")
    def vote_dense(X, W, n, i, j, d):
        """u_hat[n, i, j, d] = W[i, j, d, :] . u[n, i, :] with X = u (batch, n_in, in_dim)."""
        acc = zero
        for k in range(X.shape[2]):
            acc += W[i, j, d, k] * X[n, i, k]
        return acc

    def make_router(vote):
        @cuda.jit(device=True, inline="always")
        def route(X, W, n_iter, bias, has_bias, leaky, eps, b0, has_b0, v, c, b, P):
            """Route the samples of this block. v (batch, n_out * dim) ends with the parents,
            c (batch, n_in, n_out) with the last couplings; b (grid, n_in, n_out) holds the
            logits, P (grid, >= n_out * dim, blockDim.x) the per-thread partial sums of s."""
            tid = cuda.threadIdx.x
            T = cuda.blockDim.x
            slot = cuda.blockIdx.x
            batch = c.shape[0]
            n_in = c.shape[1]
            n_out = c.shape[2]
            dim = v.shape[1] // n_out
            K = n_out * dim
            staged = K <= LOCAL_VOTES
            u_loc = cuda.local.array(LOCAL_VOTES, local_type)
            for n in range(slot, batch, cuda.gridDim.x):
                for it in range(n_iter):
                    if tid >= n_in:  # no child: this thread's partial sums are zero
                        for k in range(K):
                            P[slot, k, tid] = zero
                    for i in range(tid, n_in, T):
                        # logits (updated with the previous parents) and their max
                        m = neg_inf
                        for j in range(n_out):
                            if it == 0:
                                bij = b0[n, i, j] if has_b0 else zero
                            else:
                                acc = zero
                                for d in range(dim):
                                    u = vote(X, W, n, i, j, d)
                                    if staged:
                                        u_loc[j * dim + d] = u
                                    acc += u * v[n, j * dim + d]
                                bij = b[slot, i, j] + acc
                            b[slot, i, j] = bij
                            if bij > m:
                                m = bij
                        # softmax over parents; the leaky orphan's logit is 0
                        if leaky and m < zero:
                            m = zero
                        z = math.exp(-m) if leaky else zero
                        for j in range(n_out):
                            e = math.exp(b[slot, i, j] - m)
                            c[n, i, j] = e
                            z += e
                        inv = one / z
                        # the child's share of every parent's s, into this thread's partials
                        for j in range(n_out):
                            cij = c[n, i, j] * inv
                            c[n, i, j] = cij
                            for d in range(dim):
                                if staged and it > 0:  # read in this iteration already
                                    u = u_loc[j * dim + d]
                                else:
                                    u = vote(X, W, n, i, j, d)
                                x = cij * u
                                if i == tid:  # this thread's first child
                                    P[slot, j * dim + d, tid] = x
                                else:
                                    P[slot, j * dim + d, tid] += x
                    cuda.syncthreads()
                    reduce_partials(P, slot, K)
                    # v_j = squash(s_j + bias_j), one thread per parent
                    for j in range(tid, n_out, T):
                        n2 = zero
                        for d in range(dim):
                            s = P[slot, j * dim + d, 0]
                            if has_bias:
                                s += bias[j, d]
                            v[n, j * dim + d] = s
                            n2 += s * s
                        scale = n2 / ((one + n2) * math.sqrt(n2 + eps))
                        for d in range(dim):
                            v[n, j * dim + d] *= scale
                    cuda.syncthreads()

        return route

    route_given = make_router(vote_given)
    route_dense = make_router(vote_dense)

    def dynamic_kernel(u_hat, n_iter, bias, has_bias, leaky, eps, b0, has_b0, v, c, b, P):
        route_given(u_hat, u_hat, n_iter, bias, has_bias, leaky, eps, b0, has_b0, v, c, b, P)

    def dense_kernel(u, W, n_iter, bias, has_bias, leaky, eps, b0, has_b0, v, c, b, P):
        route_dense(u, W, n_iter, bias, has_bias, leaky, eps, b0, has_b0, v, c, b, P)

    return SimpleNamespace(
        dynamic_py=dynamic_kernel,
        dense_py=dense_kernel,
        dynamic=cuda.jit(dynamic_kernel),
        dense=cuda.jit(dense_kernel),
    )


def _contiguous(x, dtype, xp):
    if x.dtype != dtype:
        x = xp.astype(x, dtype)
    return xp.ascontiguousarray(x) if hasattr(xp, "ascontiguousarray") else xp.asarray(x, copy=True)


def _launch(name, X, W, n_iter, bias, leaky, eps, initial_logits, n_in, n_out, dim, xp):
    dtype = X.dtype
    batch = X.shape[0]
    has_bias = bias is not None
    bias = _contiguous(bias, dtype, xp) if has_bias else xp.zeros((1, 1), dtype=dtype)
    has_b0 = initial_logits is not None
    if has_b0:
        b0 = _contiguous(initial_logits, dtype, xp)
    else:
        b0 = xp.zeros((1, 1, 1), dtype=dtype)
    v = xp.empty((batch, n_out * dim), dtype=dtype)
    c = xp.empty((batch, n_in, n_out), dtype=dtype)
    if batch and n_out:
        threads = threads_for(n_in, BLOCK_SIZE)
        grid = min(batch, GRID_LIMIT)
        b = xp.empty((grid, n_in, n_out), dtype=dtype)
        P = xp.empty((grid, max(n_out * dim, 1), threads), dtype=dtype)
        kernel = getattr(_kernels(dtype), name)
        args = (int(n_iter), bias, has_bias, bool(leaky), np.dtype(dtype).type(eps), b0, has_b0)
        if W is None:
            launch(kernel, grid, threads)(X, *args, v, c, b, P)
        else:
            launch(kernel, grid, threads)(X, W, *args, v, c, b, P)
    return xp.reshape(v, (batch, n_out, dim)), c


def dynamic_routing(u_hat, *, n_iter, bias, leaky, eps, initial_logits=None, xp):
    """GPU dynamic routing with the reference's signature; returns ``(v, c)``.

    u_hat (batch, n_in, n_out, dim); bias None or (n_out, dim); initial_logits None or
    (batch, n_in, n_out). v (batch, n_out, dim), c (batch, n_in, n_out): the last couplings.
    """
    u_hat = _contiguous(u_hat, u_hat.dtype, xp)
    _, n_in, n_out, dim = u_hat.shape
    return _launch(
        "dynamic", u_hat, None, n_iter, bias, leaky, eps, initial_logits, n_in, n_out, dim, xp
    )


def dense_routing(u, W, *, n_iter, bias, leaky, eps, initial_logits=None, xp):
    """GPU votes-and-routing: u (batch, n_in, in_dim), W (n_in, n_out, out_dim, in_dim);
    the votes ``W[i, j] @ u[b, i]`` are computed where they are used. Returns ``(v, c)``."""
    u = _contiguous(u, u.dtype, xp)
    W = _contiguous(W, u.dtype, xp)
    n_in, n_out, out_dim, _ = W.shape
    return _launch(
        "dense", u, W, n_iter, bias, leaky, eps, initial_logits, n_in, n_out, out_dim, xp
    )


def array_sig(dtype_name, ndim):
    """Numba's name for a C-contiguous array type: ``array_sig("float32", 2)`` is
    ``"float32[:, ::1]"``, the type a C-contiguous CuPy array gets at launch."""
    return f"{dtype_name}[{', '.join([':'] * (ndim - 1) + ['::1'])}]"


def _specs():
    specs = []
    for name in ("float32", "float64"):
        k = _kernels(np.dtype(name))
        a2, a3, a4 = (array_sig(name, ndim) for ndim in (2, 3, 4))
        tail = f"int64, {a2}, boolean, boolean, {name}, {a3}, boolean, {a2}, {a3}, {a3}, {a3}"
        specs.append(("dynamic_routing", k.dynamic_py, f"void({a4}, {tail})"))
        specs.append(("dense_routing", k.dense_py, f"void({a3}, {a4}, {tail})"))
    return specs


# (name, python function, numba signature) for every kernel here, in float32 and float64:
# ``numba.cuda.compile_ptx(pyfunc, signature, cc=(9, 0))`` compiles each without a GPU.
PTX_SPECS = _specs()
