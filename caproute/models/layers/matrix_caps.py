"""Matrix capsules with EM routing (Hinton, Sabour and Frosst 2018).

Maps of matrix capsules travel between layers as a pair ``(pose, activation)``:
pose of shape (batch, H, W, n_types, 16) -- a flattened 4x4 matrix, row-major -- and
activation of shape (batch, H, W, n_types).
"""

from __future__ import annotations

import math
import numbers

from ..._backend import adopt, device, select_impl
from ..._lib.patches import patches
from ..._lib.validation import check_bool, check_choice, check_int, check_scalar, is_sequence
from ...routing._options import (
    COMPETITION_INITS,
    DEFAULT_MIN_VAR,
    apply_last_inverse_temperature,
    broadcast_param,
    changed_em_variant,
    check_em_options,
    check_em_variant,
    check_last_inverse_temperature,
)
from ...routing._options import (
    DEFAULT_EM_EPS as DEFAULT_EPS,
)
from ...routing.em_routing import em_routing
from .activations import apply_activation
from .base import Layer, conv_output_size
from .conv import DATA_FORMATS, run_conv2d, spatial_shape, to_nhwc

COMPETITION = ("position", "all")
WEIGHT_LAYOUTS = ("caproute", "transposed")
COORDINATE_GRIDS = ("centre", "centre_signed", "index", "explicit")
DEFAULT_COORDINATE_ENTRIES = (3, 7)
POSE = 16

# Keyword arguments of the EM layers that select EM-routing variants (see caproute.em_routing),
# with their defaults; matrix_capsnet passes them on.
EM_VARIANT_ARGS = {
    "pose_momentum": None,
    "e_step_log_var_weight": 0.5,
    "e_step_norm": "softmax",
    "mass_floor": "max",
    "cost_log_var": "half_log_var",
    "renormalize_assignments": False,
    "last_inverse_temperature": "schedule",
}


def _check_map(input_shape, name):
    if (
        len(input_shape) != 2
        or len(input_shape[0]) != 4
        or input_shape[0][3] != POSE
        or tuple(input_shape[1]) != tuple(input_shape[0][:3])
    ):
        raise ValueError(
            f"layer {name!r} takes a map of matrix capsules, per sample (pose (H, W, n_types, 16), "
            f"activation (H, W, n_types)); got {input_shape!r}."
        )
    return tuple(input_shape[0][:3])


