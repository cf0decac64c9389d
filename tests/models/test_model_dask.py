"""Model.predict, predict_proba and predict_scores on Dask arrays: lazy, block by block, equal
to NumPy's results, checked like NumPy input, and runnable on a dask.distributed cluster."""

import contextlib
import pickle
import signal
import subprocess
import sys

import numpy as np
import pytest

from caproute import datasets, models
from tests._helpers import tolerance

da = pytest.importorskip("dask.array", reason="Dask is optional: pip install 'caproute[dask]'")
import dask  # noqa: E402  (after the importorskip that guards it)
from dask.callbacks import Callback  # noqa: E402

NAMES = ["capsnet-fashion-mnist", "matrix-capsnet-fashion-mnist"]
METHODS = ["predict", "predict_proba", "predict_scores"]
N = 48

# chunks of a (48, 28, 28) array: one block, even, uneven, explicit uneven, and split along the
# pixel axes too (which the models rechunk into whole images)
CHUNKINGS = {
    "one-block": (N, 28, 28),
    "even": (16, 28, 28),
    "uneven": (7, 28, 28),
    "explicit-uneven": ((5, 20, 23), (28,), (28,)),
    "pixels-split": (10, 14, 7),
    "pixels-split-uneven": ((30, 18), (28,), (9, 19)),
}


@pytest.fixture(scope="module")
def images():
    return datasets.load_fashion_mnist_subset()[0][:N]


@pytest.fixture(scope="module", params=NAMES)
def net(request):
    return models.load_pretrained(request.param)


@pytest.fixture(scope="module")
def capsnet():
    return models.load_pretrained("capsnet-fashion-mnist")


def _assert_same(method, got, expected):
    assert type(got) is np.ndarray
    assert got.dtype == expected.dtype and got.shape == expected.shape
    if method == "predict":
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, **tolerance(expected.dtype))


