"""PyTorch state dicts of the common capsule-network layouts, mapped onto caproute models.

:func:`load_torch` reads a state dict (safetensors, ``.npz``, a ``.pt`` checkpoint through the
tensors-only conversion of :mod:`caproute.models.torch_files`, a binary file object, or a
``{name: array}`` dict), finds the layout from the tensors' names and shapes, maps every
tensor through a public table (:data:`TORCH_LAYOUTS`) and builds the network the shapes
describe. What a state dict does not record -- the activations, the routing iterations, the
EM-routing variant, the BatchNorm epsilon, the image size -- is asked for: the error lists the
choices and names the argument to pass. Nothing is ever unpickled.

Layouts (facts from the public code they come from; no code is copied):

- ``"gram-ai"``: gram-ai/capsule-networks -- ``conv1``, ``primary_capsules.capsules.<d>``
  (one convolution per capsule component ``d``; capsules flattened type-major) and
  ``digit_capsules.route_weights`` (n_out, n_in, in_dim, out_dim), ``u_hat = u @ W``.
- ``"capsnet-single-conv"``: one primary convolution whose channel ``t * dim + d`` is
  component ``d`` of type ``t`` (viewed (batch, types, dim, H, W), flattened type-major) and a
  transform ``W`` of shape (1, n_in, n_out, out_dim, in_dim) or (n_in, n_out, out_dim, in_dim)
  with ``u_hat = W @ u`` (the layout of several PyTorch ports).
- ``"matrix-em"``: yl-1993/Matrix-Capsules-EM-PyTorch -- ``conv1`` (+ ``bn1``),
  ``primary_caps.pose`` / ``primary_caps.a``, ``conv_caps<n>.weights`` (1, K*K*B, C, 4, 4)
  with ``beta_u``/``beta_a``, and ``class_caps.weights`` (1, D, E, 4, 4) shared over positions.
"""

from __future__ import annotations

import inspect
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from .._lib.validation import check_int, check_scalar, is_sequence
from .errors import WeightsFileError, WeightsMismatchError, describe_file
from .layers import (
    ClassMatrixCaps,
    Conv2D,
    ConvMatrixCaps,
    DenseCaps,
    PrimaryCaps,
    PrimaryMatrixCaps,
)
from .model import Model

__all__ = ["EM_PRESETS", "TORCH_LAYOUTS", "TRANSFORMS", "TorchLayout", "load_torch"]


# ------------------------------------------------------------------------------ transforms --
def _identity(a):
    return np.asarray(a)


def _conv(a):
    """PyTorch's (c_out, c_in, kh, kw) kernel as caproute's (kh, kw, c_in, c_out)."""
    a = np.asarray(a)
    if a.ndim != 4:
        raise ValueError(f"a convolution kernel must be 4-D (c_out, c_in, kh, kw); got {a.shape}")
    return np.ascontiguousarray(np.transpose(a, (2, 3, 1, 0)))


def _squeeze_leading(a):
    """Drop a leading axis of size 1 ((1, n_in, ...) parameters broadcast over the batch)."""
    a = np.asarray(a)
    return a[0] if a.ndim >= 1 and a.shape[0] == 1 and a.ndim > 1 else a


def _transpose_last2(a):
    """Swap the last two axes (a 4x4 transform stored transposed)."""
    a = np.asarray(a)
    return np.ascontiguousarray(np.swapaxes(a, -1, -2))


def _components(arrays):
    """One convolution per capsule component -> one convolution with channel ``t * dim + d``.

    Kernels (n_types, c_in, k, k) -> HWIO (k, k, c_in, n_types * dim); biases (n_types,) ->
    (n_types * dim,).
    """
    arrays = [np.asarray(a) for a in arrays]
    shapes = sorted({a.shape for a in arrays})
    if len(shapes) != 1:
        raise ValueError(f"the capsule components must share one shape; got {shapes}")
    stacked = np.stack(arrays, axis=1)  # (n_types, dim, ...)
    if stacked.ndim == 2:
        return stacked.reshape(-1)
    if stacked.ndim != 5:
        raise ValueError(
            f"component kernels must be 4-D (n_types, c_in, k, k); got {arrays[0].shape}"
        )
    n_types, dim = stacked.shape[:2]
    return _conv(stacked.reshape((n_types * dim,) + stacked.shape[2:]))


#: Named transforms of the mapping tables: state-dict tensor(s) -> caproute parameter.
TRANSFORMS: dict[str, Callable] = {
    "identity": _identity,
    "conv": _conv,
    "squeeze_leading": _squeeze_leading,
    "transpose_last2": _transpose_last2,
    "components": _components,
}


# --------------------------------------------------------------------------------- layouts --
class TorchLayout(NamedTuple):
    """A PyTorch state-dict layout that :func:`load_torch` maps onto a caproute network.

    Parameters
    ----------
    kind : {"dynamic", "matrix"}
        Vector capsules with dynamic routing, or matrix capsules with EM routing.
    description : str
        Where the layout comes from.
    mapping : dict of str to tuple of (str, str or callable)
        ``{caproute role: (state-dict key regex, transform)}``. A role with ``{n}`` (a
        convolution or capsule layer of a stack) matches keys whose regex group ``n`` gives
        the layer's number; the ``components`` transform gathers every key whose group
        ``index`` numbers a capsule component. Transforms are names of :data:`TRANSFORMS` or
        functions of one array.
    required : tuple of str
        Roles that must be found.
    ignore : tuple of str
        Regexes of keys that are not part of the classifier (a reconstruction decoder,
        BatchNorm's batch counter); reported as dropped.
    strides, padding : dict of str to int
        The strides and paddings of the layout's code, by caproute layer name (``"conv"``
        for every convolution without its own entry); a state dict does not record them.
    class_weight_layout : str
        The :class:`DenseCaps` ``weight_layout`` of the class transform (dynamic layouts).

    Examples
    --------
    >>> from caproute.models import TORCH_LAYOUTS
    >>> TORCH_LAYOUTS["gram-ai"].mapping["class_caps.weight"]
    ('digit_capsules\\\\.route_weights', 'identity')
    """

    kind: str
    description: str
    mapping: dict
    required: tuple
    ignore: tuple = ()
    strides: dict = {}
    padding: dict = {}
    class_weight_layout: str = "caproute"