class _EMOptions:
    """Routing options shared by the two EM layers."""

    def _set_routing(self, n_iter, inverse_temperature, min_var, eps, beta_per_pose, variants):
        # the routing function's own checks, at construction: no late errors at predict time
        self.n_iter, self._schedule, self.min_var, self.eps = check_em_options(
            n_iter, inverse_temperature, min_var, eps
        )
        last = check_last_inverse_temperature(
            variants.pop("last_inverse_temperature"), inverse_temperature
        )
        self._schedule = apply_last_inverse_temperature(self._schedule, last, inverse_temperature)
        self.last_inverse_temperature = last
        if inverse_temperature is not None and not isinstance(inverse_temperature, (int, float)):
            inverse_temperature = [float(v) for v in inverse_temperature]
        self.inverse_temperature = inverse_temperature
        self.beta_per_pose = check_bool(beta_per_pose, name="beta_per_pose")
        self._variant = check_em_variant(**variants)
        for key, value in self._variant.items():
            setattr(self, key, value)

    def _set_weight_layout(self, weight_layout):
        self.weight_layout = check_choice(
            weight_layout, name="weight_layout", choices=WEIGHT_LAYOUTS
        )

    def _routing_config(self):
        return {
            "n_iter": self.n_iter,
            "inverse_temperature": self.inverse_temperature,
            "min_var": self.min_var,
            "eps": self.eps,
            "beta_per_pose": self.beta_per_pose,
            **self._variant,
            "last_inverse_temperature": self.last_inverse_temperature,
            "weight_layout": self.weight_layout,
        }

    def _beta_shapes(self, n_out):
        return {"beta_u": (n_out, POSE) if self.beta_per_pose else (n_out,), "beta_a": (n_out,)}

    def _route(self, votes, a_in, params, backend):
        return em_routing(
            votes,
            a_in,
            params["beta_u"],
            params["beta_a"],
            n_iter=self.n_iter,
            inverse_temperature=self.inverse_temperature,
            min_var=self.min_var,
            eps=self.eps,
            last_inverse_temperature=self.last_inverse_temperature,
            backend=backend,
            **self._variant,
        )

    def _route_all_positions(self, votes, a_in, params, grid, xp, backend):
        """EM routing where parents at every position compete for a child (the op
        ``em_routing_all_positions``, dispatched like every routing function)."""
        schedule = self._schedule  # validated at construction
        n_out, pose_dim = (int(s) for s in votes.shape[2:])
        beta_u = broadcast_param(
            params["beta_u"], name="beta_u", like=votes, xp=xp, shapes=[(n_out, pose_dim), (n_out,)]
        )
        beta_a = broadcast_param(
            params["beta_a"], name="beta_a", like=votes, xp=xp, shapes=[(n_out,)]
        )
        variant = changed_em_variant(self._variant)
        if self.competition_init != "all":
            variant["competition_init"] = self.competition_init
        plan = select_impl("em_routing_all_positions", xp, backend, options=tuple(variant.items()))
        votes, a_in, beta_u, beta_a = adopt(plan, votes, a_in, beta_u, beta_a)
        return plan.func(
            votes,
            a_in,
            beta_u,
            beta_a,
            grid=grid,
            kernel=self.kernel_size,
            stride=self.stride,
            inverse_temperature=schedule,
            min_var=self.min_var,
            eps=self.eps,
            xp=plan.xp,
            **variant,
        )

    def initializer_scale(self, name, shape):
        """Standard deviation of random initial values: 0 for the betas, 1/2 for the transforms.

        Parameters
        ----------
        name : str
            The parameter's name: ``"weight"``, ``"beta_u"`` or ``"beta_a"``.
        shape : tuple of int
            The parameter's shape.

        Returns
        -------
        float
            0 for the betas; ``1 / sqrt(shape[-1])`` for the 4x4 transforms.
        """
        return 0.0 if name.startswith("beta") else 1.0 / math.sqrt(shape[-1])

    @staticmethod
    def class_scores(out, *, xp):
        """Class scores from the layer's output: the parent activations.

        Parameters
        ----------
        out : tuple of arrays
            The ``(pose, activation)`` output of ``forward``.
        xp : namespace
            The Array API namespace of ``out`` (unused).

        Returns
        -------
        array
            The activations, (batch, n_classes) for :class:`ClassMatrixCaps`.
        """
        return out[1]


