"""The dynamic-routing kernels at DigitCaps' sizes (capsule dim 16; the fused layer's input
dim 8, whose vote loop runs unrolled) and the fused layer's blocks of samples, against the
reference, with the uniform first couplings (no initial logits) and without; the hypothesis
tests in test_kernels.py mostly draw other sizes."""

import importlib.util

import array_api_compat.numpy as np_xp
import numpy as np
import pytest

from caproute.routing import _dynamic_math as ref
from tests._helpers import tolerance

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("numba") is None, reason="numba is not installed"
)


def _kernels():
    from caproute.kernels.numba import dynamic_routing as k

    return k


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dim", [16, 15])
@pytest.mark.parametrize("leaky", [False, True])
@pytest.mark.parametrize("with_b0", [False, True])
def test_dynamic_routing_capsule_sizes_match_reference(dtype, dim, leaky, with_b0):
    k = _kernels()
    rng = np.random.default_rng(dim + 2 * leaky + 4 * with_b0)
    u = (0.5 * rng.normal(size=(3, 37, 5, dim))).astype(dtype)
    bias = rng.normal(size=(5, dim)).astype(dtype)
    b0 = rng.normal(size=(3, 37, 5)).astype(dtype) if with_b0 else None
    args = dict(n_iter=3, bias=bias, leaky=leaky, eps=1e-8, initial_logits=b0)
    v, c = k.dynamic_routing(u, **args)
    v_ref, c_ref = ref.dynamic_routing(u, xp=np_xp, **args)
    t = tolerance(dtype, "kernel")
    np.testing.assert_allclose(v, v_ref, **t)
    np.testing.assert_allclose(c, c_ref, **t)
    v2, c2 = k.dynamic_routing(u, **args)  # deterministic
    assert np.array_equal(v, v2) and np.array_equal(c, c2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("in_dim, out_dim", [(8, 16), (8, 5), (3, 16)])
@pytest.mark.parametrize("with_b0", [False, True])
def test_dense_routing_blocks_and_unrolled_match_reference(dtype, in_dim, out_dim, with_b0):
    k = _kernels()
    rng = np.random.default_rng(in_dim * out_dim + with_b0)
    batch, n_in, n_out = 7, 45, 4
    u = rng.normal(size=(batch, n_in, in_dim)).astype(dtype)
    W = (0.3 * rng.normal(size=(n_in, n_out, out_dim, in_dim))).astype(dtype)
    b0 = rng.normal(size=(batch, n_in, n_out)).astype(dtype) if with_b0 else None
    args = dict(n_iter=3, bias=None, leaky=with_b0, eps=1e-8, initial_logits=b0)
    v_ref, c_ref = ref.dense_dynamic_routing(u, W, xp=np_xp, **args)
    t = tolerance(dtype, "kernel")
    outs = []
    for block in (1, 3, 4, 16):  # 7 samples: partial last blocks, one block larger than batch
        v, c = k.dense_routing(u, W, block=block, **args)
        np.testing.assert_allclose(v, v_ref, **t)
        np.testing.assert_allclose(c, c_ref, **t)
        outs.append((v, c))
    for v, c in outs[1:]:  # each sample's arithmetic does not depend on the block
        assert np.array_equal(v, outs[0][0]) and np.array_equal(c, outs[0][1])


def test_float32_exp_within_two_ulp_of_numpy():
    """The float32 exponential of the float32 softmaxes (``exp_nonpositive_as`` on float32),
    called from a loop with the kernels' flags, against NumPy's float32 exp; float64 input
    takes the float64 one."""
    from numba import njit

    from caproute.kernels.numba.vector_exp import exp_nonpositive_as

    @njit(fastmath={"reassoc", "contract"})
    def run(x, out):
        for i in range(x.shape[0]):
            out[i] = exp_nonpositive_as(x[i])

    rng = np.random.default_rng(0)
    x = np.concatenate(
        [-rng.uniform(0, 87, 100_000), -rng.uniform(0, 1, 10_000), -np.logspace(-30, 1.9, 500)]
    ).astype(np.float32)
    got = np.empty_like(x)
    run(x, got)
    want = np.exp(x)
    normal = want >= np.finfo(np.float32).tiny
    ulps = np.abs(got.view(np.int32).astype(np.int64) - want.view(np.int32).astype(np.int64))
    assert ulps[normal].max() <= 2
    special = np.array([0.0, -0.0, -88.0, -1e30, -np.inf, np.nan], dtype=np.float32)
    out = np.empty_like(special)
    run(special, out)
    np.testing.assert_array_equal(out[:5], [1.0, 1.0, 0.0, 0.0, 0.0])
    assert np.isnan(out[5])
    x64 = x.astype(np.float64)
    got64 = np.empty_like(x64)
    run(x64, got64)
    np.testing.assert_allclose(got64, np.exp(x64), rtol=5e-16)
