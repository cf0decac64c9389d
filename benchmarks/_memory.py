"""Peak resident-memory growth of one call, for the benchmarks (Linux /proc)."""

from __future__ import annotations

import ctypes


def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def peak_growth(fn):
    """Bytes by which the resident set's high-water mark rises above its level before
    ``fn()`` runs. Freed heap pages are returned to the system first (malloc_trim), so the
    call cannot hide its allocations in memory freed earlier."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark
        f.write("5")
    before = _status("VmRSS")
    fn()
    return _status("VmHWM") - before
