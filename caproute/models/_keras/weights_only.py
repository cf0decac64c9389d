"""Steps of a Keras 2 weights-only file (``model.save_weights``): the layer order and the
tensors' names and shapes, no architecture.

Shapes determine channels, kernel sizes, the capsule layer's sizes and the primary capsules'
dimension (the transform's input dimension). They do not determine activations, routing
iterations, where a BatchNormalization sits relative to its activation, nor (always) strides
and padding: those come from the caller, and what is missing is listed with its choices.
"""

from __future__ import annotations

import itertools

from ..errors import UnsupportedLayerError, WeightsMismatchError
from .roles import out_size

_BN_ROLES = {"gamma", "beta", "moving_mean", "moving_variance"}


def _short(name):
    return name.rsplit("/", 1)[-1]


def _kind(layer):
    """ "conv", "bn", "caps", "dense", None (no weights) or "other", from the tensors."""
    tensors = layer.weights
    if not tensors:
        return None
    shorts = {_short(n): a for n, a in tensors}
    if "kernel" in shorts and set(shorts) <= {"kernel", "bias"}:
        return "conv" if shorts["kernel"].ndim == 4 else "dense"
    if set(shorts) <= _BN_ROLES and {"moving_mean", "moving_variance"} <= set(shorts):
        return "bn"
    if len(tensors) == 1 and tensors[0][1].ndim >= 4:
        return "caps"
    return "other"