class PrimaryMatrixCaps(Layer):
    """Convolution to matrix capsules: 16 pose channels and one sigmoid activation per type.

    Parameters: ``pose_weight`` (kernel_size, kernel_size, in_channels, n_types * 16),
    ``pose_bias`` (n_types * 16,), ``act_weight`` (kernel_size, kernel_size, in_channels,
    n_types), ``act_bias`` (n_types,). Pose channel ``t * 16 + p`` is entry ``p`` (row-major)
    of type ``t``'s 4x4 pose.

    Output: ``(pose, activation)`` of shapes (batch, H, W, n_types, 16), (batch, H, W, n_types).

    Parameters
    ----------
    n_types : int
        Capsule types (B in the paper).
    kernel_size : int, default=1
        Square kernel side.
    stride : int, default=1
        Step between kernel positions, along both axes.
    data_format : {"NHWC", "NCHW"}, default="NHWC"
        Layout of the input map.
    name : str, default="primary_caps"
        The layer's name, unique in its model.

    Examples
    --------
    >>> import numpy as np
    >>> from caproute.models import Model, PrimaryMatrixCaps
    >>> net = Model([PrimaryMatrixCaps(2, name="caps")], input_shape=(3, 3, 4))
    >>> pose, act = net.initialize(random_state=0).forward(np.ones((1, 3, 3, 4)))
    >>> pose.shape, act.shape
    ((1, 3, 3, 2, 16), (1, 3, 3, 2))
    """

    output_layout = "(batch, H, W, n_types, 16), (batch, H, W, n_types)"

    def __init__(
        self, n_types, *, kernel_size=1, stride=1, data_format="NHWC", name="primary_caps"
    ):
        super().__init__(name=name)
        self.n_types = check_int(n_types, name="n_types", min_value=1, noun="int")
        self.kernel_size = check_int(kernel_size, name="kernel_size", min_value=1, noun="int")
        self.stride = check_int(stride, name="stride", min_value=1, noun="int")
        self.data_format = check_choice(data_format, name="data_format", choices=DATA_FORMATS)

    def get_config(self):
        return {
            "n_types": self.n_types,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "data_format": self.data_format,
            "name": self.name,
        }

    def _grid(self, input_shape):
        h, w, c = spatial_shape(input_shape, self.data_format)
        if h < self.kernel_size or w < self.kernel_size:
            raise ValueError(
                f"layer {self.name!r}: a {self.kernel_size}x{self.kernel_size} "
                f"kernel does not fit a {h}x{w} map."
            )
        return (
            conv_output_size(h, self.kernel_size, self.stride, 0),
            conv_output_size(w, self.kernel_size, self.stride, 0),
            c,
        )

    check_input_shape = _grid

    def parameter_shapes(self, input_shape):
        _, _, c = self._grid(input_shape)
        k, t = self.kernel_size, self.n_types
        return {
            "pose_weight": (k, k, c, t * POSE),
            "pose_bias": (t * POSE,),
            "act_weight": (k, k, c, t),
            "act_bias": (t,),
        }

    def output_shape(self, input_shape):
        ho, wo, _ = self._grid(input_shape)
        return ((ho, wo, self.n_types, POSE), (ho, wo, self.n_types))

    def forward(self, x, params, *, xp, backend):
        x = to_nhwc(x, self.data_format, xp=xp)
        conv = dict(stride=self.stride, padding=0, xp=xp, backend=backend)
        pose = run_conv2d(x, params["pose_weight"], params["pose_bias"], **conv)
        b, ho, wo, _ = (int(s) for s in pose.shape)
        pose = xp.reshape(pose, (b, ho, wo, self.n_types, POSE))
        act = run_conv2d(x, params["act_weight"], params["act_bias"], **conv)
        return pose, apply_activation(act, "sigmoid", xp=xp)


def _matrix_votes(M, W, *, xp, layout="caproute"):
    """V = M @ W (``layout="caproute"``) or M @ W^T ("transposed") with M (..., n_in, 16)
    flattened 4x4 poses and W (n_in, n_out, 4, 4): returns (..., n_in, n_out, 16)."""
    lead = tuple(int(s) for s in M.shape[:-1])
    M4 = xp.reshape(M, lead + (1, 4, 4))
    if layout == "transposed":
        W = xp.permute_dims(W, (0, 1, 3, 2))
    V = xp.matmul(M4, W)
    return xp.reshape(V, lead + (int(W.shape[1]), POSE))


