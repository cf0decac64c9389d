"""``caproute bench``: small built-in benchmarks (the full ones live in the repository's
``benchmarks/`` folder, which is not installed)."""

from __future__ import annotations

import statistics
import time

import numpy as np

from ._common import WorkError, compiling_notice

DESCRIPTION = """\
Time caproute on this machine with small built-in suites (a few seconds each):

  routing  dynamic and EM routing on given votes: the NumPy reference against
           the Numba kernels (and CuPy when usable), with the speed-up and the
           largest difference between their results;
  gmm      caproute.mixture.GaussianMixture against scikit-learn's on 100,000
           points (the same initialisation and iterations), with the speed-up
           and the difference of their log-likelihoods;
  models   images per second of each shipped model on the bundled test
           images, with the reference and with the Numba kernels.

Times are medians of --repeat runs after one warm-up run (which compiles the
kernels on the first use). The repository's benchmarks/ folder holds the full
benchmarks (PyTorch, memory, GPU).
"""

SUITES = ("routing", "gmm", "models")


def add_parser(sub, parents):
    from ._common import positive_int

    p = sub.add_parser(
        "bench",
        parents=parents,
        help="time routing, Gaussian mixtures and the shipped models on this machine",
        description=DESCRIPTION,
    )
    p.add_argument(
        "--suite",
        action="append",
        choices=SUITES,
        help="run only this suite (repeatable; default: all)",
    )
    p.add_argument(
        "--repeat", type=positive_int, default=3, metavar="N", help="timed runs (default 3)"
    )
    p.add_argument(
        "--n-samples",
        type=positive_int,
        default=100_000,
        metavar="N",
        help="points of the gmm suite (default 100000)",
    )
    p.add_argument(
        "--quick", action="store_true", help="small sizes and one run (to check it works)"
    )
    p.set_defaults(func=run)


def _median_time(call, repeat):
    times = []
    result = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def _backends():
    from .._backend import cupy_status, numba_available

    names = ["numpy"]
    if numba_available():
        names.append("numba")
    if cupy_status()[0] is not None:
        names.append("cupy")
    return names


