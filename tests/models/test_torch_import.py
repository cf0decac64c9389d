"""load_torch against networks built and run with the real PyTorch.

The fixtures under fixtures/torch/ were written by tools/fixtures/make_torch_fixtures.py
(PyTorch 2.13): small networks of every layout load_torch knows, with random weights, their
state dicts and the outputs of every layer for three fixed inputs (float64 from the float32
weights). These tests need neither torch nor the script, except the ``.pt`` case, which is
skipped without torch.
"""

from __future__ import annotations

import io
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from caproute.models import (
    EM_PRESETS,
    TORCH_LAYOUTS,
    WeightsFileError,
    WeightsMismatchError,
    load_torch,
    read_state_dict,
)

FIXTURES = Path(__file__).parent / "fixtures" / "torch"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())


def _hints(name):
    hints = dict(MANIFEST[name]["hints"])
    hints["input_shape"] = tuple(hints["input_shape"])
    return hints


def _load(name, **override):
    entry = MANIFEST[name]
    return load_torch(FIXTURES / entry["file"], **{**_hints(name), **override})


def _outputs(name):
    with np.load(FIXTURES / MANIFEST[name]["outputs"]) as f:
        return {k: f[k] for k in f.files}


def _scores(model, outputs):
    last = outputs[model.layers[-1].name]
    if isinstance(last, tuple):
        return last[1]
    return np.sqrt(np.sum(last.astype(np.float64) ** 2, axis=-1))


def _assert_layers(model, ref, dtype, rtol):
    outputs = model.forward(ref["input"].astype(dtype), return_all=True)
    assert list(outputs) == [layer.name for layer in model.layers]
    for name, value in outputs.items():
        parts = (
            {f"layer/{name}/pose": value[0], f"layer/{name}/activation": value[1]}
            if isinstance(value, tuple)
            else {f"layer/{name}": value}
        )
        for key, got in parts.items():
            assert got.dtype == dtype, key
            want = ref[key]
            np.testing.assert_allclose(
                got, want, rtol=rtol, atol=rtol * float(np.max(np.abs(want))), err_msg=key
            )
    np.testing.assert_allclose(_scores(model, outputs), ref["scores"], rtol=rtol, atol=1e-7)


ALL = sorted(n for n in MANIFEST if n != "gram_ai_relu_pt")


@pytest.mark.parametrize("name", ALL)
def test_every_layer_matches_pytorch(name):
    model = _load(name)
    ref = _outputs(name)
    _assert_layers(model, ref, np.float32, 1e-4)
    # float64 inference from the same weights: closer still
    _assert_layers(model, ref, np.float64, 1e-5)
    info = model.metadata["import"]
    assert info["format"] == "torch-state-dict" and info["source"].endswith(
        MANIFEST[name]["file"] + "'"
    )


def test_layouts_are_found_from_the_tensor_names():
    found = {n: _load(n).metadata["import"]["layout"] for n in MANIFEST if n != "gram_ai_relu_pt"}
    assert found == {
        "gram_ai_relu": "gram-ai",
        "single_conv_leaky": "capsnet-single-conv",
        "single_conv_elu_swish": "capsnet-single-conv",
        "matrix_yl1993": "matrix-em",
        "matrix_variants": "matrix-em",
        "matrix_paper_gelu": "matrix-em",
        "matrix_ratio_batch_selu": "matrix-em",
        "matrix_ratio_sample_tanh": "matrix-em",
        "matrix_all_gelu_tanh": "matrix-em",
        "matrix_all_position_sigmoid": "matrix-em",
        "matrix_all_sample_softplus": "matrix-em",
    }
    # the decoder is dropped, and said so
    info = _load("gram_ai_relu").metadata["import"]
    assert info["dropped"] == ["decoder.0.bias", "decoder.0.weight", "decoder.2.bias", "decoder.2.weight"]  # fmt: skip
    assert any("dropped 4 tensors" in n for n in info["notes"])


