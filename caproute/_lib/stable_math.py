"""Numerically stable primitives written against the Array API (``xp`` passed in)."""

from __future__ import annotations


def logsumexp(x, /, *, axis, keepdims=False, xp):
    """log(sum(exp(x))) along ``axis``, shifted by the max so nothing overflows.

    A slice that is entirely -inf gives -inf (not NaN).
    """
    m = xp.max(x, axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    out = xp.log(xp.sum(xp.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else xp.squeeze(out, axis=axis)


def softmax(x, /, *, axis, xp):
    """exp(x) normalised along ``axis``, max-shifted."""
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)


def log_sigmoid(x, /, *, xp):
    """log(1 / (1 + exp(-x))) without overflow: -log(1 + exp(-x)) = -logaddexp(0, -x)."""
    return -xp.logaddexp(xp.zeros_like(x), -x)


def squash(s, /, *, axis, eps, xp):
    """Sabour et al.'s squash, |s|^2 / (1 + |s|^2) * s / sqrt(|s|^2 + eps).

    ``eps`` sits inside the square root so that s = 0 maps to 0 instead of 0/0.
    """
    n2 = xp.sum(s * s, axis=axis, keepdims=True)
    return s * (n2 / ((1 + n2) * xp.sqrt(n2 + eps)))
