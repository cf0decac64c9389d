"""The numba-cuda routing kernels (caproute/kernels/cuda) against the pure Array API reference,
run in numba-cuda's CUDA simulator on the CPU.

The simulator is chosen when numba.cuda is first imported, so these tests run in a pytest process
of their own with ``NUMBA_ENABLE_CUDASIM=1`` (``.ci/run`` does that); elsewhere they skip.
Sizes are small and odd: several blocks, a children count that is not a multiple of the block
size, threads with no child, blocks that loop over more than one sample (``GRID_LIMIT``), and a
block size that leaves a partial chunk in the block reduction. The simulator computes float32
maths in float64, so output dtypes are asserted as well as values.
"""

import numpy as np
import pytest

from caproute._backend import numpy_namespace
from caproute._lib import stable_math
from caproute.routing import _dynamic_math, _em_math, official_inverse_temperature
from tests._helpers import CUDA_KERNELS_REASON, cuda_kernels_runnable, tolerance

pytestmark = [
    pytest.mark.cudasim,
    pytest.mark.skipif(not cuda_kernels_runnable(), reason=CUDA_KERNELS_REASON),
]

XP = numpy_namespace()
DTYPES = [np.float32, np.float64]


@pytest.fixture
def cuda_kernels(monkeypatch):
    """The three kernel modules, with blocks of 32 threads (the simulator runs every thread)."""
    from caproute.kernels.cuda import dynamic_routing, em_routing, squash

    for module in (squash, dynamic_routing, em_routing):
        monkeypatch.setattr(module, "BLOCK_SIZE", 32)
    return squash, dynamic_routing, em_routing


def _assert_close(got, ref, dtype, scale=1.0):
    assert got.dtype == dtype
    assert got.shape == ref.shape
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref, **tolerance(dtype, "kernel", scale))


# --- squash ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape, axis",
    [((7,), 0), ((5, 7, 15), 1), ((75, 3), -1), ((3, 4, 11), 0), ((2, 1, 1), 2)],
)
def test_squash(cuda_kernels, dtype, shape, axis):
    squash = cuda_kernels[0]
    s = (5 * np.random.default_rng(2).normal(size=shape)).astype(dtype)
    if s.ndim > 1:  # zero vectors: 0/0 without the eps inside the square root
        idx = [slice(None)] * s.ndim
        idx[axis] = slice(None)
        idx[(axis + 1) % s.ndim] = 0
        s[tuple(idx)] = 0
    got = squash.squash(s, axis=axis, eps=1e-8, xp=XP)
    _assert_close(got, stable_math.squash(s, axis=axis, eps=1e-8, xp=XP), dtype)


# --- dynamic routing ---------------------------------------------------------------------------

ROUTING_VARIANTS = {
    "plain": dict(n_iter=3, leaky=False, bias=False, b0=False),
    "one_iteration": dict(n_iter=1, leaky=False, bias=True, b0=True),
    "leaky": dict(n_iter=3, leaky=True, bias=False, b0=False),
    "bias": dict(n_iter=2, leaky=False, bias=True, b0=False),
    "initial_logits": dict(n_iter=3, leaky=False, bias=False, b0=True),
    "all": dict(n_iter=4, leaky=True, bias=True, b0=True),
}


