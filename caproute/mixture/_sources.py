"""Where a mixture's points come from: an array in memory, or chunks read from disk.

Every pass of a fit (initialisation and EM iterations) is a sum over the points, so the
estimator only needs each source to walk its points in order, chunk by chunk, and to hand it
a few rows by index. Nothing here holds more than one chunk of points at a time, except the
in-memory source, whose array is the user's.

- :class:`ArraySource`: a validated array of any Array API library; the E-step kernel sees all
  of it at once (the kernels work in their own blocks), the initialisation in chunks.
- :class:`ChunkedSource`: a NumPy memmap (read with plain file reads into one reused buffer,
  so the page cache holds the file and the process does not), an array-like whose slices are
  NumPy arrays (Zarr, h5py), or a re-iterable of arrays. Each chunk is checked as it is read.
"""

from __future__ import annotations

import mmap
import numbers
import os

import numpy as np

from .._backend import check_plain_array, cupy_namespace, device, is_array, to_device, to_numpy
from .._lib.gmm_stats import add_stats
from .._sklearn_compat import check_sample_weight
from . import _gmm_math


def _sum_chunks(source, fn):
    """The sum of the statistics ``fn(start, X_chunk, w_chunk)`` over the source's chunks."""
    total = None
    for start, X, w in source.chunks():
        part = fn(start, X, w)
        total = part if total is None else add_stats(total, part)
    return total


class ArraySource:
    """Points in memory: ``X`` (validated, 2-D, float) and optional ``sample_weight``."""

    in_memory = True

    def __init__(self, X, sample_weight, *, xp, chunk_size):
        self.X = X
        self.sample_weight = sample_weight
        self.xp = xp
        self.n_samples, self.n_features = (int(s) for s in X.shape)
        self.dtype = X.dtype
        self.device = device(X)
        self.chunk_size = int(chunk_size)

    def total_weight(self):
        if self.sample_weight is None:
            return self.n_samples
        return float(self.xp.sum(self.xp.astype(self.sample_weight, self.xp.float64)))

    def bounds(self):
        return list(_gmm_math.chunks(self.n_samples, self.chunk_size))

    def chunks(self):
        """``(start, X_chunk, w_chunk)`` in order (views; ``w_chunk`` None when unweighted)."""
        w = self.sample_weight
        for start, stop in _gmm_math.chunks(self.n_samples, self.chunk_size):
            yield start, self.X[start:stop, ...], None if w is None else w[start:stop]

    def reduce(self, fn):
        """``fn(X, w)`` over the whole array (the kernels block it themselves)."""
        return fn(self.X, self.sample_weight)

    def reduce_indexed(self, fn, resp):
        """``fn(start, X_chunk, w_chunk, resp)`` summed over the chunks."""
        return _sum_chunks(self, lambda start, X, w: fn(start, X, w, resp))

    def rows(self, idx):
        """Rows ``idx`` (host integers) of X and of the weights, on X's device."""
        xp = self.xp
        i = to_device(np.asarray(idx, dtype=np.int64), xp, device=self.device)
        w = self.sample_weight
        return xp.take(self.X, i, axis=0), None if w is None else xp.take(w, i, axis=0)

    def host_array(self):
        """X and the weights as NumPy arrays (for scikit-learn's KMeans and k-means++): no
        copy for NumPy input; from a device, copied once per fit however many ``n_init``
        runs ask (the source lives as long as the fit)."""
        if getattr(self, "_host", None) is None:
            w = self.sample_weight
            self._host = (to_numpy(self.X), None if w is None else to_numpy(w))
        return self._host


