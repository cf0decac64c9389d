"""load_keras against checkpoints written by the real Keras (tools/fixtures/make_keras_fixtures.py):
Keras 2 HDF5 (full model and weights only, through tf_keras) and Keras 3 .keras archives, each
with Keras's own outputs for a few inputs, layer by layer. Neither Keras nor TensorFlow is
needed here; h5py is."""

import io
import json
import pickle
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from caproute import models
from caproute.models import UnsupportedLayerError, WeightsFileError, WeightsMismatchError

h5py = pytest.importorskip("h5py", reason="h5py is not installed (pip install 'caproute[keras]')")

FIXTURES = Path(__file__).parent / "fixtures" / "keras"
LEAKY_03 = {"name": "leaky_relu", "negative_slope": 0.3}
LEAKY_02 = {"name": "leaky_relu", "negative_slope": 0.2}
CAPSNET_WEIGHTS_HINTS = dict(
    input_shape=(12, 12, 1), activation="relu", n_iter=3, strides=(1, 2), padding=("valid",) * 2
)
LEAKY_BN_WEIGHTS_HINTS = dict(
    input_shape=(14, 14, 1),
    activation=[LEAKY_03, LEAKY_02, None],
    batchnorm=["before_activation", "after_activation"],
    bn_epsilon=[1e-3, 1e-5],
    n_iter=2,
    strides=[1, 1, 2],
    padding=["valid", "same", "valid"],
)


def _em_options(npz):
    return {
        key.split("/", 1)[1]: npz[key].item() for key in npz.files if key.startswith("em_option/")
    }


def _load(name, **hints):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # left-out decoders are warned about
        return models.load_keras(FIXTURES / name, **hints)


CASES = [
    ("k2_capsnet_full.h5", "k2_capsnet.npz", {}),
    ("k2_capsnet_weights.h5", "k2_capsnet.npz", CAPSNET_WEIGHTS_HINTS),
    ("k2_leaky_bn_full.h5", "k2_leaky_bn.npz", {}),
    ("k2_leaky_bn_weights.h5", "k2_leaky_bn.npz", LEAKY_BN_WEIGHTS_HINTS),
    ("k3_capsnet.keras", "k3_capsnet.npz", {}),
    ("k3_sequential.keras", "k3_sequential.npz", {}),
    ("k3_primary_layer.keras", "k3_primary_layer.npz", {}),
    ("k3_matrix_em.keras", "k3_matrix_em.npz", "em"),
    ("k3_matrix_em_options.keras", "k3_matrix_em_options.npz", "em"),
]


def _case(name, npz_name, hints):
    npz = np.load(FIXTURES / npz_name)
    if hints == "em":
        hints = {"em_options": _em_options(npz)}
    return _load(name, **hints), npz


def _keras_scores(npz):
    """Keras's class scores as caproute defines them: CapsNet-Keras's Length is
    sqrt(|v|^2 + 1e-7) (Keras's epsilon), caproute's the plain length |v| (documented in the
    import notes); matrix capsules' scores are their activations, unchanged."""
    scores = npz["scores"].astype(np.float64)
    if any(k.endswith("/act") for k in npz.files):
        return scores
    return np.sqrt(np.maximum(scores**2 - 1e-7, 0.0))


def _close(actual, expected, rtol=1e-4):
    """float32 agreement: relative, with an absolute floor at the output's scale."""
    expected = np.asarray(expected)
    actual = np.asarray(actual).reshape(expected.shape)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("name, npz_name, hints", CASES, ids=[c[0] for c in CASES])
def test_class_scores_match_keras(name, npz_name, hints):
    model, npz = _case(name, npz_name, hints)
    scores = model.predict_scores(npz["x"])
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores, _keras_scores(npz), rtol=1e-4, atol=1e-7)
    # float64 computes the same network (Keras ran float32)
    np.testing.assert_allclose(
        model.predict_scores(npz["x"], dtype="float64"), _keras_scores(npz), rtol=1e-4, atol=1e-7
    )


