"""Helpers for testing code that uses caproute, in caproute's CI and in yours.

:func:`emulated_gpu` runs ``backend="cupy"`` (and ``"auto"`` on device input) the way a GPU
machine does, on a machine without one: what a test on it checks -- that host input is moved
explicitly, that results stay on the device, that nothing converts device arrays to NumPy behind
your back -- holds on a GPU too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ._backend.emulation import emulated_device, emulation

__all__ = ["emulated_gpu"]


@contextmanager
def emulated_gpu() -> Iterator[Any]:
    """Context manager under which caproute behaves as on a GPU machine, without a GPU.

    The device namespace that CuPy would be is played by ``array_api_strict`` on its
    non-default device ``"device1"``, whose arrays refuse conversion to NumPy and mixing with
    host arrays, as CuPy's do. Inside the block:

    - ``backend="cupy"`` (per call, per estimator or through :func:`caproute.set_config`) moves
      host input (NumPy arrays, array-likes) to the emulated device explicitly, selects the
      plan a GPU would run, and returns array_api_strict arrays on that device; estimators keep
      their fitted attributes there. :func:`caproute.to_numpy` brings them back.
    - ``backend="auto"`` with input on the emulated device runs there and stays there;
      ``"numpy"`` and ``"numba"`` refuse it, as they refuse CuPy input.
    - An operation with a ``"cupy"`` kernel (numba-cuda) runs that kernel in numba-cuda's CUDA
      simulator when the simulator is on (``NUMBA_ENABLE_CUDASIM=1`` in the environment before
      Numba is imported): its device arguments are copied to the host explicitly, the kernel
      runs on NumPy arrays, and its results are copied back to the device. With the simulator
      off no kernel can run without a GPU, so the operation's reference implementation runs
      on the emulated device instead (the plan's ``impl`` is then ``"reference"``).
    - Every array_api_strict array counts as a device array (to pass host input, pass NumPy).

    The emulation holds in the thread (or asyncio task) that entered it, like
    :func:`caproute.config_context`, until the block exits, even by an exception.

    Yields
    ------
    device : array_api_strict.Device
        The emulated GPU, for creating input there:
        ``array_api_strict.asarray(x, device=device)``.

    Raises
    ------
    ImportError
        If array-api-strict is not installed (``pip install array-api-strict``).

    Examples
    --------
    >>> import numpy as np
    >>> import caproute as cr
    >>> from caproute.testing import emulated_gpu
    >>> u_hat = np.random.default_rng(0).normal(size=(2, 6, 3, 4))
    >>> with emulated_gpu() as device:
    ...     v = cr.dynamic_routing(u_hat, backend="cupy")
    >>> v.device == device
    True
    >>> bool(np.allclose(cr.to_numpy(v), cr.dynamic_routing(u_hat, backend="numpy")))
    True
    """
    with emulation():
        yield emulated_device()
