"""BatchNorm in inference mode, and folding it into the convolution before it."""

import numpy as np
import pytest

from caproute import models
from caproute.models import BatchNorm, Conv2D, Model, fold_batchnorm


def _stats(rng, c):
    return {
        "gamma": rng.normal(1.0, 0.5, c),
        "beta": rng.normal(0.0, 0.5, c),
        "moving_mean": rng.normal(0.0, 0.5, c),
        "moving_variance": rng.uniform(0.1, 2.0, c),
    }


def _bn_ref(x, stats, eps, axis=-1):
    shape = [1] * x.ndim
    shape[axis] = -1
    s = {k: v.reshape(shape) for k, v in stats.items()}
    return (x - s["moving_mean"]) / np.sqrt(s["moving_variance"] + eps) * s["gamma"] + s["beta"]


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_batch_norm_matches_its_formula(data_format):
    rng = np.random.default_rng(0)
    stats = _stats(rng, 3)
    shape = (4, 5, 3) if data_format == "NHWC" else (3, 4, 5)
    net = Model([BatchNorm(epsilon=1e-3, data_format=data_format, name="bn")], input_shape=shape)
    net.set_weights({f"bn.{k}": v for k, v in stats.items()})
    x = rng.uniform(0, 1, (2, *shape))
    expected = _bn_ref(x, stats, 1e-3, axis=-1 if data_format == "NHWC" else 1)
    np.testing.assert_allclose(net.forward(x), expected, rtol=1e-12, atol=1e-15)
    out32 = net.forward(x.astype(np.float32))
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, expected, rtol=1e-5, atol=1e-6)


def test_batch_norm_on_capsules_uses_the_last_axis():
    rng = np.random.default_rng(1)
    stats = _stats(rng, 8)
    net = Model([BatchNorm(epsilon=1e-5, name="bn")], input_shape=(6, 8))
    net.set_weights({f"bn.{k}": v for k, v in stats.items()})
    x = rng.uniform(0, 1, (3, 6, 8))
    np.testing.assert_allclose(net.forward(x), _bn_ref(x, stats, 1e-5), rtol=1e-12, atol=1e-15)


def test_center_and_scale_flags():
    layer = BatchNorm(epsilon=1e-3, center=False, scale=False, name="bn")
    assert layer.parameter_shapes((4, 4, 2)) == {
        "moving_mean": (2,),
        "moving_variance": (2,),
    }
    net = Model([layer], input_shape=(4, 4, 2))
    net.set_weights({"bn.moving_mean": np.array([1.0, 2.0]), "bn.moving_variance": np.ones(2)})
    x = np.full((1, 4, 4, 2), 3.0)
    out = net.forward(x, check_values=False)[0, 0, 0]
    np.testing.assert_allclose(out, np.array([2.0, 1.0]) / np.sqrt(1.001), rtol=1e-14)
    only_gamma = BatchNorm(epsilon=1e-3, center=False, name="bn")
    assert set(only_gamma.parameter_shapes((3,))) == {"gamma", "moving_mean", "moving_variance"}


