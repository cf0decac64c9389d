"""PyTorch checkpoints to safetensors, reading tensors only: no arbitrary object is unpickled.

:func:`convert_torch_checkpoint` is what ``caproute convert-torch`` runs. It first looks at the
file's bytes: only a PyTorch checkpoint (the zip archive ``torch.save`` writes, or its legacy
format that starts with torch's magic number) goes on to ``torch.load(..., weights_only=True)``,
PyTorch's restricted unpickler that builds tensors, dicts and lists and refuses every other
object. Any other file is named as what it is (safetensors, ``.npz``, HDF5, another pickle, a
zip archive, text, an empty file), with the way to read it where caproute has one. A checkpoint
that holds other objects (a whole ``torch.save(model)``, an optimiser's classes, NumPy arrays)
is refused with the names of those objects, read from the pickle's opcodes without executing
them, and with the way to re-save the weights alone.
"""

from __future__ import annotations

import errno
import io
import os
import pickle
import pickletools
import re
import zipfile
from typing import NamedTuple

from .errors import WeightsFileError, describe_file
from .weights_file import save_file

_MAX_NAMES = 5  # objects named in a message
_SAFE_PREFIXES = (
    "torch._utils.",
    "torch._tensor.",
    "torch.storage.",
    "collections.OrderedDict",
    "_codecs.",
    "builtins.",
    "__builtin__.",
)
_STRING_OPS = {
    "SHORT_BINUNICODE",
    "BINUNICODE",
    "BINUNICODE8",
    "UNICODE",
    "SHORT_BINSTRING",
    "BINSTRING",
    "STRING",
}
_NOT_PUSHING = {"PROTO", "FRAME", "MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "STOP", "MARK"}


class TorchConversion(NamedTuple):
    """What :func:`convert_torch_checkpoint` wrote.

    Parameters
    ----------
    target : str
        The safetensors file written.
    tensors : dict of str to tuple of int
        The shape of every tensor written, by name.
    skipped : dict of str to str
        Entries of the state dict that are not tensors (or tensors that safetensors cannot
        hold), by name, each with the reason.

    Examples
    --------
    >>> from caproute.models.torch_files import TorchConversion
    >>> done = TorchConversion("w.safetensors", {"conv1.weight": (8, 1, 9, 9)}, {})
    >>> done.summary()
    'wrote 1 tensors to w.safetensors'
    """

    target: str
    tensors: dict
    skipped: dict

    def summary(self):
        """One line for the user: how many tensors went where, and what was skipped.

        Returns
        -------
        str
            For example ``"wrote 12 tensors to weights.safetensors"``.

        Examples
        --------
        >>> from caproute.models.torch_files import TorchConversion
        >>> TorchConversion("w.safetensors", {"w": (2,)}, {"epoch": "not a tensor: int"}).summary()
        "wrote 1 tensors to w.safetensors; skipped 'epoch' (not a tensor: int)"
        """
        line = f"wrote {len(self.tensors)} tensors to {self.target}"
        if self.skipped:
            line += "; skipped " + ", ".join(f"{k!r} ({v})" for k, v in self.skipped.items())
        return line


def convert_torch_checkpoint(source, target):
    """Convert a PyTorch state-dict checkpoint (``.pt``, ``.pth``, ...) to a safetensors file.

    The file is checked to be a PyTorch checkpoint before anything reads it, and then read
    with ``torch.load(weights_only=True)``, which builds tensors and plain containers only:
    no arbitrary object is ever unpickled. A checkpoint whose state dict sits under
    ``"state_dict"``, ``"model_state_dict"`` or ``"model"`` (as training loops save it, next to
    the epoch and the optimiser's state) is found there. Floating tensors are written as
    float32, or float64 where they are float64 (float16 and bfloat16 are widened exactly);
    entries that are not tensors are skipped and reported.

    Parameters
    ----------
    source : str or os.PathLike
        The checkpoint, written by ``torch.save(model.state_dict(), source)`` (or a dict
        holding such a state dict).
    target : str or os.PathLike
        The safetensors file to write (replaced if it exists; written in full or not at all).

    Returns
    -------
    TorchConversion
        The target, the shapes of the tensors written and the skipped entries; its
        ``summary()`` is one line for the user.

    Raises
    ------
    ImportError
        If PyTorch is not installed (and `source` is a PyTorch checkpoint).
    WeightsFileError
        If `source` is not a PyTorch checkpoint (the message says what it is), holds pickled
        objects other than tensors (named, with how to re-save the weights alone), is damaged,
        or holds no state dict of tensors.
    FileNotFoundError
        If `source` does not exist.
    ValueError
        If `target` is `source` itself, a directory, or in a folder that does not exist.
    TypeError
        If `source` or `target` is not a path.

    Examples
    --------
    >>> import os, tempfile
    >>> from caproute.models.torch_files import convert_torch_checkpoint
    >>> folder = tempfile.mkdtemp()
    >>> try:
    ...     import torch
    ... except ImportError:
    ...     torch = None
    >>> if torch is not None:
    ...     net = torch.nn.Linear(3, 2)
    ...     torch.save({"epoch": 5, "state_dict": net.state_dict()}, f"{folder}/net.pt")
    ...     done = convert_torch_checkpoint(f"{folder}/net.pt", f"{folder}/net.safetensors")
    ...     assert done.tensors == {"weight": (2, 3), "bias": (2,)}

    Other files are named as what they are, before PyTorch is imported:

    >>> with open(f"{folder}/notes.pt", "w") as f:
    ...     _ = f.write("trained for 5 epochs")
    >>> convert_torch_checkpoint(f"{folder}/notes.pt", f"{folder}/x.safetensors")
    Traceback (most recent call last):
    ...
    caproute.models.errors.WeightsFileError: '...notes.pt' is not a PyTorch checkpoint: ...
    """
    source = _check_path(source, "source")
    target = _check_path(target, "target")
    if not os.path.exists(source):
        raise FileNotFoundError(errno.ENOENT, "`source` does not exist", source)
    kind, description = describe_file(source)
    if kind not in ("torch-zip", "torch-legacy"):
        raise WeightsFileError(_not_a_checkpoint(source, kind, description))
    _check_target(source, target)
    torch = _import_torch()
    try:
        obj = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # PyTorch's own text advises weights_only=False, which would run arbitrary code: it is
        # not passed on. The objects are named from the pickle's opcodes (read, never run).
        raise WeightsFileError(_holds_objects(source, kind, str(exc), torch)) from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, OSError, ... here
        raise WeightsFileError(
            f"{source!r} is {description}, but it could not be read: it is damaged or truncated "
            f"({type(exc).__name__} in torch.load)."
        ) from exc
    state_dict = _state_dict(source, obj, torch)
    tensors, skipped = {}, {}
    for name, value in state_dict.items():
        key = str(name)
        if not isinstance(value, torch.Tensor):
            skipped[key] = f"not a tensor: {type(value).__name__}"
            continue
        array, reason = _to_numpy(value, torch)
        if array is None:
            skipped[key] = reason
        else:
            tensors[key] = array
    if not tensors:
        raise WeightsFileError(
            f"{source!r} is a PyTorch checkpoint without tensors: its state dict holds "
            + ", ".join(f"{k!r} ({v})" for k, v in list(skipped.items())[:_MAX_NAMES])
            + (", ..." if len(skipped) > _MAX_NAMES else "")
            + ". Save the model's weights with torch.save(model.state_dict(), path)."
        )
    partial = target + ".part"
    try:
        save_file(
            partial,
            tensors,
            {"source": "caproute convert-torch", "source_file": os.path.basename(source)},
        )
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return TorchConversion(
        target, {k: tuple(int(s) for s in v.shape) for k, v in tensors.items()}, skipped
    )


def _check_path(path, name):
    if isinstance(path, bool) or not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"`{name}` must be a path (str or os.PathLike); got {type(path).__name__}.")
    return os.fsdecode(os.fspath(path))


