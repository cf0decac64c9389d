"""A chain of layers with named weights: description, summary, batched inference."""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .._backend import (
    Array,
    array_namespace,
    dask_arrays,
    device,
    is_array,
    resolve_backend,
    to_device,
)
from .._lib.validation import check_int, check_plain_array, shape_str
from .errors import WeightsMismatchError
from .layers import LAYERS, Layer

FORMAT = "caproute-model"
FORMAT_VERSION = 1
FLOAT_DTYPES = ("float32", "float64")
# the keyword arguments of predict_scores, which predict_proba and predict pass on
PREDICT_OPTIONS = ("batch_size", "backend", "data_format", "dtype", "progress")


class Model:
    """A capsule network for inference: layers applied in order, weights held by name.

    Weights are NumPy arrays keyed ``"<layer>.<parameter>"`` (see :meth:`parameter_shapes`);
    inference converts them once per namespace, device and dtype and caches the result.

    Parameters
    ----------
    layers : list of Layer
        Applied in order; names must be unique.
    input_shape : tuple of int
        Per-sample input shape in the first layer's ``data_format``: (H, W, C) or (C, H, W).
    classes : sequence of str, optional
        Class names, in output order.
    name : str, default="model"
        Shown by :meth:`summary` and in error messages.

    Examples
    --------
    >>> import numpy as np
    >>> from caproute import models
    >>> net = models.capsnet(conv_channels=16, primary_types=4, class_dim=8)
    >>> net = net.initialize(random_state=0)
    >>> print(net.summary())  # doctest: +NORMALIZE_WHITESPACE
    Model 'capsnet'  input (28, 28, 1)  NHWC
    layer         type         output shape                parameters
    conv1         Conv2D       (20, 20, 16)                     1,312
    primary_caps  PrimaryCaps  (144, 8)                        41,504
    class_caps    DenseCaps    (10, 8)                         92,160
    total                                                     134,976
    >>> images = np.zeros((3, 28, 28), dtype=np.uint8)
    >>> net.predict_proba(images).shape
    (3, 10)
    """

    def __init__(
        self,
        layers: Iterable[Layer],
        input_shape: Sequence[int],
        *,
        classes: Sequence[str] | None = None,
        name: str = "model",
    ) -> None:
        layers = list(layers)
        if not layers or not all(isinstance(layer, Layer) for layer in layers):
            raise TypeError("`layers` must be a non-empty list of caproute.models layers.")
        names = [layer.name for layer in layers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"layer names must be unique; repeated: {dupes}.")
        self.layers = layers
        self.input_shape = tuple(check_int(s, name="input_shape", min_value=1) for s in input_shape)
        self.name = str(name)
        self.classes = None if classes is None else [str(c) for c in classes]
        self._shapes = []  # (input shape, output shape) per layer
        shape = self.input_shape
        for layer in layers:
            layer.check_input_shape(shape)
            out = layer.output_shape(shape)
            self._shapes.append((shape, out))
            shape = out
        if self.classes is not None and len(self.classes) != self.n_classes:
            raise ValueError(
                f"`classes` has {len(self.classes)} names for {self.n_classes} outputs."
            )
        self._weights = None if self.parameter_shapes() else {}
        self._cache = {}
        self.metadata = {}

    # -- description ---------------------------------------------------------------------------
    @property
    def data_format(self) -> str:
        """Layout of the images the model takes: ``"NHWC"`` or ``"NCHW"``.

        The first layer's ``data_format`` (``"NHWC"`` when it has none).
        """
        return getattr(self.layers[0], "data_format", "NHWC")

    @property
    def output_shape(self) -> tuple:
        """Per-sample shape of the last layer's output.

        A tuple of int, or for matrix capsules a pair of tuples (pose shape, activation shape).
        """
        return self._shapes[-1][1]

    @property
    def n_classes(self) -> int:
        """Number of classes: the last layer's number of output capsules or channels."""
        out = self.output_shape
        return out[0][0] if isinstance(out[0], tuple) else out[0]

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the parameters of every layer, in layer order.

        Returns
        -------
        dict of str to tuple of int
            ``{"<layer>.<parameter>": shape}`` for every parameter.
        """
        shapes = {}
        for layer, (in_shape, _) in zip(self.layers, self._shapes, strict=True):
            for pname, shape in layer.parameter_shapes(in_shape).items():
                shapes[f"{layer.name}.{pname}"] = tuple(shape)
        return shapes

    def n_parameters(self) -> int:
        """Count the parameters: the number of scalars in all weights and biases.

        Returns
        -------
        int
            The sum over :meth:`parameter_shapes` of the product of each shape.
        """
        return sum(math.prod(s) for s in self.parameter_shapes().values())

    def summary(self) -> str:
        """A table of layers: name, type, per-sample output shape, parameter count.

        Returns
        -------
        str
            The table, one line per layer, a header and a total line.
        """
        shapes = self.parameter_shapes()
        rows = []
        for layer, (_, out) in zip(self.layers, self._shapes, strict=True):
            shown = out[0] if isinstance(out[0], tuple) else out
            count = sum(math.prod(s) for k, s in shapes.items() if k.split(".")[0] == layer.name)
            rows.append((layer.name, type(layer).__name__, str(tuple(shown)), f"{count:,}"))
        w0 = max(len("layer"), *(len(r[0]) for r in rows))
        w1 = max(len("type"), *(len(r[1]) for r in rows))
        lines = [
            f"Model {self.name!r}  input {self.input_shape}  {self.data_format}",
            f"{'layer':<{w0}}  {'type':<{w1}}  {'output shape':<22}  {'parameters':>14}",
        ]
        lines += [f"{a:<{w0}}  {b:<{w1}}  {c:<22}  {d:>14}" for a, b, c, d in rows]
        lines.append(f"{'total':<{w0}}  {'':<{w1}}  {'':<22}  {self.n_parameters():>14,}")
        return "\n".join(lines)

    def __getstate__(self):
        # the cache holds converted copies of the weights (float64, CuPy on a GPU): pickling
        # (e.g. to Dask workers) sends the host weights once and each process converts anew
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state

    def __repr__(self):
        return (
            f"<caproute Model {self.name!r}: {len(self.layers)} layers, "
            f"{self.n_parameters():,} parameters>"
        )

    def get_config(self) -> dict[str, Any]:
        """The architecture as JSON-able data; :meth:`from_config` rebuilds the model.

        Returns
        -------
        dict
            Format name and version, name, input shape, class names, and every layer's class
            and :meth:`Layer.get_config`; no weights.
        """
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "name": self.name,
            "input_shape": list(self.input_shape),
            "classes": self.classes,
            "layers": [
                {"class": type(layer).__name__, "config": layer.get_config()}
                for layer in self.layers
            ],
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Model:
        """Rebuild a model (without weights) from :meth:`get_config`'s output.

        Parameters
        ----------
        config : dict
            A description written by :meth:`get_config` (e.g. read back from JSON).

        Returns
        -------
        Model
            The same architecture, without weights.

        Raises
        ------
        ValueError
            If ``config`` is not a caproute model description of a supported version, or names
            an unknown layer class or invalid layer arguments.
        """
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise ValueError(
                f"not a caproute model description: expected a dict with "
                f"format={FORMAT!r}; got {str(config)[:200]!r}."
            )
        if config.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"caproute model description version {config.get('version')!r} is "
                f"not supported (this caproute reads version {FORMAT_VERSION})."
            )
        layers = []
        for i, spec in enumerate(config.get("layers") or []):
            kind = spec.get("class") if isinstance(spec, dict) else None
            if kind not in LAYERS:
                raise ValueError(
                    f"layer {i} of the description has unknown class {kind!r}; "
                    f"known: {sorted(LAYERS)}."
                )
            try:
                layers.append(_build_layer(LAYERS[kind], spec.get("config") or {}))
            except TypeError as exc:
                raise ValueError(
                    f"layer {i} ({kind}) of the description is invalid: {exc}"
                ) from None
        return cls(
            layers,
            tuple(config["input_shape"]),
            classes=config.get("classes"),
            name=config.get("name", "model"),
        )

    # -- weights -------------------------------------------------------------------------------
    @property
    def weights_loaded(self) -> bool:
        """Whether the model holds weights (always True for a model without parameters)."""
        return self._weights is not None

    def get_weights(self) -> dict[str, np.ndarray]:
        """A copy of the weights, keyed by name.

        Returns
        -------
        dict of str to numpy.ndarray
            ``{"<layer>.<parameter>": array}`` in layer order, copies of the host arrays.

        Raises
        ------
        RuntimeError
            If the model has no weights yet.
        """
        self._require_weights()
        return {k: v.copy() for k, v in self._weights.items()}

    def set_weights(self, arrays: Mapping[str, Array]) -> Model:
        """Load weights given by name, replacing any the model holds.

        Every problem -- a missing or unexpected name, a wrong shape, a non-float dtype, a
        non-finite value -- is collected and reported in one :class:`WeightsMismatchError`.

        Parameters
        ----------
        arrays : mapping of str to array
            ``{"<layer>.<parameter>": array}`` for every name of :meth:`parameter_shapes`:
            NumPy or any Array API arrays, float32 or float64, kept on the host in their dtype.

        Returns
        -------
        Model
            The model itself.

        Raises
        ------
        WeightsMismatchError
            Listing every missing, unexpected, misshapen, non-float or non-finite tensor.
        """
        expected = self.parameter_shapes()
        problems = []
        clean = {}
        for key in expected:
            if key not in arrays:
                problems.append(f"missing tensor {key!r} of shape {shape_str(expected[key])}")
        for key, value in arrays.items():
            if key not in expected:
                problems.append(f"unexpected tensor {key!r}")
                continue
            arr = np.asarray(to_host(value))
            if arr.dtype.name not in FLOAT_DTYPES:
                problems.append(
                    f"tensor {key!r} has dtype {arr.dtype.name}; expected float32 or float64"
                )
            elif tuple(arr.shape) != expected[key]:
                problems.append(
                    f"tensor {key!r} has shape {shape_str(arr.shape)}; "
                    f"expected {shape_str(expected[key])}"
                )
            elif not np.all(np.isfinite(arr)):
                problems.append(f"tensor {key!r} holds NaN or inf")
            else:
                clean[key] = np.ascontiguousarray(arr)
        if problems:
            raise WeightsMismatchError(self.name, problems)
        self._weights = {k: clean[k] for k in expected}
        self._cache = {}
        return self

    def initialize(
        self, random_state: int | np.random.Generator | None = None, dtype: str = "float32"
    ) -> Model:
        """Set random weights (normal, fan-in scaled; biases 0), for tests and experiments.

        Parameters
        ----------
        random_state : int, numpy.random.Generator or None, default=None
            Seed or generator of :func:`numpy.random.default_rng`; None draws a fresh seed.
        dtype : {"float32", "float64"}, default="float32"
            Dtype of the weights.

        Returns
        -------
        Model
            The model itself.
        """
        rng = np.random.default_rng(random_state)
        arrays = {}
        for layer, (in_shape, _) in zip(self.layers, self._shapes, strict=True):
            for pname, shape in layer.parameter_shapes(in_shape).items():
                scale = layer.initializer_scale(pname, shape)
                arrays[f"{layer.name}.{pname}"] = (scale * rng.standard_normal(shape)).astype(dtype)
        return self.set_weights(arrays)

    def _require_weights(self):
        if self._weights is None:
            raise RuntimeError(
                f"model {self.name!r} has no weights: load them with set_weights, "
                "caproute.models.load or an importer, or call initialize()."
            )

    def _params_for(self, xp, dev, dtype):
        key = (xp.__name__, str(dev), str(dtype))
        params = self._cache.get(key)
        if params is None:
            # built whole, then published: threads sharing the model (Dask's threaded scheduler)
            # never see a half-converted set; one converted copy is kept, the last one asked for
            params = {
                name: xp.astype(to_device(arr, xp, device=dev), dtype, copy=False)
                for name, arr in self._weights.items()
            }
            self._cache = {key: params}
        return [
            {k.split(".", 1)[1]: v for k, v in params.items() if k.split(".", 1)[0] == layer.name}
            for layer in self.layers
        ]

    # -- inference -----------------------------------------------------------------------------
    def forward(self, x: Array, *, backend: str | None = None) -> Array | tuple[Array, Array]:
        """Run every layer on a batch already in the model's layout and a float dtype.

        Parameters
        ----------
        x : array of shape (batch, *input_shape)
            The batch, float32 or float64; the weights are used in its dtype and namespace.
        backend : {"auto", "numpy", "numba", "cupy"} or None
            Where to run; None takes the configured backend.

        Returns
        -------
        output : array or tuple of arrays
            The last layer's output (for DenseCaps the parent capsules (batch, n_out, out_dim);
            for ClassMatrixCaps the pair (pose, activation)).
        """
        self._require_weights()
        x = _as_input_array(x)
        xp = array_namespace(x)
        backend, xp, move = resolve_backend(xp, backend)
        if move:
            x = to_device(x, xp)
        self._check_batch(x, xp)
        params = self._params_for(xp, device(x), x.dtype)
        for layer, p in zip(self.layers, params, strict=True):
            x = layer.forward(x, p, xp=xp, backend=backend)
        return x

    def _check_batch(self, x, xp):
        if x.dtype not in (xp.float32, xp.float64):
            raise TypeError(f"`x` must be float32 or float64; got dtype {x.dtype}.")
        if (
            tuple(int(s) for s in x.shape[1:]) != self.input_shape
            or x.ndim != len(self.input_shape) + 1
        ):
            raise ValueError(
                f"`x` must have shape (batch, {', '.join(map(str, self.input_shape))}) "
                f"({self.data_format}); got shape {shape_str(x.shape)}."
            )

    def predict_scores(
        self,
        images: Array,
        *,
        batch_size: int = 100,
        backend: str | None = None,
        data_format: str | None = None,
        dtype: str = "float32",
        progress: bool = False,
    ) -> Array:
        """Class scores: capsule lengths (dynamic routing) or activations (EM routing).

        Parameters
        ----------
        images : array of shape (n, H, W), (n, H, W, C) or (n, C, H, W)
            Integer images are scaled by 1/255 (uint8 pixels to [0, 1]); float images are used
            as given. A 3-D array is taken as single-channel. A ``dask.array.Array`` is
            classified lazily, block by block (see Notes).
        batch_size : int, default=100
            Images per forward pass (bounds memory; for a Dask array, within each block).
        backend : {"auto", "numpy", "numba", "cupy"} or None
            Where to run; ``"cupy"`` moves the images to the GPU. None takes the configured one.
        data_format : {"NHWC", "NCHW"} or None
            Layout of 4-D ``images``; None means the model's own.
        dtype : {"float32", "float64"}, default="float32"
            Precision of the computation.
        progress : bool, default=False
            Print a progress bar with images per second on stderr (not for a Dask array:
            Dask's own progress bars show its blocks).

        Returns
        -------
        scores : array of shape (n, n_classes)
            In the namespace the computation ran in (CuPy for backend="cupy"); for a Dask
            array of images, a lazy Dask array chunked along the batch axis as ``images`` is.

        Notes
        -----
        A ``dask.array.Array`` of images (NumPy or CuPy blocks) gives a lazy Dask array
        at once: the options and the images' shape and dtype are checked when it is built,
        with the messages NumPy images get, and each block of images is classified when the
        result is computed (by this method on the block: NaN or inf in float images raise
        then), in parallel by Dask's scheduler or on a ``dask.distributed`` cluster. Blocks
        split the batch axis only: images chunked along their pixel or channel axes are
        rechunked into whole images first. The model enters the task graph once (its
        weights travel once to each worker, not once per block) and as it is at the call:
        changing its weights later does not change a result already built. docs/models.md
        ("Classifying a Dask array") shows it on a cluster.
        """
        if dask_arrays.is_dask_array(images):
            return self._predict_dask(
                "predict_scores",
                images,
                batch_size=batch_size,
                backend=backend,
                data_format=data_format,
                dtype=dtype,
                progress=progress,
            )
        self._require_weights()
        batch_size = _check_predict_options(batch_size, dtype)
        images = _as_input_array(images, name="images")
        xp = array_namespace(images)
        backend, xp, move = resolve_backend(xp, backend)
        if move:
            images = to_device(images, xp)
        images = self._prepare(images, xp, data_format, getattr(xp, dtype))
        n = int(images.shape[0])
        out = []
        bar = _Progress(n) if progress else None
        for start in range(0, n, batch_size):
            result = self.forward(images[start : min(n, start + batch_size), ...], backend=backend)
            out.append(self.layers[-1].class_scores(result, xp=xp))
            if bar:
                bar.update(min(n, start + batch_size))
        if bar:
            bar.close()
        return xp.concat(out, axis=0) if out else xp.zeros((0, self.n_classes), dtype=images.dtype)

    def predict_proba(self, images: Array, **kwargs: Any) -> Array:
        """Class scores normalised to sum to 1 per image.

        Parameters
        ----------
        images : array of shape (n, H, W), (n, H, W, C) or (n, C, H, W)
            As in :meth:`predict_scores` (a ``dask.array.Array`` included).
        **kwargs
            ``batch_size``, ``backend``, ``data_format``, ``dtype``, ``progress``, as in
            :meth:`predict_scores`.

        Returns
        -------
        proba : array of shape (n, n_classes)
            Non-negative, summing to 1 per image (uniform where every score is 0); lazy for a
            Dask array of images, as in :meth:`predict_scores`.
        """
        if dask_arrays.is_dask_array(images):
            return self._predict_dask(
                "predict_proba", images, **_predict_options("predict_proba", kwargs)
            )
        scores = self.predict_scores(images, **kwargs)
        xp = array_namespace(scores)
        total = xp.sum(scores, axis=1, keepdims=True)
        # all-zero scores (possible only in degenerate models) give the uniform distribution
        return xp.where(total > 0, scores / xp.where(total > 0, total, 1.0), 1.0 / self.n_classes)

    def predict(self, images: Array, **kwargs: Any) -> Array:
        """Predict the class of each image: the one with the highest score.

        Parameters
        ----------
        images : array of shape (n, H, W), (n, H, W, C) or (n, C, H, W)
            As in :meth:`predict_scores` (a ``dask.array.Array`` included).
        **kwargs
            ``batch_size``, ``backend``, ``data_format``, ``dtype``, ``progress``, as in
            :meth:`predict_scores`.

        Returns
        -------
        labels : array of shape (n,)
            Class indices (int64), in the namespace the computation ran in; lazy for a Dask
            array of images, as in :meth:`predict_scores`.
        """
        if dask_arrays.is_dask_array(images):
            return self._predict_dask("predict", images, **_predict_options("predict", kwargs))
        scores = self.predict_scores(images, **kwargs)
        return array_namespace(scores).argmax(scores, axis=1)

    def _predict_dask(
        self,
        method,
        images,
        *,
        batch_size=100,
        backend=None,
        data_format=None,
        dtype="float32",
        progress=False,
    ):
        """The lazy result of ``method`` for a Dask array of images: everything that needs no
        pixel value is checked now, the rest by ``method`` on each block when computed."""
        self._require_weights()
        batch_size = _check_predict_options(batch_size, dtype)
        if progress:
            raise ValueError(
                "`progress` is not available for a Dask array of `images`: use Dask's progress "
                "bars (dask.diagnostics.ProgressBar, or distributed.progress on a cluster)."
            )
        check_plain_array(dask_arrays.block_meta(images), name="images")
        unknown = [axis for axis in dask_arrays.unknown_axes(images) if axis > 0]
        if unknown:
            raise ValueError(
                f"`images` has unknown sizes along axes {unknown} (shape "
                f"{_shape_text(images.shape)}); call images.compute_chunk_sizes() first."
            )
        xp = dask_arrays.block_namespace(images)
        self._check_images(images.shape, images.dtype, xp, data_format)
        # the backend as configured now (the blocks may run in other threads or processes);
        # its namespace is the blocks' output's (CuPy for "cupy")
        backend, out_xp, _ = resolve_backend(xp, backend)
        scores = out_xp.zeros((0, self.n_classes), dtype=getattr(out_xp, dtype))
        snapshot = copy.copy(self)  # the weights as they are now; a fresh, empty cache
        snapshot._cache = {}
        return dask_arrays.map_batches(
            _predict_block,
            images,
            snapshot,
            method,
            {
                "batch_size": batch_size,
                "backend": backend,
                "data_format": data_format,
                "dtype": dtype,
            },
            shared_token=("caproute-model", self.get_config(), self._weights),
            out_tail=() if method == "predict" else (self.n_classes,),
            meta=out_xp.argmax(scores, axis=1) if method == "predict" else scores,
            name="caproute-" + method.replace("_", "-"),
        )

    def _check_images(self, shape, kind, xp, data_format):
        """Check what the images' shape and dtype say (no pixel value is read); return the
        layout they are in."""
        fmt = self.data_format if data_format is None else data_format
        if fmt not in ("NHWC", "NCHW"):
            raise ValueError(f"`data_format` must be 'NHWC', 'NCHW' or None; got {data_format!r}.")
        if xp.isdtype(kind, "bool") or not xp.isdtype(kind, ("integral", "real floating")):
            raise TypeError(f"`images` must hold integers (0-255) or floats; got dtype {kind}.")
        full = tuple(shape)
        if len(full) == 3:
            full = (*full, 1) if fmt == "NHWC" else (full[0], 1, *full[1:])
        if len(full) != 4:
            raise ValueError(
                "`images` must be 3-D (n, H, W) or 4-D "
                f"({'n, H, W, C' if fmt == 'NHWC' else 'n, C, H, W'}); "
                f"got shape {_shape_text(shape)}."
            )
        if fmt != self.data_format:
            full = tuple(full[i] for i in ((0, 2, 3, 1) if fmt == "NCHW" else (0, 3, 1, 2)))
        if tuple(int(s) for s in full[1:]) != self.input_shape:
            raise ValueError(
                f"`images` must be {self.input_shape} per image in the model's layout "
                f"({self.data_format}); got {tuple(int(s) for s in full[1:])}"
                + ("" if data_format is None else f" after reading them as {fmt}")
                + "."
            )
        return fmt

    def _prepare(self, images, xp, data_format, dtype):
        fmt = self._check_images(images.shape, images.dtype, xp, data_format)
        kind = images.dtype
        if images.ndim == 3:
            images = xp.expand_dims(images, axis=-1 if fmt == "NHWC" else 1)
        if fmt != self.data_format:
            images = xp.permute_dims(images, (0, 2, 3, 1) if fmt == "NCHW" else (0, 3, 1, 2))
        if xp.isdtype(kind, "integral"):
            return xp.astype(images, dtype) / 255.0
        images = xp.astype(images, dtype)
        if not bool(xp.all(xp.isfinite(images))):
            raise ValueError("`images` holds NaN or inf.")
        return images


def _check_predict_options(batch_size, dtype):
    """Check predict_scores' ``batch_size`` and ``dtype``; return the batch size as an int."""
    batch_size = check_int(batch_size, name="batch_size", min_value=1)
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"`dtype` must be 'float32' or 'float64'; got {dtype!r}.")
    return batch_size