def conv_matrix_votes(pose, act, weight, *, stride, layout="caproute", xp):
    """The votes of every kh x kw receptive field of a map of matrix capsules, and the
    children's activations: pose (b, H, W, t_in, 16), act (b, H, W, t_in), weight (kh, kw,
    t_in, t_out, 4, 4) -> votes (b * ho * wo, kh * kw * t_in, t_out, 16) (children ordered
    (di, dj, type)) and a_in (b * ho * wo, kh * kw * t_in). The reference of the
    ``conv_matrix_votes`` operation."""
    kh, kw, t_in, t_out = (int(s) for s in weight.shape[:4])
    b = int(act.shape[0])
    pose_p = patches(pose, (kh, kw), stride, xp=xp)  # (b, ho, wo, kh, kw, t_in, 16)
    act_p = patches(act, (kh, kw), stride, xp=xp)  # (b, ho, wo, kh, kw, t_in)
    ho, wo = int(pose_p.shape[1]), int(pose_p.shape[2])
    n_in = kh * kw * t_in
    W = xp.reshape(weight, (n_in, t_out, 4, 4))
    votes = _matrix_votes(xp.reshape(pose_p, (b * ho * wo, n_in, POSE)), W, xp=xp, layout=layout)
    return votes, xp.reshape(act_p, (b * ho * wo, n_in))


def _votes(pose, act, weight, *, stride, layout, xp, backend):
    plan = select_impl("conv_matrix_votes", xp, backend)
    return plan.func(pose, act, weight, stride=stride, layout=layout, xp=plan.xp)


