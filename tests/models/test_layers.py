"""Every layer against the straightforward NumPy versions in ``reference.py``, on every
namespace and both dtypes."""

import array_api_compat
import numpy as np
import pytest
from scipy import special as scipy_special

import caproute as cr
from caproute import models
from caproute.models import (
    Activation,
    ClassMatrixCaps,
    Conv2D,
    ConvMatrixCaps,
    DenseCaps,
    PrimaryCaps,
    PrimaryMatrixCaps,
)
from tests._helpers import as_xp, assert_placed, atol_for, device_of, rtol_for

from . import reference as ref


def run(layer, input_shape, params, x, xp, dtype, backend="auto"):
    """Apply one layer. Image inputs go through a one-layer Model (weights checked, cast and
    moved like a model's); a (pose, activation) pair goes to the layer directly. Checks the
    moved and results in the namespace, on the device and in the dtype of the input."""
    if not isinstance(x, tuple):
        net = models.Model([layer], input_shape).set_weights(
            {f"{layer.name}.{k}": v for k, v in params.items()}
        )
        out = net.forward(as_xp(x, xp, dtype), backend=backend, check_values=False)
    else:
        layer.check_input_shape(input_shape)
        shapes = layer.parameter_shapes(input_shape)
        assert {k: tuple(np.shape(v)) for k, v in params.items()} == shapes
        params = {k: as_xp(v, xp, dtype) for k, v in params.items()}
        inputs = tuple(as_xp(a, xp, dtype) for a in x)
        # the layer takes the namespace the public edge would infer from its input
        out = layer.forward(
            inputs, params, xp=array_api_compat.array_namespace(*inputs), backend=backend
        )
    for array in out if isinstance(out, tuple) else (out,):
        assert_placed(array, xp=xp, device=device_of(xp), dtype=dtype)
    return out


def close(actual, expected, dtype):
    np.testing.assert_allclose(
        cr.to_numpy(actual), expected, rtol=50 * rtol_for(dtype), atol=50 * atol_for(dtype)
    )


@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1), (3, 2)])
@pytest.mark.parametrize("c_in", [3, 20])  # im2col and per-tap products
def test_conv2d_matches_loops(xp, dtype, stride, padding, c_in):
    rng = np.random.default_rng(stride)
    x = rng.normal(size=(2, 9, 8, c_in))
    w, b = rng.normal(size=(3, 3, c_in, 5)), rng.normal(size=5)
    out = run(
        Conv2D(5, 3, stride=stride, padding=padding, name="c"),
        (9, 8, c_in),
        {"weight": w, "bias": b},
        x,
        xp,
        dtype,
    )
    close(out, ref.conv2d_loops(x, w, b, stride, padding), dtype)


def test_conv2d_nchw_is_nhwc_transposed(xp, dtype):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 7, 7, 2))
    w = rng.normal(size=(3, 3, 2, 4))
    nhwc = run(
        Conv2D(4, 3, use_bias=False, activation="relu", name="c"),
        (7, 7, 2),
        {"weight": w},
        x,
        xp,
        dtype,
    )
    nchw = run(
        Conv2D(4, 3, use_bias=False, activation="relu", data_format="NCHW", name="c"),
        (2, 7, 7),
        {"weight": w},
        np.transpose(x, (0, 3, 1, 2)),
        xp,
        dtype,
    )
    close(np.transpose(cr.to_numpy(nchw), (0, 2, 3, 1)), cr.to_numpy(nhwc), dtype)
    close(nhwc, np.maximum(ref.conv2d_loops(x, w, None, 1, 0), 0), dtype)


@pytest.mark.parametrize(
    "name,func",
    [
        ("relu", lambda z: np.maximum(z, 0)),
        ("sigmoid", lambda z: 1 / (1 + np.exp(-z))),
        ("tanh", np.tanh),
        ("elu", lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0)))),
        ("softplus", lambda z: np.log1p(np.exp(z))),
        ("linear", lambda z: z),
    ],
)
def test_activations(xp, dtype, name, func):
    x = np.linspace(-4, 4, 2 * 3 * 3 * 2).reshape(2, 3, 3, 2)
    close(run(Activation(name, name="a"), (3, 3, 2), {}, x, xp, dtype), func(x), dtype)