@pytest.mark.parametrize("name, npz_name, hints", CASES, ids=[c[0] for c in CASES])
def test_every_layer_matches_keras(name, npz_name, hints):
    model, npz = _case(name, npz_name, hints)
    outputs = model.forward(npz["x"], return_all=True)
    covered = model.metadata["import"]["layers"]
    assert list(covered) == [layer.name for layer in model.layers]
    # a weights-only file does not name its layers without weights (activations, the
    # reshape and squash): there only the capsule layer's output has a Keras counterpart
    weights_only = model.metadata["import"]["format"] == "keras2-weights"
    compared = 0
    for layer, keras_names in list(covered.items())[-1 if weights_only else 0 :]:
        last = keras_names[-1]
        out = outputs[layer]
        if isinstance(out, tuple):
            _close(out[0], npz[f"out/{last}/pose"])
            _close(out[1], npz[f"out/{last}/act"])
        else:
            _close(out, npz[f"out/{last}"])
        compared += 1
    assert compared == (1 if weights_only else len(model.layers))


def test_capsnet_keras_layout_is_read_from_the_file():
    with pytest.warns(UserWarning, match=r"left out \(classification only\): input_label"):
        model = models.load_keras(FIXTURES / "k2_capsnet_full.h5")
    info = model.metadata["import"]
    assert info["format"] == "keras2-h5"
    assert [type(layer).__name__ for layer in model.layers] == [
        "Conv2D",
        "PrimaryCaps",
        "DenseCaps",
    ]
    conv, primary, caps = model.layers
    assert (conv.activation, conv.kernel_size, conv.stride) == ("relu", 3, 1)
    assert (primary.n_types, primary.dim, primary.stride, primary.order) == (
        4,
        4,
        2,
        "position-major",
    )
    assert (caps.n_out, caps.out_dim, caps.n_iter, caps.weight_layout) == (3, 6, 3, "keras")
    dropped = " ".join(info["dropped"])
    for name in ("input_label (InputLayer)", "mask (Mask)", "decoder (Sequential)"):
        assert name in dropped
    assert "capsnet (Length): class scores" in dropped


def test_leaky_relu_batchnorm_and_odd_names():
    model = _load("k2_leaky_bn_full.h5")
    conv_a, conv_b, bn, primary, caps = model.layers
    assert conv_a.activation == LEAKY_03  # LeakyReLU layer, BN folded into the conv before it
    assert conv_b.activation == LEAKY_02  # activation="leaky_relu": Keras's 0.2
    assert conv_b.padding == "same"
    assert type(bn).__name__ == "BatchNorm" and bn.epsilon == 1e-5  # after the activation
    assert caps.n_iter == 2  # "iterations" in the DigitCaps config
    assert model.metadata["import"]["layers"]["features_0"] == [
        "features.0",
        "features.1",
        "features.2",
    ]
    assert any("'caps>out/weights'" in note for note in model.metadata["import"]["notes"])


def test_keras3_strided_same_padding_and_leaky_layer():
    model = _load("k3_capsnet.keras", activation="relu")
    assert (
        "`activation` ignored: the file records the architecture"
        in (model.metadata["import"]["notes"])
    )
    stem = model.layers[0]
    assert (stem.stride, stem.padding, stem.activation) == (2, "same", LEAKY_03)
    assert model.metadata["import"]["format"] == "keras3"


def test_imported_model_saves_and_loads(tmp_path):
    model, npz = _case("k2_leaky_bn_full.h5", "k2_leaky_bn.npz", {})
    models.save(model, tmp_path / "m.safetensors")
    again = models.load(tmp_path / "m.safetensors")
    np.testing.assert_allclose(again.predict_scores(npz["x"]), _keras_scores(npz), rtol=1e-4)
    assert again.get_config()["layers"] == model.get_config()["layers"]


def test_custom_primary_capsule_layer_and_transposed_transform():
    features, primary, route = _load("k3_primary_layer.keras").layers
    assert features.activation == "elu"
    assert (primary.dim, primary.n_types, primary.stride, primary.padding) == (4, 3, 2, "same")
    assert (route.weight_layout, route.n_iter) == ("torch", 2)  # (n_out, n_in, in_dim, out_dim)


@pytest.mark.parametrize("name", ["k2_capsnet_full.h5", "k3_capsnet.keras"])
def test_file_objects(name):
    npz = np.load(FIXTURES / (name.split("_full")[0].removesuffix(".keras") + ".npz"))
    with open(FIXTURES / name, "rb") as f, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        from_file = models.load_keras(f)
        from_bytes = models.load_keras(io.BytesIO((FIXTURES / name).read_bytes()))
    for model in (from_file, from_bytes):
        np.testing.assert_allclose(model.predict_scores(npz["x"]), _keras_scores(npz), rtol=1e-4)
    with open(FIXTURES / name) as text, pytest.raises(TypeError, match="binary mode"):
        models.load_keras(text)
    with pytest.raises(TypeError, match="`source` must be a path"):
        models.load_keras(3)


