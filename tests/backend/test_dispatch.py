import numpy as np
import pytest

import caproute as cr
from caproute._backend import CAPABILITIES, cupy_status, dispatch, select_impl

OPS = sorted(CAPABILITIES)


def test_capability_table_lists_every_public_routing_op():
    table = cr.capabilities()
    assert set(table) >= {"squash", "dynamic_routing", "em_routing"}
    for op, impls in table.items():
        assert impls["reference"] is True
        assert set(impls) == {"reference", "numba", "cupy"}
        for name, present in impls.items():
            assert present == (name in CAPABILITIES[op])


@pytest.mark.parametrize("op", OPS)
def test_every_registered_implementation_loads(op):
    for path in CAPABILITIES[op].values():
        assert callable(dispatch._load(path))


@pytest.mark.parametrize("op", OPS)
def test_numpy_backend_runs_the_reference(op, xp):
    if xp.__name__ == "cupy":
        pytest.skip(
            "backend='numpy' refuses GPU input; covered in test_gpu_input_refused_by_host_backends"
        )
    plan = select_impl(op, cr._backend.array_namespace(xp.zeros(1)), "numpy")
    assert plan.impl == "reference" and not plan.move_to_device


@pytest.mark.parametrize("op", OPS)
def test_auto_on_numpy_picks_numba_only_where_a_kernel_exists(op):
    plan = select_impl(op, cr._backend.numpy_namespace(), "auto")
    expected = (
        "numba" if "numba" in CAPABILITIES[op] and dispatch.numba_available() else "reference"
    )
    assert plan.impl == expected


@pytest.mark.parametrize("op", OPS)
def test_numba_backend_without_numba_raises(op, monkeypatch):
    xp = cr._backend.numpy_namespace()
    monkeypatch.setattr(dispatch, "numba_available", lambda: False)
    with pytest.raises(
        ImportError,
        match=r"backend='numba' needs Numba, which is not installed: "
        r"pip install numba",
    ):
        select_impl(op, xp, "numba")


def test_numba_backend_without_kernel_raises(monkeypatch):
    # every shipped operation has a Numba kernel now, so register one that has none
    reference_only = {"reference": CAPABILITIES["squash"]["reference"]}
    monkeypatch.setitem(CAPABILITIES, "reference_only_op", reference_only)
    xp = cr._backend.numpy_namespace()
    with pytest.raises(
        cr.BackendUnavailableError,
        match=r"backend='numba': there is no Numba kernel for 'reference_only_op'; "
        r"it has \['reference'\]\. Use backend='auto' or 'numpy'\.",
    ):
        select_impl("reference_only_op", xp, "numba")
    assert select_impl("reference_only_op", xp, "auto").impl == "reference"


def test_numba_backend_refuses_other_namespaces():
    xs = pytest.importorskip("array_api_strict")
    with pytest.raises(
        ValueError,
        match=r"backend='numba' needs NumPy arrays; got arrays of namespace "
        r"'array_api_strict'",
    ):
        cr.dynamic_routing(xs.zeros((1, 2, 2, 2)), backend="numba")


@pytest.mark.skipif(cupy_status()[0] is not None, reason="a usable CUDA device is present here")
def test_cupy_backend_without_device_names_the_cause():
    with pytest.raises(cr.BackendUnavailableError, match=r"backend='cupy' cannot run: ") as info:
        cr.dynamic_routing(np.zeros((1, 2, 2, 2)), backend="cupy")
    reason = cupy_status()[1]
    assert reason in str(info.value)
    with pytest.raises(cr.BackendUnavailableError, match=r"backend='cupy' cannot run: "):
        with cr.config_context(backend="cupy"):
            cr.em_routing(np.zeros((1, 2, 2, 2)), np.ones((1, 2)), 0.0, 0.0)


def test_cupy_status_reports_missing_cupy(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_cupy(name, *args, **kwargs):
        if name == "cupy":
            raise ImportError("No module named 'cupy'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cupy)
    module, reason = cupy_status()
    assert module is None
    assert (
        "CuPy is not installed (install the CUDA extra: pip install 'caproute[cuda12]')" in reason
    )


def test_global_config_drives_dispatch(monkeypatch):
    calls = []
    real = dispatch.select_impl

    def spy(op, xp, backend=None):
        plan = real(op, xp, backend)
        calls.append(plan.impl)
        return plan

    monkeypatch.setattr("caproute.routing.dynamic.select_impl", spy)
    with cr.config_context(backend="numpy"):
        cr.dynamic_routing(np.ones((1, 2, 2, 2)))
    assert calls == ["reference"]
