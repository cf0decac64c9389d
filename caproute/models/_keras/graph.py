"""The classification path of a Keras model: the chain of layers from the image input to the
last capsule layer, and the layers left out (decoder, mask, label input, ...)."""

from __future__ import annotations

from ..errors import UnsupportedLayerError

#: Keras layers whose output is their input at inference time.
IDENTITY = frozenset(
    {
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "GaussianNoise",
        "GaussianDropout",
        "AlphaDropout",
        "ActivityRegularization",
    }
)


def batch_shape(layer):
    cfg = layer.config
    shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
    if shape is None and cfg.get("shape") is not None:
        shape = [None, *cfg["shape"]]
    return None if shape is None else list(shape)


def image_input(layers):
    """The InputLayer of 4-D images (batch, H, W, C); others (labels) are left out."""
    inputs = [layer for layer in layers if layer.class_name == "InputLayer"]
    images = [layer for layer in inputs if (s := batch_shape(layer)) is not None and len(s) == 4]
    if len(images) > 1:
        raise UnsupportedLayerError(
            images[1].name,
            "InputLayer",
            f"the model takes several image inputs ({', '.join(i.name for i in images)}); "
            "caproute builds networks of one input.",
        )
    if not images:
        shapes = {layer.name: batch_shape(layer) for layer in inputs}
        raise UnsupportedLayerError(
            inputs[0].name if inputs else "input",
            "InputLayer",
            f"no input takes images (batch, H, W, C); the inputs have shapes {shapes}.",
        )
    return images[0]


def is_capsule_end(step):
    return step in ("dense_caps", "class_matrix")


def chain(layers, classify):
    """``(path, dropped)``: the layers from the image input to the class capsules, in order
    (the input first), and the layers not on it (each with a reason).

    ``classify(layer)`` says what a layer on the path is ("conv", "dense_caps", ...);
    it raises UnsupportedLayerError for layers caproute cannot express. After the class
    capsules, everything is left out (classification only).
    """
    if layers and layers[0].inbound is None:  # Sequential, or a weights-only file
        return _sequential(layers, classify)
    start = image_input(layers)
    consumers = {}
    for layer in layers:
        for src in dict.fromkeys(layer.inbound or []):
            consumers.setdefault(src, []).append(layer)
    path, kinds, done = [start], ["input"], False
    on_path = {start.name}
    current = start
    while not done:
        nexts = consumers.get(current.name, [])
        if not nexts:
            break
        merging = [n for n in nexts if len(set(n.inbound)) > 1]
        single = [n for n in nexts if len(set(n.inbound)) == 1]
        if merging:
            layer = merging[0]
            raise UnsupportedLayerError(
                layer.name,
                layer.class_name,
                f"it combines the outputs of {sorted(set(layer.inbound))} before the class "
                "capsules; caproute builds a chain of layers, one input each.",
            )
        if len(single) > 1:
            layer = single[1]
            raise UnsupportedLayerError(
                layer.name,
                layer.class_name,
                f"the output of {current.name!r} branches to {[n.name for n in single]} before "
                "the class capsules; caproute builds a chain of layers.",
            )
        current = single[0]
        kind = classify(current)
        path.append(current)
        kinds.append(kind)
        on_path.add(current.name)
        done = is_capsule_end(kind)
    if not done:
        raise UnsupportedLayerError(
            current.name,
            current.class_name,
            "the model ends here without a capsule layer that caproute recognises (a layer "
            "with a capsule transform: a weight of shape (n_out, n_in, out_dim, in_dim) or "
            "matrix-capsule transforms).",
        )
    dropped = [layer for layer in layers if layer.name not in on_path]
    return list(zip(path, kinds, strict=True)), dropped


def _sequential(layers, classify):
    path, dropped, done = [], [], False
    for i, layer in enumerate(layers):
        if done:
            dropped.append(layer)
            continue
        kind = "input" if i == 0 and layer.class_name == "InputLayer" else classify(layer)
        path.append((layer, kind))
        done = is_capsule_end(kind)
    if not done:
        last = layers[-1]
        raise UnsupportedLayerError(
            last.name,
            str(last.class_name),
            "the model ends without a capsule layer that caproute recognises (a layer with a "
            "capsule transform: a weight of shape (n_out, n_in, out_dim, in_dim) or "
            "matrix-capsule transforms).",
        )
    return path, dropped
