"""caproute.mixture.GaussianMixture against scikit-learn's GaussianMixture, number for number."""

import re
import warnings

import array_api_compat
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SKGaussianMixture

import caproute as cr
from caproute.mixture import GaussianMixture
from tests._helpers import assert_close, device_of, tolerance

COV_TYPES = ["full", "tied", "diag", "spherical"]
INITS = ["kmeans", "k-means++", "random", "random_from_data"]
ATTRIBUTES = ["weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"]


def _data(seed=0, n=(200, 150, 100)):
    rng = np.random.RandomState(seed)
    return np.vstack(
        [
            rng.randn(n[0], 3),
            rng.randn(n[1], 3) * 0.5 + [4, 4, 0],
            rng.randn(n[2], 3) * [1, 2, 0.3] + [0, 5, 5],
        ]
    )


def _initial_params(X, covariance_type, seed=3):
    rng = np.random.RandomState(seed)
    K, D = 3, X.shape[1]
    weights = rng.dirichlet(np.ones(K))
    means = X[rng.choice(len(X), K, replace=False)]
    eye = np.eye(D)
    precisions = {
        "full": np.stack([eye * (1 + k) for k in range(K)]),
        "tied": eye * 0.5,
        "diag": np.ones((K, D)) * np.arange(1, K + 1)[:, None],
        "spherical": np.arange(1.0, K + 1),
    }[covariance_type]
    return dict(weights_init=weights, means_init=means, precisions_init=precisions)


