"""The Model container: shapes, summary, config round trip, weights, input handling, errors."""

import numpy as np
import pytest

import caproute as cr
from caproute import models
from caproute.models import WeightsMismatchError
from tests._helpers import as_xp, assert_placed, device_of


@pytest.fixture(scope="module")
def small_capsnet():
    return models.capsnet(conv_channels=8, primary_types=4, class_dim=8).initialize(random_state=0)


def test_capsnet_paper_shapes():
    net = models.capsnet()
    shapes = net.parameter_shapes()
    assert shapes["conv1.weight"] == (9, 9, 1, 256)
    assert shapes["primary_caps.weight"] == (9, 9, 256, 256)
    assert shapes["class_caps.weight"] == (1152, 10, 16, 8)
    assert net.output_shape == (10, 16)
    # conv1 20,992 + primary 5,308,672 + DigitCaps 1,474,560 (Sabour et al.'s counts)
    assert net.n_parameters() == 20_992 + 5_308_672 + 1_474_560


def test_matrix_capsnet_variants():
    net = models.matrix_capsnet(8, 4, 6, 5, input_shape=(28, 28, 1))
    assert [layer.output_shape(s) for layer, (s, _) in zip(net.layers, net._shapes, strict=True)][
        -1
    ] == (
        (10, 16),
        (10,),
    )
    assert net.parameter_shapes()["conv_caps1.weight"] == (3, 3, 4, 6, 4, 4)
    assert net.parameter_shapes()["conv_caps2.weight"] == (3, 3, 6, 5, 4, 4)
    assert net.parameter_shapes()["class_caps.weight"] == (5, 10, 4, 4)


def test_summary_lists_every_layer(small_capsnet):
    text = small_capsnet.summary()
    for name in ("conv1", "primary_caps", "class_caps", "Conv2D", "PrimaryCaps", "DenseCaps"):
        assert name in text
    assert f"{small_capsnet.n_parameters():,}" in text.splitlines()[-1]


def test_config_round_trip(small_capsnet):
    again = models.Model.from_config(small_capsnet.get_config()).set_weights(
        small_capsnet.get_weights()
    )
    assert again.get_config() == small_capsnet.get_config()
    x = np.random.default_rng(0).random((4, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(again.predict_scores(x), small_capsnet.predict_scores(x))


def test_input_forms_agree(small_capsnet, xp):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(5, 28, 28)).astype(np.uint8)
    base = small_capsnet.predict_scores(img)
    as_float = small_capsnet.predict_scores(img.astype(np.float32) / 255)
    nhwc = small_capsnet.predict_scores(as_xp(img[..., None], xp))
    assert_placed(nhwc, xp=xp, device=device_of(xp), dtype="float32")
    nchw = small_capsnet.predict_scores(img[:, None], data_format="NCHW")
    for other in (as_float, nhwc, nchw):
        np.testing.assert_allclose(cr.to_numpy(other), base, rtol=1e-5, atol=1e-7)
    batched = small_capsnet.predict_scores(img, batch_size=2)
    np.testing.assert_allclose(batched, base, rtol=1e-5, atol=1e-7)


def test_predict_and_proba(small_capsnet):
    img = np.random.default_rng(2).random((7, 28, 28))
    scores = small_capsnet.predict_scores(img)
    proba = small_capsnet.predict_proba(img)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(small_capsnet.predict(img), scores.argmax(1))
    assert np.all((scores > 0) & (scores < 1))  # capsule lengths


def test_float64_kept(small_capsnet):
    img = np.random.default_rng(3).random((2, 28, 28))
    out64 = small_capsnet.predict_scores(img, dtype="float64")
    out32 = small_capsnet.predict_scores(img)
    assert out64.dtype == np.float64 and out32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, rtol=1e-4)


