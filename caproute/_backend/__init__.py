"""The only package that branches on the array library (NumPy, CuPy, array_api_strict, ...)."""

from .dispatch import CAPABILITIES, Plan, adopt, capabilities, numba_available, resolve_backend, select_impl
from .namespace import (
    Array,
    BackendUnavailableError,
    array_namespace,
    cupy_namespace,
    cupy_status,
    device,
    is_array,
    is_cupy_namespace,
    is_numpy_namespace,
    numpy_namespace,
    overflow_quiet,
    plain_array_problem,
    to_device,
    to_numpy,
)

__all__ = [
    "Array",
    "CAPABILITIES",
    "BackendUnavailableError",
    "Plan",
    "adopt",
    "array_namespace",
    "capabilities",
    "cupy_namespace",
    "cupy_status",
    "device",
    "is_array",
    "is_cupy_namespace",
    "is_numpy_namespace",
    "numba_available",
    "numpy_namespace",
    "overflow_quiet",
    "plain_array_problem",
    "resolve_backend",
    "select_impl",
    "to_device",
    "to_numpy",
]