_SQRT_HALF = np.sqrt(0.5)


@pytest.mark.parametrize(
    "spec,func",
    [
        ("gelu", lambda z: 0.5 * z * scipy_special.erfc(-z * _SQRT_HALF)),
        (
            "gelu_tanh",
            lambda z: 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3))),
        ),
        (
            "selu",
            lambda z: 1.0507009873554805 * np.where(z > 0, z, 1.6732632423543772 * np.expm1(z)),
        ),
        ("swish", lambda z: z / (1 + np.exp(-z))),
        ("silu", lambda z: z / (1 + np.exp(-z))),
        ({"name": "leaky_relu", "negative_slope": 0.3}, lambda z: np.where(z >= 0, z, 0.3 * z)),
        ({"name": "leaky_relu", "negative_slope": 0.01}, lambda z: np.where(z >= 0, z, 0.01 * z)),
        ({"name": "elu", "alpha": 0.5}, lambda z: np.where(z > 0, z, 0.5 * np.expm1(z))),
    ],
)
def test_new_activations(xp, dtype, spec, func):
    x = np.linspace(-6, 6, 2 * 3 * 3 * 2).reshape(2, 3, 3, 2)
    close(run(Activation(spec, name="a"), (3, 3, 2), {}, x, xp, dtype), func(x), dtype)
    conv = Conv2D(2, 1, activation=spec, use_bias=False, name="c")
    close(run(conv, (3, 3, 2), {"weight": np.eye(2)[None, None]}, x, xp, dtype), func(x), dtype)


@pytest.mark.parametrize(
    "padding,pads",
    [("same", ((1, 2), (1, 1))), (((2, 0), (1, 3)), ((2, 0), (1, 3))), ((1, 0), ((1, 1), (0, 0)))],
)
def test_conv2d_padding_forms(xp, dtype, padding, pads):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 9, 8, 3))  # "same", k 4, stride 2: 3 zero rows (1 + 2), 2 columns
    w, b = rng.normal(size=(4, 4, 3, 5)), rng.normal(size=5)
    out = run(Conv2D(5, 4, stride=2, padding=padding, name="c"), (9, 8, 3),
              {"weight": w, "bias": b}, x, xp, dtype)  # fmt: skip
    padded = np.pad(x, ((0, 0), *pads, (0, 0)))
    close(out, ref.conv2d_loops(padded, w, b, 2, 0), dtype)


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_batch_norm(xp, dtype, data_format):
    rng = np.random.default_rng(5)
    params = {
        "gamma": rng.normal(1, 0.3, 3),
        "beta": rng.normal(0, 0.3, 3),
        "moving_mean": rng.normal(0, 0.3, 3),
        "moving_variance": rng.uniform(0.5, 2, 3),
    }
    x = rng.uniform(0, 1, (2, 4, 5, 3))
    expected = (x - params["moving_mean"]) / np.sqrt(params["moving_variance"] + 1e-3)
    expected = expected * params["gamma"] + params["beta"]
    layer = models.BatchNorm(epsilon=1e-3, data_format=data_format, name="bn")
    if data_format == "NCHW":
        out = run(layer, (3, 4, 5), params, np.transpose(x, (0, 3, 1, 2)), xp, dtype)
        out = np.transpose(cr.to_numpy(out), (0, 2, 3, 1))
    else:
        out = run(layer, (4, 5, 3), params, x, xp, dtype)
    close(out, expected, dtype)


def test_sigmoid_does_not_overflow():
    x = np.full((1, 1, 1, 2), -1000.0)
    x[..., 1] = 1000.0
    out = run(Activation("sigmoid", name="a"), (1, 1, 2), {}, x, np, "float64")
    np.testing.assert_array_equal(out.ravel(), [0.0, 1.0])


