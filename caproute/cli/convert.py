"""``caproute convert``: another implementation's checkpoint to a caproute model file."""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import zipfile

from ._common import UsageError, WorkError, input_file, output_file, read_magic

DESCRIPTION = """\
Convert a checkpoint of another implementation into a caproute model file
(.safetensors with the architecture), which `caproute predict --model FILE`
and caproute.models.load read. Prints the architecture it built, layer by
layer with output shapes, and the notes on every choice the importer took.

SOURCE may be (recognised from its content):
  - a PyTorch state dict: a checkpoint (.pt, .pth; needs torch, read with
    torch.load(weights_only=True): tensors only, never arbitrary objects), or
    a safetensors or .npz file, of a known layout (--layout; found from the
    tensor names): gram-ai's CapsNet, a single-convolution CapsNet, or the
    matrix-capsule (EM routing) network of Matrix-Capsules-EM-PyTorch;
  - a Keras file: a Keras 2 / tf.keras HDF5 file (.h5, full model or weights
    only) or a Keras 3 .keras archive (needs h5py);
  - a caproute model file (read and written again).

What a file does not record must be given: --activation, --n-iter and
--input-shape for a state dict; --em-options (matrix capsules) and
--batchnorm-eps (BatchNorm tensors) where they apply. A missing one is an
error that lists the choices. --state-dict writes a PyTorch checkpoint's
tensors only (no architecture), to map another layout by hand
(caproute.models.load_torch with mapping=; see docs/models.md).
"""

EPILOG = """\
examples:
  caproute convert capsnet.pt capsnet.safetensors --activation relu --n-iter 3 \\
      --input-shape 28,28,1 --classes fashion-mnist
  caproute convert leaky.safetensors net.safetensors \\
      --activation leaky_relu:0.01 --n-iter 3 --input-shape 28,28,1
  caproute convert em.pt em.safetensors --activation relu --n-iter 2 \\
      --input-shape 28,28,1 --em-options yl-1993 --batchnorm-eps 0.001
  caproute convert model.keras model.safetensors
  caproute convert --state-dict other_layout.pt tensors.safetensors
"""

LEGACY_DESCRIPTION = """\
Write the tensors of a PyTorch state dict (.pt, .pth) to a safetensors file:
the same as `caproute convert --state-dict SOURCE TARGET`, kept for scripts
written for earlier versions. Import the result with
caproute.models.load_torch, or use `caproute convert` to get a model file
that `caproute predict --model` reads.
"""

TORCH_KINDS = ("torch-zip", "torch-legacy")
KERAS_NAME_OPTIONS = ("primary_dim", "conv_name", "primary_name", "caps_name")
# load_torch / load_keras arguments, and the command-line options that give them
OPTION_OF = {
    "activation": "--activation",
    "n_iter": "--n-iter",
    "input_shape": "--input-shape",
    "em_options": "--em-options",
    "batchnorm_eps": "--batchnorm-eps",
    "strides": "--strides",
    "padding": "--padding",
    "layout": "--layout",
    "classes": "--classes",
    "squash_eps": "--squash-eps",
    "weight_layout": "--weight-layout",
    "bn_epsilon": "--batchnorm-eps",
}


def activation_spec(text):
    """argparse type: an activation, ``relu``, ``leaky_relu:0.01``, ``elu:1.5``, a JSON object,
    or several of these separated by commas (one per convolution)."""
    import json

    text = text.strip()
    if text.startswith("{") or text.startswith("["):
        try:
            return json.loads(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected JSON; got {text!r}") from None
    specs = []
    for part in text.split(","):
        name, _, value = part.strip().partition(":")
        if not name:
            raise argparse.ArgumentTypeError(f"expected an activation name; got {text!r}")
        if value:
            param = {"leaky_relu": "negative_slope", "elu": "alpha"}.get(name)
            try:
                number = float(value)
            except ValueError:
                number = None
            if param is None or number is None:
                raise argparse.ArgumentTypeError(
                    f"expected NAME or leaky_relu:SLOPE or elu:ALPHA; got {part!r}"
                )
            specs.append({"name": name, param: number})
        elif name == "leaky_relu":
            raise argparse.ArgumentTypeError(
                "leaky_relu needs its slope: leaky_relu:0.01 (PyTorch's default) or "
                "leaky_relu:0.3 (Keras')"
            )
        else:
            specs.append(name)
    return specs[0] if len(specs) == 1 else specs


def em_options_spec(text):
    """argparse type: a preset name or a JSON object of EM-routing options."""
    import json

    text = text.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a preset name or JSON; got {text!r}"
            ) from None
        return value
    return text


