"""Root conftest: what must hold before anything is collected, tests and doctests alike.

pytest runs ``tests/`` and the docstring examples of ``caproute/`` (``--doctest-modules``, see
``[tool.pytest.ini_options]`` in pyproject.toml); fixtures for the tests are in
``tests/conftest.py``.
"""

import importlib
import os
from pathlib import Path

import pytest

# scikit-learn's Array API estimator checks need SciPy's Array API mode, which SciPy reads once
# at import: set it before anything imports SciPy (doctest collection of caproute may be first).
os.environ.setdefault("SCIPY_ARRAY_API", "1")

ROOT = Path(__file__).resolve().parent

# Packages (every module under them) or modules that import an optional package when imported.
# Where that package is missing, their collection is skipped with the reason instead of erroring.
OPTIONAL_DEPENDENCIES = {
    "caproute/kernels/numba": "numba",
    "caproute/kernels/cupy": "cupy",
    "caproute/kernels/cuda": "numba.cuda",
    # its example classifies a Dask array (the optional dask extra; the test extra has it)
    "caproute/_backend/dask_arrays": "dask.array",
    # its example runs on the emulated GPU, which array-api-strict (a test extra) plays
    "caproute/testing.py": "array_api_strict",
}

_reasons = {}


def _missing(module):
    """Why ``module`` cannot be imported, or None if it can."""
    if module not in _reasons:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            _reasons[module] = f"optional dependency {module} is not available ({exc})"
        else:
            _reasons[module] = None
    return _reasons[module]


def _relative(file_path):
    try:
        return Path(file_path).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return None


def _required_by(rel):
    for prefix, module in OPTIONAL_DEPENDENCIES.items():
        if rel == prefix + ".py" or rel.startswith(prefix + "/"):
            return module
    return None


class _SkippedModule(pytest.File):
    """Stands for a module whose optional dependency is missing: collecting it skips."""

    def __init__(self, *, reason, **kwargs):
        super().__init__(**kwargs)
        self.reason = reason

    def collect(self):
        pytest.skip(self.reason)


@pytest.hookimpl(wrapper=True)
def pytest_collect_file(file_path, parent):
    collected = yield
    rel = _relative(file_path) if collected else None
    module = _required_by(rel) if rel else None
    reason = _missing(module) if module else None
    if reason is None:
        return collected
    return [_SkippedModule.from_parent(parent, path=file_path, reason=f"{rel}: {reason}")]
