"""The container of a Gaussian-mixture E-step's sufficient statistics, shared by the reference
(``caproute.mixture._gmm_math``) and the kernels that accelerate it."""

from __future__ import annotations

from typing import NamedTuple


class Stats(NamedTuple):
    """Sufficient statistics of one E-step over some points (all sums over those points).

    nk (K,): sum of responsibilities; sx (K, D): sum r x; sxx: full (K, D, D) sum r (x-c)(x-c)^T
    around ``shift``; tied (D, D) X^T X; diag and spherical (K, D) sum r x^2; loglik: sum of
    the points' log-likelihoods (0-d array); n: number of points; shift (K, D) or None.

    With sample weights, a point of weight w counts as w copies of itself: every sum has w in
    each term (``sum w r``, ``sum w r x``, ..., tied ``X^T W X``, ``sum w log_norm``; a point of
    weight 0 adds exactly nothing), and n is the total weight, a Python float (the weights
    added in float64) instead of the int count.
    """

    nk: object
    sx: object
    sxx: object
    loglik: object
    n: int | float
    shift: object


def add_stats(a, b):
    """Sum of the statistics of two disjoint sets of points (same shift)."""
    return Stats(a.nk + b.nk, a.sx + b.sx, a.sxx + b.sxx, a.loglik + b.loglik, a.n + b.n, a.shift)
