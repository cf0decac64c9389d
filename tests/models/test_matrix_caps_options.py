"""Matrix-capsule layer options of issue 12: the transposed weight layout, configurable
coordinate addition, and the EM-routing variants passed on to the routing."""

import numpy as np
import pytest

import caproute as cr
from caproute import models
from caproute._backend import BackendUnavailableError
from caproute.models import ClassMatrixCaps, ConvMatrixCaps, Model, PrimaryMatrixCaps

VARIANTS = dict(
    pose_momentum=0.9,
    e_step_log_var_weight=1.0,
    e_step_norm="ratio_sample",
    mass_floor="add",
    cost_log_var="log_var_eps",
    renormalize_assignments=True,
    last_inverse_temperature=0.2,
)


def _map(b=2, h=3, w=4, t=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(b, h, w, t, 16)), rng.uniform(0.1, 1.0, size=(b, h, w, t))


def _class_params(t_in, n_cls, seed=1):
    rng = np.random.default_rng(seed)
    return {
        "weight": rng.normal(size=(t_in, n_cls, 4, 4)) * 0.5,
        "beta_u": rng.normal(size=n_cls),
        "beta_a": rng.normal(size=n_cls),
    }


def _class_votes(pose, W, offsets_y, offsets_x, entries, transposed=False):
    """Votes of ClassMatrixCaps written out with einsum: (b, h*w*t, n_cls, 16)."""
    b, h, w, t, _ = pose.shape
    M = pose.reshape(b, h, w, t, 4, 4)
    Wm = np.swapaxes(W, -1, -2) if transposed else W
    V = np.einsum("bhwtrk,tckq->bhwtcrq", M, Wm).reshape(b, h, w, t, W.shape[1], 16)
    if offsets_y is not None:
        V[..., entries[0]] += np.asarray(offsets_y)[None, :, None, None, None]
        V[..., entries[1]] += np.asarray(offsets_x)[None, None, :, None, None]
    return V.reshape(b, h * w * t, W.shape[1], 16)


def _forward(layer, x, params):
    return layer.forward(x, params, xp=np, backend="numpy")


@pytest.mark.parametrize(
    "grid, ys, xs",
    [
        ("centre", [0.5 / 3, 1.5 / 3, 2.5 / 3], [0.125, 0.375, 0.625, 0.875]),
        ("centre_signed", [-2 / 3, 0.0, 2 / 3], [-0.75, -0.25, 0.25, 0.75]),
        ("index", [0.0, 1 / 3, 2 / 3], [0.0, 0.25, 0.5, 0.75]),
    ],
)
@pytest.mark.parametrize("entries", [(3, 7), (0, 1), (12, 2)])
@pytest.mark.parametrize("layout", ["caproute", "transposed"])
def test_class_caps_votes(grid, ys, xs, entries, layout):
    pose, act = _map()
    params = _class_params(2, 5)
    layer = ClassMatrixCaps(
        5,
        coordinate_grid=grid,
        coordinate_entries=entries,
        weight_layout=layout,
        inverse_temperature=0.5,
    )
    got = _forward(layer, (pose, act), params)
    votes = _class_votes(pose, params["weight"], ys, xs, entries, transposed=layout != "caproute")
    ref = cr.em_routing(
        votes,
        act.reshape(2, -1),
        params["beta_u"],
        params["beta_a"],
        3,
        inverse_temperature=0.5,
        backend="numpy",
    )
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-10, atol=1e-12)


def test_explicit_coordinates_and_variants_reach_the_routing():
    pose, act = _map()
    params = _class_params(2, 5)
    ys, xs = [0.3, -1.0, 2.0], [0.0, 0.1, 0.2, 0.3]
    layer = ClassMatrixCaps(
        5,
        coordinate_grid="explicit",
        coordinate_values=(ys, xs),
        inverse_temperature=0.5,
        **VARIANTS,
    )
    got = _forward(layer, (pose, act), params)
    votes = _class_votes(pose, params["weight"], ys, xs, (3, 7))
    ref = cr.em_routing(
        votes,
        act.reshape(2, -1),
        params["beta_u"],
        params["beta_a"],
        3,
        inverse_temperature=0.5,
        backend="numpy",
        **VARIANTS,
    )
    plain = cr.em_routing(
        votes,
        act.reshape(2, -1),
        params["beta_u"],
        params["beta_a"],
        3,
        inverse_temperature=0.5,
        backend="numpy",
    )
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-10, atol=1e-12)
    assert not np.allclose(got[1], plain[1], rtol=1e-6)