# ---------------------------------------------------------------- what the file does not say


def test_weights_only_file_asks_for_what_shapes_cannot_say():
    path = FIXTURES / "k2_capsnet_weights.h5"
    with pytest.raises(ValueError, match="does not record everything") as info:
        models.load_keras(path)
    message = str(info.value)
    assert "does not record everything the model needs (3 items)" in message
    assert "pass `input_shape` ((H, W, C))" in message
    assert 'pass `activation` ("relu" or' in message
    assert "pass `n_iter`" in message
    with pytest.raises(ValueError, match="does not record everything") as info:
        models.load_keras(path, input_shape=(12, 12, 1), activation="relu", n_iter=3)
    message = str(info.value)
    assert "(1 item)" in message
    assert "7 combinations give 64 capsules: strides=[1, 2], padding=['valid', 'valid']" in message
    # the primary_dim is the transform's input dimension: never asked
    assert "primary_dim" not in message


def test_weights_only_batchnorm_needs_its_place_and_epsilon():
    hints = dict(LEAKY_BN_WEIGHTS_HINTS)
    del hints["batchnorm"], hints["bn_epsilon"]
    with pytest.raises(ValueError, match="does not record everything") as info:
        models.load_keras(FIXTURES / "k2_leaky_bn_weights.h5", **hints)
    message = str(info.value)
    assert "(2 items)" in message
    assert "where each BatchNormalization (['features.1', 'bn>after.act']) sits" in message
    assert "pass `bn_epsilon`" in message


def test_weights_only_strides_that_do_not_fit():
    hints = dict(CAPSNET_WEIGHTS_HINTS, strides=(1, 1))
    with pytest.raises(
        WeightsMismatchError, match="takes 64 input capsules .* with strides=\\[1, 1\\]"
    ):
        models.load_keras(FIXTURES / "k2_capsnet_weights.h5", **hints)


def test_matrix_capsules_need_the_em_variant():
    with pytest.raises(ValueError, match=r"pass em_options=\{\} for caproute's"):
        models.load_keras(FIXTURES / "k3_matrix_em.keras")
    # the options matter: with caproute's defaults the other variant's scores differ
    npz = np.load(FIXTURES / "k3_matrix_em_options.npz")
    assert _em_options(npz)["e_step_norm"] == "ratio_child"
    model = models.load_keras(FIXTURES / "k3_matrix_em_options.keras", em_options={})
    assert not np.allclose(model.predict_scores(npz["x"]), npz["scores"], rtol=1e-3)
    layer = _load("k3_matrix_em_options.keras", em_options=_em_options(npz)).layers[2]
    assert (layer.pose_momentum, layer.mass_floor) == (0.9, "add")
    # what the config records can be overridden, and each layer takes only its own options
    options = {**_em_options(npz), "coordinate_addition": False, "n_iter": 1}
    model = models.load_keras(FIXTURES / "k3_matrix_em_options.keras", em_options=options)
    assert model.layers[-1].coordinate_addition is False
    assert model.layers[-1].n_iter == model.layers[-2].n_iter == 1


def test_keras3_weights_only_file_is_refused(tmp_path):
    path = tmp_path / "model.weights.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("layers/conv2d/vars/0", data=np.zeros((3, 3, 1, 2), np.float32))
    with pytest.raises(WeightsFileError, match="is a Keras 3 weights file .* Load the .keras"):
        models.load_keras(path)


def test_hints_are_checked_before_the_file_is_read():
    missing = FIXTURES / "no_such_file.h5"
    with pytest.raises(ValueError, match="`batchnorm` must be 'before_activation'"):
        models.load_keras(missing, batchnorm="after")
    with pytest.raises(ValueError, match="`weight_layout` must be one of"):
        models.load_keras(missing, weight_layout="nchw")
    with pytest.raises(ValueError, match="`n_iter` must be an integer >= 1"):
        models.load_keras(missing, n_iter=0)
    with pytest.raises(ValueError, match="`activation`"):
        models.load_keras(missing, activation="leaky_relu")  # the slope must be given
    with pytest.raises(TypeError, match="`em_options` must be a dict"):
        models.load_keras(missing, em_options=["pose_momentum"])
    with pytest.raises(ValueError, match=r"`em_options` has unknown options \['pose_momentun'\]"):
        models.load_keras(missing, em_options={"pose_momentun": 0.9})
    with pytest.raises(FileNotFoundError):
        models.load_keras(missing)


