"""The routing clusterers' fit times in this checkout against another checkout of caproute.

Both run the data sets of ``bench_cluster.py`` with the same seed and thread count, each in its
own fresh process (its kernels compiled before timing), the two alternating for ``--rounds``
rounds so that the shared machine's noise falls on both; the table gives the medians over
rounds of each round's median fit time, and their ratio. Not a test: run it by hand, e.g.
against the commit before the clusterers moved to one routing step per iteration::

    git worktree add /tmp/caproute-before 7b13d88
    python benchmarks/bench_cluster_versions.py --baseline /tmp/caproute-before
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
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _child(repeat, threads):
    """Median fit time and iterations per (data set, estimator), as JSON on stdout."""
    sys.path.insert(0, str(HERE))
    from bench_cluster import data_sets
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    from caproute.cluster import DynamicRoutingClustering, EMRoutingClustering

    out = {}
    with threadpool_limits(limits=threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for data_name, (X, _, k) in data_sets().items():
            for Est in (DynamicRoutingClustering, EMRoutingClustering):
                Est(n_clusters=k, random_state=0).fit_predict(X)  # compile the kernels first
                times = []
                for _ in range(repeat):
                    est = Est(n_clusters=k, random_state=0)
                    t0 = time.perf_counter()
                    est.fit_predict(X)
                    times.append(time.perf_counter() - t0)
                out[f"{data_name} | {Est.__name__}"] = [statistics.median(times), est.n_iter_]
    print(json.dumps(out))


def _run(tree, repeat, threads):
    env = dict(os.environ, PYTHONPATH=str(tree), NUMBA_NUM_THREADS=str(threads))
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--repeat",
        str(repeat),
        "--threads",
        str(threads),
    ]
    done = subprocess.run(cmd, env=env, cwd=HERE, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="root of the other caproute checkout")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.repeat, args.threads)
    if args.baseline is None:
        parser.error("--baseline is required")
    trees = {"baseline": args.baseline.resolve(), "this": HERE.parent}
    rounds = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            rounds[name].append(_run(tree, args.repeat, args.threads))
    print(f"threads={args.threads}, {args.rounds} alternating rounds of {args.repeat} fits\n")
    print("| data | algorithm | baseline s | this s | speed-up | iterations (baseline, this) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for key in rounds["this"][0]:
        base = statistics.median(r[key][0] for r in rounds["baseline"])
        this = statistics.median(r[key][0] for r in rounds["this"])
        iters = (rounds["baseline"][0][key][1], rounds["this"][0][key][1])
        print(f"| {key} | {base:.4f} | {this:.4f} | {base / this:.2f}x | {iters[0]}, {iters[1]} |")


if __name__ == "__main__":
    main()
