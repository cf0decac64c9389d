"""``caproute predict``: classify the user's images (files, folders, .npy, IDX) with a model."""

from __future__ import annotations

import csv
import json
import os

import numpy as np

from ._common import (
    NPY_MAGIC,
    UsageError,
    WorkError,
    atomic_write,
    compiling_notice,
    input_file,
    load_npy,
    looks_like_idx,
    output_file,
    read_magic,
)

DESCRIPTION = """\
Classify images with a shipped model or a caproute model file.

IMAGES are image files (PNG, JPEG or anything else Pillow reads; needs the
`images` extra: pip install 'caproute[images]'), folders of them (the files
directly inside, in name order), .npy files holding an (n, H, W) or
(n, H, W, C) array, or IDX files (the MNIST format, .gz allowed).

Pixel values: 8-bit images (uint8) are divided by 255; 16-bit PNGs by 65535.
Float arrays are used as given and must lie in the range the model was
trained on ([0, 1] for the shipped models); other integer arrays need --scale.
Images must have the model's size and channels (28x28 grey for the shipped
models): --resize resizes them, --grey turns colour images into grey ones.

Output: one row per image with its class, the class name and the probability
of every class (the table shows at most 10 classes; the CSV of -o and --json
hold all). --labels adds the accuracy and the confusion matrix.
"""

EPILOG = """\
examples:
  caproute predict --model capsnet-fashion-mnist my_images/
  caproute predict --model my_model.safetensors scans.npy -o predictions.csv
  caproute predict --model matrix-capsnet-fashion-mnist t10k-images-idx3-ubyte.gz \\
      --labels t10k-labels-idx1-ubyte.gz
"""

#: the grey level of colour pixels (ITU-R 601-2 luma, as Pillow's convert("L"))
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
#: how far outside the model's input range values may lie (float rounding of scaled pixels)
RANGE_SLACK = 1e-6
MAX_TABLE_CLASSES = 10


def add_parser(sub, parents):
    from .._config import BACKENDS
    from ._common import positive_int, scale_value

    p = sub.add_parser(
        "predict",
        parents=parents,
        help="classify images (files, folders, .npy, IDX) with a model",
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="NAME_OR_PATH",
        help="a shipped model (see `caproute info`) or a caproute .safetensors model file",
    )
    p.add_argument("images", nargs="+", metavar="IMAGES", help="image files, folders, .npy, IDX")
    p.add_argument("-o", "--output", metavar="FILE", help="write the predictions to a CSV file")
    p.add_argument(
        "--labels",
        metavar="FILE",
        help="true classes, in the order of the images (.npy, IDX, or a text/CSV file of "
        "integers or class names, one per line, or 'image,label' rows): adds the accuracy and "
        "the confusion matrix",
    )
    p.add_argument(
        "--batch",
        type=positive_int,
        default=100,
        metavar="N",
        help="images per forward pass (default 100)",
    )
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="where to run")
    p.add_argument(
        "--scale",
        type=scale_value,
        metavar="FACTOR",
        help="multiply pixel values by FACTOR first, e.g. 1/255 for floats in [0, 255] or "
        "1/65535 for uint16 arrays (default: 1/255 for 8-bit and 1/65535 for 16-bit images; "
        "floats as given)",
    )
    p.add_argument(
        "--resize",
        action="store_true",
        help="resize images of another size to the model's (aspect ratio not kept)",
    )
    p.add_argument(
        "--grey",
        action="store_true",
        help="convert colour images to grey (luma) for a grey model",
    )
    p.add_argument(
        "--invert",
        action="store_true",
        help="invert the grey levels (the shipped models expect a light object on a black "
        "background, as in Fashion-MNIST)",
    )
    p.set_defaults(func=run)
    return p


# ----------------------------------------------------------------------------------- model
class Geometry:
    """What the model takes: height, width, channels, value range."""

    def __init__(self, model, name):
        shape = model.input_shape
        if model.data_format == "NCHW":
            self.channels, self.height, self.width = shape
        else:
            self.height, self.width, self.channels = shape
        self.low, self.high = input_range(model)
        self.name = name  # as given to --model: a shipped model's name or a file

    @property
    def kind(self):
        return {1: "grey", 3: "RGB"}.get(self.channels, f"{self.channels}-channel")

    def describe(self):
        return (
            f"{self.height}x{self.width} {self.kind} images (height x width) with values in "
            f"[{self.low:g}, {self.high:g}]"
        )