class ConvMatrixCaps(_EMOptions, Layer):
    """Convolutional matrix capsules with EM routing.

    Every k x k receptive field of child capsules votes through learned 4x4 transforms
    (``V = M W``) for the parent types at its output position, and EM routing
    (:func:`caproute.em_routing`) turns the votes into parent poses and activations.

    Parameters: ``weight`` (kernel_size, kernel_size, in_types, out_types, 4, 4), ``beta_u``
    (out_types,) or (out_types, 16) with ``beta_per_pose``, ``beta_a`` (out_types,).

    Output: ``(pose, activation)`` of shapes (batch, H', W', out_types, 16),
    (batch, H', W', out_types).

    Parameters
    ----------
    out_types : int
        Parent capsule types (C or D in the paper).
    kernel_size : int, default=3
        Square side of the receptive field, in child capsules.
    stride : int, default=1
        Step between receptive fields, along both axes.
    n_iter : int, default=3
        EM routing iterations.
    competition : {"position", "all"}, default="position"
        Which parents compete for a child. "position": those at one output position (each
        receptive field is routed on its own, as most public implementations do); "all":
        every parent the child feeds, at every output position whose field holds it (a child's
        assignments sum to 1 over all of them).
    inverse_temperature : float, list of float or None, default=None
        As in :func:`caproute.em_routing` (None: the official schedule).
    min_var : float, default=5e-4
        Floor of the parents' variances, as in :func:`caproute.em_routing`.
    eps : float, default=1e-8
        Small constant of the routing's divisions, as in :func:`caproute.em_routing`.
    beta_per_pose : bool, default=False
        Whether ``beta_u`` has one value per pose entry (out_types, 16) instead of one per
        type (out_types,).
    competition_init : {"all", "position"}, default="all"
        With ``competition="all"``: the starting assignments, uniform over every parent a
        child feeds (``1 / (out_types * fields holding it)``), or ``1 / out_types`` in each
        receptive field as with ``competition="position"``. Ignored with "position".
    weight_layout : {"caproute", "transposed"}, default="caproute"
        How a stored 4x4 transform ``W`` makes a vote from a pose ``M``: ``V = M W``, or
        ``V = M W^T`` (checkpoints whose code multiplies by the transpose, or stores each
        transform transposed). The weight's shape is the same.
    pose_momentum, e_step_log_var_weight, e_step_norm, mass_floor, cost_log_var : optional
        EM-routing variants of public implementations, with the defaults and meanings of
        :func:`caproute.em_routing` (the defaults are the paper's routing).
    renormalize_assignments, last_inverse_temperature : optional
        As in :func:`caproute.em_routing`.
        With ``competition="position"`` a "sample" of ``e_step_norm="ratio_sample"``
        is one output position of one image; with "all" it is one image.
    name : str, default="conv_caps"
        The layer's name, unique in its model.

    Examples
    --------
    >>> import numpy as np
    >>> from caproute.models import ConvMatrixCaps, Model, PrimaryMatrixCaps
    >>> net = Model([PrimaryMatrixCaps(2, name="primary"),
    ...              ConvMatrixCaps(3, kernel_size=3, stride=2, name="conv_caps")],
    ...             input_shape=(7, 7, 4))
    >>> pose, act = net.initialize(random_state=0).forward(np.ones((1, 7, 7, 4)))
    >>> pose.shape, act.shape
    ((1, 3, 3, 3, 16), (1, 3, 3, 3))
    """

    output_layout = "(batch, H, W, n_types, 16), (batch, H, W, n_types)"

    def __init__(
        self,
        out_types,
        *,
        kernel_size=3,
        stride=1,
        n_iter=3,
        competition="position",
        inverse_temperature=None,
        min_var=DEFAULT_MIN_VAR,
        eps=DEFAULT_EPS,
        beta_per_pose=False,
        competition_init="all",
        weight_layout="caproute",
        pose_momentum=None,
        e_step_log_var_weight=0.5,
        e_step_norm="softmax",
        mass_floor="max",
        cost_log_var="half_log_var",
        renormalize_assignments=False,
        last_inverse_temperature="schedule",
        name="conv_caps",
    ):
        super().__init__(name=name)
        self.out_types = check_int(out_types, name="out_types", min_value=1, noun="int")
        self.kernel_size = check_int(kernel_size, name="kernel_size", min_value=1, noun="int")
        self.stride = check_int(stride, name="stride", min_value=1, noun="int")
        self.competition = check_choice(competition, name="competition", choices=COMPETITION)
        self.competition_init = check_choice(
            competition_init, name="competition_init", choices=COMPETITION_INITS
        )
        variants = dict(
            pose_momentum=pose_momentum,
            e_step_log_var_weight=e_step_log_var_weight,
            e_step_norm=e_step_norm,
            mass_floor=mass_floor,
            cost_log_var=cost_log_var,
            renormalize_assignments=renormalize_assignments,
            last_inverse_temperature=last_inverse_temperature,
        )
        self._set_routing(n_iter, inverse_temperature, min_var, eps, beta_per_pose, variants)
        self._set_weight_layout(weight_layout)

    def get_config(self):
        return {
            "out_types": self.out_types,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "competition": self.competition,
            "competition_init": self.competition_init,
            **self._routing_config(),
            "name": self.name,
        }

    def check_input_shape(self, input_shape):
        h, w, _ = _check_map(input_shape, self.name)
        if h < self.kernel_size or w < self.kernel_size:
            raise ValueError(
                f"layer {self.name!r}: a {self.kernel_size}x{self.kernel_size} "
                f"kernel does not fit a {h}x{w} map."
            )

    def parameter_shapes(self, input_shape):
        _, _, t_in = _check_map(input_shape, self.name)
        k = self.kernel_size
        return {"weight": (k, k, t_in, self.out_types, 4, 4), **self._beta_shapes(self.out_types)}

    def output_shape(self, input_shape):
        h, w, _ = _check_map(input_shape, self.name)
        ho = conv_output_size(h, self.kernel_size, self.stride, 0)
        wo = conv_output_size(w, self.kernel_size, self.stride, 0)
        return ((ho, wo, self.out_types, POSE), (ho, wo, self.out_types))

    def forward(self, x, params, *, xp, backend):
        pose, act = x
        b, h, w, t_in = (int(s) for s in act.shape)
        k, t_out = self.kernel_size, self.out_types
        ho = conv_output_size(h, k, self.stride, 0)
        wo = conv_output_size(w, k, self.stride, 0)
        plan = select_impl("conv_matrix_votes", xp, backend)
        votes, a_in = plan.func(
            pose, act, params["weight"], stride=self.stride, layout=self.weight_layout, xp=plan.xp
        )
        if self.competition == "position":
            mu, a_out = self._route(votes, a_in, params, backend)
        else:
            mu, a_out = self._route_all_positions(
                votes, a_in, params, (b, h, w, ho, wo), xp, backend
            )
        return (xp.reshape(mu, (b, ho, wo, t_out, POSE)), xp.reshape(a_out, (b, ho, wo, t_out)))


