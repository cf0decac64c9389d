"""Weights from other implementations' checkpoints, mapped onto caproute models.

Supported layouts (see docs/models.md for the details and for mapping any other layout by hand):

- Keras/TF HDF5 files of dynamic-routing CapsNets laid out like the common Keras
  implementation (layers ``conv1``, ``primarycap_conv2d``, ``digitcaps`` with
  ``W (n_out, n_in, out_dim, in_dim)``; position-major primary capsules): read with h5py.
- PyTorch state dicts laid out like the common PyTorch implementation (gram-ai
  ``capsule-networks``: ``conv1``, ``primary_capsules.capsules.<k>`` -- one convolution per
  capsule component -- and ``digit_capsules.route_weights (n_out, n_in, in_dim, out_dim)``),
  from a safetensors file or an ``.npz``. A ``.pt`` pickle is converted first by
  ``caproute convert-torch`` (needs torch, loads with ``weights_only=True``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np

from .._backend import Array
from .architectures import capsnet
from .errors import WeightsFileError, WeightsMismatchError
from .model import Model
from .weights_file import load_file


def torch_conv_to_hwio(weight: Array) -> np.ndarray:
    """PyTorch's (c_out, c_in, kh, kw) convolution kernel as caproute's (kh, kw, c_in, c_out).

    Parameters
    ----------
    weight : array_like of shape (c_out, c_in, kh, kw)
        A PyTorch ``Conv2d.weight``, as a NumPy array (or anything ``np.asarray`` takes).

    Returns
    -------
    numpy.ndarray of shape (kh, kw, c_in, c_out)
        The same kernel, C-contiguous, in the layout of :class:`Conv2D`'s ``weight``.

    Examples
    --------
    >>> import numpy as np
    >>> from caproute.models import torch_conv_to_hwio
    >>> torch_conv_to_hwio(np.zeros((256, 1, 9, 9), dtype=np.float32)).shape
    (9, 9, 1, 256)
    """
    return np.ascontiguousarray(np.transpose(np.asarray(weight), (2, 3, 1, 0)))


def read_state_dict(path: os.PathLike | str) -> dict[str, np.ndarray]:
    """Read a flat ``{name: ndarray}`` from a ``.safetensors`` or ``.npz`` file (no pickle).

    Parameters
    ----------
    path : str or os.PathLike
        A ``.npz`` file, or a safetensors file (any other name). PyTorch pickles (``.pt``,
        ``.pth``, ``.ckpt``, ``.bin``) are refused with the command that converts them.

    Returns
    -------
    dict of str to numpy.ndarray
        Every tensor of the file, by name.

    Raises
    ------
    WeightsFileError
        If the file is a PyTorch pickle, or cannot be read as an ``.npz`` of arrays or as a
        safetensors file.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from caproute.models import read_state_dict
    >>> path = os.path.join(tempfile.mkdtemp(), "sd.npz")
    >>> np.savez(path, **{"conv1.weight": np.zeros((2, 1, 3, 3), np.float32)})
    >>> {k: v.shape for k, v in read_state_dict(path).items()}
    {'conv1.weight': (2, 1, 3, 3)}
    """
    path = os.fspath(path)
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (ValueError, OSError, EOFError) as exc:
            raise WeightsFileError(
                f"{path!r} could not be read as an .npz of arrays: {exc}"
            ) from None
    if path.endswith((".pt", ".pth", ".ckpt", ".bin")):
        raise WeightsFileError(
            f"{path!r} is a PyTorch pickle, which caproute never unpickles. Convert it once with "
            f"`caproute convert-torch {os.path.basename(path)} weights.safetensors` (needs torch; "
            "loads with weights_only=True) and import the .safetensors file."
        )
    return load_file(path)[0]


def capsnet_from_torch(
    source: os.PathLike | str | dict[str, Array],
    *,
    n_iter: int = 3,
    input_shape: tuple[int, int, int] = (28, 28, 1),
    classes: Sequence[str] | None = None,
    squash_eps: float = 1e-8,
) -> Model:
    """Build a CapsNet from a PyTorch state dict laid out like gram-ai's implementation.

    Expected tensors (extra ``decoder.*`` tensors -- the reconstruction network -- are ignored):
    ``conv1.weight`` (c1, c_in, k, k), ``conv1.bias``; ``primary_capsules.capsules.<d>.weight``
    (n_types, c1, k, k) and ``.bias`` for every capsule component ``d``; and
    ``digit_capsules.route_weights`` (n_out, n_in, in_dim, out_dim). Primary capsule ``i`` is
    ``type * H * W + position`` (type-major) with component ``d`` from convolution ``d``.

    The routing is the paper's (softmax over parents, logits reset per image). gram-ai's code
    takes the softmax over children instead (its issue 10), so a network trained with that
    code gives different numbers here; the weights still load.

    Parameters
    ----------
    source : str, os.PathLike or dict
        A ``.safetensors``/``.npz`` file, or a ``{name: array}`` dict.
    n_iter : int, default=3
        Routing iterations of the class capsules.
    input_shape : tuple, default=(28, 28, 1)
        (H, W, C) of the images.
    classes : sequence of str, optional
        Class names, in output order.
    squash_eps : float, default=1e-8
        ``eps`` inside the square root of squash (gram-ai's code has none; a small one
        keeps zero vectors finite).

    Returns
    -------
    model : Model
        An NHWC caproute CapsNet with the converted weights.

    Raises
    ------
    WeightsMismatchError
        Listing every missing, unexpected or misshapen tensor.

    Examples
    --------
    A state dict of the right layout (random here; from a converted checkpoint in practice):

    >>> import numpy as np
    >>> from caproute.models import capsnet_from_torch
    >>> rng = np.random.default_rng(0)
    >>> sd = {"conv1.weight": rng.normal(size=(16, 1, 9, 9)), "conv1.bias": np.zeros(16),
    ...       "digit_capsules.route_weights": rng.normal(size=(10, 4 * 6 * 6, 8, 16))}
    >>> for d in range(8):  # one convolution per primary-capsule component
    ...     sd[f"primary_capsules.capsules.{d}.weight"] = rng.normal(size=(4, 16, 9, 9))
    ...     sd[f"primary_capsules.capsules.{d}.bias"] = np.zeros(4)
    >>> net = capsnet_from_torch(sd)
    >>> net.predict_proba(np.zeros((2, 28, 28), dtype=np.uint8)).shape
    (2, 10)
    """
    sd = dict(read_state_dict(source) if not isinstance(source, dict) else source)
    problems = []
    comp_keys = sorted(
        (int(m.group(1)), k)
        for k in sd
        if (m := re.fullmatch(r"primary_capsules\.capsules\.(\d+)\.weight", k))
    )
    for key in ("conv1.weight", "conv1.bias", "digit_capsules.route_weights"):
        if key not in sd:
            problems.append(f"missing tensor {key!r}")
    if not comp_keys:
        problems.append(
            "missing tensors 'primary_capsules.capsules.<d>.weight' (one per capsule component)"
        )
    for _, key in comp_keys:
        if key.replace("weight", "bias") not in sd:
            problems.append(f"missing tensor {key.replace('weight', 'bias')!r}")
    if [d for d, _ in comp_keys] != list(range(len(comp_keys))):
        problems.append(
            f"capsule components are not numbered 0..{len(comp_keys) - 1}: "
            f"{[d for d, _ in comp_keys]}"
        )
    known = {"conv1.weight", "conv1.bias", "digit_capsules.route_weights"}
    known |= {k for _, k in comp_keys} | {k.replace("weight", "bias") for _, k in comp_keys}
    extra = sorted(k for k in sd if k not in known and not k.startswith("decoder."))
    problems += [f"unexpected tensor {k!r}" for k in extra]
    if problems:
        raise WeightsMismatchError("gram-ai CapsNet state dict", problems)

    conv1 = np.asarray(sd["conv1.weight"])
    comps = [np.asarray(sd[k]) for _, k in comp_keys]
    route = np.asarray(sd["digit_capsules.route_weights"])
    shapes = {comp.shape for comp in comps}
    if conv1.ndim != 4 or len(shapes) != 1 or len(comps[0].shape) != 4 or route.ndim != 4:
        raise WeightsMismatchError(
            "gram-ai CapsNet state dict",
            [
                f"conv1.weight must be 4-D, got {conv1.shape}",
                f"primary capsule convolutions must share one 4-D shape, got {sorted(shapes)}",
                f"digit_capsules.route_weights must be 4-D, got {route.shape}",
            ],
        )
    n_types, c1, k2, _ = comps[0].shape
    dim = len(comps)
    n_out, n_in, in_dim, out_dim = route.shape
    # one convolution with channel type * dim + d, as caproute's PrimaryCaps expects
    merged = np.stack(comps, axis=1).reshape(n_types * dim, c1, k2, k2)
    merged_bias = np.stack(
        [np.asarray(sd[k.replace("weight", "bias")]) for _, k in comp_keys], axis=1
    )
    model = capsnet(
        input_shape=input_shape,
        conv_channels=conv1.shape[0],
        conv_kernel=conv1.shape[2],
        primary_types=n_types,
        primary_dim=dim,
        primary_kernel=k2,
        n_classes=n_out,
        class_dim=out_dim,
        n_iter=n_iter,
        order="type-major",
        weight_layout="torch",
        squash_eps=squash_eps,
        classes=classes,
    )
    return model.set_weights(
        {
            "conv1.weight": torch_conv_to_hwio(conv1),
            "conv1.bias": np.asarray(sd["conv1.bias"]),
            "primary_caps.weight": torch_conv_to_hwio(merged),
            "primary_caps.bias": merged_bias.reshape(-1),
            "class_caps.weight": route,
        }
    )


def read_keras_h5(path: os.PathLike | str) -> dict[str, np.ndarray]:
    """All weights of a Keras (2.x / tf.keras legacy HDF5) weights or model file.

    Needs h5py.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by ``model.save_weights`` or ``model.save`` in the legacy HDF5 format.

    Returns
    -------
    dict of str to numpy.ndarray
        ``{"<layer>/<weight>": array}``, with the ``:0`` suffixes dropped.

    Raises
    ------
    ImportError
        If h5py is not installed.
    WeightsFileError
        If the file is not HDF5, not a Keras 2 weights file, or a listed weight is unreadable.

    Examples
    --------
    >>> from caproute.models import read_keras_h5   # doctest: +SKIP
    >>> read_keras_h5("capsnet_weights.h5")["digitcaps/W"].shape   # doctest: +SKIP
    (10, 1152, 16, 8)
    """
    try:
        import h5py
    except ImportError:
        raise ImportError(
            "reading Keras HDF5 files needs h5py: pip install 'caproute[keras]' "
            "(or pip install h5py)."
        ) from None
    path = os.fspath(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise WeightsFileError(f"{path!r} could not be opened as HDF5: {exc}") from None
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in root.attrs:
            raise WeightsFileError(
                f"{path!r} is HDF5 but not a Keras 2 weights file: no 'layer_names' attribute "
                "(Keras 3 '.weights.h5' files use another layout; save with the legacy .h5 format)."
            )
        out = {}
        for layer in root.attrs["layer_names"]:
            layer = layer.decode() if isinstance(layer, bytes) else str(layer)
            group = root[layer]
            for wname in group.attrs.get("weight_names", []):
                wname = wname.decode() if isinstance(wname, bytes) else str(wname)
                try:
                    data = np.asarray(group[wname])
                except (KeyError, OSError) as exc:
                    raise WeightsFileError(
                        f"{path!r}: weight {wname!r} listed but unreadable: {exc}"
                    ) from None
                short = wname.split(":")[0]
                short = (
                    short if short.startswith(layer + "/") else f"{layer}/{short.split('/')[-1]}"
                )
                out[short] = data
        return out


def capsnet_from_keras_h5(
    path: os.PathLike | str,
    *,
    primary_dim: int = 8,
    n_iter: int = 3,
    input_shape: tuple[int, int, int] | None = None,
    classes: Sequence[str] | None = None,
    squash_eps: float = 1e-7,
    conv_name: str = "conv1",
    primary_name: str = "primarycap_conv2d",
    caps_name: str = "digitcaps",
) -> Model:
    """Build a CapsNet from a Keras HDF5 file laid out like the common Keras implementation.

    Expected weights: ``<conv_name>/kernel`` (k, k, c_in, c1) and ``/bias``;
    ``<primary_name>/kernel`` (k, k, c1, n_types * primary_dim) and ``/bias``, whose NHWC
    output is reshaped to (-1, primary_dim) -- position-major capsules; ``<caps_name>/W``
    (n_out, n_in, out_dim, in_dim). Squash there adds Keras' epsilon (1e-7) inside the square
    root, hence ``squash_eps=1e-7``. The routing is the paper's, as in that code.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.h5`` file (``model.save_weights`` or ``model.save`` in the HDF5 format).
    primary_dim : int, default=8
        Capsule dimension of the primary capsules (not recorded in the weights).
    n_iter : int, default=3
        Routing iterations of the class capsules.
    input_shape : tuple, optional
        (H, W, C); default: 28 x 28 with the kernel's input channels.
    classes : sequence of str, optional
        Class names, in output order.
    squash_eps : float, default=1e-7
        ``eps`` inside the square root of squash: Keras' epsilon, as that code adds it.
    conv_name, primary_name, caps_name : str
        Layer names in the file.

    Returns
    -------
    model : Model
        An NHWC caproute CapsNet with the file's weights.

    Raises
    ------
    WeightsMismatchError
        Listing every missing tensor (with the names the file holds), or primary-capsule
        channels that are not a multiple of ``primary_dim``.

    Examples
    --------
    >>> from caproute.models import capsnet_from_keras_h5   # doctest: +SKIP
    >>> net = capsnet_from_keras_h5("capsnet_weights.h5")   # doctest: +SKIP
    >>> net.predict(images)                                 # doctest: +SKIP
    """
    weights = read_keras_h5(path)
    needed = [
        f"{conv_name}/kernel",
        f"{conv_name}/bias",
        f"{primary_name}/kernel",
        f"{primary_name}/bias",
        f"{caps_name}/W",
    ]
    problems = [f"missing tensor {k!r}" for k in needed if k not in weights]
    if problems:
        problems.append(f"the file holds {sorted(weights)}")
        raise WeightsMismatchError(f"Keras CapsNet in {os.fspath(path)!r}", problems)
    k1 = weights[f"{conv_name}/kernel"]
    k2 = weights[f"{primary_name}/kernel"]
    W = weights[f"{caps_name}/W"]
    if k2.shape[-1] % primary_dim:
        raise WeightsMismatchError(
            f"Keras CapsNet in {os.fspath(path)!r}",
            [
                f"{primary_name}/kernel has {k2.shape[-1]} output channels, not a multiple of "
                f"primary_dim={primary_dim}"
            ],
        )
    n_out, _, out_dim, _ = W.shape
    model = capsnet(
        input_shape=input_shape or (28, 28, k1.shape[2]),
        conv_channels=k1.shape[3],
        conv_kernel=k1.shape[0],
        primary_types=k2.shape[3] // primary_dim,
        primary_dim=primary_dim,
        primary_kernel=k2.shape[0],
        n_classes=n_out,
        class_dim=out_dim,
        n_iter=n_iter,
        order="position-major",
        weight_layout="keras",
        squash_eps=squash_eps,
        classes=classes,
    )
    return model.set_weights(
        {
            "conv1.weight": k1,
            "conv1.bias": weights[f"{conv_name}/bias"],
            "primary_caps.weight": k2,
            "primary_caps.bias": weights[f"{primary_name}/bias"],
            "class_caps.weight": W,
        }
    )
