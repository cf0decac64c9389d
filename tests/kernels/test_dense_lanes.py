"""The images-in-lanes kernel of votes-fused dynamic routing (``dense_lanes.py``): against
the per-image kernel and the written-out loops, every variant it takes, group and lane
boundaries, thread-count independence, what it declines, and its vector exp bit for bit."""

import numba
import numpy as np
import pytest
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from caproute.kernels.numba import dense_lanes, dynamic_routing
from caproute.kernels.numba.vector_exp import (
    exp_nonpositive,
    exp_nonpositive_f32,
    exp_nonpositive_ir,
)
from tests.routing.oracle import dynamic_routing_loops

RTOL = {np.float32: 2e-5, np.float64: 1e-12}


def _data(batch, n_in, n_out, out_dim, in_dim, dtype, seed=0):
    rng = np.random.default_rng(seed)
    u = (rng.normal(size=(batch, n_in, in_dim)) * 0.3).astype(dtype)
    W = (rng.normal(size=(n_in, n_out, out_dim, in_dim)) * 0.3).astype(dtype)
    bias = (rng.normal(size=(n_out, out_dim)) * 0.1).astype(dtype)
    return u, W, bias


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("leaky", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("n_iter", [1, 2, 3, 4])
def test_matches_the_per_image_kernel(dtype, leaky, with_bias, n_iter):
    u, W, bias = _data(21, 37, 5, 6, 4, dtype)
    kw = dict(n_iter=n_iter, bias=bias if with_bias else None, leaky=leaky, eps=1e-7)
    assert dense_lanes.supported(u.shape, W.shape, u.dtype, None)
    v, c, nonfinite = dense_lanes.dense_routing_lanes(u, W, **kw)
    v_ref, c_ref = dynamic_routing.dense_routing(u, W, block=4, **kw)  # the per-image kernel
    assert v.dtype == c.dtype == np.dtype(dtype)
    np.testing.assert_allclose(v, v_ref, rtol=RTOL[dtype], atol=RTOL[dtype] * 1e-2)
    np.testing.assert_allclose(c, c_ref, rtol=RTOL[dtype], atol=RTOL[dtype] * 1e-2)
    assert not nonfinite.any()


@pytest.mark.parametrize("batch", [1, 15, 16, 17, 129])  # lanes and the 128-image groups
def test_matches_the_written_out_loops(batch):
    u, W, bias = _data(batch, 19, 3, 4, 3, np.float64, seed=batch)
    votes = np.einsum("ijdk,bik->bijd", W, u)
    v_ref, c_ref = dynamic_routing_loops(votes, 3, bias=bias, leaky=False, eps=1e-8)
    v, c, _ = dense_lanes.dense_routing_lanes(u, W, n_iter=3, bias=bias, leaky=False, eps=1e-8)
    np.testing.assert_allclose(v, v_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(c, c_ref, rtol=1e-9, atol=1e-12)


def test_dispatch_runs_it_for_the_capsnet_layer():
    """``dense_routing`` (what ``caproute.dense_dynamic_routing`` calls) takes this kernel for
    DigitCaps sizes, and its per-image kernel when given initial logits."""
    assert dense_lanes.supported((8, 1152, 8), (1152, 10, 16, 8), np.float32, None)
    assert not dense_lanes.supported((8, 1152, 8), (1152, 10, 16, 8), np.float32, np.zeros(1))
    assert not dense_lanes.supported((8, 30, 64), (30, 10, 16, 64), np.float32, None)
    assert not dense_lanes.supported((8, 30, 8), (30, 64, 16, 8), np.float32, None)
    u, W, _ = _data(3, 1152, 10, 16, 8, np.float32)
    got = dynamic_routing.dense_routing(u, W, n_iter=3, bias=None, leaky=False, eps=1e-7)
    want = dense_lanes.dense_routing_lanes(u, W, n_iter=3, bias=None, leaky=False, eps=1e-7)
    for a, b in zip(got, want[:2], strict=True):
        np.testing.assert_array_equal(a, b)


def test_results_do_not_depend_on_the_threads():
    u, W, bias = _data(40, 300, 10, 16, 8, np.float32)
    kw = dict(n_iter=3, bias=bias, leaky=False, eps=1e-7)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = dense_lanes.dense_routing_lanes(u, W, **kw)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = dense_lanes.dense_routing_lanes(u, W, **kw)
    finally:
        numba.set_num_threads(before)
    for a, b in zip(one, many, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_flags_non_finite_inputs_and_outputs(bad):
    """The flags the public function's deferred check reads (per group of images for the
    first sums and the couplings, per image for the parents)."""
    u, W, _ = _data(20, 17, 3, 4, 3, np.float32)
    kw = dict(n_iter=3, bias=None, leaky=False, eps=1e-7)
    assert not dense_lanes.dense_routing_lanes(u, W, **kw)[2].any()
    u[18, 5, 1] = bad
    v, _, nonfinite = dense_lanes.dense_routing_lanes(u, W, **kw)
    assert nonfinite[18].all()
    assert not np.isfinite(v[18]).all()


def _exp_lanes_of(fused):
    @intrinsic
    def _exp_lanes(typingctx, x, out):
        """out[:L] = exp_nonpositive_ir over one vector of x[:L] (L = 64 bytes of lanes)."""
        sig = types.void(x, out)

        def codegen(context, builder, signature, args):
            dtype = signature.args[0].dtype
            fty = ir.FloatType() if dtype == types.float32 else ir.DoubleType()
            vty = ir.VectorType(fty, 16 if dtype == types.float32 else 8)
            xa = context.make_array(signature.args[0])(context, builder, args[0])
            oa = context.make_array(signature.args[1])(context, builder, args[1])
            v = builder.load(builder.bitcast(xa.data, vty.as_pointer()), align=4)
            e = exp_nonpositive_ir(builder, v, fused=fused)
            builder.store(e, builder.bitcast(oa.data, vty.as_pointer()), align=4)
            return context.get_dummy_value()

        return sig, codegen

    @numba.njit
    def _exp_all(x, out, lanes):
        for s in range(0, x.shape[0], lanes):
            _exp_lanes(x[s : s + lanes], out[s : s + lanes])

    return _exp_all


_EXP_ALL = {False: _exp_lanes_of(False), True: _exp_lanes_of(True)}


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_exp_matches_the_scalar_one(dtype, fused):
    """Within 1 ulp of vector_exp's scalar function (the same formula; 0, 1, NaN, -inf and
    the underflow bound exactly), with separate or fused multiply-adds."""
    lanes = 64 // np.dtype(dtype).itemsize
    rng = np.random.default_rng(3)
    low = -100.0 if dtype == np.float32 else -750.0
    special = [0.0, -0.0, -np.inf, np.nan, -87.0, -708.0, -1e-30, -800.0]
    x = np.concatenate([rng.uniform(low, 0.0, size=4096), special]).astype(dtype)
    x = np.concatenate([x, np.zeros((-x.size) % lanes, dtype=dtype)])
    out = np.empty_like(x)
    _EXP_ALL[fused](x, out, lanes)
    scalar = exp_nonpositive_f32 if dtype == np.float32 else exp_nonpositive
    want = np.array([scalar(v) for v in x], dtype=dtype)
    itype = np.int32 if dtype == np.float32 else np.int64
    finite = np.isfinite(x)
    ulps = np.abs(out[finite].view(itype).astype(np.int64) - want[finite].view(itype))
    assert ulps.max() <= 1
    n = 4096
    np.testing.assert_array_equal(out[n:][np.isfinite(x[n:])], want[n:][np.isfinite(x[n:])])
    assert np.isnan(out[np.isnan(x)]).all()
    assert (out[np.isneginf(x)] == 0.0).all()