class _CountTasks(Callback):
    """Counts the tasks Dask's local schedulers run while it is active."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def _pretask(self, key, dask, state):
        self.count += 1


@pytest.fixture
def forward_calls(monkeypatch):
    """How many times Model.forward ran (in this process)."""
    calls = []
    original = models.Model.forward

    def counting(self, x, **kwargs):
        calls.append(int(x.shape[0]))
        return original(self, x, **kwargs)

    monkeypatch.setattr(models.Model, "forward", counting)
    return calls


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("chunks", list(CHUNKINGS.values()), ids=list(CHUNKINGS))
def test_matches_numpy(net, images, method, chunks):
    x = da.from_array(images, chunks=chunks)
    lazy = getattr(net, method)(x)
    assert isinstance(lazy, da.Array)
    assert lazy.chunks[0] == x.chunks[0]  # the batch chunks are the input's
    assert lazy.numblocks[1:] == (1,) * (lazy.ndim - 1)
    expected = getattr(net, method)(images)
    assert lazy.shape == expected.shape and lazy.dtype == expected.dtype
    _assert_same(method, lazy.compute(), expected)


@pytest.mark.parametrize("method", METHODS)
def test_four_dimensional_layouts(capsnet, images, method):
    expected = getattr(capsnet, method)(images)
    nhwc = da.from_array(images[..., None], chunks=(9, 7, 28, 1))
    _assert_same(method, getattr(capsnet, method)(nhwc).compute(), expected)
    nchw = da.from_array(np.ascontiguousarray(images[:, None]), chunks=(11, 1, 14, 28))
    got = getattr(capsnet, method)(nchw, data_format="NCHW")
    _assert_same(method, got.compute(), expected)


def test_options_reach_the_blocks(capsnet, images):
    floats = da.from_array(images.astype(np.float64) / 255, chunks=(13, 28, 28))
    # backend="numpy" with float64: no Numba compilation for float64 in the test's time
    for kwargs in ({"dtype": "float64", "backend": "numpy"}, {"batch_size": 5, "backend": "numpy"}):
        expected = capsnet.predict_scores(images.astype(np.float64) / 255, **kwargs)
        got = capsnet.predict_scores(floats, **kwargs)
        assert got.dtype == expected.dtype
        _assert_same("predict_scores", got.compute(), expected)


def test_result_is_lazy(capsnet, images, forward_calls):
    x = da.from_array(images, chunks=(10, 14, 28))
    with _CountTasks() as tasks:
        lazy = [getattr(capsnet, method)(x) for method in METHODS]
    assert tasks.count == 0 and forward_calls == []
    assert all(isinstance(out, da.Array) for out in lazy)
    assert all(type(out._meta) is np.ndarray for out in lazy)
    assert [out.dtype for out in lazy] == [np.int64, np.float32, np.float32]
    with _CountTasks() as tasks:
        labels = lazy[0].compute()
    assert tasks.count > 0
    assert sorted(forward_calls) == [8, 10, 10, 10, 10]  # block by block, no more
    np.testing.assert_array_equal(labels, capsnet.predict(images))


def test_model_enters_the_graph_once(capsnet, images):
    x = da.from_array(images, chunks=(4, 28, 28))
    weights_bytes = sum(w.nbytes for w in capsnet.get_weights().values())
    outputs = (capsnet.predict(x), capsnet.predict_proba(x))
    graph = {}
    for out in dask.optimize(*outputs):
        graph.update(dict(out.__dask_graph__()))
    model_keys = [key for key in graph if str(key).startswith("caproute-Model-")]
    assert len(model_keys) == 1  # shared by both results and all 2 x 12 blocks
    sizes = {key: len(pickle.dumps(task)) for key, task in graph.items()}
    assert sizes.pop(model_keys[0]) > weights_bytes
    assert max(sizes.values()) < weights_bytes / 100  # no block carries the weights


def test_later_changes_to_the_model_do_not_change_a_built_result(images):
    net = models.load_pretrained("matrix-capsnet-fashion-mnist")
    expected = net.predict_scores(images)
    lazy = net.predict_scores(da.from_array(images, chunks=20))
    net.initialize(random_state=0)
    _assert_same("predict_scores", lazy.compute(), expected)
    changed = net.predict_scores(da.from_array(images, chunks=20)).compute()
    assert not np.allclose(changed, expected)


def test_model_pickles_its_weights_once(images):
    net = models.load_pretrained("matrix-capsnet-fashion-mnist")
    # caches a float64 copy of the weights (the NumPy reference: nothing to compile)
    net.predict_scores(images[:4], dtype="float64", backend="numpy")
    weights_bytes = sum(w.nbytes for w in net.get_weights().values())
    data = pickle.dumps(net)
    assert len(data) < weights_bytes + 50_000  # the host weights only, not the cached copy
    again = pickle.loads(data)
    np.testing.assert_array_equal(again.predict_scores(images), net.predict_scores(images))


@pytest.mark.parametrize(
    "images,kwargs,exc,match",
    [
        (
            np.zeros((2, 27, 28)),
            {},
            ValueError,
            r"`images` must be \(28, 28, 1\) per image .* got \(27, 28, 1\)\.",
        ),
        (
            np.zeros((2, 1, 28, 28)),
            {},
            ValueError,
            r"`images` must be \(28, 28, 1\) per image .* got \(1, 28, 28\)\.",
        ),
        (
            np.zeros((2, 28)),
            {},
            ValueError,
            r"`images` must be 3-D \(n, H, W\) or 4-D \(n, H, W, C\); got shape \(2, 28\)\.",
        ),
        (np.zeros((2, 28, 28), dtype=bool), {}, TypeError, "`images` must hold integers"),
        (np.zeros((2, 28, 28), dtype=complex), {}, TypeError, "`images` must hold integers"),
        (
            np.zeros((1, 28, 28)),
            {"dtype": "float16"},
            ValueError,
            "`dtype` must be 'float32' or 'float64'",
        ),
        (
            np.zeros((1, 28, 28)),
            {"batch_size": 0},
            ValueError,
            "`batch_size` must be an integer >= 1",
        ),
        (
            np.zeros((1, 28, 28)),
            {"data_format": "HWC"},
            ValueError,
            "`data_format` must be 'NHWC', 'NCHW' or None",
        ),
        (np.zeros((1, 28, 28)), {"backend": "torch"}, ValueError, "backend"),
    ],
)
@pytest.mark.parametrize("method", METHODS)
def test_bad_input_raises_at_call_time_as_for_numpy(capsnet, images, kwargs, exc, match, method):
    with pytest.raises(exc, match=match):
        getattr(capsnet, method)(images, **kwargs)
    with _CountTasks() as tasks, pytest.raises(exc, match=match):
        getattr(capsnet, method)(da.from_array(images, chunks=1), **kwargs)
    assert tasks.count == 0


@pytest.mark.parametrize("method", METHODS)
def test_non_finite_pixels_raise_when_computed(capsnet, method):
    pixels = np.zeros((6, 28, 28))
    pixels[4, 3, 3] = np.inf
    with pytest.raises(ValueError, match="`images` holds NaN or inf"):
        getattr(capsnet, method)(pixels)
    lazy = getattr(capsnet, method)(da.from_array(pixels, chunks=3))  # no error yet
    getattr(capsnet, method)(da.from_array(pixels, chunks=3)[:3]).compute()  # the clean block
    with pytest.raises(ValueError, match="`images` holds NaN or inf"):
        lazy.compute()


def test_options_numpy_input_has_no_meaning_for(capsnet, images):
    x = da.from_array(images, chunks=16)
    with pytest.raises(ValueError, match="`progress` is not available for a Dask array"):
        capsnet.predict(x, progress=True)
    with pytest.raises(
        TypeError, match="Model.predict_proba\\(\\) got an unexpected keyword argument 'batch'"
    ):
        capsnet.predict_proba(x, batch=4)
    with pytest.raises(TypeError, match="got an unexpected keyword argument 'batch'"):
        capsnet.predict_scores(x, batch=4)


def test_masked_blocks_refused(capsnet, images):
    masked = da.ma.masked_equal(da.from_array(images, chunks=16), 0)
    with pytest.raises(
        TypeError, match="`images` must be a plain array; got a numpy.ma.MaskedArray"
    ):
        capsnet.predict(masked)


def test_unknown_sizes(capsnet, images):
    x = da.from_array(images, chunks=16)
    keep = da.from_array(np.arange(N) % 3 != 0, chunks=16)
    filtered = x[keep]  # unknown batch chunk sizes: fine
    assert np.isnan(filtered.shape[0])
    _assert_same(
        "predict",
        capsnet.predict(filtered).compute(),
        capsnet.predict(images[np.arange(N) % 3 != 0]),
    )
    columns = da.from_array(np.ones(28, dtype=bool), chunks=14)
    with pytest.raises(
        ValueError,
        match=r"`images` has unknown sizes along axes \[2\] \(shape \(48, 28, nan\)\); call images.compute_chunk_sizes\(\) first\.",
    ):
        capsnet.predict(x[:, :, columns])


def test_empty(capsnet):
    x = da.zeros((0, 28, 28), dtype=np.uint8, chunks=5)
    assert capsnet.predict_scores(x).compute().shape == (0, 10)
    assert capsnet.predict(x).compute().shape == (0,)


def test_zarr_store(capsnet, images, tmp_path):
    zarr = pytest.importorskip("zarr", reason="zarr is in the test extra")
    store = str(tmp_path / "images.zarr")
    da.from_array(images, chunks=(12, 14, 28)).to_zarr(store)
    assert zarr.open(store, mode="r").shape == images.shape
    lazy = capsnet.predict(da.from_zarr(store))
    assert lazy.chunks == ((12, 12, 12, 12),)
    _assert_same("predict", lazy.compute(), capsnet.predict(images))


def test_importing_and_numpy_prediction_load_no_dask():
    code = (
        "import sys, numpy as np; from caproute import models; "
        "net = models.matrix_capsnet(8, 4, 4, 4).initialize(random_state=0); "
        "net.predict(np.zeros((2, 28, 28), np.uint8), backend='numpy'); "
        "print([m for m in sys.modules if m == 'dask' or m.startswith('dask.')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@contextlib.contextmanager
def _time_limit(seconds):
    """Raise TimeoutError in the main thread after ``seconds`` (where SIGALRM exists)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum, frame):
        raise TimeoutError(f"the LocalCluster test ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_on_a_local_cluster_of_two_processes(images, tmp_path):
    pytest.importorskip("distributed", reason="dask.distributed: pip install 'caproute[dask]'")
    from distributed import Client, LocalCluster

    net = models.load_pretrained("capsnet-fashion-mnist")
    x = da.from_array(images, chunks=(6, 14, 28))
    expected = {method: getattr(net, method)(images) for method in METHODS}
    lazy = {method: getattr(net, method)(x) for method in METHODS}
    settings = {"temporary-directory": str(tmp_path), "distributed.comm.timeouts.connect": "60s"}
    with (
        _time_limit(240),
        dask.config.set(settings),
        LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
            local_directory=str(tmp_path),
            # the scheduler's HTTP server (health, metrics) on a free port, not 8787
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        ) as cluster,
        Client(cluster, timeout="60s") as client,
    ):
        client.wait_for_workers(2, timeout=60)
        futures = client.compute(list(lazy.values()))
        got = {method: f.result(timeout=120) for method, f in zip(lazy, futures, strict=True)}
    for method in METHODS:
        _assert_same(method, got[method], expected[method])
