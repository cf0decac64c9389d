"""The two classic capsule networks as ready constructors (weights not included)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._lib.validation import check_bool, check_choice, check_int, is_sequence, shape_str
from .layers import (
    BatchNorm,
    ClassMatrixCaps,
    Conv2D,
    ConvMatrixCaps,
    DenseCaps,
    PrimaryCaps,
    PrimaryMatrixCaps,
)
from .layers.activations import check_activation
from .layers.batch_norm import check_epsilon
from .layers.capsules import ORDERS, check_squash_eps
from .layers.conv import check_padding
from .model import Model


def _layout_shape(input_shape, data_format):
    h, w, c = input_shape
    return (c, h, w) if data_format == "NCHW" else (h, w, c)


def _check_input_shape(input_shape):
    """``input_shape`` as three ints (H, W, C), checked under its public name."""
    if not is_sequence(input_shape) or len(input_shape) != 3:
        raise ValueError(
            "`input_shape` must be three integers (H, W, C) (the channels last, whatever "
            f"`data_format`); got {input_shape!r}."
        )
    return tuple(check_int(s, name="input_shape", min_value=1) for s in input_shape)


def _check_ints(**values):
    """The constructors' integer arguments, checked under their public names (the layers
    would name their own arguments: ``filters`` for ``conv_channels``, ``dim`` for
    ``primary_dim``)."""
    for name, value in values.items():
        check_int(value, name=name, min_value=1)


def _build(layers, input_shape, data_format, classes, name):
    """The Model, with a size mismatch between the kernels and ``input_shape`` explained."""
    try:
        return Model(layers, _layout_shape(input_shape, data_format), classes=classes, name=name)
    except ValueError as exc:
        if "does not fit" not in str(exc):
            raise
        raise ValueError(
            f"the network does not fit `input_shape` {shape_str(input_shape)}: {exc} Use a "
            "larger input_shape or smaller kernels or strides."
        ) from None


def capsnet(
    *,
    input_shape: tuple[int, int, int] = (28, 28, 1),
    conv_channels: int = 256,
    conv_kernel: int = 9,
    conv_activation: str | dict | None = "relu",
    conv_layers: Sequence[Mapping[str, Any]] | None = None,
    primary_types: int = 32,
    primary_dim: int = 8,
    primary_kernel: int = 9,
    primary_stride: int = 2,
    primary_padding: int | str | tuple = 0,
    n_classes: int = 10,
    class_dim: int = 16,
    n_iter: int = 3,
    order: str = "type-major",
    weight_layout: str = "caproute",
    use_bias: bool = False,
    leaky: bool = False,
    squash_eps: float = 1e-8,
    data_format: str = "NHWC",
    classes: Sequence[str] | None = None,
    name: str = "capsnet",
) -> Model:
    """Sabour et al.'s CapsNet (2017): Conv -> PrimaryCaps -> DenseCaps with dynamic routing.

    The defaults are the paper's MNIST network: conv1 256 channels 9x9 ReLU, 32 primary types
    of 8-D capsules (9x9, stride 2: 1152 capsules), 10 class capsules of 16-D, 3 routing
    iterations; prediction = the longest class capsule. Smaller variants by argument. The
    reconstruction decoder is not part of it (classification does not need it).

    Parameters
    ----------
    input_shape : tuple of int, default=(28, 28, 1)
        (H, W, C), whatever ``data_format``.
    conv_channels, conv_kernel : int, default=256, 9
        The convolution before the primary capsules (stride 1, no padding, with a bias).
    conv_activation : str, dict or None, default="relu"
        Its activation: a name (``"relu"``, ``"elu"``, ``"gelu"``, ``"selu"``, ``"swish"``,
        ...) or a dict with parameters, e.g. ``{"name": "leaky_relu", "negative_slope":
        0.3}`` (see :class:`Activation`).
    conv_layers : sequence of dict, optional
        Several convolutions instead of that one, in order: each a dict with ``filters`` and
        ``kernel_size`` (required), ``stride`` (1), ``padding`` (0; also ``"valid"``,
        ``"same"`` or pairs, see :class:`Conv2D`), ``activation`` ("relu"), ``use_bias``
        (True), ``name`` ("conv1", "conv2", ...) and ``batch_norm`` (None, or a dict with
        ``epsilon`` (required), ``center`` and ``scale``: a :class:`BatchNorm` named
        "<name>_bn" after the activation). A BatchNorm directly after a convolution, before
        its activation, is no layer here: fold it into the convolution's weights with
        :func:`fold_batchnorm`. With ``conv_layers``, leave ``conv_channels``,
        ``conv_kernel`` and ``conv_activation`` at their defaults.
    primary_types, primary_dim, primary_kernel, primary_stride : int
        The primary capsules.
    primary_padding : int, "valid", "same" or pair, default=0
        Zeros around the primary capsules' input map (see :class:`Conv2D`).
    n_classes, class_dim, n_iter : int
        The class capsules and their routing.
    order : {"type-major", "position-major"}, default="type-major"
        Flattening of the primary capsules (see :class:`PrimaryCaps`).
    weight_layout : {"caproute", "keras", "torch", "tf"}, default="caproute"
        Layout of the class capsules' weight (see :class:`DenseCaps`).
    use_bias : bool, default=False
        Whether the class capsules have a bias (see :class:`DenseCaps`).
    leaky : bool, default=False
        Leaky routing (see :class:`DenseCaps`).
    squash_eps : float, default=1e-8
        ``eps`` inside the square root of squash, in both capsule layers.
    data_format : {"NHWC", "NCHW"}, default="NHWC"
        Layout of the input images.
    classes : sequence of str, optional
        Class names, in output order.
    name : str, default="capsnet"
        The model's name.

    Returns
    -------
    model : Model
        Without weights: load them (:meth:`Model.set_weights`) or :meth:`Model.initialize`.

    Raises
    ------
    ValueError
        If an argument is out of its range (each message names the argument), or the
        kernels and strides do not fit ``input_shape``.
    TypeError
        If an argument has the wrong type.

    Examples
    --------
    >>> from caproute import models
    >>> net = models.capsnet()
    >>> f"{net.n_parameters():,}"
    '6,804,224'

    Two convolutions, the first with a LeakyReLU of Keras's default slope:

    >>> net = models.capsnet(conv_layers=[
    ...     {"filters": 32, "kernel_size": 3,
    ...      "activation": {"name": "leaky_relu", "negative_slope": 0.3}},
    ...     {"filters": 64, "kernel_size": 3, "stride": 2, "padding": "same"},
    ... ], primary_kernel=3, primary_types=8)
    >>> [layer.name for layer in net.layers]
    ['conv1', 'conv2', 'primary_caps', 'class_caps']
    >>> net.layers[1].activation
    'relu'
    """
    input_shape = _check_input_shape(input_shape)
    _check_ints(
        conv_channels=conv_channels,
        conv_kernel=conv_kernel,
        primary_types=primary_types,
        primary_dim=primary_dim,
        primary_kernel=primary_kernel,
        primary_stride=primary_stride,
        n_classes=n_classes,
        class_dim=class_dim,
        n_iter=n_iter,
    )
    squash_eps = check_squash_eps(squash_eps)
    conv_activation = check_activation(conv_activation, name="conv_activation")
    if conv_layers is None:
        convs = [
            Conv2D(
                conv_channels,
                conv_kernel,
                activation=conv_activation,
                data_format=data_format,
                name="conv1",
            )
        ]
    else:
        changed = [
            arg
            for arg, value, default in (
                ("conv_channels", conv_channels, 256),
                ("conv_kernel", conv_kernel, 9),
                ("conv_activation", conv_activation, "relu"),
            )
            if value != default
        ]
        if changed:
            verb = "describes" if len(changed) == 1 else "describe"
            raise ValueError(
                f"{' and '.join(f'`{a}`' for a in changed)} {verb} the single convolution; "
                "with `conv_layers` give every convolution's settings in its dict instead."
            )
        convs = _conv_stack(conv_layers, data_format)
    layers = [
        *convs,
        PrimaryCaps(
            primary_types,
            primary_dim,
            kernel_size=primary_kernel,
            stride=primary_stride,
            padding=check_padding(primary_padding, name="primary_padding"),
            order=check_choice(order, name="order", choices=ORDERS),
            squash_eps=squash_eps,
            data_format=data_format,
            name="primary_caps",
        ),
        DenseCaps(
            n_classes,
            class_dim,
            n_iter=n_iter,
            weight_layout=weight_layout,
            use_bias=use_bias,
            leaky=leaky,
            squash_eps=squash_eps,
            name="class_caps",
        ),
    ]
    return _build(layers, input_shape, data_format, classes, name)


_CONV_KEYS = ("filters", "kernel_size", "stride", "padding", "activation", "use_bias", "name",
              "batch_norm")  # fmt: skip
_BN_KEYS = ("epsilon", "center", "scale")


def _conv_stack(conv_layers, data_format):
    """The Conv2D (and BatchNorm) layers that ``conv_layers`` describes, each checked with
    messages that name ``conv_layers[i]`` and the key."""
    if isinstance(conv_layers, (str, bytes, Mapping)) or not is_sequence(conv_layers):
        raise TypeError(
            "`conv_layers` must be a sequence of dicts (one per convolution, e.g. "
            f"[{{'filters': 256, 'kernel_size': 9}}]); got {type(conv_layers).__name__}."
        )
    if not conv_layers:
        raise ValueError("`conv_layers` must describe at least one convolution; got none.")
    layers = []
    for i, spec in enumerate(conv_layers):
        where = f"conv_layers[{i}]"
        if not isinstance(spec, Mapping):
            raise TypeError(f"`{where}` must be a dict; got {type(spec).__name__}.")
        unknown = sorted(str(k) for k in spec if k not in _CONV_KEYS)
        missing = [k for k in ("filters", "kernel_size") if k not in spec]
        if unknown or missing:
            raise ValueError(
                f"`{where}` takes the keys {', '.join(_CONV_KEYS)} (filters and kernel_size "
                f"required); "
                + (f"unknown: {unknown}" if unknown else f"missing: {missing}")
                + f" in {dict(spec)!r}."
            )
        name = spec.get("name", f"conv{i + 1}")
        try:
            conv = Conv2D(
                check_int(spec["filters"], name=f"{where}['filters']", min_value=1),
                check_int(spec["kernel_size"], name=f"{where}['kernel_size']", min_value=1),
                stride=check_int(spec.get("stride", 1), name=f"{where}['stride']", min_value=1),
                padding=check_padding(spec.get("padding", 0), name=f"{where}['padding']"),
                activation=check_activation(
                    spec.get("activation", "relu"), name=f"{where}['activation']"
                ),
                use_bias=check_bool(spec.get("use_bias", True), name=f"{where}['use_bias']"),
                data_format=data_format,
                name=name,
            )
        except ValueError as exc:
            if "`name`" not in str(exc):
                raise
            raise ValueError(f"`{where}['name']`: {exc}") from None
        layers.append(conv)
        bn = spec.get("batch_norm")
        if bn is None:
            continue
        if not isinstance(bn, Mapping) or "epsilon" not in bn or set(bn) - set(_BN_KEYS):
            raise ValueError(
                f"`{where}['batch_norm']` must be None or a dict with 'epsilon' (required: "
                "Keras's default is 1e-3, PyTorch's 1e-5) and optionally 'center' and "
                f"'scale'; got {bn!r}."
            )
        layers.append(
            BatchNorm(
                epsilon=check_epsilon(bn["epsilon"], name=f"{where}['batch_norm']['epsilon']"),
                center=check_bool(bn.get("center", True), name=f"{where}['batch_norm']['center']"),
                scale=check_bool(bn.get("scale", True), name=f"{where}['batch_norm']['scale']"),
                data_format=data_format,
                name=f"{name}_bn",
            )
        )
    names = [layer.name for layer in layers]
    dupes = sorted({n for n in names if names.count(n) > 1} | ({"primary_caps", "class_caps"}
                   & set(names)))  # fmt: skip
    if dupes:
        raise ValueError(
            f"`conv_layers` names must be unique and differ from 'primary_caps' and "
            f"'class_caps'; repeated: {dupes}."
        )
    return layers


def matrix_capsnet(
    A: int = 32,
    B: int = 32,
    C: int = 32,
    D: int = 32,
    *,
    input_shape: tuple[int, int, int] = (28, 28, 1),
    n_classes: int = 10,
    conv_kernel: int = 5,
    conv_stride: int = 2,
    n_iter: int = 3,
    competition: str = "position",
    coordinate_addition: bool = True,
    inverse_temperature: float | Sequence[float] | None = None,
    min_var: float = 5e-4,
    eps: float = 1e-8,
    beta_per_pose: bool = False,
    data_format: str = "NHWC",
    classes: Sequence[str] | None = None,
    name: str = "matrix_capsnet",
    competition_init: str = "all",
    weight_layout: str = "caproute",
    coordinate_grid: str = "centre",
    coordinate_values: Sequence[Sequence[float]] | None = None,
    coordinate_entries: Sequence[int] = (3, 7),
    pose_momentum: float | None = None,
    e_step_log_var_weight: float = 0.5,
    e_step_norm: str = "softmax",
    mass_floor: str = "max",
    cost_log_var: str = "half_log_var",
    renormalize_assignments: bool = False,
    last_inverse_temperature: str | float = "schedule",
) -> Model:
    """Hinton, Sabour and Frosst's matrix-capsule network with EM routing (2018).

    ReLU conv ``conv_kernel`` x ``conv_kernel``, stride ``conv_stride``, A channels ->
    PrimaryMatrixCaps (1x1, B types) -> ConvMatrixCaps (3x3, stride 2, C types) ->
    ConvMatrixCaps (3x3, stride 1, D types) -> ClassMatrixCaps (shared transforms, coordinate
    addition). A=B=C=D=32 is the paper's smallNORB network (the paper counts about 310k
    parameters; with activation convolutions, biases and betas this count is 319k); smaller
    A/B/C/D give the smaller variants.

    Parameters
    ----------
    A, B, C, D : int, default=32
        Channels of the convolution and capsule types of the three capsule layers.
    input_shape : tuple of int, default=(28, 28, 1)
        (H, W, C), whatever ``data_format``.
    n_classes : int, default=10
        Class capsules.
    conv_kernel : int, default=5
        Kernel side of the first convolution.
    conv_stride : int, default=2
        Stride of the first convolution.
    n_iter : int, default=3
        EM routing iterations of every capsule layer.
    competition : {"position", "all"}, default="position"
        Which parents compete for a child in the convolutional capsule layers (see
        :class:`ConvMatrixCaps`).
    coordinate_addition : bool, default=True
        Coordinate addition in the class capsules (see :class:`ClassMatrixCaps`).
    inverse_temperature : float, list of float or None, default=None
        As in :func:`caproute.em_routing` (None: the official schedule).
    min_var : float, default=5e-4
        Floor of the parents' variances in EM routing.
    eps : float, default=1e-8
        Small constant of EM routing's divisions.
    beta_per_pose : bool, default=False
        Whether ``beta_u`` has one value per pose entry (see :class:`ConvMatrixCaps`).
    data_format : {"NHWC", "NCHW"}, default="NHWC"
        Layout of the input images.
    classes : sequence of str, optional
        Class names, in output order.
    name : str, default="matrix_capsnet"
        The model's name.
    competition_init : {"all", "position"}, default="all"
        Starting assignments with ``competition="all"`` (see :class:`ConvMatrixCaps`).
    weight_layout : {"caproute", "transposed"}, default="caproute"
        ``V = M W`` or ``V = M W^T`` in every capsule layer after the primary capsules (see
        :class:`ConvMatrixCaps`).
    coordinate_grid : {"centre", "centre_signed", "index", "explicit"}, default="centre"
        The class capsules' coordinate values (see :class:`ClassMatrixCaps`).
    coordinate_values : pair of sequences of float, optional
        With ``coordinate_grid="explicit"``: the row and column values (see
        :class:`ClassMatrixCaps`).
    coordinate_entries : pair of int, default=(3, 7)
        The vote entries that receive the row and column values (see
        :class:`ClassMatrixCaps`).
    pose_momentum, e_step_log_var_weight, e_step_norm, mass_floor, cost_log_var : optional
        EM-routing variants of public implementations for every capsule layer, as in
        :func:`caproute.em_routing` (the defaults are the paper's routing).
    renormalize_assignments, last_inverse_temperature : optional
        As in :func:`caproute.em_routing`.

    Returns
    -------
    model : Model
        Without weights.

    Raises
    ------
    ValueError
        If an argument is out of its range (each message names the argument), or the
        kernels and strides do not fit ``input_shape``.
    TypeError
        If an argument has the wrong type.

    Examples
    --------
    >>> from caproute import models
    >>> net = models.matrix_capsnet(input_shape=(32, 32, 1))  # the paper's smallNORB size
    >>> f"{net.n_parameters():,}"
    '318,964'
    """
    input_shape = _check_input_shape(input_shape)
    _check_ints(
        A=A,
        B=B,
        C=C,
        D=D,
        n_classes=n_classes,
        conv_kernel=conv_kernel,
        conv_stride=conv_stride,
        n_iter=n_iter,
    )
    check_bool(coordinate_addition, name="coordinate_addition")
    check_bool(beta_per_pose, name="beta_per_pose")
    routing = dict(
        n_iter=n_iter,
        inverse_temperature=inverse_temperature,
        min_var=min_var,
        eps=eps,
        beta_per_pose=beta_per_pose,
        weight_layout=weight_layout,
        pose_momentum=pose_momentum,
        e_step_log_var_weight=e_step_log_var_weight,
        e_step_norm=e_step_norm,
        mass_floor=mass_floor,
        cost_log_var=cost_log_var,
        renormalize_assignments=renormalize_assignments,
        last_inverse_temperature=last_inverse_temperature,
    )
    conv_routing = dict(competition=competition, competition_init=competition_init, **routing)
    coordinates = dict(
        coordinate_addition=coordinate_addition,
        coordinate_grid=coordinate_grid,
        coordinate_values=coordinate_values,
        coordinate_entries=coordinate_entries,
    )
    layers = [
        Conv2D(
            A,
            conv_kernel,
            stride=conv_stride,
            activation="relu",
            data_format=data_format,
            name="conv1",
        ),
        PrimaryMatrixCaps(B, data_format=data_format, name="primary_caps"),
        ConvMatrixCaps(C, kernel_size=3, stride=2, name="conv_caps1", **conv_routing),
        ConvMatrixCaps(D, kernel_size=3, stride=1, name="conv_caps2", **conv_routing),
        ClassMatrixCaps(n_classes, name="class_caps", **coordinates, **routing),
    ]
    return _build(layers, input_shape, data_format, classes, name)
