import gzip

import numpy as np
import pytest

from caproute import datasets


def _write_idx(path, array, code=0x08):
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape
    )
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(data)
    return data


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_round_trip(tmp_path, suffix):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / f"a{suffix}", arr)
    np.testing.assert_array_equal(datasets.read_idx(tmp_path / f"a{suffix}"), arr)
    f32 = np.linspace(0, 1, 6, dtype=np.float32)
    _write_idx(tmp_path / "f", f32, code=0x0D)
    np.testing.assert_array_equal(datasets.read_idx(tmp_path / "f"), f32)


def test_read_idx_bad_files(tmp_path):
    (tmp_path / "x").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="does not start with an IDX magic number"):
        datasets.read_idx(tmp_path / "x")
    data = _write_idx(tmp_path / "y", np.zeros((4, 5), np.uint8))
    (tmp_path / "y").write_bytes(data[:-3])
    with pytest.raises(
        ValueError, match=r"holds 17 data bytes, but its header \(shape \(4, 5\), uint8\) needs 20"
    ):
        datasets.read_idx(tmp_path / "y")


def test_loader_from_a_user_folder(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (7, 28, 28)).astype(np.uint8)
    labels = rng.integers(0, 10, 7).astype(np.uint8)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", imgs)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels)
    x, y = datasets.load_fashion_mnist("test", path=tmp_path)
    np.testing.assert_array_equal(x, imgs)
    np.testing.assert_array_equal(y, labels)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        datasets.load_fashion_mnist("train", path=tmp_path)
    with pytest.raises(ValueError, match="`split` must be 'train' or 'test'"):
        datasets.load_fashion_mnist("valid", path=tmp_path)


def test_bundled_subset():
    x, y = datasets.load_fashion_mnist_subset()
    assert x.shape == (500, 28, 28) and x.dtype == np.uint8 and y.shape == (500,)
    assert set(np.unique(y)) == set(range(10))
    if datasets.fashion_mnist_available():
        full_x, full_y = datasets.load_fashion_mnist("test")
        np.testing.assert_array_equal(x, full_x[:500])
        np.testing.assert_array_equal(y, full_y[:500])
