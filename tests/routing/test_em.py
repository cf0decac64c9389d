import math

import numpy as np
import pytest

import caproute as cr
from caproute.routing import official_inverse_temperature
from tests._helpers import as_xp, assert_placed, atol_for, device_of, rtol_for
from tests.routing.oracle import em_routing_loops


def _problem(batch=2, n_in=6, n_out=3, pose_dim=4, dtype="float64", seed=0):
    rng = np.random.default_rng(seed)
    votes = rng.normal(size=(batch, n_in, n_out, pose_dim)).astype(dtype)
    a_in = rng.uniform(0.05, 1.0, size=(batch, n_in)).astype(dtype)
    return votes, a_in


def _full(value, shape):
    return np.broadcast_to(
        np.asarray(value, dtype=np.float64).reshape(
            np.shape(value) + (1,) * (len(shape) - np.ndim(value))
        ),
        shape,
    )


@pytest.mark.parametrize("n_iter", [1, 2, 3])
@pytest.mark.parametrize(
    "beta_u, beta_a",
    [(0.0, 0.0), (0.3, -1.0), ("per_parent", "per_parent"), ("per_element", "per_parent")],
)
@pytest.mark.parametrize("schedule", [None, 0.5, "sequence"])
def test_matches_seed_equations(xp, dtype, n_iter, beta_u, beta_a, schedule):
    votes, a_in = _problem(dtype=dtype, seed=n_iter)
    n_out, pose_dim = votes.shape[2:]
    rng = np.random.default_rng(5)
    if beta_u == "per_parent":
        beta_u = rng.normal(size=n_out)
    elif beta_u == "per_element":
        beta_u = rng.normal(size=(n_out, pose_dim))
    if beta_a == "per_parent":
        beta_a = rng.normal(size=n_out)
    if schedule == "sequence":
        schedule = [0.2 * (t + 1) for t in range(n_iter)]
    lambdas = (
        official_inverse_temperature(n_iter)
        if schedule is None
        else [schedule] * n_iter
        if np.isscalar(schedule)
        else schedule
    )
    to_param = (
        (lambda b: b) if np.isscalar(beta_u) else (lambda b: as_xp(np.asarray(b, dtype=dtype), xp))
    )
    pose, act, R = cr.em_routing(
        as_xp(votes, xp),
        as_xp(a_in, xp),
        beta_u if np.isscalar(beta_u) else to_param(beta_u),
        beta_a if np.isscalar(beta_a) else as_xp(np.asarray(beta_a, dtype=dtype), xp),
        n_iter,
        inverse_temperature=schedule,
        return_assignments=True,
    )
    # the oracle sees the parameters as the dtype the routing saw them
    bu = _full(np.asarray(beta_u, dtype=dtype), (n_out, pose_dim))
    ba = _full(np.asarray(beta_a, dtype=dtype), (n_out,))
    p_ref, a_ref, R_ref = em_routing_loops(votes, a_in, bu, ba, lambdas, min_var=5e-4)
    rtol, atol = rtol_for(dtype) * 5, atol_for(dtype) * 5
    np.testing.assert_allclose(cr.to_numpy(pose), p_ref, rtol=rtol, atol=atol)
    np.testing.assert_allclose(cr.to_numpy(act), a_ref, rtol=rtol, atol=atol)
    np.testing.assert_allclose(cr.to_numpy(R), R_ref, rtol=rtol, atol=atol)


def test_keeps_dtype_and_namespace(xp, dtype):
    votes, a_in = _problem(batch=1, dtype=dtype)
    pose, act, R = cr.em_routing(
        as_xp(votes, xp), as_xp(a_in, xp), 0.0, 0.0, 1, return_assignments=True
    )
    for out in (pose, act, R):
        assert type(out) is type(as_xp(votes, xp)) and out.dtype == as_xp(votes, xp).dtype
        assert_placed(out, xp=xp, device=device_of(xp), dtype=dtype)
    assert pose.shape == (1, 3, 4) and act.shape == (1, 3) and R.shape == (1, 6, 3)
    np.testing.assert_allclose(cr.to_numpy(R), 1 / 3)  # one iteration: no E-step ran


