"""Numba kernels: NumPy in, NumPy out, contiguous arrays, no validation inside.

Numba's OpenMP threading layer keeps its worker threads spinning after every parallel region
unless told otherwise. caproute's kernels are called from Python loops (a fit step, a routing
call per batch) with Python work in between, and on a machine with few cores the spinning
workers take the core that work needs: measured on 2 cores, a 13-step clustering fit took
35-45 ms with the threads sleeping between regions and 100-120 ms in most fits with them
spinning. So the OpenMP wait policy defaults to passive here, unless the environment sets one
(``OMP_WAIT_POLICY``); it must be set before the threading layer starts, which is the first
parallel kernel call.

Threads: the kernels may be called from several Python threads at once. Numba picks the first
threading layer it can load, ``tbb``, then ``omp``, then ``workqueue`` (caproute keeps that
order and any ``NUMBA_THREADING_LAYER`` the user set). ``tbb`` and ``omp`` are thread-safe;
``workqueue`` aborts the process when two threads enter parallel regions at once, so under it
caproute runs its kernel calls one at a time (``_jit.GuardedDispatcher``). Once a parallel
kernel has run, ``numba.threading_layer()`` says which layer the process uses.

Compilations: ``compile_hooks`` (below) is how code that must not import Numba itself (the
command line) learns that a kernel is being compiled rather than loaded from the cache.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#: Functions called with a kernel's qualified name (``"caproute.kernels.numba.squash.
#: _squash_rows"``) when Numba starts compiling one of caproute's jitted functions in this
#: process -- never when it loads one from its on-disk cache. Append and remove freely: this
#: module imports no Numba; ``_jit`` (imported with the first kernel) relays Numba's
#: ``"numba:compile"`` events here. A hook runs in the compiling thread, under Numba's
#: compiler lock, so it must be quick and must not call jitted code.
compile_hooks = []
