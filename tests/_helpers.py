"""What tests import: arrays of a namespace, the GPU mark, and the one tolerance table.

Fixtures live in ``tests/conftest.py``; this module holds plain functions, so a test file
imports them with ``from tests._helpers import ...`` (never from a conftest).
"""

import os

import array_api_compat
import numpy as np
import pytest

import caproute as cr
from caproute._backend import cupy_status

_CUPY, _CUPY_REASON = cupy_status()

# The one tolerance table, keyed by (purpose, dtype name): how close a result must be to what it
# is compared with. ``scale`` (the size of the values compared) multiplies ``atol``.
#   "exact":   a float64 oracle vs the same algorithm (tests/routing, tests/models)
#   "kernel":  a kernel (numba, cupy) vs the pure Array API reference (tests/kernels)
#   "sklearn": caproute.mixture.GaussianMixture vs scikit-learn's; float64: agreement to the last
#              digits that EM's arithmetic leaves; float32: the level scikit-learn's own float32
#              tests accept (tests/mixture)
TOLERANCES = {
    ("exact", "float32"): dict(rtol=2e-5, atol=1e-6),
    ("exact", "float64"): dict(rtol=1e-11, atol=1e-13),
    ("kernel", "float32"): dict(rtol=3e-4, atol=3e-5),
    ("kernel", "float64"): dict(rtol=1e-9, atol=1e-11),
    ("sklearn", "float32"): dict(rtol=2e-3, atol=2e-4),
    ("sklearn", "float64"): dict(rtol=1e-7, atol=1e-10),
}


def _dtype_name(dtype):
    """ "float32" for "float32", np.float32, np.dtype("float32"), cupy's and array_api_strict's."""
    if isinstance(dtype, str):
        return np.dtype(dtype).name
    try:
        return np.dtype(dtype).name
    except TypeError:  # array_api_strict.float32 (and torch.float32) print as "<library>.float32"
        return np.dtype(str(dtype).rpartition(".")[2]).name


def tolerance(dtype, purpose="exact", scale=1.0):
    """``dict(rtol=..., atol=...)`` for comparing a result of ``dtype`` (see ``TOLERANCES``)."""
    key = (purpose, _dtype_name(dtype))
    if key not in TOLERANCES:
        raise KeyError(f"no tolerance for {key}; the table has {sorted(TOLERANCES)}")
    tol = TOLERANCES[key]
    return dict(rtol=tol["rtol"], atol=tol["atol"] * scale)


def rtol_for(dtype):
    """Relative tolerance for comparing a result of ``dtype`` with a float64 oracle."""
    return tolerance(dtype)["rtol"]


def atol_for(dtype):
    """Absolute tolerance for comparing a result of ``dtype`` with a float64 oracle."""
    return tolerance(dtype)["atol"]


#: The non-default array_api_strict device the ``xp`` fixture's "array_api_strict_device1" runs
#: on: its arrays refuse conversion to NumPy and mixing with host arrays, as CuPy's do.
DEVICE1_NAME = "device1"


class OnDevice:
    """The namespace ``xp`` whose array-creation functions default to ``device``.

    What the ``xp`` fixture gives for "array_api_strict_device1": test code creates its inputs
    with ``xp.asarray(...)``, ``xp.zeros(...)`` (or :func:`as_xp`) and gets them on ``device``;
    everything else (``xp.float32``, ``xp.log``, ``xp.__name__``) is ``xp``'s own. Functions
    under test never see this object: they infer the real namespace from their input.
    """

    _CREATION = frozenset(
        {"asarray", "zeros", "ones", "empty", "full", "arange", "linspace", "eye", "from_dlpack"}
    )

    def __init__(self, xp, device):
        self._xp = xp
        self.device = device

    def __getattr__(self, name):
        attr = getattr(self._xp, name)
        if name not in self._CREATION:
            return attr

        def create(*args, **kwargs):
            kwargs.setdefault("device", self.device)
            return attr(*args, **kwargs)

        return create

    def __repr__(self):
        return f"OnDevice({self._xp.__name__}, {self.device!r})"


