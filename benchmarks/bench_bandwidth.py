"""Memory bandwidth of this machine as the kernels see it: a plain Numba loop reading (a sum)
and writing (a fill) float32 arrays of growing size, split over the threads.

It answers one design question of the votes-fused routing kernel (``docs/performance.md``):
would a DigitCaps batch's votes (94 MB for 128 images in float32) stay in a cache if they were
stored once and read in each routing iteration? Where the rate at 94 MB is the rate at 680 MB,
they would go to memory. Not a test: run it by hand.

    python benchmarks/bench_bandwidth.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import numba
import numpy as np
from numba import njit, prange

SIZES_MB = (8, 24, 47, 94, 188, 680)


@njit(parallel=True, fastmath=True)
def _read(a, parts):
    n = a.size // parts
    out = np.zeros(parts, np.float32)
    for p in prange(parts):
        s = np.float32(0)
        for e in range(p * n, (p + 1) * n):
            s += a[e]
        out[p] = s
    return out.sum()


@njit(parallel=True)
def _write(a, parts, value):
    n = a.size // parts
    for p in prange(parts):
        for e in range(p * n, (p + 1) * n):
            a[e] = value


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    numba.set_num_threads(args.threads)
    print(f"threads={args.threads}, median of {args.repeat}")
    print("| MB | read GB/s | write GB/s |")
    print("| ---: | ---: | ---: |")
    for mb in SIZES_MB:
        a = np.ones(mb * 2**20 // 4, np.float32)
        _read(a, args.threads)
        _write(a, args.threads, np.float32(1.0))
        reads, writes = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            _read(a, args.threads)
            t1 = time.perf_counter()
            _write(a, args.threads, np.float32(2.0))
            t2 = time.perf_counter()
            reads.append(t1 - t0)
            writes.append(t2 - t1)
        gb = mb / 1024
        read, write = gb / statistics.median(reads), gb / statistics.median(writes)
        print(f"| {mb} | {read:.1f} | {write:.1f} |")


if __name__ == "__main__":
    main()