def _check_target(source, target):
    if os.path.isdir(target):
        raise ValueError(f"`target` must be a file to write; got {target!r}, a directory.")
    if os.path.exists(target) and os.path.samefile(source, target):
        raise ValueError(
            f"`target` must differ from `source`; got {target!r} for both (the checkpoint "
            "would be overwritten)."
        )
    folder = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(folder):
        raise ValueError(
            f"`target` must be in an existing folder; got {target!r}, but {folder!r} does not "
            "exist."
        )


def _import_torch():
    try:
        import torch
    except ImportError:
        raise ImportError(
            "converting PyTorch checkpoints needs PyTorch: pip install torch (caproute itself "
            "never imports it)."
        ) from None
    return torch


def _not_a_checkpoint(source, kind, description):
    """The message for a `source` that is not a PyTorch checkpoint."""
    if kind == "safetensors":
        return (
            f"{source!r} is already a safetensors file: no conversion is needed. Import it "
            "directly (caproute.models.capsnet_from_torch, caproute.models.read_state_dict, or "
            "caproute.models.load for a caproute model)."
        )
    if kind == "npz":
        return (
            f"{source!r} is a NumPy .npz archive, which caproute reads directly "
            "(caproute.models.read_state_dict, caproute.models.capsnet_from_torch): no "
            "conversion is needed."
        )
    if kind == "hdf5":
        return (
            f"{source!r} is an HDF5 file, not a PyTorch checkpoint: import Keras weights with "
            "caproute.models.capsnet_from_keras_h5 (or read them with read_keras_h5)."
        )
    if kind == "pickle":
        return (
            f"{source!r} is a Python pickle but not a PyTorch checkpoint (torch.save writes a zip "
            "archive holding data.pkl); caproute never unpickles other pickles, as unpickling "
            "can run arbitrary code. Save the weights with torch.save(model.state_dict(), path) "
            "and convert that file, or save them as safetensors or an .npz of arrays."
        )
    if kind == "zip":
        return (
            f"{source!r} is not a PyTorch checkpoint: it is {description} (torch.save's "
            "archives hold a data.pkl)."
        )
    if kind == "zip-damaged":
        return (
            f"{source!r} is not a readable PyTorch checkpoint: it is {description} (a checkpoint "
            "whose copy or download was cut short?)."
        )
    return f"{source!r} is not a PyTorch checkpoint: it is {description}."


