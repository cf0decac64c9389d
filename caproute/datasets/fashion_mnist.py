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
_IMAGE_SHAPE = (28, 28)


def _directory(path):
    if path is None:
        return DEBIAN_PATH
    if isinstance(path, bool) or not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(
            f"`path` must be a folder (str or os.PathLike) or None; got {type(path).__name__}."
        )
    return os.fsdecode(os.fspath(path))


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
    directory = _directory(path)
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
    ValueError
        If `split` is not "train" or "test", `path` is a file, or the files are not
        Fashion-MNIST: not IDX (see :func:`read_idx`), images that are not uint8 28 x 28,
        labels outside the classes 0..9, or images and labels of different counts.
    TypeError
        If `path` is not a path.

    Examples
    --------
    >>> from caproute.datasets import fashion_mnist_available, load_fashion_mnist
    >>> if fashion_mnist_available():
    ...     images, labels = load_fashion_mnist("test")
    ...     assert images.shape == (10000, 28, 28)
    """
    if not isinstance(split, str) or split not in _FILES:
        raise ValueError(f"`split` must be 'train' or 'test'; got {split!r}.")
    directory = _directory(path)
    if path is not None and os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(
            f"`path` must be a folder holding the Fashion-MNIST IDX files; got {directory!r}, "
            "a file."
        )
    found = [_find(directory, stem) for stem in _FILES[split]]
    if None in found:
        missing = [stem for stem, f in zip(_FILES[split], found, strict=True) if f is None]
        raise FileNotFoundError(
            f"Fashion-MNIST {split} files {missing} not found in {directory!r}. Install them with "
            "`apt-get install dataset-fashion-mnist` or pass `path=` to a folder holding the IDX "
            "files (https://github.com/zalandoresearch/fashion-mnist)."
        )
    images, labels = (read_idx(f) for f in found)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != _IMAGE_SHAPE:
        raise ValueError(
            f"Fashion-MNIST {split} images file {found[0]!r} holds {images.dtype} of shape "
            f"{images.shape}; expected uint8 images of shape (n_images, 28, 28)."
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(
            f"Fashion-MNIST {split} labels file {found[1]!r} holds {labels.dtype} of shape "
            f"{labels.shape}; expected uint8 labels of shape (n_images,)."
        )
    outside = np.flatnonzero(labels >= len(CLASS_NAMES))
    if outside.size:
        shown = ", ".join(f"{labels[i]} at index {i}" for i in outside[:3])
        raise ValueError(
            f"Fashion-MNIST {split} labels file {found[1]!r} holds {outside.size} label"
            f"{'s' if outside.size != 1 else ''} outside the {len(CLASS_NAMES)} classes "
            f"0..{len(CLASS_NAMES) - 1} ({shown}{', ...' if outside.size > 3 else ''}); the "
            "file is corrupt or not Fashion-MNIST labels."
        )
    if images.shape[0] != labels.shape[0]:
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
