"""Every kernel in the capability table against the pure Array API reference.

The reference is the oracle (itself checked against the seed's equations in tests/routing):
kernels must give the same results within the dtype's tolerance on random inputs of odd sizes,
batch 1, one iteration, and extreme inputs.
"""

import importlib.util

import array_api_compat.numpy as np_xp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caproute._backend import CAPABILITIES, cupy_status, dispatch
from caproute.routing import official_inverse_temperature
from tests._helpers import tolerance

HAVE_NUMBA = importlib.util.find_spec("numba") is not None
CUPY, CUPY_REASON = cupy_status()


def _impl_params(op):
    params = []
    for impl in CAPABILITIES[op]:
        if impl == "reference":
            continue
        marks = []
        if impl == "numba":
            marks.append(pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed"))
        if impl == "cupy":
            marks += [
                pytest.mark.gpu,
                pytest.mark.skipif(CUPY is None, reason=f"no usable CUDA device: {CUPY_REASON}"),
            ]
        params.append(pytest.param(impl, marks=marks, id=impl))
    return params


def _pair(op, impl):
    """(kernel, reference, to_device, to_host) for one operation and implementation."""
    kernel = dispatch._load(CAPABILITIES[op][impl])
    reference = dispatch._load(CAPABILITIES[op]["reference"])
    if impl == "cupy":
        import array_api_compat.cupy as cp_xp
        import cupy

        return kernel, reference, cp_xp, cupy.asarray, cupy.asnumpy
    return kernel, reference, np_xp, (lambda a: a), np.asarray


DTYPES = st.sampled_from([np.float32, np.float64])


def assert_matches_reference(got, ref, ref64, dtype, scale=1.0, ref64_perturbed=None):
    """float64: close to the reference. float32: within 4 times what float32 rounding does to
    the reference -- the float32 reference's own error, and the float64 reference's change when
    the inputs move by float32 rounding (``ref64_perturbed``) -- plus the dtype's tolerance.
    Large votes make routing ill-conditioned, in float32, for every implementation alike."""
    got = np.asarray(got, dtype=np.float64)
    if dtype == np.float64:
        np.testing.assert_allclose(got, ref, **tolerance(dtype, "kernel", scale))
        return
    t = tolerance(dtype, "kernel", scale)
    spread = np.abs(np.asarray(ref, np.float64) - ref64)
    if ref64_perturbed is not None:
        spread = spread + np.abs(np.asarray(ref64_perturbed, np.float64) - ref64)
    bound = 4 * spread + t["atol"] + t["rtol"] * np.abs(ref64)
    excess = np.abs(got - ref64) - bound
    assert np.all(excess <= 0), f"worst excess over the reference's own error: {excess.max():.3g}"


def _f64(*arrays):
    return [None if a is None else np.asarray(a, dtype=np.float64) for a in arrays]


def _perturbed(a, seed=12345):
    """a (float64) moved by about one float32 rounding error, element by element."""
    if a is None:
        return None
    noise = np.random.default_rng(seed).standard_normal(np.shape(a))
    return a * (1.0 + 6e-8 * noise)


@pytest.mark.parametrize("impl", _impl_params("dynamic_routing"))
@settings(max_examples=30, deadline=None)
@given(
    batch=st.integers(1, 4),
    n_in=st.integers(1, 40),
    n_out=st.integers(1, 11),
    dim=st.integers(1, 17),
    n_iter=st.integers(1, 4),
    leaky=st.booleans(),
    with_bias=st.booleans(),
    with_b0=st.booleans(),
    scale=st.sampled_from([1e-3, 1.0, 30.0]),
    dtype=DTYPES,
    seed=st.integers(0, 2**16),
)
def test_dynamic_routing_kernel(
    impl, batch, n_in, n_out, dim, n_iter, leaky, with_bias, with_b0, scale, dtype, seed
):
    kernel, reference, xp, dev, host = _pair("dynamic_routing", impl)
    rng = np.random.default_rng(seed)
    u = (scale * rng.normal(size=(batch, n_in, n_out, dim))).astype(dtype)
    bias = rng.normal(size=(n_out, dim)).astype(dtype) if with_bias else None
    b0 = rng.normal(size=(batch, n_in, n_out)).astype(dtype) if with_b0 else None
    args = dict(n_iter=n_iter, leaky=leaky, eps=1e-8)
    v_ref, c_ref = reference(u, bias=bias, initial_logits=b0, xp=np_xp, **args)
    u64, bias64, b064 = _f64(u, bias, b0)
    v64, c64 = reference(u64, bias=bias64, initial_logits=b064, xp=np_xp, **args)
    vp, cp = reference(_perturbed(u64), bias=bias64, initial_logits=b064, xp=np_xp, **args)
    v, c = kernel(
        dev(u),
        bias=None if bias is None else dev(bias),
        initial_logits=None if b0 is None else dev(b0),
        xp=xp,
        **args,
    )
    assert v.dtype == u.dtype and c.dtype == u.dtype
    assert_matches_reference(host(v), v_ref, v64, dtype, ref64_perturbed=vp)
    assert_matches_reference(host(c), c_ref, c64, dtype, ref64_perturbed=cp)


@pytest.mark.parametrize("impl", _impl_params("dense_dynamic_routing"))
@settings(max_examples=20, deadline=None)
@given(
    batch=st.integers(1, 3),
    n_in=st.integers(1, 30),
    n_out=st.integers(1, 9),
    in_dim=st.integers(1, 9),
    out_dim=st.integers(1, 17),
    n_iter=st.integers(1, 4),
    leaky=st.booleans(),
    with_bias=st.booleans(),
    dtype=DTYPES,
    seed=st.integers(0, 2**16),
)
def test_dense_dynamic_routing_kernel(
    impl, batch, n_in, n_out, in_dim, out_dim, n_iter, leaky, with_bias, dtype, seed
):
    kernel, reference, xp, dev, host = _pair("dense_dynamic_routing", impl)
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(batch, n_in, in_dim)).astype(dtype)
    W = rng.normal(size=(n_in, n_out, out_dim, in_dim)).astype(dtype)
    bias = rng.normal(size=(n_out, out_dim)).astype(dtype) if with_bias else None
    args = dict(n_iter=n_iter, leaky=leaky, eps=1e-8, initial_logits=None)
    v_ref, c_ref = reference(u, W, bias=bias, xp=np_xp, **args)
    v64, c64 = reference(*_f64(u, W), bias=_f64(bias)[0], xp=np_xp, **args)
    v, c = kernel(dev(u), dev(W), bias=None if bias is None else dev(bias), xp=xp, **args)
    assert_matches_reference(host(v), v_ref, v64, dtype)
    assert_matches_reference(host(c), c_ref, c64, dtype)