def test_two_votes_by_hand(xp, dtype):
    # votes 0 and 2 for one parent, 1-D pose, full activations: mu = 1, sigma^2 = 1,
    # cost = (beta_u + log 1) * 2 = 1, a = logistic(lambda * (beta_a - cost)) = logistic(1).
    votes = as_xp(np.array([0.0, 2.0], dtype=dtype).reshape(1, 2, 1, 1), xp)
    a_in = as_xp(np.ones((1, 2), dtype=dtype), xp)
    pose, act = cr.em_routing(
        votes, a_in, beta_u=0.5, beta_a=2.0, n_iter=1, inverse_temperature=1.0, min_var=0.0
    )
    np.testing.assert_allclose(cr.to_numpy(pose), [[[1.0]]], rtol=rtol_for(dtype))
    np.testing.assert_allclose(cr.to_numpy(act), [[1 / (1 + math.exp(-1.0))]], rtol=rtol_for(dtype))


def test_e_step_by_hand(xp):
    # Two parents, 1-D votes: the children vote (0, 10), (2, 11) and (4, 12).
    votes = np.array([[[0.0], [10.0]], [[2.0], [11.0]], [[4.0], [12.0]]]).reshape(1, 3, 2, 1)
    a_in = np.ones((1, 3))
    _, act, R = cr.em_routing(
        as_xp(votes, xp),
        as_xp(a_in, xp),
        0.0,
        0.0,
        2,
        inverse_temperature=1.0,
        min_var=0.0,
        return_assignments=True,
    )
    # iteration 1 M-step with R = 1/2: parent 0 mean 2, var 8/3; parent 1 mean 11, var 2/3;
    # sum R = 1.5 each; cost_j = log(sigma_j) * 1.5; a_j = logistic(-cost_j).
    var = np.array([8 / 3, 2 / 3])
    mu = np.array([2.0, 11.0])
    a = 1 / (1 + np.exp(0.5 * np.log(var) * 1.5))
    v = votes[0, :, :, 0]
    logp = -((v - mu) ** 2) / (2 * var) - 0.5 * np.log(2 * np.pi * var)
    w = a * np.exp(logp)
    np.testing.assert_allclose(cr.to_numpy(R)[0], w / w.sum(axis=1, keepdims=True), rtol=1e-12)


def test_assignments_sum_to_one_and_activations_in_unit_interval(xp, dtype):
    votes, a_in = _problem(batch=3, n_in=10, n_out=5, pose_dim=16, dtype=dtype)
    _, act, R = cr.em_routing(
        as_xp(votes, xp),
        as_xp(a_in, xp),
        0.1,
        0.2,
        3,
        inverse_temperature=0.05,
        return_assignments=True,
    )
    np.testing.assert_allclose(cr.to_numpy(R).sum(axis=-1), 1.0, rtol=rtol_for(dtype) * 10)
    act = cr.to_numpy(act)
    assert np.all((act > 0) & (act < 1))


def test_invariant_to_permuting_children(xp, dtype):
    votes, a_in = _problem(n_in=9, dtype=dtype)
    perm = np.random.default_rng(2).permutation(9)
    args = dict(beta_u=0.1, beta_a=0.0, n_iter=3, inverse_temperature=0.3, return_assignments=True)
    p1, a1, R1 = cr.em_routing(as_xp(votes, xp), as_xp(a_in, xp), **args)
    p2, a2, R2 = cr.em_routing(as_xp(votes[:, perm], xp), as_xp(a_in[:, perm], xp), **args)
    tol = dict(rtol=rtol_for(dtype) * 10, atol=atol_for(dtype) * 10)
    np.testing.assert_allclose(cr.to_numpy(p2), cr.to_numpy(p1), **tol)
    np.testing.assert_allclose(cr.to_numpy(a2), cr.to_numpy(a1), **tol)
    np.testing.assert_allclose(cr.to_numpy(R2), cr.to_numpy(R1)[:, perm], **tol)


def test_agreement_raises_activation_and_assignment(xp):
    rng = np.random.default_rng(4)
    votes = rng.normal(scale=2.0, size=(1, 12, 3, 16))
    votes[0, :, 2] = 0.7 + 0.01 * rng.normal(size=(12, 16))  # tight agreement on parent 2
    a_in = np.ones((1, 12))
    args = dict(beta_u=0.0, beta_a=0.0, inverse_temperature=0.1, return_assignments=True)
    _, act, R = cr.em_routing(as_xp(votes, xp), as_xp(a_in, xp), n_iter=3, **args)
    act, R = cr.to_numpy(act), cr.to_numpy(R)
    assert act[0, 2] > act[0, 0] and act[0, 2] > act[0, 1]
    assert np.all(R[0, :, 2] > 0.9)


