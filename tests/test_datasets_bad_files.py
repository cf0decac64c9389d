"""Malformed IDX files and Fashion-MNIST folders: one clear ValueError per kind of bad file."""

import gzip
import re
import zlib

import numpy as np
import pytest

from caproute import datasets


def _exact(message):
    return "^" + re.escape(message) + "$"


def _idx_bytes(array, code=0x08):
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape
    )
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write(path, raw, compress=False):
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


@pytest.mark.parametrize(
    "raw, what",
    [
        (b"\x89PNG\r\n\x1a\n", ": it looks like a PNG image"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", ": it looks like a JPEG image"),
        (b"label,image\n", ": it looks like a text file"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", ""),  # type code 7 is not IDX's
        (b"\x00\x00", ""),
        (b"", ""),
    ],
)
def test_wrong_magic(tmp_path, raw, what):
    path = _write(tmp_path / "x-idx1-ubyte", raw)
    message = (
        f"IDX file {str(path)!r} does not start with an IDX magic number (0x00 0x00, a type code "
        f"in [8, 9, 11, 12, 13, 14], ndim); got {raw[:4]!r}{what}."
    )
    with pytest.raises(ValueError, match=_exact(message)):
        datasets.read_idx(path)


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_header(tmp_path, compress):
    raw = _idx_bytes(np.zeros((2, 3, 4), np.uint8))
    path = _write(tmp_path / "x.gz", raw[:9], compress)
    message = (
        f"IDX file {str(path)!r} is truncated inside its header: 3 dimensions need 12 bytes of "
        "sizes, the file has 5."
    )
    with pytest.raises(ValueError, match=_exact(message)):
        datasets.read_idx(path)


@pytest.mark.parametrize("compress", [False, True])
def test_header_whose_sizes_overflow(tmp_path, compress):
    raw = bytes([0, 0, 0x0E, 3]) + b"\xff\xff\xff\xff" * 3 + bytes(8)
    path = _write(tmp_path / "x", raw, compress)
    message = (
        f"IDX file {str(path)!r} has a header whose sizes overflow: shape (4294967295, "
        "4294967295, 4294967295) of float64 would need 633825299671392843082401579000 data "
        "bytes, more than any file can hold; the file is corrupt or not IDX."
    )
    with pytest.raises(ValueError, match=_exact(message)):
        datasets.read_idx(path)
    # huge but representable sizes: refused from the data actually there, nothing allocated
    raw = bytes([0, 0, 0x08, 2]) + b"\xff\xff\xff\xff" + (16).to_bytes(4, "big") + bytes(10)
    path = _write(tmp_path / "y", raw, compress)
    message = (
        f"IDX file {str(path)!r} holds 10 data bytes, but its header (shape (4294967295, 16), "
        "uint8) needs 68719476720; the file is truncated."
    )
    with pytest.raises(ValueError, match=_exact(message)):
        datasets.read_idx(path)


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_data_and_trailing_bytes(tmp_path, compress):
    raw = _idx_bytes(np.arange(20, dtype=np.uint8).reshape(4, 5))
    path = _write(tmp_path / "x", raw[:-3], compress)
    message = (
        f"IDX file {str(path)!r} holds 17 data bytes, but its header (shape (4, 5), uint8) "
        "needs 20; the file is truncated."
    )
    with pytest.raises(ValueError, match=_exact(message)):
        datasets.read_idx(path)
    path = _write(tmp_path / "x", raw + b"abc", compress)
    message = (
        f"IDX file {str(path)!r} holds 23 data bytes, but its header (shape (4, 5), uint8) "
        "needs 20; 3 trailing bytes follow the data (corrupt, or not IDX)."
    )
    with pytest.raises(ValueError, match=_exact(message)):
        datasets.read_idx(path)


def test_damaged_gzip(tmp_path):
    raw = gzip.compress(_idx_bytes(np.arange(200, dtype=np.uint8)))
    message = "IDX file {!r} is gzip-compressed, but its compressed data is damaged or truncated."
    path = tmp_path / "x.gz"
    for damaged in (raw[:-12], raw[:15], raw[:-4] + b"\0\0\0\0"):  # cut short, cut, bad CRC
        path.write_bytes(damaged)
        with pytest.raises(ValueError, match=_exact(message.format(str(path)))):
            datasets.read_idx(path)
    flipped = bytearray(raw)
    flipped[12] ^= 0xFF  # inside the deflate stream
    path.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match=_exact(message.format(str(path)))):
        datasets.read_idx(path)
    assert zlib.error  # the kind of error the reader turns into this message


def test_compression_is_recognised_by_content(tmp_path):
    arr = np.arange(6, dtype=np.int16).reshape(2, 3)
    raw = _idx_bytes(arr, code=0x0B)
    for name, compress in (("plain.gz", False), ("compressed-idx", True)):
        path = _write(tmp_path / name, raw, compress)
        out = datasets.read_idx(path)
        np.testing.assert_array_equal(out, arr)
        assert out.dtype == np.int16 and out.dtype.isnative and out.flags.writeable


def test_not_a_file(tmp_path):
    with pytest.raises(
        ValueError, match=_exact(f"IDX file {str(tmp_path)!r} is a directory, not a file.")
    ):
        datasets.read_idx(tmp_path)
    with pytest.raises(
        TypeError, match=_exact("`path` must be a path (str or os.PathLike); got int.")
    ):
        datasets.read_idx(3)
    with pytest.raises(FileNotFoundError):
        datasets.read_idx(tmp_path / "missing")


# ---------------------------------------------------------------- Fashion-MNIST folders -----


def _folder(tmp_path, images, labels, split="test"):
    stems = {
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }[split]
    _write(tmp_path / stems[0], _idx_bytes(images))
    _write(tmp_path / (stems[1] + ".gz"), _idx_bytes(labels), compress=True)
    return tmp_path / stems[0], tmp_path / (stems[1] + ".gz")


def _images(n=5):
    return np.random.default_rng(0).integers(0, 256, (n, 28, 28)).astype(np.uint8)


def test_labels_outside_the_classes(tmp_path):
    labels = np.array([0, 9, 10, 3, 255], np.uint8)
    _, label_file = _folder(tmp_path, _images(), labels)
    message = (
        f"Fashion-MNIST test labels file {str(label_file)!r} holds 2 labels outside the 10 "
        "classes 0..9 (10 at index 2, 255 at index 4); the file is corrupt or not Fashion-MNIST "
        "labels."
    )
    with pytest.raises(ValueError, match=_exact(message)):
        datasets.load_fashion_mnist("test", path=tmp_path)
    labels = np.full(5, 12, np.uint8)
    _folder(tmp_path, _images(), labels)
    with pytest.raises(
        ValueError,
        match=r"holds 5 labels outside the 10 classes 0\.\.9 \(12 at index 0, 12 at index 1, 12 at index 2, \.\.\.\)",
    ):
        datasets.load_fashion_mnist("test", path=tmp_path)


def test_files_that_are_not_fashion_mnist(tmp_path):
    image_file, label_file = _folder(tmp_path, _images()[:, :14], np.zeros(5, np.uint8))
    message = (
        f"Fashion-MNIST test images file {str(image_file)!r} holds uint8 of shape (5, 14, 28); "
        "expected uint8 images of shape (n_images, 28, 28)."
    )
    with pytest.raises(ValueError, match=_exact(message)):
        datasets.load_fashion_mnist("test", path=tmp_path)
    _write(image_file, _idx_bytes(_images().astype(np.float32), code=0x0D))
    with pytest.raises(
        ValueError, match=r"holds float32 of shape \(5, 28, 28\); expected uint8 images"
    ):
        datasets.load_fashion_mnist("test", path=tmp_path)
    _folder(tmp_path, _images(), np.zeros((5, 1), np.uint8))  # labels and images swapped?
    message = (
        f"Fashion-MNIST test labels file {str(label_file)!r} holds uint8 of shape (5, 1); "
        "expected uint8 labels of shape (n_images,)."
    )
    with pytest.raises(ValueError, match=_exact(message)):
        datasets.load_fashion_mnist("test", path=tmp_path)
    _folder(tmp_path, _images(), np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match=r"do not pair up: images \(5, 28, 28\), labels \(4,\)"):
        datasets.load_fashion_mnist("test", path=tmp_path)
    image_file.write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(
        ValueError,
        match=r"does not start with an IDX magic number .*: it looks like a PNG image\.$",
    ):
        datasets.load_fashion_mnist("test", path=tmp_path)


def test_loader_arguments(tmp_path):
    _folder(tmp_path, _images(), np.arange(5, dtype=np.uint8), split="train")
    x, y = datasets.load_fashion_mnist("train", path=tmp_path)
    assert x.shape == (5, 28, 28) and y.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(
        ValueError, match=_exact("`split` must be 'train' or 'test'; got ['test'].")
    ):
        datasets.load_fashion_mnist(["test"], path=tmp_path)
    file = tmp_path / "train-images-idx3-ubyte"
    message = (
        f"`path` must be a folder holding the Fashion-MNIST IDX files; got {str(file)!r}, a file."
    )
    with pytest.raises(ValueError, match=_exact(message)):
        datasets.load_fashion_mnist("train", path=file)
    message = "`path` must be a folder (str or os.PathLike) or None; got int."
    with pytest.raises(TypeError, match=_exact(message)):
        datasets.load_fashion_mnist("train", path=7)
    with pytest.raises(TypeError, match=_exact(message)):
        datasets.fashion_mnist_available(7)
