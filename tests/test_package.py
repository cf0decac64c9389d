"""Package-level promises: light import, public names, to_numpy, docstrings with examples."""

import inspect
import subprocess
import sys

import numpy as np
import pytest

import caproute as cr


def test_import_is_light():
    code = (
        "import sys, caproute; "
        "heavy = [m for m in ('numba', 'cupy', 'torch', 'matplotlib', 'dask') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import caproute loaded {out.stdout.strip()}"


def test_public_names():
    for name in (
        "squash",
        "dynamic_routing",
        "em_routing",
        "get_config",
        "set_config",
        "config_context",
        "to_numpy",
        "capabilities",
    ):
        assert name in cr.__all__ and hasattr(cr, name)


def test_to_numpy(xp):
    a = xp.asarray(np.arange(4.0))
    out = cr.to_numpy(a)
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, np.arange(4.0))
    assert isinstance(cr.to_numpy([1.0, 2.0]), np.ndarray)


PROCEDURES = {"set_config"}  # returns nothing, so no Returns section


def _public_callables():
    for name in cr.__all__:
        obj = getattr(cr, name)
        if inspect.isfunction(obj):
            yield name, obj
    yield "routing.official_inverse_temperature", cr.routing.official_inverse_temperature


@pytest.mark.parametrize("name, func", list(_public_callables()))
def test_public_functions_have_numpydoc_with_examples(name, func):
    doc = inspect.getdoc(func)
    assert doc, f"{name} has no docstring"
    assert "\nExamples\n" in doc, f"{name} lacks an Examples section"
    if name not in PROCEDURES:
        assert "\nReturns\n" in doc or "\nYields\n" in doc, f"{name} lacks a Returns section"
    if inspect.signature(func).parameters:
        assert "\nParameters\n" in doc, f"{name} lacks a Parameters section"


# The Examples sections run as doctests through pytest's --doctest-modules (pyproject.toml).


def test_readme_example_runs():
    """The README's Python example is what newcomers copy: it must run as written."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert blocks, "README.md has no python example"
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["v"].shape == (32, 10, 16)
    assert namespace["gm"].means_.shape == (3, 2)


def test_the_package_says_it_is_typed():
    """PEP 561: type checkers read caproute's annotations only if py.typed ships with it."""
    import importlib.resources
    from pathlib import Path

    assert importlib.resources.files("caproute").joinpath("py.typed").is_file()
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert 'caproute = ["py.typed"]' in pyproject  # shipped in the wheel, not only here