# ---------------------------------------------------------------- read_keras_h5 -------------


def test_read_keras_h5_keeps_equal_short_names_apart(tmp_path):
    # CapsNet-Keras's decoder is a nested model: its three kernels are "kernel" in one group
    keys = models.read_keras_h5(FIXTURES / "k2_capsnet_full.h5")
    assert [k for k in keys if k.endswith("kernel")] == [
        "conv1/kernel",
        "primarycap_conv2d/kernel",
        "decoder/dense_1/kernel",
        "decoder/dense_2/kernel",
        "decoder/dense_3/kernel",
    ]
    path = tmp_path / "nested.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"decoder"])
        group = f.create_group("decoder")
        names = [f"dense_{i}/kernel:0" for i in (1, 2, 3)]
        group.attrs["weight_names"] = np.array([n.encode() for n in names])
        for i, n in enumerate(names):
            group.create_dataset(n, data=np.full((2, 2), i, np.float32))
    weights = models.read_keras_h5(path)
    assert list(weights) == [f"decoder/dense_{i}/kernel" for i in (1, 2, 3)]
    assert [float(w[0, 0]) for w in weights.values()] == [0.0, 1.0, 2.0]


def test_capsnet_from_keras_h5_builds_a_full_model_from_its_config():
    # LeakyReLU, BatchNorm, 2 routing iterations: read from the file, not assumed
    npz = np.load(FIXTURES / "k2_leaky_bn.npz")
    model = models.capsnet_from_keras_h5(FIXTURES / "k2_leaky_bn_full.h5")
    np.testing.assert_allclose(model.predict_scores(npz["x"]), _keras_scores(npz), rtol=1e-4)
    assert model.layers[0].activation == LEAKY_03 and model.layers[-1].n_iter == 2


def test_capsnet_from_keras_h5_finds_tensors_by_role(tmp_path):
    npz = np.load(FIXTURES / "k2_capsnet.npz")
    path = FIXTURES / "k2_capsnet_weights.h5"
    model = models.capsnet_from_keras_h5(path, input_shape=(12, 12, 1))  # primary_dim from W
    assert "conv1 with ReLU and stride 1" in model.metadata["import"]["notes"][0]
    np.testing.assert_allclose(model.predict_scores(npz["x"]), _keras_scores(npz), rtol=1e-4)
    # other layer names and a transform called "weights": found by role and shape
    renamed = tmp_path / "renamed.h5"
    with h5py.File(path) as src, h5py.File(renamed, "w") as dst:
        names = {"conv1": "stem", "primarycap_conv2d": "prim", "digitcaps": "caps"}
        order = [_text(n) for n in src.attrs["layer_names"]]
        dst.attrs["layer_names"] = np.array([names.get(n, n).encode() for n in order])
        for old in order:
            new = names.get(old, old)
            group = dst.create_group(new)
            wnames = [_text(w) for w in src[old].attrs["weight_names"]]
            fresh = [w.replace(old, new).replace("/W:", "/weights:") for w in wnames]
            group.attrs["weight_names"] = np.array([w.encode() for w in fresh])
            for w, f in zip(wnames, fresh, strict=True):
                group.create_dataset(f, data=src[old][w][()])
    model = models.capsnet_from_keras_h5(renamed, input_shape=(12, 12, 1))
    np.testing.assert_allclose(model.predict_scores(npz["x"]), _keras_scores(npz), rtol=1e-4)


# ---------------------------------------------------------------- bad files -----------------


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def _rewrite_keras3(tmp_path, edit, source="k3_capsnet.keras"):
    """A copy of a .keras archive whose config.json ``edit`` changed."""
    path = tmp_path / source
    with zipfile.ZipFile(FIXTURES / source) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                edit(config["config"]["layers"])
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    return path


def _layer(layers, name):
    return next(layer for layer in layers if layer["name"] == name)


