"""Data sets: an IDX reader, Fashion-MNIST (full set and a bundled test subset)."""

from .fashion_mnist import (
    CLASS_NAMES,
    DEBIAN_PATH,
    fashion_mnist_available,
    load_fashion_mnist,
    load_fashion_mnist_subset,
)
from .idx import read_idx

__all__ = [
    "CLASS_NAMES",
    "DEBIAN_PATH",
    "fashion_mnist_available",
    "load_fashion_mnist",
    "load_fashion_mnist_subset",
    "read_idx",
]
