"""What every layer shares: named parameters with fixed shapes, a JSON-able config, a forward."""

from __future__ import annotations

import math


class Layer:
    """Base class of caproute's inference layers.

    A layer knows its hyper-parameters (:meth:`get_config`), the shapes of its parameters for a
    given input shape (:meth:`parameter_shapes`), its output shape (:meth:`output_shape`) and
    its math (:meth:`forward`, pure Array API). Parameters themselves live in the model, keyed
    ``"<layer name>.<parameter>"``, so that a layer is cheap to describe and to rebuild.

    Parameters
    ----------
    name : str
        The layer's name, unique in its model; it prefixes the layer's weight names, so it
        cannot contain ``"."``.

    Examples
    --------
    A layer without parameters needs :meth:`get_config`, :meth:`output_shape` and
    :meth:`forward`:

    >>> import numpy as np
    >>> from caproute.models import Layer, Model
    >>> class Double(Layer):
    ...     def get_config(self):
    ...         return {"name": self.name}
    ...     def output_shape(self, input_shape):
    ...         return input_shape
    ...     def forward(self, x, params, *, xp, backend):
    ...         return 2 * x
    >>> Model([Double(name="double")], input_shape=(3,)).forward(np.ones((1, 3)))
    array([[2., 2., 2.]])
    """

    #: how the layer's output is laid out, for summaries and error messages
    output_layout = ""

    def __init__(self, *, name):
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"`name` must be a non-empty string without '.'; got {name!r}.")
        self.name = name

    # -- description ---------------------------------------------------------------------------
    def get_config(self):
        """The constructor's keyword arguments, JSON-serialisable.

        Returns
        -------
        dict
            ``type(layer)(**config)`` rebuilds the layer (positional arguments by name).
        """
        raise NotImplementedError

    def parameter_shapes(self, input_shape):
        """Shapes of the layer's parameters for a given input shape.

        Parameters
        ----------
        input_shape : tuple
            Per-sample input shape: a tuple of int, or a pair of tuples (pose shape,
            activation shape) for maps of matrix capsules.

        Returns
        -------
        dict of str to tuple of int
            ``{parameter: shape}``, empty for a layer without parameters.
        """
        return {}

    def output_shape(self, input_shape):
        """Per-sample output shape for a given per-sample input shape.

        Parameters
        ----------
        input_shape : tuple
            Per-sample input shape: a tuple of int, or a pair of tuples (pose shape,
            activation shape) for maps of matrix capsules.

        Returns
        -------
        tuple
            A tuple of int, or a pair of tuples for (pose, activation).
        """
        raise NotImplementedError

    def check_input_shape(self, input_shape):
        """Raise ValueError if the layer cannot take a per-sample input of this shape.

        The base class accepts every shape.

        Parameters
        ----------
        input_shape : tuple
            Per-sample input shape: a tuple of int, or a pair of tuples (pose shape,
            activation shape) for maps of matrix capsules.

        Raises
        ------
        ValueError
            If the shape has the wrong number of axes or is too small for the kernel.
        """

    # -- math ----------------------------------------------------------------------------------
    def forward(self, x, params, *, xp, backend):
        """Apply the layer to a batch.

        Parameters
        ----------
        x : array or tuple of arrays
            The batch, ``(batch, *input_shape)``, or the pair (pose, activation) of a map of
            matrix capsules.
        params : dict of str to array
            The layer's parameters by name (without the layer prefix), arrays of namespace
            ``xp`` in the batch's dtype.
        xp : namespace
            The Array API namespace of ``x`` and ``params``.
        backend : {"auto", "numpy", "numba", "cupy"}
            The backend the model runs on, passed to the routing functions.

        Returns
        -------
        array or tuple of arrays
            The output, ``(batch, *output_shape)``, or the pair (pose, activation).
        """
        raise NotImplementedError

    def initializer_scale(self, name, shape):
        """Standard deviation of random initial values (fan-in scaled); biases start at 0.

        Parameters
        ----------
        name : str
            The parameter's name, e.g. ``"weight"``.
        shape : tuple of int
            The parameter's shape.

        Returns
        -------
        float
            ``1 / sqrt(fan_in)`` with ``fan_in`` the product of all axes but the last; 0 for
            one-dimensional parameters (biases).
        """
        if len(shape) <= 1:
            return 0.0
        return 1.0 / math.sqrt(max(1, math.prod(shape[:-1])))

    def initial_value(self, name, shape):
        """Mean of the random initial values (:meth:`initializer_scale` is their spread).

        Parameters
        ----------
        name : str
            The parameter's name, e.g. ``"weight"``.
        shape : tuple of int
            The parameter's shape.

        Returns
        -------
        float
            0 in the base class; 1 for BatchNorm's ``gamma`` and ``moving_variance``.
        """
        return 0.0

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def conv_output_size(size, kernel, stride, padding):
    """Output length of a convolution along one axis (``padding`` on both sides)."""
    return (size + 2 * padding - kernel) // stride + 1
