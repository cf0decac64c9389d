"""GaussianMixture on Dask arrays: the in-memory fit's numbers, lazy predictions, scikit-learn's
messages, and a real two-process ``dask.distributed`` cluster (a worker killed mid-fit, a
worker raising inside a block).

Most cases run on Dask's synchronous scheduler (fast, in this process); a few run on a
``LocalCluster`` of two worker processes that one module fixture starts and closes.
"""

import os
import signal
import threading
import time
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from caproute.mixture import GaussianMixture

da = pytest.importorskip("dask.array", reason="Dask is optional: pip install 'caproute[dask]'")
import dask  # noqa: E402  (after the importorskip that guards it)
from dask.callbacks import Callback  # noqa: E402

COV_TYPES = ["full", "tied", "diag", "spherical"]
INITS = ["kmeans", "k-means++", "random", "random_from_data"]
ATTRIBUTES = ["weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"]
RTOL = 1e-8  # float64: the same numbers as the in-memory fit, to the last digits of EM
# plus rounding noise on an array's entries that are zero in exact arithmetic (off-diagonal
# factors ~1e-17), relative to the array's largest entry
ATOL_OF_SCALE = 1e-13
N = 3000
# uneven row chunks of X, with a block of no rows and one of a single row
UNEVEN = ((700, 1300, 0, 999, 1), (3,))
CLUSTER_TIMEOUT = 120  # seconds any one step on the cluster may take before the test fails


@pytest.fixture(scope="module")
def data():
    """Three overlapping Gaussians in 3-D (EM takes a few iterations) and positive weights."""
    rng = np.random.RandomState(0)
    X = np.vstack(
        [
            rng.randn(1000, 3),
            rng.randn(1000, 3) * 0.8 + [1.5, 1.5, 0],
            rng.randn(1000, 3) * [1.0, 1.5, 0.5] + [0, 1.5, 1.5],
        ]
    )
    X = X[rng.permutation(N)]
    w = rng.uniform(0.1, 3.0, size=N)
    return X, w


@pytest.fixture
def synchronous():
    """Dask's synchronous scheduler, whatever client the module's cluster made the default."""
    with dask.config.set(scheduler="synchronous"):
        yield


