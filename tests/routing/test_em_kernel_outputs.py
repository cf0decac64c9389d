"""The Numba EM kernel writes the assignments only when the caller wants them: the poses and
activations do not depend on it, and the public function returns the same numbers."""

import importlib.util

import numpy as np
import pytest

import caproute as cr

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("numba") is None, reason="numba is not installed"
)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dim", [16, 5])
def test_assignments_not_written_unless_wanted(dtype, dim):
    from caproute.kernels.numba import em_routing as k

    rng = np.random.default_rng(dim)
    votes = rng.normal(size=(5, 13, 4, dim)).astype(dtype)
    a_in = rng.uniform(size=(5, 13)).astype(dtype)
    beta_u, beta_a = np.zeros((4, dim), dtype), np.zeros(4, dtype)
    kw = dict(inverse_temperature=np.full(3, 0.01, dtype), min_var=5e-4, eps=1e-8)
    pose, act, R = k.em_routing(votes, a_in, beta_u, beta_a, **kw)
    pose2, act2, R2 = k.em_routing(votes, a_in, beta_u, beta_a, want_assignments=False, **kw)
    assert R.shape == (5, 13, 4) and R2.shape == (5, 0, 0)
    np.testing.assert_array_equal(pose, pose2)
    np.testing.assert_array_equal(act, act2)
    # given starting assignments are still read
    R0 = rng.dirichlet(np.ones(4), size=(5, 13)).astype(dtype)
    p3, a3, R3 = k.em_routing(
        votes, a_in, beta_u, beta_a, initial_assignments=R0, want_assignments=False, **kw
    )
    p4, a4, _ = k.em_routing(votes, a_in, beta_u, beta_a, initial_assignments=R0, **kw)
    np.testing.assert_array_equal(p3, p4)
    np.testing.assert_array_equal(a3, a4)
    # the public function: the same poses and activations with and without the assignments
    p5, a5 = cr.em_routing(votes, a_in, 0.0, 0.0, 3, backend="numba")
    p6, a6, R6 = cr.em_routing(votes, a_in, 0.0, 0.0, 3, backend="numba", return_assignments=True)
    np.testing.assert_array_equal(p5, p6)
    np.testing.assert_array_equal(a5, a6)
    assert R6.shape == (5, 13, 4)
    np.testing.assert_allclose(R6.sum(-1), 1.0, rtol=1e-5)
