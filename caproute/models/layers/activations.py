"""Elementwise activations by name, and a layer that applies one."""

from __future__ import annotations

from ..._lib.stable_math import log_sigmoid
from ..._lib.validation import check_choice
from .base import Layer


def _relu(x, xp):
    return xp.maximum(x, xp.zeros_like(x))


def _sigmoid(x, xp):
    # exp(log_sigmoid) never overflows, unlike 1 / (1 + exp(-x)) for very negative x
    return xp.exp(log_sigmoid(x, xp=xp))


def _elu(x, xp):
    return xp.where(x > 0, x, xp.expm1(xp.minimum(x, xp.zeros_like(x))))


def _softplus(x, xp):
    return xp.logaddexp(xp.zeros_like(x), x)


ACTIVATIONS = {
    None: lambda x, xp: x,
    "linear": lambda x, xp: x,
    "relu": _relu,
    "sigmoid": _sigmoid,
    "tanh": lambda x, xp: xp.tanh(x),
    "elu": _elu,
    "softplus": _softplus,
}


def check_activation(name):
    choices = [k for k in ACTIVATIONS if k is not None] + [None]
    return check_choice(name, name="activation", choices=choices)


def apply_activation(x, name, *, xp):
    return ACTIVATIONS[name](x, xp)


class Activation(Layer):
    """Layer that applies an elementwise function.

    Parameters
    ----------
    activation : {"relu", "sigmoid", "tanh", "elu", "softplus", "linear"} or None
        The function; ``"linear"`` and None leave the input as it is.
    name : str, default="activation"
        The layer's name, unique in its model.

    Examples
    --------
    >>> import numpy as np
    >>> from caproute.models import Activation, Model
    >>> net = Model([Activation("relu", name="act")], input_shape=(2, 2, 1))
    >>> net.forward(np.array([[[[-1.0], [2.0]], [[3.0], [-4.0]]]]), check_values=False)[..., 0]
    array([[[0., 2.],
            [3., 0.]]])
    """

    def __init__(self, activation, *, name="activation"):
        super().__init__(name=name)
        self.activation = check_activation(activation)

    def get_config(self):
        return {"activation": self.activation, "name": self.name}

    def output_shape(self, input_shape):
        return input_shape

    def forward(self, x, params, *, xp, backend):
        return apply_activation(x, self.activation, xp=xp)
