import numpy as np
import pytest

import caproute as cr
from tests._helpers import as_xp, assert_placed, atol_for, device_of, rtol_for
from tests.routing.oracle import dynamic_routing_loops


@pytest.mark.parametrize("leaky", [False, True])
def test_equals_routing_the_written_out_votes(xp, dtype, leaky):
    rng = np.random.default_rng(0)
    u = rng.normal(size=(3, 7, 4)).astype(dtype)
    W = rng.normal(size=(7, 5, 6, 4)).astype(dtype)
    bias = rng.normal(size=(5, 6)).astype(dtype)
    votes = np.einsum("ijdk,bik->bijd", W.astype(np.float64), u.astype(np.float64))
    v_ref, c_ref = dynamic_routing_loops(votes, 3, bias=bias, leaky=leaky)
    v, c = cr.dense_dynamic_routing(
        as_xp(u, xp), as_xp(W, xp), 3, bias=as_xp(bias, xp), leaky=leaky, return_coupling=True
    )
    assert type(v) is type(as_xp(u, xp)) and v.dtype == as_xp(u, xp).dtype
    for out in (v, c):
        assert_placed(out, xp=xp, device=device_of(xp), dtype=dtype)
    np.testing.assert_allclose(
        cr.to_numpy(v), v_ref, rtol=rtol_for(dtype) * 10, atol=atol_for(dtype) * 10
    )
    np.testing.assert_allclose(
        cr.to_numpy(c), c_ref, rtol=rtol_for(dtype) * 10, atol=atol_for(dtype) * 10
    )


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_backends_agree(backend):
    rng = np.random.default_rng(1)
    u, W = rng.normal(size=(2, 9, 8)), rng.normal(size=(9, 10, 16, 8))
    b0 = rng.normal(size=(9, 10))
    got = cr.dense_dynamic_routing(u, W, 2, initial_logits=b0, backend=backend)
    votes = np.einsum("ijdk,bik->bijd", W, u)
    np.testing.assert_allclose(
        got, cr.dynamic_routing(votes, 2, initial_logits=b0, backend="numpy"), rtol=1e-10
    )


U = np.zeros((2, 3, 4))
W = np.zeros((3, 5, 6, 4))


@pytest.mark.parametrize(
    "args, kwargs, exc, match",
    [
        (
            (np.zeros((2, 3)), W),
            {},
            ValueError,
            r"`u` must be 3-D \(batch, n_in, in_dim\); got ndim=2 with shape \(2, 3\)\.",
        ),
        (
            (U, np.zeros((3, 5, 6))),
            {},
            ValueError,
            r"`W` must be 4-D \(n_in, n_out, out_dim, in_dim\); got ndim=3 with shape \(3, 5, 6\)\.",
        ),
        (
            (U, np.zeros((3, 5, 6, 2))),
            {},
            ValueError,
            r"`W` must have shape \(n_in, n_out, out_dim, in_dim\) with n_in, in_dim of `u` = \(3, 5, 6, 4\); "
            r"got shape \(3, 5, 6, 2\)\.",
        ),
        (
            (U.astype(np.int16), W),
            {},
            TypeError,
            r"`u` must have a real floating dtype \(float32 or float64\); got int16\.",
        ),
        (
            (U, np.full_like(W, np.nan)),
            {},
            ValueError,
            r"`W` must contain only finite values; got 360 NaN and 0 inf\.",
        ),
        (
            (U, W),
            {"bias": np.zeros((6, 5))},
            ValueError,
            r"`bias` must have shape \(n_out, out_dim\) of `W` = \(5, 6\); got shape \(6, 5\)\.",
        ),
        ((U, W, 0), {}, ValueError, r"`n_iter` must be an integer >= 1; got 0\."),
        (
            (U, W),
            {"initial_logits": np.zeros((3, 6))},
            ValueError,
            r"`initial_logits` must have shape \(batch, n_in, n_out\) or \(n_in, n_out\) of `u` = \(2, 3, 5\)",
        ),
    ],
)
def test_bad_input(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        cr.dense_dynamic_routing(*args, **kwargs)
