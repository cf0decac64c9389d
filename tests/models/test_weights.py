"""caproute's own weight files: safetensors format, save/load, bad files, shipped models."""

import json
import os
import re
import struct

import numpy as np
import pytest

from caproute import models
from caproute.models import WeightsFileError, WeightsMismatchError
from caproute.models.weights_file import load_file, save_file


@pytest.fixture
def tiny(tmp_path):
    net = models.matrix_capsnet(4, 3, 3, 2, n_iter=2, inverse_temperature=0.01).initialize(
        random_state=0
    )
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


@pytest.mark.parametrize(
    "dtype", ["<f4", "<f8", "<f2", "<i8", "<i4", "<i2", "i1", "u1", "<u2", "?"]
)
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
    (tmp_path / "bf.safetensors").write_bytes(
        struct.pack("<Q", len(header)) + header + bits.tobytes()
    )
    np.testing.assert_array_equal(load_file(tmp_path / "bf.safetensors")[0]["w"], values)


def _rewrite_header(path, edit):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    edit(header)
    new = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])


def test_truncated_file(tiny):
    _, path = tiny
    raw = path.read_bytes()
    path.write_bytes(raw[:-100])
    with pytest.raises(
        WeightsFileError, match=r"offsets .* outside the .* data bytes \(truncated\?\)"
    ):
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
    with pytest.raises(
        WeightsFileError,
        match=r"tensor 'conv1.bias' holds 16 bytes but shape \[5\] of F32 needs 20",
    ):
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
        for key in (
            "file",
            "sha256",
            "training_command",
            "epochs",
            "test_accuracy",
            "subset_accuracy",
            "n_parameters",
        ):
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


# --- the format's rules, checked before the safetensors package reads a file ----------------


def _write_raw(path, header, data=b""):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def _invalid(path, reason):
    """The exact message of a WeightsFileError for ``path``, as a ``match=`` pattern."""
    return "^" + re.escape(f"{str(path)!r} is not a valid safetensors file: {reason}.") + "$"


def _f32(name, begin, n=1):
    return {name: {"dtype": "F32", "shape": [n], "data_offsets": [begin, begin + 4 * n]}}


def test_hole_between_tensors(tmp_path):
    path = _write_raw(
        tmp_path / "h.safetensors",
        {**_f32("a", 0), **_f32("b", 8)},
        np.arange(3, dtype="<f4").tobytes(),
    )
    reason = "a hole of 4 unused data bytes between tensors 'a' and 'b' (bytes 4 to 8)"
    with pytest.raises(WeightsFileError, match=_invalid(path, reason)):
        load_file(path)
    path = _write_raw(path, _f32("a", 4), np.arange(2, dtype="<f4").tobytes())
    reason = "a hole of 4 unused data bytes before the first tensor 'a' (bytes 0 to 4)"
    with pytest.raises(WeightsFileError, match=_invalid(path, reason)):
        load_file(path)


def test_trailing_bytes(tiny, tmp_path):
    _, path = tiny
    n_data = path.stat().st_size - 8 - struct.unpack("<Q", path.read_bytes()[:8])[0]
    path.write_bytes(path.read_bytes() + b"\0" * 3)
    reason = (
        f"3 trailing bytes after the last tensor (the tensors end at byte {n_data} of the "
        f"{n_data + 3} data bytes)"
    )
    with pytest.raises(WeightsFileError, match=_invalid(path, reason)):
        models.load(path)
    empty = _write_raw(tmp_path / "e.safetensors", {}, b"x")
    reason = (
        "1 trailing bytes after the last tensor (the tensors end at byte 0 of the 1 data bytes)"
    )
    with pytest.raises(WeightsFileError, match=_invalid(empty, reason)):
        load_file(empty)


def test_overlapping_tensors(tmp_path):
    path = _write_raw(
        tmp_path / "o.safetensors",
        {**_f32("a", 0, 2), **_f32("b", 4)},
        np.arange(2, dtype="<f4").tobytes(),
    )
    with pytest.raises(WeightsFileError, match=_invalid(path, "tensors 'a' and 'b' overlap")):
        load_file(path)
    # an empty tensor inside another one is refused too (as the safetensors package does)
    header = {**_f32("a", 0, 2), "e": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]}}
    path = _write_raw(path, header, np.arange(2, dtype="<f4").tobytes())
    with pytest.raises(WeightsFileError, match=_invalid(path, "tensors 'a' and 'e' overlap")):
        load_file(path)


def test_file_written_by_the_safetensors_package_loads(tmp_path):
    import safetensors.numpy as st

    arrays = {
        "w": np.arange(12, dtype=np.float16).reshape(3, 4),
        "i": np.array([-1, 2], np.int8),
        "flag": np.array(True),
        "empty": np.zeros((2, 0), np.float64),
        "u": np.arange(5, dtype=np.uint64),
    }
    st.save_file(arrays, tmp_path / "theirs.safetensors", metadata={"who": "safetensors"})
    for source in (tmp_path / "theirs.safetensors", str(tmp_path / "theirs.safetensors")):
        ours, meta = load_file(source)
        assert meta == {"who": "safetensors"} and sorted(ours) == sorted(arrays)
        for k, v in arrays.items():
            assert ours[k].dtype == v.dtype and ours[k].shape == v.shape and ours[k].flags.writeable
            np.testing.assert_array_equal(ours[k], v)
    (tmp_path / "bytes.safetensors").write_bytes(st.save({"x": np.ones(3, np.float32)}))
    tensors, meta = load_file(tmp_path / "bytes.safetensors")
    assert meta == {} and tensors["x"].tolist() == [1.0, 1.0, 1.0]


