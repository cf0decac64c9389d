"""caproute's weights files: the safetensors format, read and written by the safetensors package.

Layout: an 8-byte little-endian header length ``N``; ``N`` bytes of JSON mapping each tensor
name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets into the data that
follows the header) plus an optional ``"__metadata__"`` of string pairs; then the raw
little-endian tensor data, C order, the tensors covering it exactly (no holes, no overlaps, no
trailing bytes).

The tensors are read and written by ``safetensors.numpy`` (no pickle). Before the package sees a
file, :func:`load_file` checks the header itself, so that every malformed file raises a
:class:`~caproute.models.errors.WeightsFileError` that names the file and says what is wrong.
BF16 tensors, which ``safetensors.numpy`` cannot return, are widened to float32 here, exactly.
"""

from __future__ import annotations

import json
import math
import os
import struct

import numpy as np
import safetensors
import safetensors.numpy

from .errors import WeightsFileError, what_file_is

_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_CODES = {dt.newbyteorder("<") if dt.itemsize > 1 else dt: code for code, dt in _DTYPES.items()}
_MAX_HEADER = 100_000_000  # the safetensors package refuses larger headers
_MAX_INT = 2**63  # shapes and offsets must fit the package's (unsigned) sizes


def save_file(path, tensors, metadata=None):
    """Write NumPy arrays and string metadata to a safetensors file.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write (replaced if it exists).
    tensors : dict of str to array_like
        The tensors. Dtypes: float16/32/64, (u)int8/16/32/64 and bool, in any byte order and
        memory layout (stored little-endian, C order).
    metadata : dict of str to str, optional
        Stored in the header's ``__metadata__``; nothing is stored when empty or None.

    Returns
    -------
    None

    Raises
    ------
    TypeError
        A tensor name or metadata key/value that is not a string, or a dtype that safetensors
        (as caproute reads it) cannot hold.
    ValueError
        A tensor named ``"__metadata__"``, the header's reserved key.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from caproute.models.weights_file import load_file, save_file
    >>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
    >>> save_file(path, {"a": np.arange(3, dtype=np.float32)}, {"note": "hi"})
    >>> arrays, meta = load_file(path)
    >>> arrays["a"], meta
    (array([0., 1., 2.], dtype=float32), {'note': 'hi'})
    """
    if metadata and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TypeError("safetensors metadata must map str to str.")
    arrays = {}
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"tensor names must be strings; got {name!r}.")
        if name == "__metadata__":
            raise ValueError("'__metadata__' is reserved by safetensors and cannot name a tensor.")
        arr = np.asarray(value)
        code = _CODES.get(arr.dtype.newbyteorder("<") if arr.dtype.itemsize > 1 else arr.dtype)
        if code is None:
            raise TypeError(f"tensor {name!r}: dtype {arr.dtype} cannot be stored in safetensors.")
        # safetensors.numpy writes the raw buffer: it must be C-contiguous (little-endian is
        # not required, the package swaps, but converting here costs nothing on common hosts).
        arrays[name] = np.asarray(arr, dtype=_DTYPES[code], order="C")
    safetensors.numpy.save_file(arrays, _fspath(path), metadata=dict(metadata or {}) or None)