def layer_values(text):
    """argparse type: ``LAYER=N`` pairs (``conv1=2,primary_caps=1``: a dict, for state dicts) or
    plain values, one per convolution (``1,2`` or ``valid,same``: a list, for Keras files);
    numbers become ints."""
    items = [p.strip() for p in text.split(",")]
    if not all(items):
        raise argparse.ArgumentTypeError(f"expected comma-separated values; got {text!r}")

    def value(v):
        return int(v) if v.isdigit() else v

    if any("=" in p for p in items):
        out = {}
        for part in items:
            name, eq, v = part.partition("=")
            if not eq or not name.strip() or not v.strip():
                raise argparse.ArgumentTypeError(
                    f"expected LAYER=N pairs separated by commas (e.g. conv1=2,primary_caps=1); "
                    f"got {text!r}"
                )
            out[name.strip()] = value(v.strip())
        return out
    return [value(p) for p in items]


def add_parsers(sub, parents):
    from ..models.torch_import import TORCH_LAYOUTS
    from ._common import int_tuple, positive_float, positive_int

    def options(p):
        p.add_argument("source", metavar="SOURCE", help="the checkpoint (.pt, .pth, .h5, ...)")
        p.add_argument("target", metavar="TARGET", help="the caproute .safetensors file to write")
        p.add_argument(
            "--layout",
            choices=sorted(TORCH_LAYOUTS),
            help="PyTorch: the state dict's layout (default: found from the tensor names)",
        )
        p.add_argument(
            "--activation",
            type=activation_spec,
            metavar="SPEC",
            help="activation after the convolutions: relu, leaky_relu:SLOPE, elu, gelu, "
            "selu, swish, linear, ... (comma-separated: one per convolution)",
        )
        p.add_argument(
            "--n-iter",
            type=positive_int,
            metavar="N",
            help="routing iterations of the capsule layers (not in a state dict)",
        )
        p.add_argument(
            "--input-shape",
            type=int_tuple(3),
            metavar="H,W,C",
            help="image height, width, channels (not in a state dict)",
        )
        p.add_argument(
            "--em-options",
            type=em_options_spec,
            metavar="PRESET|JSON",
            help="PyTorch matrix capsules: EM-routing variant, yl-1993 or paper, or a JSON "
            "object of options",
        )
        p.add_argument(
            "--batchnorm-eps",
            type=positive_float,
            metavar="EPS",
            help="PyTorch: eps of the BatchNorm layers (torch's default 1e-5)",
        )
        p.add_argument(
            "--strides",
            type=layer_values,
            metavar="LAYER=N,...|N,...",
            help="strides: by layer name for a state dict (conv1=2), one per convolution for "
            "a Keras file (1,2)",
        )
        p.add_argument(
            "--padding",
            type=layer_values,
            metavar="LAYER=N,...|P,...",
            help="paddings: by layer name for a state dict (conv1=2), one per convolution for "
            "a Keras file (valid,same)",
        )
        p.add_argument(
            "--weight-layout",
            choices=("keras", "torch", "caproute", "tf"),
            help="Keras weights-only files: the layout of the class capsules' transform",
        )
        p.add_argument(
            "--classes",
            metavar="NAMES",
            help="class names, comma-separated, or 'fashion-mnist' for its 10 classes",
        )
        p.add_argument(
            "--squash-eps",
            type=positive_float,
            metavar="EPS",
            help="eps inside squash's square root (default 1e-8 PyTorch; Keras: the file's)",
        )
        p.add_argument(
            "--primary-dim",
            type=positive_int,
            metavar="N",
            help="Keras HDF5, by layer names: dimension of the primary capsules (default 8)",
        )
        p.add_argument(
            "--conv-name",
            metavar="NAME",
            help="Keras HDF5, by layer names: the first convolution (default conv1)",
        )
        p.add_argument(
            "--primary-name",
            metavar="NAME",
            help="Keras HDF5, by layer names: the primary capsules (default primarycap_conv2d)",
        )
        p.add_argument(
            "--caps-name",
            metavar="NAME",
            help="Keras HDF5, by layer names: the class capsules (default digitcaps)",
        )
        p.add_argument(
            "--state-dict",
            action="store_true",
            help="PyTorch: write the checkpoint's tensors only (no architecture)",
        )
        p.set_defaults(func=run)

    options(
        sub.add_parser(
            "convert",
            parents=parents,
            help="convert a PyTorch or Keras checkpoint to a caproute model file",
            description=DESCRIPTION,
            epilog=EPILOG,
        )
    )
    legacy = sub.add_parser(
        "convert-torch",
        parents=parents,
        help="the same as `convert --state-dict` (kept for older scripts)",
        description=LEGACY_DESCRIPTION,
    )
    legacy.add_argument("source", metavar="SOURCE", help="the PyTorch checkpoint (.pt, .pth)")
    legacy.add_argument("target", metavar="TARGET", help="the .safetensors file to write")
    legacy.set_defaults(func=run, state_dict=True)


