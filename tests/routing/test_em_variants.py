"""EM-routing variants of public implementations (issue 12): each option against a small
NumPy loop written here from the formulas, defaults unchanged, the Numba kernel against the
reference, the dispatch's fallbacks, and bad values."""

import math

import numpy as np
import pytest

import caproute as cr
from caproute._backend import BackendUnavailableError, select_impl
from caproute._backend.dispatch import option_fallbacks
from caproute.routing import _em_conv_math, official_inverse_temperature
from tests._helpers import as_xp, assert_close, device_of

OPTION_CASES = [
    {},
    {"pose_momentum": 0.9},
    {"pose_momentum": 0.0},
    {"e_step_log_var_weight": 1.0},
    {"e_step_norm": "ratio_child"},
    {"e_step_norm": "ratio_sample"},
    {"e_step_norm": "ratio_batch"},
    {"mass_floor": "add"},
    {"cost_log_var": "half_log_var_eps"},
    {"cost_log_var": "log_var_eps"},
    {"renormalize_assignments": True},
    {"last_inverse_temperature": "next"},
    {"last_inverse_temperature": 0.37},
    {  # the common PyTorch port, roughly
        "mass_floor": "add",
        "renormalize_assignments": True,
        "e_step_norm": "ratio_child",
        "pose_momentum": 0.9,
        "e_step_log_var_weight": 1.0,
        "cost_log_var": "log_var_eps",
    },
]
NUMBA_OPTIONS = [
    c for c in OPTION_CASES if c.get("e_step_norm") not in ("ratio_sample", "ratio_batch")
]


def _problem(batch=3, n_in=7, n_out=4, dim=5, dtype="float64", seed=0, spread=1.0):
    rng = np.random.default_rng(seed)
    votes = (spread * rng.normal(size=(batch, n_in, n_out, dim))).astype(dtype)
    a_in = rng.uniform(0.05, 1.0, size=(batch, n_in)).astype(dtype)
    beta_u = rng.normal(size=(n_out, dim)).astype(dtype)
    beta_a = rng.normal(size=n_out).astype(dtype)
    return votes, a_in, beta_u, beta_a


def em_loop(V, a, beta_u, beta_a, lambdas, *, min_var, eps, **opt):
    """The routing from the formulas, one parent at a time (float64)."""
    V = np.asarray(V, np.float64)
    B, n_in, J, D = V.shape
    m = opt.get("pose_momentum")
    w = opt.get("e_step_log_var_weight", 0.5)
    norm = opt.get("e_step_norm", "softmax")
    floor = opt.get("mass_floor", "max")
    cost_mode = opt.get("cost_log_var", "half_log_var")
    renorm = opt.get("renormalize_assignments", False)
    R = np.full((B, n_in, J), 1.0 / J)
    mu = np.zeros((B, J, D))
    for t, lam in enumerate(lambdas):
        Ra = R * a[:, :, None]
        if renorm:
            Ra = Ra / (Ra.sum(axis=2, keepdims=True) + eps)
        new_mu = np.zeros((B, J, D))
        var = np.zeros((B, J, D))
        logit = np.zeros((B, J))
        for b in range(B):
            for j in range(J):
                S = Ra[b, :, j].sum()
                den = S + eps if floor == "add" else max(S, eps)
                mj = (Ra[b, :, j, None] * V[b, :, j]).sum(axis=0) / den
                if m is not None:
                    mj = m * mj + (1.0 - m) * mu[b, j]
                new_mu[b, j] = mj
                vj = (Ra[b, :, j, None] * (V[b, :, j] - mj) ** 2).sum(axis=0) / den + min_var
                vj = np.maximum(vj, eps)
                var[b, j] = vj
                if cost_mode == "half_log_var":
                    L = 0.5 * np.log(vj)
                elif cost_mode == "half_log_var_eps":
                    L = 0.5 * np.log(vj + eps)
                else:
                    L = np.log(vj + eps)
                logit[b, j] = lam * (beta_a[j] - ((beta_u[j] + L) * S).sum())
        mu = new_mu
        if t == len(lambdas) - 1:
            break
        log_a = -np.log1p(np.exp(-logit))
        logp = np.zeros((B, n_in, J))
        for j in range(J):
            d2 = ((V[:, :, j] - mu[:, None, j]) ** 2 / (2.0 * var[:, None, j])).sum(axis=-1)
            logp[:, :, j] = (
                log_a[:, None, j]
                - d2
                - w * np.log(var[:, j]).sum(axis=-1)[:, None]
                - 0.5 * D * math.log(2 * math.pi)
            )
        if norm == "softmax":
            e = np.exp(logp - logp.max(axis=2, keepdims=True))
            R = e / e.sum(axis=2, keepdims=True)
        else:
            s = {
                "ratio_child": logp.max(axis=2, keepdims=True),
                "ratio_sample": logp.max(axis=(1, 2), keepdims=True),
                "ratio_batch": logp.max(),
            }[norm]
            e = np.exp(logp - s)
            R = e / (e.sum(axis=2, keepdims=True) + eps)
    return mu, 1.0 / (1.0 + np.exp(-logit)), R


