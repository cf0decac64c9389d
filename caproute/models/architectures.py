"""The two classic capsule networks as ready constructors (weights not included)."""

from __future__ import annotations

from collections.abc import Sequence

from .._lib.validation import check_bool, check_int, is_sequence, shape_str
from .layers import (
    ClassMatrixCaps,
    Conv2D,
    ConvMatrixCaps,
    DenseCaps,
    PrimaryCaps,
    PrimaryMatrixCaps,
)
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
    primary_types: int = 32,
    primary_dim: int = 8,
    primary_kernel: int = 9,
    primary_stride: int = 2,
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
    conv_channels, conv_kernel : int
        The first convolution.
    primary_types, primary_dim, primary_kernel, primary_stride : int
        The primary capsules.
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
    layers = [
        Conv2D(
            conv_channels, conv_kernel, activation="relu", data_format=data_format, name="conv1"
        ),
        PrimaryCaps(
            primary_types,
            primary_dim,
            kernel_size=primary_kernel,
            stride=primary_stride,
            order=order,
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
        ConvMatrixCaps(
            C, kernel_size=3, stride=2, competition=competition, name="conv_caps1", **routing
        ),
        ConvMatrixCaps(
            D, kernel_size=3, stride=1, competition=competition, name="conv_caps2", **routing
        ),
        ClassMatrixCaps(
            n_classes, coordinate_addition=coordinate_addition, name="class_caps", **routing
        ),
    ]
    return _build(layers, input_shape, data_format, classes, name)
