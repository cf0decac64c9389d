"""``caproute demo``, ``caproute toy`` and ``caproute info``."""

from __future__ import annotations

import sys
import time

import numpy as np

from ._common import WorkError, compiling_notice

DEMO_DESCRIPTION = """\
Classify Fashion-MNIST test images with the shipped capsule networks and print
each model's accuracy and speed next to the accuracy recorded when it was
trained.

By default the 500 test images bundled with caproute are used; --full uses the
whole 10,000-image test set (apt-get install dataset-fashion-mnist, or --data
FOLDER holding the IDX files). The first run compiles the Numba kernels (about
15 s on two cores, once; they are cached); later runs take a few seconds.
"""

TOY_DESCRIPTION = """\
Route a toy problem with both routing algorithms: in every sample, the
children's votes agree on one hidden parent, and routing should find it.
Prints, per algorithm, how often the hidden parent won and how fast it ran.
Exits with 1 (and says why) when an algorithm finds the hidden parent in 90%
of the samples or fewer.
"""

INFO_DESCRIPTION = """\
Show caproute's version, the backends (Numba, CuPy) usable here, the capability
table (which implementations each operation has) and the shipped models.
"""

EXPECTED = 0.9  # the share of toy samples routing must get right


def add_parsers(sub, parents):
    from .._config import BACKENDS
    from ._common import non_negative_int, positive_int

    demo = sub.add_parser(
        "demo",
        parents=parents,
        help="classify Fashion-MNIST images with the shipped models",
        description=DEMO_DESCRIPTION,
    )
    demo.add_argument("--backend", choices=BACKENDS, default="auto", help="where to run")
    demo.add_argument(
        "--model",
        action="append",
        metavar="NAME",
        help="a shipped model (repeatable; default: all)",
    )
    demo.add_argument(
        "--full",
        action="store_true",
        help="the full 10,000-image test set (apt-get install dataset-fashion-mnist)",
    )
    demo.add_argument(
        "--data", metavar="FOLDER", help="folder holding the Fashion-MNIST IDX files (--full)"
    )
    demo.add_argument("--limit", type=positive_int, metavar="N", help="only the first N images")
    demo.add_argument(
        "--batch",
        type=positive_int,
        default=100,
        metavar="N",
        help="images per forward pass (default 100)",
    )
    demo.add_argument(
        "--show", type=non_negative_int, default=0, metavar="N", help="print N predictions"
    )
    demo.set_defaults(func=run_demo)

    toy = sub.add_parser(
        "toy",
        parents=parents,
        help="route a toy problem with both routing algorithms",
        description=TOY_DESCRIPTION,
    )
    toy.add_argument("--backend", choices=BACKENDS, default="auto", help="where to run")
    for option, default, text in (
        ("--batch", 256, "samples"),
        ("--n-in", 64, "children per sample"),
        ("--n-out", 10, "parents per sample"),
        ("--dim", 16, "dimension of the votes"),
    ):
        help_ = f"{text} (default {default})"
        toy.add_argument(option, type=positive_int, default=default, metavar="N", help=help_)
    toy.add_argument(
        "--dtype", choices=["float32", "float64"], default="float32", help="default float32"
    )
    toy.add_argument(
        "--seed", type=non_negative_int, default=0, metavar="N", help="random seed (default 0)"
    )
    toy.set_defaults(func=run_toy)

    info = sub.add_parser(
        "info",
        parents=parents,
        help="show backends, the capability table and the shipped models",
        description=INFO_DESCRIPTION,
    )
    info.set_defaults(func=run_info)


