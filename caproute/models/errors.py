"""Errors of the model toolkit, and :func:`describe_file`, which names what a file is for them."""

import io
import os
import pickletools
import struct
import zipfile


class WeightsMismatchError(ValueError):
    """The given weights do not fit the model.

    The message lists every missing, unexpected, misshapen or mistyped tensor at once.

    Parameters
    ----------
    model_name : str
        The model (or checkpoint layout) the weights were meant for.
    problems : iterable of str
        One sentence per problem; kept as the ``problems`` attribute.
    """

    def __init__(self, model_name, problems):
        self.model_name = model_name
        self.problems = list(problems)
        lines = "\n  - ".join(self.problems)
        super().__init__(
            f"weights do not fit model {model_name!r} ({len(self.problems)} problem"
            f"{'s' if len(self.problems) != 1 else ''}):\n  - {lines}"
        )


class WeightsFileError(ValueError):
    """A weights file is unreadable: truncated, malformed header, bad metadata, wrong checksum."""


class UnsupportedLayerError(ValueError):
    """A checkpoint holds a layer that caproute cannot express.

    Raised by the importers (:func:`caproute.models.load_keras`) instead of building a model
    that would compute something else. The message names the layer, its class and why.

    Parameters
    ----------
    layer : str
        The layer's name in the checkpoint; kept as the ``layer`` attribute.
    layer_class : str
        The layer's class in the checkpoint (e.g. ``"Conv3D"``); kept as ``layer_class``.
    reason : str
        Why it cannot be expressed, and what would be (one or more sentences).
    """

    def __init__(self, layer, layer_class, reason):
        self.layer = layer
        self.layer_class = layer_class
        self.reason = reason
        super().__init__(f"layer {layer!r} (class {layer_class}) cannot be imported: {reason}")


# ---------------------------------------------------------------- what a file is -------------
#
# Readers name what a file they cannot read actually is ("it is a Python pickle", "it is an
# HDF5 file"), from its first bytes only: nothing here parses, decompresses or unpickles it.

_PICKLE_PROTOCOLS = (2, 3, 4, 5)
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of a pre-1.6 torch.save file
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_IDX_TYPE_CODES = (0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E)
_HEAD = 4096

#: What each kind is called in messages ("... it is <description>").
FILE_KINDS = {
    "directory": "a directory, not a file",
    "empty": "an empty file (0 bytes)",
    "safetensors": "a safetensors file",
    "npz": "a NumPy .npz archive",
    "npy": "a single NumPy .npy array (not an .npz archive of named arrays)",
    "torch-zip": "a PyTorch checkpoint (the zip archive torch.save writes)",
    "torch-legacy": "a PyTorch checkpoint in the legacy (before PyTorch 1.6) format",
    "pickle": "a Python pickle",
    "zip": "a zip archive",
    "keras": "a Keras 3 .keras archive (config.json and model.weights.h5)",
    "zip-damaged": "a damaged or truncated zip archive",
    "hdf5": "an HDF5 file (Keras .h5 files are HDF5)",
    "gzip": "a gzip-compressed file",
    "tar": "a tar archive",
    "idx": "an IDX file (MNIST-style images or labels)",
    "text": "a text file",
    "unknown": "binary data of a kind caproute does not recognise",
}


def describe_file(path):
    """What a file is, judged from its first bytes (and a zip archive's list of members).

    Used by the readers to say what a file they cannot read actually is. Nothing is parsed
    beyond the first bytes, decompressed or unpickled.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    kind : str
        One of the keys of :data:`FILE_KINDS`: ``"safetensors"``, ``"npz"``, ``"torch-zip"``,
        ``"pickle"``, ``"hdf5"``, ``"text"``, ``"unknown"``, ...
    description : str
        A phrase for messages, e.g. ``"a Python pickle"`` or
        ``"a text file starting with 'epoch,loss'"``.

    Raises
    ------
    FileNotFoundError
        If there is no such file.

    Examples
    --------
    >>> import os, pickle, tempfile
    >>> from caproute.models.errors import describe_file
    >>> path = os.path.join(tempfile.mkdtemp(), "weights.npz")
    >>> with open(path, "wb") as f:
    ...     pickle.dump([1, 2, 3], f, protocol=4)
    >>> describe_file(path)
    ('pickle', 'a Python pickle')
    """
    path = os.fsdecode(os.fspath(path))
    if os.path.isdir(path):
        return "directory", FILE_KINDS["directory"]
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(_HEAD)
    kind, detail = _kind_of(path, head, size)
    return kind, FILE_KINDS[kind] + detail