def test_bf16_next_to_other_tensors(tmp_path):
    values = np.array([[0.5, -1.0], [256.0, -0.0078125]], dtype=np.float32)
    bits = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    header = {
        "__metadata__": {"k": "v"},
        **_f32("a", 0, 2),
        "b": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [8, 16]},
        **_f32("c", 16),
    }
    data = np.array([1, 2], "<f4").tobytes() + bits + np.array([3], "<f4").tobytes()
    tensors, meta = load_file(_write_raw(tmp_path / "bf.safetensors", header, data))
    assert meta == {"k": "v"} and tensors["b"].dtype == np.float32
    np.testing.assert_array_equal(tensors["b"], values)
    np.testing.assert_array_equal(tensors["a"], [1, 2])
    np.testing.assert_array_equal(tensors["c"], [3])


def test_header_length_larger_than_the_file(tmp_path):
    path = tmp_path / "short.safetensors"
    path.write_bytes(struct.pack("<Q", 1000) + b'{"a": 1}')
    reason = (
        "the header claims 1000 bytes but the file has 8 after the length (truncated or not "
        "safetensors)"
    )
    with pytest.raises(WeightsFileError, match=_invalid(path, reason)):
        load_file(path)
    path.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    reason = (
        "the header claims 1099511627776 bytes, more than the 100000000 allowed (not safetensors?)"
    )
    with pytest.raises(WeightsFileError, match=_invalid(path, reason)):
        load_file(path)


@pytest.mark.parametrize(
    "raw, reason",
    [
        (
            b"{{{{",
            (
                "the header is not JSON (Expecting property name enclosed in double quotes: "
                "line 1 column 2 (char 1))"
            ),
        ),
        (
            b'{"a": \xff}',
            (
                "the header is not JSON ('utf-8' codec can't decode byte 0xff in position "
                "6: invalid start byte)"
            ),
        ),
        (b'{"a": NaN}', "the header is not JSON (NaN is not JSON)"),
        (b"[1, 2]", "the header is not a JSON object"),
        (b'{"a": {}, "a": {}}', "the header names 'a' twice"),
        (b'{"__metadata__": {"k": 1}}', "__metadata__ must map strings to strings"),
    ],
)
def test_header_not_json(tmp_path, raw, reason):
    path = _write_raw(tmp_path / "j.safetensors", raw)
    with pytest.raises(WeightsFileError, match=_invalid(path, reason)):
        load_file(path)


@pytest.mark.parametrize(
    "entry, reason",
    [
        ({"dtype": "F32", "shape": [1]}, "entry 't' lacks a dtype, a shape or two data_offsets"),
        (
            {"dtype": "F32", "shape": [1.0], "data_offsets": [0, 4]},
            "tensor 't' has shape [1.0], not a list of non-negative integers",
        ),
        (
            {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]},
            "tensor 't' has shape [-1], not a list of non-negative integers",
        ),
        (
            {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 4]},
            "tensor 't' has data_offsets [0, 4, 4], not two non-negative integers",
        ),
        (
            {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]},
            "tensor 't' has unsupported dtype 'F8_E4M3'",
        ),
        (
            {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "tensor 't' has offsets [0, 8] outside the 4 data bytes (truncated?)",
        ),
        (
            {"dtype": "F64", "shape": [1], "data_offsets": [0, 4]},
            "tensor 't' holds 4 bytes but shape [1] of F64 needs 8",
        ),
    ],
)
def test_bad_entry_messages(tmp_path, entry, reason):
    path = _write_raw(tmp_path / "e.safetensors", {"t": entry}, b"\0" * 4)
    with pytest.raises(WeightsFileError, match=_invalid(path, reason)):
        load_file(path)


def test_every_damaged_file_raises_weights_file_error(tmp_path):
    """No prefix of a valid file, and no single changed header byte, escapes as another error."""
    good = tmp_path / "good.safetensors"
    save_file(
        good, {"a": np.arange(3, dtype=np.float32), "b": np.ones((2, 2), np.int16)}, {"k": "v"}
    )
    raw = good.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    bad = tmp_path / "bad.safetensors"
    for end in range(len(raw)):
        bad.write_bytes(raw[:end])
        with pytest.raises(WeightsFileError):
            load_file(bad)
    for i in range(8, 8 + n):
        for byte in (b"0", b"9", b"}", b"\xff"):
            bad.write_bytes(raw[:i] + byte + raw[i + 1 :])
            try:
                load_file(bad)
            except WeightsFileError:
                pass


def test_save_file_refuses_what_it_cannot_store(tmp_path):
    path = tmp_path / "x.safetensors"
    message = r"^tensor 'z': dtype complex64 cannot be stored in safetensors\.$"
    with pytest.raises(TypeError, match=message):
        save_file(path, {"z": np.zeros(2, np.complex64)})
    with pytest.raises(TypeError, match=r"^safetensors metadata must map str to str\.$"):
        save_file(path, {"a": np.zeros(2)}, {"n": 1})
    with pytest.raises(ValueError, match="'__metadata__' is reserved"):
        save_file(path, {"__metadata__": np.zeros(2)})
    # big-endian, non-contiguous and 0-d arrays are stored as their values
    arrays = {
        "be": np.arange(4, dtype=">f8"),
        "strided": np.arange(12, dtype=np.int32)[::3],
        "scalar": np.float32(2.5),
    }
    save_file(path, arrays)
    back, _ = load_file(path)
    for k, v in arrays.items():
        np.testing.assert_array_equal(back[k], v)
        assert back[k].shape == np.shape(v) and back[k].dtype.isnative
