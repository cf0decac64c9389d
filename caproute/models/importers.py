"""Weights from other implementations' checkpoints, mapped onto caproute models.

Supported layouts (see docs/models.md for the details and for mapping any other layout by hand):

- Keras/TF HDF5 files of dynamic-routing CapsNets laid out like the common Keras
  implementation (layers ``conv1``, ``primarycap_conv2d``, ``digitcaps`` with
  ``W (n_out, n_in, out_dim, in_dim)``; position-major primary capsules): read with h5py.
- PyTorch state dicts laid out like the common PyTorch implementation (gram-ai
  ``capsule-networks``: ``conv1``, ``primary_capsules.capsules.<k>`` -- one convolution per
  capsule component -- and ``digit_capsules.route_weights (n_out, n_in, in_dim, out_dim)``),
  from a safetensors file or an ``.npz``. A ``.pt`` checkpoint is converted first by
  ``caproute convert-torch`` (:func:`caproute.models.torch_files.convert_torch_checkpoint`;
  needs torch, loads with ``weights_only=True``).

Nothing is unpickled. Every argument is checked before a file is read; a file of the wrong kind
is named as what it is (:func:`caproute.models.errors.describe_file`), a damaged one says what
is wrong, and tensors whose sizes do not fit the hints (``primary_dim``, ``input_shape``) are
reported with the value that would fit them.
"""

from __future__ import annotations

import math
import os
import re
import zipfile
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.lib import format as npy_format

from .._backend import Array
from .._lib.validation import check_int, check_scalar, is_sequence
from ._keras import files as _keras_files
from .architectures import capsnet
from .errors import (
    WeightsFileError,
    WeightsMismatchError,
    convert_torch_hint,
    describe_file,
    what_file_is,
)
from .keras_import import load_keras
from .model import Model
from .weights_file import load_file

_TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


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

    The file's content decides how it is read: an ``.npz`` archive of arrays (``numpy.savez``)
    or a safetensors file, whatever its name. Nothing is ever unpickled: PyTorch checkpoints
    and other pickles are refused with the way to convert them, and every other kind of file
    is named as what it is.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.npz`` file, or a safetensors file (any other name). PyTorch checkpoints (``.pt``,
        ``.pth``, ``.ckpt``, ``.bin``) are refused with the command that converts them.

    Returns
    -------
    dict of str to numpy.ndarray
        Every tensor of the file, by name, in native byte order.

    Raises
    ------
    WeightsFileError
        If the file is a PyTorch checkpoint or another pickle, an ``.npz`` holding pickled
        objects, something other than an ``.npz`` archive or a safetensors file (said what it
        is), or a damaged one of these (said what is wrong).
    FileNotFoundError
        If there is no such file.
    TypeError
        If `path` is not a path.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from caproute.models import read_state_dict
    >>> path = os.path.join(tempfile.mkdtemp(), "sd.npz")
    >>> np.savez(path, **{"conv1.weight": np.zeros((2, 1, 3, 3), np.float32)})
    >>> {k: v.shape for k, v in read_state_dict(path).items()}
    {'conv1.weight': (2, 1, 3, 3)}

    A file of another kind is named as what it is:

    >>> with open(path, "w") as f:
    ...     _ = f.write("epoch,loss")
    >>> read_state_dict(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    caproute.models.errors.WeightsFileError: '...' is not an .npz archive: it is a text file ...
    """
    path = _check_path(path, "path")
    kind, description = describe_file(path)
    if kind in ("torch-zip", "torch-legacy"):
        raise WeightsFileError(
            f"{path!r} is {description}: a pickle, which caproute never unpickles. "
            + convert_torch_hint(path)
        )
    if kind == "pickle":
        raise WeightsFileError(
            f"{path!r} is a Python pickle, which caproute never unpickles (unpickling can run "
            "arbitrary code). Save the weights as safetensors (safetensors.numpy.save_file, "
            "safetensors.torch.save_file) or as an .npz of arrays (numpy.savez) instead."
        )
    if kind == "directory":
        raise WeightsFileError(f"{path!r} is a directory, not a weights file.")
    if kind == "npz":
        return _read_npz(path)
    if path.lower().endswith(".npz"):
        raise WeightsFileError(f"{path!r} is not an .npz archive: it is {description}.")
    if path.lower().endswith(_TORCH_SUFFIXES) and kind != "safetensors":
        raise WeightsFileError(
            f"{path!r} has the name of a PyTorch checkpoint but is not one: it is {description}."
        )
    return load_file(path)[0]


def _read_npz(path):
    """The arrays of the ``.npz`` archive ``path``, each checked before it is read.

    Read member by member with zipfile and NumPy's ``.npy`` header functions: an object array
    is refused from its header (never unpickled), and a header whose shape does not match the
    member's size is refused before any memory is allocated for it.
    """

    def bad(reason):
        return WeightsFileError(f"{path!r} could not be read as an .npz of arrays: {reason}.")

    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        raise bad("the zip archive is damaged or truncated") from None
    out = {}
    with archive:
        for info in archive.infolist():
            name = info.filename
            if not name.endswith(".npy"):
                raise bad(f"member {name!r} is not a .npy array")
            try:
                with archive.open(info) as f:
                    out[name[: -len(".npy")]] = _read_npy_member(f, name, info.file_size, bad)
            except WeightsFileError:
                raise
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError):
                raise bad(
                    f"member {name!r} is damaged (its data is truncated or does not match its "
                    "checksum)"
                ) from None
    return out


def _read_npy_member(f, name, size, bad):
    try:
        version = npy_format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = npy_format.read_array_header_2_0(f)
        else:
            raise bad(
                f"member {name!r} is a .npy array of format version {version[0]}.{version[1]}, "
                "which caproute does not read (versions 1.0 and 2.0)"
            )
    except ValueError as exc:
        if isinstance(exc, WeightsFileError):
            raise
        raise bad(f"member {name!r} is not a valid .npy array (its header is malformed)") from None
    if dtype.hasobject:
        raise bad(
            f"member {name!r} holds pickled Python objects (dtype {dtype}), which caproute "
            "never loads"
        )
    count = math.prod(shape)
    needed = count * dtype.itemsize
    held = size - f.tell()
    if held != needed:
        raise bad(
            f"member {name!r} holds {held} data bytes, but its header (shape {shape}, {dtype}) "
            f"needs {needed}; the archive is truncated or corrupt"
        )
    if needed == 0:
        arr = np.zeros(shape, dtype=dtype)
    else:
        data = f.read(needed)
        if len(data) != needed:
            raise bad(f"member {name!r} is truncated")
        arr = np.frombuffer(data, dtype=dtype, count=count)
        arr = arr.reshape(shape, order="F" if fortran else "C")
    return np.array(arr, dtype=arr.dtype.newbyteorder("="), order="C")


def _check_path(path, name):
    if isinstance(path, bool) or not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"`{name}` must be a path (str or os.PathLike); got {type(path).__name__}.")
    return os.fsdecode(os.fspath(path))


def _check_common(n_iter, input_shape, classes, squash_eps):
    """The arguments both CapsNet importers take, checked before any file is read."""
    n_iter = check_int(n_iter, name="n_iter", min_value=1)
    if input_shape is not None:
        expected = f"`input_shape` must be (H, W, C), 3 integers >= 1; got {input_shape!r}."
        if not is_sequence(input_shape):
            raise TypeError(expected)
        if len(input_shape) != 3:
            raise ValueError(expected)
        input_shape = tuple(check_int(s, name="input_shape", min_value=1) for s in input_shape)
    if classes is not None:
        if not is_sequence(classes):
            raise TypeError(
                "`classes` must be a sequence of str, one name per class; got "
                f"{type(classes).__name__}."
            )
        for c in classes:
            if not isinstance(c, str):
                raise TypeError(
                    f"`classes` must be a sequence of str, one name per class; got {c!r} "
                    f"({type(c).__name__}) in it."
                )
        classes = list(classes)
    squash_eps = check_scalar(squash_eps, name="squash_eps", low=0, low_inclusive=False)
    return n_iter, input_shape, classes, squash_eps


def _check_name(value, name):
    if not isinstance(value, str) or not value:
        raise TypeError(f"`{name}` must be a non-empty str (a layer name); got {value!r}.")
    return value


def _grid(size, k1, k2):
    """Primary-capsule positions along one axis: conv1 (stride 1) then the primary conv
    (stride 2), no padding; 0 when the kernels do not fit."""
    h1 = size - k1 + 1
    return 0 if h1 < k2 else (h1 - k2) // 2 + 1


def _input_problems(input_shape, c_in, k1, k2, n_types, n_in, *, conv_name, route_name):
    """Sentences that say which hint (``input_shape``) would explain the tensors' sizes."""
    problems = []
    h, w, c = input_shape
    if c != c_in:
        problems.append(
            f"{conv_name} takes {c_in} input channel{'s' if c_in != 1 else ''} but "
            f"input_shape={input_shape} has {c}: pass input_shape=({h}, {w}, {c_in})"
        )
    gh, gw = _grid(h, k1, k2), _grid(w, k1, k2)
    if gh == 0 or gw == 0:
        problems.append(
            f"input_shape={input_shape} is too small for a {k1}x{k1} convolution followed by a "
            f"{k2}x{k2} one: pass the input_shape the network was trained on"
        )
        return problems
    if gh * gw * n_types != n_in:
        fits = [s for s in range(1, 2049) if _grid(s, k1, k2) ** 2 * n_types == n_in]
        advice = (
            f"it was made for {' or '.join(map(str, fits))} pixel square images: pass "
            f"input_shape=({fits[-1]}, {fits[-1]}, {c_in})"
            if fits
            else "pass the input_shape the network was trained on"
        )
        problems.append(
            f"{route_name} has {n_in} input capsules, but input_shape={input_shape} gives "
            f"{gh * gw * n_types} ({gh}x{gw} positions x {n_types} capsule types); {advice}"
        )
    return problems


def _shape_text(arr):
    return str(tuple(int(s) for s in arr.shape))


def capsnet_from_torch(
    source: os.PathLike | str | dict[str, Array],
    *,
    n_iter: int = 3,
    input_shape: tuple[int, int, int] | None = (28, 28, 1),
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
        (H, W, C) of the images; None: 28 x 28 with conv1's input channels.
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
        Listing every missing, unexpected or misshapen tensor; when the tensors' sizes do not
        fit `input_shape`, saying which `input_shape` would explain them.
    WeightsFileError
        If `source` is a file that cannot be read (see :func:`read_state_dict`).
    TypeError, ValueError
        If an argument is of the wrong type or value (the message names it).

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
    n_iter, input_shape, classes, squash_eps = _check_common(
        n_iter, input_shape, classes, squash_eps
    )
    if isinstance(source, Mapping):
        sd = dict(source)
        for key in sd:
            if not isinstance(key, str):
                raise TypeError(
                    f"`source` must map tensor names (str) to arrays; got the key {key!r} "
                    f"({type(key).__name__})."
                )
    else:
        sd = read_state_dict(_check_path(source, "source"))
    what = "gram-ai CapsNet state dict"
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
        raise WeightsMismatchError(what, problems)

    arrays = _numeric_arrays({k: sd[k] for k in sorted(known)}, what)
    conv1 = arrays["conv1.weight"]
    comps = [arrays[k] for _, k in comp_keys]
    comp_biases = [arrays[k.replace("weight", "bias")] for _, k in comp_keys]
    route = arrays["digit_capsules.route_weights"]
    dim = len(comps)
    problems = []
    if conv1.ndim != 4 or conv1.shape[2] != conv1.shape[3]:
        problems.append(
            f"conv1.weight must be 4-D (c1, c_in, k, k) with a square kernel; got shape "
            f"{_shape_text(conv1)}"
        )
    elif arrays["conv1.bias"].shape != conv1.shape[:1]:
        problems.append(
            f"conv1.bias must have shape ({conv1.shape[0]},), one per conv1.weight output "
            f"channel; got {_shape_text(arrays['conv1.bias'])}"
        )
    shapes = sorted({comp.shape for comp in comps})
    if len(shapes) != 1 or len(shapes[0]) != 4 or shapes[0][2] != shapes[0][3]:
        problems.append(
            "primary_capsules.capsules.<d>.weight must share one 4-D shape (n_types, c1, k, k) "
            f"with a square kernel; got {', '.join(map(str, shapes))}"
        )
    else:
        n_types, c1 = shapes[0][:2]
        if conv1.ndim == 4 and c1 != conv1.shape[0]:
            problems.append(
                f"primary_capsules.capsules.<d>.weight take {c1} input channels but "
                f"conv1.weight has {conv1.shape[0]} output channels"
            )
        bias_shapes = sorted({b.shape for b in comp_biases})
        if bias_shapes != [(n_types,)]:
            problems.append(
                f"primary_capsules.capsules.<d>.bias must have shape ({n_types},), one per "
                f"capsule type; got {', '.join(map(str, bias_shapes))}"
            )
    if route.ndim != 4:
        problems.append(
            "digit_capsules.route_weights must be 4-D (n_out, n_in, in_dim, out_dim); got "
            f"shape {_shape_text(route)}"
        )
    elif route.shape[2] != dim:
        problems.append(
            f"digit_capsules.route_weights {_shape_text(route)} takes {route.shape[2]}-D input "
            f"capsules (in_dim, axis 2) but there are {dim} primary capsule components "
            f"(primary_capsules.capsules.0..{dim - 1})"
        )
    if problems:
        raise WeightsMismatchError(what, problems)
    n_types, c1, k2, _ = comps[0].shape
    n_out, n_in, in_dim, out_dim = route.shape
    input_shape = input_shape or (28, 28, conv1.shape[1])
    hints = _input_problems(
        input_shape,
        conv1.shape[1],
        conv1.shape[2],
        k2,
        n_types,
        n_in,
        conv_name="conv1.weight",
        route_name="digit_capsules.route_weights",
    )
    # one convolution with channel type * dim + d, as caproute's PrimaryCaps expects
    merged = np.stack(comps, axis=1).reshape(n_types * dim, c1, k2, k2)
    merged_bias = np.stack(comp_biases, axis=1)
    return _build_and_set(
        what,
        hints,
        dict(
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
        ),
        {
            "conv1.weight": torch_conv_to_hwio(conv1),
            "conv1.bias": arrays["conv1.bias"],
            "primary_caps.weight": torch_conv_to_hwio(merged),
            "primary_caps.bias": merged_bias.reshape(-1),
            "class_caps.weight": route,
        },
    )


def _build_and_set(what, hints, architecture, weights):
    """``capsnet(**architecture).set_weights(weights)``; a failure that ``hints`` (sentences
    naming the argument that would explain it) account for is raised with them."""
    try:
        model = capsnet(**architecture)
    except ValueError:
        if not hints:
            raise
        raise WeightsMismatchError(what, hints) from None
    try:
        return model.set_weights(weights)
    except WeightsMismatchError as exc:
        if not hints:
            raise
        # the importer's hints name its own arguments: the model's generic ones would repeat them
        own = [p for p in exc.problems if not p.startswith("hint: ")]
        raise WeightsMismatchError(what, [*own, *hints]) from None


def _numeric_arrays(tensors, what):
    """``{name: ndarray}`` of ``tensors``, or a WeightsMismatchError listing every value that
    is not an array of real numbers."""
    out, problems = {}, []
    for key, value in tensors.items():
        try:
            arr = np.asarray(value)
        except Exception as exc:  # noqa: BLE001 -- whatever the value is, it is not an array
            problems.append(f"tensor {key!r} is not an array ({type(value).__name__}: {exc})")
            continue
        if arr.dtype.kind not in "biuf":
            problems.append(
                f"tensor {key!r} is not an array of real numbers: got dtype {arr.dtype} "
                f"({type(value).__name__})"
            )
        out[key] = arr
    if problems:
        raise WeightsMismatchError(what, problems)
    return out


def read_keras_h5(path: os.PathLike | str) -> dict[str, np.ndarray]:
    """All weights of a Keras (2.x / tf.keras legacy HDF5) weights or model file.

    Needs h5py. Keys are full paths, so tensors with equal short names never merge: a
    nested decoder's three dense kernels stay ``"decoder/dense_1/kernel"``,
    ``"decoder/dense_2/kernel"`` and ``"decoder/dense_3/kernel"``.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by ``model.save_weights`` or ``model.save`` in the legacy HDF5 format.

    Returns
    -------
    dict of str to numpy.ndarray
        ``{"<layer>/<weight path>": array}`` in file order: the path each weight has in the
        layer's ``weight_names`` (``"conv1/kernel"``, ``"decoder/dense_1/kernel"``), without
        the ``:0`` suffix and prefixed with ``<layer>/`` where it does not start with it.

    Raises
    ------
    ImportError
        If h5py is not installed (and the file is HDF5).
    WeightsFileError
        If the file is not HDF5 (the message says what it is), is damaged, is not a Keras 2
        weights file, or lists layers or weights it lacks or cannot read (all listed at once).
    FileNotFoundError
        If there is no such file.

    See Also
    --------
    load_keras : The model a Keras file describes, built in one call.

    Examples
    --------
    >>> from caproute.models import read_keras_h5
    >>> read_keras_h5("capsnet_weights.h5")["digitcaps/W"].shape   # doctest: +SKIP
    (10, 1152, 16, 8)

    A file that is not HDF5 is named as what it is:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "weights.h5")
    >>> with open(path, "w") as f:
    ...     _ = f.write("loss: 0.12")
    >>> read_keras_h5(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    caproute.models.errors.WeightsFileError: '...' could not be opened as HDF5: it is a text ...
    """
    path = _check_path(path, "path")
    kind, description = describe_file(path)
    if kind != "hdf5":
        other = what_file_is(path, expected=()) or f"it is {description}."
        raise WeightsFileError(f"{path!r} could not be opened as HDF5: {other}")
    try:
        import h5py
    except ImportError:
        raise ImportError(
            "reading Keras HDF5 files needs h5py: pip install 'caproute[keras]' "
            "(or pip install h5py)."
        ) from None
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise WeightsFileError(
            f"{path!r} could not be opened as HDF5: it starts like an HDF5 file but is damaged "
            "or truncated."
        ) from None
    try:
        with f:
            layers = _keras_files.keras2_weights(f, repr(path), h5py)
    except (OSError, RuntimeError, KeyError) as exc:  # h5py's errors inside a damaged file
        raise WeightsFileError(
            f"{path!r} could not be read as a Keras weights file: the HDF5 file is damaged "
            f"({type(exc).__name__} while reading it)."
        ) from None
    return {key: arr for _, tensors in layers for key, arr in tensors}


def _keras_capsnet_tensors(weights, conv_name, primary_name, caps_name):
    """The CapsNet-Keras layout's five tensors under their canonical keys
    (``<conv_name>/kernel`` ...): layers by the given names where the file has them, else by
    role (the first and the last convolution kernel, the one capsule transform); the
    transform by shape (the layer's one tensor of rank >= 4, named ``W``, ``weights`` or
    anything else; a leading axis of 1 dropped)."""
    layers = {}
    for key, arr in weights.items():
        layer, _, rest = key.partition("/")
        layers.setdefault(layer, {})[rest.rsplit("/", 1)[-1]] = arr
    convs = [
        name
        for name, ws in layers.items()
        if "kernel" in ws and ws["kernel"].ndim == 4 and set(ws) <= {"kernel", "bias"}
    ]
    caps = [
        name
        for name, ws in layers.items()
        if "kernel" not in ws and sum(a.ndim >= 4 for a in ws.values()) == 1
    ]
    conv = conv_name if conv_name in layers else (convs[0] if convs else None)
    primary = primary_name if primary_name in layers else (convs[-1] if len(convs) > 1 else None)
    cap = caps_name if caps_name in layers else (caps[0] if len(caps) == 1 else None)
    out = dict(weights)
    for role, layer in ((conv_name, conv), (primary_name, primary)):
        for part in ("kernel", "bias"):
            if layer is not None and part in layers[layer]:
                out[f"{role}/{part}"] = layers[layer][part]
    if cap is not None:
        big = [a for a in layers[cap].values() if a.ndim >= 4]
        if len(big) == 1:
            W = big[0]
            while W.ndim > 4 and W.shape[0] == 1:
                W = W[0]
            out[f"{caps_name}/W"] = W
    return out


def capsnet_from_keras_h5(
    path: os.PathLike | str,
    *,
    primary_dim: int | None = None,
    n_iter: int | None = None,
    input_shape: tuple[int, int, int] | None = None,
    classes: Sequence[str] | None = None,
    squash_eps: float = 1e-7,
    conv_name: str = "conv1",
    primary_name: str = "primarycap_conv2d",
    caps_name: str = "digitcaps",
) -> Model:
    """Build a CapsNet from a Keras HDF5 file laid out like the common Keras implementation.

    A file written by ``model.save`` records its architecture: it is built from that by
    :func:`load_keras` (any number of convolutions, their activations, strides and padding,
    BatchNorm, routing iterations), and the layout arguments (`primary_dim`, the layer
    names) are not used. A weights-only file is read as the fixed CapsNet-Keras layout: one
    ReLU convolution (stride 1), the primary capsules' convolution (stride 2), no padding,
    a capsule layer -- assumptions recorded in ``model.metadata["import"]["notes"]``;
    :func:`load_keras` asks for them instead.

    Expected weights: ``<conv_name>/kernel`` (k, k, c_in, c1) and ``/bias``;
    ``<primary_name>/kernel`` (k, k, c1, n_types * primary_dim) and ``/bias``, whose NHWC
    output is reshaped to (-1, primary_dim) -- position-major capsules; ``<caps_name>/W``
    (n_out, n_in, out_dim, in_dim). Squash there adds Keras' epsilon (1e-7) inside the square
    root, hence ``squash_eps=1e-7``. The routing is the paper's, as in that code.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.h5`` file (``model.save_weights`` or ``model.save`` in the HDF5 format).
    primary_dim : int, optional
        Capsule dimension of the primary capsules; default: the transform's input dimension
        (``W.shape[-1]``). Given, it is checked against that.
    n_iter : int, optional
        Routing iterations of the class capsules; default: the file's where it records them,
        else 3.
    input_shape : tuple, optional
        (H, W, C); default: the file's, else 28 x 28 with the kernel's input channels.
    classes : sequence of str, optional
        Class names, in output order.
    squash_eps : float, default=1e-7
        ``eps`` inside the square root of squash: Keras' epsilon, as that code adds it.
    conv_name, primary_name, caps_name : str
        Layer names in the file (layers found by role where the file has none of them).

    Returns
    -------
    model : Model
        An NHWC caproute CapsNet with the file's weights.

    Raises
    ------
    WeightsMismatchError
        Listing every missing tensor (with the names the file holds) or misshapen one; when
        the sizes do not fit `primary_dim` or `input_shape`, saying which value would.
    WeightsFileError
        If the file is not a readable Keras HDF5 file (see :func:`read_keras_h5`).
    TypeError, ValueError
        If an argument is of the wrong type or value (the message names it), before the file
        is read.

    Examples
    --------
    >>> from caproute.models import capsnet_from_keras_h5
    >>> net = capsnet_from_keras_h5("capsnet_weights.h5")   # doctest: +SKIP
    >>> net.predict(images)                                 # doctest: +SKIP

    The arguments are checked before the file is read:

    >>> capsnet_from_keras_h5("capsnet_weights.h5", primary_dim=0)
    Traceback (most recent call last):
    ...
    ValueError: `primary_dim` must be an integer >= 1; got 0.
    """
    if primary_dim is not None:
        primary_dim = check_int(primary_dim, name="primary_dim", min_value=1)
    n_iter_given = n_iter is not None
    n_iter, input_shape, classes, squash_eps = _check_common(
        n_iter if n_iter_given else 3, input_shape, classes, squash_eps
    )
    for value, name in (
        (conv_name, "conv_name"),
        (primary_name, "primary_name"),
        (caps_name, "caps_name"),
    ):
        _check_name(value, name)
    path = _check_path(path, "path")
    if _keras_files.records_architecture(path):
        return load_keras(
            path,
            input_shape=input_shape,
            n_iter=n_iter if n_iter_given else None,
            classes=classes,
            squash_eps=squash_eps,
        )
    weights = _keras_capsnet_tensors(read_keras_h5(path), conv_name, primary_name, caps_name)
    what = f"Keras CapsNet in {path!r}"
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
        raise WeightsMismatchError(what, problems)
    k1 = weights[f"{conv_name}/kernel"]
    b1 = weights[f"{conv_name}/bias"]
    k2 = weights[f"{primary_name}/kernel"]
    b2 = weights[f"{primary_name}/bias"]
    W = weights[f"{caps_name}/W"]
    if primary_dim is None:
        primary_dim = int(W.shape[-1]) if W.ndim == 4 else 8
    if k1.ndim != 4 or k1.shape[0] != k1.shape[1]:
        problems.append(
            f"{conv_name}/kernel must be 4-D (k, k, c_in, c1) with a square kernel; got shape "
            f"{_shape_text(k1)}"
        )
    elif b1.shape != k1.shape[3:]:
        problems.append(
            f"{conv_name}/bias must have shape ({k1.shape[3]},), one per output channel of "
            f"{conv_name}/kernel; got {_shape_text(b1)}"
        )
    if k2.ndim != 4 or k2.shape[0] != k2.shape[1]:
        problems.append(
            f"{primary_name}/kernel must be 4-D (k, k, c1, n_types * primary_dim) with a square "
            f"kernel; got shape {_shape_text(k2)}"
        )
    else:
        if k1.ndim == 4 and k2.shape[2] != k1.shape[3]:
            problems.append(
                f"{primary_name}/kernel takes {k2.shape[2]} input channels but "
                f"{conv_name}/kernel has {k1.shape[3]} output channels"
            )
        if b2.shape != k2.shape[3:]:
            problems.append(
                f"{primary_name}/bias must have shape ({k2.shape[3]},), one per output channel "
                f"of {primary_name}/kernel; got {_shape_text(b2)}"
            )
        if k2.shape[3] % primary_dim:
            problems.append(
                f"{primary_name}/kernel has {k2.shape[3]} output channels, not a multiple of "
                f"primary_dim={primary_dim}"
            )
    if W.ndim != 4:
        problems.append(
            f"{caps_name}/W must be 4-D (n_out, n_in, out_dim, in_dim); got shape {_shape_text(W)}"
        )
    elif W.shape[3] != primary_dim:
        problems.append(
            f"{caps_name}/W {_shape_text(W)} takes {W.shape[3]}-D input capsules (in_dim, the "
            f"last axis) but primary_dim={primary_dim}: pass primary_dim={W.shape[3]}"
        )
    if problems:
        raise WeightsMismatchError(what, problems)
    n_types = k2.shape[3] // primary_dim
    n_out, n_in, out_dim, _ = W.shape
    input_shape = input_shape or (28, 28, k1.shape[2])
    hints = _input_problems(
        input_shape,
        k1.shape[2],
        k1.shape[0],
        k2.shape[0],
        n_types,
        n_in,
        conv_name=f"{conv_name}/kernel",
        route_name=f"{caps_name}/W",
    )
    model = _build_and_set(
        what,
        hints,
        dict(
            input_shape=input_shape,
            conv_channels=k1.shape[3],
            conv_kernel=k1.shape[0],
            primary_types=n_types,
            primary_dim=primary_dim,
            primary_kernel=k2.shape[0],
            n_classes=n_out,
            class_dim=out_dim,
            n_iter=n_iter,
            order="position-major",
            weight_layout="keras",
            squash_eps=squash_eps,
            classes=classes,
        ),
        {
            "conv1.weight": k1,
            "conv1.bias": b1,
            "primary_caps.weight": k2,
            "primary_caps.bias": b2,
            "class_caps.weight": W,
        },
    )
    model.metadata = {
        **model.metadata,
        "import": {
            "source": repr(path),
            "format": "keras2-weights",
            "notes": [
                "the fixed CapsNet-Keras layout (a weights-only file does not record it): "
                f"{conv_name} with ReLU and stride 1, the primary capsules' convolution with "
                "stride 2, no padding, the paper's routing with "
                f"n_iter={n_iter}{'' if n_iter_given else ' (the default)'}; "
                "caproute.models.load_keras asks for each instead",
            ],
        },
    }
    return model
