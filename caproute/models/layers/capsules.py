"""Vector capsules: PrimaryCaps (a convolution cut into squashed capsules) and DenseCaps
(votes from a weight tensor, then dynamic routing)."""

from __future__ import annotations

import numpy as np

from ..._backend import select_impl
from ..._lib import stable_math as _math
from ..._lib.validation import check_bool, check_choice, check_int, check_scalar
from ...routing._options import check_n_iter
from ...routing.dense import dense_dynamic_routing
from .base import Layer
from .conv import (
    DATA_FORMATS,
    check_padding,
    pad_amounts,
    padded_output_size,
    padding_config,
    padding_text,
    run_conv2d,
    spatial_shape,
    to_nhwc,
)

ORDERS = ("type-major", "position-major")

#: Where each documented implementation keeps the DenseCaps transform, and how votes use it.
WEIGHT_LAYOUTS = {
    "caproute": "(n_in, n_out, out_dim, in_dim); u_hat[i, j] = W[i, j] @ u[i]",
    "keras": "(n_out, n_in, out_dim, in_dim); u_hat[i, j] = W[j, i] @ u[i]",
    "torch": "(n_out, n_in, in_dim, out_dim); u_hat[i, j] = u[i] @ W[j, i]",
    "tf": "(n_in, in_dim, n_out * out_dim); u_hat[i] = u[i] @ W[i], split into n_out parents",
}


_F32 = np.finfo(np.float32)


def check_squash_eps(value, *, name="squash_eps"):
    """``squash_eps`` as a float: > 0 and a normal float32 number (models compute in float32
    by default; an eps that rounds to 0 there would make squash divide 0 by 0 at predict time,
    one beyond its range would overflow)."""
    value = check_scalar(value, name=name, low=0, low_inclusive=False)
    low, high = float(_F32.smallest_normal), float(_F32.max)
    if not low <= value <= high:
        raise ValueError(
            f"`{name}` must lie in [{low:.3g}, {high:.3g}], the positive normal float32 numbers "
            f"(models compute in float32 by default, where a smaller value rounds to 0 and "
            f"squash divides 0 by 0); got {value!r}. The usual value is 1e-8 (or 1e-7 in "
            "Keras implementations that use K.epsilon())."
        )
    return value


def primary_squash(conv, *, n_types, dim, order, eps, xp):
    """Primary capsules from a convolution's output: conv (batch, H, W, n_types * dim) ->
    (batch, H * W * n_types, dim), channel ``t * dim + d`` being component ``d`` of type ``t``,
    flattened in ``order`` and squashed. The reference of the ``primary_squash`` operation."""
    b, ho, wo, _ = (int(s) for s in conv.shape)
    caps = xp.reshape(conv, (b, ho * wo, n_types, dim))
    if order == "type-major":
        caps = xp.permute_dims(caps, (0, 2, 1, 3))
    caps = xp.reshape(caps, (b, ho * wo * n_types, dim))
    return _math.squash(caps, axis=-1, eps=eps, xp=xp)