def device1_namespace():
    """array_api_strict with arrays created on its non-default device "device1"."""
    import array_api_strict

    return OnDevice(array_api_strict, array_api_strict.Device(DEVICE1_NAME))


def as_xp(a, xp, dtype=None):
    """A NumPy array as an array of ``xp`` (optionally cast to ``dtype``), on the device that
    ``xp`` creates arrays on (see :class:`OnDevice`)."""
    a = np.asarray(a, dtype=dtype)
    return xp.asarray(a)


def device_of(xp):
    """The device the namespace ``xp`` (a module or an :class:`OnDevice`) creates arrays on."""
    return array_api_compat.device(xp.asarray(np.zeros(1)))


def requires_gpu():
    return pytest.mark.skipif(_CUPY is None, reason=f"no usable CUDA device: {_CUPY_REASON}")


_NAMESPACE_KINDS = {
    "numpy": array_api_compat.is_numpy_namespace,
    "array_api_strict": array_api_compat.is_array_api_strict_namespace,
    "cupy": array_api_compat.is_cupy_namespace,
    "torch": array_api_compat.is_torch_namespace,
    "dask": array_api_compat.is_dask_namespace,
    "jax": array_api_compat.is_jax_namespace,
}


def _namespace_name(xp):
    """The library a namespace stands for: numpy and array_api_compat.numpy are both "numpy"."""
    for name, is_kind in _NAMESPACE_KINDS.items():
        if is_kind(xp):
            return name
    return xp.__name__


def assert_close(
    actual, desired, *, xp=None, dtype=None, device=None, purpose="exact", scale=1.0, **overrides
):
    """Assert that ``actual`` is an array of namespace ``xp``, on ``device``, of ``dtype``, and
    within ``tolerance(dtype, purpose, scale)`` of ``desired``, checked in that order.

    ``xp``, ``dtype`` and ``device`` are checked when given; the tolerance's dtype is ``dtype``,
    else ``actual``'s. ``overrides`` (``rtol``, ``atol``, ``err_msg``, ``equal_nan``) go to
    ``np.testing.assert_allclose`` over the table's values. Values are compared in NumPy.
    """
    assert_placed(actual, xp=xp, device=device, dtype=dtype)
    tol = tolerance(actual.dtype if dtype is None else dtype, purpose=purpose, scale=scale)
    tol.update(overrides)
    np.testing.assert_allclose(cr.to_numpy(actual), cr.to_numpy(desired), **tol)


def assert_placed(actual, *, xp=None, device=None, dtype=None):
    """Assert that ``actual`` is an array of namespace ``xp``, on ``device``, of ``dtype`` (each
    checked when given, in that order): :func:`assert_close` without the values."""
    try:
        actual_xp = array_api_compat.array_namespace(actual)
    except TypeError as exc:
        raise AssertionError(
            f"actual is not an array of a known namespace: {type(actual)!r}"
        ) from exc
    if xp is not None and _namespace_name(actual_xp) != _namespace_name(xp):
        raise AssertionError(
            f"actual is an array of {_namespace_name(actual_xp)}, expected one of {_namespace_name(xp)}"
        )
    if device is not None:
        actual_device = array_api_compat.device(actual)
        if actual_device != device:
            raise AssertionError(f"actual is on device {actual_device!r}, expected {device!r}")
    if dtype is not None and _dtype_name(actual.dtype) != _dtype_name(dtype):
        raise AssertionError(f"actual has dtype {actual.dtype}, expected {_dtype_name(dtype)}")


def cuda_kernels_runnable():
    """Whether the numba-cuda kernels can run here: in the CUDA simulator (switched on by
    ``NUMBA_ENABLE_CUDASIM=1`` before numba.cuda is imported), or on a real GPU."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return True
    try:
        from numba import cuda
    except ImportError:
        return False
    try:
        return bool(cuda.is_available())
    except Exception:  # noqa: BLE001 -- a broken driver counts as no GPU
        return False


CUDA_KERNELS_REASON = (
    "no GPU and the CUDA simulator is off: run with NUMBA_ENABLE_CUDASIM=1 (.ci/run runs these "
    "in their own process) or on a GPU (benchmarks/gpu/run.sh)"
)