def _largest_gap(model, ref):
    """The largest relative gap (to the layer's largest magnitude) over every layer output."""
    gaps = []
    for name, value in model.forward(ref["input"], return_all=True).items():
        parts = (
            {f"layer/{name}/pose": value[0], f"layer/{name}/activation": value[1]}
            if isinstance(value, tuple)
            else {f"layer/{name}": value}
        )
        for key, got in parts.items():
            gaps.append(float(np.max(np.abs(got - ref[key])) / np.max(np.abs(ref[key]))))
    return max(gaps)


COMPETITION_ALL = ["matrix_all_gelu_tanh", "matrix_all_position_sigmoid", "matrix_all_sample_softplus"]  # fmt: skip


@pytest.mark.parametrize("name", COMPETITION_ALL)
def test_competition_all_fixtures_use_their_activation_and_options(name):
    model = _load(name)
    hints = MANIFEST[name]["hints"]
    assert model.layers[0].get_config()["activation"] == hints["activation"]
    options = hints["em_options"]
    for layer in model.layers[2:4]:  # conv_caps1, conv_caps2
        config = layer.get_config()
        assert config["competition"] == "all"
        assert config["competition_init"] == options["competition_init"]
    assert model.layers[-1].get_config()["eps"] == options.get("eps", 1e-8)
    assert _largest_gap(model, _outputs(name)) < 1e-4
    # caproute's defaults (EM_PRESETS["paper"]) give other numbers: the options matter
    assert _largest_gap(_load(name, em_options="paper"), _outputs(name)) > 1e-2


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("matrix_all_gelu_tanh", {"competition": "position"}),
        ("matrix_all_gelu_tanh", {"competition_init": "position"}),
        ("matrix_all_gelu_tanh", {"mass_floor": "add"}),
        ("matrix_all_gelu_tanh", {"cost_log_var": "half_log_var"}),
        ("matrix_all_gelu_tanh", {"last_inverse_temperature": "schedule"}),
        ("matrix_all_position_sigmoid", {"competition": "position"}),
        ("matrix_all_position_sigmoid", {"competition_init": "all"}),
        ("matrix_all_position_sigmoid", {"mass_floor": "max"}),
        ("matrix_all_position_sigmoid", {"pose_momentum": None}),
        ("matrix_all_position_sigmoid", {"e_step_log_var_weight": 1.0}),
        ("matrix_all_position_sigmoid", {"e_step_norm": "softmax"}),
        ("matrix_all_sample_softplus", {"competition_init": "position"}),
        ("matrix_all_sample_softplus", {"e_step_norm": "ratio_child"}),
        ("matrix_all_sample_softplus", {"e_step_norm": "ratio_batch"}),
        ("matrix_all_sample_softplus", {"renormalize_assignments": False}),
        ("matrix_all_sample_softplus", {"last_inverse_temperature": "schedule"}),
    ],
)
def test_each_em_option_of_a_competition_all_fixture_matters(name, change):
    # one option changed from what PyTorch computed: no longer within the 1e-4 of a match
    # (the smallest effect, ratio_child vs softmax, is ~3e-3)
    options = {**MANIFEST[name]["hints"]["em_options"], **change}
    assert _largest_gap(_load(name, em_options=options), _outputs(name)) > 1e-3


def test_a_pytorch_checkpoint_loads_through_the_safe_conversion():
    pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")
    model = _load("gram_ai_relu_pt")
    _assert_layers(model, _outputs("gram_ai_relu_pt"), np.float32, 1e-4)


def test_file_objects_and_dicts_load_the_same_network():
    ref = _outputs("matrix_yl1993")
    with open(FIXTURES / MANIFEST["matrix_yl1993"]["file"], "rb") as f:
        model = load_torch(f, **_hints("matrix_yl1993"))
    _assert_layers(model, ref, np.float32, 1e-4)
    data = (FIXTURES / MANIFEST["single_conv_leaky"]["file"]).read_bytes()
    model = load_torch(io.BytesIO(data), **_hints("single_conv_leaky"))
    assert model.metadata["import"]["source"] == "the file object"
    _assert_layers(model, _outputs("single_conv_leaky"), np.float32, 1e-4)
    sd = read_state_dict(FIXTURES / MANIFEST["gram_ai_relu"]["file"])
    _assert_layers(load_torch(sd, **_hints("gram_ai_relu")), _outputs("gram_ai_relu"), np.float32, 1e-4)  # fmt: skip