def input_range(model):
    """The range of input values the model was trained on: its metadata's ``input_range``
    (a pair, or its JSON text) when recorded, else [0, 1]."""
    value = model.metadata.get("input_range")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        return 0.0, 1.0
    return (low, high) if np.isfinite([low, high]).all() and low < high else (0.0, 1.0)


def load_model(spec):
    """A shipped model by name, or a caproute model file by path."""
    from .. import models

    shipped = models.available_pretrained()
    if spec in shipped:
        return models.load_pretrained(spec)
    if not os.path.exists(spec):
        raise UsageError(
            f"--model {spec!r} is neither a shipped model ({', '.join(shipped)}) nor an "
            "existing file."
        )
    path = input_file(spec, what="model file")
    head = read_magic(path)
    lower = path.lower()
    if head.startswith(b"PK\x03\x04") or lower.endswith((".pt", ".pth", ".ckpt", ".npz", ".bin")):
        raise WorkError(
            f"model file {path!r} is a checkpoint of another format, not a caproute model; "
            f"convert it once with `caproute convert {os.path.basename(path)} "
            "model.safetensors` and pass the .safetensors file."
        )
    if head.startswith(b"\x89HDF"):
        raise WorkError(
            f"model file {path!r} is an HDF5 (Keras) file, not a caproute model; convert it "
            f"once with `caproute convert {os.path.basename(path)} model.safetensors`."
        )
    return models.load(path)


