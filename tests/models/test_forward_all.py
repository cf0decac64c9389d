"""Model.forward(return_all=True): every layer's output, in layer order."""

import numpy as np
import pytest

from caproute import models


@pytest.fixture(scope="module")
def net():
    return models.capsnet(
        conv_layers=[
            {"filters": 4, "kernel_size": 3, "activation": "gelu"},
            {"filters": 6, "kernel_size": 3, "stride": 2, "batch_norm": {"epsilon": 1e-3}},
        ],
        primary_types=2,
        primary_kernel=3,
        class_dim=4,
        n_classes=3,
        input_shape=(14, 14, 1),
    ).initialize(random_state=0)


def test_every_layer_in_order(net):
    x = np.random.default_rng(0).uniform(0, 1, (2, 14, 14, 1)).astype(np.float32)
    outputs = net.forward(x, return_all=True)
    assert list(outputs) == [layer.name for layer in net.layers]
    assert list(outputs) == ["conv1", "conv2", "conv2_bn", "primary_caps", "class_caps"]
    for (name, out), (_, shape) in zip(outputs.items(), net._shapes, strict=True):
        assert out.shape == (2, *shape), name
        assert out.dtype == np.float32
    assert np.array_equal(outputs["class_caps"], net.forward(x))


def test_each_output_is_the_next_layers_input(net):
    x = np.random.default_rng(1).uniform(0, 1, (1, 14, 14, 1))
    outputs = net.forward(x, return_all=True)
    params = net._params_for(np, "cpu", x.dtype)
    previous = x
    for layer, p in zip(net.layers, params, strict=True):
        np.testing.assert_allclose(
            layer.forward(previous, p, xp=np, backend="numpy"), outputs[layer.name], rtol=1e-12
        )
        previous = outputs[layer.name]


def test_matrix_capsules_give_pairs():
    net = models.matrix_capsnet(2, 2, 2, 2, n_classes=3, input_shape=(20, 20, 1))
    net.initialize(random_state=0)
    x = np.random.default_rng(2).uniform(0, 1, (2, 20, 20, 1)).astype(np.float32)
    outputs = net.forward(x, return_all=True)
    assert list(outputs) == ["conv1", "primary_caps", "conv_caps1", "conv_caps2", "class_caps"]
    assert isinstance(outputs["primary_caps"], tuple) and len(outputs["primary_caps"]) == 2
    pose, act = net.forward(x)
    assert np.array_equal(outputs["class_caps"][0], pose)
    assert np.array_equal(outputs["class_caps"][1], act)


def test_return_all_must_be_a_bool(net):
    x = np.zeros((1, 14, 14, 1), np.float32)
    with pytest.raises(TypeError, match="`return_all` must be True or False"):
        net.forward(x, return_all="yes")
    assert not isinstance(net.forward(x, return_all=False), dict)


def test_overflow_is_still_reported():
    net = models.capsnet(conv_channels=4, primary_types=2, class_dim=4, primary_kernel=3,
                         conv_kernel=3, input_shape=(12, 12, 1))  # fmt: skip
    net.initialize(random_state=0, dtype="float64")
    w = net.get_weights()
    w["conv1.weight"] = w["conv1.weight"] * 1e36
    net.set_weights(w)
    with pytest.raises(ValueError, match="overflowed"):
        net.forward(np.ones((1, 12, 12, 1), np.float32), return_all=True)
