"""Compile every GPU kernel to PTX and assemble it with ptxas, without a GPU.

``numba.cuda.compile_ptx`` builds real PTX for a compute capability with no driver; ``ptxas``
(from the ``nvidia-cuda-nvcc-cu12`` wheel) assembles it and reports registers, spills and
shared memory. The tests run this for every kernel and dtype (``tests/kernels/cuda``), and
``python -m caproute.kernels.cuda.compile_gate`` prints the table that docs/performance.md
records. Each kernel module lists its kernels in ``PTX_SPECS``: ``(name, pyfunc, signature)``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

KERNEL_MODULES = (
    "caproute.kernels.cuda.squash",
    "caproute.kernels.cuda.dynamic_routing",
    "caproute.kernels.cuda.em_routing",
    "caproute.kernels.cuda.gmm_estep",
)
ARCHES = ((8, 0), (9, 0))


@dataclass
class Assembled:
    """One kernel assembled for one architecture."""

    module: str
    name: str
    arch: str
    dtype: str
    registers: int
    spill_stores: int
    spill_loads: int
    shared_bytes: int
    stack_bytes: int
    f64_instructions: int


def ptxas_path():
    """The ``ptxas`` of the nvidia-cuda-nvcc wheel (or on PATH), or None."""
    spec = importlib.util.find_spec("nvidia.cuda_nvcc")
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            candidate = Path(root) / "bin" / "ptxas"
            if candidate.exists():
                return str(candidate)
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(folder) / "ptxas"
        if candidate.exists():
            return str(candidate)
    return None


def specs():
    """``(module, name, pyfunc, signature)`` of every registered kernel."""
    for module_name in KERNEL_MODULES:
        module = importlib.import_module(module_name)
        for name, pyfunc, signature in module.PTX_SPECS:
            yield module_name, name, pyfunc, signature


def spec_id(module, name, signature):
    """A unique, readable id: ``module.kernel[dtype]``."""
    return f"{module.rsplit('.', 1)[-1]}.{name}[{_dtype_of(signature)}]"


def _dtype_of(signature):
    has32, has64 = "float32" in signature, "float64" in signature
    return "float32" if has32 and not has64 else "float64" if has64 else "other"


def _count_f64(ptx):
    # instructions (not declarations or comments) that compute or move float64 values
    return sum(
        1
        for line in ptx.splitlines()
        if ".f64" in line and not line.lstrip().startswith(("//", ".reg", ".param", ".local"))
    )


def assemble(module, name, pyfunc, signature, arch, ptxas):
    """Compile one kernel for ``arch`` and assemble it; returns :class:`Assembled`."""
    from numba import cuda

    ptx, _ = cuda.compile_ptx(pyfunc, signature, cc=arch)
    sm = f"sm_{arch[0]}{arch[1]}"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.ptx"
        path.write_text(ptx)
        done = subprocess.run(
            [ptxas, f"-arch={sm}", "-v", str(path), "-o", str(Path(tmp) / "kernel.cubin")],
            capture_output=True,
            text=True,
        )
    if done.returncode != 0:
        raise RuntimeError(f"ptxas failed for {module}.{name} on {sm}:\n{done.stderr}")
    report = done.stderr

    def grab(pattern):
        found = re.findall(pattern, report)
        return max((int(v) for v in found), default=0)

    return Assembled(
        module=module.rsplit(".", 1)[-1],
        name=name,
        arch=sm,
        dtype=_dtype_of(signature),
        registers=grab(r"Used (\d+) registers"),
        spill_stores=grab(r"(\d+) bytes spill stores"),
        spill_loads=grab(r"(\d+) bytes spill loads"),
        shared_bytes=grab(r"(\d+) bytes smem"),
        stack_bytes=grab(r"(\d+) bytes stack frame"),
        f64_instructions=_count_f64(ptx) if _dtype_of(signature) == "float32" else 0,
    )


def main():
    ptxas = ptxas_path()
    if ptxas is None:
        raise SystemExit("ptxas not found: pip install nvidia-cuda-nvcc-cu12")
    print(
        "| kernel | dtype | arch | registers | spill stores / loads (bytes) | shared (bytes) "
        "| local stack (bytes) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for module, name, pyfunc, signature in specs():
        for arch in ARCHES:
            a = assemble(module, name, pyfunc, signature, arch, ptxas)
            print(
                f"| {a.module}.{a.name} | {a.dtype} | {a.arch} | {a.registers} | "
                f"{a.spill_stores} / {a.spill_loads} | {a.shared_bytes} | {a.stack_bytes} |"
            )


if __name__ == "__main__":
    main()
