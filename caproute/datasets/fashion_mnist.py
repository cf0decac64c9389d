"""Fashion-MNIST: the full set from the Debian package or a user path, and a bundled subset."""

from __future__ import annotations

import os
from importlib import resources

import numpy as np

from .idx import read_idx

#: Where ``apt-get install dataset-fashion-mnist`` puts the files.
DEBIAN_PATH = "/usr/share/datasets/fashion-mnist"

#: Class names in label order (Xiao, Rasul and Vollgraf 2017).
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_SUBSET = "fashion_mnist_test_subset.npz"


def _find(directory, stem):
    for name in (stem + ".gz", stem):
        candidate = os.path.join(directory, name)
        if os.path.exists(candidate):
            return candidate
    return None


def fashion_mnist_available(path: os.PathLike | str | None = None) -> bool:
    """Whether the full Fashion-MNIST files are found at `path` (default: the Debian location).

    Parameters
    ----------
    path : str or os.PathLike, optional
        Folder to look in for the four IDX files (gzip-compressed or not). Default: the Debian
        package's folder, ``/usr/share/datasets/fashion-mnist``.

    Returns
    -------
    bool
        True when the training and test images and labels are all there.

    Examples
    --------
    >>> from caproute.datasets import fashion_mnist_available
    >>> isinstance(fashion_mnist_available(), bool)
    True
    """
    directory = DEBIAN_PATH if path is None else os.fspath(path)
    return all(_find(directory, stem) is not None for pair in _FILES.values() for stem in pair)


def load_fashion_mnist(
    split: str = "test", *, path: os.PathLike | str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Load the full Fashion-MNIST training or test set.

    Parameters
    ----------
    split : {"train", "test"}, default="test"
        60,000 training or 10,000 test images.
    path : str or os.PathLike, optional
        Folder holding the four IDX files (gzip-compressed or not). Default: the Debian
        package's folder, ``/usr/share/datasets/fashion-mnist``.

    Returns
    -------
    images : ndarray of shape (n_images, 28, 28), uint8
        Grey levels 0 (background) to 255.
    labels : ndarray of shape (n_images,), uint8
        Class indices 0 to 9, in the order of :data:`CLASS_NAMES`.

    Raises
    ------
    FileNotFoundError
        If the files are not there; the message says how to get them.

    Examples
    --------
    >>> from caproute.datasets import fashion_mnist_available, load_fashion_mnist
    >>> if fashion_mnist_available():
    ...     images, labels = load_fashion_mnist("test")
    ...     assert images.shape == (10000, 28, 28)
    """
    if split not in _FILES:
        raise ValueError(f"`split` must be 'train' or 'test'; got {split!r}.")
    directory = DEBIAN_PATH if path is None else os.fspath(path)
    found = [_find(directory, stem) for stem in _FILES[split]]
    if None in found:
        missing = [stem for stem, f in zip(_FILES[split], found, strict=True) if f is None]
        raise FileNotFoundError(
            f"Fashion-MNIST {split} files {missing} not found in {directory!r}. Install them with "
            "`apt-get install dataset-fashion-mnist` or pass `path=` to a folder holding the IDX "
            "files (https://github.com/zalandoresearch/fashion-mnist)."
        )
    images, labels = (read_idx(f) for f in found)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"Fashion-MNIST {split} files in {directory!r} do not pair up: images {images.shape}, "
            f"labels {labels.shape}."
        )
    return images, labels


def load_fashion_mnist_subset() -> tuple[np.ndarray, np.ndarray]:
    """The bundled test subset: the first 500 images of the Fashion-MNIST test set.

    Shipped inside the package (MIT licence, Zalando SE), so demos and tests run offline.

    Returns
    -------
    images : ndarray of shape (500, 28, 28), uint8
        Grey levels 0 (background) to 255.
    labels : ndarray of shape (500,), uint8
        Class indices 0 to 9, in the order of :data:`CLASS_NAMES`.

    Examples
    --------
    >>> from caproute.datasets import load_fashion_mnist_subset
    >>> images, labels = load_fashion_mnist_subset()
    >>> images.shape, labels.shape
    ((500, 28, 28), (500,))
    """
    with resources.files(__package__).joinpath("data", _SUBSET).open("rb") as f:
        with np.load(f, allow_pickle=False) as data:
            return data["images"].copy(), data["labels"].copy()
