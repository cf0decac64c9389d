"""Bad input to the routing clusterers, and to the routing functions they are built on.

Data at any scale gives the clusters of the unscaled data or a clear error that names `X`;
every message names a public argument (never `u_hat`, `votes` or `u` from inside a fit), says
what was expected and what was given; no result is NaN or silently wrong.
"""

import dataclasses
import importlib.util
import re

import array_api_strict
import numpy as np
import pytest
from sklearn.datasets import make_blobs

import caproute as cr
from caproute.cluster import DynamicRoutingClustering, EMRoutingClustering
from tests._helpers import DEVICE1_NAME, tolerance

NUMBA = pytest.mark.skipif(
    importlib.util.find_spec("numba") is None, reason="Numba is not installed"
)
BACKENDS = ["numpy", pytest.param("numba", marks=NUMBA)]
ESTIMATORS = [DynamicRoutingClustering, EMRoutingClustering]
INTERNAL = ("`u_hat`", "`votes`", "`u`", "`s`", "`W`", "`a_in`")

X, Y = make_blobs(n_samples=120, centers=[[0, 0], [6, 0], [0, 6]], random_state=0)


def fit(Estimator, data, **kwargs):
    return Estimator(n_clusters=3, random_state=0, **kwargs).fit(data)


def raises(exc, message, func, *args, **kwargs):
    """``func(*args, **kwargs)`` raises ``exc`` with exactly ``message`` (a literal string), and
    the message names no internal argument of the routing functions. Returns the message."""
    with pytest.raises(exc, match=f"^{re.escape(message)}$") as info:
        func(*args, **kwargs)
    return str(info.value)


def assert_public(message, *internal):
    for name in internal or INTERNAL:
        assert name not in message, f"{name} is not an argument the user passed: {message}"


