"""The cache-chunked convolution kernel (``conv2d`` op) against the pure Array API reference."""

import array_api_compat.numpy as np_xp
import numpy as np
import pytest

from caproute._backend import CAPABILITIES, dispatch, select_impl
from tests._helpers import tolerance

pytest.importorskip("numba")

from caproute.kernels.numba import conv_gemm

REFERENCE = dispatch._load(CAPABILITIES["conv2d"]["reference"])
KERNEL = dispatch._load(CAPABILITIES["conv2d"]["numba"])

# (batch, H, W, c_in, kernel, c_out, stride, padding): every path of the kernel
CASES = [
    pytest.param(3, 11, 9, 1, 5, 7, 1, 0, id="full-im2col"),
    pytest.param(2, 13, 12, 3, 3, 5, 2, ((1, 2), (0, 1)), id="full-im2col-padded"),
    pytest.param(3, 12, 11, 40, 3, 6, 2, 0, id="per-row"),
    pytest.param(2, 9, 10, 70, 3, 4, 1, ((2, 1), (1, 2)), id="per-row-padded"),
    pytest.param(3, 7, 6, 9, 1, 5, 1, 0, id="1x1"),
    pytest.param(2, 8, 7, 60, 1, 3, 2, 0, id="1x1-stride-2"),
    pytest.param(1, 5, 5, 80, 5, 3, 1, 0, id="single-position"),
    pytest.param(2, 6, 7, 30, 2, 3, 1, 2, id="padding-wider-than-kernel"),
]


def _inputs(b, h, w, c_in, k, c_out, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, h, w, c_in)).astype(dtype)
    weight = rng.standard_normal((k, k, c_in, c_out)).astype(dtype)
    bias = rng.standard_normal(c_out).astype(dtype)
    return x, weight, bias


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize(("b", "h", "w", "c_in", "k", "c_out", "stride", "padding"), CASES)
def test_conv2d_kernel_matches_reference(
    b, h, w, c_in, k, c_out, stride, padding, with_bias, relu, dtype
):
    x, weight, bias = _inputs(b, h, w, c_in, k, c_out, dtype)
    bias = bias if with_bias else None
    got = KERNEL(x, weight, bias, stride=stride, padding=padding, relu=relu, xp=np_xp)
    ref = REFERENCE(x, weight, bias, stride=stride, padding=padding, relu=relu, xp=np_xp)
    x64, w64 = x.astype(np.float64), weight.astype(np.float64)
    b64 = None if bias is None else bias.astype(np.float64)
    ref64 = REFERENCE(x64, w64, b64, stride=stride, padding=padding, relu=relu, xp=np_xp)
    assert got.dtype == dtype and got.shape == ref.shape
    scale = float(np.sqrt(k * k * c_in))
    np.testing.assert_allclose(got, ref64, **tolerance(dtype, "kernel", scale))
    np.testing.assert_allclose(got, ref, **tolerance(dtype, "kernel", scale))
    if relu:
        assert np.all(got >= 0)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [0, 2, 4])
def test_small_tasks_on_threads_give_the_same_result(case, dtype, threads, monkeypatch):
    """Tasks of one image on 1-3 threads (a last task of another size, more tasks than
    threads) give what one task gives, and the BLAS's thread count comes back."""
    b, h, w, c_in, k, c_out, stride, padding = CASES[case].values
    x, weight, bias = _inputs(7, h, w, c_in, k, c_out, dtype, seed=1)
    whole = KERNEL(x, weight, bias, stride=stride, padding=padding, relu=True)
    before = conv_gemm.blas_threads()
    monkeypatch.setattr(conv_gemm, "blas_threads", lambda: threads)
    for name in ("CHUNK_BYTES", "TASK_BYTES", "MIN_ROWS", "MIN_ROWS_THREAD"):
        monkeypatch.setattr(conv_gemm, name, 1)
    assert conv_gemm.chunk_images(5, h * w, 10, 10, 4, budget=1, min_rows=1) == 1
    small = KERNEL(x, weight, bias, stride=stride, padding=padding, relu=True)
    ref = REFERENCE(x, weight, bias, stride=stride, padding=padding, relu=True, xp=np_xp)
    np.testing.assert_allclose(small, ref, **tolerance(dtype, "kernel", 10.0))
    np.testing.assert_allclose(small, whole, **tolerance(dtype, "kernel", 10.0))
    monkeypatch.undo()
    assert conv_gemm.blas_threads() == before


def test_one_blas_thread_inside_and_restored_after():
    before = conv_gemm.blas_threads()
    if conv_gemm._controller() is None or before < 2:
        pytest.skip("needs threadpoolctl and a BLAS with at least two threads")
    ctl = conv_gemm._controller()
    with conv_gemm._OneBlasThread():
        with conv_gemm._OneBlasThread():  # nested (concurrent calls): one limit
            assert max(lib.num_threads for lib in ctl.lib_controllers) == 1
        assert max(lib.num_threads for lib in ctl.lib_controllers) == 1
        assert conv_gemm.blas_threads() == before
    assert max(lib.num_threads for lib in ctl.lib_controllers) == before


def test_chunks_hold_min_rows_and_the_byte_budget():
    # few rows per image: at least MIN_ROWS product rows per chunk
    assert conv_gemm.chunk_images(1000, 36, 2304, 256, 4) * 36 >= conv_gemm.MIN_ROWS
    # many rows per image: the byte budget decides
    nb = conv_gemm.chunk_images(1000, 400, 81, 256, 4)
    assert nb * 400 * (81 + 256) * 4 <= max(conv_gemm.CHUNK_BYTES, 400 * 337 * 4)
    assert conv_gemm.chunk_images(3, 400, 81, 256, 4) == 3


def test_relu_keeps_nan_and_float32_stays_float32():
    x, weight, bias = _inputs(2, 6, 6, 2, 3, 4, np.float32)
    x[0, 2, 2, 0] = np.nan
    got = KERNEL(x, weight, bias, stride=1, padding=0, relu=True)
    ref = REFERENCE(x, weight, bias, stride=1, padding=0, relu=True, xp=np_xp)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    assert np.isnan(got).any()


def test_empty_batch():
    x, weight, bias = _inputs(0, 6, 6, 2, 3, 4, np.float32)
    assert KERNEL(x, weight, bias, stride=1, padding=0).shape == (0, 4, 4, 4)


def test_auto_on_numpy_selects_the_kernel():
    assert select_impl("conv2d", np_xp, "auto").impl == "numba"
    assert select_impl("conv2d", np_xp, "numpy").impl == "reference"
