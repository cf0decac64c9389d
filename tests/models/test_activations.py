"""Activations: the erf they need, each function against its formula, the spec (names, dicts,
leaky_relu's slope) and its round trip through a saved model."""

import math
import warnings

import numpy as np
import pytest

from caproute import models
from caproute.models import Activation, Conv2D, Model
from caproute.models.layers.activations import (
    SELU_ALPHA,
    SELU_SCALE,
    apply_activation,
    check_activation,
    erf,
    erfc,
)


def _points():
    grid = np.linspace(-30.0, 30.0, 60001)
    tiny = np.geomspace(1e-300, 30.0, 3000)
    edges = np.array([0.46875, np.nextafter(0.46875, 1), 4.0, np.nextafter(4.0, 5), 5.9, 26.5])
    return np.concatenate([grid, tiny, -tiny, edges, -edges, [0.0]])


def test_erf_matches_math_erf_to_float64_accuracy():
    x = _points()
    got = erf(x, np)
    ref = np.array([math.erf(v) for v in x])
    nonzero = ref != 0
    rel = np.abs(got - ref)[nonzero] / np.abs(ref[nonzero])
    assert rel.max() < 1e-14
    assert np.all(got[~nonzero] == 0)
    assert np.array_equal(erf(-x, np), -got)  # odd


def test_erfc_is_relatively_accurate_where_it_is_tiny():
    x = _points()
    got = erfc(x, np)
    ref = np.array([math.erfc(v) for v in x])
    normal = ref > 1e-300  # below, float64 subnormals carry few digits
    rel = np.abs(got - ref)[normal] / ref[normal]
    assert rel.max() < 1e-14
    assert np.all(np.abs(got[~normal]) < 1e-300)


def test_erf_at_extremes_without_warnings():
    x = np.array([np.inf, -np.inf, 1e300, -1e300, 1e10, np.nan, 0.0, -0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = erf(x, np)
        info = np.finfo(np.float32)
        x32 = np.array([np.inf, -np.inf, info.max, -info.max, 1e10, np.nan], dtype=np.float32)
        got32 = erf(x32, np)
    assert got[:5].tolist() == [1.0, -1.0, 1.0, -1.0, 1.0]
    assert np.isnan(got[5]) and got[6] == 0.0
    assert got32.dtype == np.float32
    assert got32[:5].tolist() == [1.0, -1.0, 1.0, -1.0, 1.0] and np.isnan(got32[5])


def test_erf_float32_accuracy():
    x = np.linspace(-6, 6, 2001).astype(np.float32)
    ref = np.array([math.erf(float(v)) for v in x])
    got = erf(x, np)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)


def _gelu_ref(v):
    return v * 0.5 * math.erfc(-v / math.sqrt(2.0))


def _sigmoid_ref(v):
    return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))


REFERENCES = {
    "gelu": _gelu_ref,
    # x/2 (1 + tanh(u)) = x sigmoid(2u): the form without cancellation for very negative x
    "gelu_tanh": lambda v: v * _sigmoid_ref(2 * math.sqrt(2.0 / math.pi) * (v + 0.044715 * v**3)),
    "selu": lambda v: SELU_SCALE * (v if v > 0 else SELU_ALPHA * math.expm1(v)),
    "swish": lambda v: v * _sigmoid_ref(v),
    "silu": lambda v: v * _sigmoid_ref(v),
    "elu": lambda v: v if v > 0 else math.expm1(v),
    "softplus": lambda v: math.log1p(math.exp(-abs(v))) + max(v, 0.0),
    "relu": lambda v: max(v, 0.0),
    "sigmoid": _sigmoid_ref,
    "tanh": math.tanh,
    "linear": lambda v: v,
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_activation_matches_its_formula(name):
    x = np.concatenate([np.linspace(-8.0, 8.0, 801), [-30.0, -12.5, 12.5, 30.0]])
    ref = np.array([REFERENCES[name](v) for v in x])
    got = apply_activation(x, name, xp=np)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-300)
    got32 = apply_activation(x.astype(np.float32), name, xp=np)
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, ref, rtol=2e-5, atol=2e-6)


def test_gelu_keeps_relative_accuracy_far_out():
    x = np.array([-20.0, -10.0, -5.0, 5.0, 10.0])
    ref = np.array([_gelu_ref(v) for v in x])
    np.testing.assert_allclose(apply_activation(x, "gelu", xp=np), ref, rtol=1e-13)


def test_gelu_tanh_matches_the_frameworks_tanh_form():
    x = np.linspace(-8.0, 8.0, 801)
    u = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)
    np.testing.assert_allclose(
        apply_activation(x, "gelu_tanh", xp=np), 0.5 * x * (1.0 + np.tanh(u)), atol=1e-15
    )


def test_gelu_tanh_differs_from_exact_gelu():
    x = np.array([-1.5, 0.7])
    exact = apply_activation(x, "gelu", xp=np)
    approx = apply_activation(x, "gelu_tanh", xp=np)
    assert np.all(np.abs(exact - approx) > 1e-5)
    assert np.all(np.abs(exact - approx) < 1e-2)


@pytest.mark.parametrize("name", ["gelu", "gelu_tanh", "selu", "swish", "softplus", "sigmoid"])
def test_extreme_inputs_stay_finite_without_warnings(name):
    for dtype in (np.float32, np.float64):
        x = np.array([-3e38, -1e30, -1e6, -100.0, 0.0, 100.0, 1e6, 1e30, 3e38], dtype=dtype)
        x = x[: -1 if name == "selu" else None]  # selu(3e38) is beyond float32
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = apply_activation(x, name, xp=np)
        assert out.dtype == dtype
        assert np.all(np.isfinite(out))


