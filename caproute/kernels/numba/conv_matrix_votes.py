"""Matrix-capsule votes of every receptive field, gathered and multiplied in one pass.

``V = M W`` for each child pose ``M`` (a flattened 4x4) of each kh x kw receptive field and
each parent type: the reference extracts the fields (a copy of the poses, one per field that
holds them) and then multiplies tens of thousands of 4x4 matrices through NumPy's batched
``matmul``, whose per-matrix overhead is far larger than its 64 multiply-adds. Here each
vote is written once, straight from the pose map, with the 4x4 product unrolled, images and
output rows in parallel; the children's activations are gathered in the same pass.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import njit_cached


@njit_cached(parallel=True, fastmath={"contract"})
def _conv_votes(pose, act, weight, stride, votes, a_in):
    """pose (b, H, W, t_in * 16), act (b, H, W, t_in), weight (kh, kw, t_in, t_out * 16) ->
    votes (b, ho, wo, kh, kw, t_in, t_out * 16) with V = M W for each 4x4 M and W (flattened
    row-major), a_in (b, ho, wo, kh, kw, t_in)."""
    b, ho, wo, kh, kw, t_in, width = votes.shape
    t_out = width // 16
    for job in prange(b * ho):
        n = job // ho
        oy = job - n * ho
        for ox in range(wo):
            for di in range(kh):
                for dj in range(kw):
                    y = oy * stride + di
                    x = ox * stride + dj
                    for ti in range(t_in):
                        a_in[n, oy, ox, di, dj, ti] = act[n, y, x, ti]
                        m0 = ti * 16
                        for to in range(t_out):
                            w0 = to * 16
                            for r in range(4):
                                p0 = pose[n, y, x, m0 + 4 * r]
                                p1 = pose[n, y, x, m0 + 4 * r + 1]
                                p2 = pose[n, y, x, m0 + 4 * r + 2]
                                p3 = pose[n, y, x, m0 + 4 * r + 3]
                                for c in range(4):
                                    votes[n, oy, ox, di, dj, ti, w0 + 4 * r + c] = (
                                        p0 * weight[di, dj, ti, w0 + c]
                                        + p1 * weight[di, dj, ti, w0 + 4 + c]
                                        + p2 * weight[di, dj, ti, w0 + 8 + c]
                                        + p3 * weight[di, dj, ti, w0 + 12 + c]
                                    )


def conv_matrix_votes(pose, act, weight, *, stride, layout="caproute", xp=None):
    """Numba votes with the reference's signature
    (``caproute.models.layers.matrix_caps.conv_matrix_votes``): pose (b, H, W, t_in, 16),
    act (b, H, W, t_in), weight (kh, kw, t_in, t_out, 4, 4) NumPy -> votes
    (b * ho * wo, kh * kw * t_in, t_out, 16) and a_in (b * ho * wo, kh * kw * t_in)."""
    kh, kw, t_in, t_out = (int(s) for s in weight.shape[:4])
    b, h, w = (int(s) for s in act.shape[:3])
    ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
    dtype = pose.dtype
    votes = np.empty((b, ho, wo, kh, kw, t_in, t_out, 16), dtype=dtype)
    a_in = np.empty((b, ho, wo, kh, kw, t_in), dtype=dtype)
    if layout == "transposed":  # V = M W^T: the 4x4 transforms transposed once (small)
        weight = np.swapaxes(weight, -1, -2)
    weight = np.ascontiguousarray(weight, dtype=dtype).reshape(kh, kw, t_in, t_out * 16)
    pose = np.ascontiguousarray(pose).reshape(b, h, w, t_in * 16)
    flat = votes.reshape(b, ho, wo, kh, kw, t_in, t_out * 16)
    _conv_votes(pose, np.ascontiguousarray(act), weight, stride, flat, a_in)
    n_in = kh * kw * t_in
    return votes.reshape(b * ho * wo, n_in, t_out, 16), a_in.reshape(b * ho * wo, n_in)
