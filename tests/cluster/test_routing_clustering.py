import re
import warnings

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score

import caproute as cr
from caproute.cluster import DynamicRoutingClustering, EMRoutingClustering
from tests._helpers import as_xp, assert_placed, device_of

ESTIMATORS = [DynamicRoutingClustering, EMRoutingClustering]


@pytest.fixture(params=ESTIMATORS, ids=lambda c: c.__name__)
def Estimator(request):
    return request.param


def _blobs(n=300, seed=0, std=0.5):
    return make_blobs(
        n_samples=n, centers=[[0, 0], [6, 0], [0, 6], [6, 6]], cluster_std=std, random_state=seed
    )


def test_perfect_labels_on_separated_blobs(Estimator):
    X, y = _blobs()
    labels = Estimator(n_clusters=4, random_state=0).fit_predict(X)
    assert adjusted_rand_score(y, labels) == 1.0


def test_reproducible_with_random_state(Estimator):
    X, _ = make_blobs(n_samples=200, centers=5, cluster_std=2.0, random_state=3)
    a = Estimator(n_clusters=5, random_state=7).fit(X)
    b = Estimator(n_clusters=5, random_state=7).fit(X)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    c = Estimator(n_clusters=5, random_state=8, max_iter=1).fit(X)
    d = Estimator(n_clusters=5, random_state=7, max_iter=1).fit(X)
    assert not np.allclose(c.cluster_centers_, d.cluster_centers_)


def test_fitted_attributes_follow_namespace_and_dtype(Estimator, xp, dtype):
    X, _ = _blobs(n=120)
    ref = Estimator(n_clusters=4, random_state=0).fit(X.astype(dtype))
    est = Estimator(n_clusters=4, random_state=0).fit(as_xp(X, xp, dtype))
    Xd = as_xp(X, xp, dtype)
    dev = device_of(xp)
    for name in ("cluster_centers_", "activations_", "labels_", "active_clusters_"):
        attr = getattr(est, name)
        assert type(attr) is type(Xd), name
        assert_placed(attr, xp=xp, device=dev)
    assert est.cluster_centers_.dtype == Xd.dtype and est.activations_.dtype == Xd.dtype
    assert_placed(est.transform(Xd), xp=xp, device=dev, dtype=dtype)
    assert_placed(est.predict(Xd), xp=xp, device=dev)
    rtol = 1e-4 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(
        cr.to_numpy(est.cluster_centers_), ref.cluster_centers_, rtol=rtol, atol=rtol
    )
    np.testing.assert_array_equal(cr.to_numpy(est.labels_), ref.labels_)
    np.testing.assert_array_equal(cr.to_numpy(est.predict(Xd)), ref.labels_)


def test_fit_predict_equals_fit_then_predict(Estimator):
    X, _ = make_blobs(n_samples=150, centers=3, cluster_std=3.0, random_state=1)
    est = Estimator(n_clusters=3, random_state=0)
    labels = est.fit_predict(X)
    np.testing.assert_array_equal(labels, est.predict(X))
    np.testing.assert_array_equal(labels, np.argmax(est.transform(X), axis=1))


def test_transform_rows_sum_to_one(Estimator):
    X, _ = _blobs(n=80)
    R = Estimator(n_clusters=4, random_state=0).fit(X).transform(X)
    assert R.shape == (80, 4)
    np.testing.assert_allclose(R.sum(axis=1), 1.0, rtol=1e-12)


def test_leaky_dynamic_routing_lets_outliers_route_nowhere():
    X, _ = _blobs(n=200)
    est = DynamicRoutingClustering(n_clusters=4, leaky=True, random_state=0).fit(X)
    couplings = est.transform(np.vstack([X[:5], [[3.0, 3.0]]]))
    assert np.all(couplings.sum(axis=1) < 1.0)
    # the point between all four blobs agrees least with every parent
    assert couplings[-1].sum() < couplings[:5].sum(axis=1).min()


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_one_routing_iteration_per_fit_step(Estimator, backend, monkeypatch):
    """Every fit step is one call of the routing-step kernel chosen once per fit: the public
    (validating) routing functions are never called, and nothing re-selects the kernel."""
    import caproute._backend.dispatch as dispatch
    import caproute.routing as routing

    op = "dynamic_routing_step" if Estimator is DynamicRoutingClustering else "em_routing_step"
    real_select = dispatch.select_impl
    selections, step_calls = [], []

    def counting_select(name, xp, backend=None):
        plan = real_select(name, xp, backend)
        selections.append((name, plan.impl))
        if name != op:
            return plan

        def counted(*args, **kwargs):
            step_calls.append(args[0].shape)
            return plan.func(*args, **kwargs)

        return dispatch.Plan(plan.impl, plan.xp, counted, plan.move_to_device)

    def forbidden(*args, **kwargs):
        raise AssertionError("a fit step went through a public routing function")

    monkeypatch.setattr("caproute.cluster._base.select_impl", counting_select)
    for name in ("dynamic_routing", "em_routing", "dense_dynamic_routing"):
        monkeypatch.setattr(routing, name, forbidden)
        monkeypatch.setattr(cr, name, forbidden)
    X, _ = _blobs(n=100)
    est = Estimator(n_clusters=4, random_state=0, backend=backend).fit(X)
    assert selections == [(op, {"numpy": "reference", "numba": "numba"}[backend])]
    assert len(step_calls) == est.n_iter_ > 1


