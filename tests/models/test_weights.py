"""caproute's own weight files: safetensors format, save/load, bad files, shipped models."""

import json
import os
import struct

import numpy as np
import pytest

from caproute import models
from caproute.models import WeightsFileError, WeightsMismatchError
from caproute.models.safetensors import load_file, save_file


@pytest.fixture
def tiny(tmp_path):
    net = models.matrix_capsnet(4, 3, 3, 2, n_iter=2, inverse_temperature=0.01).initialize(random_state=0)
    path = tmp_path / "tiny.safetensors"
    models.save(net, path, metadata={"epochs": "3"})
    return net, path


def test_round_trip_rebuilds_the_model(tiny):
    net, path = tiny
    again = models.load(path)
    assert again.get_config() == net.get_config()
    assert again.metadata["epochs"] == "3"
    x = np.random.default_rng(0).random((2, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(again.predict_scores(x), net.predict_scores(x))


@pytest.mark.parametrize("dtype", ["<f4", "<f8", "<f2", "<i8", "<i4", "<i2", "i1", "u1", "<u2", "?"])
def test_format_round_trip_every_dtype(tmp_path, dtype):
    arr = (np.arange(12) % 3).astype(dtype).reshape(3, 4)
    save_file(tmp_path / "a.safetensors", {"x": arr, "empty": np.zeros((0, 2), dtype)})
    back, meta = load_file(tmp_path / "a.safetensors")
    np.testing.assert_array_equal(back["x"], arr)
    assert back["x"].dtype == np.dtype(dtype) and back["empty"].shape == (0, 2) and meta == {}


def test_interoperates_with_the_safetensors_package(tmp_path):
    st = pytest.importorskip("safetensors.numpy", reason="the safetensors package is not installed")
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, np.float64)}
    st.save_file(arrays, str(tmp_path / "theirs.safetensors"), metadata={"k": "v"})
    ours, meta = load_file(tmp_path / "theirs.safetensors")
    assert meta == {"k": "v"}
    for k in arrays:
        np.testing.assert_array_equal(ours[k], arrays[k])
    save_file(tmp_path / "ours.safetensors", arrays)
    theirs = st.load_file(str(tmp_path / "ours.safetensors"))
    for k in arrays:
        np.testing.assert_array_equal(theirs[k], arrays[k])


def test_bf16_widened_exactly(tmp_path):
    values = np.array([1.0, -2.5, 3.140625], dtype=np.float32)
    bits = (values.view(np.uint32) >> 16).astype("<u2")
    header = json.dumps({"w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}).encode()
    (tmp_path / "bf.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bits.tobytes())
    np.testing.assert_array_equal(load_file(tmp_path / "bf.safetensors")[0]["w"], values)


def _rewrite_header(path, edit):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    edit(header)
    new = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])


def test_truncated_file(tiny):
    _, path = tiny
    raw = path.read_bytes()
    path.write_bytes(raw[:-100])
    with pytest.raises(WeightsFileError, match=r"offsets .* outside the .* data bytes \(truncated\?\)"):
        models.load(path)
    path.write_bytes(raw[:5])
    with pytest.raises(WeightsFileError, match="fewer than the 8-byte header length"):
        models.load(path)
    path.write_bytes(raw[:50])
    with pytest.raises(WeightsFileError, match="the header claims"):
        models.load(path)


def test_not_json_header(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", 4) + b"{{{{")
    with pytest.raises(WeightsFileError, match="the header is not JSON"):
        load_file(path)


def test_bad_entries(tiny):
    _, path = tiny

    def wrong_size(h):
        h["conv1.bias"]["shape"] = [5]

    _rewrite_header(path, wrong_size)
    with pytest.raises(WeightsFileError, match=r"tensor 'conv1.bias' holds 16 bytes but shape \[5\] of F32 needs 20"):
        models.load(path)

    def unknown_dtype(h):
        h["conv1.bias"]["dtype"] = "C64"

    _rewrite_header(path, unknown_dtype)
    with pytest.raises(WeightsFileError, match="unsupported dtype 'C64'"):
        models.load(path)


def test_wrong_shape_and_missing_tensors(tiny, tmp_path):
    net, _ = tiny
    w = net.get_weights()
    w.pop("class_caps.beta_a")
    w["conv1.weight"] = np.zeros((3, 3, 1, 4), np.float32)
    path = tmp_path / "bad.safetensors"
    from caproute.models.serialization import ARCHITECTURE_KEY

    save_file(path, w, {ARCHITECTURE_KEY: json.dumps(net.get_config())})
    with pytest.raises(WeightsMismatchError) as info:
        models.load(path)
    assert "missing tensor 'class_caps.beta_a'" in str(info.value)
    assert "tensor 'conv1.weight' has shape (3, 3, 1, 4); expected (5, 5, 1, 4)" in str(info.value)


def test_wrong_metadata(tiny, tmp_path):
    net, _ = tiny
    path = tmp_path / "m.safetensors"
    save_file(path, net.get_weights(), {"other": "library"})
    with pytest.raises(WeightsFileError, match="does not describe a caproute model"):
        models.load(path)
    save_file(path, net.get_weights(), {"caproute_model": "{not json"})
    with pytest.raises(WeightsFileError, match="the architecture in its metadata is invalid"):
        models.load(path)
    cfg = net.get_config()
    cfg["version"] = 99
    save_file(path, net.get_weights(), {"caproute_model": json.dumps(cfg)})
    with pytest.raises(WeightsFileError, match="version 99 is not supported"):
        models.load(path)


def test_pickles_are_refused(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"\x80\x04junk")
    with pytest.raises(WeightsFileError, match="caproute never unpickles"):
        models.read_state_dict(path)
    npz = tmp_path / "obj.npz"
    np.savez(npz, obj=np.array([{"a": 1}], dtype=object))
    with pytest.raises(WeightsFileError, match="could not be read as an .npz of arrays"):
        models.read_state_dict(npz)


def test_pretrained_registry_and_checksums():
    from caproute.models import registry

    names = models.available_pretrained()
    assert "capsnet-fashion-mnist" in names and "matrix-capsnet-fashion-mnist" in names
    for name in names:
        info = models.pretrained_info(name)
        for key in ("file", "sha256", "training_command", "epochs", "test_accuracy",
                    "subset_accuracy", "n_parameters"):
            assert key in info, (name, key)
        path = registry.resources.files(registry._PACKAGE).joinpath(info["file"])
        assert os.path.getsize(str(path)) < 8_000_000  # shipped files stay small
    with pytest.raises(ValueError, match="no shipped model named 'resnet'"):
        models.pretrained_info("resnet")


def test_damaged_pretrained_file_detected(monkeypatch):
    from caproute.models import registry

    real = registry._registry()
    fake = {k: dict(v, sha256="0" * 64) for k, v in real.items()}
    monkeypatch.setattr(registry, "_registry", lambda: fake)
    with pytest.raises(WeightsFileError, match="the installation is damaged"):
        models.load_pretrained("capsnet-fashion-mnist")
