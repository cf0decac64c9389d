"""The routing functions check their large inputs' finiteness after the rest of the validation
(the Numba kernels prove it in their first pass): the errors must be exactly those of the eager
check, in the same order, for one bad value anywhere, on every backend."""

import numpy as np
import pytest

import caproute as cr
from caproute.kernels.numba import dynamic_routing as dr_kernels
from caproute.kernels.numba import em_routing as em_kernels

BACKENDS = ["numba", "numpy", "auto"]
DTYPES = [np.float32, np.float64]


def _poke(x, value, seed):
    """x with one element (drawn by ``seed``) set to ``value``."""
    x = x.copy()
    flat = x.reshape(-1)
    flat[np.random.default_rng(seed).integers(flat.size)] = value
    return x


def _finite_msg(name, n_nan, n_inf):
    return rf"`{name}` must contain only finite values; got {n_nan} NaN and {n_inf} inf\."


def _votes(dtype, shape=(3, 37, 5, 4)):
    return np.random.default_rng(1).normal(size=shape).astype(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("seed", range(3))
def test_dynamic_one_bad_vote(backend, dtype, value, seed):
    u_hat = _poke(_votes(dtype), value, seed)
    nan, inf = (1, 0) if np.isnan(value) else (0, 1)
    for kwargs in ({}, {"leaky": True}, {"n_iter": 1}, {"bias": np.ones((5, 4), dtype)}):
        with pytest.raises(ValueError, match=_finite_msg("u_hat", nan, inf)):
            cr.dynamic_routing(u_hat, backend=backend, **kwargs)
    # initial logits that make some couplings exactly 0 (0 * inf is NaN, not 0)
    b0 = np.zeros(u_hat.shape[:3], dtype)
    b0[..., 0] = -1e4
    with pytest.raises(ValueError, match=_finite_msg("u_hat", nan, inf)):
        cr.dynamic_routing(u_hat, initial_logits=b0, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("in_dim", [8, 3])  # the unrolled vote loop and the generic one
def test_dense_one_bad_value(backend, dtype, value, in_dim):
    rng = np.random.default_rng(2)
    u = rng.normal(size=(5, 19, in_dim)).astype(dtype)
    W = rng.normal(size=(19, 4, 6, in_dim)).astype(dtype)
    nan, inf = (1, 0) if np.isnan(value) else (0, 1)
    W_zero_row = W.copy()
    for seed in range(3):
        bad_u = _poke(u, value, seed)
        with pytest.raises(ValueError, match=_finite_msg("u", nan, inf)):
            cr.dense_dynamic_routing(bad_u, W, backend=backend)
        # the bad child's weights all zero: 0 * inf and 0 * NaN still reach the sums
        i = int(np.argwhere(~np.isfinite(bad_u))[0][1])
        W_zero_row[:] = W
        W_zero_row[i] = 0.0
        with pytest.raises(ValueError, match=_finite_msg("u", nan, inf)):
            cr.dense_dynamic_routing(bad_u, W_zero_row, backend=backend)
        with pytest.raises(ValueError, match=_finite_msg("W", nan, inf)):
            cr.dense_dynamic_routing(u, _poke(W, value, seed), backend=backend)
    # both bad: u is named, as the eager checks did (u first)
    with pytest.raises(ValueError, match=_finite_msg("u", nan, inf)):
        cr.dense_dynamic_routing(_poke(u, value, 0), _poke(W, value, 1), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_em_one_bad_vote(backend, dtype, value):
    votes = _votes(dtype, (4, 23, 3, 16))
    a_in = np.random.default_rng(3).uniform(size=(4, 23)).astype(dtype)
    nan, inf = (1, 0) if np.isnan(value) else (0, 1)
    variants = (
        {},
        {"mass_floor": "add", "renormalize_assignments": True},
        {"e_step_norm": "ratio_child", "pose_momentum": 0.5},
        {"n_iter": 1},
    )
    for seed in range(3):
        bad = _poke(votes, value, seed)
        n = int(np.argwhere(~np.isfinite(bad))[0][0])
        zero_a = a_in.copy()
        zero_a[n] = 0.0  # zero weights: 0 * inf and 0 * NaN still reach the sums
        for kwargs in variants:
            for a in (a_in, zero_a):
                with pytest.raises(ValueError, match=_finite_msg("votes", nan, inf)):
                    cr.em_routing(bad, a, 0.0, 0.0, backend=backend, **kwargs)


# a bad vote together with a bad option: the vote's error comes first, as it always did
@pytest.mark.parametrize("backend", BACKENDS)
def test_dynamic_order(backend):
    u_hat = _poke(_votes(np.float32), np.nan, 0)
    msg = _finite_msg("u_hat", 1, 0)
    for kwargs in (
        {"n_iter": 0},
        {"eps": -1.0},
        {"leaky": "yes"},
        {"bias": np.zeros(4)},
        {"initial_logits": np.zeros((2, 2))},
    ):
        with pytest.raises(ValueError, match=msg):
            cr.dynamic_routing(u_hat, backend=backend, **kwargs)
    with pytest.raises(ValueError, match=msg):
        cr.dynamic_routing(u_hat, backend="bogus")


@pytest.mark.parametrize("backend", BACKENDS)
def test_dense_order(backend):
    rng = np.random.default_rng(4)
    u = rng.normal(size=(2, 7, 4))
    W = rng.normal(size=(7, 3, 5, 4))
    bad_u, bad_W = _poke(u, np.nan, 0), _poke(W, np.inf, 0)
    with pytest.raises(ValueError, match=_finite_msg("u", 1, 0)):
        cr.dense_dynamic_routing(bad_u, W[:, :, :, :2], backend=backend)  # W's shape is wrong too
    # W's dimensions are checked before its finiteness, its shape (against u) after
    with pytest.raises(ValueError, match=_finite_msg("W", 0, 1)):
        cr.dense_dynamic_routing(u, bad_W[:, :, :, :2], backend=backend)
    with pytest.raises(ValueError, match=r"`W` must be 4-D"):
        cr.dense_dynamic_routing(u, bad_W[0], backend=backend)
    # after W's checks, its finiteness comes before the options'
    with pytest.raises(ValueError, match=_finite_msg("W", 0, 1)):
        cr.dense_dynamic_routing(u, bad_W, 0, backend=backend)
    with pytest.raises(ValueError, match=_finite_msg("W", 0, 1)):
        cr.dense_dynamic_routing(u, bad_W, bias=np.zeros(3), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_em_order(backend):
    votes = _poke(_votes(np.float64, (2, 9, 3, 4)), np.inf, 0)
    a_in = np.ones((2, 9))
    msg = _finite_msg("votes", 0, 1)
    for args, kwargs in (
        ((np.ones((2, 8)), 0.0, 0.0), {}),
        ((np.full((2, 9), 2.0), 0.0, 0.0), {}),
        ((a_in, np.zeros(7), 0.0), {}),
        ((a_in, 0.0, 0.0), {"n_iter": 0}),
        ((a_in, 0.0, 0.0), {"e_step_norm": "nope"}),
        ((a_in, 0.0, 0.0), {"return_assignments": 1}),
        ((a_in, 0.0, 0.0), {"initial_assignments": np.ones((2, 9, 4))}),
    ):
        with pytest.raises(ValueError, match=msg):
            cr.em_routing(votes, *args, backend=backend, **kwargs)


def test_kernels_call_back_only_for_nonfinite_votes():
    calls = []
    votes = _votes(np.float32)
    dr_kernels.dynamic_routing(
        votes, n_iter=2, bias=None, leaky=False, eps=1e-8, on_nonfinite=lambda: calls.append(1)
    )
    assert calls == []
    dr_kernels.dynamic_routing(
        _poke(votes, np.nan, 5),
        n_iter=2,
        bias=None,
        leaky=False,
        eps=1e-8,
        on_nonfinite=lambda: calls.append(1),
    )
    assert calls == [1]
    u = np.ones((2, 4, 8), np.float32)
    W = np.ones((4, 3, 2, 8), np.float32)
    dr_kernels.dense_routing(
        u, W, n_iter=2, bias=None, leaky=False, eps=1e-8, on_nonfinite=lambda: calls.append(2)
    )
    assert calls == [1]
    dr_kernels.dense_routing(
        u,
        _poke(W, np.inf, 0),
        n_iter=2,
        bias=None,
        leaky=False,
        eps=1e-8,
        on_nonfinite=lambda: calls.append(2),
    )
    assert calls == [1, 2]
    V = _votes(np.float64, (2, 6, 3, 4))
    kw = dict(inverse_temperature=np.ones(2), min_var=1e-4, eps=1e-8)
    em_kernels.em_routing(V, np.ones((2, 6)), np.zeros((3, 4)), np.zeros(3), **kw)
    em_kernels.em_routing(
        V,
        np.ones((2, 6)),
        np.zeros((3, 4)),
        np.zeros(3),
        on_nonfinite=lambda: calls.append(3),
        **kw,
    )
    assert calls == [1, 2]
    em_kernels.em_routing(
        _poke(V, np.nan, 3),
        np.ones((2, 6)),
        np.zeros((3, 4)),
        np.zeros(3),
        on_nonfinite=lambda: calls.append(3),
        **kw,
    )
    assert calls == [1, 2, 3]


def test_overflow_of_finite_votes_still_named():
    """Finite votes whose first sums overflow take the exact check, which passes them; the
    overflow error follows as before."""
    u = np.full((1, 3, 2, 4), np.float32(1e38))
    with (
        np.errstate(over="ignore", invalid="ignore"),
        pytest.raises(ValueError, match=r"`u_hat` is too large for float32: routing overflowed"),
    ):
        cr.dynamic_routing(u, 2, backend="numba")


def test_kernels_report_nonfinite_outputs_once_with_the_outputs():
    """The kernels check their outputs per sample while in cache (the public functions then
    skip their own scan): on_overflow is called with the outputs only when some are not
    finite."""
    seen = []
    ok = _votes(np.float32)
    huge = np.full((2, 3, 2, 4), np.float32(1e20))
    kw = dict(n_iter=2, bias=None, leaky=False, eps=1e-8)
    with np.errstate(over="ignore", invalid="ignore"):
        for votes in (ok, huge):
            v, c = dr_kernels.dynamic_routing(votes, on_overflow=seen.append, **kw)
        assert len(seen) == 1 and seen[0][0] is v and seen[0][1] is c
        u = np.full((2, 3, 8), np.float32(1e20))
        dr_kernels.dense_routing(
            u, np.ones((3, 2, 4, 8), np.float32), on_overflow=seen.append, **kw
        )
        assert len(seen) == 2 and not np.all(np.isfinite(seen[1][0]))
        em_kw = dict(inverse_temperature=np.ones(2, np.float32), min_var=1e-4, eps=1e-8)
        spread = huge * np.array([1, -1, 1], np.float32)[None, :, None, None]  # (V - mu)^2 = inf
        out = em_kernels.em_routing(
            spread, np.ones((2, 3), np.float32), np.zeros((2, 4)), np.zeros(2), **em_kw
        )
        em_kernels.em_routing(
            spread,
            np.ones((2, 3), np.float32),
            np.zeros((2, 4)),
            np.zeros(2),
            on_overflow=seen.append,
            **em_kw,
        )
        assert len(seen) == 3 and len(seen[2]) == 3
        assert not all(np.all(np.isfinite(o)) for o in out)
