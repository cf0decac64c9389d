"""2-D convolution by im2col and one matrix product, NHWC or NCHW."""

from __future__ import annotations

from ..._lib.patches import pad_hw, patches
from ..._lib.validation import check_bool, check_choice, check_int
from .activations import apply_activation, check_activation
from .base import Layer, conv_output_size

DATA_FORMATS = ("NHWC", "NCHW")


# Below this many input channels one product over all kernel taps (im2col) is faster; from it
# on, one product per kernel row, accumulated into the output, avoids the kh*kw-times larger
# im2col copy (only kw taps are gathered at a time).
_TAPWISE_MIN_CHANNELS = 16


def conv2d(x, weight, bias, *, stride, padding, xp):
    """NHWC convolution: x (batch, H, W, c_in), weight (kh, kw, c_in, c_out), bias (c_out,) or
    None -> (batch, Ho, Wo, c_out). Cross-correlation, as in every deep-learning library."""
    kh, kw, c_in, c_out = (int(s) for s in weight.shape)
    x = pad_hw(x, padding, xp=xp)
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
    return xp.reshape(out, (b, ho, wo, c_out))


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
    padding : int, default=0
        Zeros added on every side of the image.
    activation : str or None, default=None
        ``"relu"``, ``"sigmoid"``, ``"tanh"``, ``"elu"``, ``"softplus"``, ``"linear"``/None.
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
        self.padding = check_int(padding, name="padding", min_value=0, noun="int")
        self.activation = check_activation(activation)
        self.use_bias = check_bool(use_bias, name="use_bias")
        self.data_format = check_choice(data_format, name="data_format", choices=DATA_FORMATS)

    def get_config(self):
        return {
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "data_format": self.data_format,
            "name": self.name,
        }

    output_layout = "(batch, H, W, C) or (batch, C, H, W)"

    def check_input_shape(self, input_shape):
        h, w, _ = spatial_shape(input_shape, self.data_format)
        k = self.kernel_size
        if h + 2 * self.padding < k or w + 2 * self.padding < k:
            raise ValueError(
                f"layer {self.name!r}: a {k}x{k} kernel does not fit a {h}x{w} map "
                f"with padding {self.padding}."
            )

    def parameter_shapes(self, input_shape):
        _, _, c = spatial_shape(input_shape, self.data_format)
        k = self.kernel_size
        shapes = {"weight": (k, k, c, self.filters)}
        if self.use_bias:
            shapes["bias"] = (self.filters,)
        return shapes

    def output_shape(self, input_shape):
        h, w, _ = spatial_shape(input_shape, self.data_format)
        ho = conv_output_size(h, self.kernel_size, self.stride, self.padding)
        wo = conv_output_size(w, self.kernel_size, self.stride, self.padding)
        return in_layout(ho, wo, self.filters, self.data_format)

    def forward(self, x, params, *, xp, backend):
        x = to_nhwc(x, self.data_format, xp=xp)
        out = conv2d(
            x, params["weight"], params.get("bias"), stride=self.stride, padding=self.padding, xp=xp
        )
        out = apply_activation(out, self.activation, xp=xp)
        return from_nhwc(out, self.data_format, xp=xp)
