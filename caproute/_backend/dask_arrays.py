"""Dask arrays of images: recognised without importing Dask, mapped block by block.

Dask is optional: this module never imports it unless an argument's type comes from it, so
``import caproute`` (and a model classifying NumPy images) does not load it. A
``dask.array.Array`` of images is split along its batch axis only: the image axes are merged
into one chunk each (rechunked if they are not), every block runs the ordinary NumPy (or CuPy,
for CuPy blocks) code, and the result is a lazy Dask array chunked along the batch axis as the
input is. The object doing the work (a model) enters the graph once, under one key that every
block depends on, so with ``dask.distributed`` it travels once to each worker, not once per
block.

Examples
--------
>>> import dask.array as da
>>> from caproute import datasets, models
>>> net = models.load_pretrained("matrix-capsnet-fashion-mnist")
>>> images, labels = datasets.load_fashion_mnist_subset()
>>> lazy = net.predict(da.from_array(images[:60], chunks=(25, 28, 28)))
>>> lazy  # nothing computed yet
dask.array<caproute-predict, shape=(60,), dtype=int64, chunksize=(25,), chunktype=numpy.ndarray>
>>> lazy.chunks
((25, 25, 10),)
>>> bool((lazy.compute() == net.predict(images[:60])).all())
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .namespace import array_namespace

__all__ = ["block_meta", "block_namespace", "is_dask_array", "map_batches", "unknown_axes"]


def is_dask_array(x: Any) -> bool:
    """True for a ``dask.array.Array`` (or a subclass); Dask is imported only when the type of
    ``x`` comes from it, so this is free for every other input."""
    if not any(_from_dask(klass) for klass in type(x).__mro__):
        return False
    import dask.array as da

    return isinstance(x, da.Array)


def _from_dask(klass):
    module = getattr(klass, "__module__", None) or ""
    return module == "dask" or module.startswith("dask.")


def block_meta(x):
    """An empty array of the library and dtype of ``x``'s blocks (NumPy, CuPy, a masked array)."""
    return x._meta


def block_namespace(x):
    """The Array API namespace of ``x``'s blocks (NumPy's or CuPy's), not Dask's."""
    return array_namespace(x._meta)


def unknown_axes(x) -> list[int]:
    """The axes of ``x`` whose sizes Dask does not know (after filtering or boolean indexing)."""
    return [
        axis for axis, size in enumerate(x.shape) if isinstance(size, float) and math.isnan(size)
    ]


def map_batches(
    func: Callable,
    x,
    shared: Any,
    *args: Any,
    shared_token: Any,
    out_tail: tuple[int, ...],
    meta,
    name: str,
):
    """The lazy ``func(block, shared, *args)`` for every batch block of ``x``.

    Parameters
    ----------
    func : callable
        ``func(block, shared, *args)`` returns an array of shape ``(len(block), *out_tail)``;
        a module-level function (workers import it by name).
    x : dask.array.Array of shape (n, ...)
        Its axes after the first are merged into one chunk each (a rechunk, only where they
        are split); its chunks along the first axis are kept.
    shared : object
        Put into the graph once, under a key derived from ``shared_token``: every block
        depends on that key instead of carrying its own copy.
    *args
        Small arguments embedded in every block's task.
    shared_token : object
        What identifies ``shared``'s content for Dask's ``tokenize`` (e.g. a model's
        configuration and weights): equal tokens share a key, so equal contents are stored
        once.
    out_tail : tuple of int
        The per-sample shape of ``func``'s output (``()`` for one value per sample).
    meta : array
        An empty array of the output's library, dtype and number of dimensions, declared to
        Dask so that nothing runs while the graph is built.
    name : str
        Prefix of the output's keys (the rest is a token of the inputs).

    Returns
    -------
    dask.array.Array of shape (n, *out_tail)
        Lazy; chunked along the first axis as ``x`` is.
    """
    import dask
    import dask.array as da
    from dask.base import tokenize

    if x.ndim < 1 + len(out_tail):
        raise ValueError(f"map_batches needs at least {1 + len(out_tail)} axes; got {x.ndim}.")
    if any(n > 1 for n in x.numblocks[1:]):
        x = x.rechunk(dict.fromkeys(range(1, x.ndim), -1))
    shared = dask.delayed(
        shared,
        name=f"caproute-{type(shared).__name__}-{tokenize(shared_token)}",
        pure=True,
        traverse=False,
    )
    return da.map_blocks(
        func,
        x,
        shared,
        *args,
        chunks=(x.chunks[0], *((int(s),) for s in out_tail)),
        drop_axis=list(range(1 + len(out_tail), x.ndim)),
        dtype=meta.dtype,
        meta=meta,
        token=name,
    )
