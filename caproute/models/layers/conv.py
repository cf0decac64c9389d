"""2-D convolution by im2col and one matrix product, NHWC or NCHW."""

from __future__ import annotations

import numbers

from ..._backend import device as _device
from ..._backend import select_impl
from ..._lib.patches import patches
from ..._lib.validation import check_bool, check_choice, check_int, is_sequence
from .activations import activation_config, apply_activation, check_activation
from .base import Layer

DATA_FORMATS = ("NHWC", "NCHW")
PADDING_HELP = (
    'an int >= 0 (zeros on every side), "valid" (none), "same" (TensorFlow/Keras: the output '
    "has ceil(size / stride) positions, the odd zero after), a pair (rows, columns) of ints, "
    "or a pair of pairs ((top, bottom), (left, right))"
)


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0


def check_padding(padding, *, name="padding"):
    """A padding in its normal form: an int, ``"same"``, or ((top, bottom), (left, right))."""
    if isinstance(padding, str):
        if padding == "valid":
            return 0
        if padding == "same":
            return "same"
    elif _is_int(padding):
        return int(padding)
    elif is_sequence(padding) and len(padding) == 2:
        if all(_is_int(p) for p in padding):
            return ((int(padding[0]),) * 2, (int(padding[1]),) * 2)
        if all(is_sequence(p) and len(p) == 2 and all(_is_int(q) for q in p) for p in padding):
            return tuple((int(p[0]), int(p[1])) for p in padding)
    raise ValueError(f"`{name}` must be {PADDING_HELP}; got {padding!r}.")


def padding_config(padding):
    """The normal form as JSON-able data (pairs as lists)."""
    return [list(p) for p in padding] if isinstance(padding, tuple) else padding