def test_inactive_child_is_ignored(xp):
    votes, a_in = _problem(n_in=5)
    a_in[:, 0] = 0.0
    args = dict(beta_u=0.1, beta_a=0.0, n_iter=3, inverse_temperature=0.3)
    p1, a1 = cr.em_routing(as_xp(votes, xp), as_xp(a_in, xp), **args)
    p2, a2 = cr.em_routing(as_xp(votes[:, 1:], xp), as_xp(a_in[:, 1:], xp), **args)
    np.testing.assert_allclose(cr.to_numpy(p1), cr.to_numpy(p2), rtol=1e-12)
    np.testing.assert_allclose(cr.to_numpy(a1), cr.to_numpy(a2), rtol=1e-12)


@pytest.mark.parametrize("min_var", [0.0, 5e-4])
def test_degenerate_inputs_stay_finite(xp, dtype, min_var):
    # identical votes (zero variance), all-zero activations, and activations of exactly 1
    votes = as_xp(np.ones((2, 4, 3, 16), dtype=dtype), xp)
    for a in (np.zeros((2, 4), dtype=dtype), np.ones((2, 4), dtype=dtype)):
        pose, act, R = cr.em_routing(
            votes, as_xp(a, xp), 0.0, 0.0, 3, min_var=min_var, return_assignments=True
        )
        for out in (pose, act, R):
            assert np.all(np.isfinite(cr.to_numpy(out)))


def test_official_schedule():
    sched = official_inverse_temperature(3)
    assert sched == pytest.approx([0.01 * (1 - 0.95 ** (t + 1)) for t in range(3)], rel=1e-15)
    assert official_inverse_temperature(2, final_lambda=1.0) == pytest.approx([0.05, 1 - 0.95**2])


VOTES = np.zeros((2, 3, 4, 5))
A_IN = np.ones((2, 3))


