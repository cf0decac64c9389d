"""What a Keras layer is and does, from its class, its config and its weights' shapes.

Each function turns one Keras layer into a step: a dict with an ``"op"`` and what caproute
needs to express it, or raises UnsupportedLayerError. Custom classes are recognised by
their role (their input, their weights' ranks and shapes, config keys such as
``num_capsule`` / ``routings``), never by their names.
"""

from __future__ import annotations

import base64
import binascii
import re

import numpy as np

from ..errors import UnsupportedLayerError, WeightsMismatchError
from .graph import IDENTITY

#: Keras activation names and caproute's activation specs for them. Keras's string
#: "leaky_relu" is ``negative_slope=0.2`` in Keras 3 and ``tf.nn.leaky_relu``'s alpha=0.2 in
#: tf.keras; the LeakyReLU *layer* defaults to 0.3 and records its slope.
ACTIVATIONS = {
    "linear": None,
    "relu": "relu",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "elu": "elu",
    "softplus": "softplus",
    "selu": "selu",
    "gelu": "gelu",
    "swish": "swish",
    "silu": "silu",
    "leaky_relu": {"name": "leaky_relu", "negative_slope": 0.2},
}

CONV_CLASSES = ("Conv2D", "Convolution2D")
#: Other Keras layers, named as such in messages (none of them is a capsule layer).
KERAS_CLASSES = frozenset(
    """Dense Flatten MaxPooling2D AveragePooling2D GlobalAveragePooling2D GlobalMaxPooling2D
    Conv1D Conv3D DepthwiseConv2D SeparableConv2D Conv2DTranspose Add Concatenate Multiply
    Subtract Average Maximum Minimum Dot Softmax PReLU ZeroPadding2D Cropping2D UpSampling2D
    LayerNormalization GroupNormalization UnitNormalization Embedding LSTM GRU SimpleRNN Permute
    RepeatVector Rescaling Normalization Resizing CenterCrop Masking TimeDistributed
    Bidirectional Attention MultiHeadAttention Functional Sequential Model""".split()
)
BN_CLASSES = ("BatchNormalization",)
POSE = 16


def unsupported(layer, reason):
    return UnsupportedLayerError(layer.name, str(layer.class_name), reason)


def _pair(value, layer, what):
    if isinstance(value, int):
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1]:
        return int(value[0])
    raise unsupported(layer, f"its {what} {value!r} is not square; caproute's are.")


def activation_spec(value, layer):
    """caproute's activation spec for a Keras ``activation`` config value."""
    if isinstance(value, dict):  # Keras 3 may serialise a function as a dict
        value = value.get("config") if isinstance(value.get("config"), str) else value
    if value is None:
        return None
    if isinstance(value, str) and value in ACTIVATIONS:
        return ACTIVATIONS[value]
    raise unsupported(
        layer,
        f"its activation {value!r} is not one caproute has (it has "
        f"{', '.join(k for k in ACTIVATIONS)}).",
    )


def _weights(layer):
    tensors = [(n, a) for n, a in layer.weights if n != "nested"]
    if any(n == "nested" for n, _ in layer.weights):
        raise unsupported(layer, "it holds layers of its own (a nested model or block).")
    return tensors


def by_role(layer, roles):
    """``{role: array}`` of a built-in layer's weights: by their names in a Keras 2 file,
    by position (Keras 3, where ``roles`` is the creation order)."""
    tensors = _weights(layer)
    named = {}
    for name, arr in tensors:
        short = name.rsplit("/", 1)[-1]
        if short in roles:
            named[short] = arr
    if len(named) == len(tensors) == len(roles):
        return named
    if len(tensors) == len(roles) and all(n.startswith("vars/") for n, _ in tensors):
        return {role: arr for role, (_, arr) in zip(roles, tensors, strict=True)}
    raise WeightsMismatchError(
        f"Keras layer {layer.name!r} ({layer.class_name})",
        [
            f"expected the weights {list(roles)}; the file holds "
            f"{[(n, tuple(a.shape)) for n, a in tensors]}"
        ],
    )