class ClassMatrixCaps(_EMOptions, Layer):
    """Class capsules: matrix capsules voting for every class, then EM routing.

    Every child capsule of the last map votes for every class through a 4x4 transform shared
    over positions, with coordinate addition.

    Coordinate addition: the child at grid position (y, x) of an H x W map adds
    ``(y + 0.5) / H`` and ``(x + 0.5) / W`` -- its receptive field's centre, scaled to [0, 1] --
    to the first two entries of the last column of its 4x4 vote (flattened entries 3 and 7);
    ``coordinate_grid``, ``coordinate_values`` and ``coordinate_entries`` change the values and
    the entries.

    Parameters: ``weight`` (in_types, n_classes, 4, 4), ``beta_u`` (n_classes,) or
    (n_classes, 16), ``beta_a`` (n_classes,).

    Output: ``(pose, activation)`` of shapes (batch, n_classes, 16), (batch, n_classes); the
    class scores are the activations.

    Parameters
    ----------
    n_classes : int
        Class capsules.
    n_iter : int, default=3
        EM routing iterations.
    coordinate_addition : bool, default=True
        Whether to add the children's scaled positions to their votes (see above).
    inverse_temperature : float, list of float or None, default=None
        As in :class:`ConvMatrixCaps`.
    min_var : float, default=5e-4
        As in :class:`ConvMatrixCaps`.
    eps : float, default=1e-8
        As in :class:`ConvMatrixCaps`.
    beta_per_pose : bool, default=False
        As in :class:`ConvMatrixCaps`.
    coordinate_grid : {"centre", "centre_signed", "index", "explicit"}, default="centre"
        The values added for row ``y`` (and likewise column ``x``): "centre", the receptive
        field's centre scaled to [0, 1], ``(y + 0.5) / H``; "centre_signed", the centre mapped
        to [-1, 1], ``(2 y + 1) / H - 1``; "index", ``y / H`` (the common PyTorch port);
        "explicit", the values of ``coordinate_values``.
    coordinate_values : pair of sequences of float, optional
        With ``coordinate_grid="explicit"`` only: ``(ys, xs)``, one value per row and one per
        column of the input map (checked against the map when the model is built).
    coordinate_entries : pair of int, default=(3, 7)
        The flat (row-major) entries of the 4x4 vote that receive the row and the column
        value: (3, 7) is the first two entries of the last column (the paper); the common
        PyTorch port uses (0, 1).
    weight_layout : {"caproute", "transposed"}, default="caproute"
        How a stored 4x4 transform ``W`` makes a vote from a pose ``M``: ``V = M W``, or
        ``V = M W^T`` (checkpoints whose code multiplies by the transpose, or stores each
        transform transposed). The weight's shape is the same.
    pose_momentum, e_step_log_var_weight, e_step_norm, mass_floor, cost_log_var : optional
        EM-routing variants of public implementations, with the defaults and meanings of
        :func:`caproute.em_routing` (the defaults are the paper's routing).
    renormalize_assignments, last_inverse_temperature : optional
        As in :func:`caproute.em_routing`.
    name : str, default="class_caps"
        The layer's name, unique in its model.

    Examples
    --------
    >>> import numpy as np
    >>> from caproute.models import ClassMatrixCaps, Model, PrimaryMatrixCaps
    >>> net = Model([PrimaryMatrixCaps(2, name="primary"), ClassMatrixCaps(5, name="classes")],
    ...             input_shape=(3, 3, 4))
    >>> pose, act = net.initialize(random_state=0).forward(np.ones((2, 3, 3, 4)))
    >>> pose.shape, act.shape
    ((2, 5, 16), (2, 5))
    """

    output_layout = "(batch, n_classes, 16), (batch, n_classes)"

    def __init__(
        self,
        n_classes,
        *,
        n_iter=3,
        coordinate_addition=True,
        inverse_temperature=None,
        min_var=DEFAULT_MIN_VAR,
        eps=DEFAULT_EPS,
        beta_per_pose=False,
        coordinate_grid="centre",
        coordinate_values=None,
        coordinate_entries=DEFAULT_COORDINATE_ENTRIES,
        weight_layout="caproute",
        pose_momentum=None,
        e_step_log_var_weight=0.5,
        e_step_norm="softmax",
        mass_floor="max",
        cost_log_var="half_log_var",
        renormalize_assignments=False,
        last_inverse_temperature="schedule",
        name="class_caps",
    ):
        super().__init__(name=name)
        self.n_classes = check_int(n_classes, name="n_classes", min_value=1, noun="int")
        self.coordinate_addition = check_bool(coordinate_addition, name="coordinate_addition")
        self.coordinate_grid = check_choice(
            coordinate_grid, name="coordinate_grid", choices=COORDINATE_GRIDS
        )
        self.coordinate_values = _check_coordinate_values(coordinate_values, self.coordinate_grid)
        self.coordinate_entries = _check_coordinate_entries(coordinate_entries)
        variants = dict(
            pose_momentum=pose_momentum,
            e_step_log_var_weight=e_step_log_var_weight,
            e_step_norm=e_step_norm,
            mass_floor=mass_floor,
            cost_log_var=cost_log_var,
            renormalize_assignments=renormalize_assignments,
            last_inverse_temperature=last_inverse_temperature,
        )
        self._set_routing(n_iter, inverse_temperature, min_var, eps, beta_per_pose, variants)
        self._set_weight_layout(weight_layout)

    def get_config(self):
        return {
            "n_classes": self.n_classes,
            "coordinate_addition": self.coordinate_addition,
            "coordinate_grid": self.coordinate_grid,
            "coordinate_values": self.coordinate_values,
            "coordinate_entries": list(self.coordinate_entries),
            **self._routing_config(),
            "name": self.name,
        }

    def check_input_shape(self, input_shape):
        h, w, _ = _check_map(input_shape, self.name)
        if self.coordinate_values is not None:
            ys, xs = self.coordinate_values
            if (len(ys), len(xs)) != (h, w):
                raise ValueError(
                    f"layer {self.name!r}: `coordinate_values` holds {len(ys)} row and "
                    f"{len(xs)} column values; its {h}x{w} input map needs {h} and {w}."
                )

    def parameter_shapes(self, input_shape):
        _, _, t_in = _check_map(input_shape, self.name)
        return {"weight": (t_in, self.n_classes, 4, 4), **self._beta_shapes(self.n_classes)}

    def output_shape(self, input_shape):
        return ((self.n_classes, POSE), (self.n_classes,))

    def forward(self, x, params, *, xp, backend):
        pose, act = x
        b, h, w, t_in = (int(s) for s in act.shape)
        # every child of the map votes through its type's transform: the votes of one
        # receptive field as large as the map, whose weight is the same at every position
        weight = xp.broadcast_to(
            xp.reshape(params["weight"], (1, 1, t_in, self.n_classes, 4, 4)),
            (h, w, t_in, self.n_classes, 4, 4),
        )
        votes, a_in = _votes(
            pose, act, weight, stride=1, layout=self.weight_layout, xp=xp, backend=backend
        )
        votes = xp.reshape(votes, (b, h, w, t_in, self.n_classes, POSE))
        if self.coordinate_addition:
            votes = votes + coordinate_offsets(
                h,
                w,
                dtype=votes.dtype,
                device=device(votes),
                xp=xp,
                grid=self.coordinate_grid,
                values=self.coordinate_values,
                entries=self.coordinate_entries,
            )
        votes = xp.reshape(votes, (b, h * w * t_in, self.n_classes, POSE))
        return self._route(votes, a_in, params, backend)


