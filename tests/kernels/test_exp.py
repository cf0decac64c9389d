"""The vectorisable exponential the Numba softmaxes use, against NumPy's exp."""

import importlib.util

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("numba") is None, reason="numba is not installed"
)


@pytest.fixture(scope="module")
def exp_loop():
    from numba import njit

    from caproute.kernels.numba.vector_exp import exp_nonpositive

    # called from a loop compiled with the kernels' reassociation flags, as the kernels do
    @njit(fastmath={"reassoc", "contract"})
    def run(x, out):
        for i in range(x.shape[0]):
            out[i] = exp_nonpositive(x[i])

    def call(x):
        x = np.ascontiguousarray(x, dtype=np.float64)
        out = np.empty_like(x)
        run(x, out)
        return out

    return call


def test_within_two_ulp_of_numpy_on_the_normal_range(exp_loop):
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            -rng.uniform(0, 708, 100_000),
            -rng.uniform(0, 1, 10_000),
            -np.logspace(-300, 2.85, 2_000),
            [0.0, -0.0, -np.log(2.0), -708.0],
        ]
    )
    got, ref = exp_loop(x), np.exp(x)
    ulp = np.abs(got - ref) / np.spacing(ref)
    assert ulp.max() <= 2.0, f"worst {ulp.max():.2f} ulp at x={x[np.argmax(ulp)]!r}"
    assert got[-4] == 1.0 and got[-3] == 1.0


def test_underflow_inf_and_nan(exp_loop):
    got = exp_loop(np.array([-708.5, -745.2, -1e4, -np.inf, np.nan]))
    np.testing.assert_array_equal(got[:4], 0.0)
    assert np.isnan(got[4])
