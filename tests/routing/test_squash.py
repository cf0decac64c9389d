import numpy as np
import pytest

import caproute as cr
from tests._helpers import as_xp, assert_placed, device_of, rtol_for


def test_values_by_hand(xp, dtype):
    s = as_xp(np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -1.0]], dtype=dtype), xp)
    v = cr.squash(s, eps=1e-12)
    assert_placed(v, xp=xp, device=device_of(xp), dtype=dtype)
    v = cr.to_numpy(v)
    # |s| = 5: length 25/26 along (0.6, 0.8); |s| = 1: length 1/2
    np.testing.assert_allclose(
        v, [[0.6 * 25 / 26, 0.8 * 25 / 26], [0, 0], [0, -0.5]], rtol=rtol_for(dtype)
    )
    assert v.dtype == np.dtype(dtype)


def test_axis_and_length_below_one(xp, dtype):
    rng = np.random.default_rng(0)
    s = (rng.normal(size=(3, 7, 5)) * 50).astype(dtype)
    v0 = cr.to_numpy(cr.squash(as_xp(s, xp), axis=1))
    v_last = cr.to_numpy(cr.squash(as_xp(np.moveaxis(s, 1, -1), xp)))
    np.testing.assert_allclose(np.moveaxis(v0, 1, -1), v_last, rtol=rtol_for(dtype))
    assert np.all(np.linalg.norm(v0, axis=1) < 1.0)


@pytest.mark.parametrize(
    "args, kwargs, exc, match",
    [
        (
            (np.zeros(3, dtype=np.int8),),
            {},
            TypeError,
            r"`s` must have a real floating dtype \(float32 or float64\); got int8\.",
        ),
        (
            (np.array(1.0),),
            {},
            ValueError,
            r"`s` must have at least 1 dimension \(the vector axis\); got ndim=0\.",
        ),
        (
            (np.zeros((2, 3)),),
            {"axis": 2},
            ValueError,
            r"`axis` must be in \[-2, 1\] for a 2-D input; got 2\.",
        ),
        (
            (np.zeros((2, 3)),),
            {"axis": 0.5},
            TypeError,
            r"`axis` must be an integer; got 0\.5 \(float\)\.",
        ),
        (
            (np.array([1.0, np.nan]),),
            {},
            ValueError,
            r"`s` must contain only finite values; got 1 NaN and 0 inf\.",
        ),
        (
            (np.zeros(3),),
            {"eps": float("inf")},
            ValueError,
            r"`eps` must be a finite real number > 0; got inf\.",
        ),
    ],
)
def test_bad_input(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        cr.squash(*args, **kwargs)
