"""Primary capsules from a convolution's output: cut into capsules, reordered and squashed in
one pass (the reference reshapes, permutes -- a copy -- and squashes -- two more passes)."""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import njit_cached


@njit_cached(parallel=True, fastmath={"reassoc", "contract"})
def _primary_squash(conv, n_types, dim, type_major, eps, out):
    """conv (batch, positions, n_types * dim) -> out (batch, n_caps, dim): capsule (p, t) is
    channels t*dim .. t*dim + dim - 1 of position p, at row t*positions + p (type-major) or
    p*n_types + t (position-major), squashed."""
    b, n_pos, _ = conv.shape
    for job in prange(b * n_types):
        n = job // n_types
        t = job - n * n_types
        base = t * dim
        for p in range(n_pos):
            n2 = conv[n, p, base] * conv[n, p, base]
            for d in range(1, dim):
                n2 += conv[n, p, base + d] * conv[n, p, base + d]
            scale = n2 / ((1.0 + n2) * np.sqrt(n2 + eps))
            row = t * n_pos + p if type_major else p * n_types + t
            for d in range(dim):
                out[n, row, d] = conv[n, p, base + d] * scale


def primary_squash(conv, *, n_types, dim, order, eps, xp=None):
    """Numba primary capsules with the reference's signature
    (``caproute.models.layers.capsules.primary_squash``): conv (batch, H, W, n_types * dim)
    NumPy -> (batch, H * W * n_types, dim)."""
    b, ho, wo, _ = (int(s) for s in conv.shape)
    flat = np.ascontiguousarray(conv).reshape(b, ho * wo, n_types * dim)
    out = np.empty((b, ho * wo * n_types, dim), dtype=conv.dtype)
    _primary_squash(flat, n_types, dim, order == "type-major", conv.dtype.type(eps), out)
    return out
