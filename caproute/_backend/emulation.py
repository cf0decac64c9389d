"""The emulated GPU: ``backend="cupy"`` without a GPU, for tests and for users' CI.

While :func:`emulation` is active (``caproute.testing.emulated_gpu()`` is its public face), the
device namespace that ``backend="cupy"`` and ``"auto"`` run in is ``array_api_strict`` on its
non-default device ``"device1"``, whose arrays refuse conversion to NumPy and mixing with host
arrays the way CuPy's do. ``namespace.py`` (``cupy_status``, ``cupy_namespace``,
``is_cupy_namespace``, ``to_device``) and ``dispatch.py`` (plans of ``"cupy"`` kernels) read the
switch; nothing else does.

The switch is a :class:`contextvars.ContextVar`: it holds in the thread (or asyncio task) that
entered it, like :func:`caproute.config_context`.
"""

from __future__ import annotations

import contextvars
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "EMULATED_DEVICE_NAME",
    "cuda_simulator_enabled",
    "emulated_device",
    "emulated_namespace",
    "emulating",
    "emulation",
]

#: The array_api_strict device that plays the GPU.
EMULATED_DEVICE_NAME = "device1"

_emulating: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "caproute_emulated_gpu", default=False
)


def emulating() -> bool:
    """Whether an emulated GPU is active in this thread or task."""
    return _emulating.get()


@contextmanager
def emulation() -> Iterator[None]:
    """Activate the emulated GPU until the block exits (nested blocks are fine)."""
    emulated_namespace()  # array_api_strict is needed: fail at entry, not at the first call
    token = _emulating.set(True)
    try:
        yield
    finally:
        _emulating.reset(token)


def emulated_namespace():
    """The namespace that plays CuPy: array_api_strict (ImportError naming the cure)."""
    try:
        import array_api_strict
    except ImportError as exc:
        raise ImportError(
            "the emulated GPU needs array-api-strict: pip install array-api-strict "
            f"(import failed with: {exc})"
        ) from None
    return array_api_strict


def emulated_device():
    """The array_api_strict device that plays the GPU."""
    return emulated_namespace().Device(EMULATED_DEVICE_NAME)


def cuda_simulator_enabled() -> bool:
    """Whether numba-cuda runs in its CUDA simulator in this process.

    The simulator is chosen when Numba reads its configuration at import
    (``NUMBA_ENABLE_CUDASIM=1``); when Numba is loaded its configuration says, else the
    environment variable does (this does not import Numba).
    """
    config = sys.modules.get("numba.core.config")
    if config is not None:
        return bool(getattr(config, "ENABLE_CUDASIM", False))
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"