@pytest.mark.parametrize("order", ["type-major", "position-major"])
def test_primary_caps_matches_loops(xp, dtype, order):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 10, 10, 3))
    w, b = 0.3 * rng.normal(size=(3, 3, 3, 4 * 5)), rng.normal(size=20)
    layer = PrimaryCaps(4, 5, kernel_size=3, stride=2, order=order, name="p")
    out = run(layer, (10, 10, 3), {"weight": w, "bias": b}, x, xp, dtype)
    assert out.shape == (2, 4 * 4 * 4, 5)
    close(out, ref.primary_caps_np(x, w, b, 4, 5, 2, order, 1e-8), dtype)


@pytest.mark.parametrize("layout", ["caproute", "keras", "torch", "tf"])
@pytest.mark.parametrize("use_bias,leaky", [(False, False), (True, True)])
def test_dense_caps_every_weight_layout(xp, dtype, layout, use_bias, leaky):
    rng = np.random.default_rng(3)
    n_in, d, n_out, o = 12, 4, 3, 5
    u = ref.squash_np(rng.normal(size=(2, n_in, d)), 1e-8)
    W = 0.5 * rng.normal(size=(n_in, n_out, o, d))  # caproute layout
    stored = {
        "caproute": W,
        "keras": W.transpose(1, 0, 2, 3),
        "torch": W.transpose(1, 0, 3, 2),
        "tf": W.transpose(0, 3, 1, 2).reshape(n_in, d, n_out * o),
    }[layout]
    params = {"weight": stored}
    bias = rng.normal(size=(n_out, o)) if use_bias else None
    if use_bias:
        params["bias"] = bias
    layer = DenseCaps(
        n_out, o, n_iter=3, weight_layout=layout, use_bias=use_bias, leaky=leaky, name="d"
    )
    out = run(layer, (n_in, d), params, u, xp, dtype)
    close(out, ref.dense_caps_np(u, W, 3, bias, leaky, 1e-8), dtype)


def test_primary_matrix_caps(xp, dtype):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 4, 5, 3))
    p = {
        "pose_weight": rng.normal(size=(1, 1, 3, 32)),
        "pose_bias": rng.normal(size=32),
        "act_weight": rng.normal(size=(1, 1, 3, 2)),
        "act_bias": rng.normal(size=2),
    }
    pose, act = run(PrimaryMatrixCaps(2, name="pm"), (4, 5, 3), p, x, xp, dtype)
    ep, ea = ref.primary_matrix_caps_np(x, *p.values(), 2)
    close(pose, ep, dtype)
    close(act, ea, dtype)


def _matrix_inputs(rng, b=2, h=5, w=5, t=2):
    return rng.normal(size=(b, h, w, t, 16)), rng.uniform(0.1, 1.0, size=(b, h, w, t))


@pytest.mark.parametrize("competition", ["position", "all"])
@pytest.mark.parametrize("stride", [1, 2])
def test_conv_matrix_caps(xp, dtype, competition, stride):
    rng = np.random.default_rng(5 + stride)
    pose, act = _matrix_inputs(rng)
    W = 0.5 * rng.normal(size=(3, 3, 2, 3, 4, 4))
    beta_u, beta_a = rng.normal(size=3), rng.normal(size=3)
    layer = ConvMatrixCaps(
        3,
        kernel_size=3,
        stride=stride,
        n_iter=3,
        competition=competition,
        inverse_temperature=0.05,
        name="cc",
    )
    out_pose, out_act = run(
        layer,
        ((5, 5, 2, 16), (5, 5, 2)),
        {"weight": W, "beta_u": beta_u, "beta_a": beta_a},
        (pose, act),
        xp,
        dtype,
    )
    func = ref.conv_matrix_caps_np if competition == "position" else ref.conv_matrix_caps_all_np
    ep, ea = func(pose, act, W, beta_u, beta_a, 3, stride, [0.05] * 3, 5e-4, 1e-8)
    close(out_pose, ep, dtype)
    close(out_act, ea, dtype)


