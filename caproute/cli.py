"""The ``caproute`` command.

``caproute demo`` classifies Fashion-MNIST images with the shipped capsule networks;
``caproute toy`` routes a toy problem with both routing algorithms; ``caproute info`` shows the
backends, the capability table and the shipped models; ``caproute convert-torch`` turns a
PyTorch ``.pt`` state dict into a safetensors file (needs torch; never unpickles arbitrary
objects).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np

from . import _backend
from ._config import BACKENDS, config_context

FIRST_RUN_NOTICE = (
    "caproute: preparing the kernels (the first run compiles them, once; later runs load "
    "them from Numba's cache)..."
)


_NOTICED = set()


@contextmanager
def _notice_if_slow(message, *, after=1.0, stream=None):
    """Write ``message`` (one line, to stderr) if the block is still running after ``after``
    seconds: a first run that compiles kernels says so instead of going silent."""
    stream = sys.stderr if stream is None else stream

    def say():
        if message in _NOTICED:  # one line per process, however many slow blocks follow
            return
        _NOTICED.add(message)
        stream.write(message + "\n")
        stream.flush()

    timer = threading.Timer(after, say)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _toy_votes(batch, n_in, n_out, dim, seed):
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


def _toy(args):
    from .routing import dynamic_routing, em_routing

    votes, a_in, labels = _toy_votes(args.batch, args.n_in, args.n_out, args.dim, args.seed)
    votes = votes.astype(args.dtype)
    a_in = a_in.astype(args.dtype)
    print(
        f"caproute toy: {args.batch} samples, {args.n_in} children -> {args.n_out} parents, "
        f"{args.dim}-D votes, {args.dtype}, backend={args.backend!r}"
    )
    print("Each sample's children agree on one hidden parent; routing should find it.\n")
    rows = []
    with config_context(backend=args.backend):
        for name, run in (
            ("dynamic routing", lambda: dynamic_routing(votes, n_iter=3)),
            ("EM routing", lambda: em_routing(votes, a_in, 0.0, 0.0, n_iter=3)),
        ):
            with _notice_if_slow(FIRST_RUN_NOTICE):
                run()  # first call compiles kernels / warms caches
            t0 = time.perf_counter()
            out = run()
            dt = time.perf_counter() - t0
            if isinstance(out, tuple):
                score = _backend.to_numpy(out[1])  # parent activations
            else:
                score = np.linalg.norm(_backend.to_numpy(out), axis=-1)  # capsule lengths
            acc = float(np.mean(np.argmax(score, axis=-1) == labels))
            rows.append((name, acc, dt))
    print(f"{'algorithm':<16} {'found the parent':>17} {'time':>10} {'samples/s':>11}")
    for name, acc, dt in rows:
        print(f"{name:<16} {acc:>16.1%} {dt * 1e3:>8.1f}ms {args.batch / dt:>11.0f}")
    return 0 if all(acc > 0.9 for _, acc, _ in rows) else 1


def _demo(args):
    from . import datasets, models

    if args.full or args.data is not None:
        images, labels = datasets.load_fashion_mnist("test", path=args.data)
        source = "Fashion-MNIST test set"
    else:
        images, labels = datasets.load_fashion_mnist_subset()
        source = "bundled Fashion-MNIST test subset"
    if args.limit is not None:
        images, labels = images[: args.limit], labels[: args.limit]
    source += f" ({len(labels)} images)"
    names = args.model or models.available_pretrained()
    print(f"caproute demo: {source}, backend={args.backend!r}\n")
    rows = []
    for name in names:
        net = models.load_pretrained(name)
        info = models.pretrained_info(name)
        with _notice_if_slow(FIRST_RUN_NOTICE):
            net.predict_scores(images[:2], backend=args.backend)  # compile kernels, warm caches
        progress = args.progress if args.progress is not None else len(labels) > 1000
        t0 = time.perf_counter()
        pred = _backend.to_numpy(
            net.predict(images, backend=args.backend, batch_size=args.batch, progress=progress)
        )
        dt = time.perf_counter() - t0
        acc = float(np.mean(pred == labels))
        rows.append((name, acc, len(labels) / dt, info["test_accuracy"]))
        if args.show:
            classes = net.classes or [str(i) for i in range(net.n_classes)]
            for i in range(min(args.show, len(labels))):
                mark = "ok" if pred[i] == labels[i] else "WRONG"
                print(
                    f"  {name} image {i}: predicted {classes[pred[i]]!r}, "
                    f"true {classes[labels[i]]!r} {mark}"
                )
    print(f"{'model':<30} {'accuracy':>9} {'images/s':>10} {'recorded (full test set)':>25}")
    for name, acc, rate, recorded in rows:
        print(f"{name:<30} {acc:>9.2%} {rate:>10,.0f} {recorded:>25.2%}")
    return 0


def _convert_torch(args):
    try:
        import torch
    except ImportError:
        raise ImportError(
            "convert-torch needs PyTorch (pip install torch); caproute itself never imports it."
        ) from None
    from .models.weights_file import save_file

    obj = torch.load(args.source, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise ValueError(
            f"{args.source!r} does not hold a state dict (a dict of tensors); "
            f"got {type(obj).__name__}."
        )
    tensors, skipped = {}, []
    for name, value in obj.items():
        if isinstance(value, torch.Tensor):
            tensors[str(name)] = (
                value.detach().cpu().float().numpy()
                if value.is_floating_point()
                else value.detach().cpu().numpy()
            )
        else:
            skipped.append(str(name))
    save_file(args.target, tensors, {"source": "caproute convert-torch"})
    print(
        f"wrote {len(tensors)} tensors to {args.target}"
        + (f"; skipped non-tensor entries {skipped}" if skipped else "")
    )
    return 0


def _info(args):
    from . import __version__

    print(f"caproute {__version__}")
    print(f"numba: {'available' if _backend.numba_available() else 'not installed'}")
    cupy, reason = _backend.cupy_status()
    print(f"cupy:  {'usable' if cupy is not None else reason}")
    print("\ncapability table (which implementations each operation has):")
    table = _backend.capabilities()
    print(f"  {'operation':<20} {'reference':>9} {'numba':>6} {'cupy':>5}")
    for op, impls in sorted(table.items()):
        marks = ["yes" if impls[k] else "-" for k in ("reference", "numba", "cupy")]
        print(f"  {op:<20} {marks[0]:>9} {marks[1]:>6} {marks[2]:>5}")
    from . import models

    print("\nshipped models (accuracy on the full Fashion-MNIST test set):")
    for name in models.available_pretrained():
        info = models.pretrained_info(name)
        print(f"  {name:<30} {info['test_accuracy']:.2%}  {info['n_parameters']:,} parameters")
    return 0


def build_parser():
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="caproute", description=__doc__)
    parser.add_argument("--version", action="version", version=f"caproute {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="classify Fashion-MNIST images with the shipped models")
    demo.add_argument("--backend", choices=BACKENDS, default="auto")
    demo.add_argument("--model", action="append", help="a shipped model (repeatable; default all)")
    demo.add_argument(
        "--full",
        action="store_true",
        help="the full 10,000-image test set (apt-get install dataset-fashion-mnist)",
    )
    demo.add_argument("--data", help="folder holding the Fashion-MNIST IDX files (implies --full)")
    demo.add_argument("--limit", type=int, help="only the first N images")
    demo.add_argument("--batch", type=int, default=100, help="images per forward pass")
    demo.add_argument("--show", type=int, default=0, help="print the first N predictions")
    demo.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: on for more than 1,000 images)",
    )
    demo.set_defaults(func=_demo)
    toy = sub.add_parser("toy", help="route a toy problem with both routing algorithms")
    toy.add_argument("--backend", choices=BACKENDS, default="auto")
    toy.add_argument("--batch", type=int, default=256)
    toy.add_argument("--n-in", type=int, default=64)
    toy.add_argument("--n-out", type=int, default=10)
    toy.add_argument("--dim", type=int, default=16)
    toy.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    toy.add_argument("--seed", type=int, default=0)
    toy.set_defaults(func=_toy)
    conv = sub.add_parser(
        "convert-torch", help="convert a PyTorch .pt state dict to .safetensors (needs torch)"
    )
    conv.add_argument("source", help="the .pt / .pth file")
    conv.add_argument("target", help="the .safetensors file to write")
    conv.set_defaults(func=_convert_torch)
    info = sub.add_parser("info", help="show backends and the capability table")
    info.set_defaults(func=_info)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    for name in ("batch", "n_in", "n_out", "dim", "limit", "show"):
        value = getattr(args, name, 1)
        if value is not None and value < (0 if name == "show" else 1):
            print(f"caproute: error: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    try:
        return args.func(args)
    except (
        ImportError,
        ValueError,
        TypeError,
        FileNotFoundError,
        _backend.BackendUnavailableError,
    ) as exc:
        print(f"caproute: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
