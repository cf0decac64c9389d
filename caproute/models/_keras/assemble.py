"""Steps (one per Keras layer, from ``roles``) fused into caproute layers with their weights.

Fusions: a BatchNormalization directly after a linear convolution is folded into it; an
activation directly after a linear convolution becomes the convolution's; a linear
convolution followed by the capsules' reshape and squash is a PrimaryCaps. Everything else is
a layer of its own (BatchNorm, Activation, or a PrimaryCaps with a 1x1 identity kernel that
only cuts a map into squashed capsules).
"""

from __future__ import annotations

import re

import numpy as np

from ..layers import (
    Activation,
    BatchNorm,
    ClassMatrixCaps,
    Conv2D,
    ConvMatrixCaps,
    DenseCaps,
    PrimaryCaps,
    PrimaryMatrixCaps,
    fold_batchnorm,
)


class _Names:
    """caproute layer names from Keras ones: '.' is not allowed there, and names are unique."""

    def __init__(self):
        self.used = set()
        self.renamed = {}

    def __call__(self, keras_name):
        base = re.sub(r"[^0-9A-Za-z_\-]", "_", keras_name) or "layer"
        name, i = base, 1
        while name in self.used:
            i += 1
            name = f"{base}_{i}"
        self.used.add(name)
        if name != keras_name:
            self.renamed[name] = keras_name
        return name


def _em_kwargs(cls, options):
    """The em_options a matrix-capsule layer class takes (others belong to another class)."""
    import inspect

    params = inspect.signature(cls.__init__).parameters
    return {
        k: v
        for k, v in options.items()
        if k in params and k not in ("n_iter", "coordinate_addition")
    }


def assemble(steps, *, squash_eps, em_options):
    """``(layers, weights, covered)`` from ``[(step, [keras names])]``; ``covered`` maps each
    caproute layer to the Keras layers it computes (the last one's output is its output)."""
    names = _Names()
    layers, weights, covered = [], {}, {}
    i = 0

    def add(layer, keras_names, params):
        layers.append(layer)
        covered[layer.name] = list(keras_names)
        for key, value in params.items():
            if value is not None:
                weights[f"{layer.name}.{key}"] = np.asarray(value)

    while i < len(steps):
        step, knames = steps[i]
        op = step["op"]
        i += 1
        if op == "identity":
            if layers:
                covered[layers[-1].name].extend(knames)
            continue
        if op == "conv":
            kernel, bias, act = step["kernel"], step["bias"], step["act"]
            knames = list(knames)
            # absorb what follows: identities, a BatchNorm and an activation after a linear conv
            while i < len(steps):
                nxt, nnames = steps[i]
                if nxt["op"] == "identity":
                    knames += nnames
                elif nxt["op"] == "bn" and act is None:
                    kernel, bias = fold_batchnorm(
                        kernel,
                        bias,
                        nxt["gamma"],
                        nxt["beta"],
                        nxt["mean"],
                        nxt["var"],
                        nxt["epsilon"],
                    )
                    knames += nnames
                elif nxt["op"] == "act" and act is None:
                    act = nxt["act"]
                    knames += nnames
                else:
                    break
                i += 1
            primary = (
                i + 1 < len(steps)
                and steps[i][0]["op"] == "reshape_caps"
                and steps[i + 1][0]["op"] == "squash"
            )
            if primary and act is None:
                dim = steps[i][0]["dim"]
                layer = PrimaryCaps(
                    kernel.shape[-1] // dim,
                    dim,
                    kernel_size=step["k"],
                    stride=step["stride"],
                    padding=step["padding"],
                    order="position-major",
                    squash_eps=squash_eps,
                    name=names(knames[0]),
                )
                bias = np.zeros(kernel.shape[-1], kernel.dtype) if bias is None else bias
                add(layer, knames + steps[i][1] + steps[i + 1][1], {"weight": kernel, "bias": bias})
                i += 2
                continue
            layer = Conv2D(
                kernel.shape[-1],
                step["k"],
                stride=step["stride"],
                padding=step["padding"],
                activation=act,
                use_bias=bias is not None,
                name=names(knames[0]),
            )
            add(layer, knames, {"weight": kernel, "bias": bias})
            continue
        if op == "bn":
            layer = BatchNorm(
                epsilon=step["epsilon"],
                center=step["center"],
                scale=step["scale"],
                name=names(knames[0]),
            )
            add(
                layer,
                knames,
                {
                    "gamma": step["gamma"],
                    "beta": step["beta"],
                    "moving_mean": step["mean"],
                    "moving_variance": step["var"],
                },
            )
            continue
        if op == "act":
            add(Activation(step["act"], name=names(knames[0])), knames, {})
            continue
        if op == "reshape_caps":
            # a map that is not a linear conv's output, cut into capsules: 1x1 identity kernel
            dim = step["dim"]
            squash_names = steps[i][1] if i < len(steps) and steps[i][0]["op"] == "squash" else []
            i += 1 if squash_names else 0
            channels = step["channels"]
            layer = PrimaryCaps(
                channels // dim,
                dim,
                kernel_size=1,
                stride=1,
                order="position-major",
                squash_eps=squash_eps,
                name=names(knames[0]),
            )
            eye = np.eye(channels, dtype=np.float32).reshape(1, 1, channels, channels)
            add(layer, knames + squash_names, {"weight": eye, "bias": np.zeros(channels)})
            continue
        if op == "primary_caps":
            kernel = step["kernel"]
            layer = PrimaryCaps(
                kernel.shape[-1] // step["dim"],
                step["dim"],
                kernel_size=step["k"],
                stride=step["stride"],
                padding=step["padding"],
                order="position-major",
                squash_eps=squash_eps,
                name=names(knames[0]),
            )
            add(layer, knames, {"weight": kernel, "bias": step["bias"]})
            continue
        if op == "dense_caps":
            layer = DenseCaps(
                step["n_out"],
                step["out_dim"],
                n_iter=step["n_iter"],
                weight_layout=step["layout"],
                squash_eps=squash_eps,
                name=names(knames[0]),
            )
            add(layer, knames, {"weight": step["W"]})
            continue
        if op == "primary_matrix":
            layer = PrimaryMatrixCaps(
                step["n_types"], kernel_size=step["k"], stride=step["stride"], name=names(knames[0])
            )
            params = {k: step[k] for k in ("pose_weight", "pose_bias", "act_weight", "act_bias")}
            add(layer, knames, params)
            continue
        if op == "conv_matrix":
            layer = ConvMatrixCaps(
                step["t_out"],
                kernel_size=step["k"],
                stride=step["stride"],
                n_iter=step["n_iter"],
                **_em_kwargs(ConvMatrixCaps, em_options),
                name=names(knames[0]),
            )
            add(layer, knames, {k: step[k] for k in ("weight", "beta_u", "beta_a")})
            continue
        if op == "class_matrix":
            layer = ClassMatrixCaps(
                step["n_classes"],
                n_iter=step["n_iter"],
                coordinate_addition=step["coordinate_addition"],
                **_em_kwargs(ClassMatrixCaps, em_options),
                name=names(knames[0]),
            )
            add(layer, knames, {k: step[k] for k in ("weight", "beta_u", "beta_a")})
            continue
        raise AssertionError(f"unexpected step {op!r}")  # roles makes no other
    return layers, weights, covered, names.renamed
