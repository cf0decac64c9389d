"""This machine's measured GEMM peak (float32 and float64), for the benchmarks' GFLOP/s columns.

A benchmark that prints the GFLOP/s of the work an operation needs says how close it comes to
the limit by printing, next to it, what the same machine does at its best: a large square
matrix product through NumPy's BLAS (``A @ B``, ``2 n**3`` flops), at the thread count the
benchmark runs at, measured in the same run. Each figure is the median of ``repeat`` timed
products after one untimed warm-up (the BLAS starts its threads and touches the output there).
The BLAS thread count is set for the measurement only (threadpoolctl) and restored after.

Use it from a benchmark in this folder (run as a script, so this file is importable by name,
as ``_memory`` is)::

    from _peak import gemm_peak, describe_peak, percent_of_peak

    peak = gemm_peak(threads=2)  # {"float32": GFLOP/s, "float64": GFLOP/s}
    print(describe_peak(peak, threads=2))
    # GEMM peak (NumPy BLAS: openblas SkylakeX, 2 threads, n=2048, median of 5):
    # float32 405.3 GFLOP/s, float64 193.3 GFLOP/s        (the 2-core machine, measured)
    gflops = flops / seconds / 1e9  # the work the measured operation needs, per second
    print(f"{gflops:.1f} GFLOP/s ({percent_of_peak(gflops, peak, 'float32')} of peak)")

``python benchmarks/_peak.py [--threads N]`` prints both peaks.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

__all__ = ["DTYPES", "describe_peak", "gemm_gflops", "gemm_peak", "percent_of_peak"]

DTYPES = ("float32", "float64")
#: The matrix size: large enough that the BLAS runs at its peak (its blocking amortised, the
#: threads busy), small enough for a product of a few tenths of a second on 2 cores.
DEFAULT_N = 2048


def _blas_limits(threads):
    """A context manager that sets the BLAS thread count (None: leave it as it is)."""
    from contextlib import nullcontext

    if threads is None:
        return nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=int(threads), user_api="blas")


def gemm_gflops(dtype, *, threads=None, n=DEFAULT_N, repeat=5):
    """Median GFLOP/s of ``A @ B`` for square ``n x n`` matrices of ``dtype`` through NumPy's
    BLAS with ``threads`` BLAS threads (None: the BLAS's current count)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    c = np.empty((n, n), dtype=dtype)
    flops = 2.0 * n**3
    times = []
    with _blas_limits(threads):
        np.matmul(a, b, out=c)  # warm-up: thread start, first touch of c
        for _ in range(repeat):
            t0 = time.perf_counter()
            np.matmul(a, b, out=c)
            times.append(time.perf_counter() - t0)
    return flops / statistics.median(times) / 1e9


def gemm_peak(threads=None, *, n=DEFAULT_N, repeat=5):
    """``{"float32": GFLOP/s, "float64": GFLOP/s}``: the measured SGEMM and DGEMM peak."""
    return {dt: gemm_gflops(dt, threads=threads, n=n, repeat=repeat) for dt in DTYPES}


def _blas_name():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "NumPy BLAS"
    for info in threadpool_info():
        if info.get("user_api") == "blas":
            arch = info.get("architecture")
            return f"NumPy BLAS: {info.get('internal_api')}{' ' + arch if arch else ''}"
    return "NumPy BLAS"


def describe_peak(peak, *, threads=None, n=DEFAULT_N, repeat=5):
    """One line for a benchmark's header: both peaks and how they were measured."""
    count = "default threads" if threads is None else f"{threads} thread{'s' * (threads != 1)}"
    where = f"{_blas_name()}, {count}"
    return f"GEMM peak ({where}, n={n}, median of {repeat}): " + ", ".join(
        f"{dt} {peak[dt]:.1f} GFLOP/s" for dt in DTYPES if dt in peak
    )


def percent_of_peak(gflops, peak, dtype):
    """``gflops`` as a percentage of the ``dtype`` peak, e.g. ``"62%"``."""
    return f"{100.0 * gflops / peak[str(np.dtype(dtype))]:.0f}%"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="BLAS threads")
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="matrix size")
    parser.add_argument("--repeat", type=int, default=5, help="timed products per dtype")
    args = parser.parse_args()
    peak = gemm_peak(args.threads, n=args.n, repeat=args.repeat)
    print(describe_peak(peak, threads=args.threads, n=args.n, repeat=args.repeat))


if __name__ == "__main__":
    main()