_CONV_ROLES = {
    "conv{n}.weight": (r"conv(?P<n>\d+)\.weight", "conv"),
    "conv{n}.bias": (r"conv(?P<n>\d+)\.bias", "identity"),
    "conv{n}.bn.weight": (r"bn(?P<n>\d+)\.weight", "identity"),
    "conv{n}.bn.bias": (r"bn(?P<n>\d+)\.bias", "identity"),
    "conv{n}.bn.running_mean": (r"bn(?P<n>\d+)\.running_mean", "identity"),
    "conv{n}.bn.running_var": (r"bn(?P<n>\d+)\.running_var", "identity"),
}
_IGNORED = (r"decoder\..*", r"(?:.*\.)?num_batches_tracked")

#: The layouts :func:`load_torch` knows, by name (extend a layout's table with ``mapping=``).
TORCH_LAYOUTS: dict[str, TorchLayout] = {
    "gram-ai": TorchLayout(
        kind="dynamic",
        description=(
            "gram-ai/capsule-networks: conv1, primary_capsules.capsules.<d> (one convolution "
            "per capsule component, capsules type-major), digit_capsules.route_weights "
            "(n_out, n_in, in_dim, out_dim)"
        ),
        mapping={
            **_CONV_ROLES,
            "primary_caps.weight": (
                r"primary_capsules\.capsules\.(?P<index>\d+)\.weight",
                "components",
            ),
            "primary_caps.bias": (
                r"primary_capsules\.capsules\.(?P<index>\d+)\.bias",
                "components",
            ),
            "class_caps.weight": (r"digit_capsules\.route_weights", "identity"),
        },
        required=(
            "conv{n}.weight",
            "conv{n}.bias",
            "primary_caps.weight",
            "primary_caps.bias",
            "class_caps.weight",
        ),
        ignore=_IGNORED,
        strides={"conv": 1, "primary_caps": 2},
        padding={"conv": 0, "primary_caps": 0},
        class_weight_layout="torch",
    ),
    "capsnet-single-conv": TorchLayout(
        kind="dynamic",
        description=(
            "one primary convolution (channel t * dim + d, capsules type-major) and a class "
            "transform W (1, n_in, n_out, out_dim, in_dim) or (n_in, n_out, out_dim, in_dim), "
            "u_hat = W @ u"
        ),
        mapping={
            **_CONV_ROLES,
            "primary_caps.weight": (
                r"primary_?cap(?:sule)?s?\.(?:conv(?:2d)?|capsules)\.weight",
                "conv",
            ),
            "primary_caps.bias": (
                r"primary_?cap(?:sule)?s?\.(?:conv(?:2d)?|capsules)\.bias",
                "identity",
            ),
            "class_caps.weight": (
                r"(?:digit|class)_?cap(?:sule)?s?\.(?:W|weight|weights)",
                "squeeze_leading",
            ),
            "class_caps.bias": (r"(?:digit|class)_?cap(?:sule)?s?\.bias", "squeeze_leading"),
        },
        required=("conv{n}.weight", "primary_caps.weight", "class_caps.weight"),
        ignore=_IGNORED,
        strides={"conv": 1, "primary_caps": 2},
        padding={"conv": 0, "primary_caps": 0},
        class_weight_layout="caproute",
    ),
    "matrix-em": TorchLayout(
        kind="matrix",
        description=(
            "yl-1993/Matrix-Capsules-EM-PyTorch: conv1 (+ bn1), primary_caps.pose / "
            "primary_caps.a, conv_caps<n>.weights (1, K*K*B, C, 4, 4) + beta_u, beta_a, "
            "class_caps.weights (1, D, E, 4, 4) shared over positions"
        ),
        mapping={
            **_CONV_ROLES,
            "primary_caps.pose_weight": (r"primary_caps\.pose\.weight", "conv"),
            "primary_caps.pose_bias": (r"primary_caps\.pose\.bias", "identity"),
            "primary_caps.act_weight": (r"primary_caps\.a\.weight", "conv"),
            "primary_caps.act_bias": (r"primary_caps\.a\.bias", "identity"),
            "conv_caps{n}.weight": (r"conv_caps(?P<n>\d+)\.weights", "squeeze_leading"),
            "conv_caps{n}.beta_u": (r"conv_caps(?P<n>\d+)\.beta_u", "identity"),
            "conv_caps{n}.beta_a": (r"conv_caps(?P<n>\d+)\.beta_a", "identity"),
            "class_caps.weight": (r"class_caps\.weights", "squeeze_leading"),
            "class_caps.beta_u": (r"class_caps\.beta_u", "identity"),
            "class_caps.beta_a": (r"class_caps\.beta_a", "identity"),
        },
        required=(
            "conv{n}.weight",
            "primary_caps.pose_weight",
            "primary_caps.pose_bias",
            "primary_caps.act_weight",
            "primary_caps.act_bias",
            "conv_caps{n}.weight",
            "conv_caps{n}.beta_u",
            "conv_caps{n}.beta_a",
            "class_caps.weight",
            "class_caps.beta_u",
            "class_caps.beta_a",
        ),
        ignore=_IGNORED,
        strides={"conv": 2, "primary_caps": 1, "conv_caps1": 2, "conv_caps": 1},
        padding={"conv": 2, "primary_caps": 0},
    ),
}

#: Named EM-routing variants for ``em_options=`` (``"paper"``: caproute's defaults).
EM_PRESETS: dict[str, dict] = {
    "paper": {},
    # yl-1993/Matrix-Capsules-EM-PyTorch: fixed lambda 1e-3, eps 1e-8 added to the variance
    # and to the divisors, R a renormalised over the parents before the M-step, coordinate
    # addition y / H, x / W into vote entries 0 and 1, V = M W
    "yl-1993": {
        "inverse_temperature": 1e-3,
        "min_var": 1e-8,
        "eps": 1e-8,
        "mass_floor": "add",
        "renormalize_assignments": True,
        "coordinate_addition": True,
        "coordinate_grid": "index",
        "coordinate_entries": (0, 1),
    },
}

_CLASS_ONLY = ("coordinate_addition", "coordinate_grid", "coordinate_values", "coordinate_entries")
_CONV_ONLY = ("competition", "competition_init")
_ACTIVATION_CHOICES = (
    "'relu', {'name': 'leaky_relu', 'negative_slope': 0.01}, 'elu', 'gelu', 'gelu_tanh', "
    "'selu', 'swish', 'sigmoid', 'tanh', 'softplus' or 'linear'"
)


