"""Malformed and foreign files given to the weights readers, the importers and
``convert_torch_checkpoint``: each kind gets one clear error that says what the file is or what
is wrong with it, and nothing is ever unpickled.

The pickles written here hold a ``Bomb``: unpickling it calls ``_explode``, which records the
call and raises. The autouse fixture checks after every test that it was never called.
"""

import gzip
import io
import json
import os
import pickle
import re
import struct
import sys
import tarfile
import zipfile

import numpy as np
import pytest

from caproute import models
from caproute.models import WeightsFileError, WeightsMismatchError
from caproute.models.errors import describe_file
from caproute.models.torch_files import convert_torch_checkpoint
from caproute.models.weights_file import load_file, save_file

CALLS = []


def _explode(*args):
    CALLS.append(args)
    raise AssertionError("caproute unpickled an object it must never load")


class Bomb:
    """Harmless to pickle; unpickling it calls ``_explode``."""

    def __reduce__(self):
        return (_explode, ("unpickled",))


@pytest.fixture(autouse=True)
def _never_unpickled():
    CALLS.clear()
    yield
    assert CALLS == [], "a pickled object was loaded"


def _exact(message):
    return "^" + re.escape(message) + "$"


TORCH_MAGIC_PICKLE = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)  # legacy torch.save