# --------------------------------------------------------------------------------- demo
def run_demo(args, out):
    from .. import datasets, models
    from .._backend import to_numpy
    from ._common import UsageError

    shipped = models.available_pretrained()
    names = args.model or shipped
    for name in names:
        if name not in shipped:
            raise UsageError(
                f"--model: no shipped model named {name!r}; available: {', '.join(shipped)}."
            )
    full = args.full or args.data is not None
    if full:
        try:
            images, labels = datasets.load_fashion_mnist("test", path=args.data)
        except FileNotFoundError as exc:
            raise WorkError(str(exc)) from None
        source = "the Fashion-MNIST test set"
    else:
        images, labels = datasets.load_fashion_mnist_subset()
        source = "the bundled Fashion-MNIST test subset"
    if args.limit is not None:
        images, labels = images[: args.limit], labels[: args.limit]
    n = len(labels)
    intro = (
        f"caproute demo: classifying {source} ({n:,} images) with {len(names)} shipped capsule "
        f"network{'s' if len(names) != 1 else ''} ({', '.join(names)}), backend "
        f"{args.backend!r}. The first run compiles the Numba kernels (about 15 s, once); later "
        "runs take a few seconds."
    )
    if out.json_mode:
        out.notice(intro)
    elif not out.quiet:
        out.print(intro)
        out.print()
        sys.stdout.flush()
    rows, shown = [], []
    for name in names:
        net = models.load_pretrained(name)
        info = models.pretrained_info(name)
        with compiling_notice(out, notice=out.json_mode):  # the intro line said it otherwise
            net.predict_scores(images[:2], backend=args.backend)  # compile kernels, warm caches
        pred = np.empty(n, np.int64)
        t0 = time.perf_counter()
        with out.bar(total=n, desc=name, unit=" images") as bar:
            for start in range(0, n, args.batch):
                stop = min(n, start + args.batch)
                pred[start:stop] = to_numpy(
                    net.predict(images[start:stop], backend=args.backend, batch_size=args.batch)
                )
                bar.update(stop - start)
        dt = time.perf_counter() - t0
        rows.append(
            {
                "model": name,
                "accuracy": float(np.mean(pred == labels)) if n else None,
                "images_per_second": n / dt if dt > 0 else None,
                "recorded_subset_accuracy": info.get("subset_accuracy"),
                "recorded_test_accuracy": info["test_accuracy"],
            }
        )
        classes = net.classes or [str(i) for i in range(net.n_classes)]
        for i in range(min(args.show, n)):
            shown.append(
                {
                    "model": name,
                    "image": i,
                    "predicted": classes[pred[i]],
                    "true": classes[labels[i]],
                    "correct": bool(pred[i] == labels[i]),
                }
            )
    for s in shown:
        out.print(
            f"  {s['model']} image {s['image']}: predicted {s['predicted']!r}, "
            f"true {s['true']!r} {'ok' if s['correct'] else 'WRONG'}"
        )
    if shown:
        out.print()
    exact = not full and args.limit is None  # the images the subset accuracy was recorded on
    out.print(
        f"{'model':<30} {'accuracy':>9} {'images/s':>10} {'expected':>9} {'full test set':>14}"
    )
    for r in rows:
        expected = (
            r["recorded_subset_accuracy"]
            if exact
            else (r["recorded_test_accuracy"] if full and args.limit is None else None)
        )
        r["expected_accuracy"] = expected
        out.print(
            f"{r['model']:<30} {r['accuracy']:>9.2%} {r['images_per_second']:>10,.0f} "
            f"{(f'{expected:.2%}' if expected is not None else '-'):>9} "
            f"{r['recorded_test_accuracy']:>14.2%}"
        )
    out.print(
        "\nexpected: the accuracy recorded for these images when the model was shipped"
        + ("" if exact or full else " (not recorded for a part of the images)")
        + "; full test set: recorded on all 10,000 Fashion-MNIST test images."
    )
    out.document(
        {
            "source": source,
            "n_images": n,
            "backend": args.backend,
            "models": rows,
            "predictions": shown,
        }
    )
    return 0