def _holds_objects(source, kind, torch_message, torch):
    """The message for a checkpoint that holds pickled objects torch's safe loader refused."""
    names = []
    reported = re.search(r"GLOBAL (\S+) was not an allowed global", torch_message)
    if reported:
        names.append(reported.group(1))
    for name in _pickle_globals(source, kind):
        if name not in names and not _is_safe(name, torch):
            names.append(name)
    if names:
        shown = ", ".join(names[:_MAX_NAMES]) + (", ..." if len(names) > _MAX_NAMES else "")
        what = f"pickled Python objects of type {shown}"
    else:
        what = "pickled Python objects other than tensors"
    whole = any(n.startswith("torch.nn.") for n in names)
    return (
        f"{source!r} is not a PyTorch state dict of tensors: it holds {what}"
        + (" (a whole model saved with torch.save(model)?)" if whole else "")
        + ". caproute reads tensors only and never unpickles other objects, as unpickling can "
        "run arbitrary code. Re-save the weights alone where the file was made, with "
        "torch.save(model.state_dict(), 'weights.pt'), and convert that file."
    )


def _is_safe(name, torch):
    """Whether ``name`` is one of the globals a plain state dict's pickle refers to."""
    if name.startswith(_SAFE_PREFIXES):
        return True
    module, _, attr = name.rpartition(".")
    if module != "torch":
        return False
    return (
        attr.endswith("Storage")
        or attr in ("device", "Size")
        or isinstance(getattr(torch, attr, None), torch.dtype)
    )


def _pickle_globals(source, kind):
    """The ``module.name`` globals the checkpoint's pickle refers to, in order (best effort).

    Read with :mod:`pickletools` from the opcodes: nothing is imported or executed.
    """
    try:
        if kind == "torch-zip":
            with zipfile.ZipFile(source) as archive:
                member = next(
                    n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")
                )
                stream = io.BytesIO(archive.read(member))
        else:
            with open(source, "rb") as f:
                stream = io.BytesIO(f.read())
    except (OSError, zipfile.BadZipFile, StopIteration, EOFError):
        return []
    names, recent, memo = [], [], {}
    try:
        # a zip checkpoint's data.pkl is one pickle; the legacy format is several in a row:
        # the magic number, the protocol version, system information, then the data
        for _ in range(1 if kind == "torch-zip" else 4):
            for opcode, arg, _ in pickletools.genops(stream):
                op = opcode.name
                if op in ("GLOBAL", "INST"):
                    name = ".".join(str(arg).split(" ", 1))
                elif op == "STACK_GLOBAL" and len(recent) == 2 and None not in recent:
                    name = f"{recent[0]}.{recent[1]}"
                else:
                    name = None
                if name is not None and name not in names:
                    names.append(name)
                if op == "MEMOIZE":
                    memo[len(memo)] = recent[-1] if recent else None
                elif op in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[arg] = recent[-1] if recent else None
                elif op in ("GET", "BINGET", "LONG_BINGET"):
                    recent.append(memo.get(arg))
                elif op in _STRING_OPS:
                    recent.append(arg if isinstance(arg, str) else None)
                elif op not in _NOT_PUSHING:
                    recent.append(None)
                recent = recent[-2:]
    except Exception:  # noqa: BLE001 -- a damaged pickle: the names found so far
        pass
    return names


def _state_dict(source, obj, torch):
    """The ``{name: value}`` state dict inside the loaded checkpoint ``obj``."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                return obj[key]
        return obj
    if isinstance(obj, torch.Tensor):
        raise WeightsFileError(
            f"{source!r} holds a single tensor, not a state dict: save a dict of named tensors, "
            "torch.save({'name': tensor}, path), or the model's torch.save(model.state_dict(), "
            "path)."
        )
    raise WeightsFileError(
        f"{source!r} holds a {type(obj).__name__}, not a state dict (a dict of tensor names to "
        "tensors): save the weights with torch.save(model.state_dict(), path)."
    )


def _to_numpy(value, torch):
    """``(array, None)`` for a tensor safetensors can hold, else ``(None, reason)``."""
    t = value.detach()
    if t.layout != torch.strided:
        return None, f"a {str(t.layout).replace('torch.', '')} tensor"
    if t.is_quantized:
        return None, "a quantized tensor"
    if t.device.type == "meta":
        return None, "a meta tensor without data"
    if t.is_complex():
        return None, f"dtype {str(t.dtype).replace('torch.', '')}, which safetensors cannot hold"
    if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64):
        t = t.float()  # float16, bfloat16 and the float8 types widen exactly
    try:
        return t.cpu().contiguous().numpy(), None
    except (TypeError, RuntimeError):
        return None, f"dtype {str(t.dtype).replace('torch.', '')}, which NumPy cannot hold"