def pad_amounts(padding, h, w, kernel, stride):
    """((top, bottom), (left, right)) zeros that a normal-form ``padding`` adds to an h x w
    map, for a square ``kernel`` and ``stride``."""
    if padding == "same":
        # TensorFlow's rule (also PyTorch's padding="same", which takes stride 1 only)
        out = []
        for n in (h, w):
            total = max((-(-n // stride) - 1) * stride + kernel - n, 0)
            out.append((total // 2, total - total // 2))
        return tuple(out)
    if isinstance(padding, tuple):
        return padding
    return ((padding, padding), (padding, padding))


def padded_output_size(h, w, padding, kernel, stride):
    """(Ho, Wo) of a convolution, or None where the kernel does not fit the padded map."""
    (t, b), (left, right) = pad_amounts(padding, h, w, kernel, stride)
    hp, wp = h + t + b, w + left + right
    if hp < kernel or wp < kernel:
        return None
    return (hp - kernel) // stride + 1, (wp - kernel) // stride + 1


def padding_text(padding):
    if padding == "same":
        return 'padding "same"'
    return f"padding {padding}"


def _pad(x, pads, *, xp):
    """Zeros around axes 1 and 2 of (batch, H, W, ...): pads = ((top, bottom), (left, right))."""
    (t, b), (left, right) = pads
    if not (t or b or left or right):
        return x
    n, h, w = (int(s) for s in x.shape[:3])
    rest = tuple(int(s) for s in x.shape[3:])
    dev = _device(x)
    parts = [xp.zeros((n, t, w) + rest, dtype=x.dtype, device=dev)] if t else []
    parts.append(x)
    if b:
        parts.append(xp.zeros((n, b, w) + rest, dtype=x.dtype, device=dev))
    x = xp.concat(parts, axis=1) if len(parts) > 1 else x
    h += t + b
    parts = [xp.zeros((n, h, left) + rest, dtype=x.dtype, device=dev)] if left else []
    parts.append(x)
    if right:
        parts.append(xp.zeros((n, h, right) + rest, dtype=x.dtype, device=dev))
    return xp.concat(parts, axis=2) if len(parts) > 1 else x


# Below this many input channels one product over all kernel taps (im2col) is faster; from it
# on, one product per kernel row, accumulated into the output, avoids the kh*kw-times larger
# im2col copy (only kw taps are gathered at a time).
_TAPWISE_MIN_CHANNELS = 16


def conv2d(x, weight, bias, *, stride, padding, relu=False, xp):
    """NHWC convolution: x (batch, H, W, c_in), weight (kh, kw, c_in, c_out), bias (c_out,) or
    None -> (batch, Ho, Wo, c_out). Cross-correlation, as in every deep-learning library.
    ``padding``: an int, or ((top, bottom), (left, right)); ``relu``: max(., 0) after the bias.
    The reference of the ``conv2d`` operation (pure Array API)."""
    kh, kw, c_in, c_out = (int(s) for s in weight.shape)
    if not isinstance(padding, tuple):
        padding = ((padding, padding), (padding, padding))
    x = _pad(x, padding, xp=xp)
    b, h, w = (int(s) for s in x.shape[:3])
    ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
    if c_in < _TAPWISE_MIN_CHANNELS:
        cols = patches(x, (kh, kw), stride, xp=xp)
        cols = xp.reshape(cols, (b * ho * wo, kh * kw * c_in))
        out = xp.matmul(cols, xp.reshape(weight, (kh * kw * c_in, c_out)))
    else:
        out = None
        for di in range(kh):
            row = patches(x[:, di : di + stride * (ho - 1) + 1, ...], (1, kw), stride, xp=xp)
            term = xp.matmul(
                xp.reshape(row, (b * ho * wo, kw * c_in)),
                xp.reshape(weight[di, ...], (kw * c_in, c_out)),
            )
            out = term if out is None else out + term
    if bias is not None:
        out = out + bias
    if relu:
        out = xp.maximum(out, xp.zeros_like(out))
    return xp.reshape(out, (b, ho, wo, c_out))


def run_conv2d(x, weight, bias, *, stride, padding, relu=False, xp, backend):
    """:func:`conv2d` through the capability table: NumPy input with Numba takes the
    cache-chunked BLAS kernel (``caproute.kernels.numba.conv_gemm``), other input the
    reference."""
    plan = select_impl("conv2d", xp, backend)
    return plan.func(x, weight, bias, stride=stride, padding=padding, relu=relu, xp=plan.xp)


def to_nhwc(x, data_format, *, xp):
    return xp.permute_dims(x, (0, 2, 3, 1)) if data_format == "NCHW" else x


def from_nhwc(x, data_format, *, xp):
    return xp.permute_dims(x, (0, 3, 1, 2)) if data_format == "NCHW" else x


def spatial_shape(input_shape, data_format):
    """(H, W, C) of a per-sample shape in either layout."""
    if len(input_shape) != 3:
        raise ValueError(
            "expected a per-sample input of 3 axes "
            f"({'H, W, C' if data_format == 'NHWC' else 'C, H, W'}); "
            f"got shape {tuple(input_shape)}."
        )
    if data_format == "NCHW":
        c, h, w = input_shape
        return h, w, c
    return tuple(input_shape)


def in_layout(h, w, c, data_format):
    return (c, h, w) if data_format == "NCHW" else (h, w, c)


class Conv2D(Layer):
    """2-D convolution with an optional bias and activation.

    Parameters: ``weight`` of shape (kernel_size, kernel_size, in_channels, filters) (the
    Keras/TF "HWIO" layout; PyTorch's (filters, in_channels, kh, kw) is transposed by the
    importers) and ``bias`` of shape (filters,).

    Parameters
    ----------
    filters : int
        Output channels.
    kernel_size : int
        Square kernel side.
    stride : int, default=1
        Step between kernel positions, along both axes.
    padding : int, "valid", "same" or pair, default=0
        Zeros around the image: an int >= 0 (on every side, as PyTorch's ``padding=p``),
        ``"valid"`` (none), ``"same"`` (TensorFlow/Keras's rule: ``ceil(size / stride)``
        output positions, an odd zero going after; PyTorch's ``"same"`` for stride 1), a pair
        (rows, columns) of ints, or ((top, bottom), (left, right)).
    activation : str, dict or None, default=None
        Applied after the bias: a name (``"relu"``, ``"gelu"``, ``"selu"``, ``"swish"``, ...),
        a dict with parameters (``{"name": "leaky_relu", "negative_slope": 0.3}``), or
        None/``"linear"``; see :class:`Activation`.
    use_bias : bool, default=True
        Whether the layer has a ``bias`` parameter.
    data_format : {"NHWC", "NCHW"}, default="NHWC"
        Layout of the input and output maps.
    name : str, default="conv"
        The layer's name, unique in its model.

    Examples
    --------
    >>> import numpy as np
    >>> from caproute.models import Conv2D, Model
    >>> net = Model([Conv2D(4, 3, stride=2, padding=1, activation="relu", name="c")],
    ...             input_shape=(8, 8, 1)).initialize(random_state=0)
    >>> net.forward(np.zeros((2, 8, 8, 1), dtype=np.float32)).shape
    (2, 4, 4, 4)
    """

    def __init__(
        self,
        filters,
        kernel_size,
        *,
        stride=1,
        padding=0,
        activation=None,
        use_bias=True,
        data_format="NHWC",
        name="conv",
    ):
        super().__init__(name=name)
        self.filters = check_int(filters, name="filters", min_value=1, noun="int")
        self.kernel_size = check_int(kernel_size, name="kernel_size", min_value=1, noun="int")
        self.stride = check_int(stride, name="stride", min_value=1, noun="int")
        self.padding = check_padding(padding)
        self.activation = check_activation(activation)
        self.use_bias = check_bool(use_bias, name="use_bias")
        self.data_format = check_choice(data_format, name="data_format", choices=DATA_FORMATS)

    def get_config(self):
        return {
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": padding_config(self.padding),
            "activation": activation_config(self.activation),
            "use_bias": self.use_bias,
            "data_format": self.data_format,
            "name": self.name,
        }

    output_layout = "(batch, H, W, C) or (batch, C, H, W)"

    def check_input_shape(self, input_shape):
        h, w, _ = spatial_shape(input_shape, self.data_format)
        k = self.kernel_size
        if padded_output_size(h, w, self.padding, k, self.stride) is None:
            raise ValueError(
                f"layer {self.name!r}: a {k}x{k} kernel does not fit a {h}x{w} map "
                f"with {padding_text(self.padding)}."
            )

    def parameter_shapes(self, input_shape):
        _, _, c = spatial_shape(input_shape, self.data_format)
        k = self.kernel_size
        shapes = {"weight": (k, k, c, self.filters)}
        if self.use_bias:
            shapes["bias"] = (self.filters,)
        return shapes

    def output_shape(self, input_shape):
        self.check_input_shape(input_shape)
        h, w, _ = spatial_shape(input_shape, self.data_format)
        ho, wo = padded_output_size(h, w, self.padding, self.kernel_size, self.stride)
        return in_layout(ho, wo, self.filters, self.data_format)

    def forward(self, x, params, *, xp, backend):
        x = to_nhwc(x, self.data_format, xp=xp)
        h, w = (int(s) for s in x.shape[1:3])
        pads = pad_amounts(self.padding, h, w, self.kernel_size, self.stride)
        relu = self.activation == "relu"
        out = run_conv2d(
            x,
            params["weight"],
            params.get("bias"),
            stride=self.stride,
            padding=pads,
            relu=relu,
            xp=xp,
            backend=backend,
        )
        if not relu:
            out = apply_activation(out, self.activation, xp=xp)
        return from_nhwc(out, self.data_format, xp=xp)
