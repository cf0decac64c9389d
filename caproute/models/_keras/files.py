"""Reading Keras checkpoints into one plain description: layers, their configs, inputs and
weights. No architecture is judged here (``graph`` and ``build`` do that).

Formats (decided from the bytes, never from the file name):

- Keras 2 / tf.keras HDF5 written by ``model.save``: the architecture as JSON in the root's
  ``model_config`` attribute, weights under ``model_weights/<layer>`` listed by the
  ``layer_names`` and ``weight_names`` attributes;
- Keras 2 HDF5 written by ``model.save_weights``: the same weight groups at the root, no
  architecture (layer names in order, weight names, shapes);
- Keras 3 ``.keras`` zip archives: ``config.json`` and ``model.weights.h5``, where a layer's
  variables are ``layers/<path>/vars/<i>`` in creation order, and ``<path>`` is the snake-case
  class name made unique by ``_1``, ``_2``... in the order of ``model.layers`` (Keras 3's
  ``saving_lib``: the layer's own name is not used).
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from dataclasses import dataclass, field

import numpy as np

from ..errors import WeightsFileError, _kind_of, convert_torch_hint

_HEAD = 4096


@dataclass
class KerasLayer:
    """One layer as the file describes it."""

    name: str
    class_name: str | None  # None: a weights-only file does not say
    config: dict = field(default_factory=dict)
    inbound: list | None = None  # names of the layers it reads; None: in file order
    weights: list = field(default_factory=list)  # [(name, ndarray)] in file order
    input_shapes: list | None = None  # Keras 3 records the shapes of a layer's inputs
    module: str | None = None  # Keras 3: "keras.layers" for built-in layers


@dataclass
class KerasFile:
    label: str
    format: str  # "keras2-h5", "keras2-weights", "keras3"
    layers: list
    keras_version: str | None = None
    model_class: str | None = None


# ---------------------------------------------------------------- opening ------------------
def open_source(source, name):
    """``(label, binary file object, close)`` of a path or a readable binary file object."""
    if isinstance(source, (str, bytes, os.PathLike)) and not isinstance(source, bool):
        path = os.fsdecode(os.fspath(source))
        if os.path.isdir(path):
            raise WeightsFileError(f"{path!r} is a directory, not a Keras file.")
        f = open(path, "rb")
        return repr(path), f, True
    if all(hasattr(source, a) for a in ("read", "seek", "tell")):
        try:
            head = source.read(0)
        except Exception as exc:  # noqa: BLE001 -- whatever it is, it cannot be read
            raise TypeError(
                f"`{name}` must be a path or a binary file object open for reading; reading "
                f"it failed ({type(exc).__name__}: {exc})."
            ) from None
        if not isinstance(head, bytes):
            raise TypeError(
                f"`{name}` must be a path or a file object opened in binary mode ('rb'); got a "
                f"text-mode {type(source).__name__}."
            )
        return f"the file object {type(source).__name__}", source, False
    raise TypeError(
        f"`{name}` must be a path (str or os.PathLike) or a binary file object; got "
        f"{type(source).__name__}."
    )


def file_kind(f):
    """``(kind, description)`` of the open file ``f`` from its first bytes (see errors)."""
    from ..errors import FILE_KINDS

    start = f.tell()
    f.seek(0, io.SEEK_END)
    size = f.tell() - start
    f.seek(start)
    head = f.read(_HEAD)
    f.seek(start)
    kind, detail = _kind_of(f, head, size)
    f.seek(start)
    return kind, FILE_KINDS[kind] + detail


def read(source, name="source"):
    """The :class:`KerasFile` of ``source`` (path or binary file object)."""
    label, f, close = open_source(source, name)
    try:
        kind, description = file_kind(f)
        if kind == "hdf5":
            return _read_keras2(label, f)
        if kind == "keras":
            return _read_keras3(label, f)
        advice = {
            "torch-zip": " " + convert_torch_hint(label.strip("'")),
            "torch-legacy": " " + convert_torch_hint(label.strip("'")),
            "pickle": " caproute never unpickles (unpickling can run arbitrary code).",
            "zip-damaged": " A .keras archive that was cut short cannot be read.",
        }.get(kind, "")
        raise WeightsFileError(
            f"{label} is not a Keras file (an HDF5 .h5 file or a Keras 3 .keras archive): it "
            f"is {description}.{advice}"
        )
    finally:
        if close:
            f.close()


def records_architecture(path):
    """Whether ``path`` is an HDF5 file with a ``model_config`` attribute (``model.save``);
    False for anything else, whose reader then says what is wrong."""
    try:
        with open(path, "rb") as f:
            if file_kind(f)[0] != "hdf5":
                return False
        h5py = _h5py()
        with h5py.File(path, "r") as h5:
            return "model_config" in h5.attrs
    except (OSError, ImportError, RuntimeError, ValueError):
        return False


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError(
            "reading Keras files needs h5py: pip install 'caproute[keras]' (or pip install h5py)."
        ) from None
    return h5py


def _decode(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _names(attr):
    arr = np.atleast_1d(np.asarray(attr))
    if arr.size == 0:
        return []
    if arr.ndim != 1 or arr.dtype.kind not in "SUO":
        return None
    return [_decode(v) for v in arr]


# ---------------------------------------------------------------- Keras 2 ------------------
def _read_keras2(label, f):
    h5py = _h5py()
    try:
        h5 = h5py.File(f, "r")
    except OSError:
        raise WeightsFileError(
            f"{label} could not be opened as HDF5: it starts like an HDF5 file but is damaged "
            "or truncated."
        ) from None
    try:
        with h5:
            return _keras2_content(label, h5, h5py)
    except (OSError, RuntimeError, KeyError) as exc:
        raise WeightsFileError(
            f"{label} could not be read as a Keras file: the HDF5 file is damaged "
            f"({type(exc).__name__} while reading it)."
        ) from None


def keras2_weights(h5, label, h5py):
    """``[(layer, [(weight path, array)])]`` in the order of ``layer_names``.

    The weight path is the one ``weight_names`` records, without ``:0``, prefixed with
    ``<layer>/`` where it does not start with it: tensors with equal short names in different
    (nested) layers keep different keys.
    """
    root = h5["model_weights"] if isinstance(h5.get("model_weights"), h5py.Group) else h5
    if "layer_names" not in root.attrs:
        if isinstance(h5.get("layers"), h5py.Group) or isinstance(h5.get("vars"), h5py.Group):
            raise WeightsFileError(
                f"{label} is a Keras 3 weights file (model.save_weights(...'.weights.h5')): it "
                "records neither the architecture nor the order of the layers. Load the .keras "
                "archive written by model.save(...'.keras') instead."
            )
        raise WeightsFileError(
            f"{label} is HDF5 but not a Keras 2 weights file: no 'layer_names' attribute "
            "(Keras 3 '.weights.h5' files use another layout; save with the legacy .h5 format)."
        )
    layer_names = _names(root.attrs["layer_names"])
    if layer_names is None:
        arr = np.asarray(root.attrs["layer_names"])
        raise WeightsFileError(
            f"{label} is not a valid Keras weights file: its 'layer_names' attribute must list "
            f"layer names (strings); got {arr.dtype} of shape {arr.shape}."
        )
    out, problems, seen = [], [], {}
    for layer in layer_names:
        group = root.get(layer)
        if not isinstance(group, h5py.Group):
            problems.append(f"layer {layer!r} is listed in 'layer_names' but has no group")
            continue
        weight_names = _names(group.attrs.get("weight_names", np.array([], dtype="S1")))
        if weight_names is None:
            problems.append(f"layer {layer!r}: its 'weight_names' attribute does not list names")
            continue
        tensors = []
        for wname in weight_names:
            dataset = group.get(wname)
            if not isinstance(dataset, h5py.Dataset):
                problems.append(
                    f"weight {wname!r} of layer {layer!r} is listed in 'weight_names' but "
                    + ("is not a dataset" if dataset is not None else "missing")
                )
                continue
            try:
                data = np.asarray(dataset[()])
            except (OSError, RuntimeError, ValueError, TypeError):
                problems.append(f"weight {wname!r} is listed but unreadable (damaged data)")
                continue
            if data.dtype.kind not in "biuf":
                problems.append(
                    f"weight {wname!r} is not an array of real numbers (dtype {data.dtype})"
                )
                continue
            key = re.sub(r":\d+$", "", wname)
            key = key if key.startswith(layer + "/") else f"{layer}/{key}"
            if key in seen:
                problems.append(
                    f"weight {wname!r} of layer {layer!r} has the same path {key!r} as a weight "
                    f"of layer {seen[key]!r}"
                )
                continue
            seen[key] = layer
            tensors.append((key, data))
        out.append((layer, tensors))
    if problems:
        lines = "\n  - ".join(problems)
        raise WeightsFileError(
            f"{label} is not a valid Keras weights file ({len(problems)} problem"
            f"{'s' if len(problems) != 1 else ''}):\n  - {lines}"
        )
    return out


def _json_attr(h5, key, label):
    raw = h5.attrs.get(key)
    if raw is None:
        return None
    try:
        return json.loads(_decode(raw.item() if isinstance(raw, np.ndarray) else raw))
    except (ValueError, TypeError):
        raise WeightsFileError(f"{label}: its '{key}' attribute is not valid JSON.") from None


def _keras2_content(label, h5, h5py):
    weights = keras2_weights(h5, label, h5py)
    config = _json_attr(h5, "model_config", label)
    version = h5.attrs.get("keras_version")
    version = None if version is None else _decode(version)
    if config is None:
        layers = [KerasLayer(name, None, weights=tensors) for name, tensors in weights]
        return KerasFile(label, "keras2-weights", layers, version)
    layers, model_class = config_layers(config, label)
    by_name = dict(weights)
    for layer in layers:
        layer.weights = by_name.get(layer.name, [])
    return KerasFile(label, "keras2-h5", layers, version, model_class)


# ---------------------------------------------------------------- configs ------------------
def _history_names(node):
    """Names of the layers a Keras 2 or Keras 3 inbound node reads, in order."""
    out = []
    if isinstance(node, dict):
        history = node.get("keras_history") if node.get("keras_history") else None
        if history is None and isinstance(node.get("config"), dict):
            history = node["config"].get("keras_history")
        if history:
            return [history[0]]
        for value in node.values():
            out += _history_names(value)
        return out
    if isinstance(node, list):
        if len(node) >= 3 and isinstance(node[0], str) and isinstance(node[1], int):
            return [node[0]]  # Keras 2: [name, node index, tensor index, kwargs]
        for value in node:
            out += _history_names(value)
    return out


def _input_shapes(node):
    out = []
    if isinstance(node, dict):
        if node.get("class_name") == "__keras_tensor__":
            return [node.get("config", {}).get("shape")]
        for value in node.values():
            out += _input_shapes(value)
    elif isinstance(node, list):
        for value in node:
            out += _input_shapes(value)
    return out


def config_layers(config, label):
    """``([KerasLayer without weights], model class)`` from a model's JSON config."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise WeightsFileError(f"{label}: its model config is not a Keras model description.")
    model_class = config["class_name"]
    body = config.get("config")
    entries = body.get("layers") if isinstance(body, dict) else body
    if not isinstance(entries, list):
        raise WeightsFileError(f"{label}: its model config (class {model_class}) lists no layers.")
    sequential = model_class == "Sequential"
    layers = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
            raise WeightsFileError(f"{label}: its model config holds a malformed layer entry.")
        cfg = entry["config"]
        name = entry.get("name") or cfg.get("name")
        inbound = None
        shapes = None
        if not sequential:
            nodes = entry.get("inbound_nodes") or []
            inbound = _history_names(nodes[0]) if nodes else []
            shapes = _input_shapes(nodes[0]) if nodes else []
        layers.append(
            KerasLayer(
                str(name), str(entry["class_name"]), cfg, inbound, [], shapes, entry.get("module")
            )
        )
    if sequential and layers and layers[0].class_name != "InputLayer":
        first = layers[0].config
        shape = first.get("batch_input_shape") or first.get("batch_shape")
        if shape is not None:
            layers.insert(0, KerasLayer("input", "InputLayer", {"batch_shape": shape}, None))
    return layers, model_class


