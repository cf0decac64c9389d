"""A small, strict reader and writer of the safetensors format (no pickle, no dependency).

Layout: an 8-byte little-endian header length ``N``; ``N`` bytes of JSON mapping each tensor
name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets into the data that
follows the header) plus an optional ``"__metadata__"`` of string pairs; then the raw
little-endian tensor data, C order. Files written by the ``safetensors`` package (and so by
``safetensors.torch.save_file``) read here, and files written here read there.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np

from .errors import WeightsFileError

_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_CODES = {dt.newbyteorder("<") if dt.itemsize > 1 else dt: code for code, dt in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


def save_file(path, tensors, metadata=None):
    """Write ``{name: ndarray}`` and string ``metadata`` to ``path`` in safetensors format.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from caproute.models.safetensors import load_file, save_file
    >>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
    >>> save_file(path, {"a": np.arange(3, dtype=np.float32)}, {"note": "hi"})
    >>> arrays, meta = load_file(path)
    >>> arrays["a"], meta
    (array([0., 1., 2.], dtype=float32), {'note': 'hi'})
    """
    header = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TypeError("safetensors metadata must map str to str.")
        header["__metadata__"] = dict(metadata)
    blobs, offset = [], 0
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])
        code = _CODES.get(arr.dtype.newbyteorder("<") if arr.dtype.itemsize > 1 else arr.dtype)
        if code is None:
            raise TypeError(f"tensor {name!r}: dtype {arr.dtype} cannot be stored in safetensors.")
        data = np.ascontiguousarray(arr, dtype=_DTYPES[code]).tobytes()
        header[name] = {"dtype": code, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # align the data to 8 bytes, as the reference writer does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for data in blobs:
            f.write(data)


def load_file(path):
    """Read a safetensors file: returns ``(tensors, metadata)``.

    ``tensors`` maps names to NumPy arrays (native byte order); ``metadata`` is the header's
    ``__metadata__`` dict (empty if absent). BF16 tensors are widened to float32 exactly.

    Raises
    ------
    WeightsFileError
        Truncated file, malformed or inconsistent header (unknown dtype, offsets outside the
        data or overlapping, byte count not matching the shape), with the reason.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()

    def bad(reason):
        return WeightsFileError(f"{path!r} is not a valid safetensors file: {reason}.")

    if len(raw) < 8:
        raise bad(f"it has {len(raw)} bytes, fewer than the 8-byte header length")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > _MAX_HEADER or 8 + n > len(raw):
        raise bad(f"the header claims {n} bytes but the file has {len(raw) - 8} after the length "
                  "(truncated or not safetensors)")
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(f"the header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise bad("the header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise bad("__metadata__ must map strings to strings")
    data = memoryview(raw)[8 + n:]
    tensors, spans = {}, []
    for name, info in header.items():
        try:
            code, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            shape = tuple(int(s) for s in shape)
            begin, end = int(begin), int(end)
        except (KeyError, TypeError, ValueError):
            raise bad(f"entry {name!r} lacks a dtype, a shape or two data_offsets") from None
        if code not in _DTYPES and code != "BF16":
            raise bad(f"tensor {name!r} has unsupported dtype {code!r}")
        itemsize = 2 if code == "BF16" else _DTYPES[code].itemsize
        if any(s < 0 for s in shape) or not 0 <= begin <= end <= len(data):
            raise bad(f"tensor {name!r} has offsets [{begin}, {end}] outside the "
                      f"{len(data)} data bytes (truncated?)")
        if end - begin != int(np.prod(shape, dtype=np.int64)) * itemsize:
            raise bad(f"tensor {name!r} holds {end - begin} bytes but shape {list(shape)} of "
                      f"{code} needs {int(np.prod(shape, dtype=np.int64)) * itemsize}")
        spans.append((begin, end, name))
        buf = data[begin:end]
        if code == "BF16":
            bits = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        else:
            arr = np.frombuffer(buf, dtype=_DTYPES[code]).astype(_DTYPES[code].newbyteorder("="))
        tensors[name] = arr.reshape(shape)
    spans.sort()
    for (b0, e0, n0), (b1, _, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise bad(f"tensors {n0!r} and {n1!r} overlap")
    return tensors, metadata
