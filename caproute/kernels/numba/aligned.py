"""Per-thread buffers aligned to the 64-byte cache line, for the kernels that use 512-bit vectors.

Numba's ``np.empty`` aligns to 32 bytes, so a buffer starts at 0 or 32 modulo 64 by chance of
the allocator; at 32, every 512-bit load and store spans two cache lines, and a kernel whose
inner loops load from L1 ran up to 1.5x slower (the D = 16 covariance sums of
``gmm_full_lanes``, one thread, in cache).
"""

from __future__ import annotations

import numpy as np
from numba.extending import register_jitable

LINE = 64


@register_jitable
def empty_aligned(shape, dt):
    """np.empty(shape, dt) starting on a cache line (a view into a slightly larger buffer)."""
    n = 1
    for s in shape:
        n *= s
    buf = np.empty(n + LINE, dt)  # LINE elements: at least LINE bytes to spare
    off = ((LINE - buf.ctypes.data % LINE) % LINE) // buf.itemsize
    return buf[off : off + n].reshape(shape)


@register_jitable
def zeros_aligned(shape, dt):
    """np.zeros(shape, dt) starting on a cache line."""
    out = empty_aligned(shape, dt)
    flat = out.reshape(out.size)
    flat[:] = 0
    return out
