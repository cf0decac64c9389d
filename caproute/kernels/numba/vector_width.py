"""``prefer_wide_vectors()``: lets LLVM vectorise the kernel it is called in with the widest
vectors the CPU has.

On CPUs with AVX-512, LLVM vectorises with 256-bit registers unless a function asks for more
(its "prefer-vector-width" tuning, chosen because some early AVX-512 parts lower their clock
on 512-bit instructions). caproute's hot loops run over contiguous children in L1 or L2, where
16 float32 lanes instead of 8 halve the instruction count: the EM routing kernel measured
1.04-1.05x faster over the whole ConvCaps call (2 threads, paired runs, see
docs/performance.md). Elsewhere (AVX2 or older, other architectures) the attribute changes
nothing: LLVM never uses registers wider than the target has.

The call marks the LLVM function being compiled (for a ``prange`` body, the outlined
parallel function) with "prefer-vector-width"="512" and "min-legal-vector-width"="512";
llvmlite's ``FunctionAttributes`` accepts only attributes without values, so the two are
added to the underlying set directly. Cached machine code keeps the choice, and Numba's
cache index is keyed on the CPU, so a cache copied to another machine is not reused.
"""

from __future__ import annotations

from numba import types
from numba.core import config
from numba.extending import intrinsic


def _target_has_avx512f():
    """Whether the CPU Numba compiles for has AVX-512F: the host's, unless NUMBA_CPU_NAME or
    NUMBA_CPU_FEATURES chose another target (a generic name or a feature list without it)."""
    if config.CPU_FEATURES is not None:
        return "+avx512f" in config.CPU_FEATURES.split(",")
    if config.CPU_NAME is not None and config.CPU_NAME != "host":
        return False
    try:
        import llvmlite.binding as llvm

        return bool(llvm.get_host_cpu_features().get("avx512f", False))
    except RuntimeError:  # (no feature list on this platform: assume the narrow registers)
        return False


#: whether kernels here get 512-bit registers: code that hand-writes vector shuffles picks
#: its tile size from this (16 float32 lanes, else 8)
HAS_512_BIT_VECTORS = _target_has_avx512f()

_ATTRIBUTES = ('"prefer-vector-width"="512"', '"min-legal-vector-width"="512"')


@intrinsic
def prefer_wide_vectors(typingctx):
    """Ask LLVM for 512-bit vectors in the function this is called in (no run-time cost)."""
    sig = types.void()

    def codegen(context, builder, signature, args):
        attributes = builder.function.attributes
        for attribute in _ATTRIBUTES:
            set.add(attributes, attribute)  # (past llvmlite's list of value-less attributes)
        return context.get_dummy_value()

    return sig, codegen
