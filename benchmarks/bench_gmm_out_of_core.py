"""GaussianMixture on data stored on disk: peak resident memory and throughput per EM
iteration, against the in-memory Numba fit of the same data.

The data (N x D float32, blobs) are written to a raw file once, 64 MiB at a time. Two fresh
subprocesses, alternating ``--repeat`` times, fit the same mixture from the same initial
parameters for ``--iters`` EM iterations: one from ``np.memmap`` of the file (read chunk by
chunk with plain file reads), one from the whole array loaded into memory. Each prints its
seconds per iteration and its peak resident set (VmHWM: the whole process, Python, NumPy,
Numba and scikit-learn included). Points per second per iteration are N / seconds.

    python benchmarks/bench_gmm_out_of_core.py                 # N = 5e7, D = 8, K = 8
    python benchmarks/bench_gmm_out_of_core.py --n 1e7 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np


def write_data(path, N, D, K, seed=0):
    rng = np.random.RandomState(seed)
    centres = (rng.randn(K, D) * 4).astype(np.float32)
    with open(path, "wb") as f:
        for start in range(0, N, 1 << 21):
            m = min(N, start + (1 << 21)) - start
            part = centres[rng.randint(K, size=m)] + rng.randn(m, D).astype(np.float32)
            f.write(part.astype(np.float32).tobytes())
    np.save(path + ".centres.npy", centres)


def vm(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def child(mode, path, N, D, K, iters, threads):
    import numba
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)
    numba.set_num_threads(threads)
    warnings.simplefilter("ignore")
    from caproute.mixture import GaussianMixture

    centres = np.load(path + ".centres.npy")
    inits = {
        "weights_init": np.full(K, 1.0 / K),
        "means_init": centres,
        "precisions_init": np.stack([np.eye(D)] * K),
    }
    # warm-up (compiles, or loads the cached kernels) on a little data
    X = np.memmap(path, dtype=np.float32, mode="r", shape=(N, D))
    GaussianMixture(K, max_iter=1, **inits).fit(np.array(X[:65536]))
    if mode == "memory":
        X = np.array(X)  # the whole array in memory
    gm = GaussianMixture(K, max_iter=iters, tol=0.0, **inits)
    t0 = time.perf_counter()
    gm.fit(X)
    seconds = (time.perf_counter() - t0) / iters
    return {"seconds": seconds, "peak_rss": vm("VmHWM"), "lower_bound": gm.lower_bound_}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=float, default=5e7)
    parser.add_argument("--d", type=int, default=8)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--path", default="/tmp/caproute-bench/gmm_points.f32")
    parser.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, path, N, D, K, iters, threads = args.child
        out = child(mode, path, int(N), int(D), int(K), int(iters), int(threads))
        print(json.dumps(out))
        return
    N, D, K = int(args.n), args.d, args.k
    os.makedirs(os.path.dirname(args.path), exist_ok=True)
    if not os.path.exists(args.path) or os.path.getsize(args.path) != N * D * 4:
        print(f"writing {N * D * 4 / 2**30:.2f} GiB to {args.path} ...", flush=True)
        write_data(args.path, N, D, K)
    results = {"disk": [], "memory": []}
    for _ in range(args.repeat):
        for mode in ("disk", "memory"):
            cmd = [sys.executable, __file__, "--child", mode, args.path, str(N), str(D), str(K)]
            cmd += [str(args.iters), str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"N = {N:.0e}, D = {D}, K = {K}, float32, full covariance, {args.threads} threads")
    print(f"{args.iters} EM iterations per fit, medians of {args.repeat} alternating runs\n")
    print("| data | s / EM iteration | Mpoints / s | peak RSS of the process (MiB) |")
    print("| --- | --- | --- | --- |")
    med = {}
    for mode, label in (("disk", "on disk (np.memmap)"), ("memory", "in memory")):
        s = statistics.median(r["seconds"] for r in results[mode])
        peak = statistics.median(r["peak_rss"] for r in results[mode])
        med[mode] = s
        print(f"| {label} | {s:.3f} | {N / s / 1e6:.1f} | {peak / 2**20:.0f} |")
    lb = {m: results[m][0]["lower_bound"] for m in results}
    print(f"\nthroughput on disk / in memory: {med['memory'] / med['disk']:.2f}")
    print(f"lower bounds: disk {lb['disk']:.10f}, memory {lb['memory']:.10f}")


if __name__ == "__main__":
    main()