def test_nchw_model_matches_nhwc_model(small_capsnet):
    cfg = small_capsnet.get_config()
    for layer in cfg["layers"]:
        if "data_format" in layer["config"]:
            layer["config"]["data_format"] = "NCHW"
    cfg["input_shape"] = [1, 28, 28]
    nchw = models.Model.from_config(cfg).set_weights(small_capsnet.get_weights())
    img = np.random.default_rng(4).random((3, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(
        nchw.predict_scores(img), small_capsnet.predict_scores(img), rtol=1e-5
    )


def test_every_weight_problem_reported_at_once(small_capsnet):
    w = small_capsnet.get_weights()
    del w["conv1.bias"]
    w["primary_caps.weight"] = w["primary_caps.weight"][:-1]
    w["class_caps.weight"] = w["class_caps.weight"].astype(np.int32)
    w["decoder.fc1"] = np.zeros(3, np.float32)
    with pytest.raises(WeightsMismatchError) as info:
        models.capsnet(conv_channels=8, primary_types=4, class_dim=8).set_weights(w)
    msg = str(info.value)
    assert "4 problems" in msg
    assert "missing tensor 'conv1.bias' of shape (8,)" in msg
    assert "tensor 'primary_caps.weight' has shape (8, 9, 8, 32); expected (9, 9, 8, 32)" in msg
    assert "tensor 'class_caps.weight' has dtype int32; expected float32 or float64" in msg
    assert "unexpected tensor 'decoder.fc1'" in msg


def test_non_finite_weights_rejected(small_capsnet):
    w = small_capsnet.get_weights()
    w["conv1.bias"] = w["conv1.bias"].copy()
    w["conv1.bias"][0] = np.nan
    with pytest.raises(WeightsMismatchError, match="tensor 'conv1.bias' holds NaN or inf"):
        models.capsnet(conv_channels=8, primary_types=4, class_dim=8).set_weights(w)


def test_model_without_weights():
    with pytest.raises(RuntimeError, match="model 'capsnet' has no weights"):
        models.capsnet().predict(np.zeros((1, 28, 28)))


@pytest.mark.parametrize(
    "images,kwargs,exc,match",
    [
        (
            np.zeros((2, 27, 28)),
            {},
            ValueError,
            r"`images` must be \(28, 28, 1\) per image .* got \(27, 28, 1\)",
        ),
        (np.zeros((2, 28)), {}, ValueError, r"`images` must be 3-D \(n, H, W\) or 4-D"),
        (np.zeros((2, 28, 28), dtype=bool), {}, TypeError, "`images` must hold integers"),
        (np.full((1, 28, 28), np.nan), {}, ValueError, "`images` holds NaN or inf"),
        (
            np.zeros((1, 28, 28)),
            {"dtype": "float16"},
            ValueError,
            "`dtype` must be 'float32' or 'float64'",
        ),
        (np.zeros((1, 28, 28)), {"dtype": None}, ValueError, "`dtype` must be 'float32' or"),
        (np.zeros((1, 28, 28)), {"dtype": np.int32}, ValueError, "`dtype` must be 'float32' or"),
        (np.zeros((1, 28, 28)), {"dtype": "f4x"}, ValueError, "`dtype` must be 'float32' or"),
        (
            np.zeros((1, 28, 28)),
            {"batch_size": 0},
            ValueError,
            "`batch_size` must be an integer >= 1",
        ),
        (
            np.zeros((1, 28, 28)),
            {"data_format": "HWC"},
            ValueError,
            "`data_format` must be 'NHWC', 'NCHW' or None",
        ),
        (np.zeros((1, 28, 28)), {"backend": "torch"}, ValueError, "backend"),
        ("not images", {}, TypeError, "`images` must hold integers"),
    ],
)
def test_bad_images(small_capsnet, images, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        small_capsnet.predict(images, **kwargs)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_given_as_numpy_type(small_capsnet, dtype):
    images = np.random.default_rng(0).integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    by_name = small_capsnet.predict_scores(images, dtype=dtype)
    for given in (getattr(np, dtype), np.dtype(dtype)):
        scores = small_capsnet.predict_scores(images, dtype=given)
        assert scores.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(scores, by_name)


def test_cupy_backend_without_gpu_raises_clearly(small_capsnet):
    from caproute import BackendUnavailableError
    from caproute._backend import cupy_status

    if cupy_status()[0] is not None:
        pytest.skip("a GPU is usable here; this checks the message without one")
    with pytest.raises(BackendUnavailableError, match="backend='cupy' cannot run"):
        small_capsnet.predict(np.zeros((1, 28, 28)), backend="cupy")


def test_bad_config():
    with pytest.raises(ValueError, match="not a caproute model description"):
        models.Model.from_config({"layers": []})
    cfg = models.capsnet().get_config()
    cfg["layers"][0]["class"] = "Dense"
    with pytest.raises(ValueError, match="layer 0 of the description has unknown class 'Dense'"):
        models.Model.from_config(cfg)
    with pytest.raises(ValueError, match="layer names must be unique"):
        models.Model([models.Conv2D(2, 3, name="a"), models.Conv2D(2, 3, name="a")], (9, 9, 1))


def test_empty_batch(small_capsnet):
    out = small_capsnet.predict_scores(np.zeros((0, 28, 28), np.uint8))
    assert out.shape == (0, 10)


@pytest.mark.gpu
def test_cupy_backend_matches_host():
    from caproute._backend import cupy_status

    if cupy_status()[0] is None:
        pytest.skip(f"no usable CUDA device: {cupy_status()[1]}")
    import cupy

    for net in (
        models.capsnet(conv_channels=16, primary_types=4).initialize(random_state=0),
        models.matrix_capsnet(8, 4, 4, 4, competition="all").initialize(random_state=0),
    ):
        img = np.random.default_rng(0).integers(0, 256, (5, 28, 28)).astype(np.uint8)
        host = net.predict_scores(img, backend="numpy", dtype="float64")
        dev = net.predict_scores(img, backend="cupy", dtype="float64")
        assert isinstance(dev, cupy.ndarray)
        np.testing.assert_allclose(cupy.asnumpy(dev), host, rtol=1e-9)
        on_device = net.predict_scores(cupy.asarray(img), dtype="float64")  # auto: stays on GPU
        np.testing.assert_allclose(cupy.asnumpy(on_device), host, rtol=1e-9)