class ChunkedSource:
    """Points read chunk by chunk from ``reader`` (see :func:`chunk_reader`), checked as they
    are read, moved to ``xp``'s device one chunk at a time when ``xp`` is not NumPy."""

    in_memory = False

    def __init__(self, reader, sample_weight, *, xp, est_name):
        self.reader = reader
        self.sample_weight = sample_weight  # a NumPy array (n_samples,) or None
        self.xp = xp
        self.n_samples, self.n_features = reader.n_samples, reader.n_features
        self.dtype = reader.dtype
        self.device = None
        self.est_name = est_name

    @classmethod
    def from_data(cls, X, sample_weight, *, chunk_rows, backend, est_name):
        """The source for out-of-core ``X``; ``chunk_rows`` None reads about 32 MiB a time."""
        if chunk_rows is None:
            n_features = int(X.shape[1]) if hasattr(X, "shape") and len(X.shape) == 2 else 1
            chunk_rows = max(1024, READ_BYTES // (8 * max(1, n_features)))
        reader = chunk_reader(X, chunk_rows, est_name)
        if sample_weight is not None:
            sample_weight = check_weights_host(sample_weight, reader.n_samples, reader.dtype)
        xp = cupy_namespace() if backend == "cupy" else np
        return cls(reader, sample_weight, xp=xp, est_name=est_name)

    def total_weight(self):
        if self.sample_weight is None:
            return self.n_samples
        return float(np.sum(self.sample_weight, dtype=np.float64))

    def bounds(self):
        return self.reader.bounds()

    def _to_xp(self, a):
        return a if self.xp is np else to_device(a, self.xp)

    def chunks(self):
        w = self.sample_weight
        for start, X in self.reader.read():
            if X.shape[0] == 0:  # an empty chunk of a list adds nothing to any pass
                continue
            stop = start + X.shape[0]
            wc = None if w is None else self._to_xp(w[start:stop])
            yield start, self._to_xp(X), wc

    def reduce(self, fn):
        """``fn(X_chunk, w_chunk)`` summed over the chunks."""
        return _sum_chunks(self, lambda start, X, w: fn(X, w))

    def reduce_indexed(self, fn, resp):
        """``fn(start, X_chunk, w_chunk, resp)`` summed over the chunks."""
        return _sum_chunks(self, lambda start, X, w: fn(start, X, w, resp))

    def rows(self, idx):
        idx = np.asarray(idx, dtype=np.int64)
        out = np.empty((idx.shape[0], self.n_features), dtype=self.dtype)
        for start, X in self.reader.read():
            hit = (idx >= start) & (idx < start + X.shape[0])
            out[hit] = X[idx[hit] - start]
        w = None if self.sample_weight is None else self.sample_weight[idx]
        return self._to_xp(out), None if w is None else self._to_xp(w)

    def host_array(self):
        X = np.empty((self.n_samples, self.n_features), dtype=self.dtype)
        for start, part in self.reader.read():
            X[start : start + part.shape[0]] = part
        return X, self.sample_weight


# ----------------------------------------------------------------------------- readers
#: Bytes of float64 points an out-of-core fit reads at a time (when chunk_size is None).
READ_BYTES = 32 * 2**20


def check_weights_host(sample_weight, n_samples, dtype):
    """scikit-learn's checks and messages for the weights of data read in chunks (the
    weights themselves are one number per point, in memory)."""
    check_plain_array(sample_weight, name="sample_weight")
    if is_array(sample_weight):
        sample_weight = to_numpy(sample_weight)
    # a zero-width array stands for X: it has X's number of rows and no memory
    return check_sample_weight(sample_weight, np.empty((n_samples, 0)), dtype=dtype)


def _check_chunk(X, n_features, dtype, est_name, where):
    """One chunk as a C-contiguous float array, with scikit-learn's messages for bad values."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != n_features:
        raise ValueError(
            f"X: every chunk must have shape (rows, {n_features}); {where} has shape {X.shape}."
        )
    if X.dtype != dtype:
        X = X.astype(dtype)
    # a sum is finite exactly when every value is (scikit-learn's fast path, no temporary)
    if not np.isfinite(np.sum(X, dtype=np.float64)):
        if np.isnan(X).any():
            raise ValueError(
                f"Input X contains NaN.\n{est_name} does not accept missing values encoded as "
                f"NaN natively. ({where})"
            )
        if not np.isfinite(X).all():
            raise ValueError(
                f"Input X contains infinity or a value too large for dtype('{X.dtype}'). ({where})"
            )
    return np.ascontiguousarray(X)


def _float_dtype(dtype, what):
    dtype = np.dtype(dtype)
    if dtype in (np.float32, np.float64):
        return dtype
    if dtype.kind in "iub":
        return np.dtype(np.float64)
    raise ValueError(f"X: {what} must hold real numbers; got dtype {dtype}.")


class _SliceReader:
    """Reads an array-like with ``shape``, ``dtype`` and row slicing (NumPy arrays, Zarr,
    h5py) in row ranges of ``chunk_rows``."""

    def __init__(self, X, chunk_rows, est_name):
        self.X = X
        self.n_samples, self.n_features = (int(s) for s in X.shape)
        self.dtype = _float_dtype(X.dtype, type(X).__name__)
        self.chunk_rows = int(chunk_rows)
        self.est_name = est_name

    def bounds(self):
        return list(_gmm_math.chunks(self.n_samples, self.chunk_rows))

    def read(self):
        for start, stop in self.bounds():
            part = self.X[start:stop]
            yield (
                start,
                _check_chunk(
                    part, self.n_features, self.dtype, self.est_name, f"rows {start}:{stop}"
                ),
            )


class _MemmapReader(_SliceReader):
    """A C-ordered NumPy memmap read with ``readinto`` into one reused buffer: the pages a
    memmap touches stay in the process's resident set, a plain read leaves them in the page
    cache only. A chunk it yields is valid until the next one is read."""

    def __init__(self, X, chunk_rows, est_name):
        super().__init__(X, chunk_rows, est_name)
        self.path = os.fspath(X.filename)
        self.offset = int(X.offset)
        self.file_dtype = X.dtype

    def read(self):
        row_bytes = self.n_features * self.file_dtype.itemsize
        buf = np.empty((min(self.chunk_rows, self.n_samples), self.n_features), self.file_dtype)
        with open(self.path, "rb", buffering=0) as f:
            f.seek(self.offset)
            for start, stop in self.bounds():
                part = buf[: stop - start]
                view = memoryview(part).cast("B")
                got = 0
                while got < view.nbytes:
                    n = f.readinto(view[got:])
                    if not n:
                        raise ValueError(
                            f"X: the file {self.path!r} ended at row {start + got // row_bytes} "
                            f"of {self.n_samples} (it was changed or truncated during the fit)."
                        )
                    got += n
                yield (
                    start,
                    _check_chunk(
                        part, self.n_features, self.dtype, self.est_name, f"rows {start}:{stop}"
                    ),
                )


class _IterableReader:
    """A re-iterable of 2-D arrays (a list of chunks, or an object whose ``__iter__`` starts
    again each time). The first pass counts the rows and checks the chunks."""

    def __init__(self, chunks, est_name):
        self.chunks = chunks
        self.est_name = est_name
        n, n_features, dtype, sizes = 0, None, None, []
        for i, part in enumerate(iter(chunks)):
            part = np.asarray(part)
            if part.ndim != 2:
                raise ValueError(
                    f"X: every chunk of an iterable must be a 2-D array; chunk {i} has "
                    f"shape {part.shape}."
                )
            if n_features is None:
                n_features = int(part.shape[1])
                dtype = _float_dtype(part.dtype, "the chunks")
            elif part.shape[1] != n_features:
                raise ValueError(
                    f"X: every chunk must have {n_features} features (as the first); chunk {i} "
                    f"has shape {part.shape}."
                )
            sizes.append(int(part.shape[0]))
            n += int(part.shape[0])
        if n_features is None:
            raise ValueError("X: the iterable of chunks is empty.")
        self.n_samples, self.n_features, self.dtype, self.sizes = n, n_features, dtype, sizes

    def bounds(self):
        out, start = [], 0
        for m in self.sizes:
            out.append((start, start + m))
            start += m
        return out

    def read(self):
        start = 0
        for i, part in enumerate(iter(self.chunks)):
            if i >= len(self.sizes) or np.shape(part)[0] != self.sizes[i]:
                raise ValueError(
                    "X: the iterable of chunks gave different chunks on a second pass; pass a "
                    "list of arrays or an object whose __iter__ starts again each time."
                )
            yield (
                start,
                _check_chunk(part, self.n_features, self.dtype, self.est_name, f"chunk {i}"),
            )
            start += self.sizes[i]


def is_out_of_core(X):
    """Whether X is read chunk by chunk: a NumPy memmap, an array-like that is not an array
    in memory (Zarr, h5py: ``shape``, ``dtype`` and slicing), a list of 2-D arrays, or another
    iterable of them."""
    if isinstance(X, np.memmap):
        return True
    if isinstance(X, (list, tuple)):
        # a list of 2-D arrays is a list of chunks; a list of rows is an ordinary array-like
        return len(X) > 0 and all(getattr(part, "ndim", None) == 2 for part in X)
    if isinstance(X, (np.ndarray, str, bytes)) or hasattr(X, "__array_namespace__"):
        return False
    module = type(X).__module__.split(".")[0]
    if module in ("zarr", "h5py"):
        return True
    return hasattr(X, "__iter__") and not hasattr(X, "__array__") and not hasattr(X, "shape")


def chunk_reader(X, chunk_rows, est_name):
    """The reader for an out-of-core X (see :func:`is_out_of_core`)."""
    if isinstance(X, np.memmap):
        if X.ndim != 2:
            raise ValueError(f"X: expected a 2-D memmap, got shape {X.shape}.")
        # a memmap opened on a file (not a slice of one: slices keep the parent's offset)
        if X.flags.c_contiguous and getattr(X, "filename", None) and isinstance(X.base, mmap.mmap):
            return _MemmapReader(X, chunk_rows, est_name)
        return _SliceReader(X, chunk_rows, est_name)
    if hasattr(X, "shape") and hasattr(X, "dtype"):
        if len(X.shape) != 2:
            raise ValueError(f"X: expected a 2-D array, got shape {tuple(X.shape)}.")
        rows = chunk_rows
        zarr_chunks = getattr(X, "chunks", None)
        if isinstance(zarr_chunks, tuple) and isinstance(zarr_chunks[0], numbers.Integral):
            # whole storage chunks per read: a Zarr chunk is decompressed once per pass
            rows = max(1, round(chunk_rows / zarr_chunks[0])) * int(zarr_chunks[0])
        return _SliceReader(X, rows, est_name)
    if iter(X) is X:
        raise TypeError(
            "X: a one-shot iterator (a generator, say) can be read only once, and a fit reads "
            "the data once per iteration. Pass a list of arrays, an object whose __iter__ "
            "starts again each time, a NumPy memmap or a Zarr array."
        )
    return _IterableReader(X, est_name)