# ------------------------------------------------------------------------------ public API --
def load_torch(
    source: Any,
    *,
    layout: str | None = None,
    mapping: Mapping[str, tuple] | None = None,
    activation: Any = None,
    n_iter: int | None = None,
    input_shape: Sequence[int] | None = None,
    em_options: str | Mapping[str, Any] | None = None,
    batchnorm_eps: float | None = None,
    strides: Mapping[str, int] | None = None,
    padding: Mapping[str, int] | None = None,
    classes: Sequence[str] | None = None,
    squash_eps: float = 1e-8,
    name: str | None = None,
) -> Model:
    """Build a caproute network from a PyTorch state dict of a known capsule-network layout.

    The layout is found from the tensors' names and shapes (or named by ``layout``); every
    tensor is mapped through the layout's table (:data:`TORCH_LAYOUTS`, extended or
    overridden by ``mapping``); every dimension the shapes determine is read from them (filter
    counts, kernel sizes, capsule types and dimensions, classes). What a state dict does not
    record must be given -- ``activation``, ``n_iter``, ``input_shape``, for matrix capsules
    ``em_options``, and ``batchnorm_eps`` when it holds BatchNorm tensors -- else a
    ``ValueError`` lists the choices and names the argument. Nothing is guessed silently; the
    choices taken are listed in ``model.metadata["import"]["notes"]``.

    Parameters
    ----------
    source : str, os.PathLike, binary file object or dict
        A ``.safetensors`` or ``.npz`` file, a PyTorch checkpoint (``.pt``/``.pth``, read by
        :func:`caproute.models.torch_files.convert_torch_checkpoint`: tensors only, needs
        torch), an open binary file of one of these, or a ``{name: array}`` state dict.
    layout : str, optional
        A key of :data:`TORCH_LAYOUTS`; None finds it from the tensors.
    mapping : dict, optional
        ``{caproute role: (key regex, transform)}`` entries that replace or extend the
        layout's table (see :class:`TorchLayout`); e.g. ``{"class_caps.weight":
        (r"caps\\.W", "squeeze_leading")}`` for a file whose names differ.
    activation : str, dict or list
        The activation after every convolution before the capsules (one spec, or one per
        convolution): ``"relu"``, ``{"name": "leaky_relu", "negative_slope": 0.01}``
        (PyTorch's default slope), ``"elu"``, ``"gelu"``, ... or ``"linear"``.
    n_iter : int
        Routing iterations of every capsule layer.
    input_shape : tuple of int
        (H, W, C) of the images; C must be the first convolution's input channels.
    em_options : str or dict, optional
        Matrix capsules only: a key of :data:`EM_PRESETS` (``"yl-1993"``, ``"paper"``) or a
        dict of EM-routing and matrix-capsule options (``inverse_temperature``, ``min_var``,
        ``eps``, ``mass_floor``, ``renormalize_assignments``, ``pose_momentum``,
        ``coordinate_grid``, ``coordinate_entries``, ``weight_layout``, ...; see
        :class:`ConvMatrixCaps`); options it leaves out take caproute's defaults.
    batchnorm_eps : float, optional
        The ``eps`` of the BatchNorm layers, needed when the state dict holds BatchNorm
        tensors (PyTorch's default is 1e-5; yl-1993's network uses 0.001).
    strides, padding : dict of str to int, optional
        Strides and paddings by caproute layer name (``"conv1"``, ``"primary_caps"``,
        ``"conv_caps1"``, or ``"conv"`` for every convolution), replacing the layout's.
    classes : sequence of str, optional
        Class names, in output order.
    squash_eps : float, default=1e-8
        ``eps`` inside squash's square root (dynamic layouts).
    name : str, optional
        The model's name (default: the layout's).

    Returns
    -------
    model : Model
        NHWC, with the converted weights; ``metadata["import"]`` holds the source, the layout,
        the dropped tensors and notes on every choice.

    Raises
    ------
    ValueError
        If a fact the state dict does not record is missing (the message lists the choices
        and the argument), or an argument is invalid.
    WeightsMismatchError
        Listing every missing, unknown or misshapen tensor, with the hint that explains it.
    WeightsFileError
        If `source` cannot be read as a state dict (a pickle, a damaged file, ...).
    TypeError
        If an argument is of the wrong type.

    Examples
    --------
    A gram-ai CapsNet state dict (random here):

    >>> import numpy as np
    >>> from caproute.models import load_torch
    >>> rng = np.random.default_rng(0)
    >>> sd = {"conv1.weight": rng.normal(size=(16, 1, 9, 9)), "conv1.bias": np.zeros(16),
    ...       "digit_capsules.route_weights": rng.normal(size=(10, 4 * 6 * 6, 8, 16))}
    >>> for d in range(8):
    ...     sd[f"primary_capsules.capsules.{d}.weight"] = rng.normal(size=(4, 16, 9, 9))
    ...     sd[f"primary_capsules.capsules.{d}.bias"] = np.zeros(4)
    >>> net = load_torch(sd, activation="relu", n_iter=3, input_shape=(28, 28, 1))
    >>> net.predict_proba(np.zeros((2, 28, 28), dtype=np.uint8)).shape
    (2, 10)

    What the file does not say is asked for:

    >>> load_torch(sd, n_iter=3, input_shape=(28, 28, 1))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: `activation` is not recorded in a PyTorch state dict: pass activation=...
    """
    if layout is not None and layout not in TORCH_LAYOUTS:
        raise ValueError(
            f"`layout` must be one of {sorted(TORCH_LAYOUTS)} or None (found from the "
            f"tensors); got {layout!r}."
        )
    mapping = _check_mapping(mapping)
    if n_iter is not None:
        n_iter = check_int(n_iter, name="n_iter", min_value=1)
    if input_shape is not None:
        input_shape = _check_input_shape(input_shape)
    if batchnorm_eps is not None:
        batchnorm_eps = check_scalar(
            batchnorm_eps, name="batchnorm_eps", low=0, low_inclusive=False
        )
    strides = _check_int_dict(strides, "strides", 1)
    padding = _check_int_dict(padding, "padding", 0)
    squash_eps = check_scalar(squash_eps, name="squash_eps", low=0, low_inclusive=False)
    if classes is not None:
        if isinstance(classes, (str, bytes)) or not is_sequence(classes):
            raise TypeError(
                f"`classes` must be a sequence of str, one per class; got {type(classes).__name__}."
            )
        classes = [str(c) for c in classes]
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError(f"`name` must be a non-empty str; got {name!r}.")

    sd, where = _read_source(source)
    sd, cleaned = _clean(sd)
    chosen, found, dropped = _match(sd, layout, mapping, where)
    spec = TORCH_LAYOUTS[chosen]
    notes = [f"layout {chosen!r} ({spec.description})"]
    if layout is None:
        notes[0] = "found " + notes[0] + " from the tensor names"
    notes += cleaned
    if dropped:
        notes.append(f"dropped {len(dropped)} tensors not used for classification: {dropped}")
    hints = dict(
        activation=activation,
        n_iter=n_iter,
        input_shape=input_shape,
        batchnorm_eps=batchnorm_eps,
        strides={**spec.strides, **strides},
        padding={**spec.padding, **padding},
        squash_eps=squash_eps,
    )
    what = f"{chosen} state dict {where}"
    if spec.kind == "dynamic":
        layers, shape, weights = _build_dynamic(found, spec, hints, notes, what)
    else:
        layers, shape, weights = _build_matrix(found, spec, hints, em_options, notes, what)
    for arg, given in (("strides", strides), ("padding", padding)):
        names = [
            layer.name
            for layer in layers
            if hasattr(layer, arg.rstrip("s") if arg == "strides" else arg)
        ]
        unknown = sorted(set(given) - set(names) - {"conv", "conv_caps"})
        if unknown:
            raise ValueError(
                f"`{arg}` names no layer of this network that has one: {unknown}; the layers "
                f"with {arg} are {names} (or 'conv' for every convolution)."
            )
    try:
        model = Model(layers, shape, classes=classes, name=name or chosen)
    except ValueError as exc:
        raise ValueError(f"{what}: the network does not fit input_shape={shape}: {exc}") from None
    model.set_weights(weights)
    model.metadata = {
        **model.metadata,
        "import": {
            "source": where,
            "format": "torch-state-dict",
            "layout": chosen,
            "dropped": dropped,
            "notes": notes,
        },
    }
    return model


