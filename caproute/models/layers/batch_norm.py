"""Batch normalisation in inference mode, and its folding into the convolution before it."""

from __future__ import annotations

import numpy as np

from ..._lib.validation import check_bool, check_choice, check_scalar, shape_str
from .base import Layer
from .conv import DATA_FORMATS, spatial_shape


def check_epsilon(epsilon, *, name="epsilon"):
    """BatchNorm's ``epsilon``: a finite number > 0 (it keeps sqrt(var + eps) off 0)."""
    return check_scalar(epsilon, name=name, low=0, low_inclusive=False)


class BatchNorm(Layer):
    """Batch normalisation with stored statistics (inference mode).

    ``y = (x - moving_mean) / sqrt(moving_variance + epsilon) * gamma + beta`` along the
    channel axis, as Keras's ``BatchNormalization`` and PyTorch's ``BatchNorm2d`` compute it
    in inference mode. Parameters, each of shape (channels,): ``gamma`` (with ``scale``),
    ``beta`` (with ``center``), ``moving_mean`` and ``moving_variance`` (PyTorch's
    ``weight``, ``bias``, ``running_mean`` and ``running_var``).

    A BatchNorm that directly follows a convolution (no activation between) is best folded
    into it: :func:`fold_batchnorm` gives the convolution's new weight and bias.

    Parameters
    ----------
    epsilon : float
        Added to the variance, > 0; required because the frameworks differ (Keras's default
        is 1e-3, PyTorch's ``eps`` 1e-5): pass the value of the trained model.
    center : bool, default=True
        Whether there is a ``beta`` (Keras's ``center``; False: no offset).
    scale : bool, default=True
        Whether there is a ``gamma`` (Keras's ``scale``; False: no factor).
    data_format : {"NHWC", "NCHW"}, default="NHWC"
        For a per-sample input of three axes, where its channels are: last (H, W, C) or first
        (C, H, W). Inputs of any other number of axes are normalised along their last axis.
    name : str, default="batch_norm"
        The layer's name, unique in its model.

    Raises
    ------
    ValueError
        If ``epsilon`` is not a finite number > 0, or ``data_format`` is not one of the two.
    TypeError
        If ``center`` or ``scale`` is not a bool.

    Examples
    --------
    >>> import numpy as np
    >>> from caproute.models import BatchNorm, Model
    >>> net = Model([BatchNorm(epsilon=1e-3, name="bn")], input_shape=(2, 2, 3))
    >>> net = net.set_weights({
    ...     "bn.gamma": np.full(3, 2.0), "bn.beta": np.zeros(3),
    ...     "bn.moving_mean": np.full(3, 0.5), "bn.moving_variance": np.full(3, 4.0)})
    >>> out = net.forward(np.ones((1, 2, 2, 3)))  # (1 - 0.5) / sqrt(4 + 1e-3) * 2
    >>> np.round(out[0, 0, 0], 4)
    array([0.4999, 0.4999, 0.4999])
    """

    def __init__(self, *, epsilon, center=True, scale=True, data_format="NHWC", name="batch_norm"):
        super().__init__(name=name)
        self.epsilon = check_epsilon(epsilon)
        self.center = check_bool(center, name="center")
        self.scale = check_bool(scale, name="scale")
        self.data_format = check_choice(data_format, name="data_format", choices=DATA_FORMATS)

    output_layout = "as its input"

    def get_config(self):
        return {
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "data_format": self.data_format,
            "name": self.name,
        }

    def _channels(self, input_shape):
        if len(input_shape) == 0 or isinstance(input_shape[0], tuple):
            raise ValueError(
                f"layer {self.name!r} takes an array per sample (a map or capsules); got "
                f"per-sample shape {input_shape!r}."
            )
        if len(input_shape) == 3:
            return spatial_shape(input_shape, self.data_format)[2]
        return int(input_shape[-1])

    def check_input_shape(self, input_shape):
        self._channels(input_shape)

    def parameter_shapes(self, input_shape):
        c = (self._channels(input_shape),)
        shapes = {}
        if self.scale:
            shapes["gamma"] = c
        if self.center:
            shapes["beta"] = c
        shapes["moving_mean"] = c
        shapes["moving_variance"] = c
        return shapes

    def initializer_scale(self, name, shape):
        return 0.0  # gamma and the variance start at 1 (see initial_value), the rest at 0

    def initial_value(self, name, shape):
        return 1.0 if name in ("gamma", "moving_variance") else 0.0

    def output_shape(self, input_shape):
        self._channels(input_shape)
        return input_shape

    def forward(self, x, params, *, xp, backend):
        channels_first = self.data_format == "NCHW" and x.ndim == 4
        if channels_first:
            x = xp.permute_dims(x, (0, 2, 3, 1))
        factor = 1.0 / xp.sqrt(params["moving_variance"] + self.epsilon)
        if self.scale:
            factor = factor * params["gamma"]
        out = (x - params["moving_mean"]) * factor
        if self.center:
            out = out + params["beta"]
        return xp.permute_dims(out, (0, 3, 1, 2)) if channels_first else out


