"""
Dynamic routing: the couplings over iterations
==============================================

Twelve child capsules vote for four parent capsules. Children 0-5 agree on parent 0 (their
predictions ``u_hat_ij`` for it point the same way), children 6-9 agree on parent 2, and
children 10 and 11 agree with nobody; every other prediction is short noise.

Routing starts from uniform couplings ``c_ij = 1/4``. Each iteration adds the agreement
``u_hat_ij . v_j`` to the logits, so a child's coupling moves to the parent whose output its
prediction agrees with. ``caproute.dynamic_routing(u_hat, n_iter=t, return_coupling=True)``
returns the couplings of iteration ``t``; the heat maps show them for ``t = 1 .. 6``, and the
last panel the parents' lengths ``|v_j|``, which grow for the parents that children agree on.

Run it as ``python examples/plot_routing_couplings.py [--out couplings.png] [--seed 0]``:
without ``--out`` it shows the figure, or saves ``plot_routing_couplings.png`` next to this
script where there is no display. Needs matplotlib (``pip install "caproute[examples]"``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

import caproute as cr

TITLE = "Dynamic routing: the couplings over iterations"
MATPLOTLIB_MISSING = (
    "{name}: this example draws with matplotlib, which is not installed; "
    'install it with `pip install "caproute[examples]"` (or `pip install matplotlib`).'
)


def missing_matplotlib(name):
    """The message to print when matplotlib cannot be imported, or None when it can."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return MATPLOTLIB_MISSING.format(name=name)
    return None


def make_votes(seed=0, n_in=12, n_out=4, dim=8):
    """Predictions ``u_hat`` of shape (1, n_in, n_out, dim): two groups of agreeing children.

    Children 0-5 predict nearly the same unit vector for parent 0, children 6-9 for parent 2;
    every other prediction is noise of length about 0.6.
    """
    rng = np.random.default_rng(seed)
    u_hat = rng.normal(scale=0.2, size=(1, n_in, n_out, dim))
    for parent, children in ((0, slice(0, 6)), (2, slice(6, 10))):
        target = rng.normal(size=dim)
        target /= np.linalg.norm(target)
        n = len(range(n_in)[children])
        u_hat[0, children, parent] = target + 0.15 * rng.normal(size=(n, dim))
    return u_hat


def compute(seed=0, n_iter=6):
    """Route for 1 .. n_iter iterations.

    Returns a dict: ``couplings`` (n_iter, n_in, n_out), the couplings of iteration t in row
    t - 1, and ``lengths`` (n_iter, n_out), the parents' lengths after t iterations.
    """
    u_hat = make_votes(seed)
    couplings, lengths = [], []
    for t in range(1, n_iter + 1):
        v, c = cr.dynamic_routing(u_hat, n_iter=t, return_coupling=True)
        couplings.append(c[0])
        lengths.append(np.linalg.norm(v[0], axis=-1))
    return {"couplings": np.stack(couplings), "lengths": np.stack(lengths)}


def draw(result):
    """The figure: one heat map of the couplings per iteration, then the parents' lengths."""
    import matplotlib.pyplot as plt

    couplings, lengths = result["couplings"], result["lengths"]
    n_iter, n_in, n_out = couplings.shape
    fig, axes = plt.subplots(
        1,
        n_iter + 1,
        figsize=(1.5 * n_iter + 3.5, 4),
        layout="constrained",
        gridspec_kw={"width_ratios": [1] * n_iter + [2.6]},
    )
    for t, ax in enumerate(axes[:-1]):
        image = ax.imshow(couplings[t], vmin=0.0, vmax=1.0, cmap="Blues", aspect="auto")
        ax.set_title(f"iteration {t + 1}", fontsize=9)
        ax.set_xticks(range(n_out))
        ax.set_xlabel("parent j", fontsize=8)
        ax.set_yticks(range(n_in) if t == 0 else [])
        if t == 0:
            ax.set_ylabel("child i")
    fig.colorbar(image, ax=axes[:-1], label="coupling c_ij", shrink=0.8)
    ax = axes[-1]
    for j in range(n_out):
        ax.plot(range(1, n_iter + 1), lengths[:, j], marker="o", label=f"parent {j}")
    ax.set(xlabel="iterations", ylabel="|v_j|", ylim=(0, 1), title="parents' lengths")
    ax.legend(fontsize=8)
    return fig


def show_or_save(fig, out, script):
    """Save to ``out``; else leave it to sphinx-gallery, show it, or save next to the script."""
    import matplotlib
    import matplotlib.pyplot as plt

    if out is None and "sphinx_gallery" in sys.modules:
        return None  # sphinx-gallery collects the open figure
    if out is None and matplotlib.get_backend().lower() != "agg":
        plt.show()
        return None
    path = Path(out) if out is not None else Path(script).with_suffix(".png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def use_agg_when_headless(out):
    """Draw with Agg when saving to a file or when there is no display."""
    import matplotlib

    no_display = sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )
    if out is not None or no_display:
        matplotlib.use("Agg")


def main(argv=None):
    """Run the example; return its exit status (0 done, 1 matplotlib missing)."""
    parser = argparse.ArgumentParser(description=TITLE)
    parser.add_argument("--out", help="write the figure to this PNG file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the votes (default: 0)")
    parser.add_argument("--n-iter", type=int, default=6, help="iterations drawn (default: 6)")
    args = parser.parse_args(argv)
    if args.n_iter < 1:
        parser.error(f"--n-iter must be at least 1; got {args.n_iter}")
    problem = missing_matplotlib(parser.prog)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    use_agg_when_headless(args.out)
    result = compute(args.seed, args.n_iter)
    print("largest coupling per child, mean over children, by iteration:")
    print(" ".join(f"{m:.3f}" for m in result["couplings"].max(axis=-1).mean(axis=-1)))
    path = show_or_save(draw(result), args.out, globals().get("__file__", sys.argv[0]))
    if path is not None:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    status = main()
    if status:
        sys.exit(status)