@pytest.mark.parametrize(
    "args, kwargs, exc, match",
    [
        (
            (np.zeros((2, 3, 4)), A_IN, 0.0, 0.0),
            {},
            ValueError,
            r"`votes` must be 4-D \(batch, n_in, n_out, pose_dim\); got ndim=3 with shape \(2, 3, 4\)\.",
        ),
        (
            (VOTES.astype(np.int32), A_IN, 0.0, 0.0),
            {},
            TypeError,
            r"`votes` must have a real floating dtype \(float32 or float64\); got int32\.",
        ),
        (
            (np.full_like(VOTES, np.nan), A_IN, 0.0, 0.0),
            {},
            ValueError,
            r"`votes` must contain only finite values; got 120 NaN and 0 inf\.",
        ),
        (
            (VOTES, np.ones((2, 4)), 0.0, 0.0),
            {},
            ValueError,
            r"`a_in` must have shape \(batch, n_in\) of `votes` = \(2, 3\); got shape \(2, 4\)\.",
        ),
        (
            (VOTES, np.ones((2, 3, 1)), 0.0, 0.0),
            {},
            ValueError,
            r"`a_in` must be 2-D \(batch, n_in\); got ndim=3 with shape \(2, 3, 1\)\.",
        ),
        (
            (VOTES, np.full((2, 3), 1.5), 0.0, 0.0),
            {},
            ValueError,
            r"`a_in` must hold activations in \[0, 1\]; got values in \[1\.5, 1\.5\]\.",
        ),
        (
            (VOTES, np.full((2, 3), np.inf), 0.0, 0.0),
            {},
            ValueError,
            r"`a_in` must contain only finite values; got 0 NaN and 6 inf\.",
        ),
        (
            (VOTES, A_IN, np.zeros(3), 0.0),
            {},
            ValueError,
            r"`beta_u` must be a scalar, \(4, 5\), \(4,\); got shape \(3,\)\.",
        ),
        (
            (VOTES, A_IN, 0.0, np.zeros((4, 5))),
            {},
            ValueError,
            r"`beta_a` must be a scalar, \(4,\); got shape \(4, 5\)\.",
        ),
        (
            (VOTES, A_IN, float("nan"), 0.0),
            {},
            ValueError,
            r"`beta_u` must contain only finite values; got 1 NaN and 0 inf\.",
        ),
        (
            (VOTES, A_IN, "0", 0.0),
            {},
            TypeError,
            r"`beta_u` must be an array of real floating numbers; got str\.",
        ),
        ((VOTES, A_IN, 0.0, 0.0, 0), {}, ValueError, r"`n_iter` must be an integer >= 1; got 0\."),
        (
            (VOTES, A_IN, 0.0, 0.0),
            {"min_var": -1e-3},
            ValueError,
            r"`min_var` must be a finite real number >= 0; got -0\.001\.",
        ),
        (
            (VOTES, A_IN, 0.0, 0.0),
            {"eps": 0},
            ValueError,
            r"`eps` must be a finite real number > 0; got 0\.0\.",
        ),
        (
            (VOTES, A_IN, 0.0, 0.0),
            {"inverse_temperature": -1.0},
            ValueError,
            r"`inverse_temperature` must be a finite real number > 0; got -1\.0\.",
        ),
        (
            (VOTES, A_IN, 0.0, 0.0, 3),
            {"inverse_temperature": [1.0, 2.0]},
            ValueError,
            r"`inverse_temperature` as a sequence must hold one value per iteration \(n_iter=3\); "
            r"got shape \(2,\)\.",
        ),
        (
            (VOTES, A_IN, 0.0, 0.0, 2),
            {"inverse_temperature": [1.0, float("nan")]},
            ValueError,
            r"`inverse_temperature` must hold finite values > 0; got \[1\.0, nan\]\.",
        ),
        (
            (VOTES, A_IN, 0.0, 0.0),
            {"return_assignments": None},
            TypeError,
            r"`return_assignments` must be True or False; got None \(NoneType\)\.",
        ),
    ],
)
def test_bad_input(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        cr.em_routing(*args, **kwargs)


def test_mixed_libraries_rejected():
    xs = pytest.importorskip("array_api_strict")
    with pytest.raises(TypeError, match=r"`a_in` must be an array of the same library as `votes`"):
        cr.em_routing(xs.zeros((1, 2, 2, 2)), np.ones((1, 2)), 0.0, 0.0)


def test_initial_assignments_continue_routing_where_it_stopped(xp, dtype):
    votes, a_in = _problem(dtype=dtype, seed=11)
    args = dict(beta_u=0.1, beta_a=0.0, inverse_temperature=0.3, return_assignments=True)
    V, A = as_xp(votes, xp), as_xp(a_in, xp)
    p5, a5, R5 = cr.em_routing(V, A, n_iter=5, **args)
    _, _, R3 = cr.em_routing(V, A, n_iter=3, **args)
    p, a, R = cr.em_routing(V, A, n_iter=3, initial_assignments=R3, **args)
    tol = dict(rtol=rtol_for(dtype) * 20, atol=atol_for(dtype) * 20)
    for got, want in ((p, p5), (a, a5), (R, R5)):
        np.testing.assert_allclose(cr.to_numpy(got), cr.to_numpy(want), **tol)


def test_initial_assignments_match_oracle(xp):
    votes, a_in = _problem(seed=12)
    R0 = np.random.default_rng(13).dirichlet(np.ones(3), size=(2, 6))
    pose, act, R = cr.em_routing(
        as_xp(votes, xp),
        as_xp(a_in, xp),
        0.2,
        0.1,
        2,
        inverse_temperature=0.5,
        initial_assignments=as_xp(R0, xp),
        return_assignments=True,
    )
    p_ref, a_ref, R_ref = em_routing_loops(
        votes, a_in, np.full((3, 4), 0.2), np.full(3, 0.1), [0.5, 0.5], min_var=5e-4, initial_R=R0
    )
    np.testing.assert_allclose(cr.to_numpy(pose), p_ref, rtol=1e-10)
    np.testing.assert_allclose(cr.to_numpy(act), a_ref, rtol=1e-10)
    np.testing.assert_allclose(cr.to_numpy(R), R_ref, rtol=1e-10)


@pytest.mark.parametrize(
    "R0, exc, match",
    [
        (
            np.full((2, 3), 0.25),
            ValueError,
            r"`initial_assignments` must be 3-D \(batch, n_in, n_out\); got ndim=2 with shape \(2, 3\)\.",
        ),
        (
            np.full((2, 3, 5), 0.2),
            ValueError,
            r"`initial_assignments` must have shape \(batch, n_in, n_out\) of `votes` = \(2, 3, 4\); "
            r"got shape \(2, 3, 5\)\.",
        ),
        (
            np.full((2, 3, 4), 0.3),
            ValueError,
            r"`initial_assignments` rows must sum to 1 over the parents \(axis -1\); "
            r"the largest deviation is 0\.2\.",
        ),
        (
            np.tile([1.5, -0.5, 0.0, 0.0], (2, 3, 1)),
            ValueError,
            r"`initial_assignments` must hold values in \[0, 1\]; got values in \[-0\.5, 1\.5\]\.",
        ),
    ],
)
def test_bad_initial_assignments(R0, exc, match):
    with pytest.raises(exc, match=match):
        cr.em_routing(VOTES, A_IN, 0.0, 0.0, initial_assignments=R0)
