"""The models' input contract: uint8 pixels are divided by 255, floats must lie in the range the
model was trained on (``Model.input_range``), other integers need ``scale``; every refusal says
what was found and how to fix it. Also the model-side errors: shapes, NaN, overflow, the
constructors' argument names and the input range recorded in files."""

import json
import re

import numpy as np
import pytest

import caproute as cr
from caproute import datasets, models
from caproute.models import WeightsFileError
from tests._helpers import as_xp, assert_placed, device_of, tolerance

NAMES = ["capsnet-fashion-mnist", "matrix-capsnet-fashion-mnist"]
N = 24  # a few dozen images keep every call well under a second


@pytest.fixture(scope="module")
def subset():
    images, labels = datasets.load_fashion_mnist_subset()
    return images[:N], labels[:N]


@pytest.fixture(scope="module", params=NAMES)
def net(request):
    return models.load_pretrained(request.param)


@pytest.fixture(scope="module")
def small():
    return models.capsnet(conv_channels=8, primary_types=4, class_dim=8).initialize(random_state=0)


# -- the contract on the shipped models ---------------------------------------------------------
def test_shipped_models_record_their_range(net):
    assert net.input_range == (0.0, 1.0)
    assert net.metadata["input_range"] == [0.0, 1.0]
    assert models.pretrained_info(net.metadata["pretrained"])["input_range"] == [0, 1]


def test_uint8_equals_the_float_path_exactly(net, subset):
    images, _ = subset
    np.testing.assert_array_equal(
        net.predict_scores(images), net.predict_scores(images.astype(np.float32) / 255)
    )


def test_floats_in_0_255_are_refused_with_the_fix(net, subset):
    images, _ = subset
    for method in ("predict", "predict_proba", "predict_scores"):
        with pytest.raises(ValueError, match=r"^`images` must lie in") as info:
            getattr(net, method)(images.astype(np.float32))
        assert str(info.value) == (
            "`images` must lie in the model's input range [0, 1] (the range it was trained "
            "on); got float32 values from 0 to 255. If they are 8-bit pixel values (as "
            "np.asarray(pil_image, dtype=np.float32) gives), pass scale=1/255 or divide them "
            "by 255."
        )


def test_scale_gives_the_predictions_of_dividing(net, subset):
    images, labels = subset
    pixels = images.astype(np.float32)
    divided = net.predict_proba(pixels / 255)
    scaled = net.predict_proba(pixels, scale=1 / 255)
    np.testing.assert_allclose(scaled, divided, **tolerance("float32"))
    np.testing.assert_array_equal(net.predict(pixels, scale=1 / 255), net.predict(pixels / 255))
    np.testing.assert_array_equal(net.predict(pixels, scale=1 / 255), net.predict(images))
    # the accuracy is the uint8 images', not the 29-86% of unscaled floats
    assert np.mean(net.predict(pixels, scale=1 / 255) == labels) == np.mean(
        net.predict(images) == labels
    )


@pytest.mark.parametrize("kind", ["uint16", "int8", "int16", "int32", "int64", "uint32"])
def test_other_integers_need_scale(net, subset, kind):
    images, _ = subset
    with pytest.raises(ValueError, match="need an explicit `scale`") as info:
        net.predict(images.astype(kind))
    msg = str(info.value)
    assert msg.startswith(f"`images` of dtype {kind} need an explicit `scale`: only uint8 images")
    assert "scale=1/65535 for 16-bit images" in msg and "scale=1/255 for 8-bit values" in msg


def test_uint16_with_scale(net, subset):
    images, _ = subset
    wide = images.astype(np.uint16) * 257  # 0-255 -> 0-65535
    np.testing.assert_array_equal(net.predict(wide, scale=1 / 65535), net.predict(images))
    np.testing.assert_array_equal(
        net.predict(images.astype(np.int64), scale=1 / 255), net.predict(images)
    )


def test_scale_that_leaves_the_range_is_refused(net, subset):
    images, _ = subset
    wide = images.astype(np.uint16) * 257
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`images` times `scale` must lie in the model's input range [0, 1]; with scale=0.01 "
            "they run from 0 to 655.35 (uint16 values from 0 to 65535). Choose `scale` so that "
            "the largest pixel value maps to at most 1: 1/255 for 8-bit pixel values, 1/65535 "
            "for 16-bit ones."
        ),
    ):
        net.predict(wide, scale=0.01)


