"""The compile gate: every GPU kernel, in both dtypes, compiles to PTX for sm_80 and sm_90 and
assembles with ptxas; float32 kernels hold no float64 instructions."""

import os

import pytest

pytestmark = pytest.mark.skipif(
    os.environ.get("NUMBA_ENABLE_CUDASIM") == "1",
    reason="the simulator replaces numba.cuda's compiler: the gate runs in the main process",
)


def _gate():
    pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")
    from caproute.kernels.cuda import compile_gate

    ptxas = compile_gate.ptxas_path()
    if ptxas is None:
        pytest.skip("ptxas not found (pip install nvidia-cuda-nvcc-cu12)")
    return compile_gate, ptxas


def _spec_ids():
    try:
        from caproute.kernels.cuda import compile_gate

        return [compile_gate.spec_id(m, n, sig) for m, n, _, sig in compile_gate.specs()]
    except ImportError:
        return []


@pytest.mark.parametrize("arch", [(8, 0), (9, 0)], ids=["sm_80", "sm_90"])
@pytest.mark.parametrize("kernel", _spec_ids())
def test_kernel_compiles_and_assembles(kernel, arch):
    compile_gate, ptxas = _gate()
    spec = next(s for s in compile_gate.specs() if compile_gate.spec_id(s[0], s[1], s[3]) == kernel)
    assembled = compile_gate.assemble(*spec, arch, ptxas)
    assert assembled.registers > 0
    if assembled.dtype == "float32":
        assert assembled.f64_instructions == 0, (
            f"{kernel}: float64 instructions in a float32 kernel"
        )


def test_gate_catches_float64_in_a_float32_kernel():
    """The check itself: an untyped constant that cannot be represented exactly in float32
    makes float64 arithmetic, which the gate counts."""
    compile_gate, ptxas = _gate()
    from numba import cuda

    def leaky(x, out):
        i = cuda.grid(1)
        if i < x.size:
            out[i] = x[i] * 0.1 + 1e-300

    assembled = compile_gate.assemble(
        "caproute.kernels.cuda.test",
        "leaky",
        leaky,
        "void(float32[::1], float32[::1])",
        (9, 0),
        ptxas,
    )
    assert assembled.f64_instructions > 0