@pytest.mark.parametrize("impl", _impl_params("em_routing"))
@settings(max_examples=30, deadline=None)
@given(
    batch=st.integers(1, 4),
    n_in=st.integers(1, 40),
    n_out=st.integers(1, 9),
    dim=st.integers(1, 17),
    n_iter=st.integers(1, 4),
    schedule=st.sampled_from(["official", "one"]),
    beta=st.sampled_from(["scalar", "per_element"]),
    with_r0=st.booleans(),
    a_kind=st.sampled_from(["uniform", "zeros_and_ones", "all_zero", "all_one"]),
    min_var=st.sampled_from([0.0, 5e-4]),
    scale=st.sampled_from([1e-3, 1.0, 30.0]),
    dtype=DTYPES,
    seed=st.integers(0, 2**16),
)
def test_em_routing_kernel(
    impl,
    batch,
    n_in,
    n_out,
    dim,
    n_iter,
    schedule,
    beta,
    with_r0,
    a_kind,
    min_var,
    scale,
    dtype,
    seed,
):
    kernel, reference, xp, dev, host = _pair("em_routing", impl)
    rng = np.random.default_rng(seed)
    V = (scale * rng.normal(size=(batch, n_in, n_out, dim))).astype(dtype)
    a = {
        "uniform": rng.uniform(size=(batch, n_in)),
        "zeros_and_ones": rng.integers(0, 2, size=(batch, n_in)).astype(float),
        "all_zero": np.zeros((batch, n_in)),
        "all_one": np.ones((batch, n_in)),
    }[a_kind].astype(dtype)
    beta_u = (
        rng.normal(size=(n_out, dim)) if beta == "per_element" else np.full((n_out, dim), 0.2)
    ).astype(dtype)
    beta_a = rng.normal(size=n_out).astype(dtype)
    lambdas = official_inverse_temperature(n_iter) if schedule == "official" else (1.0,) * n_iter
    R0 = rng.dirichlet(np.ones(n_out), size=(batch, n_in)).astype(dtype) if with_r0 else None
    args = dict(inverse_temperature=lambdas, min_var=min_var, eps=1e-8)
    p_ref, a_ref, R_ref = reference(V, a, beta_u, beta_a, initial_assignments=R0, xp=np_xp, **args)
    V64, a64, bu64, ba64, R064 = _f64(V, a, beta_u, beta_a, R0)
    p64, act64, R64 = reference(V64, a64, bu64, ba64, initial_assignments=R064, xp=np_xp, **args)
    pp, actp, Rp = reference(
        _perturbed(V64), a64, bu64, ba64, initial_assignments=R064, xp=np_xp, **args
    )
    p, act, R = kernel(
        dev(V),
        dev(a),
        dev(beta_u),
        dev(beta_a),
        initial_assignments=None if R0 is None else dev(R0),
        xp=xp,
        **args,
    )
    assert p.dtype == V.dtype and act.dtype == V.dtype and R.dtype == V.dtype
    assert_matches_reference(host(p), p_ref, p64, dtype, scale, pp)
    assert_matches_reference(host(act), a_ref, act64, dtype, ref64_perturbed=actp)
    assert_matches_reference(host(R), R_ref, R64, dtype, ref64_perturbed=Rp)


