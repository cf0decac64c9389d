"""GaussianMixture on a Dask array: seconds per EM iteration on a LocalCluster of 1 and 2
worker processes (one thread each), against the in-memory Numba fit of the same data on 1 and
2 threads, in one run.

The data (N x D float64 blobs) live in the workers' memory (``persist``), chunked along the
points. Every fit starts from the same initial parameters and runs ``--iters`` iterations
(tol = 0); seconds per iteration are medians of ``--repeat`` fits.

    python benchmarks/bench_gmm_dask.py                   # N = 4e6, D = 8, K = 8, full
    python benchmarks/bench_gmm_dask.py --n 1e6 --repeat 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings

import numpy as np


def make_data(N, D, K, seed=0):
    rng = np.random.RandomState(seed)
    centres = rng.randn(K, D) * 4
    return centres[rng.randint(K, size=N)] + rng.randn(N, D), centres


def timed_fit(X, K, D, centres, iters, covariance_type):
    from caproute.mixture import GaussianMixture

    prec = {"full": np.stack([np.eye(D)] * K), "diag": np.ones((K, D))}[covariance_type]
    gm = GaussianMixture(
        K,
        covariance_type=covariance_type,
        max_iter=iters,
        tol=0.0,
        weights_init=np.full(K, 1.0 / K),
        means_init=centres,
        precisions_init=prec,
    )
    t0 = time.perf_counter()
    gm.fit(X)
    return (time.perf_counter() - t0) / iters, gm


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=float, default=4e6)
    parser.add_argument("--d", type=int, default=8)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--chunk", type=int, default=500_000, help="points per Dask block")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--covariance-type", default="full", choices=["full", "diag"])
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    import dask.array as da
    import numba
    from dask.distributed import Client, LocalCluster
    from threadpoolctl import threadpool_limits

    N, D, K = int(args.n), args.d, args.k
    X, centres = make_data(N, D, K)
    rows = []
    ref_means = None
    for threads in (1, 2):
        numba.set_num_threads(threads)
        with threadpool_limits(limits=threads):
            timed_fit(X[:20000], K, D, centres, 1, args.covariance_type)  # warm-up
            runs = [
                timed_fit(X, K, D, centres, args.iters, args.covariance_type)
                for _ in range(args.repeat)
            ]
        ref_means = runs[0][1].means_
        rows.append((f"in memory, Numba, {threads} thread(s)", [t for t, _ in runs], 0.0))
    numba.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            with (
                LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                    local_directory=tmp,
                    # one Numba thread per worker process, as one BLAS thread: N workers use
                    # N cores, the in-memory fit's thread count
                    env={"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
                ) as cluster,
                Client(cluster),
            ):
                dX = da.from_array(X, chunks=(args.chunk, D)).persist()
                timed_fit(dX, K, D, centres, 1, args.covariance_type)  # warm-up, every worker
                runs = [
                    timed_fit(dX, K, D, centres, args.iters, args.covariance_type)
                    for _ in range(args.repeat)
                ]
                diff = float(np.max(np.abs(runs[0][1].means_ - ref_means) / np.abs(ref_means)))
                rows.append((f"Dask, {workers} worker process(es)", [t for t, _ in runs], diff))
    base = statistics.median(rows[1][1])
    print(
        f"N = {N:.0e}, D = {D}, K = {K}, float64, {args.covariance_type} covariance, "
        f"{N // args.chunk} blocks of {args.chunk} points; medians of {args.repeat} fits "
        f"x {args.iters} iterations\n"
    )
    print("| run | s / EM iteration | in-memory 2 threads / this | max rel. diff of means_ |")
    print("| --- | --- | --- | --- |")
    for label, times, diff in rows:
        s = statistics.median(times)
        print(f"| {label} | {s:.3f} | {base / s:.2f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
