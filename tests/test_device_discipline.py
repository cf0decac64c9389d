"""Device discipline, checked without a GPU: array_api_strict's "device1" refuses conversion to
NumPy and mixing with host arrays as CuPy does. Every public function, estimator method and model
method keeps device input in its namespace, on its device and in its dtype, with the host's
numbers; data moves between host and device only through ``to_device``; and the host waits for
the device (``bool``, ``float``, ``int``, a copy to the host) a constant number of times per
routing call and per fit iteration, however many iterations, chunks or routing steps there are.
"""

import collections
import warnings

import array_api_strict
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

import caproute as cr
from caproute import models
from caproute._backend import to_device
from caproute.cluster import DynamicRoutingClustering, EMRoutingClustering
from caproute.mixture import GaussianMixture
from tests._helpers import DEVICE1_NAME, assert_close, assert_placed

DEVICE1 = array_api_strict.Device(DEVICE1_NAME)
HOST = array_api_strict.__array_namespace_info__().default_device()


def on_device1(a, dtype=None):
    return array_api_strict.asarray(np.asarray(a, dtype=dtype), device=DEVICE1)


def _blobs(n=150, seed=1):
    r = np.random.default_rng(seed)
    X = r.normal(size=(n, 2))
    X[: n // 3] += [6, 0]
    X[n // 3 : 2 * n // 3] += [0, 6]
    return X


# -- moving data -------------------------------------------------------------------------------
def test_device1_refuses_implicit_conversion_and_mixing():
    x = on_device1([1.0, 2.0])
    with pytest.raises(RuntimeError, match="Can't convert array"):
        np.asarray(x)
    with pytest.raises(ValueError, match="can not be combined"):
        x + array_api_strict.asarray([1.0, 2.0])


def test_to_device_and_to_numpy_move_explicitly():
    x = on_device1([1.0, 2.0])
    host = cr.to_numpy(x)
    assert type(host) is np.ndarray
    np.testing.assert_array_equal(host, [1.0, 2.0])
    back = to_device(host, array_api_strict, device=DEVICE1)
    assert_placed(back, xp=array_api_strict, device=DEVICE1, dtype="float64")
    assert to_device(x, array_api_strict, device=DEVICE1) is x  # already there: no copy
    assert_placed(to_device(x, array_api_strict, device=HOST), device=HOST)
    assert_placed(to_device(host, array_api_strict), device=HOST)  # the default device


def test_arrays_on_another_device_are_refused_by_name():
    u = on_device1(np.ones((1, 3, 2, 4)))
    with pytest.raises(ValueError, match=r"`bias` must be on the same device as `u_hat`"):
        cr.dynamic_routing(u, bias=array_api_strict.asarray(np.ones((2, 4))))


# -- every public call keeps its results on the device -----------------------------------------
rng = np.random.default_rng(0)
U_HAT = rng.normal(size=(2, 6, 3, 4))
VOTES, A_IN = rng.normal(size=(2, 5, 3, 16)), rng.uniform(size=(2, 5))
U, W = rng.normal(size=(2, 6, 4)), 0.3 * rng.normal(size=(6, 3, 5, 4))

FUNCTIONS = {
    "squash": lambda d, kw: cr.squash(d(U_HAT), axis=2, **kw),
    "dynamic_routing": lambda d, kw: cr.dynamic_routing(
        d(U_HAT),
        3,
        bias=d(rng.normal(size=(3, 4))),
        initial_logits=d(np.zeros((6, 3))),
        return_coupling=True,
        **kw,
    ),
    "dense_dynamic_routing": lambda d, kw: cr.dense_dynamic_routing(
        d(U), d(W), 2, bias=d(np.ones((3, 5))), leaky=True, return_coupling=True, **kw
    ),
    "em_routing": lambda d, kw: cr.em_routing(
        d(VOTES),
        d(A_IN),
        d(np.linspace(-1, 1, 3)),
        d(np.full(3, 0.5)),
        3,
        initial_assignments=d(np.full((2, 5, 3), 1 / 3)),
        return_assignments=True,
        **kw,
    ),
}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_public_functions_stay_on_the_device(name, dtype):
    import functools

    state = rng.bit_generator.state
    host = FUNCTIONS[name](functools.partial(np.asarray, dtype=dtype), {"backend": "numpy"})
    rng.bit_generator.state = state
    got = FUNCTIONS[name](functools.partial(on_device1, dtype=dtype), {})
    host = host if isinstance(host, tuple) else (host,)
    got = got if isinstance(got, tuple) else (got,)
    for g, h in zip(got, host, strict=True):
        assert_close(g, h, xp=array_api_strict, device=DEVICE1, dtype=dtype)


@pytest.mark.parametrize("Estimator", [DynamicRoutingClustering, EMRoutingClustering])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_clusterer_methods_stay_on_the_device(Estimator, dtype):
    X = _blobs().astype(dtype)
    weights = np.linspace(0.5, 1.5, X.shape[0])
    fit_kw = {} if Estimator is DynamicRoutingClustering else {"sample_weight": weights}
    ref = Estimator(n_clusters=3, random_state=0, backend="numpy").fit(X, **fit_kw)
    Xd = on_device1(X)
    fit_kw = {k: on_device1(v, dtype) for k, v in fit_kw.items()}
    est = Estimator(n_clusters=3, random_state=0).fit(Xd, **fit_kw)
    dev = dict(xp=array_api_strict, device=DEVICE1)
    for name in ("cluster_centers_", "activations_"):
        assert_close(getattr(est, name), getattr(ref, name), dtype=dtype, **dev)
    for got, want in (
        (est.labels_, ref.labels_),
        (est.predict(Xd), ref.predict(X)),
        (est.active_clusters_, ref.active_clusters_),
    ):
        assert_placed(got, **dev)
        np.testing.assert_array_equal(cr.to_numpy(got), want)
    assert_close(est.transform(Xd), ref.transform(X), dtype=dtype, **dev)
    assert_close(
        Estimator(n_clusters=3, random_state=0).fit_transform(Xd, **fit_kw),
        ref.transform(X),
        dtype=dtype,
        **dev,
    )
    labels = Estimator(n_clusters=3, random_state=0).fit_predict(Xd, **fit_kw)
    assert_placed(labels, **dev)
    np.testing.assert_array_equal(cr.to_numpy(labels), ref.labels_)
    if Estimator is EMRoutingClustering:
        assert_close(est.cluster_variances_, ref.cluster_variances_, dtype=dtype, **dev)
        assert_close(est.score_samples(Xd), ref.score_samples(X), dtype=dtype, **dev)
        score = est.score(Xd)
        assert isinstance(score, float)
        np.testing.assert_allclose(score, ref.score(X), rtol=1e-4 if dtype == "float32" else 1e-10)


@pytest.mark.parametrize(
    "build",
    [
        lambda: models.capsnet(conv_channels=8, primary_types=4, class_dim=8),
        lambda: models.matrix_capsnet(4, 4, 4, 4),
    ],
    ids=["capsnet", "matrix_capsnet"],
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_model_methods_stay_on_the_device(build, dtype):
    net = build().initialize(random_state=1)
    images = np.random.default_rng(2).random((3, 28, 28))
    dev = dict(xp=array_api_strict, device=DEVICE1)
    kw = dict(dtype=dtype, batch_size=2)
    assert_close(
        net.predict_scores(on_device1(images), **kw),
        net.predict_scores(images, backend="numpy", **kw),
        dtype=dtype,
        **dev,
    )
    assert_close(
        net.predict_proba(on_device1(images), **kw),
        net.predict_proba(images, backend="numpy", **kw),
        dtype=dtype,
        **dev,
    )
    labels = net.predict(on_device1((images * 255).astype(np.uint8)), **kw)
    assert_placed(labels, **dev)
    np.testing.assert_array_equal(
        cr.to_numpy(labels), net.predict((images * 255).astype(np.uint8), backend="numpy", **kw)
    )
    batch = images[..., None].astype(dtype)
    out = net.forward(on_device1(batch))
    want = net.forward(batch, backend="numpy")
    for g, h in zip(
        out if isinstance(out, tuple) else (out,),
        want if isinstance(want, tuple) else (want,),
        strict=True,
    ):
        assert_close(g, h, dtype=dtype, **dev)


# -- host synchronisations ---------------------------------------------------------------------
# What makes the host wait for the device, on CuPy as here: a Python scalar out of an array and
# a copy to the host (to_device towards the CPU; __array__ and __dlpack__ would be implicit ones).
SYNCS = ("__bool__", "__float__", "__int__", "__index__", "__complex__", "__array__", "__dlpack__")


@pytest.fixture
def syncs(monkeypatch):
    """Counts, per kind, how often the host waits for an array on device1."""
    Array = type(array_api_strict.asarray(0.0))
    counts = collections.Counter()

    def spy(name, real):
        def wrapper(self, *args, **kwargs):
            if self.device == DEVICE1:
                counts[name] += 1
            return real(self, *args, **kwargs)

        return wrapper

    for name in SYNCS:
        monkeypatch.setattr(Array, name, spy(name, getattr(Array, name)))
    real_to_device = Array.to_device

    def to_device_spy(self, target, /, **kwargs):
        if self.device == DEVICE1 and target != DEVICE1:
            counts["to_device"] += 1
        return real_to_device(self, target, **kwargs)

    monkeypatch.setattr(Array, "to_device", to_device_spy)

    def count(func):
        """How many times ``func()`` makes the host wait (``count.last`` has them by kind)."""
        counts.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            func()
        count.last = dict(counts)
        return sum(counts.values())

    return count


def test_the_counter_counts(syncs):
    x = on_device1([1.0, 2.0])
    assert syncs(lambda: (bool(x[0] > 0), float(x[0]), int(x[1]), cr.to_numpy(x))) == 4
    assert syncs(lambda: x * 2.0 + x) == 0


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_a_routing_call_waits_a_constant_number_of_times(syncs, name):
    calls = {
        "squash": lambda n: cr.squash(on_device1(U_HAT)),
        "dynamic_routing": lambda n: cr.dynamic_routing(
            on_device1(U_HAT), n, bias=on_device1(np.ones((3, 4))), return_coupling=True
        ),
        "dense_dynamic_routing": lambda n: cr.dense_dynamic_routing(
            on_device1(U), on_device1(W), n
        ),
        "em_routing": lambda n: cr.em_routing(
            on_device1(VOTES), on_device1(A_IN), 0.0, 0.0, n, return_assignments=True
        ),
    }
    one, many = syncs(lambda: calls[name](1)), syncs(lambda: calls[name](12))
    assert one == many, "the routing iterations wait for the device"
    assert many <= 10  # validation (finite input, activations in range) and finite output


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("init_params", ["kmeans", "random"])
def test_a_gaussian_mixture_iteration_waits_at_most_twice(syncs, covariance_type, init_params):
    Xd = on_device1(_blobs(300))

    def fit(max_iter, chunk_size=None):
        return lambda: GaussianMixture(
            3,
            covariance_type=covariance_type,
            init_params=init_params,
            max_iter=max_iter,
            tol=0.0,  # never converges: exactly max_iter iterations
            chunk_size=chunk_size,
            random_state=0,
        ).fit(Xd)

    two, ten = syncs(fit(2)), syncs(fit(10))
    # per iteration: the lower bound (a float), the check that the covariances factorised
    assert (ten - two) / 8 <= 2
    # per fit: validating X (NaN, inf), KMeans's copy of X to the host, the first factorisation
    assert two - 2 * 2 <= 4
    assert syncs(fit(2, chunk_size=7)) == two, "the chunks of an E-step wait for the device"


@pytest.mark.parametrize("Estimator", [DynamicRoutingClustering, EMRoutingClustering])
def test_a_clusterer_iteration_waits_at_most_once(syncs, Estimator):
    Xd = on_device1(_blobs(300))

    def fit(max_iter):
        return lambda: Estimator(n_clusters=3, max_iter=max_iter, tol=0.0, random_state=0).fit(Xd)

    two, ten = syncs(fit(2)), syncs(fit(10))
    assert (ten - two) / 8 <= 1  # the parents' shift, compared with tol


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++"])
def test_kmeans_copies_x_to_the_host_once_per_fit(syncs, init_params):
    Xd = on_device1(_blobs(300))
    syncs(lambda: GaussianMixture(3, init_params=init_params, n_init=3, random_state=0).fit(Xd))
    assert syncs.last.get("to_device") == 1


@pytest.mark.parametrize("name", ["capsnet-fashion-mnist", "matrix-capsnet-fashion-mnist"])
def test_shipped_models_stay_on_the_device(name):
    from caproute.datasets import load_fashion_mnist_subset

    net = models.load_pretrained(name)
    images = load_fashion_mnist_subset()[0][:4]
    dev = dict(xp=array_api_strict, device=DEVICE1)
    assert_close(
        net.predict_proba(on_device1(images)),
        net.predict_proba(images, backend="numpy"),
        dtype="float32",
        **dev,
    )
    labels = net.predict(on_device1(images))
    assert_placed(labels, **dev)
    np.testing.assert_array_equal(cr.to_numpy(labels), net.predict(images, backend="numpy"))