def coordinate_offsets(
    h, w, *, dtype, device, xp, grid="centre", values=None, entries=DEFAULT_COORDINATE_ENTRIES
):
    """(h, w, 1, 1, 16) offsets: the row value of each grid position at flat entry
    ``entries[0]``, the column value at ``entries[1]``. ``grid``: "centre" ((y + 0.5) / h),
    "centre_signed" ((2 y + 1) / h - 1), "index" (y / h) or "explicit" (``values = (ys, xs)``)."""
    if grid == "explicit":
        ys = xp.asarray(values[0], dtype=dtype, device=device)
        xs = xp.asarray(values[1], dtype=dtype, device=device)
    elif grid == "index":
        ys = xp.arange(h, dtype=dtype, device=device) / h
        xs = xp.arange(w, dtype=dtype, device=device) / w
    elif grid == "centre_signed":
        ys = (2.0 * xp.arange(h, dtype=dtype, device=device) + 1.0) / h - 1.0
        xs = (2.0 * xp.arange(w, dtype=dtype, device=device) + 1.0) / w - 1.0
    else:
        ys = (xp.arange(h, dtype=dtype, device=device) + 0.5) / h
        xs = (xp.arange(w, dtype=dtype, device=device) + 0.5) / w
    onehot = xp.arange(POSE, device=device)
    e_row = xp.astype(onehot == entries[0], dtype)
    e_col = xp.astype(onehot == entries[1], dtype)
    out = (xp.reshape(ys, (h, 1, 1)) * e_row) + (xp.reshape(xs, (1, w, 1)) * e_col)  # (h, w, 16)
    return xp.reshape(out, (h, w, 1, 1, POSE))