# ------------------------------------------------------------------------------- arguments --
def _check_mapping(mapping):
    if mapping is None:
        return {}
    if not isinstance(mapping, Mapping):
        raise TypeError(
            "`mapping` must be a dict {caproute role: (key regex, transform)}; got "
            f"{type(mapping).__name__}."
        )
    out = {}
    for role, entry in mapping.items():
        if not isinstance(role, str) or not role:
            raise TypeError(f"`mapping` keys must be caproute role names (str); got {role!r}.")
        if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str)):
            raise TypeError(
                f"`mapping[{role!r}]` must be a pair (key regex, transform); got {entry!r}."
            )
        pattern, transform = entry
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(
                f"`mapping[{role!r}]` has an invalid regex {pattern!r}: {exc}."
            ) from None
        if not callable(transform) and transform not in TRANSFORMS:
            raise ValueError(
                f"`mapping[{role!r}]` transform must be one of {sorted(TRANSFORMS)} or a "
                f"function; got {transform!r}."
            )
        out[role] = (pattern, transform)
    return out


def _check_input_shape(shape):
    expected = f"`input_shape` must be (H, W, C), 3 integers >= 1; got {shape!r}."
    if isinstance(shape, (str, bytes)) or not is_sequence(shape):
        raise TypeError(expected)
    if len(shape) != 3:
        raise ValueError(expected)
    return tuple(check_int(s, name="input_shape", min_value=1) for s in shape)


def _check_int_dict(value, arg, low):
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(
            f"`{arg}` must be a dict of layer name to int (e.g. {{'conv1': 2}}); got "
            f"{type(value).__name__}."
        )
    return {str(k): check_int(v, name=f"{arg}[{k!r}]", min_value=low) for k, v in value.items()}


# ----------------------------------------------------------------------------------- files --
def _read_source(source):
    """(state dict of NumPy arrays, a description of where it came from)."""
    from .importers import read_state_dict

    if isinstance(source, Mapping):
        sd = {}
        for key, value in source.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"`source` must map tensor names (str) to arrays; got the key {key!r}."
                )
            sd[key] = _host_array(value, key)
        return sd, "the state dict"
    if hasattr(source, "read") and not isinstance(source, (str, bytes, os.PathLike)):
        label = getattr(source, "name", None)
        label = repr(label) if isinstance(label, str) else "the file object"
        try:
            data = source.read()
        except (OSError, ValueError) as exc:
            raise WeightsFileError(f"{label} could not be read: {exc}.") from None
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(
                f"`source` as a file object must be opened in binary mode ('rb'); {label} "
                f"returned {type(data).__name__}."
            )
        with tempfile.TemporaryDirectory(prefix="caproute-torch-") as tmp:
            path = os.path.join(tmp, "source")
            with open(path, "wb") as f:
                f.write(data)
            try:
                sd, _ = _read_path(path, read_state_dict)
            except WeightsFileError as exc:
                raise WeightsFileError(str(exc).replace(repr(path), label)) from None
        return sd, label
    if isinstance(source, bool) or not isinstance(source, (str, bytes, os.PathLike)):
        raise TypeError(
            "`source` must be a path, a binary file object or a dict of arrays; got "
            f"{type(source).__name__}."
        )
    path = os.fsdecode(os.fspath(source))
    return _read_path(path, read_state_dict)


def _read_path(path, read_state_dict):
    if not os.path.exists(path):
        raise FileNotFoundError(2, "`source` does not exist", path)
    kind, _ = describe_file(path)
    if kind in ("torch-zip", "torch-legacy"):
        from .torch_files import convert_torch_checkpoint

        with tempfile.TemporaryDirectory(prefix="caproute-torch-") as tmp:
            target = os.path.join(tmp, "state_dict.safetensors")
            copy = os.path.join(tmp, "checkpoint.pt")
            shutil.copyfile(path, copy)
            try:
                convert_torch_checkpoint(copy, target)
            except WeightsFileError as exc:
                raise WeightsFileError(str(exc).replace(repr(copy), repr(path))) from None
            return read_state_dict(target), repr(path)
    if kind == "safetensors":
        from .serialization import ARCHITECTURE_KEY
        from .weights_file import load_file

        tensors, meta = load_file(path)
        if ARCHITECTURE_KEY in meta:
            raise WeightsFileError(
                f"{path!r} is a caproute model file, not a PyTorch state dict: read it with "
                "caproute.models.load."
            )
        return tensors, repr(path)
    return read_state_dict(path), repr(path)