def test_competition_matters_only_where_fields_overlap():
    """With stride = kernel no child is shared, so the two competitions agree; with overlap
    they differ."""
    rng = np.random.default_rng(8)
    pose, act = _matrix_inputs(rng, h=6, w=6)
    W = 0.5 * rng.normal(size=(3, 3, 2, 3, 4, 4))
    p = {"weight": W, "beta_u": np.zeros(3), "beta_a": np.zeros(3)}
    outs = {}
    for stride in (3, 1):
        for comp in ("position", "all"):
            layer = ConvMatrixCaps(
                3, stride=stride, competition=comp, inverse_temperature=0.1, name="c"
            )
            outs[stride, comp] = np.asarray(
                run(layer, ((6, 6, 2, 16), (6, 6, 2)), p, (pose, act), np, "float64")[1]
            )
    np.testing.assert_allclose(outs[3, "position"], outs[3, "all"], rtol=1e-12)
    assert np.max(np.abs(outs[1, "position"] - outs[1, "all"])) > 1e-6


@pytest.mark.parametrize("coord", [True, False])
def test_class_matrix_caps(xp, dtype, coord):
    rng = np.random.default_rng(9)
    pose, act = _matrix_inputs(rng, h=3, w=2, t=2)
    W = 0.5 * rng.normal(size=(2, 4, 4, 4))
    beta_u, beta_a = rng.normal(size=(4, 16)), rng.normal(size=4)
    layer = ClassMatrixCaps(
        4,
        n_iter=2,
        coordinate_addition=coord,
        beta_per_pose=True,
        inverse_temperature=[0.02, 0.05],
        name="cls",
    )
    out_pose, out_act = run(
        layer,
        ((3, 2, 2, 16), (3, 2, 2)),
        {"weight": W, "beta_u": beta_u, "beta_a": beta_a},
        (pose, act),
        xp,
        dtype,
    )
    ep, ea = ref.class_matrix_caps_np(pose, act, W, beta_u, beta_a, [0.02, 0.05], 5e-4, 1e-8, coord)
    close(out_pose, ep, dtype)
    close(out_act, ea, dtype)


def test_numba_and_reference_agree_on_a_capsnet():
    net = models.capsnet(conv_channels=8, primary_types=4, class_dim=8).initialize(random_state=1)
    x = np.random.default_rng(0).random((6, 28, 28)).astype(np.float32)
    a = net.predict_scores(x, backend="numpy")
    b = net.predict_scores(x, backend="numba")
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


def test_numba_and_reference_agree_on_a_matrix_capsnet():
    net = models.matrix_capsnet(4, 4, 4, 4).initialize(random_state=1)
    x = np.random.default_rng(0).random((3, 28, 28))
    np.testing.assert_allclose(
        net.predict_scores(x, backend="numpy", dtype="float64"),
        net.predict_scores(x, backend="numba", dtype="float64"),
        rtol=1e-10,
    )


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: Conv2D(0, 3), "`filters` must be an int >= 1; got 0"),
        (lambda: Conv2D(2, 3, padding=-1), "`padding` must be an int >= 0 .*; got -1"),
        (lambda: Conv2D(2, 3, activation="mish"), "`activation` must be one of"),
        (lambda: Conv2D(2, 3, data_format="NWHC"), "`data_format` must be one of"),
        (lambda: PrimaryCaps(4, 8, order="row-major"), "`order` must be one of"),
        (lambda: DenseCaps(10, 16, weight_layout="jax"), "`weight_layout` must be one of"),
        (lambda: ConvMatrixCaps(4, competition="global"), "`competition` must be one of"),
        (lambda: ClassMatrixCaps(10, inverse_temperature=-1.0), "`inverse_temperature` must be"),
        (lambda: Conv2D(2, 3, name="a.b"), "`name` must be a non-empty string without '.'"),
    ],
)
def test_bad_layer_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_kernel_larger_than_map():
    with pytest.raises(ValueError, match="a 9x9 kernel does not fit a 5x5 map"):
        models.Model([Conv2D(2, 9, name="c")], (5, 5, 1))
