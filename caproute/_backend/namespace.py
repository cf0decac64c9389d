"""Array namespaces and devices: the only module that knows which array library is which.

Everything here wraps ``array_api_compat``; CuPy is imported only when a CuPy array is in hand
or when the user asks for the ``"cupy"`` backend, so ``import caproute`` never loads it.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, TypeAlias

import array_api_compat
import numpy as np

from .emulation import emulated_device, emulated_namespace, emulating

__all__ = [
    "check_plain_array",
    "linalg_errors",
    "Array",
    "array_namespace",
    "device",
    "is_array",
    "is_numpy_namespace",
    "is_cupy_namespace",
    "numpy_namespace",
    "cupy_namespace",
    "to_device",
    "to_numpy",
    "overflow_quiet",
    "plain_array_problem",
]


#: An array of any Array API library (NumPy, CuPy, array_api_strict, ...), for type hints.
Array: TypeAlias = Any


class BackendUnavailableError(RuntimeError):
    """A backend was asked for explicitly but cannot run here (the message names the cause)."""


def is_array(x):
    """True for an array object of any library that implements the Array API."""
    return array_api_compat.is_array_api_obj(x)


def plain_array_problem(x, name):
    """Why ``x`` cannot stand for a plain array of its library, or None when it can.

    Two NumPy subclasses pass as NumPy arrays but do not mean what their values say: a masked
    array (every Array API function sees the data under the mask and ignores the mask) and
    ``numpy.matrix`` (always 2-D; ``*`` and indexing differ). The answer is a sentence naming
    the cure, with ``name`` as the argument's name, e.g. "got numpy.matrix; use np.asarray(X)".
    """
    if isinstance(x, np.ma.MaskedArray):
        return (
            "got a numpy.ma.MaskedArray (its mask would be ignored). Fill the masked entries "
            f"(e.g. {name}.filled(0.0)) or remove them first"
        )
    if isinstance(x, np.matrix):
        return f"got numpy.matrix; use np.asarray({name})"
    return None


def overflow_quiet(x):
    """A context manager that hides NumPy's overflow/invalid warnings of reductions over ``x``.

    ``np.errstate`` is per thread (thread-local state; a context variable since NumPy 2),
    unlike ``warnings.catch_warnings``, which swaps the process-wide filters. Arrays that NumPy
    computes -- NumPy's own and array_api_strict's, which wraps NumPy -- get it; other
    libraries (CuPy, torch) never warn, so they get a no-op context.
    """
    if array_api_compat.is_numpy_array(x) or (
        is_array(x) and array_api_compat.is_array_api_strict_namespace(array_namespace(x))
    ):
        return np.errstate(over="ignore", invalid="ignore")
    return contextlib.nullcontext()


def array_namespace(*arrays):
    """The Array API namespace shared by ``arrays`` (None entries and Python scalars ignored)."""
    arrays = [a for a in arrays if a is not None and is_array(a)]
    return array_api_compat.array_namespace(*arrays)


def device(x):
    """The device ``x`` lives on."""
    return array_api_compat.device(x)


def numpy_namespace():
    """The Array API-compatible NumPy namespace."""
    return array_api_compat.array_namespace(np.empty(0))


def is_numpy_namespace(xp):
    return array_api_compat.is_numpy_namespace(xp)


def is_cupy_namespace(xp):
    """True for the device namespace: CuPy's, and array_api_strict's while a GPU is emulated
    (:func:`caproute.testing.emulated_gpu`)."""
    if array_api_compat.is_cupy_namespace(xp):
        return True
    return emulating() and array_api_compat.is_array_api_strict_namespace(xp)


def cupy_status():
    """Return ``(cupy_module, None)`` when CuPy can run here, else ``(None, reason)``.

    ``reason`` is a sentence naming the cause: CuPy not installed, no CUDA device, or a driver
    that is too old for the CUDA runtime CuPy was built against. While a GPU is emulated
    (:func:`caproute.testing.emulated_gpu`) the answer is ``(array_api_strict, None)``: the
    library that plays CuPy.
    """
    if emulating():
        return emulated_namespace(), None
    try:
        import cupy
    except ImportError as exc:
        return None, (
            "CuPy is not installed (install the CUDA extra: pip install 'caproute[cuda12]'); "
            f"import failed with: {exc}"
        )
    try:
        n_devices = cupy.cuda.runtime.getDeviceCount()
    # CUDARuntimeError has no stable import path across CuPy versions, hence the broad catches
    except Exception as exc:  # noqa: BLE001
        return None, f"CuPy is installed but no CUDA device is usable: {exc}"
    if n_devices < 1:
        return None, "CuPy is installed but no CUDA device was found."
    try:
        driver = cupy.cuda.runtime.driverGetVersion()
        runtime = cupy.cuda.runtime.runtimeGetVersion()
    except Exception as exc:  # noqa: BLE001
        return None, f"CuPy is installed but the CUDA driver cannot be queried: {exc}"
    # CUDA minor-version compatibility: a 12.x runtime runs on any 12.y driver (y < x
    # included), so only an older major version means the driver cannot run it
    if driver // 1000 < runtime // 1000:
        return None, (
            f"the CUDA driver (version {driver}) is older than the CUDA runtime CuPy uses "
            f"({runtime}): a driver for CUDA {runtime // 1000} or newer is needed; update the "
            "NVIDIA driver or install a CuPy built for an older CUDA."
        )
    return cupy, None


def cupy_namespace():
    """The Array API-compatible CuPy namespace, or BackendUnavailableError naming the cause.

    While a GPU is emulated (:func:`caproute.testing.emulated_gpu`) it is array_api_strict,
    whose arrays :func:`to_device` puts on the emulated device.
    """
    if emulating():
        return emulated_namespace()
    cupy, reason = cupy_status()
    if cupy is None:
        raise BackendUnavailableError(f"backend='cupy' cannot run: {reason}")
    return array_api_compat.array_namespace(cupy.empty(0))


def to_device(x, xp, device=None):
    """Move array ``x`` into namespace ``xp`` explicitly: the one function that moves data
    between host and device (``to_numpy`` and every ``backend="cupy"`` transfer call it).

    ``device`` is where the result lives in ``xp`` (None: the namespace's device for the
    transfer: CuPy's current device, the emulated GPU while one is active, else the
    default device); an array already there comes back as it is. Moving to NumPy copies from
    the device explicitly (``cupy.ndarray.get``, ``to_device`` of array_api_strict's CPU
    device): never through an implicit ``__array__``.
    """
    if is_numpy_namespace(xp):
        return _to_host(x)
    if array_api_compat.is_array_api_strict_namespace(xp):
        if device is None and emulating():
            device = emulated_device()
        return _to_strict(x, xp, device)
    if array_api_compat.is_cupy_namespace(xp):
        import cupy

        if device is None:
            return cupy.asarray(_to_host(x) if _is_strict_array(x) else x)
        with device:
            return cupy.asarray(_to_host(x) if _is_strict_array(x) else x)
    return xp.asarray(x) if device is None else xp.asarray(x, device=device)


def _is_strict_array(x):
    return is_array(x) and array_api_compat.is_array_api_strict_namespace(array_namespace(x))


def _to_host(x):
    """``x`` as a NumPy array, copied from its device explicitly."""
    if isinstance(x, np.ndarray):
        return x
    if "cupy" in sys.modules and array_api_compat.is_cupy_array(x):
        return x.get()
    if _is_strict_array(x):
        host = array_namespace(x).__array_namespace_info__().default_device()
        if x.device != host:
            x = x.to_device(host)
        return np.from_dlpack(x)
    if is_array(x):
        return np.from_dlpack(x) if hasattr(x, "__dlpack__") else np.asarray(x)
    return np.asarray(x)


def _to_strict(x, xp, device):
    """``x`` as an array_api_strict array on ``device`` (None: the default device)."""
    if _is_strict_array(x):
        if device is None or x.device == device:
            return x
        return x.to_device(device)
    host = _to_host(x)
    return xp.asarray(host) if device is None else xp.asarray(host, device=device)


def to_numpy(x: Array) -> np.ndarray:
    """Return ``x`` as a NumPy array, copying from the GPU if it lives there.

    Parameters
    ----------
    x : array of any Array API library, or array-like
        A NumPy, CuPy or array_api_strict array, a Python scalar or a (nested) sequence.

    Returns
    -------
    out : numpy.ndarray
        The same values on the host (no copy for a NumPy array).

    Examples
    --------
    >>> import numpy as np
    >>> import caproute as cr
    >>> cr.to_numpy(np.arange(3.0))
    array([0., 1., 2.])
    """
    return to_device(x, numpy_namespace())


def check_plain_array(x, *, name):
    """Refuse array subclasses whose values do not say what they mean (a masked array, whose
    mask every computation would ignore; ``numpy.matrix``); return ``x``."""
    problem = plain_array_problem(x, name)
    if problem is not None:
        raise TypeError(f"`{name}` must be a plain array; {problem}.")
    return x


def linalg_errors():
    """The exception types the loaded array libraries raise for a failed factorisation (a
    matrix that is not positive definite, a singular one)."""
    errors = [np.linalg.LinAlgError]
    if "cupy" in sys.modules:
        import cupy

        errors.append(cupy.linalg.LinAlgError)
    return tuple(errors)