def _host_array(value, key):
    try:
        arr = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 -- whatever it is, it is not an array
        raise TypeError(
            f"`source[{key!r}]` is not an array ({type(value).__name__}: {exc})."
        ) from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"`source[{key!r}]` is not an array of real numbers (dtype {arr.dtype}).")
    return arr


def _clean(sd):
    """Undo two common wrappers: the ``module.`` prefix of ``nn.DataParallel`` (on every key)
    and half-precision tensors (widened exactly to float32). Returns (state dict, notes)."""
    notes = []
    if len(sd) and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
        notes.append("removed the 'module.' prefix of every tensor name (nn.DataParallel)")
    half = sorted(k for k, v in sd.items() if v.dtype == np.float16)
    if half:
        sd = {k: v.astype(np.float32) if k in half else v for k, v in sd.items()}
        notes.append(f"widened {len(half)} float16 tensors to float32 (exactly)")
    return sd, notes


# -------------------------------------------------------------------------------- matching --
class _Found(NamedTuple):
    arrays: dict  # role instance -> array (transformed)
    keys: dict  # role instance -> state-dict key(s)


def _role_regexes(layout_name, mapping):
    table = {**TORCH_LAYOUTS[layout_name].mapping, **mapping}
    return {role: (re.compile(p), t) for role, (p, t) in table.items()}


def _try_layout(sd, layout_name, mapping):
    """(problems, matched {instance: (keys, transform)}, unknown keys, dropped keys)."""
    spec = TORCH_LAYOUTS[layout_name]
    regexes = _role_regexes(layout_name, mapping)
    matched, used = {}, set()
    for role, (rx, transform) in regexes.items():
        for key in sorted(sd):
            m = rx.fullmatch(key)
            if not m:
                continue
            groups = m.groupdict()
            instance = role.replace("{n}", groups["n"]) if "{n}" in role else role
            entry = matched.setdefault(instance, ([], transform))
            index = int(groups["index"]) if groups.get("index") is not None else None
            entry[0].append((index, key))
            used.add(key)
    ignore = [re.compile(p) for p in spec.ignore]
    dropped = sorted(k for k in sd if k not in used and any(rx.fullmatch(k) for rx in ignore))
    unknown = sorted(k for k in sd if k not in used and k not in dropped)
    problems = []
    for role in spec.required:
        if "{n}" in role:
            prefix, suffix = role.split("{n}")
            numbers = [
                m.group(1)
                for i in matched
                if (m := re.fullmatch(re.escape(prefix) + r"(\d+)\.weight", i))
            ]
            if suffix != ".weight" and numbers:
                problems += [
                    f"missing tensor {prefix + n + suffix!r} ({regexes[role][0].pattern})"
                    for n in numbers
                    if prefix + n + suffix not in matched
                ]
            elif not any(i.startswith(prefix) and i.endswith(suffix) for i in matched):
                problems.append(f"missing tensors for {role} ({regexes[role][0].pattern})")
        elif role not in matched:
            problems.append(f"missing tensor for {role} ({regexes[role][0].pattern})")
    for instance, (keys, _) in matched.items():
        indexed = [i for i, _ in keys if i is not None]
        if indexed:
            keys.sort()
            missing = sorted(set(range(max(indexed) + 1)) - set(indexed))
            if missing:
                problems.append(
                    f"{instance}: missing component tensor(s) {missing} (the others are "
                    f"numbered up to {max(indexed)}: {[k for _, k in keys][:2]}, ...)"
                )
        elif len(keys) > 1:
            problems.append(f"{instance} matches several tensors: {[k for _, k in keys]}")
    problems += [f"unknown tensor {k!r}" for k in unknown]
    return problems, matched, dropped


def _match(sd, layout, mapping, where):
    if not sd:
        raise WeightsMismatchError(where, ["it holds no tensors"])
    names = [layout] if layout is not None else list(TORCH_LAYOUTS)
    results = {n: _try_layout(sd, n, mapping) for n in names}
    fits = [n for n in names if not results[n][0]]
    if len(fits) > 1:
        raise ValueError(
            f"{where} fits several layouts ({', '.join(map(repr, fits))}): pass layout= one of "
            "them."
        )
    if not fits:
        best = min(names, key=lambda n: len(results[n][0]))
        problems = list(results[best][0])
        if layout is None:
            problems.append(
                f"(closest known layout: {best!r}; the layouts are {sorted(TORCH_LAYOUTS)}: "
                "pass layout= and mapping= {caproute role: (key regex, transform)} for names "
                "that differ)"
            )
        raise WeightsMismatchError(f"{best} state dict {where}", problems)
    chosen = fits[0]
    _, matched, dropped = results[chosen]
    arrays, keys, problems = {}, {}, []
    for instance, (entries, transform) in matched.items():
        func = transform if callable(transform) else TRANSFORMS[transform]
        tensors = [sd[k] for _, k in entries]
        names_ = [k for _, k in entries]
        try:
            value = func(tensors) if transform == "components" else func(tensors[0])
            arrays[instance] = np.asarray(value)
        except Exception as exc:  # noqa: BLE001 -- a transform refusing a shape
            problems.append(f"{', '.join(map(repr, names_))} ({instance}): {exc}")
        keys[instance] = names_ if len(names_) > 1 else names_[0]
    if problems:
        raise WeightsMismatchError(f"{chosen} state dict {where}", problems)
    return chosen, _Found(arrays, keys), dropped


# -------------------------------------------------------------------------------- building --
def _stack(found, prefix, suffix=".weight"):
    """Numbers of the layers ``<prefix><n><suffix>`` found, ascending."""
    rx = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(suffix))
    return sorted(int(m.group(1)) for k in found.arrays if (m := rx.fullmatch(k)))


def _shape(a):
    return str(tuple(int(s) for s in a.shape))


def _require(value, message):
    if value is None:
        raise ValueError(message)
    return value


def _activations(activation, n_convs, where):
    if activation is None:
        raise ValueError(
            "`activation` is not recorded in a PyTorch state dict: pass activation= the "
            f"function after the convolution{'s' if n_convs > 1 else ''} ({where} has "
            f"{n_convs}), one of {_ACTIVATION_CHOICES}"
            + (", or a list of one per convolution." if n_convs > 1 else ".")
        )
    if isinstance(activation, list):
        if len(activation) != n_convs:
            raise ValueError(
                f"`activation` as a list needs one entry per convolution ({n_convs}); got "
                f"{len(activation)}."
            )
        return list(activation)
    return [activation] * n_convs