def test_warm_start_continues_where_the_fit_stopped(Estimator):
    X, _ = _blobs(n=200, std=1.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        once = Estimator(n_clusters=4, random_state=0, max_iter=10, tol=0.0).fit(X)
        warm = Estimator(n_clusters=4, random_state=0, max_iter=5, tol=0.0, warm_start=True)
        warm.fit(X)
        warm.fit(X)
    assert warm.n_iter_ == 5
    np.testing.assert_allclose(warm.cluster_centers_, once.cluster_centers_, rtol=1e-6)


def test_n_init_runs_and_verbose_output(Estimator, capsys):
    X, _ = _blobs(n=200, std=1.5)
    est = Estimator(n_clusters=4, random_state=0, n_init=3, verbose=2, verbose_interval=1).fit(X)
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("Initialization ")][::2] == [
        "Initialization 0",
        "Initialization 1",
        "Initialization 2",
    ]
    assert "shift" in out and "Initialization converged." in out
    again = Estimator(n_clusters=4, random_state=0, n_init=3).fit(X)
    np.testing.assert_array_equal(est.labels_, again.labels_)


def test_n_iter_is_deprecated_for_max_iter(Estimator):
    X, _ = _blobs(n=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.warns(FutureWarning, match=r"`n_iter` was renamed `max_iter` in caproute 0\.2"):
            old = Estimator(n_clusters=4, random_state=0, tol=0.0, n_iter=3).fit(X)
        new = Estimator(n_clusters=4, random_state=0, tol=0.0, max_iter=3).fit(X)
    assert old.n_iter_ == new.n_iter_ == 3
    np.testing.assert_array_equal(old.cluster_centers_, new.cluster_centers_)


def test_convergence_warning_and_tolerance(Estimator):
    X, _ = make_blobs(n_samples=200, centers=4, cluster_std=2.5, random_state=2)
    with pytest.warns(
        ConvergenceWarning,
        match=rf"{Estimator.__name__} did not converge after max_iter=2 iterations",
    ):
        est = Estimator(n_clusters=4, max_iter=2, tol=0.0, random_state=0).fit(X)
    assert est.n_iter_ == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        loose = Estimator(n_clusters=4, max_iter=300, tol=1e-3, random_state=0).fit(X)
    assert 1 < loose.n_iter_ < 300


def test_init_array_is_used(Estimator):
    X, y = _blobs(n=200)
    init = np.array([[6.0, 6.0], [0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    est = Estimator(n_clusters=4, init=init, max_iter=50).fit(X)
    # the clusters keep the order of the initial centres they grew from
    np.testing.assert_allclose(est.cluster_centers_, init, atol=0.3)
    with pytest.raises(
        ValueError, match=re.escape("The shape of the initial centers (3, 2) does not match")
    ):
        Estimator(n_clusters=4, init=init[:3]).fit(X)


def test_random_init(Estimator):
    X, y = _blobs(n=200)
    labels = Estimator(n_clusters=4, init="random", random_state=0).fit_predict(X)
    assert adjusted_rand_score(y, labels) > 0.7


def test_labels_are_consecutive_from_zero(Estimator):
    # fewer distinct points than clusters: some parents end up owning nothing
    X = np.repeat(np.array([[0.0, 0.0], [5.0, 5.0], [0.0, 5.0]]), 10, axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = Estimator(n_clusters=6, random_state=0, max_iter=20).fit(X)
    used = np.unique(est.labels_)
    np.testing.assert_array_equal(used, np.arange(used.size))
    assert used.size == 3


def test_em_clusters_switch_themselves_off():
    X, y = make_blobs(n_samples=600, centers=[[0, 0], [8, 0], [0, 8]], random_state=0)
    est = EMRoutingClustering(
        n_clusters=6, beta_a=-2.0, inverse_temperature=3.0, random_state=0
    ).fit(X)
    assert est.n_active_clusters_ == 3
    assert est.active_clusters_.sum() == 3
    assert np.all(est.activations_[~est.active_clusters_] < 0.05)
    assert adjusted_rand_score(y, est.labels_) == 1.0
    # with the neutral defaults every parent stays on
    assert EMRoutingClustering(n_clusters=6, random_state=0).fit(X).n_active_clusters_ == 6


def test_em_sample_weight_acts_as_repetition_with_fixed_init():
    rng = np.random.RandomState(42)
    X = rng.rand(15, 4)
    sw = rng.randint(0, 5, size=15)
    init = X[np.flatnonzero(sw)[:3]]
    weighted = EMRoutingClustering(n_clusters=3, init=init, max_iter=30).fit(X, sample_weight=sw)
    repeated = EMRoutingClustering(n_clusters=3, init=init, max_iter=30).fit(
        np.repeat(X, sw, axis=0)
    )
    np.testing.assert_allclose(weighted.cluster_centers_, repeated.cluster_centers_, rtol=1e-10)
    np.testing.assert_allclose(weighted.activations_, repeated.activations_, rtol=1e-10)
    np.testing.assert_array_equal(weighted.predict(X), repeated.predict(X))


def test_em_score_and_variances():
    X, _ = _blobs(n=300, std=0.5)
    est = EMRoutingClustering(n_clusters=4, random_state=0).fit(X)
    assert est.score(X) > est.score(X + 3.0)
    np.testing.assert_allclose(np.sort(np.sqrt(est.cluster_variances_).ravel()), 0.5, rtol=0.25)
    assert est.score_samples(X).shape == (300,)


def test_mixed_namespaces_rejected(Estimator):
    xs = pytest.importorskip("array_api_strict")
    X, _ = _blobs(n=40)
    est = Estimator(n_clusters=2, random_state=0).fit(xs.asarray(X))
    with pytest.raises(
        ValueError,
        match=rf"Inputs passed to {Estimator.__name__}.predict\(\) must use the same namespace",
    ):
        est.predict(X)
    # plain lists are converted into the fitted namespace
    assert type(est.predict(X.tolist())) is type(xs.asarray(X))


def _kmeans_error(X, **kwargs):
    try:
        KMeans(**kwargs).fit(X)
    except Exception as exc:  # noqa: BLE001 - we compare whatever scikit-learn raises
        return type(exc), str(exc)
    raise AssertionError("KMeans accepted the input")


@pytest.mark.parametrize(
    "X, n_clusters",
    [
        (np.array([[0.0, np.nan], [1.0, 1.0], [2.0, 2.0]]), 2),
        (np.array([[0.0, np.inf], [1.0, 1.0], [2.0, 2.0]]), 2),
        (np.empty((0, 2)), 2),
        (np.ones((1, 2)), 2),
        (np.ones((3, 2)), 4),
        (np.array([["a", "b"], ["c", "d"], ["e", "f"]]), 2),
        (np.array([[1 + 1j, 2.0], [1.0, 2.0], [3.0, 4.0]]), 2),
        (np.ones(5), 2),
    ],
    ids=[
        "nan",
        "inf",
        "empty",
        "one-sample",
        "more-clusters-than-samples",
        "strings",
        "complex",
        "1d",
    ],
)
def test_bad_input_matches_scikit_learn(Estimator, X, n_clusters):
    exc_type, message = _kmeans_error(X, n_clusters=n_clusters)
    message = message.replace("KMeans", Estimator.__name__)
    with pytest.raises(exc_type) as info:
        Estimator(n_clusters=n_clusters).fit(X)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "params, match",
    [
        (
            {"n_clusters": 0},
            r"The 'n_clusters' parameter of {name} must be an int in the range \[1, inf\)\. Got 0 instead\.",
        ),
        (
            {"n_iter": 0},
            r"The 'n_iter' parameter of {name} must be an int in the range \[1, inf\)\. Got 0 instead\.",
        ),
        (
            {"max_iter": 0},
            r"The 'max_iter' parameter of {name} must be an int in the range \[1, inf\)\. Got 0 instead\.",
        ),
        (
            {"n_init": 0},
            r"The 'n_init' parameter of {name} must be an int in the range \[1, inf\)\. Got 0 instead\.",
        ),
        (
            {"tol": -1.0},
            r"The 'tol' parameter of {name} must be a float in the range \[0\.0, inf\)\. Got -1\.0 instead\.",
        ),
        ({"init": "kmeans"}, r"The 'init' parameter of {name} must be a str among"),
        ({"backend": "torch"}, r"The 'backend' parameter of {name} must be a str among"),
    ],
)
def test_bad_parameters(Estimator, params, match):
    X, _ = _blobs(n=40)
    with pytest.raises(ValueError, match=match.format(name=Estimator.__name__)):
        Estimator(**params).fit(X)


def test_em_bad_routing_options():
    X, _ = _blobs(n=40)
    with pytest.raises(
        ValueError,
        match=r"The 'min_var' parameter of EMRoutingClustering must be a float in the range \[0\.0, inf\)\. Got -1\.0",
    ):
        EMRoutingClustering(min_var=-1.0).fit(X)
    with pytest.raises(
        ValueError, match=r"`beta_u` must be a scalar, \(4, 2\), \(4,\); got shape \(3,\)\."
    ):
        EMRoutingClustering(n_clusters=4, beta_u=np.zeros(3)).fit(X)


def test_backend_option_is_honoured(Estimator, monkeypatch):
    import caproute._backend.dispatch as dispatch

    X, _ = _blobs(n=60)
    if cr._backend.cupy_status()[0] is None:
        with pytest.raises(cr.BackendUnavailableError, match=r"backend='cupy' cannot run: "):
            Estimator(n_clusters=2, backend="cupy").fit(X)
    seen = []
    real = dispatch.select_impl

    def spy(op, xp, backend=None):
        seen.append(backend)
        return real(op, xp, backend)

    monkeypatch.setattr("caproute.cluster._base.select_impl", spy)
    Estimator(n_clusters=2, backend="numpy", random_state=0).fit(X)
    assert seen and set(seen) == {"numpy"}
