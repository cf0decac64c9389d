"""
A capsule's length and orientation: the squash
==============================================

A capsule outputs a vector: its **length** is the probability that the entity it stands for
is present, its **orientation** the entity's instantiation parameters (pose, size, stroke
width, ...). ``caproute.squash`` turns any vector into such an output: it keeps the
direction and maps the length ``|s|`` to ``|s|^2 / (1 + |s|^2)``, which is below 1, near 0
for short vectors and near 1 for long ones.

The left panel draws that length map, computed by ``caproute.squash`` on vectors of growing
length; the right panel draws a few 2-D vectors before (grey) and after (colour) the squash,
inside the unit circle that bounds every output.

Run it as ``python examples/plot_squash.py [--out squash.png]``: without ``--out`` it shows
the figure, or saves ``plot_squash.png`` next to this script where there is no display.
Needs matplotlib (``pip install "caproute[examples]"``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

import caproute as cr

TITLE = "A capsule's length and orientation: the squash"
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


def compute(n_lengths=201, max_length=5.0):
    """The squash of vectors of growing length and of a few 2-D vectors.

    Returns a dict: ``s_length`` and ``v_length`` (the input and output lengths of
    ``n_lengths`` vectors along one direction), ``s`` (six 2-D vectors) and ``v`` (their
    squashes).
    """
    direction = np.array([0.6, 0.8])
    s_length = np.linspace(0.0, max_length, n_lengths)
    lines = s_length[:, None] * direction  # (n_lengths, 2): vectors along one direction
    v_length = np.linalg.norm(cr.squash(lines), axis=-1)
    angles = np.linspace(0.0, 2.0 * np.pi, 6, endpoint=False)
    lengths = np.array([0.3, 0.6, 1.0, 1.5, 2.2, 3.0])
    s = lengths[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    return {"s_length": s_length, "v_length": v_length, "s": s, "v": cr.squash(s)}


def draw(result):
    """The figure: the length map (left) and vectors before and after the squash (right)."""
    import matplotlib.pyplot as plt

    fig, (ax_len, ax_vec) = plt.subplots(1, 2, figsize=(9, 4), layout="constrained")
    ax_len.plot(result["s_length"], result["v_length"], label="|squash(s)|")
    ax_len.plot(
        result["s_length"], np.minimum(result["s_length"], 1.0), ":", c="grey", label="min(|s|, 1)"
    )
    ax_len.axhline(1.0, c="grey", lw=0.8)
    ax_len.set(xlabel="|s| (input length)", ylabel="|v| (output length)", ylim=(0, 1.05))
    ax_len.set_title("length: |s|^2 / (1 + |s|^2)")
    ax_len.legend(loc="lower right")

    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, len(result["s"])))
    for s, v, colour in zip(result["s"], result["v"], colours, strict=True):
        ax_vec.annotate("", xy=s, xytext=(0, 0), arrowprops={"arrowstyle": "->", "color": "0.7"})
        ax_vec.annotate("", xy=v, xytext=(0, 0), arrowprops={"arrowstyle": "->", "color": colour})
    theta = np.linspace(0.0, 2.0 * np.pi, 200)
    ax_vec.plot(np.cos(theta), np.sin(theta), c="grey", lw=0.8)
    ax_vec.set(aspect="equal", xlim=(-3.2, 3.2), ylim=(-3.2, 3.2))
    ax_vec.set_title("direction kept, length below 1")
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
    args = parser.parse_args(argv)
    problem = missing_matplotlib(parser.prog)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    use_agg_when_headless(args.out)
    result = compute()
    i = int(np.argmin(np.abs(result["s_length"] - 1.0)))
    print(f"|s| = {result['s_length'][i]:.2f} gives |v| = {result['v_length'][i]:.3f}")
    path = show_or_save(draw(result), args.out, globals().get("__file__", sys.argv[0]))
    if path is not None:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    status = main()
    if status:
        sys.exit(status)