def _n_iter(n_iter, what):
    return _require(
        n_iter,
        f"`n_iter` is not recorded in a PyTorch state dict: pass n_iter= the routing "
        f"iterations of the {what} (the papers use 3; check the code that trained it).",
    )


def _stride(hints, layer, group):
    return hints["strides"].get(layer, hints["strides"].get(group, 1))


def _pad(hints, layer, group):
    return hints["padding"].get(layer, hints["padding"].get(group, 0))


def _fold(found, n, weight, bias, hints, notes, problems):
    """The convolution's weight and bias with its BatchNorm folded in (if the state dict
    holds one)."""
    parts = {
        p: found.arrays.get(f"conv{n}.bn.{p}")
        for p in ("weight", "bias", "running_mean", "running_var")
    }
    if all(v is None for v in parts.values()):
        return weight, bias
    if parts["running_mean"] is None or parts["running_var"] is None:
        problems.append(f"bn{n}: running_mean and running_var are both needed")
        return weight, bias
    eps = hints["batchnorm_eps"]
    if eps is None:
        raise ValueError(
            f"the state dict holds a BatchNorm after conv{n}, whose epsilon it does not record: "
            "pass batchnorm_eps= the eps of its BatchNorm2d (PyTorch's default 1e-5; "
            "yl-1993's Matrix-Capsules-EM-PyTorch uses 0.001)."
        )
    c_out = weight.shape[-1]
    for p, v in parts.items():
        if v is not None and v.shape != (c_out,):
            problems.append(
                f"bn{n}.{p} has shape {_shape(v)}; expected ({c_out},), one per conv{n} channel"
            )
    if problems:
        return weight, bias
    folded = _fold_batchnorm(
        weight,
        bias,
        parts["weight"],
        parts["bias"],
        parts["running_mean"],
        parts["running_var"],
        eps,
    )
    notes.append(f"BatchNorm bn{n} (eps {eps:g}) folded into conv{n} (inference mode)")
    return folded


def _fold_batchnorm(weight, bias, gamma, beta, mean, var, eps):
    try:
        from .layers.batch_norm import fold_batchnorm
    except ImportError:  # pragma: no cover -- before helper LAYERS' module exists
        fold_batchnorm = None
    if fold_batchnorm is not None:
        return fold_batchnorm(weight, bias, gamma, beta, mean, var, eps)
    dtype = np.result_type(weight, np.float32)  # pragma: no cover
    scale = (1.0 if gamma is None else gamma.astype(np.float64)) / np.sqrt(
        var.astype(np.float64) + eps
    )
    b = 0.0 if bias is None else bias.astype(np.float64)
    shift = (0.0 if beta is None else beta.astype(np.float64)) + (b - mean) * scale
    return (weight * scale).astype(dtype), np.broadcast_to(shift, var.shape).astype(dtype)


def _conv_layers(found, hints, notes, problems, where):
    """Conv2D layers conv<n> of the state dict, in order, and their weights."""
    numbers = _stack(found, "conv")
    acts = _activations(hints["activation"], len(numbers), where)
    layers, weights, c_prev = [], {}, None
    for n, act in zip(numbers, acts, strict=True):
        w = found.arrays[f"conv{n}.weight"]
        b = found.arrays.get(f"conv{n}.bias")
        if w.ndim != 4 or w.shape[0] != w.shape[1]:
            problems.append(
                f"conv{n}.weight must be 4-D with a square kernel; got {_shape(w)} (HWIO)"
            )
            continue
        if b is not None and b.shape != (w.shape[3],):
            problems.append(f"conv{n}.bias has shape {_shape(b)}; expected ({w.shape[3]},)")
            continue
        if c_prev is not None and w.shape[2] != c_prev:
            problems.append(
                f"conv{n}.weight takes {w.shape[2]} input channels but the convolution before "
                f"it gives {c_prev}"
            )
        c_prev = w.shape[3]
        w, b = _fold(found, n, w, b, hints, notes, problems)
        name = f"conv{n}"
        layers.append(
            Conv2D(
                int(w.shape[3]),
                int(w.shape[0]),
                stride=_stride(hints, name, "conv"),
                padding=_pad(hints, name, "conv"),
                activation=act,
                use_bias=b is not None,
                name=name,
            )
        )
        weights[f"{name}.weight"] = w
        if b is not None:
            weights[f"{name}.bias"] = b
    c_in = int(found.arrays[f"conv{numbers[0]}.weight"].shape[2]) if numbers else None
    return layers, weights, c_in, c_prev


def _out(n, k, s, p):
    return (n + 2 * p - k) // s + 1 if n + 2 * p >= k else 0


def _grid_side(side, convs):
    for k, s, p in convs:
        side = _out(side, k, s, p)
        if side <= 0:
            return 0
    return side


def _input_shape(hints, c_in, where, convs=None, positions=None, what=""):
    """The input_shape hint, or an error listing the square sizes that fit the tensors."""
    shape = hints["input_shape"]
    if shape is None:
        advice = f"input_shape=(H, W, {c_in})"
        if convs is not None and positions is not None:
            sides = [s for s in range(1, 1025) if _grid_side(s, convs) ** 2 == positions]
            if sides:
                listed = " or ".join(str(s) for s in sides[:6])
                advice = (
                    f"the tensors fit square images of {listed} pixels: pass "
                    f"input_shape=({sides[-1]}, {sides[-1]}, {c_in}) or the size it was trained on"
                )
        raise ValueError(
            f"`input_shape` is not recorded in a PyTorch state dict ({where}{what}): {advice}."
        )
    if shape[2] != c_in:
        raise WeightsMismatchError(
            where,
            [
                f"conv1 takes {c_in} input channels but input_shape={shape} has {shape[2]}: pass "
                f"input_shape=({shape[0]}, {shape[1]}, {c_in})"
            ],
        )
    return shape