def _routing_args(rng, dtype, batch, n_in, n_out, dim, variant):
    opts = ROUTING_VARIANTS[variant]
    bias = rng.normal(size=(n_out, dim)).astype(dtype) if opts["bias"] else None
    b0 = rng.normal(size=(batch, n_in, n_out)).astype(dtype) if opts["b0"] else None
    return dict(n_iter=opts["n_iter"], leaky=opts["leaky"], eps=1e-8, bias=bias, initial_logits=b0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", list(ROUTING_VARIANTS))
def test_dynamic_routing(cuda_kernels, dtype, variant):
    kernels = cuda_kernels[1]
    rng = np.random.default_rng(10)
    batch, n_in, n_out, dim = 3, 37, 5, 3
    u = rng.normal(size=(batch, n_in, n_out, dim)).astype(dtype)
    args = _routing_args(rng, dtype, batch, n_in, n_out, dim, variant)
    v, c = kernels.dynamic_routing(u, xp=XP, **args)
    v_ref, c_ref = _dynamic_math.dynamic_routing(u, xp=XP, **args)
    _assert_close(v, v_ref, dtype)
    _assert_close(c, c_ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dynamic_routing_votes_too_many_to_stage(cuda_kernels, dtype):
    """n_out * dim above LOCAL_VOTES: the child's votes are read from global memory twice per
    iteration instead of staged; the results are the same."""
    kernels = cuda_kernels[1]
    rng = np.random.default_rng(11)
    n_out, dim = 17, 16
    assert n_out * dim > kernels.LOCAL_VOTES
    u = rng.normal(size=(1, 7, n_out, dim)).astype(dtype)
    args = _routing_args(rng, dtype, 1, 7, n_out, dim, "plain")
    v, c = kernels.dynamic_routing(u, xp=XP, **args)
    v_ref, c_ref = _dynamic_math.dynamic_routing(u, xp=XP, **args)
    _assert_close(v, v_ref, dtype)
    _assert_close(c, c_ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", ["plain", "leaky", "all"])
def test_dense_routing(cuda_kernels, dtype, variant):
    kernels = cuda_kernels[1]
    rng = np.random.default_rng(11)
    batch, n_in, n_out, in_dim, out_dim = 3, 37, 5, 4, 3
    u = rng.normal(size=(batch, n_in, in_dim)).astype(dtype)
    W = (0.5 * rng.normal(size=(n_in, n_out, out_dim, in_dim))).astype(dtype)
    args = _routing_args(rng, dtype, batch, n_in, n_out, out_dim, variant)
    v, c = kernels.dense_routing(u, W, xp=XP, **args)
    v_ref, c_ref = _dynamic_math.dense_dynamic_routing(u, W, xp=XP, **args)
    _assert_close(v, v_ref, dtype)
    _assert_close(c, c_ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["zero_votes", "huge_votes", "tiny_votes"])
def test_dynamic_routing_extremes(cuda_kernels, dtype, case):
    kernels = cuda_kernels[1]
    rng = np.random.default_rng(1)
    u = {
        "zero_votes": np.zeros((2, 9, 4, 16)),
        "huge_votes": 1e6 * rng.normal(size=(2, 9, 4, 16)),
        "tiny_votes": 1e-20 * rng.normal(size=(2, 9, 4, 16)),
    }[case].astype(dtype)
    args = dict(n_iter=3, leaky=False, eps=1e-8, bias=None, initial_logits=None)
    for got, ref in zip(
        kernels.dynamic_routing(u, xp=XP, **args),
        _dynamic_math.dynamic_routing(u, xp=XP, **args),
        strict=True,
    ):
        _assert_close(got, ref, dtype)


def test_routing_block_layouts(cuda_kernels, monkeypatch):
    """Blocks of 40 threads (a partial chunk in the reduction) and 2 blocks for 5 samples (each
    block routes several samples, reusing its scratch)."""
    kernels = cuda_kernels[1]
    monkeypatch.setattr(kernels, "BLOCK_SIZE", 40)
    monkeypatch.setattr(kernels, "GRID_LIMIT", 2)
    rng = np.random.default_rng(12)
    u = rng.normal(size=(5, 37, 5, 3))
    args = _routing_args(rng, np.float64, 5, 37, 5, 3, "all")
    for got, ref in zip(
        kernels.dynamic_routing(u, xp=XP, **args),
        _dynamic_math.dynamic_routing(u, xp=XP, **args),
        strict=True,
    ):
        _assert_close(got, ref, np.float64)


# --- EM routing --------------------------------------------------------------------------------

EM_VARIANTS = ["uniform_a", "initial_assignments", "binary_a", "all_zero_a", "official_min_var"]


def _em_inputs(rng, dtype, batch, n_in, n_out, dim, variant, scale=1.0):
    V = (scale * rng.normal(size=(batch, n_in, n_out, dim))).astype(dtype)
    a = {
        "binary_a": rng.integers(0, 2, size=(batch, n_in)).astype(float),
        "all_zero_a": np.zeros((batch, n_in)),
    }.get(variant, rng.uniform(size=(batch, n_in)))
    beta_u = rng.normal(size=(n_out, dim)).astype(dtype)
    beta_a = rng.normal(size=n_out).astype(dtype)
    R0 = None
    if variant == "initial_assignments":
        R0 = rng.dirichlet(np.ones(n_out), size=(batch, n_in)).astype(dtype)
    if variant == "official_min_var":
        lambdas, min_var = official_inverse_temperature(3), 5e-4
    else:
        lambdas, min_var = (1.0, 1.0, 1.0), 0.0
    args = dict(inverse_temperature=lambdas, min_var=min_var, eps=1e-8, initial_assignments=R0)
    return (V, a.astype(dtype), beta_u, beta_a), args


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", EM_VARIANTS)
def test_em_routing(cuda_kernels, dtype, variant):
    kernels = cuda_kernels[2]
    rng = np.random.default_rng(20)
    inputs, args = _em_inputs(rng, dtype, 3, 37, 5, 3, variant)
    got = kernels.em_routing(*inputs, xp=XP, **args)
    ref = _em_math.em_routing(*inputs, xp=XP, **args)
    for g, r in zip(got, ref, strict=True):
        _assert_close(g, r, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["zero_votes", "identical_votes", "huge_votes"])
def test_em_routing_extremes(cuda_kernels, dtype, case):
    kernels = cuda_kernels[2]
    rng = np.random.default_rng(0)
    V = {
        "zero_votes": np.zeros((2, 9, 4, 16)),
        "identical_votes": np.ones((2, 9, 4, 16)),
        "huge_votes": 1e6 * rng.normal(size=(2, 9, 4, 16)),
    }[case].astype(dtype)
    a = rng.uniform(size=(2, 9)).astype(dtype)
    bu, ba = np.zeros((4, 16), dtype), np.zeros(4, dtype)
    args = dict(inverse_temperature=(1.0, 1.0, 1.0), min_var=0.0, eps=1e-8)
    got = kernels.em_routing(V, a, bu, ba, xp=XP, **args)
    ref = _em_math.em_routing(V, a, bu, ba, xp=XP, **args)
    for g, r in zip(got, ref, strict=True):
        _assert_close(g, r, dtype, scale=1e6 if case == "huge_votes" else 1.0)


def test_em_routing_block_layouts(cuda_kernels, monkeypatch):
    """As test_routing_block_layouts, for EM routing (one iteration: R is the initial one)."""
    kernels = cuda_kernels[2]
    monkeypatch.setattr(kernels, "BLOCK_SIZE", 40)
    monkeypatch.setattr(kernels, "GRID_LIMIT", 2)
    rng = np.random.default_rng(21)
    inputs, args = _em_inputs(rng, np.float64, 5, 37, 5, 3, "initial_assignments")
    for lambdas in [(0.5,), (0.2, 0.5, 1.0)]:
        args["inverse_temperature"] = lambdas
        got = kernels.em_routing(*inputs, xp=XP, **args)
        ref = _em_math.em_routing(*inputs, xp=XP, **args)
        for g, r in zip(got, ref, strict=True):
            _assert_close(g, r, np.float64)
