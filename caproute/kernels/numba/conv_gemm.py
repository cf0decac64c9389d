"""2-D convolution as cache-sized GEMMs through NumPy's BLAS, with Numba gathers and epilogue.

The batch is cut into chunks of images (tasks) small enough that a chunk's gathered patches
and output rows stay in cache (:func:`chunk_images`): the patches a task gathers are still in
cache when the matrix product reads them, and its output rows when the bias and the ReLU are
added in place. Per task:

- **1 x 1, stride 1, no padding**: no gather at all; the chunk's pixels are already the rows of
  the product (``(n * H * W, c_in) @ (c_in, c_out)``).
- **few taps** (``kh * kw * c_in`` up to :data:`FULL_IM2COL_MAX_K`, e.g. a first layer on a
  grey image): one im2col of the chunk (every tap), one product.
- **otherwise**: one product per kernel row, as the reference does: the patches of one row of
  the kernel (``kw`` taps, each a contiguous run of ``kw * c_in`` values of the NHWC input)
  are gathered, multiplied, and added to the sum of the rows before: ``kh`` times smaller
  patches than a full im2col, with the reference's K per product.

Zeros of the padding are written by the gather (no padded copy of the input). The bias and
the ReLU are one pass over the task's output while it is in cache (the last row's sum folded
into it). float32 stays float32: the products are the BLAS's ``sgemm`` (``dgemm``).

**Threads.** Where the BLAS's thread count can be read and set (threadpoolctl, which
scikit-learn installs), the tasks run on that many threads (the calling thread and a pool),
each taking the next task when it is done with one, and the BLAS runs one thread per product
for the duration of the call (restored after; concurrent calls share one limit). Each thread
then gathers, multiplies and finishes its own images, and a convolution is one
synchronisation, not one per product and gather: on a machine whose cores are also busy with
other work, a thread that gets less of its core simply does fewer tasks, where a
multithreaded product waits for its slowest thread at every call (on the 2-core machine
with other jobs running, parallel gathers between two-thread products made the paper
CapsNet's convolutions several times slower than NumPy's plain im2col). Without threadpoolctl
(or with the BLAS at one thread) the tasks run in the calling thread, with a multithreaded
BLAS and parallel gathers.
"""

from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import prange

from ._jit import njit_cached

#: Above this many values per patch a full im2col is too large; products go per kernel row.
FULL_IM2COL_MAX_K = 512
#: Bytes of gathered patches plus output rows of one task, with tasks on several threads and
#: in the calling thread alone (multithreaded products). Measured on the 2-core machine (paper
#: CapsNet, batch 100): 1.5, 3, 6 and 12 MiB tasks gave 480, 490, 520 and 470 images/s; the
#: patches of one kernel row stay in the core's share of the L3 cache, and the products are
#: large enough for the BLAS (one thread: 85% of its peak from 144 rows at K = 2304, 93% at
#: 576).
TASK_BYTES = 6 << 20
CHUNK_BYTES = 8 << 20
#: Product rows a task has at least where the batch allows.
MIN_ROWS_THREAD = 576
MIN_ROWS = 576


@njit_cached(parallel=True)
def _gather_parallel(x, n0, di0, ndi, kw, stride, pad_top, pad_left, cols):
    """cols[n, oy, ox, (t, dj, ci)] = x[n0 + n, oy*s + di0 + t - pad_top, ox*s + dj - pad_left,
    ci], zero outside the image. x (batch, H, W * C) NHWC with its last two axes merged; cols
    (nb, ho, wo, ndi * kw * C). Output rows in parallel."""
    for job in prange(cols.shape[0] * cols.shape[1]):
        _gather_rows(x, n0, di0, ndi, kw, stride, pad_top, pad_left, cols, job)


@njit_cached(nogil=True)
def _gather(x, n0, di0, ndi, kw, stride, pad_top, pad_left, cols):
    """:func:`_gather_parallel` in the calling thread, without the GIL."""
    for job in range(cols.shape[0] * cols.shape[1]):
        _gather_rows(x, n0, di0, ndi, kw, stride, pad_top, pad_left, cols, job)


@njit_cached(nogil=True)
def _gather_rows(x, n0, di0, ndi, kw, stride, pad_top, pad_left, cols, job):
    """One output row ``job = n * ho + oy`` of the gather."""
    _, ho, wo, width = cols.shape
    h = x.shape[1]
    c = width // (ndi * kw)
    w = x.shape[2] // c
    run = kw * c
    zero = cols.dtype.type(0)
    n = job // ho
    oy = job - n * ho
    img = n0 + n
    for ox in range(wo):
        c0 = ox * stride - pad_left
        for t in range(ndi):
            r = oy * stride + di0 + t - pad_top
            base = t * run
            if r < 0 or r >= h:
                for k in range(run):
                    cols[n, oy, ox, base + k] = zero
            elif c0 >= 0 and c0 + kw <= w:
                src = c0 * c
                for k in range(run):
                    cols[n, oy, ox, base + k] = x[img, r, src + k]
            else:
                for j in range(kw):
                    col = c0 + j
                    inside = 0 <= col < w
                    for ci in range(c):
                        cols[n, oy, ox, base + j * c + ci] = (
                            x[img, r, col * c + ci] if inside else zero
                        )