@pytest.mark.parametrize(
    "transform,found,hint",
    [
        (lambda x: x / 255 - 0.5, "from -0.5 to 0.5", "Map them into [0, 1] first"),
        (lambda x: (x / 255 - 0.286) / 0.353, "from -0.810198", "undo that)."),
        (lambda x: x * 257.0, "from 0 to 65535", "pass scale=1/65535 or divide them by 65535."),
        (lambda x: x * 1e200, "float64 values from 0 to 2.55e+202", "or pass `scale`."),
        (lambda x: x / 255 + 0.001, "from 0.001 to 1.001", "np.clip(images, 0, 1)."),
        (lambda x: x / 170, "from 0 to 1.5", "undo that), or pass `scale`."),
    ],
    ids=["centred", "standardised", "16-bit", "huge", "just-above", "1.5"],
)
def test_floats_outside_the_range(net, subset, transform, found, hint):
    images, _ = subset
    with pytest.raises(ValueError, match="input range") as info:
        net.predict(transform(images.astype(np.float64)))
    msg = str(info.value)
    assert msg.startswith("`images` must lie in the model's input range [0, 1]")
    assert found in msg and hint in msg


def test_rounding_slack(net, subset):
    images, _ = subset
    x = images.astype(np.float64) / 255
    x[0, 0, 0] = 1 + 1e-7  # rounding: accepted
    x[1, 0, 0] = -1e-7
    np.testing.assert_array_equal(net.predict(x), net.predict(images))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels(net, subset, bad):
    x = subset[0].astype(np.float32) / 255
    x[3, 5, 5] = bad
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`images` holds NaN or inf; every pixel must be a finite number in the model's "
            "input range [0, 1]."
        ),
    ):
        net.predict(x)
    # with a scale too: NaN is no number to scale
    with pytest.raises(ValueError, match="`images` holds NaN or inf"):
        net.predict(x * 255, scale=1 / 255)


SHAPES = "(n, 28, 28) or (n, 28, 28, 1), or (n, 1, 28, 28) with data_format='NCHW'"


@pytest.mark.parametrize(
    "shape,kwargs,message",
    [
        (
            (3, 27, 28),
            {},
            "`images` must be (28, 28, 1) per image in the model's layout (NHWC); got "
            f"(27, 28, 1). Model '{{name}}' takes images of shape {SHAPES}; `images` has shape "
            "(3, 27, 28).",
        ),
        (
            (3, 28, 28, 3),
            {},
            "`images` must be (28, 28, 1) per image in the model's layout (NHWC); got "
            f"(28, 28, 3). Model '{{name}}' takes images of shape {SHAPES}; `images` has shape "
            "(3, 28, 28, 3). The model takes 1 channel; got 3 (convert colour images to grey "
            "scale first).",
        ),
        (
            (3, 1, 28, 28),
            {},
            "`images` must be (28, 28, 1) per image in the model's layout (NHWC); got "
            f"(1, 28, 28). Model '{{name}}' takes images of shape {SHAPES}; `images` has shape "
            "(3, 1, 28, 28). They look like NCHW images: pass data_format='NCHW'.",
        ),
        (
            (3, 28, 28, 1),
            {"data_format": "NCHW"},
            "`images` must be (28, 28, 1) per image in the model's layout (NHWC); got "
            f"(28, 1, 28) after reading them as NCHW. Model '{{name}}' takes images of shape "
            f"{SHAPES}; `images` has shape (3, 28, 28, 1).",
        ),
        (
            (28, 28),
            {},
            "`images` must be 3-D (n, H, W) or 4-D (n, H, W, C); got shape (28, 28). Model "
            f"'{{name}}' takes images of shape {SHAPES}. For one image, pass a batch of one: "
            "images[None].",
        ),
        (
            (2, 3, 28, 28, 1),
            {},
            "`images` must be 3-D (n, H, W) or 4-D (n, H, W, C); got shape (2, 3, 28, 28, 1). "
            f"Model '{{name}}' takes images of shape {SHAPES}.",
        ),
    ],
    ids=["size", "colour", "nchw", "misread", "one-image", "5-D"],
)
def test_shape_messages_name_the_expected_shape(net, shape, kwargs, message):
    with pytest.raises(ValueError, match=r"^`images` must be") as info:
        net.predict(np.zeros(shape, np.uint8), **kwargs)
    assert str(info.value) == message.format(name=net.name)


