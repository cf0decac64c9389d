"""im2col and its transpose for NHWC arrays, written with slicing only (pure Array API)."""

from __future__ import annotations

from .._backend import device as _device


def pad_hw(x, padding, *, xp):
    """Zero-pad axes 1 and 2 of an (batch, height, width, ...) array on both sides."""
    if padding == 0:
        return x
    b, h, w = x.shape[:3]
    rest = tuple(x.shape[3:])
    zrow = xp.zeros((b, padding, w) + rest, dtype=x.dtype, device=_device(x))
    x = xp.concat([zrow, x, zrow], axis=1)
    zcol = xp.zeros((b, h + 2 * padding, padding) + rest, dtype=x.dtype, device=_device(x))
    return xp.concat([zcol, x, zcol], axis=2)


def patches(x, kernel, stride, *, xp):
    """Receptive fields of a (batch, H, W, ...) array as (batch, Ho, Wo, kh, kw, ...).

    Entry ``[b, y, x, di, dj]`` is input position ``(stride*y + di, stride*x + dj)``.
    """
    kh, kw = kernel
    b, h, w = (int(s) for s in x.shape[:3])
    ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
    taps = [
        x[
            :,
            di : di + stride * (ho - 1) + 1 : stride,
            dj : dj + stride * (wo - 1) + 1 : stride,
            ...,
        ]
        for di in range(kh)
        for dj in range(kw)
    ]
    out = xp.stack(taps, axis=3)  # (b, ho, wo, kh * kw, ...): one copy
    return xp.reshape(out, (b, ho, wo, kh, kw) + tuple(int(s) for s in x.shape[3:]))


def fold(cols, in_hw, stride, *, xp, reduce="sum"):
    """The transpose of :func:`patches`: scatter (batch, Ho, Wo, kh, kw, ...) back to
    (batch, H, W, ...), adding (``reduce="sum"``) or taking the maximum (``"max"``) where
    receptive fields overlap. Positions no field covers get 0 (sum) or -inf (max)."""
    b, ho, wo, kh, kw = (int(s) for s in cols.shape[:5])
    rest = tuple(int(s) for s in cols.shape[5:])
    h, w = in_hw
    fill = 0.0 if reduce == "sum" else -float("inf")
    out = xp.full((b, h, w) + rest, fill, dtype=cols.dtype, device=_device(cols))
    for di in range(kh):
        for dj in range(kw):
            rs = slice(di, di + stride * (ho - 1) + 1, stride)
            cs = slice(dj, dj + stride * (wo - 1) + 1, stride)
            piece = cols[:, :, :, di, dj, ...]
            if reduce == "sum":
                out[:, rs, cs, ...] = out[:, rs, cs, ...] + piece
            else:
                out[:, rs, cs, ...] = xp.maximum(out[:, rs, cs, ...], piece)
    return out
