"""Numba squash: each vector's norm and scale in one pass, rows in parallel."""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import njit_cached


@njit_cached(parallel=True, fastmath={"reassoc", "contract"})
def _squash_rows(s, eps, out):
    n, dim = s.shape
    for r in prange(n):
        n2 = s[r, 0] * s[r, 0]
        for d in range(1, dim):
            n2 += s[r, d] * s[r, d]
        scale = n2 / ((1.0 + n2) * np.sqrt(n2 + eps))
        for d in range(dim):
            out[r, d] = s[r, d] * scale


def squash(s, *, axis, eps, xp=None):
    """Numba squash with the reference's signature."""
    moved = np.ascontiguousarray(np.moveaxis(s, axis, -1))
    rows = moved.reshape(-1, moved.shape[-1])
    out = np.empty_like(rows)
    _squash_rows(rows, s.dtype.type(eps), out)
    return np.moveaxis(out.reshape(moved.shape), -1, axis)