def test_no_coordinate_addition():
    pose, act = _map()
    params = _class_params(2, 3)
    got = _forward(ClassMatrixCaps(3, coordinate_addition=False), (pose, act), params)
    votes = _class_votes(pose, params["weight"], None, None, None)
    ref = cr.em_routing(
        votes, act.reshape(2, -1), params["beta_u"], params["beta_a"], 3, backend="numpy"
    )
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-10)


@pytest.mark.parametrize("competition", ["position", "all"])
def test_conv_caps_transposed_layout_is_the_transposed_weight(competition):
    rng = np.random.default_rng(3)
    pose, act = _map(b=2, h=5, w=5, t=2)
    params = {
        "weight": rng.normal(size=(3, 3, 2, 3, 4, 4)) * 0.5,
        "beta_u": rng.normal(size=3),
        "beta_a": rng.normal(size=3),
    }
    swapped = dict(params, weight=np.swapaxes(params["weight"], -1, -2).copy())
    kw = dict(kernel_size=3, stride=2, competition=competition, inverse_temperature=0.5)
    a = _forward(ConvMatrixCaps(3, weight_layout="transposed", **kw), (pose, act), params)
    b = _forward(ConvMatrixCaps(3, **kw), (pose, act), swapped)
    c = _forward(ConvMatrixCaps(3, **kw), (pose, act), params)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-12, atol=1e-12)
    assert not np.allclose(a[1], c[1], rtol=1e-6)


@pytest.mark.parametrize("competition", ["position", "all"])
def test_conv_caps_variants_change_the_output(competition):
    rng = np.random.default_rng(5)
    pose, act = _map(b=1, h=4, w=4, t=2)
    params = {
        "weight": rng.normal(size=(3, 3, 2, 2, 4, 4)),
        "beta_u": np.zeros(2),
        "beta_a": np.zeros(2),
    }
    kw = dict(kernel_size=3, stride=1, competition=competition, inverse_temperature=1.0)
    base = _forward(ConvMatrixCaps(2, **kw), (pose, act), params)
    varied = _forward(ConvMatrixCaps(2, **kw, **VARIANTS), (pose, act), params)
    assert not np.allclose(base[1], varied[1], rtol=1e-6)
    if competition == "all":
        init = _forward(ConvMatrixCaps(2, competition_init="position", **kw), (pose, act), params)
        assert not np.allclose(base[1], init[1], rtol=1e-6)


def test_numba_and_reference_agree_in_a_layer_with_variants():
    pytest.importorskip("numba")
    pose, act = _map(b=2, h=4, w=4, t=2)
    rng = np.random.default_rng(6)
    params = {
        "weight": rng.normal(size=(3, 3, 2, 2, 4, 4)),
        "beta_u": np.zeros(2),
        "beta_a": np.zeros(2),
    }
    options = dict(VARIANTS, e_step_norm="ratio_child")
    layer = ConvMatrixCaps(2, kernel_size=3, inverse_temperature=1.0, **options)
    ref = layer.forward((pose, act), params, xp=np, backend="numpy")
    got = layer.forward((pose, act), params, xp=np, backend="numba")
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-10)
    with pytest.raises(
        BackendUnavailableError,
        match="ratio_sample",
    ):
        ConvMatrixCaps(2, kernel_size=3, e_step_norm="ratio_sample").forward(
            (pose, act), params, xp=np, backend="numba"
        )


def test_config_round_trip_through_a_file(tmp_path):
    net = models.matrix_capsnet(
        2,
        2,
        2,
        2,
        input_shape=(22, 22, 1),
        n_classes=3,
        competition="all",
        competition_init="position",
        weight_layout="transposed",
        coordinate_grid="explicit",
        coordinate_values=([0.1, 0.2], [-0.3, 0.4]),
        coordinate_entries=(0, 1),
        inverse_temperature=1e-3,
        **VARIANTS,
    ).initialize(random_state=0)
    caps = net.layers[-1]
    assert caps.weight_layout == "transposed" and caps.coordinate_entries == (0, 1)
    assert net.layers[2].competition_init == "position"
    assert all(getattr(net.layers[i], k) == v for i in (2, 3, 4) for k, v in VARIANTS.items())
    path = tmp_path / "m.safetensors"
    models.save(net, path)
    back = models.load(path)
    assert back.get_config() == net.get_config()
    x = np.random.default_rng(0).uniform(size=(2, 22, 22, 1))
    np.testing.assert_array_equal(back.forward(x)[1], net.forward(x)[1])
    for layer in net.layers[2:]:
        assert type(layer)(**layer.get_config()).get_config() == layer.get_config()


