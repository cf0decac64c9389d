"""What every layer shares: named parameters with fixed shapes, a JSON-able config, a forward."""

from __future__ import annotations

import math


class Layer:
    """Base class of caproute's inference layers.

    A layer knows its hyper-parameters (:meth:`get_config`), the shapes of its parameters for a
    given input shape (:meth:`parameter_shapes`), its output shape (:meth:`output_shape`) and
    its math (:meth:`forward`, pure Array API). Parameters themselves live in the model, keyed
    ``"<layer name>.<parameter>"``, so that a layer is cheap to describe and to rebuild.
    """

    #: how the layer's output is laid out, for summaries and error messages
    output_layout = ""

    def __init__(self, *, name):
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"`name` must be a non-empty string without '.'; got {name!r}.")
        self.name = name

    # -- description ---------------------------------------------------------------------------
    def get_config(self):
        """The constructor's keyword arguments, JSON-serialisable."""
        raise NotImplementedError

    def parameter_shapes(self, input_shape):
        """``{parameter: shape}`` for an input of per-sample shape ``input_shape``."""
        return {}

    def output_shape(self, input_shape):
        """Per-sample output shape (a tuple, or a tuple of tuples for (pose, activation))."""
        raise NotImplementedError

    def check_input_shape(self, input_shape):
        """Raise ValueError if the layer cannot take a per-sample input of this shape."""

    # -- math ----------------------------------------------------------------------------------
    def forward(self, x, params, *, xp, backend):
        """Apply the layer to a batch; ``params`` maps parameter names (without the layer
        prefix) to arrays of namespace ``xp`` and the batch's dtype."""
        raise NotImplementedError

    def initializer_scale(self, name, shape):
        """Standard deviation of random initial values (fan-in scaled); biases start at 0."""
        if len(shape) <= 1:
            return 0.0
        return 1.0 / math.sqrt(max(1, math.prod(shape[:-1])))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def conv_output_size(size, kernel, stride, padding):
    """Output length of a convolution along one axis (``padding`` on both sides)."""
    return (size + 2 * padding - kernel) // stride + 1