class PrimaryCaps(Layer):
    """Convolution whose channels are cut into capsules, flattened and squashed.

    Parameters: ``weight`` (kernel_size, kernel_size, in_channels, n_types * dim) and ``bias``
    (n_types * dim,). Channel ``t * dim + d`` is component ``d`` of capsule type ``t`` (the
    convention of the official TF code and of the Keras implementations).

    Output: array of shape (batch, n_caps, dim) with ``n_caps = H' * W' * n_types``.

    Parameters
    ----------
    n_types : int
        Capsule types (32 in the paper).
    dim : int
        Capsule dimension (8 in the paper).
    kernel_size : int, default=9
        Square kernel side.
    stride : int, default=2
        Step between kernel positions, along both axes.
    padding : int, "valid", "same" or pair, default=0
        Zeros around the input map, as in :class:`Conv2D`.
    order : {"type-major", "position-major"}, default="type-major"
        Flattening of the (H, W, n_types) grid into ``n_caps``: type-major puts all positions
        of type 0 first (official TF code, PyTorch ports); position-major puts all types of
        position 0 first (Keras implementations reshaping the NHWC map).
    squash_eps : float, default=1e-8
        ``eps`` inside the square root of squash; must be > 0.
    data_format : {"NHWC", "NCHW"}, default="NHWC"
        Layout of the input map.
    name : str, default="primary_caps"
        The layer's name, unique in its model.

    Examples
    --------
    >>> import numpy as np
    >>> from caproute.models import Model, PrimaryCaps
    >>> net = Model([PrimaryCaps(4, 8, kernel_size=3, name="caps")], input_shape=(9, 9, 2))
    >>> net = net.initialize(random_state=0)
    >>> net.forward(np.ones((2, 9, 9, 2), dtype=np.float32)).shape  # 4 x 4 positions, 4 types
    (2, 64, 8)
    """

    output_layout = "(batch, n_caps, dim)"

    def __init__(
        self,
        n_types,
        dim,
        *,
        kernel_size=9,
        stride=2,
        padding=0,
        order="type-major",
        squash_eps=1e-8,
        data_format="NHWC",
        name="primary_caps",
    ):
        super().__init__(name=name)
        self.n_types = check_int(n_types, name="n_types", min_value=1, noun="int")
        self.dim = check_int(dim, name="dim", min_value=1, noun="int")
        self.kernel_size = check_int(kernel_size, name="kernel_size", min_value=1, noun="int")
        self.stride = check_int(stride, name="stride", min_value=1, noun="int")
        self.padding = check_padding(padding)
        self.order = check_choice(order, name="order", choices=ORDERS)
        self.squash_eps = check_squash_eps(squash_eps)
        self.data_format = check_choice(data_format, name="data_format", choices=DATA_FORMATS)

    def get_config(self):
        return {
            "n_types": self.n_types,
            "dim": self.dim,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": padding_config(self.padding),
            "order": self.order,
            "squash_eps": self.squash_eps,
            "data_format": self.data_format,
            "name": self.name,
        }

    def _grid(self, input_shape):
        h, w, c = spatial_shape(input_shape, self.data_format)
        size = padded_output_size(h, w, self.padding, self.kernel_size, self.stride)
        if size is None:
            padded = f" with {padding_text(self.padding)}" if self.padding else ""
            raise ValueError(
                f"layer {self.name!r}: a {self.kernel_size}x{self.kernel_size} "
                f"kernel does not fit a {h}x{w} map{padded}."
            )
        return (*size, c)

    check_input_shape = _grid

    def parameter_shapes(self, input_shape):
        _, _, c = self._grid(input_shape)
        k = self.kernel_size
        return {"weight": (k, k, c, self.n_types * self.dim), "bias": (self.n_types * self.dim,)}

    def output_shape(self, input_shape):
        ho, wo, _ = self._grid(input_shape)
        return (ho * wo * self.n_types, self.dim)

    def forward(self, x, params, *, xp, backend):
        x = to_nhwc(x, self.data_format, xp=xp)
        h, w = (int(s) for s in x.shape[1:3])
        pads = pad_amounts(self.padding, h, w, self.kernel_size, self.stride)
        out = run_conv2d(
            x,
            params["weight"],
            params["bias"],
            stride=self.stride,
            padding=pads,
            xp=xp,
            backend=backend,
        )
        plan = select_impl("primary_squash", xp, backend)
        return plan.func(
            out,
            n_types=self.n_types,
            dim=self.dim,
            order=self.order,
            eps=self.squash_eps,
            xp=plan.xp,
        )