def routing_suite(args, out, bar):
    from .. import dynamic_routing, em_routing, to_numpy

    rng = np.random.default_rng(0)
    scale = 8 if args.quick else 1
    cases = [
        (
            "dynamic_routing",
            (64 // scale, 1152 // scale, 10, 16),
            lambda v, backend: dynamic_routing(v, 3, backend=backend),
        ),
        (
            "em_routing",
            (288 // scale, 72, 32, 16),
            lambda v, backend: em_routing(v[0], v[1], 0.0, 0.0, 3, backend=backend)[1],
        ),
    ]
    rows = []
    for op, shape, call in cases:
        votes = (0.1 * rng.normal(size=shape)).astype(np.float32)
        data = (
            votes
            if op == "dynamic_routing"
            else (
                votes,
                rng.uniform(size=shape[:2]).astype(np.float32),
            )
        )
        reference = None
        for backend in _backends():
            with compiling_notice(out):
                call(data, backend)  # warm-up (compiles the kernels on the first use)
            seconds, result = _median_time(lambda f=call, x=data, b=backend: f(x, b), args.repeat)
            result = to_numpy(result)
            if reference is None:
                reference = (seconds, result)
            rows.append(
                {
                    "operation": op,
                    "votes": "x".join(map(str, shape)),
                    "backend": backend,
                    "ms": seconds * 1e3,
                    "speedup": reference[0] / seconds,
                    "max_abs_diff": float(np.max(np.abs(result - reference[1]))),
                }
            )
            bar.update(1)
    return {
        "title": "routing on given votes (float32, 3 iterations): reference vs kernels",
        "columns": ["operation", "votes", "backend", "ms", "speedup", "max_abs_diff"],
        "rows": rows,
    }


def gmm_suite(args, out, bar):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture as SKGaussianMixture

    from .. import to_numpy
    from ..mixture import GaussianMixture

    n = 2_000 if args.quick else args.n_samples
    rng = np.random.default_rng(0)
    k, d = 3, 4
    centres = rng.normal(scale=5.0, size=(k, d))
    X = centres[rng.integers(k, size=n)] + rng.normal(size=(n, d))
    params = {
        "n_components": k,
        "max_iter": 5,
        "tol": 0.0,
        "init_params": "random_from_data",
        "random_state": 0,
    }
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a fixed number of iterations
        reference = None
        for name, cls in (("scikit-learn", SKGaussianMixture), ("caproute", GaussianMixture)):
            with compiling_notice(out):
                cls(**params).fit(X[:200])  # warm-up (compiles caproute's kernels)
            seconds, fitted = _median_time(lambda c=cls: c(**params).fit(X), args.repeat)
            bound = float(to_numpy(fitted.lower_bound_))
            if reference is None:
                reference = (seconds, bound)
            rows.append(
                {
                    "implementation": name,
                    "points": n,
                    "ms": seconds * 1e3,
                    "speedup": reference[0] / seconds,
                    "lower_bound_diff": abs(bound - reference[1]),
                }
            )
            bar.update(1)
    return {
        "title": (
            f"GaussianMixture: {n:,} points, {d} features, {k} components, full covariances, "
            f"{params['max_iter']} EM iterations"
        ),
        "columns": ["implementation", "points", "ms", "speedup", "lower_bound_diff"],
        "rows": rows,
    }


def models_suite(args, out, bar):
    from .. import models
    from ..datasets import load_fashion_mnist_subset

    images, _ = load_fashion_mnist_subset()
    images = images[: 20 if args.quick else 100]
    rows = []
    for name in models.available_pretrained():
        net = models.load_pretrained(name)
        reference = None
        for backend in _backends():
            with compiling_notice(out):
                net.predict(images[:2], backend=backend)  # warm-up
            seconds, pred = _median_time(
                lambda b=backend, m=net: m.predict(images, backend=b), args.repeat
            )
            if reference is None:
                reference = seconds
            rows.append(
                {
                    "model": name,
                    "backend": backend,
                    "images_per_second": len(images) / seconds,
                    "speedup": reference / seconds,
                }
            )
            bar.update(1)
    return {
        "title": f"shipped models: images per second on {len(images)} bundled test images",
        "columns": ["model", "backend", "images_per_second", "speedup"],
        "rows": rows,
    }


RUNNERS = {"routing": routing_suite, "gmm": gmm_suite, "models": models_suite}


def _steps(suite):
    from .. import models

    n = len(_backends())
    return {"routing": 2 * n, "gmm": 2, "models": n * len(models.available_pretrained())}[suite]


def _cell(value, column):
    if isinstance(value, str):
        return value
    if column == "speedup":
        return f"{value:.2f}x"
    if column in ("max_abs_diff", "lower_bound_diff"):
        return f"{value:.1e}"
    if column in ("ms", "images_per_second"):
        return f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else f"{value:.4g}"


def format_table(suite):
    columns = suite["columns"]
    cells = [[_cell(r[c], c) for c in columns] for r in suite["rows"]]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    head = "  ".join(
        f"{c:>{w}}" if i else f"{c:<{w}}"
        for i, (c, w) in enumerate(zip(columns, widths, strict=True))
    )
    lines = [suite["title"], head]
    for row in cells:
        lines.append(
            "  ".join(
                f"{v:>{w}}" if i else f"{v:<{w}}"
                for i, (v, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(lines)


def run(args, out):
    import platform

    from .. import __version__

    if args.quick:
        args.repeat = 1
    suites = list(dict.fromkeys(args.suite or SUITES))
    out.notice(
        f"caproute bench: suites {', '.join(suites)}, median of {args.repeat} run"
        f"{'s' if args.repeat != 1 else ''} (the first use compiles the kernels)"
    )
    results = {}
    with out.bar(total=sum(_steps(s) for s in suites), desc="benchmarks", unit=" runs") as bar:
        for name in suites:
            try:
                results[name] = RUNNERS[name](args, out, bar)
            except MemoryError:
                raise WorkError(f"the {name} suite ran out of memory.") from None
    for i, name in enumerate(suites):
        if i:
            out.print()
        out.print(format_table(results[name]))
    out.print(
        "\nspeedup: time of the first row of each operation divided by the row's time "
        "(higher is faster)."
    )
    out.document(
        {
            "caproute_version": __version__,
            "machine": platform.machine(),
            "python": platform.python_version(),
            "repeat": args.repeat,
            "suites": results,
        }
    )
    return 0
