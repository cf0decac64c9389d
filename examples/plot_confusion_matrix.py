"""
A shipped model's confusion matrix
==================================

caproute ships two capsule networks trained on Fashion-MNIST and bundles the first 500 images
of its test set. This example classifies those images with one shipped model (the CapsNet by
default; ``--model matrix-capsnet-fashion-mnist`` for the matrix-capsule network) and draws
the confusion matrix: row ``i``, column ``j`` counts the images of class ``i`` that the model
calls class ``j``, so the diagonal holds the correct answers and its sum over the total is the
accuracy. The CapsNet mixes up shirts with T-shirts, pullovers and coats most.

Run it as ``python examples/plot_confusion_matrix.py [--out confusion.png]``: without
``--out`` it shows the figure, or saves ``plot_confusion_matrix.png`` next to this script
where there is no display. Needs matplotlib (``pip install "caproute[examples]"``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from caproute import models
from caproute.datasets import load_fashion_mnist_subset

TITLE = "A shipped model's confusion matrix"
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


def compute(model="capsnet-fashion-mnist", n_images=500):
    """Classify the first ``n_images`` bundled test images with a shipped model.

    Returns a dict: ``confusion`` (n_classes, n_classes) counts, true class by row and
    predicted class by column; ``classes``, the class names; ``accuracy``; ``model``.
    """
    net = models.load_pretrained(model)
    images, labels = load_fashion_mnist_subset()
    images, labels = images[:n_images], labels[:n_images]
    predicted = np.asarray(net.predict(images))
    k = net.n_classes
    confusion = np.bincount(labels * k + predicted, minlength=k * k).reshape(k, k)
    return {
        "confusion": confusion,
        "classes": list(net.classes),
        "accuracy": float(np.mean(predicted == labels)),
        "model": model,
    }


def draw(result):
    """The figure: the confusion matrix as a heat map, with every count written in."""
    import matplotlib.pyplot as plt

    confusion, classes = result["confusion"], result["classes"]
    fig, ax = plt.subplots(figsize=(6.8, 5.8), layout="constrained")
    image = ax.imshow(confusion, cmap="Blues")
    fig.colorbar(image, ax=ax, label="images", shrink=0.8)
    threshold = confusion.max() / 2
    for (i, j), count in np.ndenumerate(confusion):
        if count:
            colour = "white" if count > threshold else "black"
            ax.text(j, i, str(count), ha="center", va="center", fontsize=8, color=colour)
    ticks = range(len(classes))
    ax.set_xticks(ticks, classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(ticks, classes, fontsize=8)
    ax.set(xlabel="predicted class", ylabel="true class")
    n = int(confusion.sum())
    ax.set_title(f"{result['model']}: {result['accuracy']:.1%} of {n} images", fontsize=10)
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
    parser.add_argument(
        "--model",
        default="capsnet-fashion-mnist",
        choices=models.available_pretrained(),
        help="the shipped model (default: capsnet-fashion-mnist)",
    )
    parser.add_argument(
        "--n-images", type=int, default=500, help="bundled test images classified (1-500)"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.n_images <= 500:
        parser.error(f"--n-images must be between 1 and 500; got {args.n_images}")
    problem = missing_matplotlib(parser.prog)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    use_agg_when_headless(args.out)
    result = compute(args.model, args.n_images)
    n = int(result["confusion"].sum())
    print(f"{result['model']}: accuracy {result['accuracy']:.1%} on {n} bundled test images")
    path = show_or_save(draw(result), args.out, globals().get("__file__", sys.argv[0]))
    if path is not None:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    status = main()
    if status:
        sys.exit(status)
