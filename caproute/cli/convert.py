"""``caproute convert``: another implementation's checkpoint to a caproute model file."""

from __future__ import annotations

import os
import tempfile

from ._common import UsageError, WorkError, input_file, output_file, read_magic

DESCRIPTION = """\
Convert a checkpoint of another implementation into a caproute model file
(.safetensors with the architecture), which `caproute predict --model FILE`
and caproute.models.load read. Prints the architecture it built.

SOURCE may be:
  - a PyTorch checkpoint (.pt, .pth) of a CapsNet laid out like gram-ai's
    capsule-networks (needs torch; read with torch.load(weights_only=True):
    tensors only, never arbitrary objects);
  - a safetensors or .npz state dict of that layout;
  - a Keras HDF5 file (.h5) of a CapsNet laid out like the common Keras
    implementation (needs h5py: pip install 'caproute[keras]').

What the weights do not record is given by options: --primary-dim (Keras),
--n-iter, --input-shape, --classes, --squash-eps, and the Keras layer names.
--state-dict writes a PyTorch checkpoint's tensors only (no architecture), to
map a checkpoint of another layout by hand (see docs/models.md).
"""

EPILOG = """\
examples:
  caproute convert capsnet.pt capsnet.safetensors --classes fashion-mnist
  caproute convert capsnet_weights.h5 capsnet.safetensors --primary-dim 8
  caproute convert --state-dict other_layout.pt tensors.safetensors
"""

LEGACY_DESCRIPTION = """\
Write the tensors of a PyTorch state dict (.pt, .pth) to a safetensors file:
the same as `caproute convert --state-dict SOURCE TARGET`, kept for scripts
written for earlier versions. Import the result with
caproute.models.capsnet_from_torch, or use `caproute convert` to get a model
file that `caproute predict --model` reads.
"""

TORCH_KINDS = ("torch-zip", "torch-legacy")


def add_parsers(sub, parents):
    from ._common import int_tuple, positive_float, positive_int

    def options(p):
        p.add_argument("source", metavar="SOURCE", help="the checkpoint (.pt, .pth, .h5, ...)")
        p.add_argument("target", metavar="TARGET", help="the caproute .safetensors file to write")
        p.add_argument(
            "--n-iter",
            type=positive_int,
            default=3,
            metavar="N",
            help="routing iterations (default 3)",
        )
        p.add_argument(
            "--input-shape",
            type=int_tuple(3),
            metavar="H,W,C",
            help="image height, width, channels (default 28,28 and the weights' channels)",
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
            help="eps inside squash's square root (default: 1e-8 PyTorch, 1e-7 Keras)",
        )
        p.add_argument(
            "--primary-dim",
            type=positive_int,
            default=8,
            metavar="N",
            help="Keras: dimension of the primary capsules (default 8; not in the weights)",
        )
        p.add_argument(
            "--conv-name",
            default="conv1",
            metavar="NAME",
            help="Keras: the layer of the first convolution (default conv1)",
        )
        p.add_argument(
            "--primary-name",
            default="primarycap_conv2d",
            metavar="NAME",
            help="Keras: the layer of the primary capsules (default primarycap_conv2d)",
        )
        p.add_argument(
            "--caps-name",
            default="digitcaps",
            metavar="NAME",
            help="Keras: the layer of the class capsules (default digitcaps)",
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
    hints = {} if args.state_dict else _hints(args)
    if kind in TORCH_KINDS:
        with tempfile.TemporaryDirectory(prefix="caproute-convert-") as tmp:
            tensors_file = os.path.join(tmp, "state_dict.safetensors")
            with out.waiting("reading the PyTorch checkpoint"):
                skipped = _torch_to_safetensors(source, tensors_file)
            if args.state_dict:
                names = models.read_state_dict(tensors_file)
                _copy(tensors_file, target)
                return _report_tensors(out, source, target, names, skipped)
            model = _import(
                lambda: models.capsnet_from_torch(tensors_file, **hints), source, "torch"
            )
    elif kind in ("safetensors", "npz"):
        if kind == "safetensors" and _is_caproute_model(source):
            raise WorkError(
                f"{source!r} is already a caproute model file: use it as it is "
                f"(caproute predict --model {source} ...)."
            )
        model = _import(lambda: models.capsnet_from_torch(source, **hints), source, "torch")
    elif kind == "hdf5":
        keras = {
            **hints,
            "primary_dim": args.primary_dim,
            "conv_name": args.conv_name,
            "primary_name": args.primary_name,
            "caps_name": args.caps_name,
        }
        model = _import(lambda: models.capsnet_from_keras_h5(source, **keras), source, "keras")
    elif kind == "pickle":
        raise WorkError(
            f"{source!r} is a Python pickle but not a PyTorch checkpoint; caproute never "
            "unpickles arbitrary objects. Save the weights with torch.save(model.state_dict(), "
            "path) or as .npz/.safetensors."
        )
    else:
        raise WorkError(
            f"{source!r} is {description}; caproute convert reads PyTorch checkpoints (.pt, "
            ".pth), safetensors or .npz state dicts of gram-ai's CapsNet layout, and Keras .h5 "
            "files."
        )
    model.metadata = {**model.metadata, "source": os.path.basename(source)}
    tmp_target = f"{target}.part-{os.getpid()}"
    try:
        models.save(model, tmp_target, metadata={"converted_from": os.path.basename(source)})
        os.replace(tmp_target, target)
    finally:
        if os.path.exists(tmp_target):
            os.remove(tmp_target)
    summary = model.summary()
    out.print(summary)
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


def _hints(args):
    from ..datasets import CLASS_NAMES

    hints = {"n_iter": args.n_iter}
    if args.input_shape is not None:
        hints["input_shape"] = args.input_shape
    if args.classes is not None:
        if args.classes.strip().lower() == "fashion-mnist":
            hints["classes"] = list(CLASS_NAMES)
        else:
            names = [c.strip() for c in args.classes.split(",")]
            if not all(names):
                raise UsageError(f"--classes has an empty name: {args.classes!r}.")
            hints["classes"] = names
    if args.squash_eps is not None:
        hints["squash_eps"] = args.squash_eps
    return hints


def _import(build, source, layout):
    """Run an importer; its errors gain a hint on the options that fix them."""
    from ..models import WeightsMismatchError

    try:
        return build()
    except WeightsMismatchError as exc:
        if layout == "keras":
            hint = (
                "The importer expects the layout of the common Keras CapsNet; pass the file's "
                "layer names with --conv-name, --primary-name and --caps-name, and the primary "
                "capsules' dimension with --primary-dim."
            )
        else:
            hint = (
                "The importer expects the layout of gram-ai's PyTorch CapsNet; for another "
                "layout, `caproute convert --state-dict` writes the tensors, to map them by hand "
                "(docs/models.md)."
            )
        raise WorkError(f"{source!r}: {exc}\n{hint}") from None
    except ValueError as exc:
        # wrong hints (e.g. classes of the wrong count) or a malformed file
        raise WorkError(f"{source!r}: {exc}") from None


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