def file_kind(path):
    """(kind, description) of a checkpoint, from its first bytes."""
    try:
        from ..models.errors import describe_file
    except ImportError:  # an older caproute.models: judge from the first bytes here
        describe_file = None
    if describe_file is not None:
        return describe_file(path)
    head = read_magic(path, 16)
    if head.startswith(b"PK\x03\x04"):
        return (
            ("npz", "a NumPy .npz archive")
            if path.endswith(".npz")
            else (
                "torch-zip",
                "a PyTorch checkpoint",
            )
        )
    if head.startswith(b"\x89HDF"):
        return "hdf5", "an HDF5 file"
    if head[:1] == b"\x80":
        return "torch-legacy", "a pickle"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors", "a safetensors file"
    return "unknown", "a file of a kind caproute does not recognise"


def run(args, out):
    from .. import models

    source = input_file(args.source, what="checkpoint")
    target = output_file(args.target)
    if os.path.exists(target) and os.path.samefile(source, target):
        raise UsageError("TARGET must differ from SOURCE (the source would be overwritten).")
    kind, description = file_kind(source)
    if args.state_dict and kind not in TORCH_KINDS:
        what = "--state-dict" if args.command == "convert" else "convert-torch"
        raise UsageError(f"{what} converts PyTorch checkpoints; {source!r} is {description}.")
    if args.state_dict:
        with tempfile.TemporaryDirectory(prefix="caproute-convert-") as tmp:
            tensors_file = os.path.join(tmp, "state_dict.safetensors")
            with out.waiting("reading the PyTorch checkpoint"):
                skipped = _torch_to_safetensors(source, tensors_file)
            names = models.read_state_dict(tensors_file)
            _copy(tensors_file, target)
            return _report_tensors(out, source, target, names, skipped)
    common = _common_hints(args)
    keras_names = {k: getattr(args, k) for k in KERAS_NAME_OPTIONS if getattr(args, k) is not None}
    if keras_names and kind != "hdf5":
        raise UsageError(
            f"--{'/--'.join(k.replace('_', '-') for k in keras_names)} apply to Keras HDF5 files; "
            f"{source!r} is {description}."
        )
    if kind == "safetensors" and _is_caproute_model(source):
        model = _import(lambda: models.load(source), source, "caproute")
        model.metadata = {
            **model.metadata,
            "import": {"notes": ["already a caproute model file: read and written again"]},
        }
        if args.classes is not None:
            model.classes = _classes(args.classes, model.n_classes)
    elif kind in TORCH_KINDS or kind in ("safetensors", "npz"):
        if args.weight_layout is not None:
            raise UsageError(
                "--weight-layout applies to Keras weights-only files; a PyTorch layout fixes "
                "it (--layout)."
            )
        torch_hints = {**common}
        for key in ("layout", "em_options", "batchnorm_eps", "strides", "padding"):
            if getattr(args, key) is not None:
                torch_hints[key] = getattr(args, key)
        if kind in TORCH_KINDS:
            _need_torch(source)
        with out.waiting("reading the PyTorch state dict"):
            model = _import(lambda: models.load_torch(source, **torch_hints), source, "torch")
    elif kind == "hdf5" and keras_names:
        # the layer names of the common Keras CapsNet: the importer by names, as before
        legacy = {
            k: v
            for k, v in common.items()
            if k in ("n_iter", "input_shape", "classes", "squash_eps")
        }
        if "activation" in common and common["activation"] != "relu":
            raise UsageError(
                "--conv-name/--primary-name/--caps-name/--primary-dim build the common Keras "
                "CapsNet, whose convolution is ReLU; leave them out to read the file's own "
                "architecture with --activation."
            )
        model = _import(
            lambda: models.capsnet_from_keras_h5(source, **legacy, **keras_names), source, "keras"
        )
        model.metadata = {
            **model.metadata,
            "import": {"notes": ["layers found by the names given; conv1 activation ReLU"]},
        }
    elif kind == "hdf5" or _is_keras_archive(source, kind):
        keras_hints = {**common}
        for key in ("strides", "padding", "weight_layout"):
            if getattr(args, key) is not None:
                keras_hints[key] = getattr(args, key)
        if args.batchnorm_eps is not None:
            keras_hints["bn_epsilon"] = args.batchnorm_eps
        if args.em_options is not None:
            keras_hints["em_options"] = _em_dict(args.em_options)
        if args.layout is not None:
            raise UsageError(
                f"--layout applies to PyTorch state dicts; {source!r} is {description}."
            )
        load_keras = getattr(models, "load_keras", None)
        if load_keras is None:
            raise WorkError(
                "this caproute cannot read Keras files with their architecture yet "
                "(caproute.models.load_keras is missing)."
            )
        with out.waiting("reading the Keras file"):
            model = _import(lambda: load_keras(source, **keras_hints), source, "keras")
    elif kind == "pickle":
        raise WorkError(
            f"{source!r} is a Python pickle but not a PyTorch checkpoint; caproute never "
            "unpickles arbitrary objects. Save the weights with torch.save(model.state_dict(), "
            "path) or as .npz/.safetensors."
        )
    else:
        raise WorkError(
            f"{source!r} is {description}; caproute convert reads PyTorch checkpoints (.pt, "
            ".pth), safetensors or .npz state dicts, Keras .h5 and .keras files, and caproute "
            "model files."
        )
    return _write(out, model, source, target, kind)


