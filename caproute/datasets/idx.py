"""Reader for the IDX format of the MNIST family (optionally gzip-compressed).

The format: two zero bytes, a type code, the number of dimensions, then one big-endian
uint32 per dimension, then the data in C order, and nothing after it. Every file that breaks
these rules is refused with a ValueError that says what is wrong.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import sys
import zlib

import numpy as np

_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_BYTES = sys.maxsize
_CHUNK = 1 << 24
_OTHER_KINDS = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x93NUM", "a NumPy .npy file"),
    (b"PK\x03\x04", "a zip archive (an .npz?)"),
    (b"\x89HDF", "an HDF5 file"),
    (b"\x80", "a Python pickle"),
)


def read_idx(path: os.PathLike | str) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain) into a NumPy array.

    Parameters
    ----------
    path : str or os.PathLike
        The file. A gzip-compressed file (``.gz``, recognised by its content) is decompressed
        on the fly.

    Returns
    -------
    array : ndarray
        The stored array, in native byte order; uint8 for images and labels.

    Raises
    ------
    ValueError
        If the file is not IDX (a wrong magic number), its header's sizes overflow, its data
        is shorter than its header says (truncated) or followed by trailing bytes, its gzip
        compression is damaged, or it is a directory.
    FileNotFoundError
        If there is no such file.
    TypeError
        If `path` is not a path.

    Examples
    --------
    >>> import gzip, os, tempfile
    >>> import numpy as np
    >>> from caproute.datasets import read_idx
    >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte.gz")
    >>> with gzip.open(path, "wb") as f:
    ...     _ = f.write(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]))
    >>> read_idx(path)
    array([7, 2, 1], dtype=uint8)
    """
    if isinstance(path, bool) or not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"`path` must be a path (str or os.PathLike); got {type(path).__name__}.")
    path = os.fsdecode(os.fspath(path))
    if os.path.isdir(path):
        raise ValueError(f"IDX file {path!r} is a directory, not a file.")
    with open(path, "rb") as raw:  # FileNotFoundError as it is: the path is in its message
        compressed = raw.read(2) == _GZIP_MAGIC
    try:
        with (gzip.open if compressed else open)(path, "rb") as f:
            return _read(f, path)
    except (OSError, EOFError, zlib.error):
        if not compressed:
            raise
        raise ValueError(
            f"IDX file {path!r} is gzip-compressed, but its compressed data is damaged or "
            "truncated."
        ) from None


def _read(f, path):
    head = f.read(4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _TYPES:
        raise ValueError(
            f"IDX file {path!r} does not start with an IDX magic number "
            f"(0x00 0x00, a type code in {sorted(_TYPES)}, ndim); got {head!r}{_what(head)}."
        )
    dtype = _TYPES[head[2]]
    ndim = head[3]
    dims = f.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise ValueError(
            f"IDX file {path!r} is truncated inside its header: {ndim} dimensions need "
            f"{4 * ndim} bytes of sizes, the file has {len(dims)}."
        )
    shape = struct.unpack(f">{ndim}I", dims)
    expected = math.prod(shape) * dtype.itemsize  # exact: Python integers do not overflow
    if expected > _MAX_BYTES:
        raise ValueError(
            f"IDX file {path!r} has a header whose sizes overflow: shape {shape} of {dtype.name} "
            f"would need {expected} data bytes, more than any file can hold; the file is "
            "corrupt or not IDX."
        )
    data = _read_at_most(f, expected)
    held = len(data)
    if held == expected:
        held += _count_rest(f)
    if held != expected:
        what = (
            "the file is truncated"
            if held < expected
            else f"{held - expected} trailing bytes follow the data (corrupt, or not IDX)"
        )
        raise ValueError(
            f"IDX file {path!r} holds {held} data bytes, but its header (shape {shape}, "
            f"{dtype.name}) needs {expected}; {what}."
        )
    array = np.frombuffer(data, dtype=dtype).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def _read_at_most(f, n):
    """Up to ``n`` bytes of ``f``, read in chunks: a header that claims more than the file
    holds costs no more memory than the file."""
    chunks, left = [], n
    while left > 0:
        chunk = f.read(min(left, _CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _count_rest(f):
    count = 0
    while chunk := f.read(_CHUNK):
        count += len(chunk)
    return count


def _what(head):
    """What a file that is not IDX seems to be, from its first bytes (for messages)."""
    for magic, name in _OTHER_KINDS:
        if head.startswith(magic):
            return f": it looks like {name}"
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return ""
    return ": it looks like a text file" if text.isprintable() and text else ""
