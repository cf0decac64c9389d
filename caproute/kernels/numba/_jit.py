"""``njit_cached``: Numba's ``njit`` with an on-disk cache that every kernel here uses, so a
new process loads compiled kernels instead of compiling them again."""

from __future__ import annotations

import os

from numba import njit


def _package_stamp():
    """(name, mtime, size) of every module of this package."""
    here = os.path.dirname(os.path.abspath(__file__))
    entries = (e for e in os.scandir(here) if e.name.endswith(".py"))
    return tuple(sorted((e.name, e.stat().st_mtime, e.stat().st_size) for e in entries))


_PACKAGE_STAMP = _package_stamp()


def njit_cached(**options):
    """``numba.njit(cache=True, **options)``: every kernel here is compiled with it.

    The machine code goes to Numba's on-disk cache (``__pycache__`` next to the module where
    that is writable, else the user's cache directory; ``NUMBA_CACHE_DIR`` overrides both) and
    later processes load it instead of compiling again. A cache entry holds the code of the
    jitted functions the kernel calls, from other modules too, but Numba checks it against the
    kernel's own file only; so its stamp here covers every module of this package (an edit to
    any of them recompiles all kernels once). Where Numba has nowhere writable at all
    (read-only install and read-only home), ``cache=True`` raises at import; the kernel is then
    compiled in each process, as without the cache.
    """

    def decorate(func):
        try:
            dispatcher = njit(cache=True, **options)(func)
        except RuntimeError as exc:  # "cannot cache function ...: no locator available ..."
            if "cannot cache function" not in str(exc):
                raise
            return njit(**options)(func)
        cache_file = getattr(getattr(dispatcher, "_cache", None), "_cache_file", None)
        if cache_file is not None:  # Numba 0.68's IndexDataCacheFile (None under DISABLE_JIT)
            cache_file._source_stamp = (cache_file._source_stamp, _PACKAGE_STAMP)
        return dispatcher

    return decorate