@pytest.mark.parametrize("impl", _impl_params("em_routing"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["zero_votes", "identical_votes", "huge_votes"])
def test_em_routing_kernel_extremes(impl, dtype, case):
    kernel, reference, xp, dev, host = _pair("em_routing", impl)
    rng = np.random.default_rng(0)
    V = {
        "zero_votes": np.zeros((2, 9, 4, 16)),
        "identical_votes": np.ones((2, 9, 4, 16)),
        "huge_votes": 1e6 * rng.normal(size=(2, 9, 4, 16)),
    }[case].astype(dtype)
    a = rng.uniform(size=(2, 9)).astype(dtype)
    args = dict(inverse_temperature=(1.0, 1.0, 1.0), min_var=0.0, eps=1e-8)
    bu, ba = np.zeros((4, 16), dtype), np.zeros(4, dtype)
    ref = reference(V, a, bu, ba, xp=np_xp, **args)
    got = kernel(dev(V), dev(a), dev(bu), dev(ba), xp=xp, **args)
    for g, r in zip(got, ref, strict=True):
        assert np.all(np.isfinite(host(g)))
        np.testing.assert_allclose(
            host(g), r, **tolerance(dtype, "kernel", scale=1e6 if case == "huge_votes" else 1.0)
        )


@pytest.mark.parametrize("impl", _impl_params("dynamic_routing"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["zero_votes", "huge_votes", "tiny_votes"])
def test_dynamic_routing_kernel_extremes(impl, dtype, case):
    kernel, reference, xp, dev, host = _pair("dynamic_routing", impl)
    rng = np.random.default_rng(1)
    u = {
        "zero_votes": np.zeros((2, 9, 4, 16)),
        "huge_votes": 1e6 * rng.normal(size=(2, 9, 4, 16)),
        "tiny_votes": 1e-20 * rng.normal(size=(2, 9, 4, 16)),
    }[case].astype(dtype)
    args = dict(n_iter=3, leaky=False, eps=1e-8, bias=None, initial_logits=None)
    ref = reference(u, xp=np_xp, **args)
    got = kernel(dev(u), xp=xp, **args)
    for g, r in zip(got, ref, strict=True):
        assert np.all(np.isfinite(host(g)))
        np.testing.assert_allclose(host(g), r, **tolerance(dtype, "kernel"))


@pytest.mark.parametrize("impl", _impl_params("squash"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape, axis", [((7,), 0), ((3, 5), -1), ((3, 5), 0), ((2, 4, 3), 1), ((1, 1, 1), 2)]
)
def test_squash_kernel(impl, dtype, shape, axis):
    kernel, reference, xp, dev, host = _pair("squash", impl)
    s = (5 * np.random.default_rng(2).normal(size=shape)).astype(dtype)
    got = kernel(dev(s), axis=axis % len(shape), eps=1e-8, xp=xp)
    np.testing.assert_allclose(
        host(got),
        reference(s, axis=axis % len(shape), eps=1e-8, xp=np_xp),
        **tolerance(dtype, "kernel"),
    )
    assert got.dtype == s.dtype and got.shape == s.shape


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed")
def test_auto_selects_numba_for_numpy_input_and_matches_reference():
    import caproute as cr

    u = np.random.default_rng(3).normal(size=(2, 10, 3, 4))
    assert dispatch.select_impl("dynamic_routing", np_xp, "auto").impl == "numba"
    np.testing.assert_allclose(
        cr.dynamic_routing(u), cr.dynamic_routing(u, backend="numpy"), rtol=1e-10
    )
    np.testing.assert_allclose(
        cr.dynamic_routing(u, backend="numba"), cr.dynamic_routing(u, backend="numpy"), rtol=1e-10
    )


@pytest.mark.parametrize("impl", _impl_params("gmm_estep_stats"))
@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
# sizes around the 128-point blocks; D from 1 to 16 covers every remainder of the kernels'
# 4x2 (Mahalanobis) and 2x4 (scatter) tiles
@pytest.mark.parametrize(
    "n, D", [(1, 5), (127, 13), (128, 2), (300, 5), (300, 1), (200, 16), (130, 7)]
)
def test_gmm_estep_stats_kernel(impl, covariance_type, dtype, n, D):
    from caproute.mixture import _gmm_math as _em

    kernel, reference, xp, dev, host = _pair("gmm_estep_stats", impl)
    rng = np.random.default_rng(n + D)
    K = 4
    X = (rng.normal(size=(n, D)) * 3).astype(dtype)
    means = rng.normal(size=(K, D)).astype(dtype)
    weights = rng.dirichlet(np.ones(K)).astype(dtype)
    A = rng.normal(size=(K, D, D))
    cov = {
        "full": A @ np.swapaxes(A, 1, 2) + D * np.eye(D),
        "tied": A[0] @ A[0].T + D * np.eye(D),
        "diag": rng.uniform(0.5, 2.0, size=(K, D)),
        "spherical": rng.uniform(0.5, 2.0, size=K),
    }[covariance_type].astype(dtype)
    prec_chol = _em.precision_cholesky(cov, covariance_type, xp=np_xp)
    shift = (means + 0.1).astype(dtype) if covariance_type == "full" else None
    args = dict(shift=shift, chunk_size=50)
    ref = reference(X, weights, means, prec_chol, covariance_type, xp=np_xp, **args)
    ref64 = reference(
        *_f64(X, weights, means, prec_chol),
        covariance_type,
        xp=np_xp,
        shift=_f64(shift)[0],
        chunk_size=50,
    )
    got = kernel(dev(X), dev(weights), dev(means), dev(prec_chol), covariance_type, xp=xp, **args)
    assert got.n == n
    for field in ("nk", "sx", "sxx", "loglik"):
        g = host(getattr(got, field))
        assert g.dtype == np.dtype(dtype), field
        assert_matches_reference(
            g, getattr(ref, field), np.asarray(getattr(ref64, field)), dtype, scale=100.0
        )
