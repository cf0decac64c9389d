"""CuPy-only behaviour; runs on a GPU machine with `pytest -m gpu`, skips elsewhere."""

import numpy as np
import pytest

import caproute as cr
from tests._helpers import requires_gpu

pytestmark = [pytest.mark.gpu, requires_gpu()]


def test_cupy_backend_moves_host_input_and_returns_device_arrays():
    import cupy

    rng = np.random.default_rng(0)
    u = rng.normal(size=(2, 5, 3, 4))
    v_host = cr.dynamic_routing(u, backend="numpy")
    v_dev = cr.dynamic_routing(u, backend="cupy")
    assert isinstance(v_dev, cupy.ndarray)
    np.testing.assert_allclose(cr.to_numpy(v_dev), v_host, rtol=1e-10)
    pose, act = cr.em_routing(
        rng.normal(size=(2, 5, 3, 4)), np.ones((2, 5)), 0.0, 0.0, backend="cupy"
    )
    assert isinstance(pose, cupy.ndarray) and isinstance(act, cupy.ndarray)


def test_gpu_input_refused_by_host_backends():
    import cupy

    u = cupy.zeros((1, 2, 2, 2))
    for backend in ("numpy", "numba"):
        with pytest.raises(
            ValueError, match=f"backend='{backend}' runs on the host but the input is a CuPy array"
        ):
            cr.dynamic_routing(u, backend=backend)


def test_auto_keeps_cupy_input_on_device():
    import cupy

    u = cupy.asarray(np.random.default_rng(1).normal(size=(1, 3, 2, 2)))
    v = cr.dynamic_routing(u)
    assert isinstance(v, cupy.ndarray) and v.device == u.device
