"""The routing-step kernels (one iteration from a given state) against the reference."""

import numpy as np
import pytest

from caproute._backend import CAPABILITIES, numpy_namespace
from caproute._backend.dispatch import _load
from tests._helpers import tolerance

XP = numpy_namespace()


def _impls(op):
    return [pytest.param(name, id=name) for name in CAPABILITIES[op]]


def _votes(rng, batch, n_in, n_out, dim, dtype, shared):
    if shared:  # one vote per child for every parent: a zero-stride view, as the clusterers use
        u = rng.normal(size=(batch, n_in, 1, dim)).astype(dtype)
        return np.broadcast_to(u, (batch, n_in, n_out, dim))
    return rng.normal(size=(batch, n_in, n_out, dim)).astype(dtype)


@pytest.mark.parametrize("impl", _impls("dynamic_routing_step"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("leaky, with_bias", [(False, False), (True, True)])
def test_dynamic_routing_step(impl, dtype, shared, leaky, with_bias):
    rng = np.random.default_rng(3)
    batch, n_in, n_out, dim = 2, 601, 5, 7  # 601 children: three chunks, the last partial
    u_hat = _votes(rng, batch, n_in, n_out, dim, dtype, shared)
    logits = rng.normal(size=(batch, n_in, n_out)).astype(dtype)
    v = (0.3 * rng.normal(size=(batch, n_out, dim))).astype(dtype)
    bias = (0.1 * rng.normal(size=(n_out, dim))).astype(dtype) if with_bias else None
    ref = _load(CAPABILITIES["dynamic_routing_step"]["reference"])
    func = _load(CAPABILITIES["dynamic_routing_step"][impl])
    expected = ref(
        u_hat.astype(np.float64),
        logits.astype(np.float64),
        v.astype(np.float64),
        bias=None if bias is None else bias.astype(np.float64),
        leaky=leaky,
        eps=1e-8,
        xp=XP,
    )
    got = func(u_hat, logits, v, bias=bias, leaky=leaky, eps=1e-8, xp=XP)
    for name, g, e in zip(("v", "c", "logits"), got, expected, strict=True):
        assert g.dtype == dtype, name
        np.testing.assert_allclose(g, e, **tolerance(dtype, "kernel"), err_msg=name)


@pytest.mark.parametrize("impl", _impls("em_routing_step"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shared", [True, False])
def test_em_routing_step(impl, dtype, shared):
    rng = np.random.default_rng(4)
    batch, n_in, n_out, dim = 2, 515, 4, 3
    votes = _votes(rng, batch, n_in, n_out, dim, dtype, shared)
    a_in = rng.uniform(size=(batch, n_in)).astype(dtype)
    mu = rng.normal(size=(batch, n_out, dim)).astype(dtype)
    var = rng.uniform(0.5, 2.0, size=(batch, n_out, dim)).astype(dtype)
    logit = rng.normal(size=(batch, n_out)).astype(dtype)
    beta_u = (0.1 * rng.normal(size=(n_out, dim))).astype(dtype)
    beta_a = (0.1 * rng.normal(size=(n_out,))).astype(dtype)
    opts = dict(lam=0.01, min_var=5e-4, eps=1e-8, xp=XP)
    ref = _load(CAPABILITIES["em_routing_step"]["reference"])
    func = _load(CAPABILITIES["em_routing_step"][impl])
    f64 = [np.asarray(a, dtype=np.float64) for a in (votes, a_in, mu, var, logit, beta_u, beta_a)]
    expected = ref(*f64, **opts)
    got = func(votes, a_in, mu, var, logit, beta_u, beta_a, **opts)
    for name, g, e in zip(("mu", "var", "logit", "R", "log_norm"), got, expected, strict=True):
        assert g.dtype == dtype, name
        np.testing.assert_allclose(
            g, e, **tolerance(dtype, "kernel", scale=float(np.max(np.abs(e)))), err_msg=name
        )


@pytest.mark.parametrize("impl", _impls("em_routing_e_step"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shared", [True, False])
def test_em_routing_e_step(impl, dtype, shared):
    rng = np.random.default_rng(5)
    batch, n_in, n_out, dim = 2, 515, 4, 3
    votes = _votes(rng, batch, n_in, n_out, dim, dtype, shared)
    mu = rng.normal(size=(batch, n_out, dim)).astype(dtype)
    var = rng.uniform(0.5, 2.0, size=(batch, n_out, dim)).astype(dtype)
    logit = rng.normal(size=(batch, n_out)).astype(dtype)
    ref = _load(CAPABILITIES["em_routing_e_step"]["reference"])
    func = _load(CAPABILITIES["em_routing_e_step"][impl])
    f64 = [np.asarray(a, dtype=np.float64) for a in (votes, mu, var, logit)]
    expected = ref(*f64, xp=XP)
    got = func(votes, mu, var, logit, xp=XP)
    for name, g, e in zip(("R", "log_norm"), got, expected, strict=True):
        assert g.dtype == dtype, name
        scale = float(np.max(np.abs(e)))
        np.testing.assert_allclose(g, e, **tolerance(dtype, "kernel", scale=scale), err_msg=name)
