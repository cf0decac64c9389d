"""
Fit a Gaussian mixture to a data set larger than the memory the fit may use
===========================================================================

The script writes ``--gib`` GiB of points (float32, D = 8, blobs) to a file 32 MiB at a time,
opens it as a NumPy memmap and fits ``caproute.mixture.GaussianMixture`` on it. The fit reads
the file chunk by chunk (plain file reads into one buffer: the operating system's page cache
holds the data, not the process), once per EM iteration, so the process stays within the
budget whatever the file's size. It prints the file's size, the budget, the process's peak
resident memory (VmHWM: Python, NumPy, Numba and scikit-learn included) and the fitted means
next to the true centres, and exits with status 1 if the peak exceeds the budget.

    python examples/fit_beyond_memory.py                  # 2 GiB of points, 512 MiB budget
    python examples/fit_beyond_memory.py --gib 0.05 --budget-mib 400
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

D, K = 8, 4


def peak_rss_bytes():
    """The process's peak resident set (Linux /proc; ru_maxrss elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def write_points(path, n, seed=0):
    """n points around K centres, written 32 MiB at a time (never all in memory)."""
    rng = np.random.RandomState(seed)
    centres = (rng.randn(K, D) * 6).astype(np.float32)
    step = (32 * 2**20) // (4 * D)
    with open(path, "wb") as f:
        for start in range(0, n, step):
            m = min(n, start + step) - start
            part = centres[rng.randint(K, size=m)] + rng.randn(m, D).astype(np.float32)
            f.write(part.astype(np.float32).tobytes())
    return centres


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.0, help="size of the data set (GiB)")
    parser.add_argument("--budget-mib", type=float, default=512, help="memory budget (MiB)")
    parser.add_argument("--dir", default=None, help="where to write the file (a temp folder)")
    args = parser.parse_args(argv)
    from caproute.mixture import GaussianMixture

    n = int(args.gib * 2**30) // (4 * D)
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        path = os.path.join(folder, "points.f32")
        t0 = time.perf_counter()
        centres = write_points(path, n)
        print(
            f"wrote {n:,} points x {D} float32 = {os.path.getsize(path) / 2**30:.2f} GiB "
            f"to {path} in {time.perf_counter() - t0:.1f} s"
        )
        X = np.memmap(path, dtype=np.float32, mode="r", shape=(n, D))
        t0 = time.perf_counter()
        gm = GaussianMixture(K, init_params="k-means++", random_state=0, max_iter=20).fit(X)
        seconds = time.perf_counter() - t0
        del X
    peak = peak_rss_bytes()
    print(
        f"fitted {K} components in {gm.n_iter_} EM iterations, {seconds:.1f} s "
        f"(converged: {gm.converged_})"
    )
    order = np.argsort(gm.means_[:, 0])
    truth = centres[np.argsort(centres[:, 0])]
    print(
        f"largest distance between a fitted mean and its true centre: "
        f"{np.abs(gm.means_[order] - truth).max():.3f}"
    )
    print(
        f"peak resident memory of this process: {peak / 2**20:.0f} MiB "
        f"(budget {args.budget_mib:.0f} MiB, data {n * D * 4 / 2**20:.0f} MiB)"
    )
    if peak > args.budget_mib * 2**20:
        print("over budget", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