# ---------------------------------------------------------------------------------- images
class Images:
    """The images gathered from the command line, converted to what the model takes."""

    def __init__(self, geometry, args, out):
        self.geometry, self.args, self.out = geometry, args, out
        self.names, self.arrays = [], []

    def add(self, name_or_names, raw, natural_scale, source):
        """``raw``: (n, h, w, c) as read; ``natural_scale``: what maps its integers to [0, 1]."""
        x = self._convert(raw, natural_scale, source)
        if isinstance(name_or_names, str):
            self.names.append(name_or_names)
        else:
            self.names.extend(name_or_names)
        self.arrays.append(x)

    def stacked(self):
        g = self.geometry
        if not self.arrays:
            return np.zeros((0, g.height, g.width, g.channels), np.float32)
        return np.concatenate(self.arrays, axis=0)

    # -- conversion ----------------------------------------------------------------------
    def _convert(self, raw, natural_scale, source):
        g, args = self.geometry, self.args
        kind = raw.dtype
        if kind == np.bool_ or not (
            np.issubdtype(kind, np.integer) or np.issubdtype(kind, np.floating)
        ):
            raise WorkError(
                f"{source} holds {kind} values; images must hold integers or real numbers."
            )
        factor = args.scale
        if factor is None and np.issubdtype(kind, np.integer):
            factor = natural_scale
            if factor is None:
                raise WorkError(
                    f"{source} holds {kind} integers, whose range caproute cannot guess (only "
                    "uint8 images are divided by 255 by default); pass --scale with the "
                    f"factor that maps them into [{g.low:g}, {g.high:g}] (e.g. --scale "
                    f"1/{np.iinfo(kind).max} for {kind})."
                )
        x = raw.astype(np.float32)
        if factor is not None:
            divisor = round(1 / factor)
            if divisor >= 1 and abs(1 / factor - divisor) <= 1e-9 * divisor:
                x /= np.float32(divisor)  # 1/255 as uint8 images get it from Model.predict
            else:
                x *= np.float32(factor)
        if not np.isfinite(x).all():
            bad = int(np.argmax(~np.isfinite(x).reshape(len(x), -1).all(axis=1)))
            raise WorkError(f"{source} holds NaN or inf (image {bad} of the file).")
        x = self._channels(x, source)
        x = self._size(x, source)
        self._check_range(x, source, kind, factor)
        np.clip(x, g.low, g.high, out=x)  # within the slack of the check: exactly in range
        if args.invert:
            x = (g.low + g.high) - x
        return np.ascontiguousarray(x, dtype=np.float32)

    def _channels(self, x, source):
        g = self.geometry
        c = x.shape[-1]
        if c == g.channels:
            return x
        if g.channels == 3 and c == 1:
            return np.repeat(x, 3, axis=-1)
        if g.channels == 1 and c == 3:
            if np.array_equal(x[..., 0], x[..., 1]) and np.array_equal(x[..., 0], x[..., 2]):
                return x[..., :1]  # grey pixels stored as RGB
            if self.args.grey:
                return (x @ LUMA)[..., None]
            raise WorkError(
                f"{source} is in colour (3 channels), but model {g.name!r} takes "
                f"{g.describe()}; pass --grey to convert colour images to grey."
            )
        raise WorkError(f"{source} has {c} channels, but model {g.name!r} takes {g.describe()}.")

    def _size(self, x, source):
        g = self.geometry
        h, w = x.shape[1:3]
        if (h, w) == (g.height, g.width):
            return x
        if not self.args.resize:
            raise WorkError(
                f"{source} is {h}x{w} pixels (height x width), but model {g.name!r} takes "
                f"{g.describe()}; pass --resize to resize the images (the aspect ratio is not "
                "kept)."
            )
        Image = _pillow("--resize")
        lo, hi = float(x.min()), float(x.max())
        out = np.empty((x.shape[0], g.height, g.width, x.shape[3]), np.float32)
        for i in range(x.shape[0]):
            for c in range(x.shape[3]):
                img = Image.fromarray(np.ascontiguousarray(x[i, :, :, c]), mode="F")
                img = img.resize((g.width, g.height), Image.Resampling.LANCZOS)
                out[i, :, :, c] = np.asarray(img, dtype=np.float32)
        return np.clip(out, lo, hi)  # Lanczos overshoots at edges; keep the original range

    def _check_range(self, x, source, kind, factor):
        g = self.geometry
        low, high = float(x.min(initial=np.inf)), float(x.max(initial=-np.inf))
        slack = RANGE_SLACK * max(1.0, g.high - g.low)
        if low >= g.low - slack and high <= g.high + slack:
            return
        found = f"{source} has values in [{low:g}, {high:g}]"
        if factor is not None:
            found += f" after scaling by {factor:g}"
        hint = "pass --scale with the factor that maps them into the model's range"
        if factor is None and np.issubdtype(kind, np.floating) and low >= 0:
            for top, text in ((255.0, "1/255"), (65535.0, "1/65535")):
                if high <= top * (1 + 1e-6) * g.high:
                    hint = f"they look like {int(top)}-level pixels: pass --scale {text}"
                    break
        raise WorkError(
            f"{found}, but model {g.name!r} takes values in [{g.low:g}, {g.high:g}] (the range "
            f"it was trained on); {hint}."
        )


def _pillow(option):
    try:
        from PIL import Image
    except ImportError:
        raise WorkError(
            f"{option} needs Pillow: pip install 'caproute[images]' (or pip install pillow)."
        ) from None
    return Image


IMAGE_EXTENSIONS = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".pgm",
    ".ppm",
    ".pbm",
    ".pnm",
)