def fold_batchnorm(weight, bias, gamma, beta, moving_mean, moving_variance, epsilon):
    """A convolution's weight and bias with the batch normalisation after it folded in.

    ``conv(x, W', b') == BN(conv(x, W, b))`` for every ``x``, with
    ``W'[..., o] = W[..., o] * s[o]`` and ``b' = (b - moving_mean) * s + beta``, where
    ``s = gamma / sqrt(moving_variance + epsilon)``. Valid when the BatchNorm directly
    follows the convolution; an activation after the BatchNorm goes on the folded
    convolution (:class:`Conv2D`'s ``activation``).

    Parameters
    ----------
    weight : array of shape (kh, kw, in_channels, channels)
        The convolution's weight in :class:`Conv2D`'s HWIO layout (any array whose last axis
        is the output channels works: a dense layer's (in, out) too).
    bias : array of shape (channels,) or None
        The convolution's bias; None for a convolution without one.
    gamma : array of shape (channels,) or None
        The BatchNorm's factor (PyTorch's ``weight``); None when it has none (Keras
        ``scale=False``): ones.
    beta : array of shape (channels,) or None
        The BatchNorm's offset (PyTorch's ``bias``); None when it has none (Keras
        ``center=False``): zeros.
    moving_mean, moving_variance : array of shape (channels,)
        The stored statistics (PyTorch's ``running_mean`` and ``running_var``); the variance
        must be >= 0.
    epsilon : float
        The BatchNorm's epsilon, > 0 (Keras's default 1e-3, PyTorch's ``eps`` 1e-5).

    Returns
    -------
    weight : numpy.ndarray of the shape of ``weight``
        The folded weight, for a :class:`Conv2D` with ``use_bias=True``.
    bias : numpy.ndarray of shape (channels,)
        The folded bias. Both are computed in float64 and returned in the dtype NumPy's
        promotion gives the inputs (float32 inputs give float32); the folded convolution has
        a bias even where the original had none.

    Raises
    ------
    ValueError
        If a shape does not match the weight's output channels, a value is NaN or inf, a
        variance is negative, or ``epsilon`` is not > 0.

    Examples
    --------
    >>> import numpy as np
    >>> from caproute.models import fold_batchnorm
    >>> w, b = np.ones((1, 1, 1, 2)), np.zeros(2)
    >>> w2, b2 = fold_batchnorm(w, b, gamma=np.array([1.0, 2.0]), beta=np.array([0.5, 0.0]),
    ...                         moving_mean=np.array([0.0, 1.0]),
    ...                         moving_variance=np.array([4.0, 1.0]), epsilon=1e-5)
    >>> np.round(w2[0, 0, 0], 4), np.round(b2, 4)  # 1 / sqrt(4), 2 / sqrt(1); 0.5, -2
    (array([0.5, 2. ]), array([ 0.5, -2. ]))
    """
    epsilon = check_epsilon(epsilon)
    w = _host(weight, "weight")
    if w.ndim < 1:
        raise ValueError("`weight` must have its output channels on its last axis; got a scalar.")
    c = int(w.shape[-1])
    vectors = {}
    for name, value in (
        ("bias", bias),
        ("gamma", gamma),
        ("beta", beta),
        ("moving_mean", moving_mean),
        ("moving_variance", moving_variance),
    ):
        if value is None:
            if name in ("moving_mean", "moving_variance"):
                raise ValueError(f"`{name}` is required; got None.")
            continue
        arr = _host(value, name)
        if arr.shape != (c,):
            raise ValueError(
                f"`{name}` must have shape ({c},), one value per output channel of `weight` "
                f"(shape {shape_str(w.shape)}); got shape {shape_str(arr.shape)}."
            )
        vectors[name] = arr
    if np.any(vectors["moving_variance"] < 0):
        raise ValueError("`moving_variance` must be >= 0; it holds negative values.")
    dtype = np.result_type(w, *vectors.values())
    if dtype.kind != "f":
        dtype = np.dtype(np.float64)
    v = {k: a.astype(np.float64) for k, a in vectors.items()}
    s = 1.0 / np.sqrt(v["moving_variance"] + epsilon)
    if "gamma" in v:
        s = s * v["gamma"]
    b = v.get("bias", np.zeros(c))
    new_bias = (b - v["moving_mean"]) * s + v.get("beta", np.zeros(c))
    new_weight = w.astype(np.float64) * s
    return new_weight.astype(dtype), new_bias.astype(dtype)


def _host(value, name):
    from ..._backend import is_array, to_numpy

    arr = np.asarray(to_numpy(value) if is_array(value) else value)
    if arr.dtype.kind not in "fiu" or arr.dtype.kind == "b":
        raise ValueError(f"`{name}` must hold real numbers; got dtype {arr.dtype}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` holds NaN or inf.")
    return arr