def _write(out, model, source, target, kind):
    from .. import models

    info = model.metadata.get("import") or {}
    notes = [str(n) for n in info.get("notes", [])]
    meta = {"converted_from": os.path.basename(source)}
    if info.get("layout"):
        meta["converted_layout"] = str(info["layout"])
    model.metadata = {k: v for k, v in model.metadata.items() if k in ("input_range",)} | {
        "source": os.path.basename(source)
    }
    tmp_target = f"{target}.part-{os.getpid()}"
    try:
        models.save(model, tmp_target, metadata=meta)
        os.replace(tmp_target, target)
    finally:
        if os.path.exists(tmp_target):
            os.remove(tmp_target)
    summary = model.summary()
    out.print(summary)
    if notes:
        out.print("\nnotes:")
        for note in notes:
            out.print(f"  - {note}")
    out.print(f"\nwrote model {model.name!r} ({model.n_parameters():,} parameters) to {target}")
    out.document(
        {
            "source": source,
            "source_kind": kind,
            "target": target,
            "model": model.name,
            "input_shape": list(model.input_shape),
            "data_format": model.data_format,
            "n_classes": model.n_classes,
            "classes": model.classes,
            "n_parameters": model.n_parameters(),
            "summary": summary,
            "notes": notes,
            "layout": info.get("layout"),
            "dropped": list(info.get("dropped", [])),
            "architecture": model.get_config(),
        }
    )
    return 0


def _copy(src, dst):
    import shutil

    tmp = f"{dst}.part-{os.getpid()}"
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _report_tensors(out, source, target, tensors, skipped):
    out.print(
        f"wrote {len(tensors)} tensors to {target}"
        + (f"; skipped {', '.join(skipped)}" if skipped else "")
    )
    out.document(
        {
            "source": source,
            "target": target,
            "tensors": {k: list(v.shape) for k, v in tensors.items()},
            "skipped": skipped,
        }
    )
    return 0


def _classes(text, n_classes=None):
    from ..datasets import CLASS_NAMES

    if text.strip().lower() == "fashion-mnist":
        names = list(CLASS_NAMES)
    else:
        names = [c.strip() for c in text.split(",")]
        if not all(names):
            raise UsageError(f"--classes has an empty name: {text!r}.")
    if n_classes is not None and len(names) != n_classes:
        raise UsageError(f"--classes has {len(names)} names for {n_classes} classes.")
    return names


def _common_hints(args):
    """The hints both importers take, those given on the command line only."""
    hints = {}
    for key in ("activation", "n_iter", "input_shape", "squash_eps"):
        if getattr(args, key) is not None:
            hints[key] = getattr(args, key)
    if args.classes is not None:
        hints["classes"] = _classes(args.classes)
    return hints