def test_a_mapping_renames_tensors():
    sd = read_state_dict(FIXTURES / MANIFEST["gram_ai_relu"]["file"])
    sd["caps.W"] = sd.pop("digit_capsules.route_weights")
    sd = {k.replace("conv1.", "features.0."): v for k, v in sd.items()}
    with pytest.raises(WeightsMismatchError, match=r"unknown tensor 'caps\.W'"):
        load_torch(sd, **_hints("gram_ai_relu"))
    mapping = {
        "class_caps.weight": (r"caps\.W", "identity"),
        "conv{n}.weight": (r"features\.(?P<n>\d+)\.weight", "conv"),
        "conv{n}.bias": (r"features\.(?P<n>\d+)\.bias", "identity"),
    }
    model = load_torch(sd, layout="gram-ai", mapping=mapping, **_hints("gram_ai_relu"))
    assert [layer.name for layer in model.layers] == ["conv0", "primary_caps", "class_caps"]
    ref = _outputs("gram_ai_relu")
    got = model.forward(ref["input"], return_all=True)
    np.testing.assert_allclose(got["class_caps"], ref["layer/class_caps"], rtol=1e-4, atol=1e-6)
    # a function as transform
    model = load_torch(
        sd, mapping={**mapping, "class_caps.weight": (r"caps\.W", lambda a: a * 1.0)}, **_hints("gram_ai_relu")
    )  # fmt: skip
    assert model.metadata["import"]["layout"] == "gram-ai"


def test_the_activation_is_used_not_assumed():
    ref = _outputs("single_conv_leaky")
    wrong = _load("single_conv_leaky", activation="relu")
    got = wrong.forward(ref["input"], return_all=True)["conv1"]
    assert not np.allclose(got, ref["layer/conv1"], rtol=1e-3)
    # one activation per convolution
    right = _load("single_conv_leaky", activation=[{"name": "leaky_relu", "negative_slope": 0.01}] * 2)  # fmt: skip
    _assert_layers(right, ref, np.float32, 1e-4)


@pytest.mark.parametrize(
    ("name", "drop", "message"),
    [
        (
            "gram_ai_relu",
            "activation",
            "`activation` is not recorded in a PyTorch state dict: pass activation= the function "
            "after the convolution (gram-ai state dict '",
        ),
        (
            "gram_ai_relu",
            "n_iter",
            "`n_iter` is not recorded in a PyTorch state dict: pass n_iter=",
        ),
        (
            "gram_ai_relu",
            "input_shape",
            "the tensors fit square images of 13 or 14 pixels: pass input_shape=(14, 14, 1)",
        ),
        (
            "single_conv_leaky",
            "batchnorm_eps",
            "the state dict holds a BatchNorm after conv1, whose epsilon it does not record: pass "
            "batchnorm_eps=",
        ),
        (
            "matrix_yl1993",
            "em_options",
            "the EM-routing variant is not recorded in a PyTorch state dict: pass em_options= one "
            "of ['paper', 'yl-1993']",
        ),
        (
            "matrix_yl1993",
            "input_shape",
            "matrix capsules: any size the layers fit): input_shape=(H, W, 1)",
        ),  # fmt: skip
    ],
)
def test_what_the_file_does_not_record_is_asked_for(name, drop, message):
    hints = _hints(name)
    del hints[drop]
    with pytest.raises(ValueError, match=re.escape(message)):
        load_torch(FIXTURES / MANIFEST[name]["file"], **hints)