def read_image_file(path):
    """One image through Pillow: (1, h, w, c) raw values and the factor that maps them to
    [0, 1] (None for float images)."""
    Image = _pillow(f"reading the image file {path!r}")
    from PIL import UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return _pixels(img, path)
    except UnidentifiedImageError:
        raise WorkError(
            f"{path!r} is not an image file Pillow can read (PNG, JPEG, BMP, GIF, TIFF, WebP, "
            "...), nor a .npy or IDX file."
        ) from None
    except Image.DecompressionBombError as exc:
        raise WorkError(f"image {path!r} is too large to read safely: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise WorkError(f"image {path!r} is damaged or truncated: {exc}") from None


def _pixels(img, path):
    mode = img.mode
    if mode.startswith("I;16"):
        return np.asarray(img).astype(np.uint16)[None, :, :, None], 1 / 65535
    if mode == "I":
        arr = np.asarray(img)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise WorkError(
                f"image {path!r} holds 32-bit integer pixels in [{arr.min()}, {arr.max()}]; "
                "save it as an 8- or 16-bit image, or as a .npy with --scale."
            )
        return arr.astype(np.uint16)[None, :, :, None], 1 / 65535
    if mode == "F":
        return np.asarray(img, dtype=np.float32)[None, :, :, None], None
    if mode in ("1", "L", "LA", "La"):
        return np.asarray(img.convert("L"))[None, :, :, None], 1 / 255
    if mode in ("P", "PA"):  # through RGBA: a palette's transparency is an alpha channel
        img = img.convert("RGBA")
    # RGBA, CMYK, YCbCr, ...: RGB (an alpha channel is dropped)
    return np.asarray(img.convert("RGB"))[None], 1 / 255


def gather(args, geometry, out):
    """Read every IMAGES argument into an :class:`Images`."""
    images = Images(geometry, args, out)
    files = []
    for spec in args.images:
        if os.path.isdir(spec):
            entries = sorted(e for e in os.listdir(spec) if not e.startswith("."))
            found = [
                os.path.join(spec, e)
                for e in entries
                if os.path.isfile(os.path.join(spec, e)) and e.lower().endswith(IMAGE_EXTENSIONS)
            ]
            skipped = len(entries) - len(found)
            if not found:
                raise WorkError(
                    f"folder {spec!r} holds no image files ({', '.join(IMAGE_EXTENSIONS[:4])}, "
                    "...); give .npy or IDX files by name."
                )
            if skipped:
                out.notice(f"caproute: {spec}: skipped {skipped} entries that are not image files")
            files += [(f, "image") for f in found]
        else:
            path = input_file(spec, what="image file")
            head = read_magic(path)
            if head.startswith(NPY_MAGIC) or path.lower().endswith(".npy"):
                files.append((path, "npy"))
            elif looks_like_idx(path, head):
                files.append((path, "idx"))
            else:
                files.append((path, "image"))
    with out.bar(total=len(files), desc="reading images", unit=" files") as bar:
        for path, kind in files:
            if kind == "image":
                raw, scale = read_image_file(path)
                images.add(path, raw, scale, f"image {path!r}")
            else:
                raw = _read_array(path, kind)
                names = [f"{path}[{i}]" for i in range(raw.shape[0])]
                scale = 1 / 255 if raw.dtype == np.uint8 else None
                images.add(names, raw, scale, f"{'.npy' if kind == 'npy' else 'IDX'} file {path!r}")
            bar.update(1)
    return images


def _read_array(path, kind):
    """(n, h, w, c) from a .npy or IDX file."""
    if kind == "npy":
        arr = load_npy(path, what="image file")
        what = ".npy file"
    else:
        from ..datasets import read_idx

        try:
            arr = read_idx(path)
        except (ValueError, OSError, EOFError) as exc:
            raise WorkError(f"IDX file {path!r} could not be read: {exc}") from None
        what = "IDX file"
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise WorkError(
            f"{what} {path!r} holds an array of shape {tuple(arr.shape)}; expected images of "
            "shape (n, H, W) or (n, H, W, C) (or one (H, W) image)."
        )
    if arr.shape[-1] not in (1, 3) and arr.shape[1] in (1, 3):
        raise WorkError(
            f"{what} {path!r} holds an array of shape {tuple(arr.shape)}, which looks "
            "channels-first (n, C, H, W); save it as (n, H, W, C) (np.moveaxis(a, 1, -1))."
        )
    if arr.shape[0] == 0:
        raise WorkError(f"{what} {path!r} holds no images (shape {tuple(arr.shape)}).")
    return arr


# ---------------------------------------------------------------------------------- labels
def read_labels(path, names, classes, n_classes):
    """True classes for the images ``names``: an int64 array in [0, n_classes)."""
    path = input_file(path, what="labels file")
    head = read_magic(path)
    if head.startswith(NPY_MAGIC) or path.lower().endswith(".npy"):
        values = _integers(load_npy(path, what="labels file"), path)
    elif looks_like_idx(path, head):
        from ..datasets import read_idx

        try:
            values = _integers(read_idx(path), path)
        except ValueError as exc:
            raise WorkError(f"labels file {path!r} could not be read as IDX: {exc}") from None
    else:
        values = _text_labels(path, names, classes)
    if len(values) != len(names):
        raise WorkError(
            f"labels file {path!r} holds {len(values)} labels for {len(names)} images; give one "
            "label per image, in the order of the images."
        )
    bad = (values < 0) | (values >= n_classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise WorkError(
            f"labels file {path!r}: label {int(values[i])} (entry {i}) is not a class of the "
            f"model, which has classes 0 to {n_classes - 1}."
        )
    return values


def _integers(arr, path):
    arr = np.asarray(arr)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise WorkError(
            f"labels file {path!r} holds an array of shape {tuple(arr.shape)}; expected one "
            "label per image (a 1-D array)."
        )
    if np.issubdtype(arr.dtype, np.floating):
        if not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
            raise WorkError(f"labels file {path!r} holds non-integer values; expected classes.")
    elif not np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
        raise WorkError(f"labels file {path!r} holds {arr.dtype} values; expected integers.")
    return arr.astype(np.int64)


def _text_labels(path, names, classes):
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise WorkError(
            f"labels file {path!r} is neither text (UTF-8) nor a .npy or IDX file."
        ) from None
    rows = [r for r in csv.reader(text.splitlines(), delimiter=_delimiter(text)) if r]
    rows = [[c.strip() for c in r] for r in rows]
    lookup = {c: i for i, c in enumerate(classes or [])}

    def label(cell, line):
        if cell in lookup:
            return lookup[cell]
        try:
            return int(cell)
        except ValueError:
            return None if line == 0 else _bad_label(path, cell, line, classes)

    if rows and len(rows[0]) >= 2:  # image,label rows: matched to the images by name
        wanted = {}
        for line, row in enumerate(rows):
            value = label(row[-1], line)
            if value is None:
                continue  # a header row
            wanted[row[0]] = value
            wanted.setdefault(os.path.basename(row[0]), value)
        values = []
        for name in names:
            key = name if name in wanted else os.path.basename(name)
            if key not in wanted:
                raise WorkError(f"labels file {path!r} has no row for image {name!r}.")
            values.append(wanted[key])
        return np.asarray(values, dtype=np.int64)
    values = []
    for line, row in enumerate(rows):
        if len(row) != 1:
            raise WorkError(f"labels file {path!r}, line {line + 1}: expected one label.")
        value = label(row[0], line)
        if value is not None:
            values.append(value)
    return np.asarray(values, dtype=np.int64)


def _bad_label(path, cell, line, classes):
    names = f" or a class name ({', '.join(classes)})" if classes else ""
    raise WorkError(f"labels file {path!r}, line {line + 1}: {cell!r} is not a class index{names}.")


def _delimiter(text):
    first = text.splitlines()[0] if text else ""
    for d in (",", "\t", ";"):
        if d in first:
            return d
    return ","


# ------------------------------------------------------------------------------- the command
def run(args, out):
    from .._backend import to_numpy

    model = load_model(args.model)
    geometry = Geometry(model, args.model)
    images = gather(args, geometry, out)
    names, x = images.names, images.stacked()
    n = x.shape[0]
    k = model.n_classes
    classes = model.classes
    labels = read_labels(args.labels, names, classes, k) if args.labels is not None else None
    if args.output is not None:
        output_file(args.output)
    _warn_background(x, geometry, model, out, args)
    out.notice(
        f"caproute predict: {n} image{'s' if n != 1 else ''} with model {geometry.name!r} "
        f"(backend {args.backend!r})"
    )
    proba = np.zeros((n, k), np.float32)
    with compiling_notice(out):
        model.predict_proba(x[:1], backend=args.backend, data_format="NHWC")  # compile, warm up
    with out.bar(total=n, desc="classifying", unit=" images") as bar:
        for start in range(0, n, args.batch):
            stop = min(n, start + args.batch)
            batch = x[start:stop]
            proba[start:stop] = to_numpy(
                model.predict_proba(
                    batch, batch_size=args.batch, backend=args.backend, data_format="NHWC"
                )
            )
            bar.update(stop - start)
    pred = proba.argmax(axis=1)
    doc = {
        "model": geometry.name,
        "classes": classes,
        "n_images": n,
        "predictions": [
            {
                "image": name,
                "class": int(c),
                "name": classes[c] if classes else None,
                "probabilities": row,
                **({"true": int(labels[i])} if labels is not None else {}),
            }
            for i, (name, c, row) in enumerate(zip(names, pred, proba, strict=True))
        ],
        "output": args.output,
    }
    if labels is not None:
        doc["accuracy"] = float(np.mean(pred == labels)) if n else None
        doc["confusion_matrix"] = confusion_matrix(labels, pred, k)
    if args.output is not None:
        write_csv(args.output, names, pred, proba, classes, labels)
        out.print(f"wrote the predictions for {n} images to {args.output}")
    else:
        out.print(prediction_table(names, pred, proba, classes))
    if labels is not None:
        out.print()
        out.print(f"accuracy: {doc['accuracy']:.2%} ({int(np.sum(pred == labels))} of {n} images)")
        out.print(confusion_table(doc["confusion_matrix"], classes))
    out.document(doc)
    return 0


def _warn_background(x, geometry, model, out, args):
    """Warn when a Fashion-MNIST model gets dark objects on light backgrounds."""
    trained_on = str(model.metadata.get("pretrained", ""))
    if args.invert or x.size == 0 or "fashion-mnist" not in trained_on:
        return
    border = np.concatenate(
        [
            x[:, 0].reshape(len(x), -1),
            x[:, -1].reshape(len(x), -1),
            x[:, :, 0].reshape(len(x), -1),
            x[:, :, -1].reshape(len(x), -1),
        ],
        axis=1,
    ).mean(axis=1)
    light = int(np.sum(border > (geometry.low + geometry.high) / 2))
    if light > len(x) / 2:
        out.warning(
            f"{light} of {len(x)} images have a light background, but model "
            f"{geometry.name!r} was trained on light objects on a black background "
            "(Fashion-MNIST); pass --invert if your images are dark objects on white."
        )


def prediction_table(names, pred, proba, classes):
    k = proba.shape[1]
    width = max([5, *(len(n) for n in names)])
    cname = max([4, *(len(c) for c in classes)]) if classes else 4
    head = f"{'image':<{width}}  {'class':>5}  {'name':<{cname}}  {'p':>6}"
    show_all = k <= MAX_TABLE_CLASSES
    if show_all:
        head += "  " + " ".join(f"{'p' + str(j):>6}" for j in range(k))
    lines = [head]
    for name, c, row in zip(names, pred, proba, strict=True):
        label = classes[c] if classes else "-"
        line = f"{name:<{width}}  {int(c):>5}  {label:<{cname}}  {row[c]:>6.3f}"
        if show_all:
            line += "  " + " ".join(f"{v:>6.3f}" for v in row)
        lines.append(line)
    return "\n".join(lines)


def write_csv(path, names, pred, proba, classes, labels):
    header = ["image", "class", "name", *(f"p_{j}" for j in range(proba.shape[1]))]
    if labels is not None:
        header.append("true")
    with atomic_write(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for i, (name, c, row) in enumerate(zip(names, pred, proba, strict=True)):
            cells = [name, int(c), classes[c] if classes else "", *(f"{v:.6g}" for v in row)]
            if labels is not None:
                cells.append(int(labels[i]))
            writer.writerow(cells)


def confusion_matrix(true, pred, k):
    m = np.zeros((k, k), dtype=np.int64)
    np.add.at(m, (true, pred), 1)
    return m.tolist()


def confusion_table(matrix, classes):
    k = len(matrix)
    cell = max(4, len(str(max(max(r) for r in matrix))) + 1)
    names = [f"{i} {classes[i]}" if classes else str(i) for i in range(k)]
    width = max(len(n) for n in names)
    lines = ["confusion matrix (rows: true class, columns: predicted class):"]
    lines.append(" " * width + "".join(f"{j:>{cell}}" for j in range(k)))
    for name, row in zip(names, matrix, strict=True):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>{cell}}" for v in row))
    return "\n".join(lines)