# ----------------------------------------------------------------------------------- toy
def toy_votes(batch, n_in, n_out, dim, seed):
    """Votes where, in each sample, every child agrees on one hidden parent (its "class").

    Votes for the hidden parent are one shared vector plus small noise; votes for the other
    parents are independent noise of the same scale, so only agreement tells them apart.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(n_out, size=batch)
    votes = rng.normal(scale=0.5, size=(batch, n_in, n_out, dim))
    centre = rng.normal(scale=0.5, size=(batch, dim))
    agree = centre[:, None, :] + 0.05 * rng.normal(size=(batch, n_in, dim))
    votes[np.arange(batch), :, labels] = agree
    a_in = rng.uniform(0.5, 1.0, size=(batch, n_in))
    return votes, a_in, labels


def run_toy(args, out):
    from .._backend import to_numpy
    from .._config import config_context
    from ..routing import dynamic_routing, em_routing

    votes, a_in, labels = toy_votes(args.batch, args.n_in, args.n_out, args.dim, args.seed)
    votes = votes.astype(args.dtype)
    a_in = a_in.astype(args.dtype)
    out.print(
        f"caproute toy: {args.batch} samples, {args.n_in} children -> {args.n_out} parents, "
        f"{args.dim}-D votes, {args.dtype}, backend={args.backend!r}"
    )
    out.print("Each sample's children agree on one hidden parent; routing should find it.\n")
    rows = []
    with config_context(backend=args.backend):
        for name, call in (
            ("dynamic routing", lambda: dynamic_routing(votes, n_iter=3)),
            ("EM routing", lambda: em_routing(votes, a_in, 0.0, 0.0, n_iter=3)),
        ):
            with compiling_notice(out):
                call()  # the first call compiles kernels / warms caches
            t0 = time.perf_counter()
            result = call()
            dt = time.perf_counter() - t0
            if isinstance(result, tuple):
                score = to_numpy(result[1])  # parent activations
            else:
                score = np.linalg.norm(to_numpy(result), axis=-1)  # capsule lengths
            acc = float(np.mean(np.argmax(score, axis=-1) == labels))
            rows.append(
                {
                    "algorithm": name,
                    "found_the_parent": acc,
                    "seconds": dt,
                    "samples_per_second": args.batch / dt if dt > 0 else None,
                }
            )
    out.print(f"{'algorithm':<16} {'found the parent':>17} {'time':>10} {'samples/s':>11}")
    for r in rows:
        rate = r["samples_per_second"]
        out.print(
            f"{r['algorithm']:<16} {r['found_the_parent']:>16.1%} {r['seconds'] * 1e3:>8.1f}ms "
            f"{(f'{rate:.0f}' if rate else '-'):>11}"
        )
    failed = [r for r in rows if r["found_the_parent"] <= EXPECTED]
    out.document(
        {
            "batch": args.batch,
            "n_in": args.n_in,
            "n_out": args.n_out,
            "dim": args.dim,
            "dtype": args.dtype,
            "backend": args.backend,
            "results": rows,
            "passed": not failed,
        }
    )
    if failed:
        which = "; ".join(
            f"{r['algorithm']} found the hidden parent in {r['found_the_parent']:.1%} of the "
            "samples"
            for r in failed
        )
        raise WorkError(
            f"{which} (expected more than {EXPECTED:.0%}). With {args.n_in} "
            f"child{'ren' if args.n_in != 1 else ''}, {args.n_out} parents and {args.dim}-D "
            "votes, agreement is too weak to single out the hidden parent; use more children "
            "(--n-in) or longer votes (--dim)."
        )
    return 0


# ---------------------------------------------------------------------------------- info
def run_info(args, out):
    import platform

    import numpy

    from .. import __version__, _backend, models

    cupy, reason = _backend.cupy_status()
    numba_ok = _backend.numba_available()
    numba_version = None
    if numba_ok:
        import numba

        numba_version = numba.__version__
    table = _backend.capabilities()
    shipped = []
    for name in models.available_pretrained():
        info = models.pretrained_info(name)
        shipped.append(
            {
                "name": name,
                "test_accuracy": info["test_accuracy"],
                "n_parameters": info["n_parameters"],
            }
        )
    out.print(f"caproute {__version__}")
    out.print(f"python:  {platform.python_version()}   numpy: {numpy.__version__}")
    out.print(f"numba:   {numba_version if numba_ok else 'not installed'}")
    out.print(f"cupy:    {'usable' if cupy is not None else reason}")
    out.print("\ncapability table (which implementations each operation has):")
    width = max([len("operation"), *(len(op) for op in table)])
    out.print(f"  {'operation':<{width}} {'reference':>9} {'numba':>6} {'cupy':>5}")
    for op, impls in sorted(table.items()):
        marks = ["yes" if impls[k] else "-" for k in ("reference", "numba", "cupy")]
        out.print(f"  {op:<{width}} {marks[0]:>9} {marks[1]:>6} {marks[2]:>5}")
    from .._backend.dispatch import option_fallbacks

    fallbacks = option_fallbacks()
    out.print("\noptions a kernel lacks (calls setting them run the reference on the same device):")
    for op, per_kernel in sorted(fallbacks.items()):
        for impl, names in per_kernel.items():
            out.print(f"  {op} [{impl}]: {', '.join(names) if names else 'none'}")
    out.print("\nshipped models (accuracy on the full Fashion-MNIST test set):")
    for m in shipped:
        out.print(f"  {m['name']:<30} {m['test_accuracy']:.2%}  {m['n_parameters']:,} parameters")
    out.document(
        {
            "version": __version__,
            "python": platform.python_version(),
            "numpy": numpy.__version__,
            "numba": numba_version,
            "cupy": {"usable": cupy is not None, "reason": None if cupy is not None else reason},
            "capabilities": {
                op: {k: bool(impls[k]) for k in ("reference", "numba", "cupy")}
                for op, impls in sorted(table.items())
            },
            "option_fallbacks": fallbacks,
            "models": shipped,
        }
    )
    return 0