class _CountTasks(Callback):
    """Counts the tasks Dask's local schedulers run while it is active."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def _pretask(self, key, dask, state):
        self.count += 1


def _weights(kind, w):
    if kind == "numpy":
        return w
    if kind == "dask":  # chunked unlike X
        return da.from_array(w, chunks=450)
    return None


def _fit_quietly(gm, X, sample_weight=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return gm.fit(X, sample_weight=sample_weight)


def assert_same_fit(got, want, rtol=RTOL, atol_of_scale=ATOL_OF_SCALE):
    for name in ATTRIBUTES:
        a, b = getattr(got, name), getattr(want, name)
        assert type(a) is np.ndarray and a.dtype == b.dtype and a.shape == b.shape, name
        atol = atol_of_scale * float(np.max(np.abs(b)))
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=name)
    assert got.n_iter_ == want.n_iter_
    assert got.converged_ == want.converged_
    assert got.n_features_in_ == want.n_features_in_
    np.testing.assert_allclose(got.lower_bound_, want.lower_bound_, rtol=rtol, atol=0)
    np.testing.assert_allclose(got.lower_bounds_, want.lower_bounds_, rtol=rtol, atol=0)
    np.testing.assert_allclose(got.n_samples_seen_, want.n_samples_seen_, rtol=rtol, atol=0)


def assert_identical_fit(got, want):
    """Bit for bit: the same graph summed in the same order gives the same numbers."""
    for name in ATTRIBUTES:
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    assert (got.n_iter_, got.converged_, got.lower_bounds_) == (
        want.n_iter_,
        want.converged_,
        want.lower_bounds_,
    )


def assert_same_predictions(gm, Xd, X):
    """predict, predict_proba and score_samples are lazy and equal to the in-memory ones;
    score, bic and aic equal."""
    for method in ("predict", "predict_proba", "score_samples"):
        lazy = getattr(gm, method)(Xd)
        want = getattr(gm, method)(X)
        assert isinstance(lazy, da.Array), method
        assert lazy.chunks[0] == Xd.chunks[0], method
        assert lazy.shape == want.shape and lazy.dtype == want.dtype, method
        got = lazy.compute()
        assert type(got) is np.ndarray and got.shape == want.shape and got.dtype == want.dtype
        if method == "predict":
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-300, err_msg=method)
    for method in ("score", "bic", "aic"):
        got = getattr(gm, method)(Xd)
        assert type(got) is float, method
        np.testing.assert_allclose(got, getattr(gm, method)(X), rtol=RTOL, atol=0, err_msg=method)


# --------------------------------------------------------------------- synchronous scheduler
@pytest.mark.parametrize("weights", [None, "numpy", "dask"])
@pytest.mark.parametrize("covariance_type", COV_TYPES)
@pytest.mark.parametrize("init_params", INITS)
def test_same_fit_as_in_memory(data, synchronous, init_params, covariance_type, weights):
    X, w = data
    Xd = da.from_array(X, chunks=UNEVEN)
    params = dict(
        n_components=3, covariance_type=covariance_type, init_params=init_params, random_state=1
    )
    want = _fit_quietly(GaussianMixture(**params), X, None if weights is None else w)
    got = _fit_quietly(GaussianMixture(**params), Xd, _weights(weights, w))
    assert_same_fit(got, want)
    assert_same_predictions(got, Xd, X)


@pytest.mark.parametrize(
    "chunks",
    [(N, 3), (750, 3), ((1, 2998, 1), (3,)), ((1000, 0, 2000), (3,)), ((400, 2600), (2, 1))],
    ids=["one-block", "even", "one-row-ends", "empty-block", "features-split"],
)
def test_chunkings(data, synchronous, chunks):
    X, w = data
    Xd = da.from_array(X, chunks=chunks)
    for init_params in ("k-means++", "random"):
        params = dict(n_components=3, init_params=init_params, random_state=2)
        want = _fit_quietly(GaussianMixture(**params), X, w)
        got = _fit_quietly(GaussianMixture(**params), Xd, w)
        assert_same_fit(got, want)
    assert_same_predictions(got, Xd, X)


def test_predictions_are_lazy_and_keep_the_fit_they_came_from(data, synchronous):
    X, _ = data
    Xd = da.from_array(X, chunks=UNEVEN)
    gm = GaussianMixture(3, random_state=0).fit(X)
    want = {m: getattr(gm, m)(X) for m in ("predict", "predict_proba", "score_samples")}
    with _CountTasks() as counter:
        lazy = {m: getattr(gm, m)(Xd) for m in want}
    assert counter.count == 0  # nothing runs before compute
    fit_labels = GaussianMixture(3, random_state=0).fit_predict(Xd)
    assert isinstance(fit_labels, da.Array)
    # a later fit with other parameters does not change what the lazy arrays compute
    gm.set_params(n_components=2, random_state=5).fit(X[::-1] + 1.0)
    for m, lazy_result in lazy.items():
        got = lazy_result.compute()
        assert got.shape == lazy_result.shape == want[m].shape, m
        np.testing.assert_allclose(got, want[m], rtol=RTOL, atol=1e-300, err_msg=m)
    np.testing.assert_array_equal(fit_labels.compute(), want["predict"])


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++"])
def test_inits_on_a_sample_above_the_limit(data, synchronous, monkeypatch, init_params):
    """Above KMEANS_SAMPLE_ROWS points, KMeans and k-means++ run on that many points drawn at
    random: the fit still finds the in-memory fit's components."""
    from caproute.mixture import gaussian_mixture as gm_module

    X, _ = data
    monkeypatch.setattr(gm_module, "KMEANS_SAMPLE_ROWS", X.shape[0] // 4)
    Xd = da.from_array(X, chunks=UNEVEN)
    kw = {"init_params": init_params, "random_state": 0, "tol": 1e-10, "max_iter": 1000}
    got = _fit_quietly(GaussianMixture(3, **kw), Xd)
    want = _fit_quietly(GaussianMixture(3, **kw), X)
    order = lambda m: m[np.lexsort(m.T[::-1])]  # noqa: E731
    np.testing.assert_allclose(order(got.means_), order(want.means_), atol=1e-3)


def test_float16_and_integer_blocks_are_fitted_as_float64(data, synchronous):
    X, _ = data
    for X_other in (X.astype(np.float16), np.round(X * 10).astype(np.int32)):
        want = GaussianMixture(3, random_state=0).fit(X_other)
        got = GaussianMixture(3, random_state=0).fit(da.from_array(X_other, chunks=UNEVEN))
        assert got.means_.dtype == np.float64
        assert_same_fit(got, want)


#: float32 blocks against the in-memory float32 fit: the two cannot agree to float64's last
#: digits. float32 sums depend on where they are cut: the reference's initial statistics (a
#: float32 product per chunk or block) and the kernel's E-step (float32 sums over blocks of
#: 512 points, which a Dask block boundary cuts elsewhere) round differently, by about one
#: float32 ulp of the largest value, and EM carries that into every entry, the entries that
#: are near zero included. Measured on this data: at most 3.3e-7 (2.7 ulp) of each array's
#: largest entry, where the in-memory fit is 2.8e-6 to 5.6e-6 from scikit-learn's float32
#: fit and 0.8e-7 to 3.2e-7 from caproute's float64 fit. So float32 allows 16 ulp of the
#: largest entry (np.finfo(np.float32).eps is 1.19e-7): rounding-sized, and here (largest
#: entry 1.85) about 50 times smaller than the scikit-learn comparison's float32 atol (2e-4).
ATOL_OF_SCALE_FLOAT32 = 16 * float(np.finfo(np.float32).eps)


def test_float32_blocks(data, synchronous):
    X = data[0].astype(np.float32)
    want = GaussianMixture(3, random_state=0).fit(X)
    got = GaussianMixture(3, random_state=0).fit(da.from_array(X, chunks=UNEVEN))
    assert got.means_.dtype == np.float32
    assert_same_fit(got, want, rtol=1e-4, atol_of_scale=ATOL_OF_SCALE_FLOAT32)


def test_unknown_chunk_sizes(data, synchronous):
    X, _ = data
    Xd = da.from_array(X, chunks=UNEVEN)
    filtered = Xd[Xd[:, 0] > 0]
    message = "chunk sizes are unknown; call X.compute_chunk_sizes"
    with pytest.raises(ValueError, match=message):
        GaussianMixture(3).fit(filtered)
    gm = GaussianMixture(3, random_state=0).fit(X)
    with pytest.raises(ValueError, match=message):
        gm.predict(filtered)
    # what the message says to do works
    want = gm.predict(X[X[:, 0] > 0])
    np.testing.assert_array_equal(gm.predict(filtered.compute_chunk_sizes()).compute(), want)


def test_nan_and_infinity_with_scikit_learns_messages(data, synchronous):
    X, _ = data
    gm = GaussianMixture(3, random_state=0).fit(X)
    for bad, label in ((np.nan, "NaN"), (np.inf, "infinity")):
        X_bad = X.copy()
        X_bad[1500, 1] = bad
        Xd = da.from_array(X_bad, chunks=UNEVEN)
        with pytest.raises(ValueError, match=f"^Input X contains {label}") as in_memory:
            _WatchedMixture(3).fit(X_bad)
        # fit checks every block before it starts (as scikit-learn checks X)
        watched = _WatchedMixture(3)
        with pytest.raises(ValueError, match=f"^Input X contains {label}") as at_fit:
            watched.fit(Xd)
        assert watched.starts_ == []  # raised before the first EM iteration
        # scikit-learn's message, up to its advice on imputation
        assert str(in_memory.value).startswith(str(at_fit.value))
        message = str(at_fit.value).replace("_WatchedMixture", "GaussianMixture")
        # predictions check each block when it is computed
        for method in ("predict", "predict_proba", "score_samples"):
            lazy = getattr(gm, method)(Xd)
            with pytest.raises(ValueError, match="^Input X contains") as at_compute:
                lazy.compute()
            assert str(at_compute.value) == message
        with pytest.raises(ValueError, match="^Input X contains") as at_score:
            gm.score(Xd)
        assert str(at_score.value) == message


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_finite_values_whose_sum_overflows_are_accepted(data, synchronous):
    # scikit-learn accepts them (its check falls back to one value at a time)
    X, _ = data
    gm = GaussianMixture(3, random_state=0).fit(X)
    huge = np.full((10, 3), 1e308)
    np.testing.assert_array_equal(
        gm.score_samples(da.from_array(huge, chunks=4)).compute(), gm.score_samples(huge)
    )


# --------------------------------------------------------------------- a two-process cluster
class BlockError(RuntimeError):
    """What a block of a test's Dask array raises on a worker."""


def _failing_block(block, block_info=None, *, broken, flag=None):
    """The block itself, or BlockError for block ``broken`` (from the start, or once the file
    ``flag`` exists)."""
    if block_info[0]["chunk-location"][0] == broken and (flag is None or os.path.exists(flag)):
        raise BlockError(f"block {broken} cannot be read")
    return block


def _slow_block(block):
    time.sleep(0.1)
    return block


class _WatchedMixture(GaussianMixture):
    """Records when every EM iteration starts and ends, and runs ``before`` (if set) before
    iteration ``before_iter``."""

    def _iterate(self, fit_state, params):
        self.starts_.append(time.monotonic())
        if getattr(self, "before", None) and len(self.starts_) == self.before_iter:
            self.before()
        out = super()._iterate(fit_state, params)
        self.ends_.append(time.monotonic())
        return out

    def _start_fit(self, X, sample_weight):
        self.starts_, self.ends_ = [], []
        return super()._start_fit(X, sample_weight)


def _bounded(fn, seconds=CLUSTER_TIMEOUT):
    """fn() in a thread: its result or its exception, or a failed test after ``seconds``
    (a hang never blocks the test run)."""
    out = {}

    def run():
        try:
            out["result"] = fn()
        except BaseException as exc:  # noqa: BLE001  (re-raised in the test's thread)
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"no result from the cluster after {seconds} s (a hang)")
    if "error" in out:
        raise out["error"]
    return out["result"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A LocalCluster of two single-threaded worker processes on 127.0.0.1, its client the
    default scheduler; everything the cluster writes goes to a temporary folder."""
    distributed = pytest.importorskip("distributed", reason="pip install 'caproute[dask]'")
    folder = tmp_path_factory.mktemp("dask-cluster")
    # compiled kernels in Numba's disk cache before the workers start, so that they load
    # them instead of compiling them each (when this module's other tests have not yet)
    GaussianMixture(2, random_state=0).fit(np.random.RandomState(0).randn(50, 3))
    settings = {
        "temporary-directory": str(folder),
        "distributed.comm.timeouts.connect": "60s",
    }
    with (
        dask.config.set(settings),
        distributed.LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
            local_directory=str(folder),
        ) as local_cluster,
        distributed.Client(local_cluster, timeout="60s") as client,
    ):
        client.wait_for_workers(2, timeout=60)
        yield local_cluster, client, folder


@pytest.fixture
def client(cluster):
    """The cluster's client, with two workers running (a test may have killed one)."""
    _, client, _ = cluster
    client.wait_for_workers(2, timeout=60)
    assert dask.base.get_scheduler() == client.get  # the fits below run on the cluster
    return client


def _worker_pids(client):
    return _bounded(lambda: client.run(os.getpid), 60)


@pytest.mark.parametrize(
    ("init_params", "covariance_type", "weights"),
    [("kmeans", "full", "numpy"), ("k-means++", "tied", None), ("random", "diag", "dask")],
)
def test_cluster_fit_equals_in_memory(data, client, init_params, covariance_type, weights):
    from distributed import get_task_stream

    X, w = data
    Xd = da.from_array(X, chunks=UNEVEN)
    params = dict(
        n_components=3, covariance_type=covariance_type, init_params=init_params, random_state=1
    )
    want = _fit_quietly(GaussianMixture(**params), X, None if weights is None else w)
    with get_task_stream(client) as tasks:
        got = _bounded(lambda: _fit_quietly(GaussianMixture(**params), Xd, _weights(weights, w)))
    assert {task["worker"] for task in tasks.data} == set(client.scheduler_info()["workers"])
    assert_same_fit(got, want)
    _bounded(lambda: assert_same_predictions(got, Xd, X))


def test_cluster_block_error_surfaces(data, client, tmp_path):
    X, _ = data
    Xd = da.from_array(X, chunks=UNEVEN)
    failing = Xd.map_blocks(_failing_block, broken=3, dtype=X.dtype)
    # raised by the check of every block that fit starts with
    with pytest.raises(BlockError, match=r"^block 3 cannot be read$"):
        _bounded(lambda: GaussianMixture(3).fit(failing))
    # raised inside an EM iteration (the block fails from the second one on)
    flag = tmp_path / "broken"
    failing_later = Xd.map_blocks(_failing_block, broken=3, flag=str(flag), dtype=X.dtype)
    gm = _WatchedMixture(3, random_state=0)
    gm.before, gm.before_iter = flag.touch, 2
    with pytest.raises(BlockError, match=r"^block 3 cannot be read$"):
        _bounded(lambda: gm.fit(failing_later))
    assert len(gm.starts_) == 2 and len(gm.ends_) == 1
    # and when a lazy prediction is computed
    fitted = GaussianMixture(3, random_state=0).fit(X)
    with pytest.raises(BlockError, match=r"^block 3 cannot be read$"):
        _bounded(lambda: fitted.predict_proba(failing).compute())


def _fit_killing_a_worker(client, Xd, params):
    """Fit ``Xd`` (whose blocks take 0.1 s each) and SIGKILL one worker process while it
    holds a task of a block in the second EM iteration; returns (the estimator, its error or
    None, the kill's time, the killed pid)."""
    address, pid = next(iter(_worker_pids(client).items()))
    gm = _WatchedMixture(**params)
    result = {}

    def fit():
        try:
            _fit_quietly(gm, Xd)
        except Exception as exc:  # noqa: BLE001  (the test asserts what it is)
            result["error"] = exc

    thread = threading.Thread(target=fit, daemon=True)
    thread.start()
    deadline = time.monotonic() + CLUSTER_TIMEOUT
    while len(getattr(gm, "starts_", ())) < 2:
        if not thread.is_alive():
            raise AssertionError("the fit ended before its second iteration") from result.get(
                "error"
            )
        assert time.monotonic() < deadline, "the fit never reached its second iteration"
        time.sleep(0.005)
    # the worker has a block's task of this iteration (running or queued on it)
    while not any("_slow_block" in str(key) for key in client.processing()[address]):
        assert thread.is_alive() and time.monotonic() < deadline, "the worker got no block"
        time.sleep(0.005)
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    thread.join(CLUSTER_TIMEOUT)
    if thread.is_alive():
        pytest.fail(f"the fit hung after a worker was killed (no end after {CLUSTER_TIMEOUT} s)")
    return gm, result.get("error"), killed_at, pid


def test_cluster_worker_killed_mid_fit_is_recomputed(data, client):
    # The scheduler reassigns the killed worker's tasks and recomputes the blocks it held
    # (their graph is there); the nanny starts a new worker process. The fit finishes with
    # the numbers of an undisturbed fit, bit for bit.
    X, _ = data
    Xd = da.from_array(X, chunks=(300, 3))
    params = dict(n_components=3, covariance_type="diag", random_state=1)
    undisturbed = _bounded(lambda: _fit_quietly(GaussianMixture(**params), Xd))
    gm, error, killed_at, pid = _fit_killing_a_worker(
        client, Xd.map_blocks(_slow_block, dtype=X.dtype), params
    )
    assert error is None
    assert gm.starts_[1] < killed_at < gm.ends_[1]  # killed during the second iteration
    assert gm.n_iter_ >= 3
    assert_identical_fit(gm, undisturbed)
    assert_same_fit(gm, _fit_quietly(GaussianMixture(**params), X))
    client.wait_for_workers(2, timeout=60)
    assert pid not in _worker_pids(client).values()


def test_cluster_worker_killed_without_retries_raises_killed_worker(data, cluster):
    # With no failures allowed, the tasks that were running on the killed worker fail: the
    # fit raises distributed's KilledWorker, naming one, promptly.
    from distributed import KilledWorker

    local_cluster, client, _ = cluster
    client.wait_for_workers(2, timeout=60)
    X, _ = data
    Xd = da.from_array(X, chunks=(300, 3)).map_blocks(_slow_block, dtype=X.dtype)
    scheduler = local_cluster.scheduler
    allowed = scheduler.allowed_failures
    scheduler.allowed_failures = 0
    try:
        gm, error, killed_at, _ = _fit_killing_a_worker(
            client, Xd, dict(n_components=3, random_state=1)
        )
    finally:
        scheduler.allowed_failures = allowed
    assert isinstance(error, KilledWorker)
    assert "died while running it" in str(error)
    assert gm.starts_[1] < killed_at and len(gm.ends_) == 1  # it failed in iteration 2
    assert not hasattr(gm, "means_")
    client.wait_for_workers(2, timeout=60)
