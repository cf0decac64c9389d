"""First-call time of each public operation in a fresh process: cold and warm Numba cache.

The Numba kernels are compiled with ``cache=True``: the first process that calls one compiles
it and writes the machine code to Numba's cache, later processes load it. This measures, per
operation, the wall time of its FIRST call in a fresh Python process (inputs small, so the
time is compilation or cache loading, not compute):

- cold: ``NUMBA_CACHE_DIR`` is a new empty directory (Numba then reads and writes only there,
  so the repository's own ``__pycache__`` caches are not used);
- warm: a second fresh process with the same ``NUMBA_CACHE_DIR``, filled by the cold one.

Apart from the call: ``import caproute`` (NumPy included) and the import of the module the
operation lives in on top of it (``caproute.mixture`` and ``caproute.cluster`` import
scikit-learn); "warm total" is that import plus the warm first call, what a script pays after
``import caproute``. Input preparation (and loading the shipped model's weights) is not timed.
Compilations are counted with ``caproute.kernels.numba.compile_hooks`` (Numba's compile event,
never sent for a cache load): a warm run must show none. The last lines split one warm first
call (``squash``) into Numba's import, Numba's target context (its registries, with the BLAS
check that imports SciPy) and the rest (loading the cached code, running it).

Every number is the median of --repeat pairs of runs, each pair with its own new cache
directory. Not a test: run it by hand.

    python benchmarks/bench_first_call.py
    python benchmarks/bench_first_call.py --repeat 1 --only squash em_routing
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

# name -> (imports, timed from the process start with `import caproute`; untimed setup; the
# timed first call). Inputs are NumPy arrays, so backend="auto" runs the Numba kernels.
OPERATIONS = {
    "caproute.squash": (
        "",
        "s = rng.standard_normal((4, 10, 8))",
        "caproute.squash(s)",
    ),
    "caproute.dynamic_routing": (
        "",
        "u_hat = rng.standard_normal((4, 32, 10, 16)).astype(np.float32)",
        "caproute.dynamic_routing(u_hat)",
    ),
    "caproute.dense_dynamic_routing": (
        "",
        "u = rng.standard_normal((4, 32, 8)).astype(np.float32)\n"
        "W = rng.standard_normal((32, 10, 16, 8)).astype(np.float32)",
        "caproute.dense_dynamic_routing(u, W)",
    ),
    "caproute.em_routing": (
        "",
        "votes = rng.standard_normal((4, 32, 10, 16)).astype(np.float32)\n"
        "a_in = rng.random((4, 32)).astype(np.float32)",
        "caproute.em_routing(votes, a_in, 0.0, 0.0)",
    ),
    "GaussianMixture(covariance_type='full').fit": (
        "from caproute.mixture import GaussianMixture",
        "X = rng.standard_normal((300, 3))",
        "GaussianMixture(3, covariance_type='full', random_state=0).fit(X)",
    ),
    "GaussianMixture(covariance_type='full').predict": (
        "from caproute.mixture import GaussianMixture",
        "X = rng.standard_normal((300, 3))\n"
        "gm = GaussianMixture(3, covariance_type='full', random_state=0, backend='numpy').fit(X)\n"
        "gm.set_params(backend=None)",
        "gm.predict(X)",
    ),
    "GaussianMixture(covariance_type='diag').fit": (
        "from caproute.mixture import GaussianMixture",
        "X = rng.standard_normal((300, 3))",
        "GaussianMixture(3, covariance_type='diag', random_state=0).fit(X)",
    ),
    "DynamicRoutingClustering().fit": (
        "from caproute.cluster import DynamicRoutingClustering",
        "X = rng.standard_normal((300, 3))",
        "DynamicRoutingClustering(3, random_state=0).fit(X)",
    ),
    "EMRoutingClustering().fit": (
        "from caproute.cluster import EMRoutingClustering",
        "X = rng.standard_normal((300, 3))",
        "EMRoutingClustering(3, random_state=0).fit(X)",
    ),
    "models.capsnet(small).predict": (
        "from caproute import models",
        "net = models.capsnet(input_shape=(16, 16, 1), conv_channels=8, conv_kernel=5,\n"
        "    primary_types=4, primary_dim=4, primary_kernel=5, primary_stride=2, n_classes=3,\n"
        "    class_dim=4).initialize(0)\n"
        "images = rng.random((10, 16, 16)).astype(np.float32)",
        "net.predict(images)",
    ),
    "load_pretrained('capsnet-fashion-mnist').predict": (
        "from caproute import models",
        "from caproute.datasets import load_fashion_mnist_subset\n"
        "net = models.load_pretrained('capsnet-fashion-mnist')\n"
        "images = load_fashion_mnist_subset()[0][:10]",
        "net.predict(images)",
    ),
}

CHILD = """\
import time
t0 = time.perf_counter()
import caproute
t1 = time.perf_counter()
{imports}
t2 = time.perf_counter()
import json
import numpy as np
from caproute.kernels.numba import compile_hooks
rng = np.random.default_rng(0)
{setup}
compiled = []
compile_hooks.append(compiled.append)
t3 = time.perf_counter()
{call}
t4 = time.perf_counter()
print(json.dumps(dict(import_s=t1 - t0, module_s=t2 - t1, call_s=t4 - t3,
                      compiled=len(compiled))))
