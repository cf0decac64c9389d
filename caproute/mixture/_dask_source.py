"""Points in a ``dask.array.Array``: every pass of a fit runs per block on the cluster.

Each EM iteration sends the small parameters to every block's task, which computes the
block's sufficient statistics with the block's own backend (the Numba kernel for NumPy blocks,
the CuPy path for CuPy blocks); the statistics, a few kilobytes each, are added in a binary
tree of tasks, and the client runs the M-step on the sum. Prediction methods return lazy
arrays made with ``map_blocks``. Dask is imported only here, and only for Dask input.
"""

from __future__ import annotations

import copy
import functools
import inspect

import numpy as np

from .._backend.dask_arrays import block_namespace
from .._lib.gmm_stats import add_stats
from ._sources import check_weights_host


def _tree_sum(parts, delayed):
    """Pairwise sum of delayed statistics: depth log2(blocks), each task adds two."""
    while len(parts) > 1:
        nxt = [delayed(add_stats)(a, b) for a, b in zip(parts[0::2], parts[1::2], strict=False)]
        if len(parts) % 2:
            nxt.append(parts[-1])
        parts = nxt
    return parts[0]


def _check_block(X, est_name):
    """A block's values, with scikit-learn's messages (runs inside the block's task)."""
    xp = block_namespace_of(X)
    # a finite sum means finite values (scikit-learn's fast path, summed in float64 as it
    # does); finite values whose sum overflows are checked one by one before any error
    if not bool(xp.isfinite(xp.sum(X, dtype=xp.float64))):
        if bool(xp.any(xp.isnan(X))):
            raise ValueError(
                f"Input X contains NaN.\n{est_name} does not accept missing values encoded as "
                "NaN natively."
            )
        if not bool(xp.all(xp.isfinite(X))):
            raise ValueError(
                f"Input X contains infinity or a value too large for dtype('{X.dtype}')."
            )
    return X


def block_namespace_of(block):
    from .._backend import array_namespace

    return array_namespace(block)


class DaskSource:
    """A 2-D Dask array of points (and optional weights, a NumPy or Dask array)."""

    in_memory = False
    distributed = True

    def __init__(self, X, sample_weight, *, est_name, check_now=True):
        import dask
        import dask.array as da

        self._dask, self._da = dask, da
        self.est_name = est_name
        if X.ndim != 2:
            raise ValueError(f"X: expected a 2-D dask array, got shape {X.shape}.")
        if any(np.isnan(c) for c in X.chunks[0]):
            raise ValueError(
                "X: the dask array's chunk sizes are unknown; call X.compute_chunk_sizes() first."
            )
        if X.dtype not in (np.float32, np.float64):
            if X.dtype.kind not in "iubf":  # float16 and longdouble too, as scikit-learn
                raise ValueError(f"Unsupported dtype {X.dtype} for X.")
            X = X.astype(np.float64)
        if len(X.chunks[1]) > 1:
            X = X.rechunk({1: -1})  # a block holds whole points
        self.X = X
        self.n_samples, self.n_features = (int(s) for s in X.shape)
        self.dtype = X.dtype
        self.xp = block_namespace(X)
        self.device = None
        if sample_weight is not None:
            if type(sample_weight).__module__.startswith("dask"):
                sample_weight = sample_weight.compute()
            sample_weight = check_weights_host(sample_weight, self.n_samples, X.dtype)
        self.sample_weight = sample_weight  # NumPy (n_samples,) or None, sliced per block
        if check_now:  # one pass, as scikit-learn checks an in-memory X
            _ = da.map_blocks(
                functools.partial(_check_block, est_name=est_name), X, dtype=X.dtype
            ).sum()
            _.compute()

    def total_weight(self):
        if self.sample_weight is None:
            return self.n_samples
        return float(np.sum(self.sample_weight, dtype=np.float64))

    def bounds(self):
        stops = np.cumsum(self.X.chunks[0])
        starts = stops - np.asarray(self.X.chunks[0])
        return [(int(a), int(b)) for a, b in zip(starts, stops, strict=True)]

    def _blocks(self):
        blocks = self.X.to_delayed().ravel()
        for (start, stop), block in zip(self.bounds(), blocks, strict=True):
            w = None if self.sample_weight is None else self.sample_weight[start:stop]
            yield start, stop, block, w

    def reduce(self, fn):
        """``fn(X_block, w_block)`` per block on the cluster, summed in a tree."""
        delayed = self._dask.delayed
        parts = [delayed(fn)(block, w) for _, _, block, w in self._blocks()]
        return self._dask.compute(_tree_sum(parts, delayed))[0]

    def reduce_indexed(self, fn, resp):
        """``fn(start, X_block, w_block, resp_block)`` per block, summed in a tree; each task
        receives only its block's part of ``resp`` (``resp.block(start, stop)``)."""
        delayed = self._dask.delayed
        parts = [
            delayed(fn)(start, block, w, resp.block(start, stop))
            for start, stop, block, w in self._blocks()
        ]
        return self._dask.compute(_tree_sum(parts, delayed))[0]

    def chunks(self):
        """Blocks computed one at a time on the client (a few small passes only); blocks of
        no rows are skipped (they add nothing, and the initialisations' scans need a row)."""
        for start, stop, block, w in self._blocks():
            if stop > start:
                yield start, block.compute(), w

    def rows(self, idx):
        idx = np.asarray(idx, dtype=np.int64)
        uniq, inverse = np.unique(idx, return_inverse=True)
        picked = self.X[uniq].compute()
        w = None if self.sample_weight is None else self.sample_weight[idx]
        return picked[inverse], w

    def host_array(self):
        return self.X.compute(), self.sample_weight

    def map_blocks(self, fn, kind, n_components):
        """Lazy per-block results: ``kind`` is "labels", "scores" or "proba"."""
        X = self.X
        xp = self.xp
        if inspect.ismethod(fn):
            # the estimator as it is now: a lazy result computed after a later fit (or
            # set_params) must still be this fit's, with the shape declared here
            fn = getattr(copy.copy(fn.__self__), fn.__name__)
        checked = functools.partial(_predict_block, fn, self.est_name)
        meta = X._meta
        if kind == "proba":
            return X.map_blocks(
                checked, dtype=X.dtype, chunks=(X.chunks[0], (n_components,)), meta=meta
            )
        dtype = np.int64 if kind == "labels" else X.dtype
        out_meta = xp.empty((0,), dtype=dtype)
        return X.map_blocks(checked, dtype=dtype, drop_axis=1, meta=out_meta)


def _predict_block(fn, est_name, X):
    _check_block(X, est_name)
    return fn(X, xp=block_namespace_of(X))
