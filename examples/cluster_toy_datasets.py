"""
Cluster scikit-learn's toy data sets with routing, KMeans and GaussianMixture
=============================================================================

Saves a figure with one panel per data set and algorithm (the adjusted Rand index in each
title) and prints the table of scores as Markdown.

    pip install ".[examples]"
    python examples/cluster_toy_datasets.py --out docs/images/cluster_toy_datasets.png
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits, load_iris, make_blobs
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture

from caproute.cluster import DynamicRoutingClustering, EMRoutingClustering


def datasets(seed=0):
    """The four data sets; ``seed`` draws the two blob sets (seed 0 draws them with
    scikit-learn's example seed, 170); iris and digits are fixed."""
    seed = 170 + seed
    X_var, y_var = make_blobs(n_samples=600, cluster_std=[1.0, 2.5, 0.5], random_state=seed)
    X_aniso, y_aniso = make_blobs(n_samples=600, random_state=seed)
    X_aniso = X_aniso @ np.array([[0.6, -0.6], [-0.4, 0.8]])
    iris = load_iris()
    digits = load_digits()
    return {
        "blobs, varied spread": (X_var, y_var),
        "anisotropic blobs": (X_aniso, y_aniso),
        "iris (4-D)": (iris.data, iris.target),
        "digits (64-D)": (digits.data, digits.target),
    }


def algorithms(k, seed=0):
    return {
        "DynamicRoutingClustering": DynamicRoutingClustering(n_clusters=k, random_state=seed),
        "EMRoutingClustering": EMRoutingClustering(n_clusters=k, random_state=seed),
        "KMeans": KMeans(n_clusters=k, n_init=1, random_state=seed),
        "GaussianMixture": GaussianMixture(n_components=k, random_state=seed),
    }


def run(seed=0):
    """Fit every algorithm on every data set; return rows (data, algorithm, labels, ARI, s)."""
    rows = []
    for data_name, (X, y) in datasets(seed).items():
        k = len(np.unique(y))
        for algo_name, est in algorithms(k, seed).items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                t0 = time.perf_counter()
                labels = est.fit_predict(X)
                dt = time.perf_counter() - t0
            rows.append((data_name, algo_name, labels, adjusted_rand_score(y, labels), dt))
    return rows


def plot(rows, path, seed=0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = datasets(seed)
    names = list(data)
    algos = list(dict.fromkeys(r[1] for r in rows))
    fig, axes = plt.subplots(len(names), len(algos), figsize=(4 * len(algos), 3.6 * len(names)))
    for i, data_name in enumerate(names):
        X = data[data_name][0]
        xy = X if X.shape[1] == 2 else PCA(n_components=2, random_state=0).fit_transform(X)
        for j, algo in enumerate(algos):
            _, _, labels, ari, _ = next(r for r in rows if r[0] == data_name and r[1] == algo)
            ax = axes[i, j]
            ax.scatter(xy[:, 0], xy[:, 1], c=labels, s=6, cmap="tab10")
            ax.set_title(f"{algo}\n{data_name}: ARI {ari:.3f}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def table(rows):
    algos = list(dict.fromkeys(r[1] for r in rows))
    lines = ["| data set | " + " | ".join(algos) + " |", "| --- |" + " --- |" * len(algos)]
    for data_name in dict.fromkeys(r[0] for r in rows):
        cells = [f"{r[3]:.3f}" for a in algos for r in rows if r[0] == data_name and r[1] == a]
        lines.append(f"| {data_name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--out", default="cluster_toy_datasets.png")
    parser.add_argument(
        "--seed", type=int, default=0, help="draws the blob data sets and seeds the algorithms"
    )
    args = parser.parse_args(argv)
    try:  # before any work: the figure needs matplotlib, an optional extra
        import matplotlib  # noqa: F401
    except ImportError:
        print(
            "cluster_toy_datasets: this example draws with matplotlib, which is not installed; "
            'install it with `pip install "caproute[examples]"` (or `pip install matplotlib`).',
            file=sys.stderr,
        )
        return 1
    rows = run(args.seed)
    plot(rows, args.out, args.seed)
    print(f"adjusted Rand index (seed {args.seed}); figure saved to {args.out}\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