def _check_coordinate_values(values, grid):
    """None (for the computed grids), or for "explicit" a pair (ys, xs) of sequences of finite
    real numbers, returned as two lists of floats."""
    if grid != "explicit":
        if values is not None:
            raise ValueError(
                f"`coordinate_values` is used only with coordinate_grid='explicit'; got "
                f"coordinate_grid={grid!r} and values. Pass coordinate_grid='explicit', or drop "
                "coordinate_values."
            )
        return None
    expect = (
        "`coordinate_values` (with coordinate_grid='explicit') must be a pair (ys, xs): the "
        "row values, one per row of the input map, and the column values, one per column"
    )
    if not is_sequence(values) or len(values) != 2:
        raise ValueError(f"{expect}; got {values!r}.")
    out = []
    for which, seq in zip(("ys", "xs"), values, strict=True):
        if not is_sequence(seq) or len(seq) == 0:
            raise ValueError(f"{expect}; {which} is {seq!r}.")
        out.append(
            [check_scalar(v, name=f"coordinate_values ({which}[{k}])") for k, v in enumerate(seq)]
        )
    return out


def _check_coordinate_entries(entries):
    """Two distinct flat indices in [0, 15] of the 4x4 vote, as a tuple."""
    expect = (
        "`coordinate_entries` must be two distinct flat indices in [0, 15] of the row-major 4x4 "
        "vote (the entry that receives the row offset, then the column offset)"
    )
    if (
        not is_sequence(entries)
        or len(entries) != 2
        or not all(isinstance(e, numbers.Integral) and not isinstance(e, bool) for e in entries)
    ):
        raise ValueError(f"{expect}; got {entries!r}.")
    entries = (int(entries[0]), int(entries[1]))
    if not all(0 <= e < POSE for e in entries) or entries[0] == entries[1]:
        raise ValueError(f"{expect}; got {list(entries)}.")
    return entries