def _lambdas(n_iter, inverse_temperature, last):
    lam = (
        list(official_inverse_temperature(n_iter))
        if inverse_temperature is None
        else [inverse_temperature] * n_iter
    )
    if last == "next" and inverse_temperature is None:
        lam[-1] = official_inverse_temperature(n_iter + 1)[-1]
    elif not isinstance(last, str):
        lam[-1] = last
    return lam


@pytest.mark.parametrize("options", OPTION_CASES, ids=lambda o: ",".join(map(str, o.items())))
@pytest.mark.parametrize("inverse_temperature", [None, 0.4])
def test_each_option_matches_the_formulas(options, inverse_temperature):
    votes, a_in, beta_u, beta_a = _problem(seed=3)
    n_iter = 3
    last = options.get("last_inverse_temperature", "schedule")
    lam = _lambdas(n_iter, inverse_temperature, last)
    loop_opts = {k: v for k, v in options.items() if k != "last_inverse_temperature"}
    p_ref, a_ref, R_ref = em_loop(
        votes, a_in, beta_u, beta_a, lam, min_var=5e-4, eps=1e-8, **loop_opts
    )
    pose, act, R = cr.em_routing(
        votes,
        a_in,
        beta_u,
        beta_a,
        n_iter,
        inverse_temperature=inverse_temperature,
        return_assignments=True,
        backend="numpy",
        **options,
    )
    np.testing.assert_allclose(pose, p_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(act, a_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(R, R_ref, rtol=1e-10, atol=1e-12)


def test_options_change_the_result():
    """Each option does something on this problem (so the tests above could fail)."""
    votes, a_in, beta_u, beta_a = _problem(seed=3, spread=30.0)
    kw = dict(n_iter=3, inverse_temperature=0.4, return_assignments=True, backend="numpy")
    base = cr.em_routing(votes, a_in, beta_u, beta_a, eps=1e-3, **kw)
    for options in OPTION_CASES[1:]:
        if options.get("last_inverse_temperature") == "next":
            continue  # the same as the schedule with one inverse temperature
        out = cr.em_routing(votes, a_in, beta_u, beta_a, eps=1e-3, **kw, **options)
        assert not all(
            np.allclose(x, y, rtol=1e-9, atol=0) for x, y in zip(base, out, strict=True)
        ), options


def test_defaults_spelled_out_change_nothing(xp, dtype):
    votes, a_in, beta_u, beta_a = (as_xp(x, xp) for x in _problem(dtype=dtype))
    plain = cr.em_routing(votes, a_in, beta_u, beta_a, 3, return_assignments=True)
    spelled = cr.em_routing(
        votes,
        a_in,
        beta_u,
        beta_a,
        3,
        return_assignments=True,
        pose_momentum=None,
        e_step_log_var_weight=0.5,
        e_step_norm="softmax",
        mass_floor="max",
        cost_log_var="half_log_var",
        renormalize_assignments=False,
        last_inverse_temperature="schedule",
    )
    for x, y in zip(plain, spelled, strict=True):
        assert np.array_equal(cr.to_numpy(x), cr.to_numpy(y))


def test_momentum_one_is_no_momentum():
    votes, a_in, beta_u, beta_a = _problem()
    a = cr.em_routing(votes, a_in, beta_u, beta_a, 3, backend="numpy")
    b = cr.em_routing(votes, a_in, beta_u, beta_a, 3, backend="numpy", pose_momentum=1.0)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-12)


def test_ratio_norm_rows_can_sum_below_one():
    """With a shift over the whole sample, far-off children get almost no assignment."""
    votes, a_in, beta_u, beta_a = _problem(n_in=12, seed=1, spread=1.0)
    votes[:, 0] += 40.0  # one outlying child, nearly inactive: the parents ignore it
    a_in[:, 0] = 1e-4
    _, _, R = cr.em_routing(
        votes,
        a_in,
        0.0,
        0.0,
        2,
        e_step_norm="ratio_sample",
        eps=1e-6,
        inverse_temperature=1.0,
        return_assignments=True,
        backend="numpy",
    )
    sums = R.sum(axis=-1)
    assert sums[:, 0].max() < 0.5
    np.testing.assert_allclose(sums[:, 1:], 1.0, atol=1e-3)


@pytest.mark.parametrize("options", NUMBA_OPTIONS, ids=lambda o: ",".join(map(str, o.items())))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numba_kernel_matches_reference(options, dtype):
    pytest.importorskip("numba")
    votes, a_in, beta_u, beta_a = _problem(batch=3, n_in=11, n_out=3, dim=16, dtype=dtype, seed=7)
    kw = dict(inverse_temperature=0.5, return_assignments=True, **options)
    ref = cr.em_routing(votes, a_in, beta_u, beta_a, 3, backend="numpy", **kw)
    got = cr.em_routing(votes, a_in, beta_u, beta_a, 3, backend="numba", **kw)
    rtol, atol = (2e-4, 1e-5) if dtype == "float32" else (1e-10, 1e-12)
    for x, y in zip(got, ref, strict=True):
        assert x.dtype == np.dtype(dtype)
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


@pytest.mark.parametrize("norm", ["ratio_sample", "ratio_batch"])
def test_numba_lacks_some_options(norm):
    pytest.importorskip("numba")
    votes, a_in, beta_u, beta_a = _problem()
    with pytest.raises(BackendUnavailableError, match=f"e_step_norm='{norm}'"):
        cr.em_routing(votes, a_in, beta_u, beta_a, backend="numba", e_step_norm=norm)
    # auto runs the reference: the same numbers as backend="numpy", bit for bit
    auto = cr.em_routing(votes, a_in, beta_u, beta_a, backend="auto", e_step_norm=norm)
    ref = cr.em_routing(votes, a_in, beta_u, beta_a, backend="numpy", e_step_norm=norm)
    for x, y in zip(auto, ref, strict=True):
        assert np.array_equal(x, y)
    plan = select_impl("em_routing", np, "auto", options=(("e_step_norm", norm),))
    assert plan.impl == "reference"


def test_dispatch_keeps_kernels_for_what_they_implement():
    pytest.importorskip("numba")
    options = (("pose_momentum", 0.9), ("e_step_norm", "ratio_child"))
    assert select_impl("em_routing", np, "auto", options=options).impl == "numba"
    assert select_impl("em_routing", np, "auto").impl == "numba"


def test_gpu_kernel_falls_back_to_the_reference_on_the_device():
    from caproute.testing import emulated_gpu

    votes, a_in, beta_u, beta_a = _problem()
    ref = cr.em_routing(votes, a_in, beta_u, beta_a, backend="numpy", mass_floor="add")
    with emulated_gpu():
        import array_api_strict

        plan = select_impl("em_routing", array_api_strict, "cupy", options=(("mass_floor", "add"),))
        assert plan.impl == "reference"
        pose, act = cr.em_routing(votes, a_in, beta_u, beta_a, backend="cupy", mass_floor="add")
        assert_close(cr.to_numpy(act), ref[1], dtype="float64")


def test_option_fallbacks_table():
    table = option_fallbacks()["em_routing"]
    assert table["numba"] == ["e_step_norm=ratio_sample", "e_step_norm=ratio_batch"]
    assert "pose_momentum" in table["cupy"] and "last_inverse_temperature" not in table["cupy"]


# ------------------------------------------------------------- competition="all" (all positions)
def _all_positions(votes, a_in, beta_u, beta_a, grid, kernel, stride, lam, **opt):
    return _em_conv_math.em_routing_all_positions(
        votes,
        a_in,
        beta_u,
        beta_a,
        grid=grid,
        kernel=kernel,
        stride=stride,
        inverse_temperature=lam,
        min_var=5e-4,
        eps=1e-8,
        xp=np,
        **opt,
    )


@pytest.mark.parametrize(
    "options",
    [c for c in OPTION_CASES if "last_inverse_temperature" not in c],
    ids=lambda o: ",".join(map(str, o.items())),
)
def test_all_positions_with_1x1_fields_is_per_position_routing(options):
    """With 1x1 fields on a 1x1 map every child feeds one field: competing over all positions
    is per-position routing, for every option (a sample is then one image either way)."""
    b, t_in, t_out = 3, 5, 4
    votes, a_in, beta_u, beta_a = _problem(batch=b, n_in=t_in, n_out=t_out, dim=16, seed=2)
    lam = (0.3, 0.5, 0.7)
    pose, act = _all_positions(votes, a_in, beta_u, beta_a, (b, 1, 1, 1, 1), 1, 1, lam, **options)
    ref = cr.em_routing(
        votes, a_in, beta_u, beta_a, 3, inverse_temperature=list(lam), backend="numpy", **options
    )
    np.testing.assert_allclose(pose, ref[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(act, ref[1], rtol=1e-10, atol=1e-12)


def test_competition_init_position_starts_at_one_over_n_out():
    """One iteration is one M-step from the starting assignments: with "position" it is the
    per-position routing's, with "all" (children shared by fields) it is not."""
    b, h, w, k, s, t_in, t_out = 2, 4, 4, 3, 1, 2, 3
    ho = wo = 2
    rng = np.random.default_rng(4)
    votes = rng.normal(size=(b * ho * wo, k * k * t_in, t_out, 16))
    a_in = rng.uniform(0.1, 1.0, size=(b * ho * wo, k * k * t_in))
    beta_u, beta_a = np.zeros((t_out, 16)), np.zeros(t_out)
    grid = (b, h, w, ho, wo)
    pos = _all_positions(
        votes, a_in, beta_u, beta_a, grid, k, s, (1.0,), competition_init="position"
    )
    every = _all_positions(votes, a_in, beta_u, beta_a, grid, k, s, (1.0,))
    ref = cr.em_routing(votes, a_in, beta_u, beta_a, 1, inverse_temperature=1.0, backend="numpy")
    np.testing.assert_allclose(pos[1], ref[1], rtol=1e-12)
    assert not np.allclose(every[1], ref[1], rtol=1e-6)


# ------------------------------------------------------------------------------ bad values
BAD = [
    (
        {"pose_momentum": 1.5},
        ValueError,
        r"`pose_momentum` must be None or a real number in \[0, 1\]",
    ),
    ({"pose_momentum": -0.1}, ValueError, r"`pose_momentum` must be a finite real number >= 0"),
    ({"pose_momentum": "0.9"}, TypeError, "`pose_momentum` must be a real number"),
    ({"e_step_log_var_weight": 2.0}, ValueError, "`e_step_log_var_weight` must be 0.5"),
    ({"e_step_norm": "ratio"}, ValueError, "`e_step_norm` must be one of 'softmax'"),
    ({"mass_floor": "clip"}, ValueError, "`mass_floor` must be one of 'max', 'add'"),
    ({"cost_log_var": "log"}, ValueError, "`cost_log_var` must be one of 'half_log_var'"),
    ({"renormalize_assignments": 1}, TypeError, "`renormalize_assignments` must be True or False"),
    (
        {"last_inverse_temperature": "last"},
        ValueError,
        "`last_inverse_temperature` must be 'schedule'",
    ),
    (
        {"last_inverse_temperature": 0.0},
        ValueError,
        "`last_inverse_temperature` must be a finite real number > 0",
    ),
    (
        {"last_inverse_temperature": "next", "inverse_temperature": [0.1, 0.2, 0.3]},
        ValueError,
        "with a sequence of inverse temperatures",
    ),
    ({"last_inverse_temperature": 1e300}, ValueError, "last_inverse_temperature"),
]


@pytest.mark.parametrize("kwargs, exc, match", BAD)
def test_bad_options(kwargs, exc, match):
    votes, a_in, beta_u, beta_a = _problem(dtype="float32")
    with pytest.raises(exc, match=match):
        cr.em_routing(votes, a_in, beta_u, beta_a, 3, **kwargs)


@pytest.mark.parametrize("norm", ["ratio_child", "ratio_sample", "ratio_batch"])
def test_variants_run_on_every_namespace(xp, norm):
    votes, a_in, beta_u, beta_a = _problem(seed=9)
    options = dict(OPTION_CASES[-1], e_step_norm=norm, last_inverse_temperature=0.3)
    ref = cr.em_routing(votes, a_in, beta_u, beta_a, 3, backend="numpy", **options)
    got = cr.em_routing(*(as_xp(x, xp) for x in (votes, a_in, beta_u, beta_a)), 3, **options)
    for x, y in zip(got, ref, strict=True):
        assert_close(x, y, xp=xp, device=device_of(xp), dtype="float64")