def load_file(path):
    """Read a safetensors file, checking it strictly first.

    Parameters
    ----------
    path : str or os.PathLike
        A safetensors file, from caproute or any other writer (e.g.
        ``safetensors.torch.save_file``).

    Returns
    -------
    tensors : dict of str to numpy.ndarray
        Writable arrays in native byte order; BF16 tensors are widened to float32 exactly.
    metadata : dict of str to str
        The header's ``__metadata__`` (empty if absent).

    Raises
    ------
    WeightsFileError
        A malformed file, naming the path and the reason: truncated, header not JSON (or not an
        object, or naming something twice), an entry without a dtype, shape or two offsets,
        unknown dtype, offsets outside the data, byte count not matching the shape, overlapping
        tensors, holes between tensors, trailing bytes after the last tensor, bad metadata. A
        file of another kind (a PyTorch checkpoint, a pickle, an ``.npz``, HDF5, text) or a
        directory is named as what it is, with the way to read it where caproute has one.
    OSError
        The file cannot be opened (``FileNotFoundError`` if there is no such file).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from caproute.models.weights_file import load_file, save_file
    >>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
    >>> save_file(path, {"w": np.eye(2, dtype=np.float16), "n": np.int64(7)})
    >>> arrays, meta = load_file(path)
    >>> sorted(arrays), arrays["w"].dtype, arrays["n"].shape, meta
    (['n', 'w'], dtype('float16'), (), {})
    >>> with open(path, "ab") as f:
    ...     _ = f.write(b"junk")
    >>> load_file(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    caproute.models.errors.WeightsFileError: '...' is not a valid safetensors file: 4 trailing ...
    """
    path = _fspath(path)
    if os.path.isdir(path):
        raise WeightsFileError(f"{path!r} is a directory, not a safetensors file.")

    def bad(reason, *, sniff=False):
        # Before the header is known to be JSON, a file that is something else entirely (a
        # pickle, an .npz, HDF5, text) is named as what it is rather than as broken safetensors.
        other = what_file_is(path, expected=("safetensors",)) if sniff else None
        if other is not None:
            return WeightsFileError(f"{path!r} is not a safetensors file: {other}")
        return WeightsFileError(f"{path!r} is not a valid safetensors file: {reason}.")

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            raise bad(f"it has {size} bytes, fewer than the 8-byte header length", sniff=True)
        (n,) = struct.unpack("<Q", f.read(8))
        if n > _MAX_HEADER:
            raise bad(
                f"the header claims {n} bytes, more than the {_MAX_HEADER} allowed "
                "(not safetensors?)",
                sniff=True,
            )
        if 8 + n > size:
            raise bad(
                f"the header claims {n} bytes but the file has {size - 8} after the length "
                "(truncated or not safetensors)",
                sniff=True,
            )
        header = _parse_header(f.read(n), lambda reason: bad(reason, sniff=True))
        entries = _check_entries(header, size - 8 - n, bad)
        tensors = {}
        for name, (code, shape, begin, end) in entries.items():
            if code == "BF16":  # safetensors.numpy has no bfloat16: widen it here
                f.seek(8 + n + begin)
                bits = np.frombuffer(f.read(end - begin), dtype="<u2").astype(np.uint32) << 16
                tensors[name] = bits.view(np.float32).reshape(shape)
    try:
        with safetensors.safe_open(path, framework="np") as st:
            metadata = st.metadata() or {}
            for name, (code, shape, _, _) in entries.items():
                if code != "BF16":
                    tensors[name] = _native(st.get_tensor(name), _DTYPES[code], shape)
    except safetensors.SafetensorError as exc:  # checked above; a file changed meanwhile?
        raise bad(f"the safetensors package rejected it ({exc})") from None
    return {name: tensors[name] for name in entries}, metadata  # in the header's order


def _fspath(path):
    """``str`` or ``os.PathLike`` (of str or bytes) as a ``str``."""
    return os.fsdecode(os.fspath(path))


def _native(arr, dtype, shape):
    """The package's array, checked, in native byte order and writable."""
    if arr.dtype != dtype or arr.shape != shape:  # the package disagrees with the header?
        arr = arr.astype(dtype).reshape(shape)
    if arr.dtype.byteorder not in "=|" or not arr.flags.writeable:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise _Duplicate(key)
        seen[key] = value
    return seen


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def _parse_header(raw, bad):
    """The header's JSON object; ``bad(reason)`` is the error to raise."""
    try:
        header = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except _Duplicate as exc:
        raise bad(f"the header names {exc.args[0]!r} twice") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise bad(f"the header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise bad("the header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise bad("__metadata__ must map strings to strings")
    return header


def _is_size(value):
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _MAX_INT


def _check_entries(header, n_data, bad):
    """``{name: (code, shape, begin, end)}``, checked against the format's rules."""
    entries = {}
    for name, info in header.items():
        try:
            code, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        except (KeyError, TypeError):
            raise bad(f"entry {name!r} lacks a dtype, a shape or two data_offsets") from None
        if not (isinstance(shape, list) and all(_is_size(s) for s in shape)):
            raise bad(f"tensor {name!r} has shape {shape!r}, not a list of non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_size, offsets))):
            raise bad(
                f"tensor {name!r} has data_offsets {offsets!r}, not two non-negative integers"
            )
        if not isinstance(code, str) or (code not in _DTYPES and code != "BF16"):
            raise bad(f"tensor {name!r} has unsupported dtype {code!r}")
        begin, end = offsets
        if not begin <= end <= n_data:
            raise bad(
                f"tensor {name!r} has offsets [{begin}, {end}] outside the "
                f"{n_data} data bytes (truncated?)"
            )
        itemsize = 2 if code == "BF16" else _DTYPES[code].itemsize
        needed = math.prod(shape) * itemsize
        if end - begin != needed:
            raise bad(
                f"tensor {name!r} holds {end - begin} bytes but shape {shape} of "
                f"{code} needs {needed}"
            )
        entries[name] = (code, tuple(shape), begin, end)
    # The tensors must tile the data exactly: sorted by offsets, each begins where the previous
    # one ends, the first at 0, the last at the end of the file.
    position, previous = 0, None
    for begin, end, name in sorted((b, e, k) for k, (_, _, b, e) in entries.items()):
        if begin < position:
            raise bad(f"tensors {previous!r} and {name!r} overlap")
        if begin > position:
            where = (
                f"between tensors {previous!r} and {name!r}"
                if previous is not None
                else f"before the first tensor {name!r}"
            )
            raise bad(
                f"a hole of {begin - position} unused data bytes {where} "
                f"(bytes {position} to {begin})"
            )
        position, previous = end, name
    if position != n_data:
        raise bad(
            f"{n_data - position} trailing bytes after the last tensor (the tensors end "
            f"at byte {position} of the {n_data} data bytes)"
        )
    return entries
