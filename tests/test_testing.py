"""caproute.testing.emulated_gpu: backend="cupy" and "auto" as on a GPU machine, without one."""

import os
import threading
import warnings

import array_api_strict
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

import caproute as cr
from caproute import models
from caproute._backend import CAPABILITIES, cupy_status, is_cupy_namespace, select_impl
from caproute._backend import emulation as emulation_module
from caproute.cluster import DynamicRoutingClustering, EMRoutingClustering
from caproute.mixture import GaussianMixture, _gmm_math
from caproute.testing import emulated_gpu
from tests._helpers import assert_close, assert_placed

DEVICE1 = array_api_strict.Device("device1")
SIMULATOR_SWITCH = emulation_module.cuda_simulator_enabled  # before any test replaces it
rng = np.random.default_rng(0)
U_HAT = rng.normal(size=(2, 6, 3, 4))
VOTES, A_IN = rng.normal(size=(2, 5, 3, 16)), rng.uniform(size=(2, 5))


def _blobs(n=150):
    r = np.random.default_rng(1)
    X = r.normal(size=(n, 2))
    X[: n // 3] += [6, 0]
    X[n // 3 : 2 * n // 3] += [0, 6]
    return X


CALLS = {
    "squash": lambda x, **kw: cr.squash(x, **kw),
    "dynamic_routing": lambda x, **kw: cr.dynamic_routing(x, 3, return_coupling=True, **kw),
    "dense_dynamic_routing": lambda x, **kw: cr.dense_dynamic_routing(
        x[:, :, 0, :], np.ones((6, 3, 5, 4)) * 0.1, 2, **kw
    ),
    "em_routing": lambda x, **kw: cr.em_routing(
        VOTES.astype(x.dtype), A_IN.astype(x.dtype), 0.0, 0.0, return_assignments=True, **kw
    ),
}


def _outputs(result):
    return result if isinstance(result, tuple) else (result,)


@pytest.fixture(autouse=True)
def _simulator_off(request, monkeypatch):
    """The reference runs on the emulated device, whatever NUMBA_ENABLE_CUDASIM says and
    whichever "cupy" kernels are registered: tests that want a kernel switch the simulator on
    themselves (the ``cudasim`` tests use the real one)."""
    if request.node.get_closest_marker("cudasim") is None:
        monkeypatch.setattr(emulation_module, "cuda_simulator_enabled", lambda: False)


def test_yields_the_emulated_device_and_switches_back():
    assert not is_cupy_namespace(array_api_strict)
    with emulated_gpu() as device:
        assert device == DEVICE1
        assert is_cupy_namespace(array_api_strict)
        assert cupy_status() == (array_api_strict, None)
        with emulated_gpu():  # nested blocks are fine
            pass
        assert is_cupy_namespace(array_api_strict)
    assert not is_cupy_namespace(array_api_strict)
    with pytest.raises(RuntimeError, match="boom"), emulated_gpu():
        raise RuntimeError("boom")
    assert not is_cupy_namespace(array_api_strict)


def test_emulation_is_local_to_the_thread():
    seen = []
    with emulated_gpu():
        worker = threading.Thread(target=lambda: seen.append(is_cupy_namespace(array_api_strict)))
        worker.start()
        worker.join()
    assert seen == [False]


@pytest.mark.skipif(cupy_status()[0] is not None, reason="a usable CUDA device is present here")
def test_outside_the_context_cupy_is_unavailable():
    with emulated_gpu():
        cr.dynamic_routing(U_HAT, backend="cupy")
    with pytest.raises(cr.BackendUnavailableError, match=r"backend='cupy' cannot run: "):
        cr.dynamic_routing(U_HAT, backend="cupy")


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cupy_backend_moves_host_input_and_returns_device_arrays(name, dtype):
    call = CALLS[name]
    x = U_HAT.astype(dtype)
    host = _outputs(call(x, backend="numpy"))
    with emulated_gpu():
        got = _outputs(call(x, backend="cupy"))
        with cr.config_context(backend="cupy"):
            configured = _outputs(call(x))
    for g, c, h in zip(got, configured, host, strict=True):
        assert_close(g, h, xp=array_api_strict, device=DEVICE1, dtype=dtype)
        assert_close(c, h, xp=array_api_strict, device=DEVICE1, dtype=dtype)


def test_auto_keeps_device_input_on_the_device():
    host = cr.dynamic_routing(U_HAT, backend="numpy")
    with emulated_gpu() as device:
        u = array_api_strict.asarray(U_HAT, device=device)
        v = cr.dynamic_routing(u)
        plan = select_impl("dynamic_routing", array_api_strict, "auto")
    assert_close(v, host, xp=array_api_strict, device=DEVICE1, dtype="float64")
    assert plan.impl == "reference" and plan.xp is array_api_strict and not plan.move_to_device


def test_host_backends_refuse_device_input():
    with emulated_gpu() as device:
        u = array_api_strict.asarray(U_HAT, device=device)
        with pytest.raises(
            ValueError,
            match=r"backend='numpy' runs on the host but the input is an array on the emulated "
            r"GPU \(caproute.testing.emulated_gpu\)",
        ):
            cr.dynamic_routing(u, backend="numpy")


def test_gaussian_mixture_keeps_its_attributes_on_the_device():
    X = _blobs()
    params = dict(n_components=3, random_state=0)
    ref = GaussianMixture(**params, backend="numpy").fit(X)
    with emulated_gpu():
        gm = GaussianMixture(**params, backend="cupy").fit(X)
        for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
            assert_close(getattr(gm, name), getattr(ref, name), xp=array_api_strict, device=DEVICE1)
        labels = gm.predict(X)  # host input, moved as backend="cupy" says
        assert_placed(labels, xp=array_api_strict, device=DEVICE1)
        np.testing.assert_array_equal(cr.to_numpy(labels), ref.predict(X))
        assert_close(gm.score_samples(X), ref.score_samples(X), device=DEVICE1)
        np.testing.assert_allclose(gm.score(X), ref.score(X), rtol=1e-12)
    assert gm.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(gm.lower_bounds_, ref.lower_bounds_, rtol=1e-12)


@pytest.mark.parametrize("Estimator", [DynamicRoutingClustering, EMRoutingClustering])
def test_clusterers_keep_their_attributes_on_the_device(Estimator):
    X = _blobs()
    ref = Estimator(n_clusters=3, random_state=0, backend="numpy").fit(X)
    with emulated_gpu():
        est = Estimator(n_clusters=3, random_state=0, backend="cupy").fit(X)
        assert_close(
            est.cluster_centers_, ref.cluster_centers_, xp=array_api_strict, device=DEVICE1
        )
        assert_close(est.activations_, ref.activations_, xp=array_api_strict, device=DEVICE1)
        for labels in (est.labels_, est.predict(X)):
            assert_placed(labels, xp=array_api_strict, device=DEVICE1)
            np.testing.assert_array_equal(cr.to_numpy(labels), ref.labels_)
        assert_close(est.transform(X), ref.transform(X), xp=array_api_strict, device=DEVICE1)


@pytest.mark.parametrize(
    "build",
    [
        lambda: models.capsnet(conv_channels=8, primary_types=4, class_dim=8),
        lambda: models.matrix_capsnet(4, 4, 4, 4),
    ],
    ids=["capsnet", "matrix_capsnet"],
)
def test_models_run_on_the_device(build):
    net = build().initialize(random_state=1)
    images = np.random.default_rng(2).random((3, 28, 28))
    host = net.predict_scores(images, backend="numpy")
    with emulated_gpu():
        scores = net.predict_scores(images, backend="cupy")
        labels = net.predict(images, backend="cupy")
    assert_close(scores, host, xp=array_api_strict, device=DEVICE1, dtype="float32")
    assert_placed(labels, xp=array_api_strict, device=DEVICE1)
    np.testing.assert_array_equal(cr.to_numpy(labels), np.argmax(host, axis=1))


# -- "cupy" kernels under emulation ------------------------------------------------------------
CALLED = []


def fake_dynamic_routing(u_hat, *, xp, **kwargs):
    """Stands for a numba-cuda kernel: in the simulator it gets NumPy arrays and NumPy's
    namespace, and allocates its outputs with ``xp``."""
    assert type(u_hat) is np.ndarray
    assert xp.__name__ == "array_api_compat.numpy"
    for value in kwargs.values():
        assert not cr._backend.is_array(value) or type(value) is np.ndarray
    CALLED.append("dynamic_routing")
    from caproute.routing._dynamic_math import dynamic_routing

    v, c = dynamic_routing(u_hat, xp=xp, **kwargs)
    out = xp.empty(v.shape, dtype=v.dtype)
    out[...] = v
    return out, c


def fake_fit_stats(
    X, weights, means, prec_chol, covariance_type, *, shift, chunk_size, xp, sample_weight=None
):
    for a in (X, weights, means, prec_chol):
        assert type(a) is np.ndarray
    CALLED.append("gmm_estep_stats")
    return _gmm_math.fit_stats(
        X,
        weights,
        means,
        prec_chol,
        covariance_type,
        shift=shift,
        chunk_size=chunk_size,
        xp=xp,
        sample_weight=sample_weight,
    )


@pytest.fixture
def fake_kernels(monkeypatch):
    CALLED.clear()
    monkeypatch.setitem(
        CAPABILITIES,
        "dynamic_routing",
        {**CAPABILITIES["dynamic_routing"], "cupy": "tests.test_testing:fake_dynamic_routing"},
    )
    monkeypatch.setitem(
        CAPABILITIES,
        "gmm_estep_stats",
        {**CAPABILITIES["gmm_estep_stats"], "cupy": "tests.test_testing:fake_fit_stats"},
    )
    return CALLED


def test_a_cupy_kernel_runs_in_the_simulator_on_host_arrays(fake_kernels, monkeypatch):
    monkeypatch.setattr(emulation_module, "cuda_simulator_enabled", lambda: True)
    bias = rng.normal(size=(3, 4))
    host_v, host_c = cr.dynamic_routing(U_HAT, bias=bias, return_coupling=True, backend="numpy")
    with emulated_gpu() as device:
        plan = select_impl("dynamic_routing", array_api_strict, "cupy")
        assert plan.impl == "cupy" and plan.func.kernel is fake_dynamic_routing
        v, c = cr.dynamic_routing(U_HAT, bias=bias, return_coupling=True, backend="cupy")
        u = array_api_strict.asarray(U_HAT, device=device)
        v_auto = cr.dynamic_routing(u, bias=list(bias.tolist()), backend="auto")
    assert fake_kernels == ["dynamic_routing", "dynamic_routing"]
    assert_close(v, host_v, xp=array_api_strict, device=DEVICE1, dtype="float64")
    assert_close(c, host_c, xp=array_api_strict, device=DEVICE1, dtype="float64")
    assert_close(v_auto, host_v, xp=array_api_strict, device=DEVICE1, dtype="float64")


def test_a_cupy_kernel_returning_statistics_comes_back_whole(fake_kernels, monkeypatch):
    monkeypatch.setattr(emulation_module, "cuda_simulator_enabled", lambda: True)
    X = _blobs()
    ref = GaussianMixture(3, random_state=0, backend="numpy").fit(X)
    with emulated_gpu():
        gm = GaussianMixture(3, random_state=0, backend="cupy").fit(X)
    assert fake_kernels and set(fake_kernels) == {"gmm_estep_stats"}
    assert_close(gm.means_, ref.means_, xp=array_api_strict, device=DEVICE1, dtype="float64")
    assert gm.n_iter_ == ref.n_iter_


def test_without_the_simulator_the_reference_runs_on_the_device(monkeypatch):
    monkeypatch.setattr(emulation_module, "cuda_simulator_enabled", lambda: False)
    # a kernel that cannot even be imported: without the simulator it is never loaded
    monkeypatch.setitem(
        CAPABILITIES,
        "dynamic_routing",
        {**CAPABILITIES["dynamic_routing"], "cupy": "tests.no_such_module:kernel"},
    )
    with emulated_gpu():
        plan = select_impl("dynamic_routing", array_api_strict, "cupy")
        v = cr.dynamic_routing(U_HAT, backend="cupy")
    assert plan.impl == "reference"
    assert_close(v, cr.dynamic_routing(U_HAT, backend="numpy"), device=DEVICE1)


def test_simulator_switch_follows_the_environment(monkeypatch):
    import sys

    monkeypatch.delitem(sys.modules, "numba.core.config", raising=False)
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")
    assert SIMULATOR_SWITCH()
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "0")
    assert not SIMULATOR_SWITCH()


def test_no_warning_or_implicit_conversion_on_the_way():
    """The device arrays refuse NumPy conversion: nothing in a fit converts them implicitly."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with emulated_gpu():
            gm = GaussianMixture(2, random_state=0, backend="cupy", max_iter=3, tol=0.0)
            with pytest.warns(Warning):  # the ConvergenceWarning of max_iter=3, tol=0
                gm.fit(_blobs())
    with pytest.raises(RuntimeError, match="Can't convert array"):
        np.asarray(gm.means_)


# -- the registered "cupy" kernels, in numba-cuda's simulator (NUMBA_ENABLE_CUDASIM=1) ----------
@pytest.mark.cudasim
@pytest.mark.skipif(
    os.environ.get("NUMBA_ENABLE_CUDASIM") != "1",
    reason="needs NUMBA_ENABLE_CUDASIM=1 (the simulator, in a pytest process of its own)",
)
@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_registered_cupy_kernels_run_on_the_emulated_gpu(name, dtype):
    if "cupy" not in CAPABILITIES[name]:
        pytest.skip(f"no 'cupy' kernel is registered for {name!r}")
    x = U_HAT.astype(dtype)
    host = _outputs(CALLS[name](x, backend="numpy"))
    with emulated_gpu():
        assert select_impl(name, array_api_strict, "cupy").impl == "cupy"
        got = _outputs(CALLS[name](x, backend="cupy"))
    for g, h in zip(got, host, strict=True):
        assert_close(g, h, xp=array_api_strict, device=DEVICE1, dtype=dtype, purpose="kernel")


@pytest.mark.cudasim
@pytest.mark.skipif(
    os.environ.get("NUMBA_ENABLE_CUDASIM") != "1",
    reason="needs NUMBA_ENABLE_CUDASIM=1 (the simulator, in a pytest process of its own)",
)
@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_registered_gmm_kernel_fits_on_the_emulated_gpu(covariance_type):
    if "cupy" not in CAPABILITIES["gmm_estep_stats"]:
        pytest.skip("no 'cupy' kernel is registered for 'gmm_estep_stats'")
    X = _blobs()
    params = dict(n_components=3, covariance_type=covariance_type, max_iter=5, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = GaussianMixture(**params, random_state=0, backend="numpy").fit(X)
        with emulated_gpu():
            assert select_impl("gmm_estep_stats", array_api_strict, "cupy").impl == "cupy"
            gm = GaussianMixture(**params, random_state=0, backend="cupy").fit(X)
    for name in ("weights_", "means_", "covariances_"):
        assert_close(
            getattr(gm, name),
            getattr(ref, name),
            xp=array_api_strict,
            device=DEVICE1,
            dtype="float64",
            purpose="kernel",
            scale=10.0,
        )
