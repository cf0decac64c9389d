"""The shipped models reproduce the accuracies recorded in the registry."""

import numpy as np
import pytest

from caproute import datasets, models

NAMES = ["capsnet-fashion-mnist", "matrix-capsnet-fashion-mnist"]


@pytest.fixture(scope="module")
def subset():
    return datasets.load_fashion_mnist_subset()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("backend", ["auto", "numpy"])
def test_recorded_subset_accuracy_exactly(name, backend, subset):
    images, labels = subset
    net = models.load_pretrained(name)
    acc = float(np.mean(net.predict(images, backend=backend) == labels))
    assert acc == models.pretrained_info(name)["subset_accuracy"]


@pytest.mark.skipif(
    not datasets.fashion_mnist_available(),
    reason="the full Fashion-MNIST set is not installed (apt-get install dataset-fashion-mnist)",
)
@pytest.mark.parametrize("name", NAMES)
def test_recorded_full_test_accuracy_exactly(name):
    images, labels = datasets.load_fashion_mnist("test")
    net = models.load_pretrained(name)
    acc = float(np.mean(net.predict(images, batch_size=250) == labels))
    assert acc == models.pretrained_info(name)["test_accuracy"]


def test_shipped_models_describe_themselves():
    for name in NAMES:
        net = models.load_pretrained(name)
        assert net.classes == list(datasets.CLASS_NAMES)
        assert net.metadata["pretrained"] == name
        assert net.n_parameters() == models.pretrained_info(name)["n_parameters"]


def test_float64_agrees_with_float32(subset):
    images, _ = subset
    for name in NAMES:
        net = models.load_pretrained(name)
        p32 = net.predict_proba(images[:50])
        p64 = net.predict_proba(images[:50], dtype="float64")
        np.testing.assert_allclose(p32, p64, rtol=1e-3, atol=1e-5)