def _check_shape(layer, role, arr, shape):
    if tuple(arr.shape) != tuple(shape):
        raise WeightsMismatchError(
            f"Keras layer {layer.name!r} ({layer.class_name})",
            [
                f"its {role} has shape {tuple(int(s) for s in arr.shape)}; the layer's config "
                f"and its input {_shape_words(shape)} need {tuple(shape)}"
            ],
        )


def _shape_words(shape):
    return f"(a map of {shape[-2]} channels)" if len(shape) == 4 else ""


def out_size(n, k, s, padding):
    if padding == "same":
        return -(-n // s)
    return (n - k) // s + 1 if n >= k else 0


# ---------------------------------------------------------------- built-in layers ----------
def conv_step(layer, shape):
    cfg = layer.config
    if cfg.get("data_format") not in (None, "channels_last"):
        raise unsupported(
            layer, f"its data_format is {cfg['data_format']!r}; caproute imports channels_last."
        )
    k = _pair(cfg.get("kernel_size"), layer, "kernel_size")
    s = _pair(cfg.get("strides", 1), layer, "strides")
    if _pair(cfg.get("dilation_rate", 1), layer, "dilation_rate") != 1:
        raise unsupported(layer, "it is dilated; caproute's convolutions are not.")
    if int(cfg.get("groups", 1)) != 1:
        raise unsupported(layer, "it is a grouped convolution; caproute's are not.")
    padding = cfg.get("padding", "valid")
    if padding not in ("valid", "same"):
        raise unsupported(layer, f"its padding {padding!r} is not 'valid' or 'same'.")
    use_bias = bool(cfg.get("use_bias", True))
    roles = ("kernel", "bias") if use_bias else ("kernel",)
    w = by_role(layer, roles)
    _, h, wd, c = shape
    filters = int(cfg.get("filters"))
    _check_shape(layer, "kernel", w["kernel"], (k, k, c, filters))
    if use_bias:
        _check_shape(layer, "bias", w["bias"], (filters,))
    ho, wo = out_size(h, k, s, padding), out_size(wd, k, s, padding)
    if ho < 1 or wo < 1:
        raise WeightsMismatchError(
            f"Keras layer {layer.name!r} ({layer.class_name})",
            [f"a {k}x{k} kernel does not fit its {h}x{wd} input map"],
        )
    step = {
        "op": "conv",
        "kernel": w["kernel"],
        "bias": w.get("bias"),
        "k": k,
        "stride": s,
        "padding": padding,
        "act": activation_spec(cfg.get("activation", "linear"), layer),
    }
    return step, ("map", ho, wo, filters)


def bn_step(layer, shape):
    cfg = layer.config
    axis = cfg.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    if axis not in (-1, len(shape) - 1):
        raise unsupported(
            layer, f"it normalises axis {axis!r}; caproute normalises the channel axis (-1)."
        )
    center, scale = bool(cfg.get("center", True)), bool(cfg.get("scale", True))
    roles = (("gamma",) if scale else ()) + (("beta",) if center else ())
    roles += ("moving_mean", "moving_variance")
    w = by_role(layer, roles)
    channels = shape[-1]
    for role, arr in w.items():
        _check_shape(layer, role, arr, (channels,))
    return {
        "op": "bn",
        "gamma": w.get("gamma"),
        "beta": w.get("beta"),
        "mean": w["moving_mean"],
        "var": w["moving_variance"],
        "epsilon": float(cfg.get("epsilon", 1e-3)),
        "center": center,
        "scale": scale,
    }, shape


def _as_written(value):
    """A float32 config value (tf.keras stores 0.3 as 0.30000001192092896) as the shortest
    decimal that is the same float32: the value the user wrote, which Keras computes with."""
    return float(str(np.float32(value)))


def activation_layer_step(layer, shape, notes):
    cfg, cls = layer.config, layer.class_name
    if cls == "Activation":
        act = activation_spec(cfg.get("activation"), layer)
    elif cls == "LeakyReLU":
        slope = cfg.get("negative_slope", cfg.get("alpha"))
        if slope is None:
            slope = 0.3
            notes.append(f"LeakyReLU {layer.name!r} records no slope: Keras's default 0.3")
        act = {"name": "leaky_relu", "negative_slope": _as_written(slope)}
    elif cls == "ReLU":
        if cfg.get("max_value") is not None or float(cfg.get("threshold", 0) or 0) != 0:
            raise unsupported(layer, "a capped or shifted ReLU (max_value / threshold).")
        slope = _as_written(cfg.get("negative_slope", 0) or 0)
        act = "relu" if slope == 0 else {"name": "leaky_relu", "negative_slope": slope}
    elif cls == "ELU":
        alpha = _as_written(cfg.get("alpha", 1.0))
        act = "elu" if alpha == 1.0 else {"name": "elu", "alpha": alpha}
    else:
        raise unsupported(layer, "an activation caproute does not have.")
    if _weights(layer):
        raise unsupported(layer, "an activation with trained weights.")
    return {"op": "act", "act": act}, shape


def reshape_step(layer, shape):
    target = list(layer.config.get("target_shape", []))
    if shape[0] != "map" or len(target) != 2:
        raise unsupported(
            layer,
            f"a reshape to {tuple(target)} of {_describe(shape)}; caproute reshapes only a "
            "convolution's map into capsules (target (-1, dim)), the primary capsules.",
        )
    _, h, w, c = shape
    dim = int(target[1])
    n = h * w * c // dim if dim > 0 and c % dim == 0 else None
    if n is None or target[0] not in (-1, n):
        raise unsupported(
            layer,
            f"a reshape of a {h}x{w} map of {c} channels to {tuple(target)}: caproute's primary "
            f"capsules cut each position's channels into capsules of dim dividing {c}.",
        )
    return {"op": "reshape_caps", "dim": dim, "channels": c}, ("raw_caps", n, dim)


def _describe(shape):
    kind = shape[0]
    if kind == "map":
        return f"a {shape[1]}x{shape[2]} map of {shape[3]} channels"
    if kind in ("caps", "raw_caps"):
        return f"{shape[1]} capsules of dim {shape[2]}"
    return f"a {shape[1]}x{shape[2]} map of {shape[3]} matrix-capsule types"


def mentions_squash(layer):
    """Whether a Lambda's recorded function is named squash (its code is never run or
    unmarshalled: the name is looked up in the serialised text / bytes)."""
    fn = layer.config.get("function")
    texts = []
    if isinstance(fn, dict):
        texts.append(str(fn.get("config", "")))
        cfg = fn.get("config")
        if isinstance(cfg, dict):
            texts.append(str(cfg.get("code", "")))
    elif isinstance(fn, (list, tuple)) and fn:
        texts.append(str(fn[0]))
    elif isinstance(fn, str):
        texts.append(fn)
    for text in texts:
        if "squash" in text.lower():
            return True
        try:
            raw = base64.b64decode(text.encode("ascii"), validate=False)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            continue
        if b"squash" in raw.lower():
            return True
    return False


def squash_step(layer, shape):
    if shape[0] != "raw_caps":
        raise unsupported(layer, f"a {layer.class_name} on {_describe(shape)}.")
    if _weights(layer):
        raise unsupported(layer, "a layer with weights where squash is expected.")
    is_squash = (
        mentions_squash(layer)
        if layer.class_name == "Lambda"
        else "squash" in str(layer.class_name).lower()
    )
    if not is_squash:
        raise unsupported(
            layer,
            "it follows the primary capsules' reshape, where caproute expects squash, but "
            "nothing in the file says it is squash (its function or class is not named so).",
        )
    return {"op": "squash"}, ("caps", shape[1], shape[2])


# ---------------------------------------------------------------- custom capsule layers ----
_N_OUT_KEYS = re.compile(r"(num|n)_?(capsule|caps|class)|^capsules$|^(num_)?classes$|^caps_num")
_DIM_KEYS = re.compile(r"dim|vec_len|capsule_size")
_ITER_KEYS = re.compile(r"rout|iter")


def _ints(cfg, pattern, exclude=None):
    out = []
    for key, value in cfg.items():
        if isinstance(value, bool) or not isinstance(value, int):
            continue
        if pattern.search(key.lower()) and not (exclude and exclude.search(key.lower())):
            out.append((key, value))
    return out


def _config_ints(layer):
    return {k: v for k, v in layer.config.items() if isinstance(v, int) and not isinstance(v, bool)}


def routing_iterations(layer, hint, notes):
    found = _ints(layer.config, _ITER_KEYS)
    if hint is not None:
        if found and found[0][1] != hint:
            notes.append(
                f"{layer.name!r}: n_iter={hint} as passed (its config says {found[0][0]}="
                f"{found[0][1]})"
            )
        return hint, None
    if len(found) == 1:
        return int(found[0][1]), None
    return None, f"the routing iterations of {layer.name!r} ({layer.class_name})"


def _squeeze_leading(arr):
    while arr.ndim > 4 and arr.shape[0] == 1:
        arr = arr[0]
    return arr


def dense_caps_step(layer, shape, hints, notes, missing):
    """A custom layer routing vector capsules, recognised by its transform's shape."""
    _, n_in, d_in = shape
    tensors = _weights(layer)
    big = [(n, a) for n, a in tensors if a.ndim >= 3]
    if len(big) != 1:
        raise unsupported(
            layer,
            "it takes capsules but holds "
            + ("no transform tensor" if not big else f"{len(big)} tensors of rank >= 3")
            + f" ({[(n, tuple(a.shape)) for n, a in tensors]}); caproute's capsule layer has "
            "one transform of shape (n_out, n_in, out_dim, in_dim).",
        )
    if len(tensors) > 1:
        raise unsupported(
            layer,
            f"besides its transform it holds {[n for n, a in tensors if a.ndim < 3]}; a bias "
            "or other tensor inside routing is not something caproute can place without "
            "knowing the layer's code.",
        )
    wname, W = big[0]
    W = _squeeze_leading(W)
    n_out_cfg = [v for _, v in _ints(layer.config, _N_OUT_KEYS, _DIM_KEYS)]
    dim_cfg = [v for _, v in _ints(layer.config, _DIM_KEYS, re.compile("in|input"))]
    layouts = []
    if W.ndim == 4:
        a, b, c, e = W.shape
        if b == n_in and e == d_in:
            layouts.append(("keras", a, c))
        if b == n_in and c == d_in:
            layouts.append(("torch", a, e))
        if a == n_in and e == d_in:
            layouts.append(("caproute", b, c))
    elif W.ndim == 3 and W.shape[0] == n_in and W.shape[1] == d_in:
        for n_out in n_out_cfg:
            if W.shape[2] % n_out == 0:
                layouts.append(("tf", n_out, W.shape[2] // n_out))
    fits = [
        lay
        for lay in layouts
        if (not n_out_cfg or lay[1] in n_out_cfg) and (not dim_cfg or lay[2] in dim_cfg)
    ]
    hint = hints.get("weight_layout")
    if hint is not None:
        fits = [lay for lay in fits if lay[0] == hint]
    if not fits:
        raise WeightsMismatchError(
            f"Keras layer {layer.name!r} ({layer.class_name})",
            [
                f"its transform {wname!r} has shape {tuple(W.shape)}, which fits no capsule "
                f"layout for {n_in} input capsules of dim {d_in}"
                + (f" and its config's sizes {_config_ints(layer)}" if n_out_cfg or dim_cfg else "")
                + "; caproute takes (n_out, n_in, out_dim, in_dim) and the layouts of "
                "WEIGHT_LAYOUTS" + (f" (weight_layout={hint!r} was passed)" if hint else "")
            ],
        )
    if len(fits) > 1:
        missing.append(
            (
                "weight_layout",
                f"the layout of {layer.name!r}'s transform {tuple(W.shape)}",
                [lay[0] for lay in fits],
            )
        )
        fits = fits[:1]
    layout, n_out, out_dim = fits[0]
    n_iter, ask = routing_iterations(layer, hints.get("n_iter"), notes)
    if ask:
        missing.append(("n_iter", ask, ["an int >= 1 (3 in the paper)"]))
    notes.append(
        f"{layer.name!r} ({layer.class_name}): {n_out} capsules of dim {out_dim}, transform "
        f"{wname!r} in the {layout!r} layout; routing taken as the paper's (softmax over "
        "parents, logits reset per image), as CapsNet-Keras computes it"
    )
    return {
        "op": "dense_caps",
        "W": W,
        "layout": layout,
        "n_out": n_out,
        "out_dim": out_dim,
        "n_iter": n_iter,
    }, ("caps", n_out, out_dim)


def _stride(layer, default_missing):
    for key, value in layer.config.items():
        if "stride" in key.lower():
            return _pair(value, layer, key)
    raise unsupported(layer, f"its config records no strides ({default_missing}).")


def _kernel_cfg(layer):
    for key, value in layer.config.items():
        if "kernel" in key.lower() and not isinstance(value, dict):
            return _pair(value, layer, key)
    return None


def _config_text(layer, word, default):
    for key, value in layer.config.items():
        if word in key.lower() and isinstance(value, str):
            return value
    return default


def primary_vector_step(layer, shape, notes):
    """A custom layer holding one convolution kernel (and its bias) whose config names a
    capsule dimension: primary capsules, its map cut into capsules as CapsNet-Keras's
    Reshape(-1, dim) does (position-major) and squashed."""
    _, h, w, c = shape
    tensors = _weights(layer)
    kernel = [a for _, a in tensors if a.ndim == 4][0]
    vectors = [a for _, a in tensors if a.ndim == 1]
    k = _pair(list(kernel.shape[:2]), layer, "kernel")
    if kernel.shape[2] != c:
        raise WeightsMismatchError(
            f"Keras layer {layer.name!r} ({layer.class_name})",
            [f"its kernel {tuple(kernel.shape)} takes {kernel.shape[2]} channels; {c} come in"],
        )
    channels = int(kernel.shape[3])
    dims = [v for _, v in _ints(layer.config, re.compile("dim"), re.compile("in|input"))]
    dims = [d for d in dims if d >= 1 and channels % d == 0]
    if len(dims) != 1:
        raise unsupported(
            layer,
            "a layer with one convolution kernel that is not a Conv2D: caproute takes it for "
            "primary capsules only when its config names their dimension (e.g. dim_capsule) "
            f"dividing its {channels} channels; its config has {_config_ints(layer)}.",
        )
    dim = dims[0]
    s = _stride(layer, "pass them in the layer's config")
    padding = _config_text(layer, "padding", "valid")
    if padding not in ("valid", "same"):
        raise unsupported(layer, f"its padding {padding!r} is not 'valid' or 'same'.")
    bias = vectors[0] if vectors else np.zeros(channels, kernel.dtype)
    if bias.shape != (channels,):
        raise unsupported(layer, f"its bias {tuple(bias.shape)} does not match its kernel.")
    ho, wo = out_size(h, k, s, padding), out_size(w, k, s, padding)
    notes.append(
        f"{layer.name!r} ({layer.class_name}): primary capsules of dim {dim} from its "
        f"{k}x{k} kernel (stride {s}, padding {padding!r}); its map taken as cut into capsules "
        "position by position (CapsNet-Keras's reshape) and squashed, as its config suggests "
        "(its code is not read)"
    )
    step = {
        "op": "primary_caps",
        "kernel": kernel,
        "bias": bias,
        "k": k,
        "stride": s,
        "padding": padding,
        "dim": dim,
    }
    return step, ("caps", ho * wo * channels // dim, dim)


def primary_matrix_step(layer, shape, notes):
    _, h, w, c = shape
    tensors = _weights(layer)
    kernels = [a for _, a in tensors if a.ndim == 4]
    vectors = [a for _, a in tensors if a.ndim == 1]
    if len(kernels) != 2 or len(vectors) not in (0, 2) or len(tensors) != 2 + len(vectors):
        raise unsupported(
            layer,
            "a layer on a map that is neither a convolution nor primary matrix capsules (two "
            f"kernels, pose and activation, and their biases): it holds "
            f"{[(n, tuple(a.shape)) for n, a in tensors]}.",
        )
    pose, act = sorted(kernels, key=lambda a: -a.shape[-1])
    t = act.shape[-1]
    if pose.shape[-1] != POSE * t or pose.shape[:3] != act.shape[:3] or pose.shape[2] != c:
        raise unsupported(
            layer,
            f"its kernels {tuple(pose.shape)} and {tuple(act.shape)} are not pose (k, k, {c}, "
            "16 * types) and activation (k, k, c, types) kernels of primary matrix capsules.",
        )
    if pose.shape[0] != pose.shape[1]:
        raise unsupported(layer, "its kernels are not square; caproute's are.")
    k = int(pose.shape[0])
    s = _stride(layer, "pass them in the layer's config")
    order = [a.shape[-1] for a in vectors]
    biases = dict(zip(order, vectors, strict=True)) if vectors else {}
    if vectors and sorted(order) != sorted([POSE * t, t]):
        raise unsupported(layer, f"its biases {order} do not match its kernels.")
    zeros = np.zeros
    notes.append(
        f"{layer.name!r} ({layer.class_name}): primary matrix capsules, {t} types, {k}x{k} "
        f"kernels, stride {s}; the larger kernel read as the poses (16 per type), the other as "
        "the activations, which are taken through a sigmoid (as in the paper)"
    )
    step = {
        "op": "primary_matrix",
        "n_types": int(t),
        "k": k,
        "stride": s,
        "pose_weight": pose,
        "pose_bias": biases.get(POSE * t, zeros(POSE * t, pose.dtype)),
        "act_weight": act,
        "act_bias": biases.get(t, zeros(t, act.dtype)),
    }
    return step, ("matrix", out_size(h, k, s, "valid"), out_size(w, k, s, "valid"), int(t))


def _betas(layer, t_out, vectors):
    """beta_u, beta_a from the layer's small tensors, in creation order (beta_u first, as
    in the official code and its ports), shapes (t_out,) / (t_out, 16) / with leading 1s."""
    out = []
    for name, arr in vectors:
        a = arr.reshape(-1) if arr.size == t_out else arr.reshape(t_out, POSE)
        out.append((name, a))
    if len(out) != 2:
        raise unsupported(
            layer,
            f"EM routing needs two per-type parameters (beta_u, beta_a); it holds "
            f"{[(n, tuple(a.shape)) for n, a in vectors]}.",
        )
    return out[0][1], out[1][1]


def matrix_caps_step(layer, shape, hints, notes, missing):
    """A custom layer on matrix capsules: convolutional (its transform has a k x k field)
    or class capsules."""
    _, h, w, t_in = shape
    tensors = _weights(layer)
    transforms = [(n, a) for n, a in tensors if a.ndim >= 3 and a.size % POSE == 0 and a.ndim != 2]
    transforms = [(n, a) for n, a in transforms if a.shape[-1] == 4 or a.shape[-1] == POSE]
    if len(transforms) != 1:
        raise unsupported(
            layer,
            "it takes matrix capsules but holds no single transform of 4x4 matrices: "
            f"{[(n, tuple(a.shape)) for n, a in tensors]}.",
        )
    wname, W = transforms[0]
    small = [(n, a) for n, a in tensors if n != wname]
    k_cfg = _kernel_cfg(layer)
    per = W.size // POSE
    n_iter, ask = routing_iterations(layer, (hints.get("em_options") or {}).get("n_iter"), notes)
    if ask:
        missing.append(("em_options", ask + ' (em_options={"n_iter": ...})', ["an int >= 1"]))
    if k_cfg is not None and per % (k_cfg * k_cfg * t_in) == 0:
        k = k_cfg
        t_out = per // (k * k * t_in)
        s = _stride(layer, "pass them in the layer's config")
        beta_u, beta_a = _betas(layer, t_out, small)
        weight = W.reshape(k, k, t_in, t_out, 4, 4)
        notes.append(
            f"{layer.name!r} ({layer.class_name}): convolutional matrix capsules, {k}x{k} "
            f"field, stride {s}, {t_out} types; {wname!r} read as (k, k, in, out, 4, 4), the "
            "two other tensors as beta_u then beta_a (creation order)"
        )
        step = {
            "op": "conv_matrix",
            "weight": weight,
            "beta_u": beta_u,
            "beta_a": beta_a,
            "k": k,
            "stride": s,
            "t_out": t_out,
            "n_iter": n_iter,
        }
        return step, ("matrix", out_size(h, k, s, "valid"), out_size(w, k, s, "valid"), t_out)
    if per % t_in:
        raise unsupported(
            layer,
            f"its transform {wname!r} {tuple(W.shape)} holds {per} 4x4 matrices, not a "
            f"multiple of its {t_in} input types.",
        )
    n_cls = per // t_in
    beta_u, beta_a = _betas(layer, n_cls, small)
    coord = [v for key, v in layer.config.items() if "coord" in key.lower() and isinstance(v, bool)]
    options = hints.get("em_options") or {}
    if "coordinate_addition" in options:
        coord = [bool(options["coordinate_addition"])]
    if len(coord) != 1:
        missing.append(
            (
                "em_options",
                f"whether {layer.name!r} adds coordinates to its votes "
                '(em_options={"coordinate_addition": ...})',
                ["True", "False"],
            )
        )
        coord = [True]
    notes.append(
        f"{layer.name!r} ({layer.class_name}): class matrix capsules, {n_cls} classes; "
        f"{wname!r} read as (in, classes, 4, 4), the two other tensors as beta_u then beta_a "
        f"(creation order); coordinate addition {coord[0]}"
    )
    return {
        "op": "class_matrix",
        "weight": W.reshape(t_in, n_cls, 4, 4),
        "beta_u": beta_u,
        "beta_a": beta_a,
        "n_classes": n_cls,
        "coordinate_addition": coord[0],
        "n_iter": n_iter,
    }, ("class", n_cls)


def is_builtin(layer):
    return layer.class_name in (
        *CONV_CLASSES,
        *BN_CLASSES,
        *IDENTITY,
        "Activation",
        "LeakyReLU",
        "ReLU",
        "ELU",
        "Reshape",
        "Lambda",
        "InputLayer",
    )


def step(layer, shape, hints, notes, missing):
    """``(step, new shape)`` of one Keras layer on the classification path."""
    cls = layer.class_name
    if cls in CONV_CLASSES:
        if shape[0] != "map":
            raise unsupported(layer, f"a convolution of {_describe(shape)}.")
        return conv_step(layer, shape)
    if cls in BN_CLASSES:
        if shape[0] != "map":
            raise unsupported(layer, f"a batch normalisation of {_describe(shape)}.")
        return bn_step(layer, shape)
    if cls in IDENTITY:
        return {"op": "identity"}, shape
    if cls in ("Activation", "LeakyReLU", "ReLU", "ELU"):
        if shape[0] != "map":
            raise unsupported(layer, f"an activation of {_describe(shape)}.")
        return activation_layer_step(layer, shape, notes)
    if cls == "Reshape":
        return reshape_step(layer, shape)
    if shape[0] == "raw_caps":
        return squash_step(layer, shape)
    if cls == "Lambda":
        raise unsupported(
            layer,
            "a Lambda layer runs Python code that the file does not describe; caproute "
            "imports a Lambda only as the squash after the primary capsules' reshape.",
        )
    if is_builtin(layer) or cls in KERAS_CLASSES or str(layer.module or "").startswith("keras"):
        raise unsupported(layer, f"caproute has no layer that computes a {cls}.")
    if shape[0] == "caps":
        return dense_caps_step(layer, shape, hints, notes, missing)
    if shape[0] == "map":
        tensors = _weights(layer)
        if sum(a.ndim == 4 for _, a in tensors) == 1 and len(tensors) <= 2:
            return primary_vector_step(layer, shape, notes)
        return primary_matrix_step(layer, shape, notes)
    if shape[0] == "matrix":
        return matrix_caps_step(layer, shape, hints, notes, missing)
    raise unsupported(layer, f"a {cls} on {_describe(shape)}.")