def test_a_wrong_input_shape_says_which_one_fits():
    with pytest.raises(WeightsMismatchError) as info:
        _load("gram_ai_relu", input_shape=(28, 28, 1))
    assert (
        "the class transform has 64 input capsules, but input_shape=(28, 28, 1) gives 484 "
        "(11x11 positions x 4 capsule types); it was made for square images of 13 or 14 pixels: "
        "pass input_shape=(14, 14, 1)"
    ) in str(info.value)
    with pytest.raises(WeightsMismatchError, match=re.escape("pass input_shape=(14, 14, 1)")):
        _load("gram_ai_relu", input_shape=(14, 14, 3))
    # a stride the layout does not have explains it as well
    with pytest.raises(WeightsMismatchError, match="strides="):
        _load("gram_ai_relu", strides={"primary_caps": 3})


def test_wrong_shapes_unknown_keys_and_unknown_layouts():
    sd = read_state_dict(FIXTURES / MANIFEST["gram_ai_relu"]["file"])
    bad = {**sd, "digit_capsules.route_weights": sd["digit_capsules.route_weights"][:, :, :3]}
    with pytest.raises(
        WeightsMismatchError,
        match=re.escape("the class transform (5, 64, 3, 6) takes 3-D capsules but there are 4"),
    ):
        load_torch(bad, **_hints("gram_ai_relu"))
    with pytest.raises(WeightsMismatchError, match=re.escape("unknown tensor 'extra.weight'")):
        load_torch({**sd, "extra.weight": np.zeros(3)}, **_hints("gram_ai_relu"))
    with pytest.raises(WeightsMismatchError) as info:
        load_torch({"fc.weight": np.zeros((2, 3))}, activation="relu", n_iter=3)
    assert "closest known layout" in str(info.value) and "mapping=" in str(info.value)
    sd2 = read_state_dict(FIXTURES / MANIFEST["matrix_yl1993"]["file"])
    sd2["conv_caps1.weights"] = sd2["conv_caps1.weights"][:, :10]
    with pytest.raises(WeightsMismatchError, match=r"conv_caps1\.weights has 10 = 5 x 2 input"):
        load_torch(sd2, **_hints("matrix_yl1993"))


def test_bad_files_get_one_clear_error(tmp_path):
    data = (FIXTURES / MANIFEST["gram_ai_relu"]["file"]).read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsFileError, match="cut.safetensors"):
        load_torch(tmp_path / "cut.safetensors", **_hints("gram_ai_relu"))
    (tmp_path / "w.safetensors").write_bytes(pickle.dumps({"conv1.weight": [1.0]}))
    with pytest.raises(WeightsFileError, match="never unpickles"):
        load_torch(tmp_path / "w.safetensors", **_hints("gram_ai_relu"))
    with pytest.raises(WeightsFileError, match="never unpickles"):
        load_torch(io.BytesIO(pickle.dumps([1, 2])), **_hints("gram_ai_relu"))
    (tmp_path / "notes.npz").write_text("epoch,loss\n")
    with pytest.raises(WeightsFileError, match="is not an .npz archive: it is a text file"):
        load_torch(tmp_path / "notes.npz", **_hints("gram_ai_relu"))
    with pytest.raises(FileNotFoundError):
        load_torch(tmp_path / "missing.safetensors", **_hints("gram_ai_relu"))


