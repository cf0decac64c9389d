"""Keras checkpoints as caproute models, in one call: :func:`load_keras`.

The file's own architecture decides what is built: a Keras 2 / tf.keras ``.h5`` written by
``model.save`` (its ``model_config`` attribute) or a Keras 3 ``.keras`` archive
(``config.json``). A weights-only ``.h5`` (``model.save_weights``) gives every size its
tensors' shapes determine, and the caller states the rest. The reading, the recognition of
layers by class and role, and the fusion into caproute layers live in ``models/_keras/``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import IO, Any

from .._lib.validation import check_int, check_scalar, is_sequence
from ._keras import files, graph, roles, weights_only
from ._keras.assemble import assemble
from .errors import WeightsMismatchError
from .layers import WEIGHT_LAYOUTS
from .layers.activations import check_activation
from .model import Model

#: The Keras epsilon CapsNet-Keras adds inside squash's square root.
KERAS_EPSILON = 1e-7
BATCHNORM_PLACES = ("before_activation", "after_activation")
PADDINGS = ("valid", "same")


def load_keras(
    source: os.PathLike | str | IO[bytes],
    *,
    input_shape: Sequence[int] | None = None,
    activation: Any = None,
    n_iter: int | None = None,
    strides: Sequence[int] | None = None,
    padding: Sequence[str] | None = None,
    batchnorm: str | Sequence[str] | None = None,
    bn_epsilon: float | Sequence[float] | None = None,
    weight_layout: str | None = None,
    em_options: Mapping[str, Any] | None = None,
    squash_eps: float = KERAS_EPSILON,
    classes: Sequence[str] | None = None,
) -> Model:
    """Build a caproute model from a Keras checkpoint: architecture and weights, one call.

    What the file is, is read from its bytes:

    - a Keras 2 / tf.keras HDF5 file from ``model.save`` (``model_config`` attribute) or a
      Keras 3 ``.keras`` archive: the network is built from the recorded architecture --
      Conv2D stacks (kernel sizes, strides, ``valid``/``same`` padding, activations, LeakyReLU
      and other activation layers, BatchNormalization folded into the convolution before it
      where nothing lies between), primary capsules (a Conv2D, a Reshape to (-1, dim) and the
      squash Lambda of the CapsNet-Keras layout), capsule layers with their routing
      iterations, and matrix capsules with EM routing. Layers are recognised by class and
      role, tensors by role and shape (a transform named ``W``, ``weights`` or anything else);
      names do not matter. The decoder, ``Mask``, ``Length`` and label inputs are left out
      (classification only), with a warning that names them;
    - a Keras 2 HDF5 file from ``model.save_weights`` (no architecture): every size the
      tensors' shapes determine is inferred (channels, kernels, capsule counts and
      dimensions, ``primary_dim = W.shape[-1]``); what they cannot say must be passed
      (``input_shape``, ``activation``, ``n_iter``, and ``strides``/``padding`` where more
      than one combination fits the capsule count); a ValueError lists what is missing,
      the choices and the argument to pass.

    Parameters
    ----------
    source : str, os.PathLike or binary file object
        The ``.h5`` or ``.keras`` file, or a file object opened with ``"rb"`` (or an
        ``io.BytesIO``) holding one.
    input_shape : tuple of int, optional
        (H, W, C) of the images. Read from the file's input layer when it records one; a
        weights-only file needs it.
    activation : str, dict or sequence, optional
        Weights-only files: the activation of each convolution before the primary
        capsules' (any spec of :class:`Conv2D`, e.g. ``"relu"`` or
        ``{"name": "leaky_relu", "negative_slope": 0.3}``), one for all, or a sequence with
        one per convolution (the primary capsules' last: None for the usual linear one).
        Ignored (with a note) when the file records the architecture.
    n_iter : int, optional
        Routing iterations of the capsule layer, where its config does not record them;
        overrides the config (with a note) where it does.
    strides, padding : sequence, optional
        Weights-only files: each convolution's stride (int) and padding (``"valid"`` or
        ``"same"``), in order, the primary capsules' last; needed where several combinations
        fit the tensors.
    batchnorm : {"before_activation", "after_activation"} or sequence of them, optional
        Weights-only files with BatchNormalization layers: whether each (or every) one comes
        between its convolution and the activation (then folded into the convolution) or
        after the activation.
    bn_epsilon : float or sequence of float, optional
        Weights-only files with BatchNormalization layers: their epsilon (Keras's default is
        1e-3), one for all or one per layer.
    weight_layout : {"caproute", "keras", "torch", "tf"}, optional
        The capsule transform's layout (see :data:`WEIGHT_LAYOUTS`), where its shape fits
        more than one (e.g. equal input and output capsule dimensions).
    em_options : dict, optional
        Matrix-capsule networks: the EM-routing options of the code that trained it (keyword
        arguments of :class:`ConvMatrixCaps` / :class:`ClassMatrixCaps`, e.g.
        ``{"pose_momentum": 0.9}``; ``{}`` for caproute's defaults, the paper's), with
        ``"n_iter"`` and ``"coordinate_addition"`` where the config does not record them.
        Required: no file records how its routing was written.
    squash_eps : float, default=1e-7
        ``eps`` inside squash's square root: Keras's epsilon, which CapsNet-Keras adds.
    classes : sequence of str, optional
        Class names, in output order.

    Returns
    -------
    model : Model
        The network (NHWC). ``model.metadata["import"]`` records the source, the format, the
        Keras layers each caproute layer computes (``"layers"``), the layers left out
        (``"dropped"``) and a note on every choice taken from the file or the arguments
        (``"notes"``).

    Raises
    ------
    UnsupportedLayerError
        If a layer on the path to the class capsules is one caproute cannot express (named,
        with its class and why).
    WeightsMismatchError
        If a tensor's shape does not fit the architecture (all listed).
    WeightsFileError
        If the file is not a Keras file (said what it is), or is damaged or truncated.
    ValueError
        If the file does not say something the model needs and no argument does (listing
        the choices and the argument), or an argument is invalid.
    TypeError
        If an argument is of the wrong type.
    ImportError
        If h5py is not installed.

    See Also
    --------
    capsnet_from_keras_h5 : The fixed CapsNet-Keras layout, from weights only.
    Model.forward : With ``return_all=True``, every layer's output, to compare with Keras.

    Notes
    -----
    To find where an import and Keras part ways, compare layer by layer:
    ``model.forward(x, return_all=True)`` gives every caproute layer's output, and
    ``model.metadata["import"]["layers"]`` names the Keras layers each one computes (the
    last one's output is its output: a sub-model ``keras.Model(inputs,
    keras_model.get_layer(name).output)`` gives it on the Keras side). Inputs must be what
    the network was trained on (see :attr:`Model.input_range`).

    Examples
    --------
    >>> from caproute.models import load_keras
    >>> net = load_keras("capsnet.h5")  # doctest: +SKIP
    >>> print(net.summary())  # doctest: +SKIP
    >>> net = load_keras("capsnet_weights.h5", input_shape=(28, 28, 1),
    ...                  activation="relu", n_iter=3)  # doctest: +SKIP

    Arguments are checked before the file is read:

    >>> load_keras("capsnet.h5", batchnorm="after")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: `batchnorm` must be 'before_activation' or 'after_activation' ...; got 'after'.
    """
    hints = _check_hints(
        input_shape=input_shape,
        activation=activation,
        n_iter=n_iter,
        strides=strides,
        padding=padding,
        batchnorm=batchnorm,
        bn_epsilon=bn_epsilon,
        weight_layout=weight_layout,
        em_options=em_options,
        classes=classes,
    )
    from .layers.capsules import check_squash_eps

    squash_eps = check_squash_eps(squash_eps)
    kfile = files.read(source)
    notes, missing = [], []
    what = f"Keras model in {kfile.label}"
    try:
        if kfile.format == "keras2-weights":
            steps, in_shape, dropped = weights_only.steps(kfile, hints, notes, missing)
        else:
            steps, in_shape, dropped = _from_config(kfile, hints, notes, missing)
    except WeightsMismatchError as exc:
        if exc.model_name.startswith("Keras layer"):
            layer = exc.model_name.removeprefix("Keras ")
            raise WeightsMismatchError(what, [f"{layer}: {p}" for p in exc.problems]) from None
        raise
    if kfile.format != "keras2-weights":
        for key in ("activation", "strides", "padding", "batchnorm", "bn_epsilon"):
            if hints.get(key) is not None:
                notes.append(f"`{key}` ignored: the file records the architecture")
    if missing:
        raise ValueError(_missing_message(kfile.label, missing))
    if any(s["op"] in ("conv_matrix", "class_matrix") for s, _ in steps) and em_options is None:
        raise ValueError(
            f"{kfile.label} holds matrix capsules with EM routing, whose variant no file "
            "records: pass em_options={} for caproute's (the paper's), or the options of the "
            "code that trained it, e.g. em_options={'pose_momentum': 0.9, "
            "'e_step_log_var_weight': 1.0} (see ConvMatrixCaps for every option)."
        )
    layers, weights, covered, renamed = assemble(
        steps, squash_eps=squash_eps, em_options=dict(em_options or {})
    )
    model = Model(layers, in_shape, classes=hints.get("classes"), name="keras")
    try:
        model.set_weights(weights)
    except WeightsMismatchError as exc:
        raise WeightsMismatchError(what, exc.problems) from None
    notes.append(
        f"squash adds eps={squash_eps:g} inside its square root (Keras's epsilon, as "
        "CapsNet-Keras's squash does); pass squash_eps if the network's code differs"
    )
    notes.append(
        "the pixel range the network was trained on is not recorded in Keras files: "
        f"predict_scores assumes {list(model.input_range)}; set model.input_range if it differs"
    )
    if renamed:
        notes.append(
            "renamed (caproute layer names cannot hold '.' or repeat): "
            + ", ".join(f"{k!r} -> {v!r}" for v, k in renamed.items())
        )
    model.metadata = {
        **model.metadata,
        "import": {
            "source": kfile.label,
            "format": kfile.format,
            "keras_version": kfile.keras_version,
            "layers": covered,
            "dropped": [f"{name} ({cls}): {why}" for name, cls, why in dropped],
            "notes": notes,
        },
    }
    left_out = [f"{name} ({cls})" for name, cls, why in dropped if not why.startswith("class")]
    if left_out:
        warnings.warn(
            f"load_keras: {kfile.label}: left out (classification only): {', '.join(left_out)}; "
            "see model.metadata['import'].",
            UserWarning,
            stacklevel=2,
        )
    return model


def _from_config(kfile, hints, notes, missing):
    state = {"shape": None, "steps": []}
    start = graph.image_input(kfile.layers) if kfile.layers[0].inbound is not None else None

    def classify(layer):
        if layer.class_name == "InputLayer":
            return "input"
        step, shape = roles.step(layer, state["shape"], hints, notes, missing)
        state["shape"] = shape
        state["steps"].append((step, [layer.name]))
        return {"dense_caps": "dense_caps", "class_matrix": "class_matrix"}.get(step["op"], "x")

    first = start or kfile.layers[0]
    shape = graph.batch_shape(first) if first.class_name == "InputLayer" else None
    in_shape = _input_shape(kfile, shape, hints)
    state["shape"] = ("map", *in_shape)
    path, dropped_layers = graph.chain(kfile.layers, classify)
    caps = path[-1][0]
    dropped = []
    for i, layer in enumerate(dropped_layers):
        follows = layer.inbound == [caps.name] or (layer.inbound is None and i == 0)
        scores = follows and not layer.weights and "length" in str(layer.class_name).lower()
        if scores:
            notes.append(
                f"{layer.name!r} ({layer.class_name}) taken as the class scores: the capsule "
                "lengths, as caproute's predict_scores computes them (CapsNet-Keras's Length "
                "adds Keras's epsilon 1e-7 inside the square root: a difference below "
                "1e-7 / (2 * length))"
            )
            dropped.append((layer.name, layer.class_name, "class scores (capsule lengths)"))
        else:
            why = (
                "an input other than the images"
                if layer.class_name == "InputLayer"
                else "not on the path from the images to the class capsules"
            )
            dropped.append((layer.name, str(layer.class_name), why))
    return state["steps"], in_shape, dropped


def _input_shape(kfile, shape, hints):
    given = hints.get("input_shape")
    recorded = None
    if shape is not None and len(shape) == 4 and all(isinstance(s, int) for s in shape[1:]):
        recorded = tuple(shape[1:])
    if recorded and given and tuple(given) != recorded:
        raise ValueError(
            f"`input_shape` {tuple(given)} differs from the input {recorded} that "
            f"{kfile.label} records; leave it out or pass {recorded}."
        )
    if recorded is None and given is None:
        raise ValueError(
            f"{kfile.label} does not record the size of its images "
            f"(input {shape}): pass input_shape=(H, W, C)."
        )
    return tuple(recorded or given)


def _missing_message(label, missing):
    lines = []
    for arg, what, choices in missing:
        lines.append(f"{what}: pass `{arg}` ({' or '.join(map(str, choices))})")
    return (
        f"{label} does not record everything the model needs ({len(lines)} item"
        f"{'s' if len(lines) != 1 else ''}):\n  - " + "\n  - ".join(lines)
    )


def _em_option_names():
    """The keyword arguments of the EM layers that an imported network may set."""
    import inspect

    from .layers import ClassMatrixCaps, ConvMatrixCaps

    names = {"n_iter", "coordinate_addition"}
    for cls in (ConvMatrixCaps, ClassMatrixCaps):
        names |= set(inspect.signature(cls.__init__).parameters)
    return names - {"self", "name", "out_types", "n_classes", "kernel_size", "stride"}


def _check_hints(**hints):
    out = dict(hints)
    if hints["input_shape"] is not None:
        value = hints["input_shape"]
        expected = f"`input_shape` must be (H, W, C), 3 integers >= 1; got {value!r}."
        if not is_sequence(value):
            raise TypeError(expected)
        if len(value) != 3:
            raise ValueError(expected)
        out["input_shape"] = tuple(check_int(s, name="input_shape", min_value=1) for s in value)
    if hints["n_iter"] is not None:
        out["n_iter"] = check_int(hints["n_iter"], name="n_iter", min_value=1)
    act = hints["activation"]
    if act is not None:
        if isinstance(act, (str, Mapping)):
            out["activation"] = check_activation(act)
        elif is_sequence(act):
            out["activation"] = [check_activation(a) for a in act]
        else:
            raise TypeError(
                "`activation` must be an activation (str or dict) or a sequence of them, one "
                f"per convolution; got {type(act).__name__}."
            )
    if hints["strides"] is not None:
        if not is_sequence(hints["strides"]):
            raise TypeError(
                "`strides` must be a sequence of ints, one per convolution; got "
                f"{type(hints['strides']).__name__}."
            )
        out["strides"] = [check_int(s, name="strides", min_value=1) for s in hints["strides"]]
    if hints["padding"] is not None:
        pad = hints["padding"]
        if isinstance(pad, str) or not is_sequence(pad) or any(p not in PADDINGS for p in pad):
            raise ValueError(
                "`padding` must be a sequence of 'valid' or 'same', one per convolution; got "
                f"{pad!r}."
            )
        out["padding"] = list(pad)
    bn = hints["batchnorm"]
    if bn is not None:
        items = [bn] if isinstance(bn, str) else bn
        if not is_sequence(items) or any(b not in BATCHNORM_PLACES for b in items):
            raise ValueError(
                "`batchnorm` must be 'before_activation' or 'after_activation' (or a sequence "
                f"of them, one per BatchNormalization); got {bn!r}."
            )
        out["batchnorm"] = bn if isinstance(bn, str) else list(bn)
    eps = hints["bn_epsilon"]
    if eps is not None:
        items = list(eps) if is_sequence(eps) else [eps]
        checked = [check_scalar(e, name="bn_epsilon", low=0, low_inclusive=False) for e in items]
        out["bn_epsilon"] = checked if is_sequence(eps) else checked[0]
    layout = hints["weight_layout"]
    if layout is not None and layout not in WEIGHT_LAYOUTS:
        raise ValueError(
            f"`weight_layout` must be one of {sorted(WEIGHT_LAYOUTS)}; got {layout!r}."
        )
    em = hints["em_options"]
    if em is not None:
        if not isinstance(em, Mapping):
            raise TypeError(
                f"`em_options` must be a dict of EM-routing options; got {type(em).__name__}."
            )
        known = _em_option_names()
        unknown = sorted(str(k) for k in em if k not in known)
        if unknown:
            raise ValueError(
                f"`em_options` has unknown options {unknown}; the options are {sorted(known)}."
            )
        out["em_options"] = dict(em)
    classes = hints["classes"]
    if classes is not None:
        if isinstance(classes, str) or not is_sequence(classes):
            raise TypeError(
                "`classes` must be a sequence of str, one name per class; got "
                f"{type(classes).__name__}."
            )
        out["classes"] = [str(c) for c in classes]
    return out
