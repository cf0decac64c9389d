"""``njit_cached``: Numba's ``njit`` with an on-disk cache that every kernel here uses, so a
new process loads compiled kernels instead of compiling them again; and the guard that keeps
concurrent calls safe under Numba's ``workqueue`` threading layer.

**Threads.** Numba runs ``parallel=True`` kernels on the first threading layer it can load, in
the order ``tbb``, ``omp``, ``workqueue`` (``NUMBA_THREADING_LAYER`` and
``NUMBA_THREADING_LAYER_PRIORITY`` change that; caproute leaves them as the user set them).
``tbb`` and ``omp`` accept parallel regions launched from several Python threads at once;
``workqueue``, the fallback where neither TBB nor an OpenMP runtime is installed, aborts the
whole process ("Concurrent access has been detected"). So every kernel compiled here starts
as a :class:`GuardedDispatcher`, whose calls from Python take a process-wide lock until Numba
has started its threading layer (the first parallel region). Then, under ``tbb`` or ``omp``,
the kernels become plain Numba dispatchers again (no cost at all from there on); under
``workqueue`` they keep the lock, so concurrent kernel calls run one after another, each still
parallel inside.

**Compilations.** With a warm cache a new process compiles nothing: each kernel's first call
loads its machine code (a few ms; the fixed cost of that first call is Numba's own import and
its target context, about 0.25 s on the 2-core machine, see benchmarks/bench_first_call.py).
When Numba does compile one of caproute's functions (a first run, a new dtype, an edited
package), it announces it through its event API (``"numba:compile"``, sent for compilations
only, never for cache loads); this module relays that to the functions in
``caproute.kernels.numba.compile_hooks``, which the command line uses for its "first run"
notice without importing Numba itself.
"""

from __future__ import annotations

import os
import threading

import numba
from numba import njit
from numba.core import event
from numba.core.registry import CPUDispatcher

from . import compile_hooks


def _package_stamp():
    """(name, mtime, size) of every module of this package."""
    here = os.path.dirname(os.path.abspath(__file__))
    entries = (e for e in os.scandir(here) if e.name.endswith(".py"))
    return tuple(sorted((e.name, e.stat().st_mtime, e.stat().st_size) for e in entries))


_PACKAGE_STAMP = _package_stamp()


# -- compilations -----------------------------------------------------------------------------
class _CompileRelay(event.Listener):
    """Calls every hook in ``compile_hooks`` with the qualified name of a caproute function
    that Numba starts compiling (``"numba:compile"`` is not sent for cache loads)."""

    def on_start(self, ev):
        func = getattr((ev.data or {}).get("dispatcher"), "py_func", None)
        module = getattr(func, "__module__", None) or ""
        if compile_hooks and module.startswith("caproute."):
            name = f"{module}.{func.__qualname__}"
            for hook in tuple(compile_hooks):
                hook(name)

    def on_end(self, ev):
        pass


event.register("numba:compile", _CompileRelay())

# -- concurrent calls --------------------------------------------------------------------------
_LOCK = threading.RLock()
# None until Numba's threading layer has started (the first parallel region of the process),
# then whether it is one that must not be entered from two threads at once
_serialise = None
_call = CPUDispatcher.__call__
_GUARDED = []  # the kernels still guarded while the threading layer is unknown


def threading_layer_is_serialised():
    """Whether caproute serialises its kernel calls: True under ``workqueue``, False under
    ``tbb`` and ``omp``, None while Numba has not started its threading layer (calls are then
    serialised, to be safe, until it has)."""
    return _serialise


def _settle():
    """Read the threading layer once Numba has started it (``numba.threading_layer()``)."""
    global _serialise
    try:
        layer = numba.threading_layer()
    except ValueError:  # "Threading layer is not initialized": no parallel region ran yet
        return
    _serialise = layer == "workqueue"
    if not _serialise:  # a thread-safe layer: the kernels need no guard from now on
        for dispatcher in _GUARDED:
            dispatcher.__class__ = CPUDispatcher
    _GUARDED.clear()


class GuardedDispatcher(CPUDispatcher):
    """Numba's CPU dispatcher, whose calls from Python hold a process-wide lock where the
    threading layer is not thread-safe (``workqueue``) or not yet known. Calls between jitted
    functions do not pass through here; every parallel region starts from a Python call to
    some kernel, which is enough."""

    def __call__(self, *args, **kwargs):
        if _serialise is False:
            return _call(self, *args, **kwargs)
        with _LOCK:
            try:
                return _call(self, *args, **kwargs)
            finally:
                if _serialise is None:
                    _settle()


def _guard(dispatcher):
    # a class swap, not a wrapper: the kernel stays a Dispatcher (its cache, its stats, calls
    # from other jitted functions), only its Python-level call changes
    # (no lock here: a module imported while _settle runs may keep the guard, whose check
    # then costs one comparison per call; taking the lock at import could wait on a kernel)
    if type(dispatcher) is CPUDispatcher and _serialise is not False:
        dispatcher.__class__ = GuardedDispatcher
        _GUARDED.append(dispatcher)
    return dispatcher


def njit_cached(**options):
    """``numba.njit(cache=True, **options)``: every kernel here is compiled with it.

    The machine code goes to Numba's on-disk cache (``__pycache__`` next to the module where
    that is writable, else the user's cache directory; ``NUMBA_CACHE_DIR`` overrides both) and
    later processes load it instead of compiling again. A cache entry holds the code of the
    jitted functions the kernel calls, from other modules too, but Numba checks it against the
    kernel's own file only; so its stamp here covers every module of this package (an edit to
    any of them recompiles all kernels once). Where Numba has nowhere writable at all
    (read-only install and read-only home), ``cache=True`` raises at import; the kernel is then
    compiled in each process, as without the cache. The kernel is guarded against concurrent
    calls where the threading layer needs it (see the module's docstring on threads).
    """

    def decorate(func):
        try:
            dispatcher = njit(cache=True, **options)(func)
        except RuntimeError as exc:  # "cannot cache function ...: no locator available ..."
            if "cannot cache function" not in str(exc):
                raise
            return _guard(njit(**options)(func))
        cache_file = getattr(getattr(dispatcher, "_cache", None), "_cache_file", None)
        if cache_file is not None:  # Numba 0.68's IndexDataCacheFile (None under DISABLE_JIT)
            cache_file._source_stamp = (cache_file._source_stamp, _PACKAGE_STAMP)
        return _guard(dispatcher)

    return decorate