def _build_dynamic(found, spec, hints, notes, where):
    problems = []
    layers, weights, c_in, c_conv = _conv_layers(found, hints, notes, problems, where)
    pw = found.arrays["primary_caps.weight"]
    pb = found.arrays.get("primary_caps.bias")
    W = found.arrays["class_caps.weight"]
    bias = found.arrays.get("class_caps.bias")
    wl = spec.class_weight_layout
    if pw.ndim != 4 or pw.shape[0] != pw.shape[1]:
        problems.append(f"primary_caps.weight must be a square 4-D kernel; got {_shape(pw)} (HWIO)")
    elif c_conv is not None and pw.shape[2] != c_conv:
        problems.append(
            f"the primary capsules take {pw.shape[2]} input channels but the last convolution "
            f"gives {c_conv}"
        )
    if W.ndim != 4:
        axes = (
            "(n_out, n_in, in_dim, out_dim)" if wl == "torch" else "(n_in, n_out, out_dim, in_dim)"
        )
        problems.append(f"the class transform must be 4-D {axes}; got {_shape(W)}")
    if problems:
        raise WeightsMismatchError(where, problems)
    if wl == "torch":  # (n_out, n_in, in_dim, out_dim)
        n_out, n_in, in_dim, out_dim = W.shape
    else:  # caproute: (n_in, n_out, out_dim, in_dim)
        n_in, n_out, out_dim, in_dim = W.shape
    if "primary_caps.weight" in found.keys and isinstance(found.keys["primary_caps.weight"], list):
        dim = len(found.keys["primary_caps.weight"])  # one convolution per component
        if in_dim != dim:
            problems.append(
                f"the class transform {_shape(W)} takes {in_dim}-D capsules but there are {dim} "
                "primary capsule components"
            )
    else:
        dim = in_dim  # the primary capsules' dimension is the transform's input dimension
    channels = int(pw.shape[3])
    if channels % dim:
        problems.append(
            f"the primary convolution has {channels} channels, not a multiple of the capsule "
            f"dimension {dim} (the class transform's in_dim)"
        )
    if pb is not None and pb.shape != (channels,):
        problems.append(f"primary_caps.bias has shape {_shape(pb)}; expected ({channels},)")
    if bias is not None and bias.shape != (n_out, out_dim):
        problems.append(f"class_caps.bias has shape {_shape(bias)}; expected ({n_out}, {out_dim})")
    if problems:
        raise WeightsMismatchError(where, problems)
    n_types = channels // dim
    n_iter = _n_iter(hints["n_iter"], "class capsules (dynamic routing)")
    convs = [(lay.kernel_size, lay.stride, lay.padding) for lay in layers]
    k2 = int(pw.shape[0])
    s2, p2 = (
        _stride(hints, "primary_caps", "primary_caps"),
        _pad(hints, "primary_caps", "primary_caps"),
    )
    convs.append((k2, s2, p2))
    positions = n_in // n_types if n_in % n_types == 0 else None
    shape = _input_shape(hints, c_in, where, convs, positions, ", dynamic capsules")
    gh, gw = _grid_side(shape[0], convs), _grid_side(shape[1], convs)
    stride_text = ", ".join(f"{lay.name} {lay.stride}" for lay in layers) + f", primary_caps {s2}"
    if gh * gw * n_types != n_in:
        sides = [s for s in range(1, 1025) if positions and _grid_side(s, convs) ** 2 == positions]
        advice = (
            f"it was made for square images of {' or '.join(map(str, sides[:6]))} pixels: pass "
            f"input_shape=({sides[-1]}, {sides[-1]}, {c_in})"
            if sides
            else "check input_shape and the strides (strides=, padding=)"
        )
        raise WeightsMismatchError(
            where,
            [
                f"the class transform has {n_in} input capsules, but input_shape={shape} gives "
                f"{gh * gw * n_types} ({gh}x{gw} positions x {n_types} capsule types); {advice}"
                f" -- or the strides differ from those assumed ({stride_text}): pass strides="
            ],
        )
    primary_kwargs = dict(
        kernel_size=k2,
        stride=s2,
        order="type-major",
        squash_eps=hints["squash_eps"],
        name="primary_caps",
    )
    if p2:
        primary_kwargs["padding"] = p2
    layers.append(PrimaryCaps(n_types, dim, **primary_kwargs))
    layers.append(
        DenseCaps(
            int(n_out),
            int(out_dim),
            n_iter=n_iter,
            weight_layout=wl,
            use_bias=bias is not None,
            squash_eps=hints["squash_eps"],
            name="class_caps",
        )
    )
    weights["primary_caps.weight"] = pw
    weights["primary_caps.bias"] = pb if pb is not None else np.zeros(channels, pw.dtype)
    weights["class_caps.weight"] = W
    if bias is not None:
        weights["class_caps.bias"] = bias
    notes.append(
        f"activation {hints['activation']!r}, {n_iter} routing iterations, input_shape {shape}: "
        "given"
    )
    notes.append(
        "dynamic routing as in the paper (softmax over parents, logits reset per image); "
        "gram-ai's own code takes the softmax over children (its issue 10), which caproute "
        "does not reproduce"
        if spec.class_weight_layout == "torch"
        else "dynamic routing as in the paper (softmax over parents, logits reset per image)"
    )
    return layers, shape, weights


def _em_options(em_options, notes):
    if em_options is None:
        raise ValueError(
            "the EM-routing variant is not recorded in a PyTorch state dict: pass em_options= "
            f"one of {sorted(EM_PRESETS)} (yl-1993: the PyTorch port Matrix-Capsules-EM-PyTorch; "
            "paper: caproute's defaults) or a dict of options (inverse_temperature, min_var, "
            "eps, mass_floor, renormalize_assignments, pose_momentum, e_step_norm, "
            "e_step_log_var_weight, cost_log_var, last_inverse_temperature, weight_layout, "
            "coordinate_addition, coordinate_grid, coordinate_entries, competition, "
            "competition_init)."
        )
    if isinstance(em_options, str):
        if em_options not in EM_PRESETS:
            raise ValueError(
                f"`em_options` must be one of {sorted(EM_PRESETS)} or a dict; got {em_options!r}."
            )
        notes.append(f"EM routing: preset {em_options!r} {EM_PRESETS[em_options]}")
        return dict(EM_PRESETS[em_options])
    if not isinstance(em_options, Mapping):
        raise TypeError(
            f"`em_options` must be a preset name (str) or a dict; got {type(em_options).__name__}."
        )
    options = dict(em_options)
    accepted = set(inspect.signature(ConvMatrixCaps).parameters) | set(
        inspect.signature(ClassMatrixCaps).parameters
    )
    # what the shapes or the layout decide is not an option here
    accepted -= {
        "out_types",
        "n_classes",
        "kernel_size",
        "stride",
        "name",
        "n_iter",
        "beta_per_pose",
    }
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(
            f"`em_options` has unknown option(s) {unknown}; the options are {sorted(accepted)}."
        )
    notes.append(f"EM routing: options {options} (the others: caproute's defaults)")
    return options


