import math

import numpy as np
import pytest

import caproute as cr
from tests._helpers import as_xp, assert_placed, atol_for, device_of, rtol_for
from tests.routing.oracle import dynamic_routing_loops


def _votes(shape, dtype, seed=0, scale=1.0):
    return (scale * np.random.default_rng(seed).normal(size=shape)).astype(dtype)


@pytest.mark.parametrize("n_iter", [1, 2, 3, 5])
@pytest.mark.parametrize("leaky", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_matches_seed_equations(xp, dtype, n_iter, leaky, with_bias):
    u = _votes((2, 7, 3, 5), dtype, seed=n_iter)
    bias = _votes((3, 5), dtype, seed=99, scale=0.3) if with_bias else None
    v, c = cr.dynamic_routing(
        as_xp(u, xp),
        n_iter,
        bias=None if bias is None else as_xp(bias, xp),
        leaky=leaky,
        return_coupling=True,
    )
    v_ref, c_ref = dynamic_routing_loops(u, n_iter, bias=bias, leaky=leaky)
    np.testing.assert_allclose(cr.to_numpy(v), v_ref, rtol=rtol_for(dtype), atol=atol_for(dtype))
    np.testing.assert_allclose(cr.to_numpy(c), c_ref, rtol=rtol_for(dtype), atol=atol_for(dtype))


def test_keeps_dtype_and_namespace(xp, dtype):
    u = as_xp(_votes((1, 4, 2, 3), dtype), xp)
    v, c = cr.dynamic_routing(u, 1, return_coupling=True)
    assert type(v) is type(u) and type(c) is type(u)
    assert v.dtype == u.dtype and c.dtype == u.dtype
    for out in (v, c):
        assert_placed(out, xp=xp, device=device_of(xp), dtype=dtype)
    assert v.shape == (1, 2, 3) and c.shape == (1, 4, 2)


def test_single_child_single_parent_by_hand(xp, dtype):
    # s = 2: |s|^2 = 4, v = 4/5 * 2 / sqrt(4 + eps) = 0.8 (eps = 1e-8 is below float32 resolution)
    u = as_xp(np.full((1, 1, 1, 1), 2.0, dtype=dtype), xp)
    v = cr.dynamic_routing(u, n_iter=3)
    np.testing.assert_allclose(
        cr.to_numpy(v), [[[0.8 * 2 / math.sqrt(4 + 1e-8)]]], rtol=rtol_for(dtype)
    )


def test_two_parents_by_hand(xp):
    # one child predicting (3, 4) for parent 0 and (0, 0) for parent 1.
    u = np.zeros((1, 1, 2, 2))
    u[0, 0, 0] = [3.0, 4.0]
    v, c = cr.dynamic_routing(as_xp(u, xp), n_iter=2, return_coupling=True, eps=1e-12)
    # iteration 1: c = (1/2, 1/2); s0 = (1.5, 2), |s0| = 2.5; v0 = 6.25/7.25 * (0.6, 0.8)
    len1 = 6.25 / 7.25
    b0 = 5.0 * len1  # u . v0 = |u| |v0| since they are parallel
    c0 = 1.0 / (1.0 + math.exp(-b0))  # softmax of (b0, 0)
    n = 5.0 * c0
    len2 = n * n / (1.0 + n * n)
    np.testing.assert_allclose(cr.to_numpy(c)[0, 0], [c0, 1 - c0], rtol=1e-12)
    np.testing.assert_allclose(cr.to_numpy(v)[0, 0], [0.6 * len2, 0.8 * len2], rtol=1e-10)
    np.testing.assert_allclose(cr.to_numpy(v)[0, 1], [0.0, 0.0], atol=1e-12)


def test_couplings_sum_to_one_over_parents(xp, dtype):
    u = as_xp(_votes((3, 9, 4, 6), dtype, scale=2.0), xp)
    _, c = cr.dynamic_routing(u, 3, return_coupling=True)
    c = cr.to_numpy(c)
    np.testing.assert_allclose(c.sum(axis=-1), 1.0, rtol=rtol_for(dtype) * 10)
    assert np.all(c > 0)


def test_leaky_couplings_sum_below_one(xp):
    u = as_xp(_votes((2, 5, 3, 4), "float64"), xp)
    _, c = cr.dynamic_routing(u, 3, leaky=True, return_coupling=True)
    sums = cr.to_numpy(c).sum(axis=-1)
    assert np.all(sums < 1.0) and np.all(sums > 0.0)


def test_output_length_below_one(xp, dtype):
    u = as_xp(_votes((2, 20, 5, 8), dtype, scale=10.0), xp)
    v = cr.to_numpy(cr.dynamic_routing(u, 3))
    norms = np.linalg.norm(v.astype(np.float64), axis=-1)
    assert np.all(norms < 1.0)
    assert np.all(np.isfinite(v))


def test_zero_votes_give_zero_output(xp, dtype):
    u = as_xp(np.zeros((2, 3, 4, 5), dtype=dtype), xp)
    v, c = cr.dynamic_routing(u, 3, return_coupling=True)
    assert np.all(cr.to_numpy(v) == 0)
    np.testing.assert_allclose(cr.to_numpy(c), 0.25, rtol=rtol_for(dtype))


def test_invariant_to_permuting_children(xp, dtype):
    u = _votes((2, 8, 3, 4), dtype)
    perm = np.random.default_rng(1).permutation(8)
    v1, c1 = cr.dynamic_routing(as_xp(u, xp), 3, return_coupling=True)
    v2, c2 = cr.dynamic_routing(as_xp(u[:, perm], xp), 3, return_coupling=True)
    np.testing.assert_allclose(
        cr.to_numpy(v2), cr.to_numpy(v1), rtol=rtol_for(dtype) * 10, atol=atol_for(dtype)
    )
    np.testing.assert_allclose(cr.to_numpy(c2), cr.to_numpy(c1)[:, perm], rtol=rtol_for(dtype) * 10)


def test_agreement_raises_coupling_to_agreeing_parent(xp):
    rng = np.random.default_rng(3)
    n_in = 12
    u = rng.normal(scale=0.3, size=(1, n_in, 3, 4))
    u[0, :, 1] = np.array([1.0, -1.0, 0.5, 0.0]) + 0.05 * rng.normal(
        size=(n_in, 4)
    )  # agree on parent 1
    couplings = []
    for n_iter in (1, 2, 3):
        _, c = cr.dynamic_routing(as_xp(u, xp), n_iter, return_coupling=True)
        couplings.append(cr.to_numpy(c)[0, :, 1])
    np.testing.assert_allclose(couplings[0], 1 / 3)
    assert np.all(couplings[1] > couplings[0])
    assert np.all(couplings[2] > couplings[1])
    assert np.all(couplings[2] > 0.5)


def test_batch_one_and_one_iteration(xp, dtype):
    u = _votes((1, 3, 2, 4), dtype)
    v, c = cr.dynamic_routing(as_xp(u, xp), n_iter=1, return_coupling=True)
    np.testing.assert_allclose(cr.to_numpy(c), 0.5)
    s = u.astype(np.float64).sum(axis=1) / 2
    n2 = (s**2).sum(-1, keepdims=True)
    np.testing.assert_allclose(
        cr.to_numpy(v), n2 / (1 + n2) * s / np.sqrt(n2 + 1e-8), rtol=rtol_for(dtype)
    )


def test_accepts_array_likes_and_float32_bias_cast():
    u = _votes((1, 2, 2, 3), "float32").tolist()
    v = cr.dynamic_routing(u, 2, bias=np.zeros((2, 3)))
    assert isinstance(v, np.ndarray) and v.dtype == np.float64
    v32 = cr.dynamic_routing(np.asarray(u, dtype=np.float32), 2, bias=np.zeros((2, 3)))
    assert v32.dtype == np.float32


GOOD = np.zeros((2, 3, 4, 5))


@pytest.mark.parametrize(
    "args, kwargs, exc, match",
    [
        (
            (np.zeros((2, 3, 4)),),
            {},
            ValueError,
            r"`u_hat` must be 4-D \(batch, n_in, n_out, dim\); got ndim=3 with shape \(2, 3, 4\)\.",
        ),
        (
            (np.zeros((2, 3, 4, 5), dtype=np.int64),),
            {},
            TypeError,
            r"`u_hat` must have a real floating dtype \(float32 or float64\); got int64\.",
        ),
        (
            (np.zeros((2, 3, 4, 5), dtype=np.complex128),),
            {},
            TypeError,
            r"`u_hat` must have a real floating dtype \(float32 or float64\); got complex128\.",
        ),
        (
            (np.zeros((2, 0, 4, 5)),),
            {},
            ValueError,
            r"`u_hat` must have at least one element along every axis; got shape \(2, 0, 4, 5\)\.",
        ),
        (
            (np.full((2, 3, 4, 5), np.nan),),
            {},
            ValueError,
            r"`u_hat` must contain only finite values; got 120 NaN and 0 inf\.",
        ),
        (
            (np.full((2, 3, 4, 5), np.inf),),
            {},
            ValueError,
            r"`u_hat` must contain only finite values; got 0 NaN and 120 inf\.",
        ),
        (
            ("votes",),
            {},
            TypeError,
            r"`u_hat` must be an array of real floating numbers; got str\.",
        ),
        ((GOOD, 0), {}, ValueError, r"`n_iter` must be an integer >= 1; got 0\."),
        ((GOOD, 2.5), {}, TypeError, r"`n_iter` must be an integer >= 1; got 2\.5 \(float\)\."),
        ((GOOD, True), {}, TypeError, r"`n_iter` must be an integer >= 1; got True \(bool\)\."),
        (
            (GOOD,),
            {"bias": np.zeros((4,))},
            ValueError,
            r"`bias` must be 2-D \(n_out, dim\); got ndim=1 with shape \(4,\)\.",
        ),
        (
            (GOOD,),
            {"bias": np.zeros((5, 4))},
            ValueError,
            r"`bias` must have shape \(n_out, dim\) of `u_hat` = \(4, 5\); got shape \(5, 4\)\.",
        ),
        (
            (GOOD,),
            {"bias": np.full((4, 5), np.nan)},
            ValueError,
            r"`bias` must contain only finite values; got 20 NaN and 0 inf\.",
        ),
        ((GOOD,), {"eps": 0.0}, ValueError, r"`eps` must be a finite real number > 0; got 0\.0\."),
        (
            (GOOD,),
            {"eps": -1.0},
            ValueError,
            r"`eps` must be a finite real number > 0; got -1\.0\.",
        ),
        (
            (GOOD,),
            {"leaky": "yes"},
            TypeError,
            r"`leaky` must be True or False; got 'yes' \(str\)\.",
        ),
        (
            (GOOD,),
            {"return_coupling": 1},
            TypeError,
            r"`return_coupling` must be True or False; got 1 \(int\)\.",
        ),
        (
            (GOOD,),
            {"backend": "torch"},
            ValueError,
            r"`backend` must be one of 'auto', 'numpy', 'numba', 'cupy'; got 'torch'\.",
        ),
    ],
)
def test_bad_input(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        cr.dynamic_routing(*args, **kwargs)


def test_bad_input_array_api_strict():
    xs = pytest.importorskip("array_api_strict")
    with pytest.raises(
        TypeError,
        match=r"`u_hat` must have a real floating dtype \(float32 or float64\); got int32\.",
    ):
        cr.dynamic_routing(xs.zeros((1, 2, 2, 2), dtype=xs.int32))
    with pytest.raises(TypeError, match=r"`bias` must be an array of the same library as `u_hat`"):
        cr.dynamic_routing(xs.zeros((1, 2, 2, 2)), bias=np.zeros((2, 2)))


def test_initial_logits_continue_routing_where_it_stopped(xp, dtype):
    u = as_xp(_votes((2, 6, 3, 4), dtype, seed=7), xp)
    v5, c5 = cr.dynamic_routing(u, 5, return_coupling=True)
    _, c3 = cr.dynamic_routing(u, 3, return_coupling=True)
    # the couplings' log differs from the logits by a per-child constant, which softmax ignores
    v, c = cr.dynamic_routing(u, 3, initial_logits=xp.log(c3), return_coupling=True)
    tol = dict(rtol=rtol_for(dtype) * 10, atol=atol_for(dtype) * 10)
    np.testing.assert_allclose(cr.to_numpy(v), cr.to_numpy(v5), **tol)
    np.testing.assert_allclose(cr.to_numpy(c), cr.to_numpy(c5), **tol)


def test_initial_logits_match_oracle_and_broadcast(xp):
    u = _votes((2, 5, 3, 4), "float64", seed=8)
    b0 = np.random.default_rng(9).normal(size=(5, 3))
    v, c = cr.dynamic_routing(as_xp(u, xp), 2, initial_logits=as_xp(b0, xp), return_coupling=True)
    v_full, _ = cr.dynamic_routing(
        as_xp(u, xp), 2, initial_logits=as_xp(np.stack([b0, b0]), xp), return_coupling=True
    )
    np.testing.assert_allclose(cr.to_numpy(v), cr.to_numpy(v_full), rtol=1e-14)
    v_ref, c_ref = dynamic_routing_loops(u, 2, initial_logits=np.stack([b0, b0]))
    np.testing.assert_allclose(cr.to_numpy(v), v_ref, rtol=1e-11)
    np.testing.assert_allclose(cr.to_numpy(c), c_ref, rtol=1e-11)


@pytest.mark.parametrize(
    "b0, exc, match",
    [
        (
            np.zeros((2, 3)),
            ValueError,
            r"`initial_logits` must have shape \(batch, n_in, n_out\) or \(n_in, n_out\) of `u_hat` = "
            r"\(2, 3, 4\); got shape \(2, 3\)\.",
        ),
        (np.full((3, 4), np.inf), ValueError, r"`initial_logits` must contain only finite values"),
        (
            np.zeros((3, 4), dtype=bool),
            TypeError,
            r"`initial_logits` must have a real floating dtype \(float32 or float64\); got bool\.",
        ),
    ],
)
def test_bad_initial_logits(b0, exc, match):
    with pytest.raises(exc, match=match):
        cr.dynamic_routing(GOOD, initial_logits=b0)


def test_finite_values_whose_sum_overflows_are_accepted():
    u = np.full((1, 4, 2, 3), 3e38, dtype=np.float32)
    u[0, ::2] *= -1  # the float32 sum overflows although every value is finite
    with np.errstate(over="ignore", invalid="ignore"):
        cr.dynamic_routing(u, 1, backend="numpy")  # must not raise the NaN/inf input error
