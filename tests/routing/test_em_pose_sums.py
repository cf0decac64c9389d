"""The Numba EM kernel's per-parent pose sums (``_pose_sums16``: sixteen vector sums and one
shuffle reduction tree) against NumPy, and their zero-padded children."""

import numba
import numpy as np
import pytest

from caproute.kernels.numba import em_routing as k


@numba.njit
def _run(Vj, w, mu, out, centred):
    k._pose_sums16(Vj, w, mu, out, centred)


@pytest.mark.parametrize("n", [16, 32, 288])
@pytest.mark.parametrize("centred", [False, True])
def test_pose_sums16(n, centred):
    rng = np.random.default_rng(n)
    Vj = rng.normal(size=(16, n)).astype(np.float32)
    w = rng.random(n).astype(np.float32)
    mu = rng.normal(size=16).astype(np.float32)
    out = np.full(16, np.nan, dtype=np.float32)
    _run(Vj, w, mu, out, centred)
    x = Vj.astype(np.float64) - (mu[:, None] if centred else 0.0)
    want = (x * x if centred else x) @ w.astype(np.float64)
    np.testing.assert_allclose(out, want, rtol=2e-5, atol=1e-5)


def test_padding_children_contribute_nothing():
    """The kernel pads each parent's children to a multiple of 16 with zero votes and zero
    weights: routing 24 children equals routing them as the first 24 of 32."""
    rng = np.random.default_rng(1)
    V = rng.normal(size=(1, 24, 3, 16)).astype(np.float32)
    a = rng.random((1, 24)).astype(np.float32)
    kw = dict(inverse_temperature=np.array([1.0, 2.0]), min_var=1e-4, eps=1e-7)
    bu, ba = np.zeros((3, 16), np.float32), np.zeros(3, np.float32)
    pose, act, _ = k.em_routing(V, a, bu, ba, **kw)
    V32 = np.concatenate([V, np.zeros((1, 8, 3, 16), np.float32)], axis=1)
    a32 = np.concatenate([a, np.zeros((1, 8), np.float32)], axis=1)
    pose32, act32, _ = k.em_routing(V32, a32, bu, ba, **kw)
    np.testing.assert_allclose(pose, pose32, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(act, act32, rtol=1e-5, atol=1e-6)


@numba.njit
def _run_any(Vj, w, mu, out, centred, hlit):
    k._pose_sums(Vj, w, mu, out, centred, hlit)


@pytest.mark.parametrize("dtype, dim", [(np.float32, 16), (np.float32, 4), (np.float64, 16)])
def test_plain_sums_never_read_the_means(dtype, dim):
    """The means' call passes the (not yet written) means array as ``mu``: NaN there must not
    reach the sums, in the 16-lane intrinsic or the generic loops."""
    rng = np.random.default_rng(dim)
    Vj = rng.normal(size=(dim, 32)).astype(dtype)
    w = rng.random(32).astype(dtype)
    out = np.full(dim, np.nan, dtype=dtype)
    mu = np.full(dim, np.nan, dtype=dtype)
    _run_any(Vj, w, mu, out, False, (0,) * dim)
    np.testing.assert_allclose(out, Vj.astype(np.float64) @ w, rtol=2e-5, atol=1e-5)
