"""The Numba full- and tied-covariance E-step's Mahalanobis product: ``x U - mu U`` (the
reference's formula) in column groups of eight, then of four, then one at a time, each group's
diagonal tile last; and the covariance tiles that also give the first-order sums
(``sum r (x - c)``, ``sum r``). D covers every mix of those groups and every remainder of the
2x4 scatter tiles; n goes past a block of 128 (float64) or 512 (float32) points.
"""

import importlib.util

import numpy as np
import pytest

from tests.kernels.test_gmm_estep_float32 import FIELDS, _reference
from tests.kernels.test_gmm_sample_weight import _problem, _sample_weight
from tests.kernels.test_kernels import assert_matches_reference

HAVE_NUMBA = importlib.util.find_spec("numba") is not None
pytestmark = pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed")


def _check(problem, covariance_type, dtype, sw=None):
    from caproute.kernels.numba.gmm_estep import fit_stats

    X, weights, means, prec_chol, shift = problem
    got = fit_stats(X, weights, means, prec_chol, covariance_type, shift=shift, sample_weight=sw)
    ref = _reference(problem, covariance_type, sw)
    ref64 = _reference(problem, covariance_type, sw, dtype=np.float64)
    for field in FIELDS:
        g = np.asarray(getattr(got, field))
        assert g.dtype == dtype, field
        assert_matches_reference(
            g, getattr(ref, field), np.asarray(getattr(ref64, field)), dtype, scale=100.0
        )


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("covariance_type", ["full", "tied"])
@pytest.mark.parametrize("D", [2, 3, 8, 9, 11, 12, 15, 16, 17, 20, 24])
def test_column_groups_match_the_reference(dtype, covariance_type, D):
    n = 600
    problem = _problem(covariance_type, n, D, dtype, seed=100 + D)
    _check(problem, covariance_type, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("D", [8, 13, 16])
def test_weighted_full_matches_the_reference(dtype, D):
    n = 530
    problem = _problem("full", n, D, dtype, seed=200 + D)
    sw = _sample_weight(np.random.default_rng(D), n, dtype)
    _check(problem, "full", dtype, sw)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("shift_is_means", [False, True], ids=["shift", "means"])
def test_full_far_from_the_origin_matches_the_reference(dtype, shift_is_means):
    """Points and means at 1e3 from the origin, clusters of scale 1: x U and mu U nearly
    cancel (as in the reference, which forms them too), and the centred covariance sums keep
    their accuracy; sx = sum r (x - c) + c sum r stays sum r x."""
    D, n = 8, 700
    X, weights, means, prec_chol, shift = _problem("full", n, D, np.float64, seed=5)
    X, means = X + 1e3, means + 1e3
    shift = means.copy() if shift_is_means else means + 0.1
    cast = lambda a: np.asarray(a, dtype=dtype)  # noqa: E731
    problem = tuple(cast(a) for a in (X, weights, means, prec_chol, shift))
    _check(problem, "full", dtype)