# -- data at any scale ---------------------------------------------------------------------------
SCALES = [
    ("float64", 1e200),
    ("float64", 1e-200),
    ("float64", 1e300),
    ("float64", 1e-300),
    ("float64", 1e-310),  # subnormal
    ("float32", 1e37),
    ("float32", 1e-37),
    ("float32", 1e19),  # |x|^2 overflows float32
    ("float32", 1e-40),  # subnormal
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("dtype", "scale"), SCALES)
def test_dynamic_routing_clustering_is_scale_free(dtype, scale, backend):
    ref = fit(DynamicRoutingClustering, X.astype(dtype), backend=backend)
    Xs = (X * scale).astype(dtype)
    got = fit(DynamicRoutingClustering, Xs, backend=backend)
    np.testing.assert_array_equal(got.labels_, ref.labels_)
    np.testing.assert_array_equal(got.predict(Xs), ref.labels_)
    centres = np.asarray(got.cluster_centers_, dtype=np.float64) / scale
    tol = tolerance(dtype, scale=10.0)
    if scale < 1e-300 or (dtype == "float32" and scale < 1e-38):  # subnormal: fewer digits
        tol = dict(rtol=1e-3, atol=1e-2)
    np.testing.assert_allclose(centres, ref.cluster_centers_, **tol)
    np.testing.assert_allclose(got.activations_, ref.activations_, **tolerance(dtype))
    assert np.all(np.isfinite(got.transform(Xs)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("dtype", "scale"),
    [("float64", 1e100), ("float64", 1e-100), ("float32", 1e12), ("float32", 1e-12)],
)
def test_em_routing_clustering_is_scale_free_where_its_variances_fit(dtype, scale, backend):
    ref = fit(EMRoutingClustering, X.astype(dtype), backend=backend)
    Xs = (X * scale).astype(dtype)
    got = fit(EMRoutingClustering, Xs, backend=backend)
    np.testing.assert_array_equal(got.labels_, ref.labels_)
    np.testing.assert_array_equal(got.predict(Xs), ref.labels_)
    centres = np.asarray(got.cluster_centers_, dtype=np.float64) / scale
    np.testing.assert_allclose(centres, ref.cluster_centers_, **tolerance(dtype, scale=10.0))
    variances = np.asarray(got.cluster_variances_, dtype=np.float64) / scale / scale
    np.testing.assert_allclose(variances, ref.cluster_variances_, **tolerance(dtype, scale=10.0))
    # log-densities shift by n_features * log(scale)
    shift = X.shape[1] * np.log(scale)
    np.testing.assert_allclose(
        np.asarray(got.score_samples(Xs), dtype=np.float64) + shift,
        ref.score_samples(X.astype(dtype)),
        **tolerance(dtype, scale=100.0),
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("dtype", "scale", "direction"),
    [
        ("float64", 1e200, "large"),
        ("float64", 1e-200, "small"),
        ("float32", 1e37, "large"),
        ("float32", 1e-37, "small"),
        ("float32", 1e19, "large"),
    ],
)
def test_em_routing_clustering_refuses_scales_its_variances_cannot_hold(
    dtype, scale, direction, backend
):
    Xs = (X * scale).astype(dtype)
    exponent = int(np.floor(np.log10(2.95 * scale)))
    largest = f"{float(np.abs(Xs).max()):.3g}"
    if direction == "large":
        too, remedy = (
            "overflow",
            f"Divide X by a constant, such as its largest magnitude ({largest}),",
        )
    else:
        too = f"fall below {dtype}'s normal range"
        remedy = f"Multiply X by a constant, such as 1 / its largest magnitude ({largest}),"
    wider = ", or pass float64" if dtype == "float32" else ""
    pattern = (
        rf"^`X` is too {direction} for EMRoutingClustering in {dtype}: its cluster variances "
        rf"\(its spread, about 2\.9\de{re.escape(f'{exponent:+d}')}, squared\) {re.escape(too)} in X's units\. "
        rf"{re.escape(remedy)} before fitting{re.escape(wider)}\.$"
    )
    with pytest.raises(ValueError, match=pattern):
        fit(EMRoutingClustering, Xs, backend=backend)


def test_em_routing_clustering_checks_its_fitted_variances_too():
    # the spread squared fits float32 here, the variances (a fraction of it) do not
    Xs = (X * 1e-19).astype(np.float32)
    largest = f"{float(np.abs(Xs).max()):.3g}"
    raises(
        ValueError,
        "`X` is too small for EMRoutingClustering in float32: the cluster centres or variances "
        "fall below float32's normal range in X's units. Multiply X by a constant, such as 1 / "
        f"its largest magnitude ({largest}), before fitting, or pass float64.",
        fit,
        EMRoutingClustering,
        Xs,
    )


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_scaled_columns_and_outliers_do_not_overflow(Estimator):
    # one column at 1e150 and one at 1e-150: no square of either leaves float64 after the scaling
    Xc = X * [1e150, 1e-150]
    got = fit(Estimator, Xc)
    assert np.all(np.isfinite(got.transform(Xc)))
    assert np.all(np.isfinite(got.cluster_centers_))
    # a single far outlier: its own cluster, never NaN
    Xo = np.vstack([X, [[1e150, 1e150]]])
    labels = fit(Estimator, Xo).labels_
    assert labels[-1] not in labels[:-1]


# -- new points far from the training data ---------------------------------------------------------
def far_message(name, dtype, reach):
    return (
        f"`X` lies too far from the data {name} was fitted on for its assignments to be computed "
        f"in {dtype}: measured in standard deviations of the training data from its mean, it "
        f"reaches {reach:.3g}. Check that X is in the units of the training data."
    )


def reach_of(est, data):
    Xd = np.asarray(data, dtype=np.float64)
    unit, mean, scale = (
        np.asarray(a, dtype=np.float64) for a in (est._unit, est._mean, est._scale)
    )
    with np.errstate(over="ignore"):
        return float(np.max(np.abs((Xd / unit - mean) / scale)))


@pytest.mark.parametrize("method", ["predict", "transform", "score_samples"])
def test_em_routing_clustering_refuses_points_too_far_to_route(method):
    est = fit(EMRoutingClustering, X)
    far = X * 1e200
    message = far_message("EMRoutingClustering", "float64", reach_of(est, far))
    raises(ValueError, message, getattr(est, method), far)


def test_dynamic_routing_clustering_routes_far_points_to_the_pole():
    est = fit(DynamicRoutingClustering, X)
    far = X * 1e200  # |z|^2 overflows float64; the lifted points all reach the north pole
    couplings = est.transform(far)
    assert np.all(np.isfinite(couplings))
    np.testing.assert_allclose(couplings.sum(axis=1), 1.0, **tolerance("float64"))
    labels = est.predict(far)
    assert np.all(labels == labels[0])
    pole = est.transform(np.full((1, 2), 1e300))  # the limit the far points reach
    np.testing.assert_allclose(couplings, np.repeat(pole, len(far), axis=0), **tolerance("float64"))


def test_dynamic_routing_clustering_refuses_points_beyond_the_dtype():
    est = fit(DynamicRoutingClustering, X * 1e-200)
    far = X * 1e200  # standardised by the 1e-200 fit: beyond float64, inf
    raises(
        ValueError,
        far_message("DynamicRoutingClustering", "float64", float("inf")),
        est.predict,
        far,
    )


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_warm_start_refuses_data_far_from_the_previous_fit(Estimator):
    est = fit(Estimator, X, warm_start=True)
    far = X * 1e200
    limit = np.sqrt(np.finfo(np.float64).max / 2) / 4
    raises(
        ValueError,
        "`X` lies too far from the data of the previous fit for float64: measured in standard "
        f"deviations of that data from its mean, it reaches {reach_of(est, far):.3g}; at most "
        f"{limit:.3g} can be routed. Check that `X` is in the units of the data of the previous "
        "fit.",
        est.fit,
        far,
    )


# -- init --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_init_that_is_not_numbers(Estimator):
    raises(
        TypeError,
        "`init` must be an array of real floating numbers; got a list that does not convert to "
        "one (nested sequences of unequal lengths, or elements that are not numbers).",
        fit,
        Estimator,
        X,
        init=[[0.0, 0.0], [1.0], [2.0, 2.0]],
    )
    raises(
        TypeError,
        "`init` must be an array of real floating numbers; got dtype <U1.",
        fit,
        Estimator,
        X,
        init=[["a", "b"]] * 3,
    )


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_init_beyond_float32(Estimator):
    raises(
        ValueError,
        "`init` must fit in float32, the dtype of `X` (magnitudes up to 3.4e+38); got a value of "
        "magnitude 1e+300. Scale it down or pass float64 arrays.",
        fit,
        Estimator,
        X.astype(np.float32),
        init=np.full((3, 2), 1e300),
    )


@pytest.mark.parametrize("Estimator", ESTIMATORS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_init_too_far_from_the_data(Estimator, dtype):
    big = 1e30 if dtype == "float32" else 1e300
    Xd = X.astype(dtype)
    est = Estimator(n_clusters=3, init=np.full((3, 2), big))
    with pytest.raises(ValueError, match="^`init` lies too far from the training data") as info:
        est.fit(Xd)
    limit = np.sqrt(float(np.finfo(dtype).max) / 2) / 4
    message = str(info.value)
    expected = (
        f"`init` lies too far from the training data `X` for {dtype}: measured in standard "
        f"deviations of that data from its mean, it reaches {reach_of(est, np.full((3, 2), big)):.3g}; "
        f"at most {limit:.3g} can be routed. Check that `init` is in the units of the training "
        "data `X`."
    )
    # the reach is computed here in float64, there in the data's dtype: compare the rest
    assert re.sub(r"reaches [^;]+;", "", message) == re.sub(r"reaches [^;]+;", "", expected)


# -- options that overflow the routing -------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_concentration_whose_votes_overflow_the_squash(dtype, backend):
    bound = float(np.finfo(dtype).max) ** (1 / 3) / (2 * len(X))
    raises(
        ValueError,
        f"`concentration` must be at most {bound:.3g} for {len(X)} points in {dtype} X (a "
        "cluster adds up to n_samples votes of length concentration, and the squash cubes their "
        f"sum); got {1.01 * bound:.3g}.",
        fit,
        DynamicRoutingClustering,
        X.astype(dtype),
        concentration=1.01 * bound,
        backend=backend,
    )
    # just below the bound: hard couplings, never an overflow (a RuntimeWarning fails the test)
    for max_iter in (1, 100):
        est = fit(
            DynamicRoutingClustering,
            X.astype(dtype),
            concentration=0.99 * bound,
            max_iter=max_iter,
            backend=backend,
        )
        assert np.all(np.isfinite(est.transform(X.astype(dtype))))
    np.testing.assert_array_equal(np.bincount(est.labels_), np.bincount(Y))  # converged


@pytest.mark.parametrize("max_iter", [1, 100])
@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_a_fit_whose_routing_overflows_all_the_same_is_refused(Estimator, max_iter, monkeypatch):
    """The last line of defence: NaN parents stop the fit with the reason (from the change
    between iterations, or after a single iteration from the final check), never labels."""
    import caproute.cluster._base as base

    real = base.select_impl

    def nan_parents(op, xp, backend):
        plan = real(op, xp, backend)

        def func(*args, **kwargs):
            out = plan.func(*args, **kwargs)
            return (out[0] * np.nan, *out[1:])

        return dataclasses.replace(plan, func=func)

    monkeypatch.setattr(base, "select_impl", nan_parents)
    advice = (
        "concentration=10.0 makes the votes too long for float64; use a smaller value (the "
        "default is 10)."
        if Estimator is DynamicRoutingClustering
        else "Use a smaller `inverse_temperature` or smaller `beta_u` and `beta_a` "
        "(inverse_temperature=1.0, beta_u=0.0, beta_a=0.0), or a larger `min_var` "
        "(min_var=0.001)."
    )
    raises(
        ValueError,
        f"{Estimator.__name__} could not fit `X` in float64: routing overflowed (the clusters "
        f"became NaN). {advice}",
        fit,
        Estimator,
        X,
        max_iter=max_iter,
    )


def test_options_beyond_float32():
    X32 = X.astype(np.float32)
    raises(
        ValueError,
        "`eps` must be at least 1.18e-38 in float32, the dtype of `X` (smaller values round to 0 "
        "there); got 1e-300.",
        fit,
        DynamicRoutingClustering,
        X32,
        eps=1e-300,
    )
    raises(
        ValueError,
        "`min_var` must fit in float32, the dtype of `X` (at most 3.4e+38); got 1e+300.",
        fit,
        EMRoutingClustering,
        X32,
        min_var=1e300,
    )
    raises(
        ValueError,
        "`beta_u` must fit in float32, the dtype of `X` (magnitudes up to 3.4e+38); got a value "
        "of magnitude 1e+300. Scale it down or pass float64 arrays.",
        fit,
        EMRoutingClustering,
        X32,
        beta_u=1e300,
    )
    raises(
        ValueError,
        "`beta_a` must fit in float32, the dtype of `X` (magnitudes up to 3.4e+38); got a value "
        "of magnitude 1e+300. Scale it down or pass float64 arrays.",
        fit,
        EMRoutingClustering,
        X32,
        beta_a=np.full(3, -1e300),
    )


@pytest.mark.parametrize(("dtype", "bound"), [("float64", "5.64e+102"), ("float32", "6.98e+12")])
@pytest.mark.parametrize(
    ("option", "sign"),
    [("inverse_temperature", 1), ("beta_u", 1), ("beta_u", -1), ("beta_a", 1), ("beta_a", -1)],
)
def test_em_options_whose_products_overflow(dtype, bound, option, sign):
    value = 1e300 if dtype == "float64" else 1e13
    raises(
        ValueError,
        f"`{option}` must be at most {bound} in magnitude for {dtype} X (the clusters' cost "
        f"multiplies it, and larger values overflow); got {value:.3g}.",
        fit,
        EMRoutingClustering,
        X.astype(dtype),
        **{option: sign * value},
    )
    # the bound itself is fine: the clusters saturate (activations 0 or 1), never NaN
    below = float(bound) * 0.99
    est = fit(EMRoutingClustering, X.astype(dtype), **{option: sign * below})
    assert np.all(np.isfinite(est.activations_))
    assert np.all(np.isfinite(est.transform(X.astype(dtype))))


def test_betas_of_another_library_name_x():
    beta = array_api_strict.asarray(np.zeros(3))
    raises(
        TypeError,
        "`beta_a` must be an array of the same library as `X` (array_api_compat.numpy); got "
        "array_api_strict. Convert one of them explicitly (caproute.to_numpy, or backend='cupy').",
        fit,
        EMRoutingClustering,
        X,
        beta_a=beta,
    )


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_bad_input_never_names_an_internal_argument(Estimator):
    """Every error above and more, from fit and predict: the message names public arguments."""
    dynamic = Estimator is DynamicRoutingClustering
    cases = [  # (what to run, whether it must raise: dynamic routing fits X at any scale)
        (lambda: fit(Estimator, (X * 1e37).astype(np.float32)).predict(X * 1e37), not dynamic),
        (lambda: fit(Estimator, X, init=np.full((3, 2), 1e300)), True),
        (lambda: fit(Estimator, X, init=[[0.0], [1.0, 1.0], [2.0, 2.0]]), True),
        (lambda: fit(Estimator, X * 1e-150).predict(X * 1e200), True),
    ]
    if dynamic:
        cases.append((lambda: fit(Estimator, X, concentration=1e300, max_iter=1), True))
    else:
        cases.append((lambda: fit(Estimator, X.astype(np.float32), beta_u=[1e300, 0, 0]), True))
        beta = array_api_strict.asarray(np.zeros(3))
        cases.append((lambda: fit(Estimator, X, beta_a=beta), True))
    for case, must_raise in cases:
        try:
            result = case()
        except (ValueError, TypeError) as exc:
            assert_public(str(exc))
        else:
            assert not must_raise, "expected an error"
            assert np.all(np.isfinite(result)) if isinstance(result, np.ndarray) else True


# -- the routing functions: their own arguments, by name -------------------------------------------
RNG = np.random.default_rng(0)
U_HAT = RNG.normal(size=(2, 5, 3, 4))
U, W = RNG.normal(size=(2, 5, 4)), RNG.normal(size=(5, 3, 6, 4))
VOTES, A_IN = RNG.normal(size=(2, 5, 3, 4)), np.ones((2, 5))


@pytest.mark.parametrize("backend", BACKENDS)
def test_overflow_in_float64_does_not_advise_float64(backend):
    calls = {
        "s": lambda x: cr.squash(x, backend=backend),
        "u_hat": lambda x: cr.dynamic_routing(x, backend=backend),
        "votes": lambda x: cr.em_routing(x, np.ones((1, 3)), 0.0, 0.0, backend=backend),
    }
    for name, call in calls.items():
        x = np.full((1, 3, 2, 4), 1e200)
        x[0, 0] = -1e200
        with np.errstate(over="ignore", invalid="ignore"):
            message = raises(
                ValueError,
                f"`{name}` is too large for float64: routing overflowed (largest magnitude "
                f"1e+200). Scale `{name}` down: float64 is the widest dtype caproute computes in.",
                call,
                x,
            )
        assert "pass float64" not in message
        # the same input in float32 still hears the advice that helps it
        with np.errstate(over="ignore", invalid="ignore"):
            raises(
                ValueError,
                f"`{name}` is too large for float32: routing overflowed (largest magnitude "
                f"1e+20). Scale `{name}` down or pass float64.",
                call,
                (x * 1e-180).astype(np.float32),
            )


@pytest.mark.parametrize("backend", BACKENDS)
def test_dense_overflow_names_the_larger_argument(backend):
    with np.errstate(over="ignore", invalid="ignore"):
        raises(
            ValueError,
            "`W` is too large for float64: routing overflowed (largest magnitude 1e+200; `u` up "
            "to 2). Scale `W` down: float64 is the widest dtype caproute computes in.",
            cr.dense_dynamic_routing,
            np.full((1, 5, 4), 2.0),
            np.full((5, 3, 6, 4), 1e200),
            backend=backend,
        )
        raises(
            ValueError,
            "`u` is too large for float32: routing overflowed (largest magnitude 1e+20; `W` up "
            "to 3). Scale `u` down or pass float64.",
            cr.dense_dynamic_routing,
            np.full((1, 5, 4), 1e20, dtype=np.float32),
            np.full((5, 3, 6, 4), 3.0, dtype=np.float32),
            backend=backend,
        )


@pytest.mark.parametrize("n_iter", [10**30, 1_000_001])
def test_n_iter_beyond_the_bound(n_iter):
    got = "1e+30" if n_iter == 10**30 else "1000001"
    message = (
        "`n_iter` must be an integer <= 1000000 (routing converges in a few iterations; the "
        f"papers use 3); got {got}."
    )
    raises(ValueError, message, cr.dynamic_routing, U_HAT, n_iter)
    raises(ValueError, message, cr.dense_dynamic_routing, U, W, n_iter)
    raises(ValueError, message, cr.em_routing, VOTES, A_IN, 0.0, 0.0, n_iter)
    raises(ValueError, message, cr.routing.official_inverse_temperature, n_iter)


def test_scalars_that_the_dtype_cannot_hold():
    u32, v32 = U_HAT.astype(np.float32), VOTES.astype(np.float32)
    tiny = "`eps` must be at least 1.18e-38 in float32, the dtype of `{}` (smaller values round to 0 there); got 1e-300."
    raises(ValueError, tiny.format("s"), cr.squash, u32, eps=1e-300)
    raises(ValueError, tiny.format("u_hat"), cr.dynamic_routing, u32, eps=1e-300)
    raises(
        ValueError, tiny.format("u"), cr.dense_dynamic_routing, U.astype(np.float32), W, eps=1e-300
    )
    raises(ValueError, tiny.format("votes"), cr.em_routing, v32, A_IN, 0.0, 0.0, eps=1e-300)
    big = "`{}` must fit in float32, the dtype of `{}` (at most 3.4e+38); got 1e+300."
    raises(ValueError, big.format("eps", "u_hat"), cr.dynamic_routing, u32, eps=1e300)
    raises(
        ValueError, big.format("min_var", "votes"), cr.em_routing, v32, A_IN, 0, 0, min_var=1e300
    )
    raises(
        ValueError,
        big.format("inverse_temperature", "votes"),
        cr.em_routing,
        v32,
        A_IN,
        0.0,
        0.0,
        inverse_temperature=[1.0, 1e300, 1.0],
    )
    # float64 holds them: no error
    assert np.all(np.isfinite(cr.dynamic_routing(U_HAT, eps=1e300)))
    raises(
        ValueError,
        "`eps` must be a finite real number > 0; got an integer of 401 digits, beyond the "
        "largest float.",
        cr.dynamic_routing,
        U_HAT,
        eps=10**400,
    )


@pytest.mark.parametrize("as_list", [True, False], ids=["list", "float64 array"])
def test_arrays_that_the_dtype_cannot_hold(as_list):
    def big(shape):
        a = np.full(shape, 1e300)
        return a.tolist() if as_list else a

    u32, v32 = U_HAT.astype(np.float32), VOTES.astype(np.float32)
    message = (
        "`{}` must fit in float32, the dtype of `{}` (magnitudes up to 3.4e+38); got a value of "
        "magnitude 1e+300. Scale it down or pass float64 arrays."
    )
    raises(ValueError, message.format("bias", "u_hat"), cr.dynamic_routing, u32, bias=big((3, 4)))
    raises(
        ValueError,
        message.format("initial_logits", "u_hat"),
        cr.dynamic_routing,
        u32,
        initial_logits=big((5, 3)),
    )
    raises(
        ValueError,
        message.format("W", "u"),
        cr.dense_dynamic_routing,
        U.astype(np.float32),
        big(W.shape),
    )
    raises(ValueError, message.format("beta_u", "votes"), cr.em_routing, v32, A_IN, big(3), 0.0)
    raises(ValueError, message.format("beta_a", "votes"), cr.em_routing, v32, A_IN, 0.0, big(3))
    raises(ValueError, message.format("a_in", "votes"), cr.em_routing, v32, big((2, 5)), 0.0, 0.0)
    raises(
        ValueError,
        message.format("initial_assignments", "votes"),
        cr.em_routing,
        v32,
        A_IN,
        0.0,
        0.0,
        initial_assignments=big((2, 5, 3)),
    )


def test_arrays_that_the_dtype_cannot_hold_on_a_device():
    device = array_api_strict.Device(DEVICE1_NAME)
    u32 = array_api_strict.asarray(U_HAT.astype(np.float32), device=device)
    bias = array_api_strict.asarray(np.full((3, 4), -1e300), device=device)
    raises(
        ValueError,
        "`bias` must fit in float32, the dtype of `u_hat` (magnitudes up to 3.4e+38); got a value "
        "of magnitude 1e+300. Scale it down or pass float64 arrays.",
        cr.dynamic_routing,
        u32,
        bias=bias,
    )
    # values that fit are cast without a word
    fine = array_api_strict.asarray(np.full((3, 4), 0.5), device=device)
    assert cr.dynamic_routing(u32, bias=fine).dtype == array_api_strict.float32


def test_array_likes_that_are_not_arrays():
    raises(
        TypeError,
        "`u_hat` must be an array of real floating numbers; got a list that does not convert to "
        "one (nested sequences of unequal lengths, or elements that are not numbers).",
        cr.dynamic_routing,
        [[[[1.0]]], [[[1.0, 2.0]]]],
    )


@pytest.mark.parametrize(
    ("value", "exc", "message"),
    [
        (["a", "b", "c"], TypeError, "got dtype <U1."),
        ([1.0, None, 1.0], TypeError, "got dtype object."),
        (np.ones(3) + 1j, TypeError, "got dtype complex128."),
        ([True, True, True], TypeError, "got dtype bool."),
        (np.ones(3, dtype=[("a", float)]), TypeError, "got dtype [('a', '<f8')]."),
        (
            [[1.0], [1.0, 2.0], [3.0]],
            TypeError,
            "got a list that does not convert to an array of numbers (nested sequences of "
            "unequal lengths, or elements that are not numbers).",
        ),
    ],
)
def test_inverse_temperature_sequences_that_are_not_numbers(value, exc, message):
    raises(
        exc,
        f"`inverse_temperature` as a sequence must hold real numbers; {message}",
        cr.em_routing,
        VOTES,
        A_IN,
        0.0,
        0.0,
        inverse_temperature=value,
    )


def test_inverse_temperature_of_other_kinds():
    with pytest.warns(PendingDeprecationWarning):
        matrix = np.matrix(np.ones(3))
    raises(
        TypeError,
        "`inverse_temperature` must be a plain array; got numpy.matrix; use "
        "np.asarray(inverse_temperature).",
        cr.em_routing,
        VOTES,
        A_IN,
        0.0,
        0.0,
        inverse_temperature=matrix,
    )
    raises(
        ValueError,
        "`inverse_temperature` must be a finite real number > 0; got an integer of 401 digits, "
        "beyond the largest float.",
        cr.em_routing,
        VOTES,
        A_IN,
        0.0,
        0.0,
        inverse_temperature=10**400,
    )
