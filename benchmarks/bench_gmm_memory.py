"""GaussianMixture: peak memory beyond the input, per initialisation and per method.

Each case runs in a fresh subprocess: the data are made in place (N x D float64), the
resident set's high-water mark is reset, and the call's peak growth above the resident set
before it is reported as a multiple of the input's size (see ``_memory.peak_growth``). For
``init_params="kmeans"`` the same measurement of scikit-learn's ``KMeans(n_init=1).fit(X)``
alone is printed next to it: the target is KMeans's own need plus 0.05x.

    python benchmarks/bench_gmm_memory.py                      # N = 1e7, D = 8, K = 16
    python benchmarks/bench_gmm_memory.py --n 1e6 --threads 2  # a quicker look
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import warnings

import numpy as np

from _memory import peak_growth

INITS = ["kmeans", "k-means++", "random", "random_from_data"]
METHODS = ["predict", "predict_proba", "score_samples", "score", "fit_predict"]


def make_data(N, D, K, seed=0):
    """Blobs written chunk by chunk into one array (no temporary of the input's size)."""
    rng = np.random.RandomState(seed)
    centres = rng.randn(K, D) * 4
    X = np.empty((N, D))
    for start in range(0, N, 1 << 20):
        stop = min(N, start + (1 << 20))
        X[start:stop] = centres[rng.randint(K, size=stop - start)] + rng.randn(stop - start, D)
    return X


def set_threads(n):
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)
    import numba

    numba.set_num_threads(n)


def child(case, N, D, K, threads):
    set_threads(threads)
    warnings.simplefilter("ignore")
    from sklearn.cluster import KMeans

    from caproute.mixture import GaussianMixture

    # warm-up: compile the kernels outside the measurement
    Xw = make_data(5000, D, K, seed=1)
    for init in INITS:
        GaussianMixture(K, init_params=init, max_iter=1, random_state=0).fit(Xw)
    X = make_data(N, D, K)
    kind, name = case.split(":")
    if kind == "init":
        est = GaussianMixture(K, init_params=name, max_iter=1, random_state=0)
        fn = lambda: est.fit(X)  # noqa: E731
    elif kind == "kmeans-alone":
        fn = lambda: KMeans(n_clusters=K, n_init=1, random_state=0).fit(X)  # noqa: E731
    else:
        est = GaussianMixture(K, max_iter=1, random_state=0).fit(X[:100_000])
        keep = []
        if name == "fit_predict":
            est = GaussianMixture(K, init_params="random_from_data", max_iter=1, random_state=0)
            fn = lambda: keep.append(est.fit_predict(X))  # noqa: E731
        else:
            fn = lambda: keep.append(getattr(est, name)(X))  # noqa: E731
    peak = peak_growth(fn)
    output = 0
    if kind == "method":
        out = keep[0]
        output = out.nbytes if hasattr(out, "nbytes") else 0
    return {"peak": peak, "input": X.nbytes, "output": output}


def run_case(case, N, D, K, threads):
    cmd = [sys.executable, __file__, "--child", case, str(N), str(D), str(K), str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=float, default=1e7)
    parser.add_argument("--d", type=int, default=8)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        case, N, D, K, threads = args.child
        print(json.dumps(child(case, int(N), int(D), int(K), int(threads))))
        return
    N, D, K = int(args.n), args.d, args.k
    print(f"N = {N:.0e}, D = {D}, K = {K}, float64, {args.threads} threads")
    print("| call | peak extra memory (MiB) | / input size | output (MiB) |")
    print("| --- | --- | --- | --- |")
    cases = [f"init:{i}" for i in INITS] + ["kmeans-alone:KMeans"]
    cases += [f"method:{m}" for m in METHODS]
    for case in cases:
        r = run_case(case, N, D, K, args.threads)
        kind, name = case.split(":")
        label = {
            "init": f'fit, init_params="{name}" (init + 1 EM iteration)',
            "kmeans-alone": "scikit-learn KMeans(n_init=1).fit alone",
            "method": f"{name} (output aside)" if name != "score" else name,
        }[kind]
        extra = r["peak"] - r["output"]
        print(
            f"| {label} | {extra / 2**20:.1f} | {extra / r['input']:.3f} | "
            f"{r['output'] / 2**20:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
