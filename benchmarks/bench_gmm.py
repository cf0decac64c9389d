"""GaussianMixture: seconds per EM iteration and peak memory, scikit-learn against caproute.

Every implementation fits the same data from the same initial parameters (weights, means and
precisions given) for the same number of iterations (tol=0), in one run, with the same thread
count. Seconds per iteration = (fit with max_iter=1+m - fit with max_iter=1) / m (scikit-learn
1.9 cannot fit with max_iter=0 when all initial parameters are given), median over
--repeat. The final means are compared with scikit-learn's. Peak extra memory is the growth of
the resident set during one fit (VmHWM minus VmRSS before it) in a fresh subprocess, after a
warm-up fit on small data. Not a test: run it by hand.

    python benchmarks/bench_gmm.py --threads 2                  # the speed table
    python benchmarks/bench_gmm.py --memory-case                # N = 1e7, D = 8, K = 16
    python benchmarks/bench_gmm.py --gpu                        # CuPy backend vs scikit-learn
    python benchmarks/bench_gmm.py --covariance full --impls "caproute numba"  # a subset

Every case runs in float64 and float32 (``--dtypes``); a float32 row's "x float64" is its speed
against the same implementation's float64 row of the same case. "GFLOP/s" counts the work a
full or tied EM iteration needs, not what an implementation does: per point and component the
Mahalanobis product with the triangular precision factor (``D (D + 1) / 2`` multiply-adds) and,
for full, the accumulation of the covariance's upper triangle (``D (D + 1) / 2`` more); tied
accumulates ``X^T X`` once per point. "% peak" divides it by the machine's GEMM peak of the
same dtype and thread count, measured in the same run (``_peak.py``: NumPy's matmul, median of
five).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _memory import peak_growth
from _peak import describe_peak, gemm_peak

CASES = [
    (1_000_000, 8, 8, "full"),
    (100_000, 16, 16, "full"),
    (1_000_000, 8, 8, "diag"),
    (100_000, 16, 16, "diag"),
    (1_000_000, 8, 8, "spherical"),
    (100_000, 16, 16, "spherical"),
    (1_000_000, 8, 8, "tied"),
    (100_000, 16, 16, "tied"),
]


def make_data(N, D, K, seed=0, dtype=np.float64):
    rng = np.random.RandomState(seed)
    centres = rng.randn(K, D) * 4
    X = centres[rng.randint(K, size=N)] + rng.randn(N, D)
    return X.astype(dtype, copy=False), centres


def needed_flops(N, D, K, covariance_type):
    """FLOPs one EM iteration needs (see the module's docstring), or None."""
    tri = D * (D + 1)  # 2 x the multiply-adds of a triangular product or an upper triangle
    if covariance_type == "full":
        return N * K * 2 * tri
    if covariance_type == "tied":
        return N * K * tri + N * tri
    return None


def gemm_peaks(dtypes, threads):
    """``({dtype: GFLOP/s}, header line)``: the GEMM peak of each dtype at ``threads``,
    measured now (``_peak``: NumPy's matmul on (2048, 2048) matrices, median of five)."""
    peak = gemm_peak(threads=threads)
    return {dt: peak[dt] for dt in dtypes}, describe_peak(peak, threads=threads)


def initial_params(X, centres, covariance_type):
    K, D = centres.shape
    precisions = {
        "full": np.stack([np.eye(D)] * K),
        "tied": np.eye(D),
        "diag": np.ones((K, D)),
        "spherical": np.ones(K),
    }[covariance_type]
    return dict(weights_init=np.full(K, 1.0 / K), means_init=centres, precisions_init=precisions)


def estimator(name, K, covariance_type, max_iter, inits):
    params = dict(
        n_components=K, covariance_type=covariance_type, max_iter=max_iter, tol=0.0, **inits
    )
    if name == "scikit-learn":
        from sklearn.mixture import GaussianMixture

        return GaussianMixture(**params)
    from caproute.mixture import GaussianMixture

    return GaussianMixture(backend=name.split()[-1], **params)


def set_threads(n):
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)
    import numba

    numba.set_num_threads(n)


def child(name, N, D, K, covariance_type, max_iter, threads):
    set_threads(threads)
    warnings.simplefilter("ignore")
    Xw, cw = make_data(2000, D, K, seed=1)
    # warm-up
    estimator(name, K, covariance_type, 1, initial_params(Xw, cw, covariance_type)).fit(Xw)
    X, centres = make_data(N, D, K)
    inits = initial_params(X, centres, covariance_type)
    est = estimator(name, K, covariance_type, max_iter, inits)
    return {"peak_extra_bytes": peak_growth(lambda: est.fit(X)), "input_bytes": X.nbytes}