def test_bad_arguments():
    path = FIXTURES / MANIFEST["gram_ai_relu"]["file"]
    hints = _hints("gram_ai_relu")
    with pytest.raises(ValueError, match=r"`layout` must be one of \['capsnet-single-conv'"):
        load_torch(path, layout="keras", **hints)
    with pytest.raises(ValueError, match=r"transform must be one of \['components'"):
        load_torch(path, mapping={"class_caps.weight": ("x", "flip")}, **hints)
    with pytest.raises(TypeError, match=r"`mapping\['a'\]` must be a pair"):
        load_torch(path, mapping={"a": "b"}, **hints)
    with pytest.raises(TypeError, match="`source` must be a path, a binary file object or a dict"):
        load_torch(3, **hints)
    with pytest.raises(TypeError, match="opened in binary mode"):
        load_torch(io.StringIO("x"), **hints)
    with pytest.raises(ValueError, match="`n_iter` must be an integer >= 1; got 0"):
        load_torch(path, **{**hints, "n_iter": 0})
    with pytest.raises(ValueError, match="`activation`"):
        load_torch(path, **{**hints, "activation": "leaky_relu"})
    m = _hints("matrix_yl1993")
    mpath = FIXTURES / MANIFEST["matrix_yl1993"]["file"]
    with pytest.raises(ValueError, match=r"`em_options` has unknown option\(s\) \['momentum'\]"):
        load_torch(mpath, **{**m, "em_options": {"momentum": 0.9}})
    with pytest.raises(ValueError, match=r"`em_options` must be one of \['paper', 'yl-1993'\]"):
        load_torch(mpath, **{**m, "em_options": "tf"})


def test_the_tables_are_public_and_consistent():
    assert set(TORCH_LAYOUTS) == {"gram-ai", "capsnet-single-conv", "matrix-em"}
    for spec in TORCH_LAYOUTS.values():
        for role in spec.required:
            assert role in spec.mapping
    assert EM_PRESETS["paper"] == {}
    # the "paper" preset is caproute's defaults: it loads, and gives other numbers than yl-1993
    ref = _outputs("matrix_yl1993")
    paper = _load("matrix_yl1993", em_options="paper")
    got = paper.forward(ref["input"])[1]
    assert got.shape == ref["scores"].shape and not np.allclose(got, ref["scores"], rtol=1e-4)


def test_strides_and_padding_name_layers():
    with pytest.raises(
        ValueError, match=r"`strides` names no layer of this network that has one: \['conv9'\]"
    ):
        _load("gram_ai_relu", strides={"conv9": 2})
    # the layout's stride, given again, changes nothing
    model = _load("matrix_yl1993", strides={"conv1": 2, "conv_caps1": 2}, padding={"conv1": 2})
    _assert_layers(model, _outputs("matrix_yl1993"), np.float32, 1e-4)
    with pytest.raises(TypeError, match=r"`strides` must be a dict of layer name to int"):
        _load("gram_ai_relu", strides=[1, 2])


def test_a_missing_component_is_named():
    sd = read_state_dict(FIXTURES / MANIFEST["gram_ai_relu"]["file"])
    del sd["primary_capsules.capsules.2.weight"], sd["conv1.bias"]
    with pytest.raises(WeightsMismatchError) as info:
        load_torch(sd, **_hints("gram_ai_relu"))
    assert "primary_caps.weight: missing component tensor(s) [2]" in str(info.value)
    assert r"missing tensor 'conv1.bias' (conv(?P<n>\d+)\.bias)" in str(info.value)


def test_data_parallel_prefix_and_half_precision():
    sd = read_state_dict(FIXTURES / MANIFEST["gram_ai_relu"]["file"])
    wrapped = {f"module.{k}": v.astype(np.float16) for k, v in sd.items()}
    model = load_torch(wrapped, **_hints("gram_ai_relu"))
    notes = model.metadata["import"]["notes"]
    assert "removed the 'module.' prefix of every tensor name (nn.DataParallel)" in notes
    assert "widened 15 float16 tensors to float32 (exactly)" in notes
    assert model.get_weights()["class_caps.weight"].dtype == np.float32
    np.testing.assert_array_equal(
        model.get_weights()["class_caps.weight"],
        sd["digit_capsules.route_weights"].astype(np.float16).astype(np.float32),
    )


def test_a_caproute_model_file_is_named(tmp_path):
    from caproute.models import save

    save(_load("gram_ai_relu"), tmp_path / "mine.safetensors")
    with pytest.raises(WeightsFileError, match="is a caproute model file, not a PyTorch state"):
        load_torch(tmp_path / "mine.safetensors", **_hints("gram_ai_relu"))