def test_initialize_gives_the_identity_statistics():
    net = Model([BatchNorm(epsilon=1e-3, name="bn")], input_shape=(3,)).initialize(random_state=0)
    w = net.get_weights()
    assert np.all(w["bn.gamma"] == 1) and np.all(w["bn.moving_variance"] == 1)
    assert np.all(w["bn.beta"] == 0) and np.all(w["bn.moving_mean"] == 0)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"epsilon": 0}, ValueError, "`epsilon` must be a finite real number > 0"),
        ({"epsilon": -1e-3}, ValueError, "`epsilon` must be a finite real number > 0"),
        ({"epsilon": float("inf")}, ValueError, "`epsilon`"),
        ({"epsilon": "1e-3"}, TypeError, "`epsilon` must be a real number"),
        ({"epsilon": 1e-3, "center": 1}, TypeError, "`center` must be True or False"),
        ({"epsilon": 1e-3, "data_format": "NWHC"}, ValueError, "`data_format` must be one of"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        BatchNorm(**kwargs)


def test_epsilon_is_required():
    with pytest.raises(TypeError, match="epsilon"):
        BatchNorm()


def test_batch_norm_round_trips_through_a_file(tmp_path):
    net = Model(
        [
            Conv2D(4, 3, name="c"),
            BatchNorm(epsilon=1e-5, scale=False, name="bn"),
        ],
        input_shape=(6, 6, 1),
    ).initialize(random_state=0)
    path = tmp_path / "bn.safetensors"
    models.save(net, path)
    again = models.load(path)
    assert again.get_config() == net.get_config()
    assert again.layers[1].epsilon == 1e-5 and not again.layers[1].scale


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("padding", [0, "same"])
def test_folding_equals_conv_then_batch_norm(data_format, with_bias, padding):
    rng = np.random.default_rng(2)
    eps = 1e-3
    shape = (9, 9, 2) if data_format == "NHWC" else (2, 9, 9)
    conv = Conv2D(5, 3, stride=2, padding=padding, use_bias=with_bias,
                  data_format=data_format, name="c")  # fmt: skip
    both = Model(
        [conv, BatchNorm(epsilon=eps, data_format=data_format, name="bn")], input_shape=shape
    )
    w = rng.normal(0, 0.5, (3, 3, 2, 5))
    b = rng.normal(0, 0.5, 5) if with_bias else None
    stats = _stats(rng, 5)
    weights = {"c.weight": w, **{f"bn.{k}": v for k, v in stats.items()}}
    if with_bias:
        weights["c.bias"] = b
    both.set_weights(weights)
    w2, b2 = fold_batchnorm(w, b, epsilon=eps, **stats)
    folded = Model(
        [Conv2D(5, 3, stride=2, padding=padding, data_format=data_format, name="c")],
        input_shape=shape,
    ).set_weights({"c.weight": w2, "c.bias": b2})
    x = rng.uniform(0, 1, (3, *shape))
    np.testing.assert_allclose(folded.forward(x), both.forward(x), rtol=1e-12, atol=1e-13)


def test_folding_without_gamma_or_beta_and_dtypes():
    rng = np.random.default_rng(3)
    w = rng.normal(0, 1, (2, 2, 1, 3)).astype(np.float32)
    stats = _stats(rng, 3)
    w2, b2 = fold_batchnorm(w, None, None, None, stats["moving_mean"].astype(np.float32),
                            stats["moving_variance"].astype(np.float32), 1e-5)  # fmt: skip
    assert w2.dtype == np.float32 and b2.dtype == np.float32
    s = 1 / np.sqrt(stats["moving_variance"].astype(np.float32).astype(np.float64) + 1e-5)
    np.testing.assert_allclose(w2, w * s, rtol=1e-6)
    np.testing.assert_allclose(b2, -stats["moving_mean"].astype(np.float32) * s, rtol=1e-6)
    # float64 statistics promote
    w3, _ = fold_batchnorm(w, None, None, None, stats["moving_mean"], stats["moving_variance"], 1)
    assert w3.dtype == np.float64


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"gamma": np.ones(4)}, r"`gamma` must have shape \(3,\)"),
        ({"bias": np.ones((3, 1))}, r"`bias` must have shape \(3,\)"),
        ({"moving_variance": -np.ones(3)}, "`moving_variance` must be >= 0"),
        ({"moving_mean": np.array([0.0, np.nan, 0.0])}, "`moving_mean` holds NaN or inf"),
        ({"epsilon": 0.0}, "`epsilon` must be a finite real number > 0"),
        ({"moving_mean": None}, "`moving_mean` is required"),
        ({"beta": np.array(["a", "b", "c"])}, "`beta` must hold real numbers"),
    ],
)
def test_folding_refuses_bad_input(change, match):
    args = {
        "weight": np.ones((1, 1, 2, 3)),
        "bias": np.zeros(3),
        "gamma": np.ones(3),
        "beta": np.zeros(3),
        "moving_mean": np.zeros(3),
        "moving_variance": np.ones(3),
        "epsilon": 1e-3,
    }
    args.update(change)
    with pytest.raises(ValueError, match=match):
        fold_batchnorm(**args)


def test_capsnet_stack_with_batch_norm_after_the_activation():
    net = models.capsnet(
        conv_layers=[
            {"filters": 4, "kernel_size": 3, "batch_norm": {"epsilon": 1e-3}},
            {
                "filters": 6,
                "kernel_size": 3,
                "name": "second",
                "batch_norm": {"epsilon": 1e-5, "center": False},
            },  # fmt: skip
        ],
        primary_types=2,
        primary_kernel=3,
        class_dim=4,
        input_shape=(12, 12, 1),
    )
    assert [type(layer).__name__ for layer in net.layers] == [
        "Conv2D", "BatchNorm", "Conv2D", "BatchNorm", "PrimaryCaps", "DenseCaps",
    ]  # fmt: skip
    assert [layer.name for layer in net.layers][:4] == ["conv1", "conv1_bn", "second", "second_bn"]
    assert "second_bn.beta" not in net.parameter_shapes()
    net.initialize(random_state=0, dtype="float64")
    w = net.get_weights()
    rng = np.random.default_rng(4)
    for key in ("conv1_bn.moving_mean", "conv1_bn.beta"):
        w[key] = rng.normal(0, 1, w[key].shape)
    net.set_weights(w)
    x = rng.uniform(0, 1, (2, 12, 12, 1))
    out = net.forward(x, return_all=True)
    stats = {k.split(".")[1]: v for k, v in w.items() if k.startswith("conv1_bn.")}
    expected = _bn_ref(out["conv1"], stats, 1e-3)
    np.testing.assert_allclose(out["conv1_bn"], expected, rtol=1e-12, atol=1e-15)
    assert np.all(out["conv1"] >= 0)  # relu before the BatchNorm


@pytest.mark.parametrize(
    ("bn", "match"),
    [
        ({}, "'epsilon' \\(required"),
        ({"epsilon": 1e-3, "momentum": 0.9}, "'epsilon' \\(required"),
        ({"epsilon": 0}, r"`conv_layers\[0\]\['batch_norm'\]\['epsilon'\]` must be"),
        (1e-3, "must be None or a dict"),
    ],
)
def test_capsnet_batch_norm_spec_errors(bn, match):
    with pytest.raises(ValueError, match=match):
        models.capsnet(conv_layers=[{"filters": 4, "kernel_size": 3, "batch_norm": bn}])
