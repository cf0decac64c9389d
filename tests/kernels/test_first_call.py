"""A fresh process with a warm Numba cache compiles nothing, and compilations are announced.

The first call of a public operation in a new process costs compilation only on a machine's
first run (a cold cache); later processes load every kernel from Numba's on-disk cache. These
tests count compilations, not seconds: Numba's ``"numba:compile"`` event (relayed to
``caproute.kernels.numba.compile_hooks``) is sent for a compilation and never for a cache load,
and the cache directory must come out of the warm run untouched.
(benchmarks/bench_first_call.py measures the times.)
"""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

numba = pytest.importorskip("numba")

pytestmark = pytest.mark.skipif(numba.config.DISABLE_JIT, reason="NUMBA_DISABLE_JIT is set")

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import io, json, sys
import numpy as np
import caproute
from caproute.cli._common import FIRST_RUN_NOTICE, Output, compiling_notice
from caproute.kernels.numba import compile_hooks

compiled = []
compile_hooks.append(compiled.append)
err = io.StringIO()
rng = np.random.default_rng(0)
with compiling_notice(Output(stderr=err, progress=False)):
    v = caproute.squash(rng.standard_normal((3, 4)), backend="numba")
    if sys.argv[1] == "routing":
        u_hat = rng.standard_normal((2, 6, 3, 4)).astype(np.float32)
        v = caproute.dynamic_routing(u_hat, backend="numba")
print(json.dumps(dict(compiled=compiled, notice=err.getvalue(), out=v.tolist(),
                      expected_notice=FIRST_RUN_NOTICE + "\\n")))
"""


def _fresh_process(cache_dir, what):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("NUMBA_DISABLE_JIT", None)
    res = subprocess.run(
        [sys.executable, "-c", CHILD, what],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def _snapshot(folder):
    """Every file under ``folder`` with its size and modification time."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


def test_a_warm_cache_process_compiles_nothing(tmp_path):
    cold = _fresh_process(tmp_path, "routing")
    # the cold run compiled the kernels (the public entry points and what they call)
    assert "caproute.kernels.numba.squash._squash_rows" in cold["compiled"]
    assert any(".dynamic_routing." in name for name in cold["compiled"])
    assert all(name.startswith("caproute.kernels.numba.") for name in cold["compiled"])
    files = _snapshot(tmp_path)
    assert any(name.endswith(".nbi") for name in files)
    warm = _fresh_process(tmp_path, "routing")
    assert warm["compiled"] == []  # every kernel loaded from the cache, nothing type-inferred
    assert _snapshot(tmp_path) == files  # nothing rewritten either
    assert warm["out"] == cold["out"]


def test_the_command_line_notice_comes_with_compilation_only(tmp_path):
    cold = _fresh_process(tmp_path, "squash")
    assert cold["compiled"]
    assert cold["notice"] == cold["expected_notice"]  # one line, once
    warm = _fresh_process(tmp_path, "squash")
    assert (warm["compiled"], warm["notice"]) == ([], "")


def test_compile_hooks_see_caproute_functions_only():
    from caproute.cli._common import FIRST_RUN_NOTICE, Output, compiling_notice
    from caproute.kernels.numba import _jit, compile_hooks  # noqa: F401 -- _jit relays

    def ours(x):
        return x + 1

    def theirs(x):
        return x + 2

    ours.__module__ = "caproute.kernels.numba.not_a_kernel"
    seen = []
    compile_hooks.append(seen.append)
    try:
        assert numba.njit(ours)(1) == 2
        assert numba.njit(theirs)(1) == 3  # a user's function: not caproute's compilation
    finally:
        compile_hooks.remove(seen.append)
    assert seen == [
        "caproute.kernels.numba.not_a_kernel.test_compile_hooks_see_caproute_"
        "functions_only.<locals>.ours"
    ]

    # the notice follows the hooks: nothing without a compilation, nothing with --quiet
    for quiet in (False, True):
        err = io.StringIO()
        with compiling_notice(Output(stderr=err, progress=False, quiet=quiet)):
            pass
        assert err.getvalue() == ""
    err = io.StringIO()
    with compiling_notice(Output(stderr=err, progress=False, quiet=True)):
        assert numba.njit(ours)(2) == 3
    assert err.getvalue() == "" and not compile_hooks  # the block's hook is gone
    assert FIRST_RUN_NOTICE.startswith("caproute: compiling kernels (first run only")
