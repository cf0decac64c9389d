"""GaussianMixture's ``sample_weight``: a weight of k is exactly k copies of the point."""

import warnings

import numpy as np
import pytest

from caproute.mixture import GaussianMixture

COV_TYPES = ["full", "tied", "diag", "spherical"]


def _data(seed=0):
    rng = np.random.RandomState(seed)
    X = np.vstack([rng.randn(150, 3) + c for c in ([0, 0, 0], [4, 4, 0], [0, 5, 5])])
    w = rng.randint(0, 4, size=X.shape[0]).astype(np.float64)
    return X, w


def _inits(X, covariance_type, K=3):
    """Fixed initial parameters (the weighted and repeated fits must start alike)."""
    rng = np.random.RandomState(1)
    means = X[rng.choice(X.shape[0], K, replace=False)]
    D = X.shape[1]
    prec = {
        "full": np.stack([np.eye(D)] * K),
        "tied": np.eye(D),
        "diag": np.ones((K, D)),
        "spherical": np.ones(K),
    }[covariance_type]
    return {"weights_init": np.full(K, 1.0 / K), "means_init": means, "precisions_init": prec}


def _gm(covariance_type, X, **kw):
    return GaussianMixture(
        3,
        covariance_type=covariance_type,
        tol=1e-12,
        max_iter=25,
        **_inits(X, covariance_type),
        **kw,
    )


def _same(a, b, rtol=1e-10):
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        x, y = getattr(a, name), getattr(b, name)
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * np.abs(y).max(), err_msg=name)
    np.testing.assert_allclose(a.lower_bound_, b.lower_bound_, rtol=rtol)
    assert a.n_iter_ == b.n_iter_


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_integer_weights_are_repeated_rows(covariance_type, backend):
    X, w = _data()
    Xr = np.repeat(X, w.astype(int), axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        weighted = _gm(covariance_type, X, backend=backend).fit(X, sample_weight=w)
        repeated = _gm(covariance_type, X, backend=backend).fit(Xr)
    _same(weighted, repeated)
    assert weighted.n_samples_seen_ == pytest.approx(w.sum())
    # fit_predict labels the points given (the weights do not change a point's component)
    labels = _gm(covariance_type, X, backend=backend).fit_predict(X, sample_weight=w)
    np.testing.assert_array_equal(labels, weighted.predict(X))


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_chunked_input_with_weights_is_repeated_rows(covariance_type):
    X, w = _data()
    Xr = np.repeat(X, w.astype(int), axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        weighted = _gm(covariance_type, X).fit([X[:200], X[200:]], sample_weight=w)
        repeated = _gm(covariance_type, X).fit(Xr)
    _same(weighted, repeated)


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random", "random_from_data"])
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_zero_weights_drop_points(init_params):
    """Points of weight 0 change nothing, however far away they are, and are never picked
    as initial centres."""
    X, _ = _data()
    far = np.vstack([X, np.full((20, 3), 1e6)])
    w = np.r_[np.ones(X.shape[0]), np.zeros(20)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = GaussianMixture(3, init_params=init_params, random_state=0).fit(far, sample_weight=w)
    assert np.abs(gm.means_).max() < 100
    fixed = _gm("full", X)
    _same(fixed.fit(far, sample_weight=w), _gm("full", X).fit(X))


def test_all_ones_equal_no_weights():
    X, _ = _data()
    for covariance_type in COV_TYPES:
        a = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X)
        b = GaussianMixture(3, covariance_type=covariance_type, random_state=0)
        b.fit(X, sample_weight=np.ones(X.shape[0]))
        _same(a, b, rtol=1e-12)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (-np.ones(450), "Negative values in data passed to `sample_weight`"),
        (np.r_[np.nan, np.ones(449)], "Input sample_weight contains NaN"),
        (np.zeros(450), "Sample weights must contain at least one non-zero number"),
        (np.ones(449), r"sample_weight.shape == \(449,\), expected \(450,\)!"),
        (np.ones((450, 2)), "Sample weights must be 1D array or scalar"),
    ],
)
def test_bad_weights_get_scikit_learns_messages(weights, message):
    X, _ = _data()
    for method in ("fit", "fit_predict", "partial_fit"):
        with pytest.raises(ValueError, match=message):
            getattr(GaussianMixture(2), method)(X, sample_weight=weights)


def test_too_few_positive_weights_for_random_from_data():
    X, _ = _data()
    w = np.zeros(X.shape[0])
    w[:2] = 1.0
    with pytest.raises(ValueError, match="needs at least n_components = 3 points of positive"):
        GaussianMixture(3, init_params="random_from_data").fit(X, sample_weight=w)
