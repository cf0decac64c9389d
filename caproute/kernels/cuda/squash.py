"""GPU squash (numba-cuda): one thread per vector, its norm and scale in one pass.

The entry point has the reference's signature (``caproute._lib.stable_math.squash``), takes
arrays of ``xp`` (CuPy on a GPU, NumPy in the CUDA simulator) and validates nothing.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
from numba import cuda

from ._launch import launch, per_dtype

__all__ = ["BLOCK_SIZE", "PTX_SPECS", "squash"]

BLOCK_SIZE = 256  # threads per block (one vector each); tests lower it for the simulator


@per_dtype
def _kernels(dtype):
    one = dtype(1)

    def squash_rows(s, eps, out):
        """out[r] = squash(s[r]) for the row r of this thread; s, out (n_rows, dim)."""
        r = cuda.grid(1)
        if r < s.shape[0]:
            n2 = dtype(0)
            for d in range(s.shape[1]):
                x = s[r, d]
                n2 += x * x
            scale = n2 / ((one + n2) * math.sqrt(n2 + eps))
            for d in range(s.shape[1]):
                out[r, d] = s[r, d] * scale

    return SimpleNamespace(squash_rows_py=squash_rows, squash_rows=cuda.jit(squash_rows))


def _contiguous(x, xp):
    return xp.ascontiguousarray(x) if hasattr(xp, "ascontiguousarray") else xp.asarray(x, copy=True)


def squash(s, *, axis, eps, xp):
    """GPU squash with the reference's signature: ``|s|^2 / (1 + |s|^2) * s / sqrt(|s|^2 + eps)``
    along ``axis``; returns an array of ``s``'s shape and dtype."""
    moved = xp.moveaxis(s, axis, -1)
    shape = tuple(moved.shape)
    dim = shape[-1]
    n_rows = math.prod(shape[:-1])
    rows = xp.reshape(_contiguous(moved, xp), (n_rows, dim))
    out = xp.empty((n_rows, dim), dtype=s.dtype)
    if n_rows and dim:
        kernels = _kernels(s.dtype)
        eps = np.dtype(s.dtype).type(eps)
        grid = (n_rows + BLOCK_SIZE - 1) // BLOCK_SIZE
        launch(kernels.squash_rows, grid, BLOCK_SIZE)(rows, eps, out)
    return xp.moveaxis(xp.reshape(out, shape), -1, axis)


def _specs():
    specs = []
    for name in ("float32", "float64"):
        k = _kernels(np.dtype(name))
        specs.append(
            ("squash_rows", k.squash_rows_py, f"void({name}[:, ::1], {name}, {name}[:, ::1])")
        )
    return specs


# (name, python function, numba signature) for every kernel here, in float32 and float64:
# ``numba.cuda.compile_ptx(pyfunc, signature, cc=(9, 0))`` compiles each without a GPU.
PTX_SPECS = _specs()
