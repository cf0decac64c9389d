"""The ``caproute`` command: ``caproute demo`` routes a toy problem, ``caproute info`` shows the
backends and the capability table."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from . import _backend
from ._config import BACKENDS, config_context


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


def _demo(args):
    from .routing import dynamic_routing, em_routing

    votes, a_in, labels = _toy_votes(args.batch, args.n_in, args.n_out, args.dim, args.seed)
    votes = votes.astype(args.dtype)
    a_in = a_in.astype(args.dtype)
    print(
        f"caproute demo: {args.batch} samples, {args.n_in} children -> {args.n_out} parents, "
        f"{args.dim}-D votes, {args.dtype}, backend={args.backend!r}"
    )
    print("Each sample's children agree on one hidden parent; routing should find it.\n")
    rows = []
    with config_context(backend=args.backend):
        for name, run in (
            ("dynamic routing", lambda: dynamic_routing(votes, n_iter=3)),
            ("EM routing", lambda: em_routing(votes, a_in, 0.0, 0.0, n_iter=3)),
        ):
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
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="caproute", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="route a toy problem with both algorithms")
    demo.add_argument("--backend", choices=BACKENDS, default="auto")
    demo.add_argument("--batch", type=int, default=256)
    demo.add_argument("--n-in", type=int, default=64)
    demo.add_argument("--n-out", type=int, default=10)
    demo.add_argument("--dim", type=int, default=16)
    demo.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    info = sub.add_parser("info", help="show backends and the capability table")
    info.set_defaults(func=_info)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    for name in ("batch", "n_in", "n_out", "dim"):
        if getattr(args, name, 1) < 1:
            print(f"caproute: error: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    try:
        return args.func(args)
    except (ImportError, ValueError, TypeError, _backend.BackendUnavailableError) as exc:
        print(f"caproute: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
