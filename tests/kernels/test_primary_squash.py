"""The fused primary-capsule kernel (``primary_squash`` op) against the pure Array API
reference."""

import array_api_compat.numpy as np_xp
import numpy as np
import pytest

from caproute._backend import CAPABILITIES, dispatch
from tests._helpers import tolerance

pytest.importorskip("numba")

REFERENCE = dispatch._load(CAPABILITIES["primary_squash"]["reference"])
KERNEL = dispatch._load(CAPABILITIES["primary_squash"]["numba"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order", ["type-major", "position-major"])
@pytest.mark.parametrize(("b", "h", "w", "n_types", "dim"), [(3, 5, 4, 3, 7), (1, 1, 1, 1, 1)])
def test_primary_squash_matches_reference(b, h, w, n_types, dim, order, dtype):
    rng = np.random.default_rng(0)
    conv = (3 * rng.standard_normal((b, h, w, n_types * dim))).astype(dtype)
    conv[0, 0, 0, :dim] = 0  # a zero capsule maps to 0 (eps inside the square root)
    got = KERNEL(conv, n_types=n_types, dim=dim, order=order, eps=1e-8, xp=np_xp)
    ref = REFERENCE(conv, n_types=n_types, dim=dim, order=order, eps=1e-8, xp=np_xp)
    ref64 = REFERENCE(
        conv.astype(np.float64), n_types=n_types, dim=dim, order=order, eps=1e-8, xp=np_xp
    )
    assert got.dtype == dtype and got.shape == (b, h * w * n_types, dim)
    np.testing.assert_allclose(got, ref, **tolerance(dtype, "kernel"))
    np.testing.assert_allclose(got, ref64, **tolerance(dtype, "kernel"))
    assert np.all(np.isfinite(got))


def test_non_contiguous_input():
    rng = np.random.default_rng(1)
    conv = rng.standard_normal((2, 4, 3, 12)).astype(np.float32)
    view = np.swapaxes(np.swapaxes(conv, 1, 2).copy(), 1, 2)
    got = KERNEL(view, n_types=3, dim=4, order="type-major", eps=1e-8)
    ref = REFERENCE(conv, n_types=3, dim=4, order="type-major", eps=1e-8, xp=np_xp)
    np.testing.assert_allclose(got, ref, **tolerance(np.float32, "kernel"))