@pytest.mark.parametrize(
    "images,kwargs,exc,message",
    [
        (
            np.zeros((2, 28, 28), bool),
            {},
            TypeError,
            "`images` must hold integers or floats (uint8 pixels, or floats in the model's input "
            "range); got dtype bool.",
        ),
        (
            np.zeros((2, 28, 28), complex),
            {},
            TypeError,
            "`images` must hold integers or floats (uint8 pixels, or floats in the model's input "
            "range); got dtype complex128.",
        ),
        (
            np.array([None, None], dtype=object),
            {},
            TypeError,
            "`images` must hold integers or floats (uint8 pixels, or floats in the model's input "
            "range); got dtype object.",
        ),
        (
            [np.zeros((28, 28)), np.zeros((27, 28))],
            {},
            TypeError,
            "`images` must be an array, or a sequence of images of one shape; could not make one "
            "array of the list given (images of different sizes, or entries that are not "
            "numbers?).",
        ),
        (
            np.zeros((2, 28, 28)),
            {"scale": 0},
            ValueError,
            "`scale` must be a finite real number > 0; got 0.0.",
        ),
        (
            np.zeros((2, 28, 28)),
            {"scale": np.inf},
            ValueError,
            "`scale` must be a finite real number > 0; got inf.",
        ),
        (
            np.zeros((2, 28, 28)),
            {"scale": "1/255"},
            TypeError,
            "`scale` must be a real number > 0; got '1/255' (str).",
        ),
    ],
    ids=["bool", "complex", "object", "ragged", "scale-0", "scale-inf", "scale-str"],
)
def test_bad_dtypes_and_scales(small, images, kwargs, exc, message):
    with pytest.raises(exc) as info:
        small.predict(images, **kwargs)
    assert str(info.value) == message


def test_unknown_option_is_named(small):
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'scaling'; it takes .*scale"):
        small.predict(np.zeros((1, 28, 28)), scaling=1)


def test_contract_on_another_namespace(small, xp, subset):
    images, _ = subset
    base = small.predict_scores(images[:4])
    got = small.predict_scores(as_xp(images[:4], xp))
    np.testing.assert_allclose(cr.to_numpy(got), base, **tolerance("float32"))
    scaled = small.predict_scores(as_xp(images[:4].astype(np.float32), xp), scale=1 / 255)
    assert_placed(scaled, xp=xp, device=device_of(xp), dtype="float32")
    np.testing.assert_allclose(cr.to_numpy(scaled), base, **tolerance("float32"))
    with pytest.raises(ValueError, match=r"got float32 values from 0 to 255\. If they are 8-bit"):
        small.predict_scores(as_xp(images[:4].astype(np.float32), xp))
    with pytest.raises(ValueError, match="need an explicit `scale`"):
        small.predict_scores(as_xp(images[:4].astype(np.int16), xp))


# -- forward ------------------------------------------------------------------------------------
def test_forward_checks_its_batch(small, subset):
    batch = subset[0][:2, ..., None].astype(np.float32)
    with pytest.raises(ValueError, match="input range") as info:
        small.forward(batch)
    assert str(info.value).startswith(
        "`x` must lie in the model's input range [0, 1] (the range it was trained on); got "
        "float32 values from 0 to 255. If they are 8-bit pixel values (as "
        "np.asarray(pil_image, dtype=np.float32) gives), divide them by 255."
    )
    nan = batch / 255
    nan[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"`x` holds NaN or inf"):
        small.forward(nan)
    with pytest.raises(TypeError, match=r"`x` must be float32 or float64; got dtype uint8\."):
        small.forward(subset[0][:2, ..., None])
    with pytest.raises(TypeError, match="`check_values` must be True or False"):
        small.forward(batch / 255, check_values="no")
    out = small.forward(batch, check_values=False)  # the caller's responsibility
    assert out.shape == (2, 10, 8)