def test_defaults_in_config():
    cfg = ClassMatrixCaps(3).get_config()
    assert cfg["coordinate_grid"] == "centre" and cfg["coordinate_entries"] == [3, 7]
    assert cfg["weight_layout"] == "caproute" and cfg["e_step_norm"] == "softmax"
    assert ConvMatrixCaps(3).get_config()["competition_init"] == "all"


BAD = [
    (lambda: ClassMatrixCaps(3, weight_layout="keras"), "`weight_layout` must be one of"),
    (lambda: ConvMatrixCaps(3, weight_layout=None), "`weight_layout` must be one of"),
    (lambda: ClassMatrixCaps(3, coordinate_grid="pixels"), "`coordinate_grid` must be one of"),
    (lambda: ClassMatrixCaps(3, coordinate_entries=(3, 3)), "two distinct flat indices"),
    (lambda: ClassMatrixCaps(3, coordinate_entries=(3, 16)), "two distinct flat indices"),
    (lambda: ClassMatrixCaps(3, coordinate_entries=(3,)), "two distinct flat indices"),
    (lambda: ClassMatrixCaps(3, coordinate_entries=(0.0, 1)), "two distinct flat indices"),
    (
        lambda: ClassMatrixCaps(3, coordinate_values=([0.0], [0.0])),
        "used only with coordinate_grid='explicit'",
    ),
    (lambda: ClassMatrixCaps(3, coordinate_grid="explicit"), "must be a pair \\(ys, xs\\)"),
    (
        lambda: ClassMatrixCaps(3, coordinate_grid="explicit", coordinate_values=([], [1.0])),
        "must be a pair",
    ),
    (
        lambda: ClassMatrixCaps(
            3, coordinate_grid="explicit", coordinate_values=([float("nan")], [1.0])
        ),
        "coordinate_values \\(ys\\[0\\]\\)",
    ),
    (lambda: ConvMatrixCaps(3, competition_init="uniform"), "`competition_init` must be one of"),
    (lambda: ConvMatrixCaps(3, e_step_norm="exact"), "`e_step_norm` must be one of"),
    (lambda: ClassMatrixCaps(3, pose_momentum=2.0), "`pose_momentum` must be None or"),
    (lambda: ClassMatrixCaps(3, mass_floor="min"), "`mass_floor` must be one of"),
    (lambda: ClassMatrixCaps(3, cost_log_var=1), "`cost_log_var` must be one of"),
    (lambda: ClassMatrixCaps(3, e_step_log_var_weight=0.25), "`e_step_log_var_weight` must be"),
    (lambda: ClassMatrixCaps(3, renormalize_assignments="yes"), "`renormalize_assignments`"),
    (
        lambda: ClassMatrixCaps(
            3, inverse_temperature=[0.1, 0.2, 0.3], last_inverse_temperature="next"
        ),
        "sequence of inverse temperatures",
    ),
    (lambda: ClassMatrixCaps(3, last_inverse_temperature=-1), "`last_inverse_temperature`"),
    (
        lambda: models.matrix_capsnet(2, 2, 2, 2, weight_layout="t"),
        "`weight_layout` must be one of",
    ),
    (
        lambda: Model(
            [
                PrimaryMatrixCaps(2, name="p"),
                ClassMatrixCaps(
                    3,
                    coordinate_grid="explicit",
                    coordinate_values=([0.0, 1.0], [0.0, 1.0, 2.0]),
                    name="c",
                ),
            ],
            input_shape=(3, 3, 4),
        ),
        "`coordinate_values` holds 2 row and 3 column values; its 3x3 input map needs 3 and 3",
    ),
]


@pytest.mark.parametrize("make, match", BAD)
def test_bad_arguments_fail_at_construction(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()