def _split_em(options):
    conv_params = set(inspect.signature(ConvMatrixCaps).parameters)
    class_params = set(inspect.signature(ClassMatrixCaps).parameters)
    conv = {k: v for k, v in options.items() if k in conv_params and k not in _CLASS_ONLY}
    cls = {k: v for k, v in options.items() if k in class_params and k not in _CONV_ONLY}
    return conv, cls


def _build_matrix(found, spec, hints, em_options, notes, where):
    problems = []
    layers, weights, c_in, c_conv = _conv_layers(found, hints, notes, problems, where)
    a = found.arrays
    pose_w, pose_b = a["primary_caps.pose_weight"], a["primary_caps.pose_bias"]
    act_w, act_b = a["primary_caps.act_weight"], a["primary_caps.act_bias"]
    if pose_w.ndim != 4 or pose_w.shape[3] % 16:
        problems.append(
            f"primary_caps.pose.weight must be 4-D with B * 16 output channels; got "
            f"{_shape(pose_w)} (HWIO)"
        )
    if problems:
        raise WeightsMismatchError(where, problems)
    B = int(pose_w.shape[3]) // 16
    if act_w.shape != pose_w.shape[:3] + (B,):
        problems.append(
            f"primary_caps.a.weight has shape {_shape(act_w)} (HWIO); expected "
            f"{pose_w.shape[:3] + (B,)} (B={B} types from primary_caps.pose.weight)"
        )
    if pose_b.shape != (B * 16,) or act_b.shape != (B,):
        problems.append(
            f"primary_caps biases have shapes {_shape(pose_b)}, {_shape(act_b)}; expected "
            f"({B * 16},), ({B},)"
        )
    if c_conv is not None and pose_w.shape[2] != c_conv:
        problems.append(
            f"the primary capsules take {pose_w.shape[2]} input channels but the last "
            f"convolution gives {c_conv}"
        )
    n_iter = _n_iter(hints["n_iter"], "matrix-capsule layers (EM routing)")
    options = _em_options(em_options, notes)
    conv_opts, class_opts = _split_em(options)
    weight_transposed = options.get("weight_layout") == "transposed"
    k_p = int(pose_w.shape[0])
    layers.append(
        PrimaryMatrixCaps(
            B,
            kernel_size=k_p,
            stride=_stride(hints, "primary_caps", "primary_caps"),
            name="primary_caps",
        )
    )
    weights.update(
        {
            "primary_caps.pose_weight": pose_w,
            "primary_caps.pose_bias": pose_b,
            "primary_caps.act_weight": act_w,
            "primary_caps.act_bias": act_b,
        }
    )
    t_in = B
    for n in _stack(found, "conv_caps"):
        name = f"conv_caps{n}"
        W = a[f"{name}.weight"]
        if W.ndim != 4 or W.shape[2:] != (4, 4) or W.shape[0] % t_in:
            problems.append(
                f"{name}.weights must be (1, K*K*{t_in}, C, 4, 4) ({t_in} input types); got "
                f"{found.keys[f'{name}.weight']!r} of shape {_shape(W)} after dropping the "
                "leading axis"
            )
            continue
        kk = W.shape[0] // t_in
        k = math.isqrt(kk)
        if k * k != kk:
            problems.append(
                f"{name}.weights has {W.shape[0]} = {kk} x {t_in} input capsules per field: "
                f"{kk} is not a square K*K"
            )
            continue
        C = int(W.shape[1])
        beta_u, beta_a = a[f"{name}.beta_u"], a[f"{name}.beta_a"]
        per_pose = beta_u.shape == (C, 16)
        if beta_u.shape not in ((C,), (C, 16)) or beta_a.shape != (C,):
            problems.append(
                f"{name}.beta_u / beta_a have shapes {_shape(beta_u)}, {_shape(beta_a)}; "
                f"expected ({C},) or ({C}, 16), and ({C},)"
            )
            continue
        layers.append(
            ConvMatrixCaps(
                C,
                kernel_size=k,
                stride=_stride(hints, name, "conv_caps"),
                n_iter=n_iter,
                beta_per_pose=per_pose,
                name=name,
                **conv_opts,
            )
        )
        weights[f"{name}.weight"] = W.reshape(k, k, t_in, C, 4, 4)
        weights[f"{name}.beta_u"] = beta_u
        weights[f"{name}.beta_a"] = beta_a
        t_in = C
    W = a["class_caps.weight"]
    beta_u, beta_a = a["class_caps.beta_u"], a["class_caps.beta_a"]
    if W.ndim != 4 or W.shape[0] != t_in or W.shape[2:] != (4, 4):
        problems.append(
            f"class_caps.weights must be (1, {t_in}, E, 4, 4) ({t_in} input types); got "
            f"{_shape(W)} after dropping the leading axis"
        )
    else:
        E = int(W.shape[1])
        if beta_u.shape not in ((E,), (E, 16)) or beta_a.shape != (E,):
            problems.append(
                f"class_caps.beta_u / beta_a have shapes {_shape(beta_u)}, {_shape(beta_a)}; "
                f"expected ({E},) or ({E}, 16), and ({E},)"
            )
    if problems:
        raise WeightsMismatchError(where, problems)
    layers.append(
        ClassMatrixCaps(
            E,
            n_iter=n_iter,
            beta_per_pose=beta_u.shape == (E, 16),
            name="class_caps",
            **class_opts,
        )
    )
    weights.update(
        {"class_caps.weight": W, "class_caps.beta_u": beta_u, "class_caps.beta_a": beta_a}
    )
    shape = _input_shape(hints, c_in, where, what=", matrix capsules: any size the layers fit")
    notes.append(
        f"activation {hints['activation']!r}, {n_iter} routing iterations, input_shape {shape}: "
        "given"
    )
    if weight_transposed:
        notes.append("4x4 transforms used transposed (V = M W^T), as em_options asked")
    notes.append(
        "strides "
        + ", ".join(f"{lay.name} {lay.stride}" for lay in layers if hasattr(lay, "stride"))
        + " (the layout's code; strides= to change)"
    )
    return layers, shape, weights
