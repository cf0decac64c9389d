"""Shared fixtures: the ``xp`` namespaces every test runs over, and dtypes.

Helpers tests import (``as_xp``, ``requires_gpu``, tolerances, ``assert_close``) live in
``tests/_helpers.py``. ``SCIPY_ARRAY_API=1`` is set in the root ``conftest.py``, before doctest
collection of ``caproute`` can import SciPy.
"""

import os

import numpy as np
import pytest
from hypothesis import settings

from tests._helpers import _CUPY, _CUPY_REASON, device1_namespace

# The same examples on every run and machine (CI included): a failure is reproducible, not luck.
# HYPOTHESIS_PROFILE=explore draws fresh random examples instead.
settings.register_profile("default", derandomize=True, deadline=None)
settings.register_profile("explore", derandomize=False, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

XP_PARAMS = [
    pytest.param("numpy", id="numpy"),
    pytest.param("array_api_strict", id="array_api_strict"),
    # a non-default device: its arrays refuse conversion to NumPy and mixing with host arrays,
    # as CuPy's do, so every commit checks device discipline without a GPU
    pytest.param("array_api_strict_device1", id="array_api_strict_device1"),
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
    if name == "array_api_strict_device1":
        return device1_namespace()
    import cupy

    return cupy


@pytest.fixture(params=XP_PARAMS)
def xp(request):
    """The array library under test: numpy, array_api_strict on its default device and on
    "device1" (an :class:`tests._helpers.OnDevice` whose creation functions put arrays there),
    and cupy on a GPU machine."""
    return _namespace(request.param)


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    return request.param