def test_truncated_files(tmp_path):
    for name in ("k2_capsnet_full.h5", "k3_capsnet.keras"):
        raw = (FIXTURES / name).read_bytes()
        path = tmp_path / name
        path.write_bytes(raw[: len(raw) // 2])
        with pytest.raises(WeightsFileError, match="damaged or truncated"):
            models.load_keras(path)


def test_a_pickle_in_disguise(tmp_path):
    for name in ("model.h5", "model.keras"):
        path = tmp_path / name
        path.write_bytes(pickle.dumps({"conv1": [1.0, 2.0]}, protocol=4))
        message = (
            f"{str(path)!r} is not a Keras file (an HDF5 .h5 file or a Keras 3 .keras archive): "
            "it is a Python pickle. caproute never unpickles (unpickling can run arbitrary code)."
        )
        with pytest.raises(WeightsFileError, match=f"^{__import__('re').escape(message)}$"):
            models.load_keras(path)


def test_wrong_shapes(tmp_path):
    path = _rewrite_keras3(
        tmp_path, lambda layers: _layer(layers, "conv_b")["config"].update(filters=7)
    )
    with pytest.raises(WeightsMismatchError) as info:
        models.load_keras(path)
    assert info.value.problems == [
        "layer 'conv_b' (Conv2D): its kernel has shape (3, 3, 6, 8); the layer's config and its "
        "input (a map of 6 channels) need (3, 3, 6, 7)"
    ]
    what = f"Keras model in {str(path)!r}"
    assert str(info.value).startswith(f"weights do not fit model {what!r} (1 problem)")

    def more_capsules(layers):
        _layer(layers, "class_caps")["config"]["num_capsule"] = 4

    with pytest.raises(WeightsMismatchError) as info:
        models.load_keras(_rewrite_keras3(tmp_path, more_capsules))
    assert info.value.problems == [
        "layer 'class_caps' (CapsuleLayer): its transform 'vars/0' has shape (3, 27, 5, 4), which "
        "fits no capsule layout for 27 input capsules of dim 4 and its config's sizes "
        "{'num_capsule': 4, 'dim_capsule': 5, 'routings': 2}; caproute takes (n_out, n_in, "
        "out_dim, in_dim) and the layouts of WEIGHT_LAYOUTS"
    ]


def test_routing_iterations_missing_from_the_config(tmp_path):
    def no_routings(layers):
        del _layer(layers, "class_caps")["config"]["routings"]

    path = _rewrite_keras3(tmp_path, no_routings)
    with pytest.raises(ValueError, match="does not record everything") as info:
        models.load_keras(path)
    assert str(info.value).endswith(
        "(1 item):\n  - the routing iterations of 'class_caps' (CapsuleLayer): pass `n_iter` "
        "(an int >= 1 (3 in the paper))"
    )
    assert models.load_keras(path, n_iter=2).layers[-1].n_iter == 2


def test_unsupported_layers(tmp_path):
    def pooling(layers):
        _layer(layers, "stem_act")["class_name"] = "MaxPooling2D"

    with pytest.raises(UnsupportedLayerError) as info:
        models.load_keras(_rewrite_keras3(tmp_path, pooling))
    assert (info.value.layer, info.value.layer_class) == ("stem_act", "MaxPooling2D")
    assert str(info.value).startswith(
        "layer 'stem_act' (class MaxPooling2D) cannot be imported: caproute has no layer"
    )

    def not_squash(layers):
        _layer(layers, "primary_squash")["config"]["function"]["config"] = "normalise"

    with pytest.raises(UnsupportedLayerError, match="nothing in the file says it is squash"):
        models.load_keras(_rewrite_keras3(tmp_path, not_squash))

    def dilated(layers):
        _layer(layers, "conv_b")["config"]["dilation_rate"] = [2, 2]

    with pytest.raises(UnsupportedLayerError, match="'conv_b' \\(class Conv2D\\).*dilated"):
        models.load_keras(_rewrite_keras3(tmp_path, dilated))


def test_branches_and_merges_are_named(tmp_path):
    def merge(layers):
        conv_b = _layer(layers, "conv_b")
        args = conv_b["inbound_nodes"][0]["args"]
        other = json.loads(json.dumps(args[0]))
        other["config"]["keras_history"] = ["stem", 0, 0]
        args.append(other)

    with pytest.raises(UnsupportedLayerError) as info:
        models.load_keras(_rewrite_keras3(tmp_path, merge))
    assert info.value.layer == "conv_b"
    assert "combines the outputs of ['stem', 'stem_act']" in str(info.value)


def test_not_a_keras_file(tmp_path):
    path = tmp_path / "weights.keras"
    np.savez(path.with_suffix(".npz"), a=np.zeros(2))
    shutil.move(path.with_suffix(".npz"), path)
    with pytest.raises(WeightsFileError, match="it is a NumPy .npz archive"):
        models.load_keras(path)