def peak_extra(name, N, D, K, covariance_type, max_iter, threads):
    cmd = [
        sys.executable,
        __file__,
        "--child",
        name,
        str(N),
        str(D),
        str(K),
        covariance_type,
        str(max_iter),
        str(threads),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def seconds_per_iteration(name, X, K, covariance_type, inits, iters, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        estimator(name, K, covariance_type, 1, inits).fit(X)
        t1 = time.perf_counter()
        est = estimator(name, K, covariance_type, 1 + iters, inits).fit(X)
        t2 = time.perf_counter()
        times.append(((t2 - t1) - (t1 - t0)) / iters)
    return statistics.median(times), est


GPU_CASES = [
    (1_000_000, 16, 16, "full"),
    (1_000_000, 8, 8, "full"),
    (1_000_000, 8, 8, "diag"),
    (1_000_000, 8, 8, "spherical"),
    (1_000_000, 8, 8, "tied"),
]


def speed_table(args):
    names = (
        ["scikit-learn", "caproute cupy"]
        if args.gpu
        else ["scikit-learn", "caproute numpy", "caproute numba"]
    )
    if args.impls is not None:
        names = [n for n in names if n in args.impls or n == "scikit-learn"]
        if "scikit-learn" not in args.impls:
            names.remove("scikit-learn")
    peaks, line = gemm_peaks(args.dtypes, args.threads)
    print(line + "\n")
    print(
        "| N, D, K | covariance | dtype | implementation | s / EM iteration "
        "| x faster than scikit-learn | x float64 | GFLOP/s | % peak "
        "| max rel. diff of means_ | peak extra memory (MiB) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    cases = [c for c in (GPU_CASES if args.gpu else CASES) if c[3] in args.covariance]
    for N, D, K, ct in cases:
        sec64 = {}
        for dt in args.dtypes:
            X, centres = make_data(N, D, K, dtype=dt)
            inits = initial_params(X, centres, ct)
            for name in names:  # compile the kernels before timing
                if name != "scikit-learn":
                    estimator(name, K, ct, 1, initial_params(X[:2000], centres, ct)).fit(X[:2000])
            results = {}
            for name in names:
                sec, est = seconds_per_iteration(name, X, K, ct, inits, args.iters, args.repeat)
                mem = (
                    peak_extra(name, N, D, K, ct, args.iters, args.threads)["peak_extra_bytes"]
                    if args.memory and dt == "float64"  # the child fits float64 data
                    else None
                )
                results[name] = (sec, est, mem)
            ref = results.get("scikit-learn")
            flops = needed_flops(N, D, K, ct)
            for name, (sec, est, mem) in results.items():
                from caproute import to_numpy

                if dt == "float64":
                    sec64[name] = sec
                if ref is not None:
                    rm = ref[1].means_
                    means = to_numpy(est.means_).astype(np.float64)
                    diff = np.max(np.abs(means - rm) / (np.abs(rm) + 1e-300))
                    diff_s, speed_s = f"{diff:.1e}", f"{ref[0] / sec:.1f}"
                else:
                    diff_s = speed_s = "-"
                x64 = f"{sec64[name] / sec:.2f}" if name in sec64 and dt != "float64" else "-"
                gf = "-" if flops is None else f"{flops / sec / 1e9:.1f}"
                pk = "-" if flops is None else f"{100 * flops / sec / 1e9 / peaks[dt]:.0f}"
                mem_s = "-" if mem is None else f"{mem / 2**20:.0f}"
                print(
                    f"| {N:.0e}, {D}, {K} | {ct} | {dt} | {name} | {sec:.4f} | {speed_s} "
                    f"| {x64} | {gf} | {pk} | {diff_s} | {mem_s} |",
                    flush=True,
                )


def memory_case(args):
    N, D, K, ct = 10_000_000, 8, 16, "full"
    print(
        f"N={N:.0e}, D={D}, K={K}, {ct}, float64, {args.iters} EM iterations, "
        "from given initial parameters"
    )
    print("| implementation | peak extra memory (MiB) | / input size |")
    print("| --- | --- | --- |")
    for name in args.impls:
        res = peak_extra(name, N, D, K, ct, args.iters, args.threads)
        extra = res["peak_extra_bytes"]
        print(f"| {name} | {extra / 2**20:.1f} | {extra / res['input_bytes']:.4f} |")
    print(f"input: {N * D * 8 / 2**20:.0f} MiB")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--memory", action="store_true", help="also measure peak memory per case")
    parser.add_argument("--memory-case", action="store_true", help="the N = 1e7 memory case only")
    parser.add_argument("--gpu", action="store_true", help="caproute's CuPy backend (needs a GPU)")
    parser.add_argument(
        "--impls",
        nargs="*",
        default=None,
        help="implementations (default: all; --memory-case: caproute numba, caproute numpy, "
        "scikit-learn)",
    )
    parser.add_argument(
        "--dtypes", nargs="*", default=["float64", "float32"], choices=["float64", "float32"]
    )
    parser.add_argument(
        "--covariance",
        nargs="*",
        default=["full", "tied", "diag", "spherical"],
        choices=["full", "tied", "diag", "spherical"],
        help="the covariance types of the cases to run",
    )
    parser.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        name, N, D, K, ct, iters, threads = args.child
        print(json.dumps(child(name, int(N), int(D), int(K), ct, int(iters), int(threads))))
        return
    set_threads(args.threads)
    warnings.simplefilter("ignore")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, threads={args.threads}, "
        f"{args.iters} EM iterations, median of {args.repeat}\n"
    )
    if args.memory_case:
        if args.impls is None:
            args.impls = ["caproute numba", "caproute numpy", "scikit-learn"]
        memory_case(args)
    else:
        speed_table(args)


if __name__ == "__main__":
    main()