# -- a model trained on another range -----------------------------------------------------------
def test_a_recorded_range_is_enforced_and_saved(small, subset, tmp_path):
    images, _ = subset
    wide = models.Model.from_config(small.get_config()).set_weights(small.get_weights())
    assert wide.input_range == (0.0, 1.0) and "input_range" not in wide.metadata  # assumed
    wide.input_range = (0, 255)
    assert wide.input_range == (0.0, 255.0)
    # uint8 is mapped onto the range: here the pixel values themselves
    np.testing.assert_array_equal(
        wide.predict_scores(images), wide.predict_scores(images.astype(np.float32))
    )
    with pytest.raises(ValueError, match="If they are 8-bit pixel values") as info:
        small.predict(images.astype(np.float32))  # the same floats: outside [0, 1]
    assert "input range [0, 1]" in str(info.value)
    with pytest.raises(ValueError, match=r"input range \[0, 255\].*values from -1 to"):
        wide.predict(images.astype(np.float32) - 1)
    path = tmp_path / "wide.safetensors"
    models.save(wide, path)
    again = models.load(path)
    assert again.input_range == (0.0, 255.0)
    assert again.metadata["input_range"] == [0.0, 255.0]
    models.save(small, path)  # a model without a record: the default is written
    assert models.load(path).input_range == (0.0, 1.0)
    models.save(small, path, metadata={"input_range": "[-1, 1]"})
    assert models.load(path).input_range == (-1.0, 1.0)


@pytest.mark.parametrize(
    "value,message",
    [
        ((1, 0), "`input_range` must be finite with low < high; got (1, 0)."),
        ((0, np.inf), "`input_range` must be finite with low < high; got (0, inf)."),
        (
            (0, 1, 2),
            "`input_range` must be two numbers [low, high] (the range of the pixel values the "
            "model was trained on); got (0, 1, 2).",
        ),
        (
            "0-1",
            "`input_range` must be two numbers [low, high] (the range of the pixel values the "
            "model was trained on); got '0-1'.",
        ),
        (
            (True, 2),
            "`input_range` must be two numbers [low, high] (the range of the pixel values the "
            "model was trained on); got (True, 2).",
        ),
    ],
)
def test_bad_input_range(small, value, message):
    model = models.Model.from_config(small.get_config())
    with pytest.raises(ValueError, match="^`input_range` must be") as info:
        model.input_range = value
    assert str(info.value) == message


def test_bad_input_range_in_metadata_or_file(small, tmp_path):
    model = models.Model.from_config(small.get_config()).set_weights(small.get_weights())
    model.metadata["input_range"] = [1, 1]
    with pytest.raises(ValueError, match=r"`metadata\['input_range'\]` must be finite"):
        model.predict(np.zeros((1, 28, 28)))
    path = tmp_path / "bad.safetensors"
    with pytest.raises(ValueError, match=r"`metadata\['input_range'\]` must be two numbers"):
        models.save(small, path, metadata={"input_range": "wide"})
    # a file whose recorded range is malformed (written around caproute's save)
    from caproute.models.weights_file import load_file, save_file

    models.save(small, path)
    tensors, meta = load_file(path)
    save_file(path, tensors, {**meta, "input_range": json.dumps([0, "one"])})
    with pytest.raises(
        WeightsFileError, match=r"the input range in its metadata: `input_range` must be two"
    ):
        models.load(path)


# -- overflow inside the network ----------------------------------------------------------------
def _blown_up(factor, dtype):
    net = models.capsnet(conv_channels=8, primary_types=4, class_dim=8)
    net = net.initialize(random_state=0, dtype=dtype)
    return net.set_weights({k: v * factor for k, v in net.get_weights().items()})


def test_overflow_names_the_public_arguments():
    x = np.random.default_rng(0).random((2, 28, 28))
    net = _blown_up(1e12, "float32")
    with pytest.raises(ValueError, match="overflowed") as info:
        net.predict(x)
    msg = str(info.value)
    assert type(info.value) is ValueError
    assert msg.startswith(
        "model 'capsnet' overflowed at layer 'class_caps' (DenseCaps), computing in float32 on "
        "`images` within its input range [0, 1]: its weights (largest magnitude "
    )
    assert msg.endswith("are too large for float32. Compute in float64: pass dtype='float64'.")
    assert "`u`" not in msg and "u_hat" not in msg
    labels = net.predict(x, dtype="float64")  # the advice works
    assert labels.shape == (2,)
    with pytest.raises(ValueError, match=r"on `x` within .* pass `x` as float64\."):
        net.forward(x[..., None].astype(np.float32))


