"""The matrix-capsule votes kernel (``conv_matrix_votes`` op) against the pure Array API
reference."""

import array_api_compat.numpy as np_xp
import numpy as np
import pytest

from caproute._backend import CAPABILITIES, dispatch
from tests._helpers import tolerance

pytest.importorskip("numba")

REFERENCE = dispatch._load(CAPABILITIES["conv_matrix_votes"]["reference"])
KERNEL = dispatch._load(CAPABILITIES["conv_matrix_votes"]["numba"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["caproute", "transposed"])
@pytest.mark.parametrize(
    ("b", "h", "w", "t_in", "kh", "kw", "t_out", "stride"),
    [
        (2, 7, 6, 3, 3, 3, 5, 2),
        (3, 5, 5, 2, 3, 3, 4, 1),
        (1, 3, 4, 5, 3, 4, 7, 1),  # a field as large as the map (the class capsules)
        (2, 4, 4, 1, 1, 1, 1, 1),
    ],
)
def test_votes_match_reference(b, h, w, t_in, kh, kw, t_out, stride, layout, dtype):
    rng = np.random.default_rng(0)
    pose = rng.standard_normal((b, h, w, t_in, 16)).astype(dtype)
    act = rng.random((b, h, w, t_in)).astype(dtype)
    weight = rng.standard_normal((kh, kw, t_in, t_out, 4, 4)).astype(dtype)
    votes, a_in = KERNEL(pose, act, weight, stride=stride, layout=layout, xp=np_xp)
    ref_votes, ref_a = REFERENCE(pose, act, weight, stride=stride, layout=layout, xp=np_xp)
    assert votes.dtype == dtype and votes.shape == ref_votes.shape
    np.testing.assert_array_equal(a_in, ref_a)
    np.testing.assert_allclose(votes, ref_votes, **tolerance(dtype, "kernel", 4.0))


def test_broadcast_weight_and_views():
    """The class capsules pass a weight broadcast over positions (a read-only view)."""
    rng = np.random.default_rng(1)
    pose = rng.standard_normal((2, 3, 3, 4, 16)).astype(np.float32)
    act = rng.random((2, 3, 3, 4)).astype(np.float32)
    w = rng.standard_normal((4, 6, 4, 4)).astype(np.float32)
    weight = np.broadcast_to(w[None, None], (3, 3, 4, 6, 4, 4))
    votes, a_in = KERNEL(pose, act, weight, stride=1)
    ref_votes, ref_a = REFERENCE(pose, act, weight, stride=1, xp=np_xp)
    np.testing.assert_allclose(votes, ref_votes, **tolerance(np.float32, "kernel", 4.0))
    assert votes.shape == (2, 36, 6, 16) and a_in.shape == (2, 36)