# ---------------------------------------------------------------- Keras 3 ------------------
def snake_case(name):
    """Keras 3's ``naming.to_snake_case`` (the weights file's layer paths)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _read_keras3(label, f):
    try:
        archive = zipfile.ZipFile(f)
        with archive:
            raw_config = archive.read("config.json")
            raw_weights = archive.read("model.weights.h5")
            meta = archive.read("metadata.json") if "metadata.json" in archive.namelist() else b""
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError) as exc:
        raise WeightsFileError(
            f"{label} could not be read as a Keras 3 .keras archive: the zip archive is damaged "
            f"or truncated ({type(exc).__name__})."
        ) from None
    try:
        config = json.loads(raw_config)
    except ValueError:
        raise WeightsFileError(f"{label}: its config.json is not valid JSON.") from None
    version = None
    try:
        version = json.loads(meta).get("keras_version") if meta else None
    except (ValueError, AttributeError):
        version = None
    layers, model_class = config_layers(config, label)
    h5py = _h5py()
    try:
        h5 = h5py.File(io.BytesIO(raw_weights), "r")
    except OSError:
        raise WeightsFileError(
            f"{label}: its model.weights.h5 is not a readable HDF5 file (damaged)."
        ) from None
    problems = []
    with h5:
        group = h5.get("layers")
        used = {}
        for layer in layers:
            if model_class == "Sequential" and layer.class_name == "InputLayer":
                continue  # Sequential.layers leaves out its input layer
            path = snake_case(layer.class_name)
            if path in used:
                used[path] += 1
                path = f"{path}_{used[path]}"
            else:
                used[path] = 0
            node = group.get(path) if isinstance(group, h5py.Group) else None
            if node is None:
                continue
            variables = node.get("vars")
            tensors = []
            if isinstance(variables, h5py.Group):
                keys = sorted(variables.keys(), key=lambda k: int(k) if k.isdigit() else -1)
                for key in keys:
                    try:
                        tensors.append((f"vars/{key}", np.asarray(variables[key][()])))
                    except (OSError, RuntimeError, ValueError, TypeError, AttributeError):
                        problems.append(f"variable 'layers/{path}/vars/{key}' is unreadable")
            if any(k != "vars" for k in node.keys()):
                tensors.append(("nested", None))
            layer.weights = tensors
    if problems:
        lines = "\n  - ".join(problems)
        raise WeightsFileError(f"{label} is damaged ({len(problems)} problems):\n  - {lines}")
    return KerasFile(label, "keras3", layers, version, model_class)