@pytest.mark.parametrize("slope", [0.3, 0.01, 0.2, -0.5])
def test_leaky_relu_with_its_slope(slope):
    x = np.array([-2.0, -0.5, 0.0, 1.5])
    spec = {"name": "leaky_relu", "negative_slope": slope}
    expected = np.where(x >= 0, x, slope * x)
    assert np.array_equal(apply_activation(x, check_activation(spec), xp=np), expected)


def test_plain_leaky_relu_is_refused_with_the_dict_to_pass():
    for make in (
        lambda: Activation("leaky_relu"),
        lambda: Conv2D(2, 3, activation="leaky_relu"),
        lambda: models.capsnet(conv_activation="leaky_relu"),
        lambda: Activation({"name": "leaky_relu"}),
    ):
        with pytest.raises(ValueError, match="needs its slope|lacks 'negative_slope'") as info:
            make()
        text = str(info.value)
        assert "0.3" in text and "0.01" in text
        assert "{'name': 'leaky_relu', 'negative_slope': 0.3}" in text


def test_capsnet_names_conv_activation():
    with pytest.raises(ValueError, match="`conv_activation`"):
        models.capsnet(conv_activation="leaky_relu")
    with pytest.raises(ValueError, match="`conv_activation` must be one of"):
        models.capsnet(conv_activation="mish")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("mish", "`activation` must be one of"),
        ({"name": "mish"}, "needs 'name'"),
        ({"negative_slope": 0.3}, "needs 'name'"),
        ({"name": "relu", "alpha": 2.0}, "'relu' takes no parameters"),
        ({"name": "leaky_relu", "negative_slope": 0.3, "alpha": 1}, "unknown key"),
        ({"name": "leaky_relu", "negative_slope": "0.3"}, "finite real number"),
        ({"name": "leaky_relu", "negative_slope": float("nan")}, "finite real number"),
        ({"name": "elu", "alpha": True}, "finite real number"),
    ],
)
def test_bad_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        check_activation(spec)


def test_bad_spec_type():
    with pytest.raises(TypeError, match="`activation` must be a name"):
        check_activation(3)


def test_normal_form():
    assert check_activation({"name": "relu"}) == "relu"
    assert check_activation({"name": "elu", "alpha": 1}) == "elu"
    assert check_activation({"name": "elu", "alpha": 0.5}) == {"name": "elu", "alpha": 0.5}
    assert check_activation("silu") == "silu"
    assert check_activation(None) is None
    spec = check_activation({"name": "leaky_relu", "negative_slope": 1})
    assert spec == {"name": "leaky_relu", "negative_slope": 1.0}
    assert isinstance(spec["negative_slope"], float)


def test_elu_alpha():
    x = np.array([-1.0, 2.0])
    out = apply_activation(x, check_activation({"name": "elu", "alpha": 0.5}), xp=np)
    np.testing.assert_allclose(out, [0.5 * math.expm1(-1.0), 2.0], rtol=1e-15)


def test_activation_layer_config_is_a_copy():
    spec = {"name": "leaky_relu", "negative_slope": 0.3}
    layer = Activation(spec, name="act")
    spec["negative_slope"] = 5.0
    config = layer.get_config()
    assert config["activation"] == {"name": "leaky_relu", "negative_slope": 0.3}
    config["activation"]["negative_slope"] = 7.0
    assert layer.activation["negative_slope"] == 0.3


def test_dict_activations_survive_save_and_load(tmp_path):
    leaky = {"name": "leaky_relu", "negative_slope": 0.2}
    net = Model(
        [
            Conv2D(3, 3, activation=leaky, name="c1"),
            Conv2D(2, 3, activation={"name": "elu", "alpha": 0.7}, name="c2"),
            Activation("gelu_tanh", name="act"),
        ],
        input_shape=(7, 7, 1),
    ).initialize(random_state=1, dtype="float64")
    path = tmp_path / "act.safetensors"
    models.save(net, path)
    again = models.load(path)
    assert again.get_config() == net.get_config()
    assert again.layers[0].activation == leaky
    x = np.random.default_rng(0).uniform(0, 1, (2, 7, 7, 1))
    assert np.array_equal(again.forward(x), net.forward(x))
    # the slope is used: another slope gives another output
    other = Model.from_config(
        {
            **net.get_config(),
            "layers": [
                {
                    "class": "Conv2D",
                    "config": {
                        **net.layers[0].get_config(),
                        "activation": {"name": "leaky_relu", "negative_slope": 0.01},
                    },
                },
                *net.get_config()["layers"][1:],
            ],
        }
    ).set_weights(net.get_weights())
    assert not np.allclose(other.forward(x), net.forward(x))


def test_conv_activation_applies():
    net = models.capsnet(
        conv_channels=4,
        primary_types=2,
        class_dim=4,
        conv_activation={"name": "leaky_relu", "negative_slope": 0.3},
    ).initialize(random_state=0, dtype="float64")
    x = np.random.default_rng(1).uniform(0, 1, (1, 28, 28, 1))
    conv = net.forward(x, return_all=True)["conv1"]
    assert net.layers[0].activation == {"name": "leaky_relu", "negative_slope": 0.3}
    assert np.any(conv < 0)  # a ReLU would leave none
