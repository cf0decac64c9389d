"""``prefer_wide_vectors``: the function it is called in asks LLVM for 512-bit vectors, and
gets them where the CPU has AVX-512; results do not change."""

import numpy as np
import pytest
from numba import njit

from caproute.kernels.numba.vector_width import prefer_wide_vectors


def _host_has_avx512f():
    try:
        with open("/proc/cpuinfo") as f:
            return " avx512f" in f.read()
    except OSError:
        return False


def _kernels():
    @njit(fastmath={"reassoc", "contract"})
    def wide(x, y):
        prefer_wide_vectors()
        acc = x[0] * 0.0
        for i in range(x.shape[0]):
            acc += x[i] * y[i]
        return acc

    @njit(fastmath={"reassoc", "contract"})
    def plain(x, y):
        acc = x[0] * 0.0
        for i in range(x.shape[0]):
            acc += x[i] * y[i]
        return acc

    return wide, plain


def _compiled(inspect):
    """(code of the marked kernel, code of the plain one) after a float32 call, as LLVM IR
    (``inspect="inspect_llvm"``) or assembly (``"inspect_asm"``)."""
    x = np.arange(64, dtype=np.float32)
    texts = []
    for kernel in _kernels():
        kernel(x, x)
        texts.append("".join(getattr(kernel, inspect)().values()))
    return texts


def test_function_attributes():
    ir_wide, ir_plain = _compiled("inspect_llvm")
    assert '"prefer-vector-width"="512"' in ir_wide
    assert '"min-legal-vector-width"="512"' in ir_wide
    assert '"prefer-vector-width"="512"' not in ir_plain


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_results(dtype):
    wide, plain = _kernels()
    x = np.random.default_rng(0).standard_normal(1000).astype(dtype)
    rtol = 1e-5 if dtype == np.float32 else 1e-13  # the two sum in different lane orders
    np.testing.assert_allclose(wide(x, x), plain(x, x), rtol=rtol)
    np.testing.assert_allclose(wide(x, x), np.dot(x.astype(np.float64), x), rtol=rtol)


@pytest.mark.skipif(not _host_has_avx512f(), reason="this CPU has no AVX-512 (no zmm registers)")
def test_zmm_registers_where_the_cpu_has_them():
    asm_wide, asm_plain = _compiled("inspect_asm")
    assert "zmm" in asm_wide
    assert "zmm" not in asm_plain
