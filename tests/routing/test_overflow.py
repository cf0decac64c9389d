"""Finite input that overflows inside routing gives a clear error, never NaN results."""

import numpy as np
import pytest

import caproute as cr

HUGE = np.float32(1e20)  # finite in float32, but its square is not


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_dynamic_routing(backend):
    u = np.full((1, 3, 2, 4), HUGE)
    with (
        np.errstate(over="ignore", invalid="ignore"),
        pytest.raises(
            ValueError,
            match=r"`u_hat` is too large for float32: routing overflowed "
            r"\(largest magnitude 1e\+20\)\. Scale `u_hat` down or pass float64\.",
        ),
    ):
        cr.dynamic_routing(u, 2, backend=backend)
    v = cr.dynamic_routing(u.astype(np.float64), 2, backend=backend)  # the remedy works
    assert np.all(np.isfinite(v))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_dense_dynamic_routing(backend):
    u = np.full((1, 3, 2), HUGE)
    W = np.ones((3, 2, 4, 2), dtype=np.float32)
    with (
        np.errstate(over="ignore", invalid="ignore"),
        pytest.raises(ValueError, match=r"`u` is too large for float32: routing overflowed"),
    ):
        cr.dense_dynamic_routing(u, W, 2, backend=backend)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_em_routing(backend):
    V = np.full((1, 3, 2, 4), HUGE)
    V[0, 0] = -HUGE
    with np.errstate(over="ignore", invalid="ignore"):
        with pytest.raises(
            ValueError, match=r"`votes` is too large for float32: routing overflowed"
        ):
            cr.em_routing(V, np.ones((1, 3), np.float32), 0.0, 0.0, backend=backend)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_squash(backend):
    with np.errstate(over="ignore", invalid="ignore"):
        with pytest.raises(ValueError, match=r"`s` is too large for float32: routing overflowed"):
            cr.squash(np.full((2, 4), HUGE), backend=backend)
