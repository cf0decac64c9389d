"""Routing estimators against KMeans and GaussianMixture: time and adjusted Rand index.

Every algorithm fits the same data with the same seed and the same thread count, in one run;
the time is the median of ``--repeat`` fits. Not a test: run it by hand.

    python benchmarks/bench_cluster.py --threads 2 --repeat 5
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings

from sklearn.cluster import KMeans
from sklearn.datasets import load_digits, make_blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from caproute.cluster import DynamicRoutingClustering, EMRoutingClustering


def data_sets():
    X, y = make_blobs(n_samples=20_000, n_features=8, centers=8, cluster_std=2.0, random_state=0)
    digits = load_digits()
    return {
        "blobs 20000x8, k=8": (X, y, 8),
        "digits 1797x64, k=10": (digits.data, digits.target, 10),
    }


def estimators(k):
    return {
        "DynamicRoutingClustering": lambda: DynamicRoutingClustering(n_clusters=k, random_state=0),
        "EMRoutingClustering": lambda: EMRoutingClustering(n_clusters=k, random_state=0),
        "KMeans(n_init=1)": lambda: KMeans(n_clusters=k, n_init=1, random_state=0),
        "GaussianMixture(diag)": lambda: GaussianMixture(k, covariance_type="diag", random_state=0),
        "GaussianMixture(full)": lambda: GaussianMixture(k, random_state=0),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    print(
        f"machine: {platform.processor() or platform.machine()}, threads={args.threads}, "
        f"median of {args.repeat} fits\n"
    )
    print("| data | algorithm | seconds | x KMeans time | ARI | iterations |")
    print("| --- | --- | --- | --- | --- | --- |")
    with threadpool_limits(limits=args.threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for data_name, (X, y, k) in data_sets().items():
            results = {}
            for name, make in estimators(k).items():
                times = []
                for _ in range(args.repeat):
                    est = make()
                    t0 = time.perf_counter()
                    labels = est.fit_predict(X)
                    times.append(time.perf_counter() - t0)
                results[name] = (
                    statistics.median(times),
                    adjusted_rand_score(y, labels),
                    getattr(est, "n_iter_", "-"),
                )
            base = results["KMeans(n_init=1)"][0]
            for name, (sec, ari, n_iter) in results.items():
                print(
                    f"| {data_name} | {name} | {sec:.3f} | {sec / base:.1f} | {ari:.3f} "
                    f"| {n_iter} |"
                )


if __name__ == "__main__":
    main()
