from sklearn.utils.estimator_checks import parametrize_with_checks

from caproute.mixture import GaussianMixture


@parametrize_with_checks(
    [GaussianMixture(), GaussianMixture(covariance_type="diag", init_params="random")]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