class DenseCaps(Layer):
    """Fully connected capsules with dynamic routing (DigitCaps in Sabour et al.).

    Votes ``u_hat[b, i, j] = W[i, j] @ u[b, i]`` for every child ``i`` and parent ``j``, then
    :func:`caproute.dynamic_routing` (softmax over parents, logits reset for every sample).

    Parameters: ``weight`` in the chosen ``weight_layout`` and, with ``use_bias``, ``bias`` of
    shape (n_out, out_dim), added to every parent's weighted sum in every iteration.

    Output: array of shape (batch, n_out, out_dim); class scores are the lengths.

    Parameters
    ----------
    n_out : int
        Parent capsules (classes).
    out_dim : int
        Parent dimension (16 in the paper).
    n_iter : int, default=3
        Routing iterations.
    weight_layout : {"caproute", "keras", "torch", "tf"}, default="caproute"
        How ``weight`` is laid out (see ``WEIGHT_LAYOUTS``):
        "caproute" (n_in, n_out, out_dim, in_dim); "keras" (n_out, n_in, out_dim, in_dim);
        "torch" (n_out, n_in, in_dim, out_dim), as gram-ai's ``route_weights``;
        "tf" (n_in, in_dim, n_out * out_dim), as the official TF code.
    use_bias : bool, default=False
        Whether the layer has a ``bias`` parameter.
    leaky : bool, default=False
        Leaky routing (an extra orphan parent with logit 0, dropped after the softmax).
    squash_eps : float, default=1e-8
        ``eps`` inside the square root of squash; must be > 0.
    name : str, default="class_caps"
        The layer's name, unique in its model.

    Examples
    --------
    >>> import numpy as np
    >>> from caproute.models import DenseCaps, Model
    >>> net = Model([DenseCaps(3, 4, name="caps")], input_shape=(10, 8))
    >>> net = net.initialize(random_state=0)
    >>> net.forward(np.ones((2, 10, 8), dtype=np.float32)).shape
    (2, 3, 4)
    """

    output_layout = "(batch, n_out, out_dim)"

    def __init__(
        self,
        n_out,
        out_dim,
        *,
        n_iter=3,
        weight_layout="caproute",
        use_bias=False,
        leaky=False,
        squash_eps=1e-8,
        name="class_caps",
    ):
        super().__init__(name=name)
        self.n_out = check_int(n_out, name="n_out", min_value=1, noun="int")
        self.out_dim = check_int(out_dim, name="out_dim", min_value=1, noun="int")
        self.n_iter = check_n_iter(n_iter)
        self.weight_layout = check_choice(
            weight_layout, name="weight_layout", choices=WEIGHT_LAYOUTS
        )
        self.use_bias = check_bool(use_bias, name="use_bias")
        self.leaky = check_bool(leaky, name="leaky")
        self.squash_eps = check_squash_eps(squash_eps)

    def get_config(self):
        return {
            "n_out": self.n_out,
            "out_dim": self.out_dim,
            "n_iter": self.n_iter,
            "weight_layout": self.weight_layout,
            "use_bias": self.use_bias,
            "leaky": self.leaky,
            "squash_eps": self.squash_eps,
            "name": self.name,
        }

    def check_input_shape(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(
                f"layer {self.name!r} takes capsules (n_in, in_dim) per sample; "
                f"got per-sample shape {tuple(input_shape)}."
            )

    def parameter_shapes(self, input_shape):
        self.check_input_shape(input_shape)
        n_in, d = input_shape
        n, o = self.n_out, self.out_dim
        weight = {
            "caproute": (n_in, n, o, d),
            "keras": (n, n_in, o, d),
            "torch": (n, n_in, d, o),
            "tf": (n_in, d, n * o),
        }[self.weight_layout]
        shapes = {"weight": weight}
        if self.use_bias:
            shapes["bias"] = (n, o)
        return shapes

    def output_shape(self, input_shape):
        return (self.n_out, self.out_dim)

    def native_weight(self, W, *, xp):
        """The weight in caproute's (n_in, n_out, out_dim, in_dim) layout.

        Parameters
        ----------
        W : array
            The ``weight`` parameter, in the layer's ``weight_layout``.
        xp : namespace
            The Array API namespace of ``W``.

        Returns
        -------
        array of shape (n_in, n_out, out_dim, in_dim)
            ``W`` with its axes permuted (and split, for the "tf" layout); no copy where the
            namespace makes views.
        """
        if self.weight_layout == "keras":
            return xp.permute_dims(W, (1, 0, 2, 3))
        if self.weight_layout == "torch":
            return xp.permute_dims(W, (1, 0, 3, 2))
        if self.weight_layout == "tf":
            n_in, d, _ = (int(s) for s in W.shape)
            W = xp.reshape(W, (n_in, d, self.n_out, self.out_dim))
            return xp.permute_dims(W, (0, 2, 3, 1))
        return W

    def forward(self, u, params, *, xp, backend):
        """Votes from the child capsules, then dynamic routing to the parents.

        Parameters
        ----------
        u : array of shape (batch, n_in, in_dim)
            The child capsules.
        params : dict of str to array
            ``weight`` and, with ``use_bias``, ``bias``, of namespace ``xp`` and ``u``'s dtype.
        xp : namespace
            The Array API namespace of ``u`` and ``params``.
        backend : {"auto", "numpy", "numba", "cupy"}
            Backend of :func:`caproute.dense_dynamic_routing`.

        Returns
        -------
        array of shape (batch, n_out, out_dim)
            The parent capsules.
        """
        W = self.native_weight(params["weight"], xp=xp)
        return dense_dynamic_routing(
            u,
            W,
            n_iter=self.n_iter,
            bias=params.get("bias"),
            leaky=self.leaky,
            eps=self.squash_eps,
            backend=backend,
        )

    @staticmethod
    def class_scores(v, *, xp):
        """Class scores from the layer's output: the lengths of the parent capsules.

        Parameters
        ----------
        v : array of shape (batch, n_out, out_dim)
            The output of :meth:`forward`.
        xp : namespace
            The Array API namespace of ``v``.

        Returns
        -------
        array of shape (batch, n_out)
            The Euclidean length of every parent capsule, in [0, 1).
        """
        return xp.sqrt(xp.sum(v * v, axis=-1))
