"""
Classify Fashion-MNIST images with the capsule networks shipped in caproute
===========================================================================

Prints each shipped model's summary, its accuracy per class on the bundled 500 test images
(or the full test set with --full), and a confusion between the two most-confused classes.

    python examples/classify_fashion_mnist.py [--full] [--backend numba]
"""

from __future__ import annotations

import argparse

import numpy as np

from caproute import datasets, models, to_numpy


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--full", action="store_true", help="the full 10,000-image test set")
    ap.add_argument("--backend", default="auto")
    args = ap.parse_args(argv)

    if args.full:
        images, labels = datasets.load_fashion_mnist("test")
    else:
        images, labels = datasets.load_fashion_mnist_subset()
    for name in models.available_pretrained():
        net = models.load_pretrained(name)
        print(net.summary())
        pred = to_numpy(net.predict(images, backend=args.backend))
        print(f"{name}: accuracy {np.mean(pred == labels):.2%} on {len(labels)} images")
        for k, cls in enumerate(datasets.CLASS_NAMES):
            mask = labels == k
            print(f"  {cls:<12} {np.mean(pred[mask] == k):6.1%}  ({mask.sum()} images)")
        confusion = np.zeros((10, 10), dtype=int)
        np.add.at(confusion, (labels, pred), 1)
        np.fill_diagonal(confusion, 0)
        a, b = np.unravel_index(confusion.argmax(), confusion.shape)
        print(
            f"  most confused: {datasets.CLASS_NAMES[a]!r} taken for "
            f"{datasets.CLASS_NAMES[b]!r} {confusion[a, b]} times\n"
        )


if __name__ == "__main__":
    main()
