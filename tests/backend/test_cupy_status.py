"""The CUDA availability check, with a fake CuPy module: it names a cause only when CuPy really
cannot run, and accepts what CUDA minor-version compatibility supports."""

import sys
import types

import pytest

from caproute._backend import cupy_status


def _fake_cupy(driver, runtime, n_devices=1, fail=None):
    runtime_api = types.SimpleNamespace(
        getDeviceCount=(lambda: (_ for _ in ()).throw(fail)) if fail else (lambda: n_devices),
        driverGetVersion=lambda: driver,
        runtimeGetVersion=lambda: runtime,
    )
    return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime_api))


@pytest.mark.parametrize(
    "driver, runtime",
    [(12020, 12060), (12060, 12020), (13000, 12090), (12000, 12000)],
    ids=["older-minor-driver", "newer-minor-driver", "newer-major-driver", "same"],
)
def test_minor_version_compatibility_is_usable(monkeypatch, driver, runtime):
    fake = _fake_cupy(driver, runtime)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    module, reason = cupy_status()
    assert module is fake and reason is None


def test_older_major_driver_names_the_cause(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(11080, 12060))
    module, reason = cupy_status()
    assert module is None
    assert reason.startswith("the CUDA driver (version 11080) is older than the CUDA runtime")
    assert "a driver for CUDA 12 or newer is needed" in reason


def test_no_device_names_the_cause(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(12020, 12020, n_devices=0))
    assert cupy_status() == (None, "CuPy is installed but no CUDA device was found.")
    failing = _fake_cupy(12020, 12020, fail=RuntimeError("cudaErrorInsufficientDriver"))
    monkeypatch.setitem(sys.modules, "cupy", failing)
    module, reason = cupy_status()
    assert module is None and "no CUDA device is usable: cudaErrorInsufficientDriver" in reason
