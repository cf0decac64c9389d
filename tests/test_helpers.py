"""The test helpers: assert_close fails on the wrong namespace, device, dtype or values, and the
tolerance table keeps its numbers."""

import array_api_compat
import array_api_compat.numpy as np_compat
import array_api_strict
import numpy as np
import pytest

from tests._helpers import TOLERANCES, as_xp, assert_close, atol_for, rtol_for, tolerance

DESIRED = np.array([1.0, -3.0, 0.0, 250.0])
PURPOSES = ["exact", "kernel", "sklearn"]
NAMESPACES = [pytest.param(np, id="numpy"), pytest.param(array_api_strict, id="array_api_strict")]


def test_table_keeps_its_numbers():
    """The numbers the three tables had before they became one: no test may get looser."""
    assert tolerance("float32") == dict(rtol=2e-5, atol=1e-6)
    assert tolerance("float64") == dict(rtol=1e-11, atol=1e-13)
    assert tolerance(np.float32, "kernel") == dict(rtol=3e-4, atol=3e-5)
    assert tolerance(np.float64, "kernel") == dict(rtol=1e-9, atol=1e-11)
    assert tolerance(np.float32, "kernel", scale=1e6) == dict(rtol=3e-4, atol=3e-5 * 1e6)
    assert tolerance(np.float64, "kernel", scale=1e6) == dict(rtol=1e-9, atol=1e-11 * 1e6)
    assert tolerance(np.float32, "sklearn") == dict(rtol=2e-3, atol=2e-4)
    assert tolerance(np.float64, "sklearn") == dict(rtol=1e-7, atol=1e-10)
    assert (rtol_for("float32"), atol_for("float32")) == (2e-5, 1e-6)
    assert (rtol_for(np.float64), atol_for(np.float64)) == (1e-11, 1e-13)
    assert len(TOLERANCES) == 6


@pytest.mark.parametrize(
    "dtype", [np.float32, np.dtype("float32"), "float32", array_api_strict.float32]
)
def test_tolerance_accepts_every_spelling_of_a_dtype(dtype):
    assert tolerance(dtype) == tolerance("float32")


def test_tolerance_refuses_unknown_keys():
    with pytest.raises(KeyError, match="no tolerance"):
        tolerance("float64", purpose="approximately")
    with pytest.raises(KeyError, match="no tolerance"):
        tolerance("int64")


def _off_by(dtype, purpose, scale, factor):
    """DESIRED moved by ``factor`` times the tolerance's bound, alternately up and down."""
    tol = tolerance(dtype, purpose, scale)
    bound = tol["atol"] + tol["rtol"] * np.abs(DESIRED)
    signs = np.array([1.0, -1.0, 1.0, -1.0])
    return (DESIRED + signs * factor * bound).astype(dtype)


@pytest.mark.parametrize("xp", NAMESPACES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("purpose", PURPOSES)
@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_values_just_inside_pass_and_just_outside_fail(xp, dtype, purpose, scale):
    inside = as_xp(_off_by(dtype, purpose, scale, 0.9), xp)
    outside = as_xp(_off_by(dtype, purpose, scale, 1.1), xp)
    assert_close(inside, DESIRED, xp=xp, dtype=dtype, purpose=purpose, scale=scale)
    assert_close(inside, DESIRED, purpose=purpose, scale=scale)  # dtype read from the array
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_close(outside, DESIRED, xp=xp, dtype=dtype, purpose=purpose, scale=scale)


def test_overrides_replace_the_table():
    inside = _off_by("float64", "exact", 1.0, 0.9)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_close(inside, DESIRED, rtol=0.0, atol=0.0)
    assert_close(
        _off_by("float64", "exact", 1.0, 9.0),
        DESIRED,
        rtol=rtol_for("float64") * 10,
        atol=atol_for("float64") * 10,
    )


def test_desired_may_be_an_array_of_the_namespace():
    a = array_api_strict.asarray(DESIRED)
    assert_close(a, a, xp=array_api_strict, dtype=array_api_strict.float64)


@pytest.mark.parametrize(
    "actual_xp, expected_xp",
    [
        (np, array_api_strict),
        (array_api_strict, np),
        (array_api_strict, np_compat),
    ],
)
def test_wrong_namespace_fails(actual_xp, expected_xp):
    a = as_xp(DESIRED, actual_xp)
    with pytest.raises(AssertionError, match="expected one of"):
        assert_close(a, DESIRED, xp=expected_xp)


def test_numpy_and_its_compat_wrapper_are_one_namespace():
    a = np.asarray(DESIRED)
    assert_close(a, DESIRED, xp=np)
    assert_close(a, DESIRED, xp=np_compat)
    assert_close(a, DESIRED, xp=array_api_compat.array_namespace(a))


def test_not_an_array_fails():
    with pytest.raises(AssertionError, match="not an array"):
        assert_close([1.0, -3.0, 0.0, 250.0], DESIRED)


@pytest.mark.parametrize("xp", NAMESPACES)
def test_wrong_dtype_fails(xp):
    a = as_xp(DESIRED, xp, dtype="float32")
    assert_close(a, DESIRED, xp=xp, dtype="float32", rtol=1e-7)
    with pytest.raises(AssertionError, match="expected float64"):
        assert_close(a, DESIRED, xp=xp, dtype="float64")
    with pytest.raises(AssertionError, match="expected float64"):
        assert_close(a, DESIRED, xp=xp, dtype=xp.float64)


def test_wrong_device_fails():
    other = array_api_strict.Device("device1")
    default = array_api_compat.device(array_api_strict.asarray(0.0))
    assert other != default
    on_other = array_api_strict.asarray(DESIRED, device=other)
    on_default = array_api_strict.asarray(DESIRED)
    assert_close(on_other, DESIRED, xp=array_api_strict, device=other)
    assert_close(on_default, DESIRED, xp=array_api_strict, device=default)
    with pytest.raises(AssertionError, match="on device"):
        assert_close(on_other, DESIRED, xp=array_api_strict, device=default)
    with pytest.raises(AssertionError, match="on device"):
        assert_close(on_default, DESIRED, xp=array_api_strict, device=other)


def test_checks_run_in_order_namespace_device_dtype_values():
    wrong = array_api_strict.asarray(
        DESIRED + 1, dtype=array_api_strict.float32, device=array_api_strict.Device("device1")
    )
    default = array_api_compat.device(array_api_strict.asarray(0.0))
    with pytest.raises(AssertionError, match="expected one of numpy"):
        assert_close(wrong, DESIRED, xp=np, device=default, dtype="float64")
    with pytest.raises(AssertionError, match="on device"):
        assert_close(wrong, DESIRED, xp=array_api_strict, device=default, dtype="float64")
    with pytest.raises(AssertionError, match="expected float64"):
        assert_close(wrong, DESIRED, xp=array_api_strict, dtype="float64")
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_close(wrong, DESIRED, xp=array_api_strict, dtype="float32")