@njit_cached(nogil=True)
def _finish_row(out, add, bias, relu, r):
    c_out = out.shape[1]
    has_add = add.shape[0] > 0
    has_bias = bias.shape[0] > 0
    zero = out.dtype.type(0)
    for j in range(c_out):
        v = out[r, j]
        if has_add:
            v = v + add[r, j]
        if has_bias:
            v = v + bias[j]
        if relu and v < zero:
            v = zero
        out[r, j] = v


@njit_cached(parallel=True)
def _finish_parallel(out, add, bias, relu):
    """out = (out [+ add]) [+ bias], then max(., 0) where relu; in place, rows in parallel.
    ``add`` and ``bias`` may be empty (size 0) for none. NaN stays NaN under the ReLU."""
    for r in prange(out.shape[0]):
        _finish_row(out, add, bias, relu, r)


@njit_cached(nogil=True)
def _finish(out, add, bias, relu):
    """:func:`_finish_parallel` in the calling thread, without the GIL."""
    for r in range(out.shape[0]):
        _finish_row(out, add, bias, relu, r)


def chunk_images(batch, rows_per_image, k, c_out, itemsize, *, budget=None, min_rows=None):
    """Images per task: patches (rows x k) and output (rows x c_out) within ``budget`` bytes
    (:data:`CHUNK_BYTES`), at least ``min_rows`` (:data:`MIN_ROWS`) product rows where the
    batch has them."""
    budget = CHUNK_BYTES if budget is None else budget
    min_rows = MIN_ROWS if min_rows is None else min_rows
    per_image = rows_per_image * (k + c_out) * itemsize
    nb = max(1, budget // max(per_image, 1))
    nb = max(nb, -(-min_rows // max(rows_per_image, 1)))
    return int(min(batch, nb))


# -- threads --------------------------------------------------------------------------------
_LIMIT_LOCK = threading.Lock()
_limit_state = {"depth": 0, "limiter": None, "controller": None, "pid": None}
_pool_state = {"pool": None, "size": 0, "pid": None}


def _controller():
    """threadpoolctl's controller of the loaded BLAS libraries, or None without threadpoolctl."""
    if _limit_state["pid"] != os.getpid():
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _limit_state["controller"] = None
        else:
            _limit_state["controller"] = ThreadpoolController().select(user_api="blas")
        _limit_state["pid"] = os.getpid()
    return _limit_state["controller"]


def blas_threads():
    """The BLAS's thread count now (1 where it cannot be read or set)."""
    with _LIMIT_LOCK:
        if _limit_state["depth"]:  # a call of ours holds the BLAS at one thread
            return _limit_state["threads"]
        ctl = _controller()
        if ctl is None or not ctl.lib_controllers:
            return 1
        return max(int(lib.num_threads) for lib in ctl.lib_controllers)


class _OneBlasThread:
    """The BLAS at one thread while any call of ours is inside (counted: the first entry sets
    it, the last exit restores what was there)."""

    def __enter__(self):
        with _LIMIT_LOCK:
            if _limit_state["depth"] == 0:
                ctl = _controller()
                threads = max(int(lib.num_threads) for lib in ctl.lib_controllers)
                _limit_state["threads"] = threads
                _limit_state["limiter"] = ctl.limit(limits=1)
            _limit_state["depth"] += 1
        return self

    def __exit__(self, *exc):
        with _LIMIT_LOCK:
            _limit_state["depth"] -= 1
            if _limit_state["depth"] == 0:
                _limit_state["limiter"].restore_original_limits()
                _limit_state["limiter"] = None
        return False


def _pool(size):
    """The shared pool of helper threads (made again in a forked child, or larger)."""
    with _LIMIT_LOCK:
        if _pool_state["pid"] != os.getpid() or _pool_state["size"] < size:
            _pool_state["pool"] = ThreadPoolExecutor(size, thread_name_prefix="caproute-conv")
            _pool_state["size"] = size
            _pool_state["pid"] = os.getpid()
        return _pool_state["pool"]


def _run_tasks(n_tasks, work, threads):
    """``work(task, buffers)`` for every task, on ``threads`` threads (the caller among them),
    each taking the next task as it finishes one; ``buffers`` is a dict per thread."""
    counter = itertools.count()

    def worker():
        buffers = {}
        for task in iter(counter.__next__, None):
            if task >= n_tasks:
                return
            work(task, buffers)

    helpers = min(threads, n_tasks) - 1
    futures = [_pool(helpers).submit(worker) for _ in range(helpers)] if helpers > 0 else []
    try:
        worker()
    finally:
        for f in futures:
            f.result()


# -- the convolution --------------------------------------------------------------------------
def conv2d(x, weight, bias, *, stride, padding, relu=False, xp=None):
    """NHWC convolution with the reference's signature (``caproute.models.layers.conv.conv2d``):
    x (batch, H, W, c_in), weight (kh, kw, c_in, c_out), bias (c_out,) or None, padding an
    int or ((top, bottom), (left, right)); then ReLU where ``relu``. NumPy arrays."""
    kh, kw, c_in, c_out = (int(s) for s in weight.shape)
    if not isinstance(padding, tuple):
        padding = ((padding, padding), (padding, padding))
    (pt, pb), (pl, pr) = padding
    b, h, w = (int(s) for s in x.shape[:3])
    ho = (h + pt + pb - kh) // stride + 1
    wo = (w + pl + pr - kw) // stride + 1
    dtype = x.dtype
    out = np.empty((b, ho, wo, c_out), dtype=dtype)
    if b == 0:
        return out
    x = np.ascontiguousarray(x)
    weight = np.ascontiguousarray(weight, dtype=dtype)
    bias_arr = np.zeros(0, dtype) if bias is None else np.ascontiguousarray(bias, dtype=dtype)
    rows = ho * wo
    out2 = out.reshape(b * rows, c_out)
    direct = kh == 1 and kw == 1 and stride == 1 and not (pt or pb or pl or pr)
    full = kh * kw * c_in <= FULL_IM2COL_MAX_K
    k = 0 if direct else (kh if full else 1) * kw * c_in

    threads = blas_threads()
    if threads > 1:
        budget, min_rows = TASK_BYTES, MIN_ROWS_THREAD
    else:
        budget, min_rows = CHUNK_BYTES, MIN_ROWS
    nb = chunk_images(b, rows, k, c_out, dtype.itemsize, budget=budget, min_rows=min_rows)
    n_tasks = -(-b // nb)
    if threads > 1:
        # a multiple of the threads, of about equal sizes: no thread idles at the end (and no
        # product runs on the BLAS's own threads, whose workers would then spin for a while
        # after it, taking a core from the Numba kernels that follow: measured 2x slower)
        n_tasks = min(b, -(-n_tasks // threads) * threads)
        nb = -(-b // n_tasks)
        gather, finish = _gather, _finish
    else:
        gather, finish = _gather_parallel, _finish_parallel
    x3 = x.reshape(b, h, w * c_in)
    x2 = x.reshape(b * h * w, c_in) if direct else None
    none = np.zeros((0, c_out), dtype)
    epilogue = bias is not None or relu

    def work(task, buffers):
        n0 = task * b // n_tasks
        m = (task + 1) * b // n_tasks - n0
        o2 = out2[n0 * rows : (n0 + m) * rows]
        if direct:
            np.matmul(x2[n0 * rows : (n0 + m) * rows], weight.reshape(c_in, c_out), out=o2)
            if epilogue:
                finish(o2, none, bias_arr, relu)
            return
        if "cols" not in buffers:
            buffers["cols"] = np.empty((nb, ho, wo, k), dtype=dtype)
            buffers["tmp"] = None if full else np.empty((nb * rows, c_out), dtype=dtype)
        c = buffers["cols"][:m]
        c2 = c.reshape(m * rows, k)
        if full:
            gather(x3, n0, 0, kh, kw, stride, pt, pl, c)
            np.matmul(c2, weight.reshape(k, c_out), out=o2)
            if epilogue:
                finish(o2, none, bias_arr, relu)
            return
        t2 = buffers["tmp"][: m * rows]
        for di in range(kh):
            gather(x3, n0, di, 1, kw, stride, pt, pl, c)
            w2 = weight[di].reshape(k, c_out)
            if di == 0:
                np.matmul(c2, w2, out=o2)
                continue
            np.matmul(c2, w2, out=t2)
            if di < kh - 1:
                finish(o2, t2, bias_arr[:0], False)
            else:
                finish(o2, t2, bias_arr, relu)
        if kh == 1 and epilogue:
            finish(o2, none, bias_arr, relu)

    if threads > 1:
        with _OneBlasThread():
            _run_tasks(n_tasks, work, threads)
    else:
        buffers = {}
        for task in range(n_tasks):
            work(task, buffers)
    return out
