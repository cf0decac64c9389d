"""Every Numba kernel is compiled with ``cache=True``, and a fresh process loads it from disk.

Without the on-disk cache every new process compiles every kernel it touches (seconds per
public operation); with it only the first process on a machine does.
"""

import importlib
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

numba = pytest.importorskip("numba")

from numba.core.caching import FunctionCache  # noqa: E402
from numba.core.dispatcher import Dispatcher  # noqa: E402

pytestmark = pytest.mark.skipif(numba.config.DISABLE_JIT, reason="NUMBA_DISABLE_JIT is set")

ROOT = Path(__file__).resolve().parents[2]


def _kernel_modules():
    import caproute.kernels.numba as package

    return [
        importlib.import_module(f"{package.__name__}.{info.name}")
        for info in pkgutil.iter_modules(package.__path__)
    ]


def _dispatchers():
    """``{"module.name": dispatcher}`` for every jitted function defined at module level in
    caproute/kernels/numba (imported ones are counted where they are defined)."""
    found = {}
    for module in _kernel_modules():
        for name, obj in vars(module).items():
            if isinstance(obj, Dispatcher) and obj.py_func.__module__ == module.__name__:
                found[f"{module.__name__.rsplit('.', 1)[1]}.{name}"] = obj
    return found


def test_every_numba_kernel_caches_on_disk():
    dispatchers = _dispatchers()
    # the discovery itself works: a few kernels it must see
    assert {"squash._squash_rows", "vector_exp.exp_nonpositive", "gmm_estep._full"} <= set(
        dispatchers
    )
    # cache=True swaps the dispatcher's NullCache for a FunctionCache (Numba 0.68:
    # Dispatcher.enable_caching); there is no public flag that says so
    uncached = sorted(n for n, d in dispatchers.items() if not isinstance(d._cache, FunctionCache))
    assert not uncached, f"Numba kernels without cache=True (use njit_cached): {uncached}"
    # njit_cached's stamp covers the whole package: a cached kernel holds its callees' code
    # (from other modules too) and must be recompiled when any of them changes
    from caproute.kernels.numba._jit import _PACKAGE_STAMP

    unstamped = sorted(
        n for n, d in dispatchers.items() if d._cache._cache_file._source_stamp[1] != _PACKAGE_STAMP
    )
    assert not unstamped, f"Numba kernels not decorated with njit_cached: {unstamped}"


def test_njit_cached_compiles_without_cache_where_nothing_is_writable(monkeypatch):
    from numba.core.caching import CacheImpl, NullCache

    from caproute.kernels.numba._jit import njit_cached

    # no locator accepts the file: what Numba finds for a read-only install and a read-only home
    monkeypatch.setattr(numba.config, "CACHE_LOCATOR_CLASSES", "", raising=False)
    monkeypatch.setattr(CacheImpl, "_locator_classes", [])

    def twice(x):
        return 2 * x

    with pytest.raises(RuntimeError, match="cannot cache function"):
        numba.njit(cache=True)(twice)
    kernel = njit_cached()(twice)
    assert isinstance(kernel._cache, NullCache)
    assert kernel(21) == 42


CHILD = """
import json, numpy as np, caproute
from caproute.kernels.numba.squash import _squash_rows
out = caproute.squash(np.array([[3.0, 4.0], [0.0, 0.0]]), backend="numba")
stats = _squash_rows.stats
print(json.dumps(dict(hits=sum(stats.cache_hits.values()),
                      misses=sum(stats.cache_misses.values()),
                      cache_path=stats.cache_path, out=out.tolist())))
"""


def _fresh_process(cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("NUMBA_DISABLE_JIT", None)
    res = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_second_process_loads_squash_from_the_cache(tmp_path):
    first = _fresh_process(tmp_path)
    assert (first["hits"], first["misses"]) == (0, 1)  # compiled, then written to tmp_path
    assert Path(first["cache_path"]).is_relative_to(tmp_path)
    assert list(tmp_path.rglob("squash._squash_rows-*.nbi"))
    second = _fresh_process(tmp_path)
    assert (second["hits"], second["misses"]) == (1, 0)  # loaded, not compiled
    assert second["out"] == first["out"]
    assert first["out"][0] == pytest.approx([0.6 * 25 / 26, 0.8 * 25 / 26])
