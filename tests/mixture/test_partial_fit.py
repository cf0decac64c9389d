"""GaussianMixture.partial_fit: online EM with step w / (W + w)."""

import numpy as np
import pytest

from caproute.mixture import GaussianMixture, _online
from caproute.mixture._gmm_math import mstep

COV_TYPES = ["full", "tied", "diag", "spherical"]


def _stream(seed=0, n=6000):
    rng = np.random.RandomState(seed)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    X = np.vstack([rng.randn(n // 3, 2) * (1 + i * 0.3) + c for i, c in enumerate(centres)])
    rng.shuffle(X)
    return X


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_stats_from_params_inverts_the_mstep(covariance_type):
    gm = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(_stream())
    params = (gm.weights_, gm.means_, gm.covariances_, gm.precisions_cholesky_)
    stats = _online.stats_from_params(params, covariance_type, gm.reg_covar, xp=np)
    weights, means, cov = mstep(stats, covariance_type, gm.reg_covar, xp=np)
    np.testing.assert_allclose(weights, gm.weights_, rtol=1e-12)
    np.testing.assert_allclose(means, gm.means_, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(cov, gm.covariances_, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_one_chunk_is_one_em_step(covariance_type):
    """The first call with gamma = 1 is exactly one EM iteration from the initialisation."""
    X = _stream()
    online = GaussianMixture(3, covariance_type=covariance_type, random_state=0).partial_fit(X)
    batch = GaussianMixture(3, covariance_type=covariance_type, random_state=0, max_iter=1, tol=0)
    with pytest.warns(Warning):
        batch.fit(X)
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(online, name), getattr(batch, name), rtol=1e-10)
    assert online.n_iter_ == 1 and online.n_samples_seen_ == X.shape[0]


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_a_stream_of_chunks_reaches_the_batch_fit(covariance_type):
    X = _stream()
    batch = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X)
    online = GaussianMixture(3, covariance_type=covariance_type, random_state=0)
    for _ in range(4):  # four passes over the stream, 500 points at a time
        for start in range(0, X.shape[0], 500):
            online.partial_fit(X[start : start + 500])
    order = np.argsort(online.means_[:, 0] + 10 * online.means_[:, 1])
    ref = np.argsort(batch.means_[:, 0] + 10 * batch.means_[:, 1])
    np.testing.assert_allclose(online.means_[order], batch.means_[ref], atol=0.1)
    np.testing.assert_allclose(online.weights_[order], batch.weights_[ref], atol=0.02)
    assert online.score(X) == pytest.approx(batch.score(X), abs=0.01)
    assert online.n_samples_seen_ == 4 * X.shape[0]


def test_weights_in_partial_fit_are_repeated_rows():
    X = _stream()
    rng = np.random.RandomState(3)
    w = rng.randint(0, 3, size=X.shape[0]).astype(float)
    init = GaussianMixture(3, random_state=0).fit(X[:300])
    kw = {
        "weights_init": init.weights_,
        "means_init": init.means_,
        "precisions_init": init.precisions_,
    }
    a, b = GaussianMixture(3, **kw), GaussianMixture(3, **kw)
    for start in range(0, X.shape[0], 1500):
        part, wp = X[start : start + 1500], w[start : start + 1500]
        a.partial_fit(part, sample_weight=wp)
        b.partial_fit(np.repeat(part, wp.astype(int), axis=0))
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-10)
    assert a.n_samples_seen_ == pytest.approx(w.sum())


def test_partial_fit_after_fit_continues_from_it():
    X = _stream()
    gm = GaussianMixture(3, random_state=0).fit(X)
    before = gm.means_.copy()
    gm.partial_fit(X[:100])  # 100 more points barely move a fit of 6000
    assert np.abs(gm.means_ - before).max() < 0.2
    assert gm.n_samples_seen_ == X.shape[0] + 100


def test_partial_fit_checks_features_and_first_chunk_size():
    X = _stream()
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        GaussianMixture(3).partial_fit(X[:2])
    gm = GaussianMixture(3, random_state=0).partial_fit(X[:500])
    with pytest.raises(ValueError, match="X has 3 features, but GaussianMixture is expecting 2"):
        gm.partial_fit(np.ones((10, 3)))