def assert_same_fit(ours, theirs, X, dtype):
    tol = tolerance(dtype, "sklearn")
    for name in ATTRIBUTES:
        got, want = getattr(ours, name), getattr(theirs, name)
        assert got.dtype == want.dtype, name
        np.testing.assert_allclose(got, want, err_msg=name, **tol)
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.converged_ == theirs.converged_
    assert ours.n_features_in_ == theirs.n_features_in_
    np.testing.assert_allclose(ours.lower_bound_, theirs.lower_bound_, **tol)
    np.testing.assert_allclose(ours.lower_bounds_, theirs.lower_bounds_, **tol)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), **tol)
    np.testing.assert_allclose(ours.score_samples(X), theirs.score_samples(X), **tol)
    np.testing.assert_allclose(ours.score(X), theirs.score(X), **tol)
    np.testing.assert_allclose(ours.bic(X), theirs.bic(X), **tol)
    np.testing.assert_allclose(ours.aic(X), theirs.aic(X), **tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_same_fit_from_given_initial_parameters(covariance_type, dtype):
    X = _data().astype(dtype)
    inits = {k: np.asarray(v, dtype=dtype) for k, v in _initial_params(X, covariance_type).items()}
    params = dict(n_components=3, covariance_type=covariance_type, max_iter=300, tol=1e-4, **inits)
    ours = GaussianMixture(**params).fit(X)
    theirs = SKGaussianMixture(**params).fit(X)
    assert_same_fit(ours, theirs, X, dtype)


def test_float32_data_stays_float32_with_float64_initial_parameters():
    # scikit-learn keeps float64 initial weights in a float32 fit; caproute follows the data
    X = _data().astype(np.float32)
    gm = GaussianMixture(3, covariance_type="diag", **_initial_params(X, "diag")).fit(X)
    for name in ATTRIBUTES:
        assert getattr(gm, name).dtype == np.float32, name


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("init_params", INITS)
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_same_fit_from_scikit_learn_initialisation(covariance_type, init_params, dtype):
    X = _data(seed=1).astype(dtype)
    params = dict(
        n_components=3, covariance_type=covariance_type, init_params=init_params, random_state=7
    )
    ours = GaussianMixture(**params).fit(X)
    theirs = SKGaussianMixture(**params).fit(X)
    assert_same_fit(ours, theirs, X, dtype)
    assert ours.means_.dtype == np.dtype(dtype) and ours.weights_.dtype == np.dtype(dtype)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_n_init_keeps_the_same_best_initialisation(covariance_type):
    # Initialisations that reach the same optimum with the components in another order tie to
    # the last bit, and then which one is kept depends on rounding; this data's inits differ.
    rng = np.random.RandomState(5)
    X = np.vstack(
        [
            rng.randn(80, 2) * s + c
            for s, c in [(0.3, (0, 0)), (1.5, (3, 0)), (0.6, (0, 4)), (1.0, (5, 5))]
        ]
    )
    params = dict(
        n_components=5,
        covariance_type=covariance_type,
        init_params="random",
        random_state=2,
        n_init=4,
        max_iter=300,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = GaussianMixture(**params).fit(X)
        theirs = SKGaussianMixture(**params).fit(X)
        bounds = [
            SKGaussianMixture(**{**params, "n_init": 1, "random_state": s}).fit(X).lower_bound_
            for s in range(3)
        ]
    assert len(set(np.round(bounds, 6))) > 1  # the initialisations do lead to different optima
    assert_same_fit(ours, theirs, X, np.float64)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_chunked_fit_equals_whole_fit(covariance_type):
    X = _data(seed=2)
    params = dict(
        n_components=3, covariance_type=covariance_type, random_state=0, init_params="random"
    )
    whole = GaussianMixture(chunk_size=len(X), **params).fit(X)
    chunked = GaussianMixture(chunk_size=37, **params).fit(X)
    for name in ATTRIBUTES:
        np.testing.assert_allclose(
            getattr(chunked, name), getattr(whole, name), rtol=1e-10, atol=1e-12
        )
    assert chunked.n_iter_ == whole.n_iter_
    np.testing.assert_allclose(chunked.lower_bounds_, whole.lower_bounds_, rtol=1e-12)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_max_iter_zero_initialises_only(covariance_type):
    X = _data()
    params = dict(
        n_components=3,
        covariance_type=covariance_type,
        max_iter=0,
        random_state=0,
        init_params="k-means++",
        n_init=3,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # no warning for max_iter=0
        ours = GaussianMixture(**params).fit(X)
    theirs = SKGaussianMixture(**params).fit(X)
    assert ours.n_iter_ == 0 and ours.converged_ is False and ours.lower_bound_ == -np.inf
    assert ours.lower_bounds_ == [] == theirs.lower_bounds_
    for name in ATTRIBUTES:
        np.testing.assert_allclose(
            getattr(ours, name), getattr(theirs, name), rtol=1e-7, atol=1e-10
        )


def test_warm_start_continues_like_scikit_learn():
    X = _data()
    params = dict(n_components=3, random_state=0, max_iter=2, warm_start=True, n_init=5)
    ours, theirs = GaussianMixture(**params), SKGaussianMixture(**params)
    for _ in range(3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            ours.fit(X)
            theirs.fit(X)
        for name in ATTRIBUTES:
            np.testing.assert_allclose(
                getattr(ours, name), getattr(theirs, name), rtol=1e-7, atol=1e-10
            )
        np.testing.assert_allclose(ours.lower_bounds_, theirs.lower_bounds_, rtol=1e-7)


def test_convergence_warning_matches():
    X = _data()
    message = re.escape(
        "Best performing initialization did not converge. Try different init parameters, "
        "or increase max_iter, tol, or check for degenerate data."
    )
    for cls in (GaussianMixture, SKGaussianMixture):
        with pytest.warns(ConvergenceWarning, match=message):
            cls(3, max_iter=1, random_state=0).fit(X)


@pytest.mark.parametrize("verbose", [1, 2])
def test_verbose_output_matches(verbose, capsys):
    X = _data()
    GaussianMixture(3, verbose=verbose, verbose_interval=1, random_state=0, n_init=2).fit(X)
    ours = capsys.readouterr().out
    SKGaussianMixture(3, verbose=verbose, verbose_interval=1, random_state=0, n_init=2).fit(X)
    theirs = capsys.readouterr().out
    strip_times = lambda s: re.sub(r"time lapse [0-9.]+s", "time lapse Xs", s)  # noqa: E731
    assert strip_times(ours) == strip_times(theirs)
    assert "Initialization 1" in ours


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_fit_predict_equals_fit_then_predict_and_sample(covariance_type):
    X = _data()
    params = dict(n_components=3, covariance_type=covariance_type, random_state=4, max_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = GaussianMixture(**params)
        labels = ours.fit_predict(X)
        theirs = SKGaussianMixture(**params).fit(X)
    np.testing.assert_array_equal(labels, ours.predict(X))
    Xs, ys = ours.sample(50)
    Xt, yt = theirs.sample(50)
    np.testing.assert_allclose(Xs, Xt, rtol=1e-7, atol=1e-9)
    np.testing.assert_array_equal(ys, yt)
    assert Xs.dtype == np.float64 and ys.dtype == np.int64


def _sklearn_error(params, X):
    try:
        SKGaussianMixture(**params).fit(X)
    except Exception as exc:  # noqa: BLE001 - we compare whatever scikit-learn raises
        return type(exc), str(exc)
    raise AssertionError("scikit-learn accepted the input")


BAD_CASES = {
    "weights-not-normalised": dict(n_components=3, weights_init=[0.2, 0.2, 0.2]),
    "weights-out-of-range": dict(n_components=2, weights_init=[1.5, -0.5]),
    "weights-shape": dict(n_components=3, weights_init=[0.5, 0.5]),
    "means-shape": dict(n_components=2, means_init=np.zeros((2, 2))),
    "full-precision-not-pd": dict(
        n_components=2, precisions_init=np.stack([np.eye(3), -np.eye(3)])
    ),
    "tied-precision-asymmetric": dict(
        n_components=2,
        covariance_type="tied",
        precisions_init=np.array([[1, 2, 0], [0, 1, 0], [0, 0, 1.0]]),
    ),
    "diag-precision-negative": dict(
        n_components=2, covariance_type="diag", precisions_init=-np.ones((2, 3))
    ),
    "spherical-precision-shape": dict(
        n_components=2, covariance_type="spherical", precisions_init=np.ones(3)
    ),
    "n_components": dict(n_components=0),
    "covariance_type": dict(covariance_type="banana"),
    "init_params": dict(init_params="kmeans++"),
    "reg_covar": dict(reg_covar=-1.0),
    "max_iter": dict(max_iter=-1),
    "too-few-samples": dict(n_components=500),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_parameter_errors_match_scikit_learn(case):
    X = _data()
    params = BAD_CASES[case]
    exc_type, message = _sklearn_error(params, X)
    with pytest.raises(exc_type) as info:
        GaussianMixture(**params).fit(X)
    assert str(info.value) == message.replace("SKGaussianMixture", "GaussianMixture")


@pytest.mark.parametrize(
    "X",
    [
        np.array([[np.nan, 1.0], [1.0, 2.0], [3.0, 4.0]]),
        np.array([[np.inf, 1.0], [1.0, 2.0], [3.0, 4.0]]),
        np.ones((1, 2)),
        np.empty((0, 3)),
        np.array([["a", "b"], ["c", "d"]]),
        np.array([[1 + 1j, 1.0], [2.0, 3.0]]),
    ],
    ids=["nan", "inf", "one-sample", "empty", "strings", "complex"],
)
def test_bad_data_matches_scikit_learn(X):
    exc_type, message = _sklearn_error(dict(n_components=1), X)
    with pytest.raises(exc_type) as info:
        GaussianMixture(n_components=1).fit(X)
    assert str(info.value) == message


@pytest.mark.parametrize("covariance_type", COV_TYPES)
@pytest.mark.parametrize(
    "case",
    [
        "repeated-points",
        "fewer-distinct-than-components",
        "constant-feature",
        "huge-scale",
        "tiny-scale",
    ],
)
def test_degenerate_data_behaves_like_scikit_learn(covariance_type, case):
    rng = np.random.RandomState(0)
    X = {
        "repeated-points": np.repeat(rng.randn(5, 2), 20, axis=0),
        "fewer-distinct-than-components": np.repeat(rng.randn(2, 2), 10, axis=0),
        "constant-feature": np.column_stack([rng.randn(60, 2), np.full(60, 3.0)]),
        "huge-scale": rng.randn(60, 2) * 1e8,
        "tiny-scale": rng.randn(60, 2) * 1e-8,
    }[case]
    params = dict(n_components=3, covariance_type=covariance_type, random_state=0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            theirs = SKGaussianMixture(**params).fit(X)
    except ValueError as exc:
        with pytest.raises(ValueError, match=re.escape(str(exc))):
            GaussianMixture(**params).fit(X)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = GaussianMixture(**params).fit(X)
    for name in ATTRIBUTES:
        got = getattr(ours, name)
        assert np.all(np.isfinite(got)), name
        np.testing.assert_allclose(
            got, getattr(theirs, name), rtol=1e-6, atol=1e-6 * np.abs(getattr(theirs, name)).max()
        )
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


@pytest.mark.parametrize("init_params", INITS)
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_other_namespaces_keep_their_arrays(xp, init_params, covariance_type):
    """Every init (KMeans and k-means++ run on the host: X goes there once, the labels come
    back) gives the NumPy numbers, with every fitted attribute and result in X's namespace, on
    its device, in its dtype."""
    if xp.__name__ == "numpy":
        pytest.skip("NumPy is the case every other test covers")
    X = _data()
    params = dict(
        n_components=3, covariance_type=covariance_type, init_params=init_params, random_state=0
    )
    Xd = xp.asarray(X)
    dev = device_of(xp)
    ours = GaussianMixture(**params).fit(Xd)
    ref = GaussianMixture(**params, backend="numpy").fit(X)
    for name in ATTRIBUTES:
        assert_close(getattr(ours, name), getattr(ref, name), xp=xp, device=dev, dtype="float64")
    assert ours.n_iter_ == ref.n_iter_ and ours.converged_ == ref.converged_
    np.testing.assert_allclose(ours.lower_bounds_, ref.lower_bounds_, **tolerance("float64"))
    for got, want in (
        (ours.predict(Xd), ref.predict(X)),
        (ours.fit_predict(Xd), ref.fit_predict(X)),
    ):
        assert array_api_compat.device(got) == dev
        np.testing.assert_array_equal(cr.to_numpy(got), want)
    assert_close(ours.predict_proba(Xd), ref.predict_proba(X), xp=xp, device=dev)
    assert_close(ours.score_samples(Xd), ref.score_samples(X), xp=xp, device=dev)
    for method in ("score", "bic", "aic"):
        got = getattr(ours, method)(Xd)
        assert isinstance(got, float)
        np.testing.assert_allclose(got, getattr(ref, method)(X), **tolerance("float64"))
    (X_new, y_new), (X_want, y_want) = ours.sample(5), ref.sample(5)
    assert_close(X_new, X_want, xp=xp, device=dev, dtype="float64")
    assert array_api_compat.device(y_new) == dev
    np.testing.assert_array_equal(cr.to_numpy(y_new), y_want)


@pytest.mark.parametrize("init_params", INITS)
def test_other_namespaces_keep_float32(xp, init_params):
    if xp.__name__ == "numpy":
        pytest.skip("NumPy is the case every other test covers")
    X = _data().astype(np.float32)
    params = dict(n_components=3, init_params=init_params, random_state=0, backend="numpy")
    ours = GaussianMixture(**params).fit(xp.asarray(X))
    ref = GaussianMixture(**params).fit(X)
    for name in ATTRIBUTES:
        assert_close(
            getattr(ours, name), getattr(ref, name), xp=xp, device=device_of(xp), dtype="float32"
        )