def _em_dict(value):
    """``--em-options`` for load_keras: a preset name becomes its dict of options."""
    from ..models.torch_import import EM_PRESETS

    if isinstance(value, str):
        if value not in EM_PRESETS:
            raise UsageError(
                f"--em-options must be one of {sorted(EM_PRESETS)} or a JSON object; got {value!r}."
            )
        return dict(EM_PRESETS[value])
    return value


def _cli_words(message):
    """The command-line options that give the arguments a message names (``pass n_iter=``,
    ``pass `n_iter```)."""
    named = [opt for arg, opt in OPTION_OF.items() if re.search(rf"\b{arg}=|`{arg}`", message)]
    return f"\n(on the command line: {', '.join(named)})" if named else ""


def _need_torch(source):
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise WorkError(
            f"converting the PyTorch checkpoint {source!r} needs PyTorch: pip install torch "
            "(caproute itself never imports it)."
        )


def _is_keras_archive(path, kind):
    if not kind.startswith("zip") and "keras" not in kind:
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return path.lower().endswith(".keras")
    return "config.json" in names


def _import(build, source, layout):
    """Run an importer; its errors gain a hint on the options that fix them."""
    from ..models import WeightsFileError, WeightsMismatchError

    try:
        return build()
    except WeightsMismatchError as exc:
        if layout == "keras":
            hint = (
                "The file's tensors do not fit the network it describes; for a weights-only "
                "file of the common Keras CapsNet, name its layers with --conv-name, "
                "--primary-name and --caps-name, and give --primary-dim."
            )
        elif layout == "torch":
            hint = (
                "For a state dict of another layout, `caproute convert --state-dict` writes the "
                "tensors, to map them by hand with caproute.models.load_torch(mapping=...) "
                "(docs/models.md)."
            )
        else:
            hint = ""
        message = str(exc)
        raise WorkError(f"{source!r}: {message}{_cli_words(message)}\n{hint}".rstrip()) from None
    except WeightsFileError as exc:
        raise WorkError(str(exc)) from None
    except (ValueError, TypeError) as exc:
        # what the file does not record (asked for by name), wrong hints, a malformed file
        message = str(exc)
        raise WorkError(f"{source!r}: {message}{_cli_words(message)}") from None


def _is_caproute_model(path):
    from ..models.serialization import ARCHITECTURE_KEY
    from ..models.weights_file import load_file

    try:
        return ARCHITECTURE_KEY in load_file(path)[1]
    except ValueError:
        return False


def _torch_to_safetensors(source, target):
    """The tensors of a PyTorch checkpoint to a safetensors file; the skipped entries."""
    try:
        from ..models.torch_files import convert_torch_checkpoint
    except ModuleNotFoundError as exc:
        if exc.name != "caproute.models.torch_files":
            raise
        convert_torch_checkpoint = None
    if convert_torch_checkpoint is not None:
        result = convert_torch_checkpoint(source, target)
        skipped = getattr(result, "skipped", None) or {}
        if isinstance(skipped, dict):
            return [f"{k!r} ({v})" for k, v in skipped.items()]
        return [repr(k) for k in skipped]
    return _convert_torch_fallback(source, target)


def _convert_torch_fallback(source, target):
    """Read a state dict with ``torch.load(weights_only=True)``; write its tensors."""
    import pickle

    try:
        import torch
    except ImportError:
        raise WorkError(
            f"converting the PyTorch checkpoint {source!r} needs PyTorch: pip install torch "
            "(caproute itself never imports it)."
        ) from None
    from ..models.weights_file import save_file

    try:
        obj = torch.load(source, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WorkError(
            f"{source!r} is not a PyTorch state dict of tensors: torch could not read it "
            f"without unpickling other objects ({first[:200]}). Re-save it with "
            "torch.save(model.state_dict(), path)."
        ) from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise WorkError(
            f"{source!r} does not hold a state dict (a dict of tensors); got {type(obj).__name__}."
        )
    tensors, skipped = {}, []
    for name, value in obj.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            tensors[str(name)] = (
                value.float().numpy() if value.is_floating_point() else value.numpy()
            )
        else:
            skipped.append(f"{str(name)!r} (not a tensor)")
    if not tensors:
        raise WorkError(f"{source!r} holds no tensors.")
    save_file(target, tensors, {"source": "caproute convert"})
    return skipped