def _predict_options(method, kwargs):
    """``kwargs`` of predict_proba or predict, refused (as Python would) unless they are
    predict_scores' keyword arguments."""
    for key in kwargs:
        if key not in PREDICT_OPTIONS:
            raise TypeError(
                f"Model.{method}() got an unexpected keyword argument {key!r}; it takes "
                f"{', '.join(PREDICT_OPTIONS)}."
            )
    return kwargs


def _predict_block(block, model, method, options):
    """One block of a Dask array of images through ``model.<method>`` (run by Dask)."""
    return getattr(model, method)(block, **options)


def _shape_text(shape):
    """``shape_str``, with Dask's unknown sizes (NaN) written as ``nan``."""
    if any(isinstance(s, float) and math.isnan(s) for s in shape):
        sizes = ["nan" if isinstance(s, float) and math.isnan(s) else str(int(s)) for s in shape]
        return "(" + ", ".join(sizes) + ("," if len(sizes) == 1 else "") + ")"
    return shape_str(shape)


def _build_layer(cls, config):
    config = dict(config)
    args = []
    # the positional arguments of each layer, in order
    for key in (
        "activation",
        "filters",
        "kernel_size",
        "n_types",
        "dim",
        "n_out",
        "out_dim",
        "out_types",
        "n_classes",
    ):
        if key in config and _is_positional(cls, key):
            args.append(config.pop(key))
    return cls(*args, **config)


def _is_positional(cls, key):
    import inspect

    param = inspect.signature(cls.__init__).parameters.get(key)
    return param is not None and param.kind is param.POSITIONAL_OR_KEYWORD


def _as_input_array(x, name="x"):
    check_plain_array(x, name=name)
    if is_array(x):
        return x
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"`{name}` must be an array; could not convert {type(x).__name__}: {exc}"
        ) from None


def to_host(x):
    from .._backend import to_numpy

    return to_numpy(x) if is_array(x) else x


class _Progress:
    """A one-line progress bar with images per second, on stderr."""

    def __init__(self, total, width=30):
        self.total, self.width, self.t0 = total, width, time.perf_counter()

    def update(self, done):
        frac = done / max(1, self.total)
        rate = done / max(1e-9, time.perf_counter() - self.t0)
        bar = "#" * int(self.width * frac)
        sys.stderr.write(
            f"\r[{bar:<{self.width}}] {done}/{self.total} images, {rate:,.0f} images/s"
        )
        sys.stderr.flush()

    def close(self):
        sys.stderr.write("\n")
