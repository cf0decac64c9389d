"""Shared fixtures: the ``xp`` namespaces every test runs over, dtypes and tolerances."""

import os

# scikit-learn's Array API estimator checks need SciPy's Array API mode, which SciPy reads once
# at import: set it before anything imports SciPy.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# The same examples on every run and machine (CI included): a failure is reproducible, not luck.
# HYPOTHESIS_PROFILE=explore draws fresh random examples instead.
settings.register_profile("default", derandomize=True, deadline=None)
settings.register_profile("explore", derandomize=False, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

from caproute._backend import cupy_status  # noqa: E402

_CUPY, _CUPY_REASON = cupy_status()

XP_PARAMS = [
    pytest.param("numpy", id="numpy"),
    pytest.param("array_api_strict", id="array_api_strict"),
    pytest.param(
        "cupy",
        id="cupy",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(_CUPY is None, reason=f"no usable CUDA device: {_CUPY_REASON}"),
        ],
    ),
]


def _namespace(name):
    if name == "numpy":
        return np
    if name == "array_api_strict":
        import array_api_strict

        return array_api_strict
    import cupy

    return cupy


@pytest.fixture(params=XP_PARAMS)
def xp(request):
    """The array library under test (numpy, array_api_strict, and cupy on a GPU machine)."""
    return _namespace(request.param)


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    return request.param


def rtol_for(dtype):
    """Relative tolerance for comparing a result of ``dtype`` with a float64 oracle."""
    return {"float32": 2e-5, "float64": 1e-11}[str(np.dtype(dtype))]


def atol_for(dtype):
    return {"float32": 1e-6, "float64": 1e-13}[str(np.dtype(dtype))]


def as_xp(a, xp, dtype=None):
    """A NumPy array as an array of ``xp`` (optionally cast to ``dtype``)."""
    a = np.asarray(a, dtype=dtype)
    return xp.asarray(a)


def requires_gpu():
    return pytest.mark.skipif(_CUPY is None, reason=f"no usable CUDA device: {_CUPY_REASON}")