def test_overflow_in_float64_does_not_advise_float64():
    x = np.random.default_rng(0).random((2, 28, 28))
    net = _blown_up(1e200, "float64")
    for dtype in ("float32", "float64"):
        with pytest.raises(ValueError, match="overflowed") as info:
            net.predict(x, dtype=dtype, backend="numpy")
        msg = str(info.value)
        assert f"computing in {dtype}" in msg and "largest magnitude 4.33e+199" in msg
    assert "pass dtype='float64'" not in msg
    assert msg.endswith(
        "too large for float64. Check the weights the model holds (Model.get_weights)."
    )


def test_overflow_in_matrix_capsules():
    net = models.matrix_capsnet(8, 8, 8, 8).initialize(random_state=0)
    net.set_weights({k: v * 1e15 for k, v in net.get_weights().items()})
    with pytest.raises(
        ValueError, match=r"^model 'matrix_capsnet' overflowed at layer 'conv_caps1'"
    ):
        net.predict(np.random.default_rng(0).random((2, 28, 28)))


# -- the constructors name their own arguments --------------------------------------------------
@pytest.mark.parametrize(
    "build,exc,message",
    [
        (
            lambda: models.capsnet(primary_dim=0),
            ValueError,
            "`primary_dim` must be an integer >= 1; got 0.",
        ),
        (
            lambda: models.capsnet(conv_channels=0),
            ValueError,
            "`conv_channels` must be an integer >= 1; got 0.",
        ),
        (lambda: models.capsnet(class_dim=2.5), TypeError, "`class_dim` must be an integer"),
        (
            lambda: models.capsnet(input_shape=(28, 28)),
            ValueError,
            "`input_shape` must be three integers (H, W, C) (the channels last, whatever "
            "`data_format`); got (28, 28).",
        ),
        (
            lambda: models.capsnet(conv_kernel=30),
            ValueError,
            "the network does not fit `input_shape` (28, 28, 1): layer 'conv1': a 30x30 kernel "
            "does not fit a 28x28 map with padding 0. Use a larger input_shape or smaller "
            "kernels or strides.",
        ),
        (
            lambda: models.capsnet(squash_eps=0),
            ValueError,
            "`squash_eps` must be a finite real number > 0; got 0.0.",
        ),
        (
            lambda: models.capsnet(classes="abcdefghij"),
            TypeError,
            "`classes` must be a sequence of class names (a list of str, in output order); got "
            "str.",
        ),
        (lambda: models.matrix_capsnet(0), ValueError, "`A` must be an integer >= 1; got 0."),
        (
            lambda: models.matrix_capsnet(8, 8, 8, 0),
            ValueError,
            "`D` must be an integer >= 1; got 0.",
        ),
        (
            lambda: models.matrix_capsnet(coordinate_addition=2),
            TypeError,
            "`coordinate_addition` must be True or False; got 2 (int).",
        ),
        (
            lambda: models.matrix_capsnet(input_shape=(12, 12, 1)),
            ValueError,
            "the network does not fit `input_shape` (12, 12, 1): layer 'conv_caps2': a 3x3 "
            "kernel does not fit a 1x1 map. Use a larger input_shape or smaller kernels or "
            "strides.",
        ),
    ],
)
def test_constructors_name_their_arguments(build, exc, message):
    with pytest.raises(exc) as info:
        build()
    assert str(info.value).startswith(message)


# -- Dask arrays: the dtype rule at the call, the values per block --------------------------------
def test_dask_arrays_follow_the_contract(subset):
    da = pytest.importorskip("dask.array", reason="Dask is optional: pip install 'caproute[dask]'")
    images, _ = subset
    net = models.load_pretrained("capsnet-fashion-mnist")
    with pytest.raises(ValueError, match="need an explicit `scale`"):
        net.predict(da.from_array(images.astype(np.uint16), chunks=8))  # at the call
    with pytest.raises(ValueError, match="`scale` must be a finite real number > 0"):
        net.predict(da.from_array(images, chunks=8), scale=-1)
    lazy = net.predict(da.from_array(images.astype(np.float32), chunks=8))  # no error yet
    with pytest.raises(ValueError, match=r"got float32 values from 0 to 255\."):
        lazy.compute()
    scaled = net.predict(da.from_array(images.astype(np.float32), chunks=8), scale=1 / 255)
    np.testing.assert_array_equal(scaled.compute(), net.predict(images))