def steps(kfile, hints, notes, missing):
    layers = kfile.layers
    convs, bns, caps_at, dropped, silent = [], [], None, [], []
    plan = []
    for layer in layers:
        kind = _kind(layer)
        if caps_at is not None:
            if kind is not None:
                dropped.append((layer.name, "weights only", "after the capsule layer"))
            continue
        if kind is None:
            silent.append(layer.name)
            continue
        if kind in ("dense", "other"):
            shapes = [(n, tuple(a.shape)) for n, a in layer.weights]
            raise UnsupportedLayerError(
                layer.name,
                "unknown (weights-only file)",
                f"its tensors {shapes} are neither a convolution, a BatchNormalization nor a "
                "capsule transform, and it comes before the capsule layer.",
            )
        if kind == "caps":
            caps_at = layer
        plan.append((kind, layer))
        (convs if kind == "conv" else bns if kind == "bn" else []).append(layer)
    if caps_at is None:
        raise UnsupportedLayerError(
            layers[-1].name if layers else "?",
            "unknown (weights-only file)",
            "the file holds no capsule transform (a tensor of rank 4 or more).",
        )
    if not convs:
        raise UnsupportedLayerError(
            caps_at.name, "unknown (weights-only file)", "no convolution comes before it."
        )
    if silent:
        notes.append(
            f"layers without weights, which a weights-only file does not describe: {silent}; "
            "their effect is what the arguments say (activations), or none"
        )
    in_shape = hints.get("input_shape")
    if in_shape is None:
        missing.append(("input_shape", "the size of the images", ["(H, W, C)"]))
    n = len(convs)
    acts = hints.get("activation")
    if isinstance(acts, list):
        if len(acts) != n:
            raise ValueError(
                f"`activation` must have {n} entries, one per convolution (the primary "
                f"capsules' last); got {len(acts)}."
            )
    elif acts is not None:
        acts = [acts] * (n - 1) + [None]
        notes.append(
            "the primary capsules' convolution taken as linear (CapsNet-Keras); pass one "
            "activation per convolution to say otherwise"
        )
    else:
        missing.append(
            (
                "activation",
                f"the activation of the convolution(s) before the primary capsules "
                f"({[c.name for c in convs[:-1]] or [convs[0].name]})",
                ['"relu"', '{"name": "leaky_relu", "negative_slope": 0.3}', "..."],
            )
        )
        acts = [None] * n
    bn_places = hints.get("batchnorm")
    if bns:
        if bn_places is None:
            missing.append(
                (
                    "batchnorm",
                    f"where each BatchNormalization ({[b.name for b in bns]}) sits",
                    ['"before_activation"', '"after_activation"'],
                )
            )
            bn_places = ["after_activation"] * len(bns)
        elif isinstance(bn_places, str):
            bn_places = [bn_places] * len(bns)
        elif len(bn_places) != len(bns):
            raise ValueError(
                f"`batchnorm` must have {len(bns)} entries, one per BatchNormalization; got "
                f"{bn_places}."
            )
    bn_eps = hints.get("bn_epsilon")
    if bns:
        if bn_eps is None:
            missing.append(
                (
                    "bn_epsilon",
                    "the BatchNormalization epsilon (a weights-only file does not record it)",
                    ["1e-3 (Keras's default)", "a sequence, one per BatchNormalization"],
                )
            )
            bn_eps = [1e-3] * len(bns)
        elif isinstance(bn_eps, list):
            if len(bn_eps) != len(bns):
                raise ValueError(
                    f"`bn_epsilon` must have {len(bns)} entries, one per BatchNormalization; "
                    f"got {len(bn_eps)}."
                )
        else:
            bn_eps = [bn_eps] * len(bns)
    n_iter = hints.get("n_iter")
    if n_iter is None:
        missing.append(("n_iter", "the routing iterations", ["an int >= 1 (3 in the paper)"]))
    # shapes
    kernels = [{_short(k): a for k, a in c.weights} for c in convs]
    problems = []
    c_prev = in_shape[2] if in_shape else kernels[0]["kernel"].shape[2]
    for conv, w in zip(convs, kernels, strict=True):
        k = w["kernel"]
        if k.shape[0] != k.shape[1]:
            raise UnsupportedLayerError(conv.name, "Conv2D", "its kernel is not square.")
        if k.shape[2] != c_prev:
            problems.append(
                f"{conv.name!r}'s kernel {tuple(k.shape)} takes {k.shape[2]} channels; "
                f"{c_prev} come in"
            )
        c_prev = k.shape[3]
    W = caps_at.weights[0][1]
    while W.ndim > 4 and W.shape[0] == 1:
        W = W[0]
    given_layout = hints.get("weight_layout")
    if W.ndim != 4 or given_layout == "tf":
        raise UnsupportedLayerError(
            caps_at.name,
            "unknown (weights-only file)",
            f"its transform {tuple(W.shape)} is not of rank 4 ((n_out, n_in, out_dim, in_dim) "
            "in CapsNet-Keras); caproute reads the other layouts from a file with its "
            "architecture.",
        )
    readings = {
        "keras": (W.shape[0], W.shape[1], W.shape[2], W.shape[3]),
        "torch": (W.shape[0], W.shape[1], W.shape[3], W.shape[2]),
        "caproute": (W.shape[1], W.shape[0], W.shape[2], W.shape[3]),
    }
    # the layouts the shapes allow: the capsule dimension divides the primary channels and
    # the input-capsule count is a whole number of positions
    possible = [
        lay
        for lay, (_, n_in_, _, dim_) in readings.items()
        if c_prev % dim_ == 0 and n_in_ % (c_prev // dim_) == 0
    ]
    if given_layout is not None:
        layout = given_layout
    elif len(possible) == 1:
        layout = possible[0]
    elif not possible:
        layout = "keras"
    else:
        missing.append(
            (
                "weight_layout",
                f"the layout of the capsule transform {tuple(W.shape)}, which fits {possible}",
                [repr(p) for p in possible],
            )
        )
        layout = possible[0]
    n_out, n_in, out_dim, dim = (int(v) for v in readings[layout])
    notes.append(
        f"capsule transform {caps_at.weights[0][0]!r} {tuple(W.shape)} read in the {layout!r} "
        f"layout: {n_out} capsules of dim {out_dim} from {n_in} of dim {dim}"
        + ("" if given_layout else " (the only layout its shape fits)")
    )
    if c_prev % dim:
        problems.append(
            f"the primary capsules' convolution has {c_prev} channels, not a multiple of the "
            f"capsule dimension {dim} (the transform's input dimension"
            + (f" in the {layout!r} layout)" if given_layout else ", in every layout)")
        )
    if problems:
        raise WeightsMismatchError(f"Keras weights in {kfile.label}", problems)
    n_types = c_prev // dim
    strides, paddings = hints.get("strides"), hints.get("padding")
    for value, name in ((strides, "strides"), (paddings, "padding")):
        if value is not None and len(value) != n:
            raise ValueError(f"`{name}` must have {n} entries, one per convolution; got {value}.")
    if in_shape is not None:
        fits = _fitting(in_shape, [w["kernel"].shape[0] for w in kernels], strides, paddings)
        fits = [f for f in fits if f[2] * n_types == n_in]
        if not fits:
            raise WeightsMismatchError(
                f"Keras weights in {kfile.label}",
                [
                    f"the capsule transform takes {n_in} input capsules ({n_in / n_types:g} "
                    f"positions x {n_types} types), which no strides and padding of the "
                    f"convolutions give for input_shape={tuple(in_shape)}"
                    + (f" with strides={strides}" if strides else "")
                    + (f" and padding={paddings}" if paddings else "")
                    + ": pass the input_shape the network was trained on"
                ],
            )
        if len(fits) > 1:
            shown = "; ".join(f"strides={list(s)}, padding={list(p)}" for s, p, _ in fits[:6])
            more = f" (and {len(fits) - 6} more)" if len(fits) > 6 else ""
            missing.append(
                (
                    "strides` and `padding",
                    f"the convolutions' strides and padding: {len(fits)} combinations give "
                    f"{n_in} capsules: {shown}{more}",
                    ["one per convolution"],
                )
            )
        strides, paddings = list(fits[0][0]), list(fits[0][1])
        if len(fits) == 1 and (hints.get("strides") is None or hints.get("padding") is None):
            notes.append(
                f"strides {strides} and padding {paddings}: the only ones that give the "
                f"transform's {n_in} input capsules"
            )
    if missing:
        return [], None, dropped
    out, bn_iter, conv_i = [], iter(zip(bn_places or [], bn_eps or [], strict=True)), -1
    for kind, layer in plan:
        if kind == "conv":
            conv_i += 1
            w = kernels[conv_i]
            out.append(
                [
                    {
                        "op": "conv",
                        "kernel": w["kernel"],
                        "bias": w.get("bias"),
                        "k": int(w["kernel"].shape[0]),
                        "stride": strides[conv_i],
                        "padding": paddings[conv_i],
                        "act": acts[conv_i],
                    },
                    [layer.name],
                ]
            )
        elif kind == "bn":
            w = {_short(k): a for k, a in layer.weights}
            place, epsilon = next(bn_iter)
            step = {
                "op": "bn",
                "gamma": w.get("gamma"),
                "beta": w.get("beta"),
                "mean": w["moving_mean"],
                "var": w["moving_variance"],
                "epsilon": float(epsilon),
                "center": "beta" in w,
                "scale": "gamma" in w,
            }
            if place == "before_activation" and out and out[-1][0]["op"] == "conv":
                act = out[-1][0]["act"]
                out[-1][0]["act"] = None
                out.append([step, [layer.name]])
                if act is not None:
                    out.append([{"op": "act", "act": act}, []])
            else:
                out.append([step, [layer.name]])
        elif kind == "caps":
            out.append([{"op": "reshape_caps", "dim": dim, "channels": c_prev}, []])
            out.append([{"op": "squash"}, []])
            out.append(
                [
                    {
                        "op": "dense_caps",
                        "W": W,
                        "layout": layout,
                        "n_out": n_out,
                        "out_dim": out_dim,
                        "n_iter": n_iter,
                    },
                    [layer.name],
                ]
            )
    return [tuple(x) for x in out], tuple(in_shape), dropped


def _fitting(in_shape, ks, strides, paddings):
    """``[(strides, paddings, positions)]`` of the convolutions for every stride (1..k) and
    padding that is not fixed by the caller."""
    h, w, _ = in_shape
    stride_sets = [[s] for s in strides] if strides else [list(range(1, k + 1)) for k in ks]
    pad_sets = [[p] for p in paddings] if paddings else [["valid", "same"]] * len(ks)
    out = []
    for ss in itertools.product(*stride_sets):
        for ps in itertools.product(*pad_sets):
            hh, ww = h, w
            for k, s, p in zip(ks, ss, ps, strict=True):
                hh, ww = out_size(hh, k, s, p), out_size(ww, k, s, p)
                if hh < 1 or ww < 1:
                    break
            else:
                out.append((ss, ps, hh * ww))
    return out
