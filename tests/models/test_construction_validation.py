"""Arguments checked when a layer or model is built (named as the caller wrote them), padding
and convolution stacks computed as the frameworks do, and weight mismatches explained."""

import numpy as np
import pytest

from caproute import models
from caproute.models import Conv2D, DenseCaps, Model, PrimaryCaps, WeightsMismatchError


def _conv_ref(x, w, b, stride, pads):
    """Naive NHWC cross-correlation over an explicitly padded input."""
    (t, bot), (left, right) = pads
    x = np.pad(x, ((0, 0), (t, bot), (left, right), (0, 0)))
    k = w.shape[0]
    ho = (x.shape[1] - k) // stride + 1
    wo = (x.shape[2] - k) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, w.shape[3]))
    for i in range(ho):
        for j in range(wo):
            patch = x[:, i * stride : i * stride + k, j * stride : j * stride + k, :]
            out[:, i, j, :] = np.einsum("bhwc,hwco->bo", patch, w)
    return out + (0 if b is None else b)


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding", "pads"),
    [
        (8, 3, 1, "same", ((1, 1), (1, 1))),
        (8, 4, 1, "same", ((1, 2), (1, 2))),  # TF: the odd zero after
        (8, 3, 2, "same", ((0, 1), (0, 1))),  # ceil(8/2) = 4 outputs
        (9, 3, 2, "same", ((1, 1), (1, 1))),
        (7, 5, 3, "same", ((2, 2), (2, 2))),  # 3 outputs: (3 - 1) * 3 + 5 - 7 = 4 zeros
        (8, 3, 2, "valid", ((0, 0), (0, 0))),
        (8, 3, 2, 2, ((2, 2), (2, 2))),
        (8, 3, 1, (1, 0), ((1, 1), (0, 0))),
        (8, 3, 2, ((0, 1), (2, 0)), ((0, 1), (2, 0))),
    ],
)
def test_conv_padding(size, kernel, stride, padding, pads):
    rng = np.random.default_rng(0)
    net = Model(
        [Conv2D(3, kernel, stride=stride, padding=padding, name="c")], input_shape=(size, size, 2)
    )
    w, b = rng.normal(0, 1, (kernel, kernel, 2, 3)), rng.normal(0, 1, 3)
    net.set_weights({"c.weight": w, "c.bias": b})
    x = rng.uniform(0, 1, (2, size, size, 2))
    expected = _conv_ref(x, w, b, stride, pads)
    if padding == "same":
        assert expected.shape[1:3] == (-(-size // stride),) * 2
    assert net.output_shape == expected.shape[1:]
    np.testing.assert_allclose(net.forward(x), expected, rtol=1e-12, atol=1e-12)


def test_conv_padding_nchw():
    rng = np.random.default_rng(1)
    w = rng.normal(0, 1, (3, 3, 2, 3))
    nets = [
        Model(
            [Conv2D(3, 3, stride=2, padding="same", use_bias=False, data_format=f, name="c")],
            input_shape=s,
        ).set_weights({"c.weight": w})
        for f, s in (("NHWC", (8, 8, 2)), ("NCHW", (2, 8, 8)))
    ]
    x = rng.uniform(0, 1, (1, 8, 8, 2))
    out_nchw = nets[1].forward(np.transpose(x, (0, 3, 1, 2)))
    np.testing.assert_allclose(np.transpose(out_nchw, (0, 2, 3, 1)), nets[0].forward(x))


def test_primary_caps_padding():
    rng = np.random.default_rng(2)
    layer = PrimaryCaps(2, 3, kernel_size=3, stride=2, padding="same", name="p")
    net = Model([layer], input_shape=(8, 8, 1))
    assert net.output_shape == (4 * 4 * 2, 3)
    w, b = rng.normal(0, 1, (3, 3, 1, 6)), rng.normal(0, 1, 6)
    net.set_weights({"p.weight": w, "p.bias": b})
    x = rng.uniform(0, 1, (1, 8, 8, 1))
    conv = _conv_ref(x, w, b, 2, ((0, 1), (0, 1)))  # (1, 4, 4, 6): type-major flattening
    caps = conv.reshape(1, 16, 2, 3).transpose(0, 2, 1, 3).reshape(1, 32, 3)
    n2 = np.sum(caps**2, axis=-1, keepdims=True)
    expected = caps * n2 / ((1 + n2) * np.sqrt(n2 + 1e-8))
    np.testing.assert_allclose(net.forward(x), expected, rtol=1e-12)
    assert PrimaryCaps(2, 3, padding=(1, 2)).get_config()["padding"] == [[1, 1], [2, 2]]


@pytest.mark.parametrize("padding", [-1, "full", (1,), (1, 2, 3), ((1, 2), (3,)), 1.5, True])
def test_bad_padding(padding):
    with pytest.raises(ValueError, match="`padding` must be an int >= 0"):
        Conv2D(2, 3, padding=padding)
    with pytest.raises(ValueError, match="`primary_padding` must be an int >= 0"):
        models.capsnet(primary_padding=padding)


def test_capsnet_defaults_unchanged():
    net = models.capsnet()
    config = net.get_config()["layers"]
    assert config[0]["config"] == {
        "filters": 256,
        "kernel_size": 9,
        "stride": 1,
        "padding": 0,
        "activation": "relu",
        "use_bias": True,
        "data_format": "NHWC",
        "name": "conv1",
    }
    assert config[1]["config"]["padding"] == 0
    assert net.n_parameters() == 6_804_224


def test_conv_stack_equals_the_composition():
    rng = np.random.default_rng(3)
    leaky = {"name": "leaky_relu", "negative_slope": 0.3}
    net = models.capsnet(
        conv_layers=[
            {"filters": 3, "kernel_size": 3, "activation": leaky, "padding": "same"},
            {"filters": 4, "kernel_size": 3, "stride": 2, "activation": None, "use_bias": False},
        ],
        primary_types=2,
        primary_dim=4,
        primary_kernel=3,
        class_dim=4,
        n_classes=3,
        input_shape=(10, 10, 1),
    ).initialize(random_state=0, dtype="float64")
    w = net.get_weights()
    assert "conv2.bias" not in w
    x = rng.uniform(0, 1, (2, 10, 10, 1))
    h1 = _conv_ref(x, w["conv1.weight"], w["conv1.bias"], 1, ((1, 1), (1, 1)))
    h1 = np.where(h1 >= 0, h1, 0.3 * h1)
    h2 = _conv_ref(h1, w["conv2.weight"], None, 2, ((0, 0), (0, 0)))
    outputs = net.forward(x, return_all=True)
    np.testing.assert_allclose(outputs["conv1"], h1, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(outputs["conv2"], h2, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"squash_eps": 0}, ValueError, "`squash_eps` must be a finite real number > 0"),
        ({"squash_eps": 1e-300}, ValueError, r"`squash_eps` must lie in \[1.18e-38"),
        ({"squash_eps": 1e300}, ValueError, "`squash_eps` must lie in"),
        ({"squash_eps": "1e-8"}, TypeError, "`squash_eps` must be a real number"),
        ({"n_iter": 10**9}, ValueError, "`n_iter` must be an integer <= 1000000"),
        ({"n_iter": 0}, ValueError, "`n_iter` must be an integer >= 1"),
        ({"order": "row-major"}, ValueError, "`order` must be one of"),
        ({"conv_layers": []}, ValueError, "`conv_layers` must describe at least one"),
        ({"conv_layers": {"filters": 2}}, TypeError, "`conv_layers` must be a sequence of dicts"),
        ({"conv_layers": [3]}, TypeError, r"`conv_layers\[0\]` must be a dict"),
        ({"conv_layers": [{"filters": 2}]}, ValueError, "missing: \\['kernel_size'\\]"),
        (
            {"conv_layers": [{"filters": 2, "kernel_size": 3, "strides": 2}]},
            ValueError,
            "unknown: \\['strides'\\]",
        ),
        (
            {"conv_layers": [{"filters": 0, "kernel_size": 3}]},
            ValueError,
            r"`conv_layers\[0\]\['filters'\]` must be an integer >= 1",
        ),
        (
            {"conv_layers": [{"filters": 2, "kernel_size": 3, "activation": "leaky_relu"}]},
            ValueError,
            r"`conv_layers\[0\]\['activation'\]` 'leaky_relu' needs its slope",
        ),
        (
            {"conv_layers": [{"filters": 2, "kernel_size": 3, "padding": "full"}]},
            ValueError,
            r"`conv_layers\[0\]\['padding'\]` must be",
        ),
        (
            {"conv_layers": [{"filters": 2, "kernel_size": 3, "name": "a.b"}]},
            ValueError,
            r"`conv_layers\[0\]\['name'\]`",
        ),
        (
            {"conv_layers": [{"filters": 2, "kernel_size": 3, "name": "primary_caps"}]},
            ValueError,
            "`conv_layers` names must be unique",
        ),
        (
            {"conv_layers": [{"filters": 2, "kernel_size": 3}], "conv_channels": 64},
            ValueError,
            "`conv_channels` describe",
        ),
        (
            {"conv_layers": [{"filters": 2, "kernel_size": 3}], "conv_activation": "elu"},
            ValueError,
            "`conv_activation` describe",
        ),
        (
            {"conv_layers": [{"filters": 8, "kernel_size": 30}]},
            ValueError,
            "the network does not fit `input_shape`",
        ),
    ],
)
def test_capsnet_refuses_at_construction(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        models.capsnet(**kwargs)


def test_squash_eps_accepted_range_predicts():
    net = models.capsnet(
        conv_channels=4, primary_types=2, class_dim=4, squash_eps=1.2e-38
    ).initialize(random_state=0)
    scores = net.predict_scores(np.zeros((1, 28, 28), np.uint8))
    assert np.all(np.isfinite(scores))


def test_layers_refuse_at_construction():
    with pytest.raises(ValueError, match="`squash_eps` must lie in"):
        DenseCaps(3, 4, squash_eps=1e-60)
    with pytest.raises(ValueError, match="`squash_eps` must lie in"):
        PrimaryCaps(3, 4, squash_eps=1e-60)
    with pytest.raises(ValueError, match="`n_iter` must be an integer <= 1000000"):
        DenseCaps(3, 4, n_iter=10**7)


def test_model_input_shape_must_be_a_sequence():
    with pytest.raises(TypeError, match="`input_shape` must be a sequence"):
        Model([Conv2D(2, 3)], input_shape=28)


def test_mismatch_names_the_primary_dim_that_fits():
    trained = models.capsnet(conv_channels=8, primary_types=4, primary_dim=16, class_dim=8)
    trained.initialize(random_state=0)
    built = models.capsnet(conv_channels=8, primary_types=8, primary_dim=8, class_dim=8)
    with pytest.raises(WeightsMismatchError) as info:
        built.set_weights(trained.get_weights())
    text = str(info.value)
    assert "a primary_dim (PrimaryCaps `dim`) of 16 and 4 types would fit" in text
    assert "pixel square images" not in text  # the count fits once the dimension does


@pytest.mark.parametrize("layout", ["caproute", "keras", "torch", "tf"])
def test_mismatch_names_the_input_shape_that_fits(layout):
    trained = models.capsnet(conv_channels=8, primary_types=2, class_dim=4, weight_layout=layout,
                             input_shape=(32, 32, 3)).initialize(random_state=0)  # fmt: skip
    built = models.capsnet(conv_channels=8, primary_types=2, class_dim=4, weight_layout=layout)
    with pytest.raises(WeightsMismatchError) as info:
        built.set_weights(trained.get_weights())
    text = str(info.value)
    assert "an input_shape with 3 channels, (28, 28, 3), would fit" in text
    assert "it was made for 31 or 32 pixel square images, input_shape=(32, 32, 3) would fit" in text


def test_mismatch_without_a_simple_explanation_has_no_hint():
    built = models.capsnet(conv_channels=8, primary_types=2, class_dim=4)
    w = built.initialize(random_state=0).get_weights()
    w["class_caps.weight"] = np.zeros((5, 5), np.float32)
    with pytest.raises(WeightsMismatchError) as info:
        built.set_weights(w)
    assert "hint" not in str(info.value)


def test_a_layer_that_cannot_take_its_input_is_named():
    with pytest.raises(ValueError, match=r"layer 'c' \(Conv2D\) cannot take .* layer 'd'"):
        Model([DenseCaps(3, 4, name="d"), Conv2D(2, 3, name="c")], input_shape=(10, 8))
    pair = [Conv2D(2, 3, name="c"), models.PrimaryMatrixCaps(2, name="p")]
    with pytest.raises(ValueError, match="layer 'a' takes one array per sample"):
        Model([*pair, models.Activation("relu", name="a")], input_shape=(10, 10, 1))
    with pytest.raises(ValueError, match="layer 'bn' takes an array per sample"):
        Model([*pair, models.BatchNorm(epsilon=1e-3, name="bn")], input_shape=(10, 10, 1))


def test_mismatch_names_kernel_filters_and_types():
    trained = models.capsnet(conv_channels=16, conv_kernel=5, primary_types=4, class_dim=8)
    built = models.capsnet(conv_channels=8, primary_types=2, class_dim=8)
    with pytest.raises(WeightsMismatchError) as info:
        built.set_weights(trained.initialize(random_state=0).get_weights())
    text = str(info.value)
    assert "a kernel_size (conv_kernel in capsnet) of 5 would fit" in text
    assert "filters (conv_channels in capsnet) of 16 would fit" in text
    assert "n_types (primary_types in capsnet) of 4 would fit" in text
    assert "pixel square images" not in text