def _torch_zip(path, payload):
    """A zip laid out like torch.save's archive, its data.pkl holding ``payload``'s pickle."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(payload, protocol=2))
        z.writestr("archive/version", "3\n")
    return path


def _hdf5_signature_only(path):
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    return path


# ---------------------------------------------------------------- describe_file -------------

KIND_FILES = {
    "safetensors": lambda p: save_file(p, {"a": np.zeros(2, np.float32)}),
    "npz": lambda p: np.savez(p, a=np.zeros(2)),
    "npy": lambda p: np.save(p, np.zeros(2)),
    "torch-zip": lambda p: _torch_zip(p, {"w": 1}),
    "torch-legacy": lambda p: p.write_bytes(TORCH_MAGIC_PICKLE + pickle.dumps(1001, protocol=2)),
    "pickle": lambda p: p.write_bytes(pickle.dumps(Bomb(), protocol=4)),
    "zip": lambda p: zipfile.ZipFile(p, "w").writestr("notes.txt", "hi"),
    "zip-damaged": lambda p: p.write_bytes(b"PK\x03\x04" + b"\0" * 40),
    "hdf5": _hdf5_signature_only,
    "gzip": lambda p: p.write_bytes(gzip.compress(b"hello")),
    "idx": lambda p: p.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 9])),
    "text": lambda p: p.write_text("epoch,loss\n1,0.5\n"),
    "empty": lambda p: p.write_bytes(b""),
    "unknown": lambda p: p.write_bytes(bytes(range(1, 20))),
}


def _tar(path):
    with tarfile.open(path, "w") as t:
        info = tarfile.TarInfo("a.txt")
        info.size = 2
        t.addfile(info, io.BytesIO(b"hi"))


KIND_FILES["tar"] = _tar


@pytest.mark.parametrize("kind", sorted(KIND_FILES))
def test_describe_file_names_every_kind(tmp_path, kind):
    path = tmp_path / f"file_of_kind_{kind}.bin"
    KIND_FILES[kind](path)
    if kind in ("npz", "npy"):  # numpy adds its suffix
        path = next(tmp_path.glob(f"file_of_kind_{kind}*"))
    assert describe_file(path)[0] == kind
    assert describe_file(tmp_path) == ("directory", "a directory, not a file")


def test_describe_file_details(tmp_path):
    KIND_FILES["text"](tmp_path / "t")
    assert describe_file(tmp_path / "t")[1] == "a text file starting with 'epoch,loss'"
    KIND_FILES["unknown"](tmp_path / "u")
    assert describe_file(tmp_path / "u")[1] == (
        "binary data of a kind caproute does not recognise "
        "(it starts with the bytes 01 02 03 04 05 06 07 08)"
    )
    KIND_FILES["zip"](tmp_path / "z")
    assert describe_file(tmp_path / "z")[1] == "a zip archive holding 'notes.txt', not .npy arrays"
    with pytest.raises(FileNotFoundError):
        describe_file(tmp_path / "missing")


# ---------------------------------------------------------------- read_state_dict: .npz -----


def test_garbage_npz_is_named_not_pickled_data(tmp_path):
    path = tmp_path / "w.npz"
    path.write_bytes(b"\x07garbage" * 8)
    with pytest.raises(WeightsFileError) as info:
        models.read_state_dict(path)
    message = str(info.value)
    assert message == (
        f"{str(path)!r} is not an .npz archive: it is binary data of a kind caproute does not "
        "recognise (it starts with the bytes 07 67 61 72 62 61 67 65)."
    )
    assert "pickled data" not in message and "allow_pickle" not in message


@pytest.mark.parametrize(
    "kind, what",
    [
        ("text", "a text file starting with 'epoch,loss'"),
        ("empty", "an empty file (0 bytes)"),
        ("zip", "a zip archive holding 'notes.txt', not .npy arrays"),
        ("zip-damaged", "a damaged or truncated zip archive"),
        ("hdf5", "an HDF5 file (Keras .h5 files are HDF5)"),
        ("gzip", "a gzip-compressed file"),
    ],
)
def test_npz_that_is_something_else(tmp_path, kind, what):
    path = tmp_path / "w.npz"
    KIND_FILES[kind](path)
    with pytest.raises(
        WeightsFileError, match=_exact(f"{str(path)!r} is not an .npz archive: it is {what}.")
    ):
        models.read_state_dict(path)


def test_npz_holding_objects_is_never_unpickled(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, w=np.zeros(3, np.float32), obj=np.array([Bomb()], dtype=object))
    message = (
        f"{str(path)!r} could not be read as an .npz of arrays: member 'obj.npy' holds pickled "
        "Python objects (dtype object), which caproute never loads."
    )
    with pytest.raises(WeightsFileError, match=_exact(message)):
        models.read_state_dict(path)


def test_truncated_npz(tmp_path):
    path = tmp_path / "t.npz"
    np.savez(path, a=np.arange(100.0))
    raw = path.read_bytes()
    for end in (len(raw) // 2, len(raw) - 10, 30):
        path.write_bytes(raw[:end])
        with pytest.raises(
            WeightsFileError,
            match=r"is not an \.npz archive: it is a damaged or truncated zip archive\.$",
        ):
            models.read_state_dict(path)


def _npz_with_member(path, member, data, compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compress) as z:
        z.writestr(member, data)
    return path


def _npy_bytes(array):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array)
    return buf.getvalue()


def test_npz_member_whose_header_overflows_is_refused_before_allocating(tmp_path):
    buf = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": (99999999999,)}
    np.lib.format.write_array_header_1_0(buf, header)
    path = _npz_with_member(tmp_path / "h.npz", "a.npy", buf.getvalue() + bytes(16))
    message = (
        f"{str(path)!r} could not be read as an .npz of arrays: member 'a.npy' holds 16 data "
        "bytes, but its header (shape (99999999999,), float64) needs 799999999992; the archive "
        "is truncated or corrupt."
    )
    with pytest.raises(WeightsFileError, match=_exact(message)):
        models.read_state_dict(path)


def test_npz_member_with_trailing_or_missing_bytes(tmp_path):
    raw = _npy_bytes(np.arange(4, dtype=np.int16))
    for data, held in ((raw + b"xx", 10), (raw[:-2], 6)):
        path = _npz_with_member(tmp_path / "m.npz", "a.npy", data)
        message = (
            f"{str(path)!r} could not be read as an .npz of arrays: member 'a.npy' holds {held} "
            "data bytes, but its header (shape (4,), int16) needs 8; the archive is truncated "
            "or corrupt."
        )
        with pytest.raises(WeightsFileError, match=_exact(message)):
            models.read_state_dict(path)


def test_npz_member_with_malformed_header(tmp_path):
    raw = _npy_bytes(np.zeros(2)).replace(b"'descr'", b"'dexcr'")
    path = _npz_with_member(tmp_path / "m.npz", "a.npy", raw)
    message = (
        f"{str(path)!r} could not be read as an .npz of arrays: member 'a.npy' is not a valid "
        ".npy array (its header is malformed)."
    )
    with pytest.raises(WeightsFileError, match=_exact(message)):
        models.read_state_dict(path)
    path = _npz_with_member(tmp_path / "m.npz", "a.npy", b"\x93NUMPY\x03\x00" + raw[8:])
    message = (
        f"{str(path)!r} could not be read as an .npz of arrays: member 'a.npy' is a .npy array "
        "of format version 3.0, which caproute does not read (versions 1.0 and 2.0)."
    )
    with pytest.raises(WeightsFileError, match=_exact(message)):
        models.read_state_dict(path)


@pytest.mark.parametrize("compress", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_npz_with_flipped_data_bytes(tmp_path, compress):
    data = _npy_bytes(np.arange(50.0))
    path = _npz_with_member(tmp_path / "f.npz", "a.npy", data, compress)
    raw = bytearray(path.read_bytes())
    start = raw.index(b"a.npy") + len(b"a.npy")  # the member's data follows its local header
    for i in range(start + 100, start + 110):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    message = (
        f"{str(path)!r} could not be read as an .npz of arrays: member 'a.npy' is damaged (its "
        "data is truncated or does not match its checksum)."
    )
    with pytest.raises(WeightsFileError, match=_exact(message)):
        models.read_state_dict(path)


def test_npz_arrays_come_back_native_and_in_c_order(tmp_path):
    arrays = {
        "be": np.arange(6, dtype=">f4").reshape(2, 3),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "empty": np.zeros((0, 3), np.float32),
        "scalar": np.float64(2.5),
    }
    np.savez_compressed(tmp_path / "ok.npz", **arrays)
    back = models.read_state_dict(tmp_path / "ok.npz")
    assert list(back) == list(arrays)
    for k, v in arrays.items():
        np.testing.assert_array_equal(back[k], v)
        assert (
            back[k].dtype.isnative and back[k].flags.c_contiguous and back[k].shape == np.shape(v)
        )


# ---------------------------------------------------------------- read_state_dict: others ---


@pytest.mark.parametrize("name", ["model.pt", "model.npz", "model.safetensors", "model.bin", "m"])
def test_a_pickle_is_never_unpickled_whatever_its_name(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(pickle.dumps({"w": Bomb()}, protocol=4))
    message = (
        f"{str(path)!r} is a Python pickle, which caproute never unpickles (unpickling can run "
        "arbitrary code). Save the weights as safetensors (safetensors.numpy.save_file, "
        "safetensors.torch.save_file) or as an .npz of arrays (numpy.savez) instead."
    )
    with pytest.raises(WeightsFileError, match=_exact(message)):
        models.read_state_dict(path)


@pytest.mark.parametrize("kind", ["torch-zip", "torch-legacy"])
def test_a_torch_checkpoint_is_refused_with_the_command_that_converts_it(tmp_path, kind):
    path = tmp_path / "ckpt.pth"
    if kind == "torch-zip":
        _torch_zip(path, {"w": Bomb()})
    else:
        path.write_bytes(TORCH_MAGIC_PICKLE + pickle.dumps(Bomb(), protocol=2))
    what = {
        "torch-zip": "a PyTorch checkpoint (the zip archive torch.save writes)",
        "torch-legacy": "a PyTorch checkpoint in the legacy (before PyTorch 1.6) format",
    }[kind]
    message = (
        f"{str(path)!r} is {what}: a pickle, which caproute never unpickles. Convert it once with "
        "`caproute convert-torch ckpt.pth weights.safetensors` (needs torch; it reads tensors "
        "only and never unpickles other objects) and use the .safetensors file."
    )
    with pytest.raises(WeightsFileError, match=_exact(message)):
        models.read_state_dict(path)


def test_read_state_dict_other_kinds(tmp_path):
    with pytest.raises(
        WeightsFileError, match=_exact(f"{str(tmp_path)!r} is a directory, not a weights file.")
    ):
        models.read_state_dict(tmp_path)
    path = tmp_path / "model.pt"
    path.write_text("not weights")
    message = (
        f"{str(path)!r} has the name of a PyTorch checkpoint but is not one: it is a text file "
        "starting with 'not weights'."
    )
    with pytest.raises(WeightsFileError, match=_exact(message)):
        models.read_state_dict(path)
    with pytest.raises(
        TypeError, match=_exact("`path` must be a path (str or os.PathLike); got int.")
    ):
        models.read_state_dict(3)
    with pytest.raises(FileNotFoundError):
        models.read_state_dict(tmp_path / "missing.npz")


def test_content_decides_not_the_name(tmp_path):
    save_file(tmp_path / "pytorch_model.bin", {"a": np.ones(2, np.float32)})
    assert models.read_state_dict(tmp_path / "pytorch_model.bin")["a"].tolist() == [1.0, 1.0]
    np.savez(tmp_path / "weights.npz", b=np.ones(3))
    os.replace(tmp_path / "weights.npz", tmp_path / "weights.safetensors")
    assert models.read_state_dict(tmp_path / "weights.safetensors")["b"].shape == (3,)


# ---------------------------------------------------------------- safetensors ---------------


@pytest.mark.parametrize(
    "kind, what",
    [
        ("text", "it is a text file starting with 'epoch,loss'."),
        ("npz", "it is a NumPy .npz archive; read it with caproute.models.read_state_dict."),
        (
            "hdf5",
            "it is an HDF5 file (Keras .h5 files are HDF5); load a Keras model with "
            "caproute.models.load_keras, or read its weights with caproute.models.read_keras_h5.",
        ),
        (
            "pickle",
            "it is a Python pickle, which caproute never loads (unpickling can run arbitrary "
            "code).",
        ),
        (
            "torch-zip",
            "it is a PyTorch checkpoint (the zip archive torch.save writes). Convert it once "
            "with `caproute convert-torch w.safetensors weights.safetensors` (needs torch; it "
            "reads tensors only and never unpickles other objects) and use the .safetensors "
            "file.",
        ),
        ("gzip", "it is a gzip-compressed file."),
        ("npy", "it is a single NumPy .npy array (not an .npz archive of named arrays)."),
    ],
)
def test_safetensors_reader_names_other_kinds(tmp_path, kind, what):
    made = tmp_path / "made"
    KIND_FILES[kind](made)
    made = next(tmp_path.glob("made*"))
    path = tmp_path / "w.safetensors"
    os.replace(made, path)
    with pytest.raises(
        WeightsFileError, match=_exact(f"{str(path)!r} is not a safetensors file: {what}")
    ):
        load_file(path)


def _raw_safetensors(path, header, data=b""):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def _f32(name, begin, n=1):
    return {name: {"dtype": "F32", "shape": [n], "data_offsets": [begin, begin + 4 * n]}}


@pytest.mark.parametrize(
    "header, data, reason",
    [
        (
            _f32("a", 0, 4),
            b"\0" * 8,
            "tensor 'a' has offsets [0, 16] outside the 8 data bytes (truncated?)",
        ),
        (
            b'{"a": {"dtype": "F32"',
            b"",
            "the header is not JSON (Expecting ',' delimiter: line 1 column 22 (char 21))",
        ),
        ({**_f32("a", 0, 2), **_f32("b", 4)}, b"\0" * 8, "tensors 'a' and 'b' overlap"),
        (
            {"a": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 1]}},
            b"\0",
            "tensor 'a' has unsupported dtype 'Q4'",
        ),
        (
            _f32("a", 0),
            b"\0" * 4 + b"tail",
            "4 trailing bytes after the last tensor (the tensors end at byte 4 of the 8 data bytes)",
        ),
        (
            {"a": {"dtype": "F32", "shape": [2**62, 2**62], "data_offsets": [0, 4]}},
            b"\0" * 4,
            "tensor 'a' holds 4 bytes but shape [4611686018427387904, 4611686018427387904] of F32 needs 85070591730234615865843651857942052864",
        ),
        (
            {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 2**64]}},
            b"\0" * 4,
            "tensor 'a' has data_offsets [0, 18446744073709551616], not two non-negative integers",
        ),
    ],
)
def test_safetensors_bad_layouts(tmp_path, header, data, reason):
    path = _raw_safetensors(tmp_path / "w.safetensors", header, data)
    message = f"{str(path)!r} is not a valid safetensors file: {reason}."
    with pytest.raises(WeightsFileError, match=_exact(message)):
        load_file(path)


def test_safetensors_header_length_beyond_the_file(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", 2**64 - 1) + b"{}")
    reason = (
        "the header claims 18446744073709551615 bytes, more than the 100000000 allowed (not "
        "safetensors?)"
    )
    with pytest.raises(
        WeightsFileError, match=_exact(f"{str(path)!r} is not a valid safetensors file: {reason}.")
    ):
        load_file(path)
    with pytest.raises(
        WeightsFileError, match=_exact(f"{str(tmp_path)!r} is a directory, not a safetensors file.")
    ):
        load_file(tmp_path)


# ---------------------------------------------------------------- capsnet_from_torch --------


def _gram_ai_sd(c1=4, n_types=2, dim=4, n_out=3, out_dim=5, grid=6):
    rng = np.random.default_rng(0)
    sd = {
        "conv1.weight": rng.normal(size=(c1, 1, 9, 9)).astype(np.float32),
        "conv1.bias": np.zeros(c1, np.float32),
        "digit_capsules.route_weights": rng.normal(
            size=(n_out, n_types * grid * grid, dim, out_dim)
        ).astype(np.float32),
    }
    for d in range(dim):
        sd[f"primary_capsules.capsules.{d}.weight"] = rng.normal(size=(n_types, c1, 9, 9)).astype(
            np.float32
        )
        sd[f"primary_capsules.capsules.{d}.bias"] = np.zeros(n_types, np.float32)
    return sd


def test_gram_ai_small_state_dict_loads():
    net = models.capsnet_from_torch(_gram_ai_sd(), classes=["a", "b", "c"])
    assert net.predict_proba(np.zeros((1, 28, 28), np.uint8)).shape == (1, 3)
    assert models.capsnet_from_torch(_gram_ai_sd(), input_shape=None).input_shape == (28, 28, 1)
    with pytest.raises(ValueError, match=_exact("`classes` has 2 names for 3 outputs.")):
        models.capsnet_from_torch(_gram_ai_sd(), classes=["a", "b"])


def _mismatch(problems, what="gram-ai CapsNet state dict"):
    lines = "\n  - ".join(problems)
    n = len(problems)
    return _exact(
        f"weights do not fit model {what!r} ({n} problem{'s' if n != 1 else ''}):\n  - {lines}"
    )


@pytest.mark.parametrize(
    "edit, problems",
    [
        (
            lambda sd: sd.update({"conv1.weight": sd["conv1.weight"][0]}),
            ["conv1.weight must be 4-D (c1, c_in, k, k) with a square kernel; got shape (1, 9, 9)"],
        ),
        (
            lambda sd: sd.update({"conv1.weight": sd["conv1.weight"][..., :7]}),
            [
                "conv1.weight must be 4-D (c1, c_in, k, k) with a square kernel; got shape (4, 1, 9, 7)"
            ],
        ),
        (
            lambda sd: sd.update({"conv1.bias": np.zeros(3, np.float32)}),
            ["conv1.bias must have shape (4,), one per conv1.weight output channel; got (3,)"],
        ),
        (
            lambda sd: sd.update(
                {"primary_capsules.capsules.1.weight": np.zeros((3, 4, 9, 9), np.float32)}
            ),
            [
                "primary_capsules.capsules.<d>.weight must share one 4-D shape (n_types, c1, k, k) with a square kernel; got (2, 4, 9, 9), (3, 4, 9, 9)"
            ],
        ),
        (
            lambda sd: sd.update(
                {
                    f"primary_capsules.capsules.{d}.weight": np.zeros((2, 4, 9, 8), np.float32)
                    for d in range(4)
                }
            ),
            [
                "primary_capsules.capsules.<d>.weight must share one 4-D shape (n_types, c1, k, k) with a square kernel; got (2, 4, 9, 8)"
            ],
        ),
        (
            lambda sd: sd.update({"primary_capsules.capsules.2.bias": np.zeros(5, np.float32)}),
            [
                "primary_capsules.capsules.<d>.bias must have shape (2,), one per capsule type; got (2,), (5,)"
            ],
        ),
        (
            lambda sd: sd.update(
                {
                    f"primary_capsules.capsules.{d}.weight": np.zeros((2, 3, 9, 9), np.float32)
                    for d in range(4)
                }
            ),
            [
                "primary_capsules.capsules.<d>.weight take 3 input channels but conv1.weight has 4 output channels"
            ],
        ),
        (
            lambda sd: sd.update(
                {"digit_capsules.route_weights": np.zeros((3, 72, 5), np.float32)}
            ),
            [
                "digit_capsules.route_weights must be 4-D (n_out, n_in, in_dim, out_dim); got shape (3, 72, 5)"
            ],
        ),
        (
            lambda sd: sd.update(
                {"digit_capsules.route_weights": np.zeros((3, 72, 8, 5), np.float32)}
            ),
            [
                "digit_capsules.route_weights (3, 72, 8, 5) takes 8-D input capsules (in_dim, axis 2) but there are 4 primary capsule components (primary_capsules.capsules.0..3)"
            ],
        ),
        (
            lambda sd: sd.update({"conv1.bias": np.array(["a"] * 4)}),
            ["tensor 'conv1.bias' is not an array of real numbers: got dtype <U1 (ndarray)"],
        ),
    ],
)
def test_gram_ai_misshapen_tensors(edit, problems):
    sd = _gram_ai_sd()
    edit(sd)
    with pytest.raises(WeightsMismatchError, match=_mismatch(problems)):
        models.capsnet_from_torch(sd)


def test_gram_ai_sizes_that_another_input_shape_explains():
    sd = _gram_ai_sd(grid=7)  # made for 29 or 30 pixel images
    problems = [
        "tensor 'class_caps.weight' has shape (3, 98, 4, 5); expected (3, 72, 4, 5)",
        "digit_capsules.route_weights has 98 input capsules, but input_shape=(28, 28, 1) gives "
        "72 (6x6 positions x 2 capsule types); it was made for 29 or 30 pixel square images: "
        "pass input_shape=(30, 30, 1)",
    ]
    with pytest.raises(WeightsMismatchError, match=_mismatch(problems)):
        models.capsnet_from_torch(sd)
    assert models.capsnet_from_torch(sd, input_shape=(30, 30, 1)).input_shape == (30, 30, 1)
    with pytest.raises(WeightsMismatchError) as info:
        models.capsnet_from_torch(_gram_ai_sd(), input_shape=(28, 28, 3))
    assert info.value.problems[-1] == (
        "conv1.weight takes 1 input channel but input_shape=(28, 28, 3) has 3: pass "
        "input_shape=(28, 28, 1)"
    )
    problems = [
        "input_shape=(12, 12, 1) is too small for a 9x9 convolution followed by a 9x9 one: "
        "pass the input_shape the network was trained on"
    ]
    with pytest.raises(WeightsMismatchError, match=_mismatch(problems)):
        models.capsnet_from_torch(_gram_ai_sd(), input_shape=(12, 12, 1))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"n_iter": 0}, ValueError, "`n_iter` must be an integer >= 1; got 0."),
        ({"n_iter": 2.0}, TypeError, "`n_iter` must be an integer >= 1; got 2.0 (float)."),
        (
            {"input_shape": (28, 28)},
            ValueError,
            "`input_shape` must be (H, W, C), 3 integers >= 1; got (28, 28).",
        ),
        (
            {"input_shape": 28},
            TypeError,
            "`input_shape` must be (H, W, C), 3 integers >= 1; got 28.",
        ),
        ({"input_shape": (28, 0, 1)}, ValueError, "`input_shape` must be an integer >= 1; got 0."),
        (
            {"classes": "abc"},
            TypeError,
            "`classes` must be a sequence of str, one name per class; got str.",
        ),
        (
            {"classes": ["a", 2, "c"]},
            TypeError,
            "`classes` must be a sequence of str, one name per class; got 2 (int) in it.",
        ),
        ({"squash_eps": 0}, ValueError, "`squash_eps` must be a finite real number > 0; got 0.0."),
        (
            {"squash_eps": "1e-7"},
            TypeError,
            "`squash_eps` must be a real number > 0; got '1e-7' (str).",
        ),
        ({"source": 3}, TypeError, "`source` must be a path (str or os.PathLike); got int."),
        (
            {"source": {1: np.zeros(2)}},
            TypeError,
            "`source` must map tensor names (str) to arrays; got the key 1 (int).",
        ),
    ],
)
def test_torch_importer_arguments(kwargs, error, message):
    kwargs = {"source": _gram_ai_sd(), **kwargs}
    with pytest.raises(error, match=_exact(message)):
        models.capsnet_from_torch(**kwargs)


# ---------------------------------------------------------------- Keras HDF5 ----------------


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"primary_dim": 0}, ValueError, "`primary_dim` must be an integer >= 1; got 0."),
        ({"primary_dim": "8"}, TypeError, "`primary_dim` must be an integer >= 1; got '8' (str)."),
        ({"n_iter": -1}, ValueError, "`n_iter` must be an integer >= 1; got -1."),
        (
            {"input_shape": (28, 28, 1, 1)},
            ValueError,
            "`input_shape` must be (H, W, C), 3 integers >= 1; got (28, 28, 1, 1).",
        ),
        (
            {"classes": [b"a"]},
            TypeError,
            "`classes` must be a sequence of str, one name per class; got b'a' (bytes) in it.",
        ),
        (
            {"squash_eps": float("nan")},
            ValueError,
            "`squash_eps` must be a finite real number > 0; got nan.",
        ),
        (
            {"conv_name": ""},
            TypeError,
            "`conv_name` must be a non-empty str (a layer name); got ''.",
        ),
        (
            {"caps_name": None},
            TypeError,
            "`caps_name` must be a non-empty str (a layer name); got None.",
        ),
        ({"path": None}, TypeError, "`path` must be a path (str or os.PathLike); got NoneType."),
    ],
)
def test_keras_importer_arguments_checked_before_the_file_is_read(kwargs, error, message):
    kwargs = {"path": "no-such-file.h5", **kwargs}
    with pytest.raises(error, match=_exact(message)):
        models.capsnet_from_keras_h5(**kwargs)


@pytest.mark.parametrize(
    "kind, what",
    [
        ("text", "it is a text file starting with 'epoch,loss'."),
        ("npz", "it is a NumPy .npz archive; read it with caproute.models.read_state_dict."),
        ("empty", "it is an empty file (0 bytes)."),
        ("safetensors", "it is a safetensors file."),
        (
            "pickle",
            "it is a Python pickle, which caproute never loads (unpickling can run arbitrary code).",
        ),
    ],
)
def test_keras_reader_names_files_that_are_not_hdf5(tmp_path, kind, what):
    KIND_FILES[kind](tmp_path / "made")
    path = tmp_path / "w.h5"
    os.replace(next(tmp_path.glob("made*")), path)
    with pytest.raises(
        WeightsFileError, match=_exact(f"{str(path)!r} could not be opened as HDF5: {what}")
    ):
        models.read_keras_h5(path)
    with pytest.raises(WeightsFileError, match="could not be opened as HDF5"):
        models.capsnet_from_keras_h5(path)


@pytest.fixture
def h5py():
    return pytest.importorskip(
        "h5py", reason="h5py is not installed (pip install 'caproute[keras]')"
    )


def _keras_weights(c1=8, n_types=4, dim=8, n_out=10, grid=3):
    rng = np.random.default_rng(0)
    return {
        "conv1/kernel": rng.normal(size=(5, 5, 1, c1)).astype(np.float32),
        "conv1/bias": np.zeros(c1, np.float32),
        "primarycap_conv2d/kernel": rng.normal(size=(5, 5, c1, n_types * dim)).astype(np.float32),
        "primarycap_conv2d/bias": np.zeros(n_types * dim, np.float32),
        "digitcaps/W": rng.normal(size=(n_out, grid * grid * n_types, 16, dim)).astype(np.float32),
    }


def _write_keras(h5py, path, weights, *, layers=None, extra=None):
    with h5py.File(path, "w") as f:
        names = layers or ["conv1", "primarycap_conv2d", "digitcaps"]
        f.attrs["layer_names"] = np.array([n.encode() for n in names])
        for layer in names:
            group = f.create_group(layer) if layer not in f else f[layer]
            mine = {k.split("/")[1]: v for k, v in weights.items() if k.split("/")[0] == layer}
            group.attrs["weight_names"] = np.array([f"{layer}/{w}:0".encode() for w in mine])
            for w, value in mine.items():
                group.create_dataset(f"{layer}/{w}:0", data=value)
        if extra:
            extra(f)
    return path


def test_keras_small_file_loads(h5py, tmp_path):
    path = _write_keras(h5py, tmp_path / "k.h5", _keras_weights())
    net = models.capsnet_from_keras_h5(path, input_shape=(14, 14, 1))
    assert net.predict_proba(np.zeros((1, 14, 14), np.uint8)).shape == (1, 10)


def test_keras_damaged_files(h5py, tmp_path):
    path = _write_keras(h5py, tmp_path / "k.h5", _keras_weights())
    raw = path.read_bytes()
    for end in (100, len(raw) // 2, len(raw) - 1):
        path.write_bytes(raw[:end])
        with pytest.raises(
            WeightsFileError, match=r"(damaged or truncated|the HDF5 file is damaged)"
        ):
            models.read_keras_h5(path)
    _hdf5_signature_only(path)
    message = (
        f"{str(path)!r} could not be opened as HDF5: it starts like an HDF5 file but is damaged "
        "or truncated."
    )
    with pytest.raises(WeightsFileError, match=_exact(message)):
        models.read_keras_h5(path)


def test_keras_missing_groups_and_unreadable_weights(h5py, tmp_path):
    weights = _keras_weights()
    weights["conv1/bias"] = np.array([b"x", b"y"])

    def damage(f):
        f["primarycap_conv2d"].attrs["weight_names"] = np.array(
            [b"primarycap_conv2d/kernel:0", b"primarycap_conv2d/gone:0", b"primarycap_conv2d"]
        )

    path = _write_keras(
        h5py,
        tmp_path / "k.h5",
        weights,
        layers=["conv1", "primarycap_conv2d", "digitcaps"],
        extra=damage,
    )
    with h5py.File(path, "a") as f:
        f.attrs["layer_names"] = np.array(
            [b"conv1", b"primarycap_conv2d", b"digitcaps", b"dropout"]
        )
    message = (
        f"{str(path)!r} is not a valid Keras weights file (4 problems):\n"
        "  - weight 'conv1/bias:0' is not an array of real numbers (dtype |S1)\n"
        "  - weight 'primarycap_conv2d/gone:0' of layer 'primarycap_conv2d' is listed in 'weight_names' but missing\n"
        "  - weight 'primarycap_conv2d' of layer 'primarycap_conv2d' is listed in 'weight_names' but is not a dataset\n"
        "  - layer 'dropout' is listed in 'layer_names' but has no group"
    )
    with pytest.raises(WeightsFileError, match=_exact(message)):
        models.read_keras_h5(path)
    with h5py.File(path, "a") as f:
        f.attrs["layer_names"] = np.arange(3)
    message = (
        f"{str(path)!r} is not a valid Keras weights file: its 'layer_names' attribute must list "
        "layer names (strings); got int64 of shape (3,)."
    )
    with pytest.raises(WeightsFileError, match=_exact(message)):
        models.read_keras_h5(path)


@pytest.mark.parametrize(
    "edit, kwargs, problems",
    [
        (
            lambda w: w.update({"conv1/kernel": w["conv1/kernel"][0]}),
            {},
            ["conv1/kernel must be 4-D (k, k, c_in, c1) with a square kernel; got shape (5, 1, 8)"],
        ),
        (
            lambda w: w.update({"conv1/bias": np.zeros(3, np.float32)}),
            {},
            ["conv1/bias must have shape (8,), one per output channel of conv1/kernel; got (3,)"],
        ),
        (
            lambda w: w.update({"primarycap_conv2d/kernel": w["primarycap_conv2d/kernel"][:, :4]}),
            {},
            [
                "primarycap_conv2d/kernel must be 4-D (k, k, c1, n_types * primary_dim) with a square kernel; got shape (5, 4, 8, 32)"
            ],
        ),
        (
            lambda w: w.update(
                {"primarycap_conv2d/kernel": w["primarycap_conv2d/kernel"][:, :, :6]}
            ),
            {},
            [
                "primarycap_conv2d/kernel takes 6 input channels but conv1/kernel has 8 output channels"
            ],
        ),
        (
            lambda w: w.update({"primarycap_conv2d/bias": np.zeros(30, np.float32)}),
            {},
            [
                "primarycap_conv2d/bias must have shape (32,), one per output channel of primarycap_conv2d/kernel; got (30,)"
            ],
        ),
        (
            lambda w: None,
            {"primary_dim": 5},
            [
                "primarycap_conv2d/kernel has 32 output channels, not a multiple of primary_dim=5",
                "digitcaps/W (10, 36, 16, 8) takes 8-D input capsules (in_dim, the last axis) but primary_dim=5: pass primary_dim=8",
            ],
        ),
        (
            lambda w: None,
            {"primary_dim": 4},
            [
                "digitcaps/W (10, 36, 16, 8) takes 8-D input capsules (in_dim, the last axis) but primary_dim=4: pass primary_dim=8"
            ],
        ),
        (
            lambda w: w.update({"digitcaps/W": np.zeros((10, 16, 8), np.float32)}),
            {},
            ["digitcaps/W must be 4-D (n_out, n_in, out_dim, in_dim); got shape (10, 16, 8)"],
        ),
    ],
)
def test_keras_misshapen_tensors(h5py, tmp_path, edit, kwargs, problems):
    weights = _keras_weights()
    edit(weights)
    path = _write_keras(h5py, tmp_path / "k.h5", weights)
    with pytest.raises(
        WeightsMismatchError, match=_mismatch(problems, f"Keras CapsNet in {str(path)!r}")
    ):
        models.capsnet_from_keras_h5(path, input_shape=(14, 14, 1), **kwargs)


def test_keras_sizes_that_another_input_shape_explains(h5py, tmp_path):
    path = _write_keras(h5py, tmp_path / "k.h5", _keras_weights())
    with pytest.raises(WeightsMismatchError) as info:
        models.capsnet_from_keras_h5(path)  # default 28 x 28; the file was made for 14 x 14
    assert info.value.problems == [
        "tensor 'class_caps.weight' has shape (10, 36, 16, 8); expected (10, 400, 16, 8)",
        "digitcaps/W has 36 input capsules, but input_shape=(28, 28, 1) gives 400 (10x10 "
        "positions x 4 capsule types); it was made for 13 or 14 pixel square images: pass "
        "input_shape=(14, 14, 1)",
    ]
    with pytest.raises(WeightsMismatchError) as info:
        models.capsnet_from_keras_h5(path, input_shape=(14, 14, 3))
    assert info.value.problems[-1] == (
        "conv1/kernel takes 1 input channel but input_shape=(14, 14, 3) has 3: pass "
        "input_shape=(14, 14, 1)"
    )


# ---------------------------------------------------------------- convert_torch_checkpoint --


@pytest.mark.parametrize(
    "kind, message",
    [
        (
            "safetensors",
            "{p} is already a safetensors file: no conversion is needed. Import it directly "
            "(caproute.models.capsnet_from_torch, caproute.models.read_state_dict, or "
            "caproute.models.load for a caproute model).",
        ),
        (
            "npz",
            "{p} is a NumPy .npz archive, which caproute reads directly "
            "(caproute.models.read_state_dict, caproute.models.capsnet_from_torch): no "
            "conversion is needed.",
        ),
        (
            "hdf5",
            "{p} is an HDF5 file, not a PyTorch checkpoint: import Keras weights with "
            "caproute.models.capsnet_from_keras_h5 (or read them with read_keras_h5).",
        ),
        (
            "pickle",
            "{p} is a Python pickle but not a PyTorch checkpoint (torch.save writes a zip archive "
            "holding data.pkl); caproute never unpickles other pickles, as unpickling can run "
            "arbitrary code. Save the weights with torch.save(model.state_dict(), path) and "
            "convert that file, or save them as safetensors or an .npz of arrays.",
        ),
        (
            "zip",
            "{p} is not a PyTorch checkpoint: it is a zip archive holding 'notes.txt', not .npy "
            "arrays (torch.save's archives hold a data.pkl).",
        ),
        (
            "zip-damaged",
            "{p} is not a readable PyTorch checkpoint: it is a damaged or truncated zip archive "
            "(a checkpoint whose copy or download was cut short?).",
        ),
        ("text", "{p} is not a PyTorch checkpoint: it is a text file starting with 'epoch,loss'."),
        ("empty", "{p} is not a PyTorch checkpoint: it is an empty file (0 bytes)."),
        ("gzip", "{p} is not a PyTorch checkpoint: it is a gzip-compressed file."),
        ("tar", "{p} is not a PyTorch checkpoint: it is a tar archive."),
    ],
)
def test_convert_torch_names_files_that_are_not_checkpoints(tmp_path, monkeypatch, kind, message):
    monkeypatch.setitem(sys.modules, "torch", None)  # no torch needed to say what a file is
    KIND_FILES[kind](tmp_path / "made")
    path = tmp_path / "model.pt"
    os.replace(next(tmp_path.glob("made*")), path)
    with pytest.raises(WeightsFileError, match=_exact(message.format(p=repr(str(path))))):
        convert_torch_checkpoint(path, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_convert_torch_bad_arguments(tmp_path):
    with pytest.raises(
        WeightsFileError,
        match=_exact(
            f"{str(tmp_path)!r} is not a PyTorch checkpoint: it is a directory, not a file."
        ),
    ):
        convert_torch_checkpoint(tmp_path, tmp_path / "out.safetensors")
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"`source` does not exist: {str(tmp_path / 'x.pt')!r}")
    ):
        convert_torch_checkpoint(tmp_path / "x.pt", tmp_path / "out.safetensors")
    with pytest.raises(
        TypeError, match=_exact("`source` must be a path (str or os.PathLike); got NoneType.")
    ):
        convert_torch_checkpoint(None, tmp_path / "out.safetensors")
    with pytest.raises(
        TypeError, match=_exact("`target` must be a path (str or os.PathLike); got list.")
    ):
        convert_torch_checkpoint(tmp_path / "x.pt", [])


def test_convert_torch_without_torch(tmp_path, monkeypatch):
    path = _torch_zip(tmp_path / "ckpt.pt", {"w": 1})
    monkeypatch.setitem(sys.modules, "torch", None)
    message = (
        "converting PyTorch checkpoints needs PyTorch: pip install torch (caproute itself never "
        "imports it)."
    )
    with pytest.raises(ImportError, match=_exact(message)):
        convert_torch_checkpoint(path, tmp_path / "out.safetensors")


@pytest.fixture
def torch():
    return pytest.importorskip(
        "torch", reason="PyTorch is not installed (pip install torch==2.13.0)"
    )


def test_convert_torch_round_trip(torch, tmp_path, monkeypatch):
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    sd = {
        "w": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "d": torch.tensor([1.0, 2.0], dtype=torch.float64),
        "h": torch.tensor([0.5, -1.25], dtype=torch.bfloat16),
        "f": torch.tensor([3.0], dtype=torch.float16),
        "i": torch.arange(3),
        "t": torch.arange(12.0).reshape(3, 4).T,  # not contiguous
        "c": torch.zeros(2, dtype=torch.complex64),
        "s": torch.eye(2).to_sparse(),
        "note": "hello",
    }
    source = tmp_path / "ckpt.pt"
    torch.save({"epoch": 7, "state_dict": sd}, source)
    done = convert_torch_checkpoint(source, tmp_path / "w.safetensors")
    assert calls and all(kw.get("weights_only") is True for kw in calls)
    assert done.target == str(tmp_path / "w.safetensors")
    assert done.tensors == {"w": (2, 3), "d": (2,), "h": (2,), "f": (1,), "i": (3,), "t": (4, 3)}
    assert done.skipped == {
        "c": "dtype complex64, which safetensors cannot hold",
        "s": "a sparse_coo tensor",
        "note": "not a tensor: str",
    }
    assert done.summary() == (
        f"wrote 6 tensors to {tmp_path / 'w.safetensors'}; skipped 'c' (dtype complex64, which "
        "safetensors cannot hold), 's' (a sparse_coo tensor), 'note' (not a tensor: str)"
    )
    back = models.read_state_dict(tmp_path / "w.safetensors")
    assert {k: v.dtype.name for k, v in back.items()} == {
        "w": "float32",
        "d": "float64",
        "h": "float32",
        "f": "float32",
        "i": "int64",
        "t": "float32",
    }
    np.testing.assert_array_equal(back["h"], [0.5, -1.25])
    np.testing.assert_array_equal(back["t"], np.arange(12.0).reshape(3, 4).T)
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt", "w.safetensors"]  # no partial file left
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": sd["w"]}, legacy, _use_new_zipfile_serialization=False)
    assert convert_torch_checkpoint(legacy, tmp_path / "l.safetensors").tensors == {"w": (2, 3)}


def test_convert_torch_refuses_pickled_objects(torch, tmp_path):
    for legacy in (False, True):
        source = tmp_path / "bomb.pt"
        torch.save(
            {"w": torch.zeros(2), "extra": Bomb()},
            source,
            _use_new_zipfile_serialization=not legacy,
        )
        message = (
            f"{str(source)!r} is not a PyTorch state dict of tensors: it holds pickled Python "
            "objects of type tests.models.test_bad_files._explode. caproute reads tensors only "
            "and never unpickles other objects, as unpickling can run arbitrary code. Re-save "
            "the weights alone where the file was made, with torch.save(model.state_dict(), "
            "'weights.pt'), and convert that file."
        )
        with pytest.raises(WeightsFileError, match=_exact(message)) as info:
            convert_torch_checkpoint(source, tmp_path / "out.safetensors")
        assert "weights_only=False" not in str(info.value)
    assert not (tmp_path / "out.safetensors").exists()


def test_convert_torch_refuses_a_whole_model(torch, tmp_path):
    source = tmp_path / "model.pt"
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU()), source)
    with pytest.raises(WeightsFileError) as info:
        convert_torch_checkpoint(source, tmp_path / "out.safetensors")
    message = str(info.value)
    assert message.startswith(
        f"{str(source)!r} is not a PyTorch state dict of tensors: it holds pickled Python objects "
        "of type torch.nn.modules.container.Sequential, "
    )
    assert (
        "torch.nn.modules.linear.Linear" in message
        and "torch.nn.modules.activation.ReLU" in message
    )
    assert "(a whole model saved with torch.save(model)?)" in message
    assert "weights_only=False" not in message


def test_convert_torch_damaged_and_odd_checkpoints(torch, tmp_path):
    source = tmp_path / "ckpt.pt"
    target = tmp_path / "out.safetensors"
    torch.save({"w": torch.zeros(100)}, source, _use_new_zipfile_serialization=False)
    raw = source.read_bytes()
    source.write_bytes(raw[:-50])
    message = (
        f"{str(source)!r} is a PyTorch checkpoint in the legacy (before PyTorch 1.6) format, but "
        "it could not be read: it is damaged or truncated (RuntimeError in torch.load)."
    )
    with pytest.raises(WeightsFileError, match=_exact(message)):
        convert_torch_checkpoint(source, target)
    torch.save({"w": torch.zeros(100)}, source)
    raw = source.read_bytes()
    source.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(
        WeightsFileError,
        match=r"is not a readable PyTorch checkpoint: it is a damaged or truncated zip archive",
    ):
        convert_torch_checkpoint(source, target)
    torch.save(torch.zeros(3), source)
    message = (
        f"{str(source)!r} holds a single tensor, not a state dict: save a dict of named tensors, "
        "torch.save({'name': tensor}, path), or the model's torch.save(model.state_dict(), path)."
    )
    with pytest.raises(WeightsFileError, match=_exact(message)):
        convert_torch_checkpoint(source, target)
    torch.save([torch.zeros(3)], source)
    message = (
        f"{str(source)!r} holds a list, not a state dict (a dict of tensor names to tensors): "
        "save the weights with torch.save(model.state_dict(), path)."
    )
    with pytest.raises(WeightsFileError, match=_exact(message)):
        convert_torch_checkpoint(source, target)
    torch.save({"epoch": 3, "lr": 0.1}, source)
    message = (
        f"{str(source)!r} is a PyTorch checkpoint without tensors: its state dict holds 'epoch' "
        "(not a tensor: int), 'lr' (not a tensor: float). Save the model's weights with "
        "torch.save(model.state_dict(), path)."
    )
    with pytest.raises(WeightsFileError, match=_exact(message)):
        convert_torch_checkpoint(source, target)
    assert not target.exists()


def test_convert_torch_target_checks(torch, tmp_path):
    source = tmp_path / "ckpt.pt"
    torch.save({"w": torch.zeros(2)}, source)
    message = (
        f"`target` must differ from `source`; got {str(source)!r} for both (the checkpoint would "
        "be overwritten)."
    )
    with pytest.raises(ValueError, match=_exact(message)):
        convert_torch_checkpoint(source, source)
    with pytest.raises(
        ValueError,
        match=_exact(f"`target` must be a file to write; got {str(tmp_path)!r}, a directory."),
    ):
        convert_torch_checkpoint(source, tmp_path)
    target = tmp_path / "nope" / "w.safetensors"
    message = (
        f"`target` must be in an existing folder; got {str(target)!r}, but "
        f"{str(tmp_path / 'nope')!r} does not exist."
    )
    with pytest.raises(ValueError, match=_exact(message)):
        convert_torch_checkpoint(source, target)
