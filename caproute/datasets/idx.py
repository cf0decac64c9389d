"""Reader for the IDX format of the MNIST family (optionally gzip-compressed).

The format: two zero bytes, a type code, the number of dimensions, then one big-endian
uint32 per dimension, then the data in C order.
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np

_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: os.PathLike | str) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain) into a NumPy array.

    Parameters
    ----------
    path : str or os.PathLike
        The file. A name ending in ``.gz`` is decompressed on the fly.

    Returns
    -------
    array : ndarray
        The stored array, in native byte order; uint8 for images and labels.

    Raises
    ------
    ValueError
        If the file is not IDX, or is shorter or longer than its header says.

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
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        try:
            raw = f.read()
        except (OSError, EOFError) as exc:
            raise ValueError(f"IDX file {path!r} could not be read: {exc}.") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES:
        raise ValueError(
            f"IDX file {path!r} does not start with an IDX magic number "
            f"(0x00 0x00, a type code in {sorted(_TYPES)}, ndim); got {raw[:4]!r}."
        )
    dtype = _TYPES[raw[2]]
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"IDX file {path!r} is truncated inside its header.")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"IDX file {path!r} holds {len(raw) - header} data bytes, but its header "
            f"(shape {shape}, {dtype.name}) needs {expected}; the file is truncated or corrupt."
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)