def _kind_of(path, head, size):
    """``(kind, detail)``: ``detail`` is appended to the kind's description."""
    if size == 0:
        return "empty", ""
    if size >= 10 and head[8:9] == b"{":
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n <= size - 8:
            return "safetensors", ""
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            return "zip-damaged", ""
        if any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
            return "torch-zip", ""
        if all(name.endswith(".npy") for name in names):
            return "npz", ""
        if "config.json" in names and "model.weights.h5" in names:
            return "keras", ""
        shown = ", ".join(repr(name) for name in names[:3]) + (", ..." if len(names) > 3 else "")
        return "zip", f" holding {shown}, not .npy arrays"
    if head[:6] == b"\x93NUMPY":
        return "npy", ""
    if head[:1] == b"\x80" and head[1:2] and head[1] in _PICKLE_PROTOCOLS:
        return ("torch-legacy" if _is_torch_legacy(head) else "pickle"), ""
    if any(head[at : at + 8] == _HDF5_SIGNATURE for at in (0, 512, 1024, 2048)):
        return "hdf5", ""
    if head[:2] == b"\x1f\x8b":
        return "gzip", ""
    if head[257:262] == b"ustar":
        return "tar", ""
    if len(head) >= 4 and head[:2] == b"\0\0" and head[2] in _IDX_TYPE_CODES and head[3] >= 1:
        return "idx", ""
    text = _as_text(head)
    if text is not None:
        first = text.strip().splitlines()[0] if text.strip() else text
        return "text", f" starting with {first[:40]!r}"
    return "unknown", f" (it starts with the bytes {head[:8].hex(' ')})"


def _is_torch_legacy(head):
    """Whether ``head`` starts with a pickle of torch's magic number (read, never unpickled)."""
    values = []
    try:
        for opcode, arg, _ in pickletools.genops(io.BytesIO(head)):
            if opcode.name in ("PROTO", "FRAME"):
                continue
            if opcode.name == "STOP":
                break
            values.append(arg)
    except Exception:  # noqa: BLE001 -- any malformed stream is simply not torch's magic
        return False
    return values == [_TORCH_LEGACY_MAGIC]


def _as_text(head):
    """``head`` as text if it is UTF-8 without control characters (other than whitespace)."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3 or exc.start == 0:  # not a character cut by the 4 KiB
            return None
        text = head[: exc.start].decode("utf-8")
    if any(ch < " " and ch not in "\t\n\r\f" for ch in text):
        return None
    return text


#: The command that turns a PyTorch checkpoint into a safetensors file, for messages.
CONVERT_TORCH_COMMAND = "caproute convert-torch"


def convert_torch_hint(path):
    """The sentence that tells how to convert the PyTorch checkpoint ``path`` (for messages)."""
    name = os.path.basename(os.fsdecode(os.fspath(path))) or "checkpoint.pt"
    return (
        f"Convert it once with `{CONVERT_TORCH_COMMAND} {name} weights.safetensors` (needs "
        "torch; it reads tensors only and never unpickles other objects) and use the "
        ".safetensors file."
    )


def what_file_is(path, *, expected):
    """``"it is <what>. <advice>"`` for a file that is not of a kind in ``expected``, or None.

    None also when the file's kind is not recognised (or it is empty): the reader's own
    message says then what is wrong.
    """
    kind, description = describe_file(path)
    if kind in expected or kind in ("unknown", "empty"):
        return None
    advice = {
        "torch-zip": ". " + convert_torch_hint(path),
        "torch-legacy": ". " + convert_torch_hint(path),
        "pickle": ", which caproute never loads (unpickling can run arbitrary code).",
        "npz": "; read it with caproute.models.read_state_dict.",
        "hdf5": (
            "; load a Keras model with caproute.models.load_keras, or read its weights with "
            "caproute.models.read_keras_h5."
        ),
        "keras": "; load it with caproute.models.load_keras.",
    }.get(kind, ".")
    return f"it is {description}{advice}"
