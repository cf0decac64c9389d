"""``aligned``: the kernels' per-thread buffers start on a 64-byte cache line (Numba's
``np.empty`` guarantees 32 bytes only), have the shape asked for, and ``zeros_aligned`` is all
zeros even where the allocator hands back used memory."""

import numpy as np
import pytest
from numba import njit

from caproute.kernels.numba.aligned import LINE, empty_aligned, zeros_aligned


@njit
def _offsets(n, like):
    # allocations of many sizes, each kept alive while the next ones are made, so that the
    # allocator's starting addresses vary (some at 32 modulo 64 without the alignment)
    keep = []
    worst = 0
    nonzero = 0
    for i in range(n):
        a = empty_aligned((i % 7 + 1, 3, i + 1), like.dtype)
        a[...] = 1.0
        z = zeros_aligned((2, i + 1), like.dtype)
        worst = max(worst, a.ctypes.data % LINE, z.ctypes.data % LINE)
        nonzero += np.count_nonzero(z)
        keep.append(a)
    return worst, nonzero, keep[-1].shape


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_buffers_start_on_a_cache_line(dtype):
    worst, nonzero, shape = _offsets(200, np.zeros(1, dtype))
    assert worst == 0
    assert nonzero == 0
    assert shape == (199 % 7 + 1, 3, 200)


def test_plain_numba_arrays_are_not_always_on_a_cache_line():
    # why the module exists: without it some buffers start at 32 modulo 64
    @njit
    def offsets(n):
        keep = []
        seen = 0
        for i in range(n):
            a = np.empty(i * 3 + 5)
            seen |= 1 << (a.ctypes.data % LINE // 32)
            keep.append(a)
        return seen

    assert offsets(200) == 3
