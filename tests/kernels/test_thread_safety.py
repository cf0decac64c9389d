"""Numba kernels called from several Python threads at once give the sequential results, under
the threading layer Numba picks here and under ``workqueue``, its fallback where neither TBB nor
an OpenMP runtime is installed, which aborts the process on concurrent parallel regions unless
caproute serialises the calls (``caproute/kernels/numba/_jit.py``)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

numba = pytest.importorskip("numba")

pytestmark = pytest.mark.skipif(numba.config.DISABLE_JIT, reason="NUMBA_DISABLE_JIT is set")

ROOT = Path(__file__).resolve().parents[2]

# The work each thread does: parallel kernels called from Python (routing), a serial kernel
# that launches a parallel one inside (the k-means++ search of GaussianMixture's init), and
# fits whose every iteration calls a parallel kernel. Run by the tests below in this process
# and in a child process.
WORK = """
import concurrent.futures
import numpy as np
import caproute as cr
from caproute.cluster import DynamicRoutingClustering
from caproute.mixture import GaussianMixture

rng = np.random.default_rng(0)
U_HAT = rng.normal(size=(16, 24, 5, 8))
VOTES, A_IN = rng.normal(size=(8, 12, 4, 16)), rng.uniform(size=(8, 12))
X = rng.normal(size=(600, 3)) + np.repeat(np.eye(3) * 6, 200, axis=0)


def work(i):
    v = cr.dynamic_routing(U_HAT * (1 + i % 2), 3, backend="numba")
    pose, act = cr.em_routing(VOTES, A_IN, 0.0, 0.0, 3, backend="numba")
    gm = GaussianMixture(3, init_params="k-means++", random_state=i % 2, backend="numba").fit(X)
    dr = DynamicRoutingClustering(3, random_state=0, backend="numba").fit(X)
    return [v, pose, act, gm.means_, gm.covariances_, dr.cluster_centers_]


def run(n_threads=4, n_tasks=12):
    sequential = [work(i) for i in range(n_tasks)]
    with concurrent.futures.ThreadPoolExecutor(n_threads) as pool:
        concurrent_ = list(pool.map(work, range(n_tasks)))
    return all(
        all(np.array_equal(a, b) for a, b in zip(s, c, strict=True))
        for s, c in zip(sequential, concurrent_, strict=True)
    )
"""

CHILD = (
    WORK
    + """
import json
import numba
from numba.core.registry import CPUDispatcher
from caproute.kernels.numba import _jit
from caproute.kernels.numba.dynamic_routing import _dynamic_routing_batch

equal = run()
print(json.dumps(dict(
    equal=equal,
    layer=numba.threading_layer(),
    serialised=_jit.threading_layer_is_serialised(),
    guarded=type(_dynamic_routing_batch) is not CPUDispatcher,
)))
"""
)


def _child(**env_vars):
    env = dict(os.environ, **env_vars)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("NUMBA_DISABLE_JIT", None)
    res = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, f"the child process failed ({res.returncode}):\n{res.stderr}"
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_concurrent_calls_give_the_sequential_results():
    namespace = {}
    exec(compile(WORK, "<work>", "exec"), namespace)
    assert namespace["run"]()


def test_workqueue_serialises_concurrent_calls_instead_of_aborting():
    got = _child(NUMBA_THREADING_LAYER="workqueue")
    assert got == {"equal": True, "layer": "workqueue", "serialised": True, "guarded": True}


def test_a_thread_safe_layer_keeps_plain_kernels():
    # the layer Numba picks here by default (tbb, else omp, else workqueue)
    got = _child()
    if got["layer"] == "workqueue":
        pytest.skip("neither TBB nor an OpenMP runtime is installed: Numba falls back to workqueue")
    # after the first parallel call the kernels are Numba's own dispatchers again: no lock and
    # no Python-level wrapper on any later call
    assert got == {"equal": True, "layer": got["layer"], "serialised": False, "guarded": False}
    assert got["layer"] in ("tbb", "omp")