"""

# one warm first call taken apart (run after the cold and warm squash pair, same cache)
SPLIT = """\
import time, json
import numpy as np
import caproute
x = np.random.default_rng(0).standard_normal((4, 10, 8))
t0 = time.perf_counter()
import numba
t1 = time.perf_counter()
from numba.core.registry import cpu_target
cpu_target.target_context.refresh()
t2 = time.perf_counter()
caproute.squash(x)
t3 = time.perf_counter()
print(json.dumps(dict(numba_s=t1 - t0, context_s=t2 - t1, rest_s=t3 - t2)))
"""


def run_child(code, cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"child failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def op_code(op):
    imports, setup, call = OPERATIONS[op]
    return CHILD.format(imports=imports, setup=setup, call=call)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="cold/warm pairs per operation")
    parser.add_argument("--only", nargs="+", metavar="OP", help="operations whose name has OP")
    args = parser.parse_args()
    ops = [o for o in OPERATIONS if not args.only or any(s in o for s in args.only)]

    import numba

    print(
        f"Python {platform.python_version()}, Numba {numba.__version__}, "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', 'default')}; "
        f"median of {args.repeat}",
        file=sys.stderr,
    )
    rows, split, warm_compiled = [], [], {}
    for op in ops:
        cold, warm = [], []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix="caproute-numba-cache-") as cache_dir:
                cold.append(run_child(op_code(op), cache_dir))
                warm.append(run_child(op_code(op), cache_dir))
                if op == "caproute.squash":
                    split.append(run_child(SPLIT, cache_dir))
        med = lambda runs, key: statistics.median(r[key] for r in runs)  # noqa: E731
        both = cold + warm
        total = statistics.median(r["module_s"] + r["call_s"] for r in warm)
        rows.append(
            (
                op,
                med(both, "import_s"),
                med(both, "module_s"),
                med(cold, "call_s"),
                med(warm, "call_s"),
                total,
                med(cold, "compiled"),
            )
        )
        warm_compiled[op] = max(r["compiled"] for r in warm)
        print(f"  {op}: cold {rows[-1][3]:.2f} s, warm {rows[-1][4]:.2f} s", file=sys.stderr)

    print(
        "| operation | import caproute (s) | + its module (s) | cold first call (s) "
        "| warm first call (s) | warm total (s) | compiled (cold) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for op, imp, mod, c, w, t, n in rows:
        print(f"| `{op}` | {imp:.2f} | {mod:.2f} | {c:.2f} | {w:.2f} | {t:.2f} | {n:.0f} |")
    compiled = {op: n for op, n in warm_compiled.items() if n}
    print()
    print(
        "Warm runs compiled nothing (every kernel loaded from the cache)."
        if not compiled
        else f"Warm runs still compiled kernels: {compiled}"
    )
    if split:
        parts = {k: statistics.median(r[k] for r in split) for k in split[0]}
        print(
            f"A warm first call (squash), taken apart: import numba {parts['numba_s']:.2f} s, "
            f"Numba's target context {parts['context_s']:.2f} s, loading the cached kernel "
            f"and running it {parts['rest_s']:.2f} s."
        )


if __name__ == "__main__":
    main()
