"""A chain of layers with named weights: description, summary, batched inference."""

from __future__ import annotations

import copy
import json
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
    overflow_quiet,
    resolve_backend,
    to_device,
)
from .._lib.validation import (
    check_bool,
    check_int,
    check_plain_array,
    check_scalar,
    dtype_name,
    shape_str,
)
from .errors import WeightsMismatchError
from .layers import LAYERS, Layer

FORMAT = "caproute-model"
FORMAT_VERSION = 1
FLOAT_DTYPES = ("float32", "float64")
# the keyword arguments of predict_scores, which predict_proba and predict pass on
PREDICT_OPTIONS = ("batch_size", "backend", "data_format", "dtype", "progress", "scale")
#: The pixel range assumed for a model whose metadata records none (the shipped models' range).
DEFAULT_INPUT_RANGE = (0.0, 1.0)
# values may exceed the input range by this fraction of its width (rounding, not rescaling)
RANGE_SLACK = 1e-6


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
        if isinstance(input_shape, (str, bytes, Mapping)) or not isinstance(input_shape, Iterable):
            raise TypeError(
                "`input_shape` must be a sequence of int (the per-sample shape, e.g. (28, 28, 1) "
                f"for NHWC images); got {type(input_shape).__name__}."
            )
        self.input_shape = tuple(check_int(s, name="input_shape", min_value=1) for s in input_shape)
        self.name = str(name)
        if classes is not None and (
            isinstance(classes, (str, bytes, Mapping)) or not isinstance(classes, Iterable)
        ):
            raise TypeError(
                "`classes` must be a sequence of class names (a list of str, in output order); "
                f"got {type(classes).__name__}."
            )
        self.classes = None if classes is None else [str(c) for c in classes]
        self._shapes = []  # (input shape, output shape) per layer
        shape = self.input_shape
        for i, layer in enumerate(layers):
            try:
                layer.check_input_shape(shape)
                out = layer.output_shape(shape)
            except ValueError as exc:
                if f"layer {layer.name!r}" in str(exc):
                    raise
                before = f" (the output of layer {layers[i - 1].name!r})" if i else ""
                raise ValueError(
                    f"layer {layer.name!r} ({type(layer).__name__}) cannot take its input of "
                    f"per-sample shape {shape!r}{before}: {exc}"
                ) from None
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

    @property
    def input_range(self) -> tuple[float, float]:
        """Range ``(low, high)`` of the pixel values the model was trained on.

        Read from ``metadata["input_range"]``; a model whose metadata records none (a model
        built here, or a file written before caproute recorded it) assumes (0.0, 1.0), the
        range of the shipped models. Setting it records the range in ``metadata``, and
        :func:`caproute.models.save` writes it to the file. The predict methods refuse float
        images outside this range and map uint8 images onto it (see :meth:`predict_scores`).
        """
        if "input_range" not in self.metadata:
            return DEFAULT_INPUT_RANGE
        return parse_input_range(self.metadata["input_range"], name="metadata['input_range']")

    @input_range.setter
    def input_range(self, value: Sequence[float]) -> None:
        low, high = parse_input_range(value, name="input_range")
        self.metadata = {**self.metadata, "input_range": [low, high]}

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
            given = {}
            for key, value in arrays.items():
                shape = getattr(value, "shape", None)
                if key in expected and shape is not None:
                    given[key] = tuple(int(d) for d in shape)
            raise WeightsMismatchError(self.name, problems + self._mismatch_hints(given))
        self._weights = {k: clean[k] for k in expected}
        self._cache = {}
        return self

    def _mismatch_hints(self, given):
        """Sentences naming the argument (input channels, input size, primary capsule
        dimension) whose other value would explain the misshapen tensors, with that value."""
        from .layers import Conv2D, DenseCaps, PrimaryCaps

        expected = self.parameter_shapes()
        wrong = {k for k, shape in given.items() if shape != expected[k]}
        hints = []
        fitting_shape = self.input_shape  # with the channel count the weights take
        first = self.layers[0]
        key = f"{first.name}.weight"
        if key in wrong and len(given[key]) == 4 and len(expected[key]) == 4:
            c_in, c_model = given[key][2], expected[key][2]
            if c_in != c_model and given[key][:2] == expected[key][:2]:
                fitting_shape = _with_channels(self.input_shape, self.data_format, c_in)
                hints.append(
                    f"hint: {key!r} takes {c_in} input channel{'s' * (c_in != 1)}, the model "
                    f"{c_model}: an input_shape with {c_in} channels, "
                    f"{fitting_shape}, would fit"
                )
        kernel_hint = False  # another kernel changes the map sizes: no input size hint then
        for layer in self.layers:
            key = f"{layer.name}.weight"
            if not isinstance(layer, (Conv2D, PrimaryCaps)) or key not in wrong:
                continue
            got, want = given[key], expected[key]
            if len(got) != 4:
                continue
            if got[0] == got[1] and got[0] != want[0]:
                arg = "conv_kernel" if isinstance(layer, Conv2D) else "primary_kernel"
                kernel_hint = True
                hints.append(
                    f"hint: {key!r} is a {got[0]}x{got[1]} kernel; layer {layer.name!r} has "
                    f"{want[0]}x{want[1]}: a kernel_size ({arg} in capsnet) of {got[0]} "
                    "would fit"
                )
            if got[3] != want[3] and isinstance(layer, Conv2D):
                hints.append(
                    f"hint: {key!r} has {got[3]} output channels; layer {layer.name!r} has "
                    f"{want[3]}: filters (conv_channels in capsnet) of {got[3]} would fit"
                )
            elif got[3] != want[3] and got[3] % layer.dim == 0:
                hints.append(
                    f"hint: {key!r} has {got[3]} output channels; layer {layer.name!r} makes "
                    f"{want[3]} ({layer.n_types} types x {layer.dim}): n_types (primary_types "
                    f"in capsnet) of {got[3] // layer.dim} would fit, or another dim"
                )
        for i, layer in enumerate(self.layers):
            key = f"{layer.name}.weight"
            if not isinstance(layer, DenseCaps) or key not in wrong or i == 0:
                continue
            prev = self.layers[i - 1]
            n_in, in_dim = self._shapes[i][0]
            found = _dense_caps_sizes(layer, given[key], n_in, in_dim)
            if found is None or not isinstance(prev, PrimaryCaps):
                continue
            n_in_given, dim_given = found
            n_types = prev.n_types
            pkey = f"{prev.name}.weight"
            if dim_given != in_dim:
                channels = given.get(pkey, expected[pkey])[-1]
                types = f" and {channels // dim_given} types" if channels % dim_given == 0 else ""
                hints.append(
                    f"hint: {key!r} takes {dim_given}-D input capsules; layer {prev.name!r} "
                    f"makes {in_dim}-D ones: a primary_dim (PrimaryCaps `dim`) of {dim_given}"
                    f"{types} would fit"
                )
                if channels % dim_given == 0:
                    n_types = channels // dim_given
            positions = n_in // prev.n_types
            if not kernel_hint and n_in_given % n_types == 0 and n_in_given // n_types != positions:
                sizes = self._sizes_giving(i - 1, n_in_given // n_types, prev)
                if sizes:
                    shape = _with_size(fitting_shape, self.data_format, sizes[-1])
                    hints.append(
                        f"hint: {key!r} takes {n_in_given} input capsules; the model's "
                        f"input_shape {self.input_shape} gives {n_in}: it was made for "
                        f"{' or '.join(map(str, sizes))} pixel square images, input_shape="
                        f"{shape} would fit"
                    )
        return hints

    def _sizes_giving(self, index, positions, primary):
        """Square image sizes (up to 2048) for which layer ``index`` (a PrimaryCaps) has
        ``positions`` positions per capsule type."""
        sizes = []
        for size in range(1, 2049):
            shape = _with_size(self.input_shape, self.data_format, size)
            try:
                for layer in self.layers[: index + 1]:
                    layer.check_input_shape(shape)
                    shape = layer.output_shape(shape)
            except ValueError:
                continue
            if shape[0] // primary.n_types == positions:
                sizes.append(size)
        return sizes

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
                value = layer.initial_value(pname, shape) + scale * rng.standard_normal(shape)
                arrays[f"{layer.name}.{pname}"] = value.astype(dtype)
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
            # float64 weights beyond float32's range become inf quietly here: the forward
            # pass then reports the overflow, naming the dtype
            with overflow_quiet(np.zeros(0)):
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
    def forward(
        self,
        x: Array,
        *,
        backend: str | None = None,
        check_values: bool = True,
        return_all: bool = False,
    ) -> Array | tuple[Array, Array] | dict[str, Array | tuple[Array, Array]]:
        """Run every layer on a batch already in the model's layout, float dtype and range.

        Parameters
        ----------
        x : array of shape (batch, ``*input_shape``)
            The batch, float32 or float64, with values in :attr:`input_range` (no scaling is
            done here: :meth:`predict_scores` takes integer images and a ``scale``); the
            weights are used in its dtype and namespace.
        backend : {"auto", "numpy", "numba", "cupy"} or None
            Where to run; None takes the configured backend.
        check_values : bool, default=True
            Check that ``x`` is finite and within :attr:`input_range` (one min/max pass).
            :meth:`predict_scores` checks all its images at once and passes False.
        return_all : bool, default=False
            Return every layer's output, not only the last one's: for debugging an import
            layer by layer against the original framework's intermediate outputs.

        Returns
        -------
        output : array, tuple of arrays, or dict
            The last layer's output (for DenseCaps the parent capsules (batch, n_out, out_dim);
            for ClassMatrixCaps the pair (pose, activation)). With ``return_all``, a dict
            ``{layer name: that layer's output}`` in layer order, whose last entry is that
            output; each output is laid out as :meth:`summary` shows (per sample) after the
            batch axis, in ``x``'s namespace and dtype.

        Raises
        ------
        ValueError
            If ``x`` has the wrong shape, holds NaN or inf or lies outside
            :attr:`input_range`, or if the computation overflowed (weights too large for the
            dtype).
        TypeError
            If ``x`` is not a float32 or float64 array.

        Examples
        --------
        Every layer's output, e.g. to find the first layer where an imported network departs
        from the original:

        >>> import numpy as np
        >>> from caproute import models
        >>> net = models.capsnet(conv_channels=8, primary_types=2, class_dim=4)
        >>> net = net.initialize(random_state=0)
        >>> outputs = net.forward(np.zeros((2, 28, 28, 1), np.float32), return_all=True)
        >>> {name: out.shape for name, out in outputs.items()}
        {'conv1': (2, 20, 20, 8), 'primary_caps': (2, 72, 8), 'class_caps': (2, 10, 4)}
        >>> last = net.forward(np.zeros((2, 28, 28, 1), np.float32))
        >>> bool(np.array_equal(outputs["class_caps"], last))
        True
        """
        self._require_weights()
        return_all = check_bool(return_all, name="return_all")
        x = _as_input_array(x)
        xp = array_namespace(x)
        backend, xp, move = resolve_backend(xp, backend)
        if move:
            x = to_device(x, xp)
        self._check_batch(x, xp)
        if check_bool(check_values, name="check_values"):
            self._check_values(x, xp, name="x", scale=None)
        params = self._params_for(xp, device(x), x.dtype)
        dtype, where = dtype_name(x.dtype), None
        every = {}
        with overflow_quiet(x):
            for layer, p in zip(self.layers, params, strict=True):
                try:
                    x = layer.forward(x, p, xp=xp, backend=backend)
                except ValueError as exc:
                    if not _is_overflow(exc):
                        raise
                    where = layer
                    break
                if return_all:
                    every[layer.name] = x
            else:
                outputs = x if isinstance(x, tuple) else (x,)
                finite = None
                for out in outputs:
                    ok = xp.all(xp.isfinite(out))
                    finite = ok if finite is None else xp.logical_and(finite, ok)
                if bool(finite):
                    return every if return_all else x
        raise ModelOverflowError(self, where, dtype, arg="x")

    def _check_batch(self, x, xp):
        if x.dtype not in (xp.float32, xp.float64):
            raise TypeError(
                f"`x` must be float32 or float64; got dtype {dtype_name(x.dtype)}. "
                "predict_scores takes integer images and scales them."
            )
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
        scale: float | None = None,
    ) -> Array:
        """Class scores: capsule lengths (dynamic routing) or activations (EM routing).

        Parameters
        ----------
        images : array of shape (n, H, W), (n, H, W, C) or (n, C, H, W)
            The pixels, in the range the model was trained on (:attr:`input_range`, [0, 1]
            for the shipped models); see Notes for what each dtype must hold. A 3-D array is
            taken as single-channel. A ``dask.array.Array`` is classified lazily, block by
            block (see Notes).
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
        scale : float or None, default=None
            A factor (> 0) the images are multiplied by before they are classified, e.g.
            ``scale=1/255`` for float images holding 8-bit pixel values (0-255) or
            ``1/65535`` for uint16 images; ``images * scale`` must lie in
            :attr:`input_range`. None: uint8 images are mapped onto the input range, float
            images are used as given, other integer dtypes are refused.

        Returns
        -------
        scores : array of shape (n, n_classes)
            In the namespace the computation ran in (CuPy for backend="cupy"); for a Dask
            array of images, a lazy Dask array chunked along the batch axis as ``images`` is.

        Raises
        ------
        ValueError
            If ``images`` has a shape the model does not take (the message gives the shapes it
            takes), holds NaN or inf, or lies outside the input range (the message gives the
            values found and the fix); if integer images other than uint8 come without
            ``scale``; if an option is invalid; if the computation overflowed.
        TypeError
            If ``images`` is not an array of integers or floats.

        Notes
        -----
        The input contract: the images must hold what the model was trained on, pixel values
        in :attr:`input_range` (recorded in the model's metadata; (0, 1) for the shipped
        models and for models without a record). With ``scale=None``:

        - uint8 images are mapped onto the input range: divided by 255 for (0, 1);
        - float images are used as given, and must lie in the input range (up to a rounding
          slack of 1e-6 of its width). Floats in [0, 255], as
          ``np.asarray(pil_image, dtype=np.float32)`` gives, are refused, with the fix:
          ``scale=1/255`` or dividing them by 255;
        - other integer dtypes (uint16, int8, int64, ...) are refused: their pixel values
          have no single meaning, so ``scale`` must say how to read them.

        With ``scale`` given, every dtype is multiplied by it and ``images * scale`` must lie
        in the input range. The check is one min/max pass over the images (none for uint8
        images without ``scale``) and happens before any image is classified.

        A ``dask.array.Array`` of images (NumPy or CuPy blocks) gives a lazy Dask array
        at once: the options and the images' shape and dtype are checked when it is built,
        with the messages NumPy images get, and each block of images is classified when the
        result is computed (by this method on the block: NaN or inf, or values outside the
        input range, raise then), in parallel by Dask's scheduler or on a
        ``dask.distributed`` cluster. Blocks split the batch axis only: images chunked along
        their pixel or channel axes are rechunked into whole images first. The model enters
        the task graph once (its weights travel once to each worker, not once per block) and
        as it is at the call: changing its weights later does not change a result already
        built. docs/models.md ("Classifying a Dask array") shows it on a cluster.

        Examples
        --------
        >>> import numpy as np
        >>> from caproute import models
        >>> net = models.capsnet(conv_channels=8, primary_types=2, class_dim=4)
        >>> net = net.initialize(random_state=0)
        >>> pixels = np.full((2, 28, 28), 200, dtype=np.uint8)
        >>> scores = net.predict_scores(pixels)  # uint8: divided by 255
        >>> scores.shape
        (2, 10)
        >>> as_floats = pixels.astype(np.float32)  # 0-255 floats: refused, with the fix
        >>> net.predict_scores(as_floats)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: `images` must lie in the model's input range [0, 1] ... divide them by 255.
        >>> bool(np.allclose(net.predict_scores(as_floats, scale=1 / 255), scores))
        True
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
                scale=scale,
            )
        self._require_weights()
        batch_size, dtype, scale = _check_predict_options(batch_size, dtype, scale)
        images = _as_input_array(images, name="images")
        xp = array_namespace(images)
        backend, xp, move = resolve_backend(xp, backend)
        if move:
            images = to_device(images, xp)
        images = self._prepare(images, xp, data_format, getattr(xp, dtype), scale)
        n = int(images.shape[0])
        out = []
        bar = _Progress(n) if progress else None
        try:
            for start in range(0, n, batch_size):
                result = self.forward(
                    images[start : min(n, start + batch_size), ...],
                    backend=backend,
                    check_values=False,
                )
                out.append(self.layers[-1].class_scores(result, xp=xp))
                if bar:
                    bar.update(min(n, start + batch_size))
        except ModelOverflowError as exc:
            raise ValueError(exc.message(arg="images")) from None
        finally:
            if bar:
                bar.close()
        return xp.concat(out, axis=0) if out else xp.zeros((0, self.n_classes), dtype=images.dtype)

    def predict_proba(self, images: Array, **kwargs: Any) -> Array:
        """Class scores normalised to sum to 1 per image.

        Parameters
        ----------
        images : array of shape (n, H, W), (n, H, W, C) or (n, C, H, W)
            As in :meth:`predict_scores` (a ``dask.array.Array`` included): uint8 pixels,
            or floats within :attr:`input_range`, or any integers or floats with ``scale``.
        **kwargs
            ``batch_size``, ``backend``, ``data_format``, ``dtype``, ``progress``, ``scale``,
            as in :meth:`predict_scores`.

        Returns
        -------
        proba : array of shape (n, n_classes)
            Non-negative, summing to 1 per image (uniform where every score is 0); lazy for a
            Dask array of images, as in :meth:`predict_scores`.

        Raises
        ------
        ValueError
            As :meth:`predict_scores` does: images of a shape the model does not take, NaN or
            inf, values outside the input range, integers other than uint8 without ``scale``.
        TypeError
            If ``images`` is not an array of integers or floats, or an option is unknown.
        """
        if dask_arrays.is_dask_array(images):
            return self._predict_dask(
                "predict_proba", images, **_predict_options("predict_proba", kwargs)
            )
        scores = self.predict_scores(images, **_predict_options("predict_proba", kwargs))
        xp = array_namespace(scores)
        total = xp.sum(scores, axis=1, keepdims=True)
        # all-zero scores (possible only in degenerate models) give the uniform distribution
        return xp.where(total > 0, scores / xp.where(total > 0, total, 1.0), 1.0 / self.n_classes)

    def predict(self, images: Array, **kwargs: Any) -> Array:
        """Predict the class of each image: the one with the highest score.

        Parameters
        ----------
        images : array of shape (n, H, W), (n, H, W, C) or (n, C, H, W)
            As in :meth:`predict_scores` (a ``dask.array.Array`` included): uint8 pixels,
            or floats within :attr:`input_range`, or any integers or floats with ``scale``.
        **kwargs
            ``batch_size``, ``backend``, ``data_format``, ``dtype``, ``progress``, ``scale``,
            as in :meth:`predict_scores`.

        Returns
        -------
        labels : array of shape (n,)
            Class indices (int64), in the namespace the computation ran in; lazy for a Dask
            array of images, as in :meth:`predict_scores`.

        Raises
        ------
        ValueError
            As :meth:`predict_scores` does: images of a shape the model does not take, NaN or
            inf, values outside the input range, integers other than uint8 without ``scale``.
        TypeError
            If ``images`` is not an array of integers or floats, or an option is unknown.
        """
        if dask_arrays.is_dask_array(images):
            return self._predict_dask("predict", images, **_predict_options("predict", kwargs))
        scores = self.predict_scores(images, **_predict_options("predict", kwargs))
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
        scale=None,
    ):
        """The lazy result of ``method`` for a Dask array of images: everything that needs no
        pixel value is checked now, the rest by ``method`` on each block when computed."""
        self._require_weights()
        batch_size, dtype, scale = _check_predict_options(batch_size, dtype, scale)
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
        self._check_images(images.shape, images.dtype, xp, data_format, scale)
        # the backend as configured now (the blocks may run in other threads or processes);
        # its namespace is the blocks' output's (CuPy for "cupy")
        backend, out_xp, _ = resolve_backend(xp, backend)
        scores = out_xp.zeros((0, self.n_classes), dtype=getattr(out_xp, dtype))
        snapshot = copy.copy(self)  # the weights and metadata as they are now; an empty cache
        snapshot._cache = {}
        snapshot.metadata = dict(self.metadata)
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
                "scale": scale,
            },
            shared_token=("caproute-model", self.get_config(), self._weights, self.input_range),
            out_tail=() if method == "predict" else (self.n_classes,),
            meta=out_xp.argmax(scores, axis=1) if method == "predict" else scores,
            name="caproute-" + method.replace("_", "-"),
        )

    def _accepted_shapes(self):
        """The image shapes the model takes, in words (for messages)."""
        dims = ", ".join(map(str, self.input_shape))
        if self.data_format == "NHWC":
            h, w, c = self.input_shape
            own, other, other_fmt = f"(n, {dims})", f"(n, {c}, {h}, {w})", "NCHW"
        else:
            c, h, w = self.input_shape
            own, other, other_fmt = f"(n, {dims})", f"(n, {h}, {w}, {c})", "NHWC"
        forms = f"(n, {h}, {w}) or {own}" if c == 1 else own
        return f"{forms}, or {other} with data_format={other_fmt!r}"

    def _shape_hint(self, shape, fmt, data_format):
        """A sentence on what the images' shape suggests, or ''."""
        shape = tuple(int(s) for s in shape)
        if self.data_format == "NHWC":
            h, w, c = self.input_shape
        else:
            c, h, w = self.input_shape
        if shape in ((h, w), (h, w, c), (c, h, w)):
            return " For one image, pass a batch of one: images[None]."
        if len(shape) == 4 and data_format is None:
            other = "NCHW" if fmt == "NHWC" else "NHWC"
            read = shape[1:] if other == "NCHW" else (shape[3], shape[1], shape[2])
            if read == (c, h, w):
                return f" They look like {other} images: pass data_format={other!r}."
        if len(shape) == 4:
            size = shape[1:3] if fmt == "NHWC" else shape[2:]
            channels = shape[3] if fmt == "NHWC" else shape[1]
            if size == (h, w) and channels != c:
                fix = " (convert colour images to grey scale first)" if c == 1 else ""
                return f" The model takes {c} channel{'s' * (c != 1)}; got {channels}{fix}."
        return ""

    def _check_images(self, shape, kind, xp, data_format, scale=None):
        """Check what the images' shape and dtype say (no pixel value is read); return the
        layout they are in."""
        fmt = self.data_format if data_format is None else data_format
        if fmt not in ("NHWC", "NCHW"):
            raise ValueError(f"`data_format` must be 'NHWC', 'NCHW' or None; got {data_format!r}.")
        if not _is_real_dtype(xp, kind):
            raise TypeError(
                "`images` must hold integers or floats (uint8 pixels, or floats in the "
                f"model's input range); got dtype {dtype_name(kind)}."
            )
        expected = f" Model {self.name!r} takes images of shape {self._accepted_shapes()}"
        full = tuple(shape)
        if len(full) == 3:
            full = (*full, 1) if fmt == "NHWC" else (full[0], 1, *full[1:])
        if len(full) != 4:
            raise ValueError(
                "`images` must be 3-D (n, H, W) or 4-D "
                f"({'n, H, W, C' if fmt == 'NHWC' else 'n, C, H, W'}); "
                f"got shape {_shape_text(shape)}."
                + expected
                + "."
                + self._shape_hint(shape, fmt, data_format)
            )
        if fmt != self.data_format:
            full = tuple(full[i] for i in ((0, 2, 3, 1) if fmt == "NCHW" else (0, 3, 1, 2)))
        if tuple(int(s) for s in full[1:]) != self.input_shape:
            raise ValueError(
                f"`images` must be {self.input_shape} per image in the model's layout "
                f"({self.data_format}); got {tuple(int(s) for s in full[1:])}"
                + ("" if data_format is None else f" after reading them as {fmt}")
                + "."
                + expected
                + f"; `images` has shape {_shape_text(shape)}."
                + self._shape_hint(shape, fmt, data_format)
            )
        if scale is None and xp.isdtype(kind, "integral") and kind != xp.uint8:
            low, high = self.input_range
            raise ValueError(
                f"`images` of dtype {dtype_name(kind)} need an explicit `scale`: only uint8 "
                "images are mapped onto the model's input range by caproute (divided by 255 "
                f"for [0, 1]). Pass the factor that takes your pixel values into "
                f"[{low:g}, {high:g}], e.g. scale=1/65535 for 16-bit images using their full "
                "range, or scale=1/255 for 8-bit values held in a wider integer type."
            )
        return fmt

    def _check_values(self, images, xp, *, name, scale):
        """NaN, inf and the input range, in one min/max pass over the pixels as given.

        uint8 images without ``scale`` are skipped: they are mapped onto the input range.
        """
        integral = xp.isdtype(images.dtype, "integral")
        if (integral and scale is None) or math.prod(int(s) for s in images.shape) == 0:
            return
        with overflow_quiet(images):
            lo, hi = float(xp.min(images)), float(xp.max(images))
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(
                f"`{name}` holds NaN or inf; every pixel must be a finite number in the "
                f"model's input range {_range_text(self.input_range)}."
            )
        factor = 1.0 if scale is None else scale
        low, high = self.input_range
        slack = RANGE_SLACK * (high - low)
        if lo * factor >= low - slack and hi * factor <= high + slack:
            return
        raise ValueError(self._range_message(name, lo, hi, images.dtype, scale))

    def _range_message(self, name, lo, hi, kind, scale):
        low, high = self.input_range
        span = _range_text(self.input_range)
        found = f"{dtype_name(kind)} values from {lo:.6g} to {hi:.6g}"
        if scale is None:
            head = (
                f"`{name}` must lie in the model's input range {span} (the range it was "
                f"trained on); got {found}."
            )
        else:
            head = (
                f"`{name}` times `scale` must lie in the model's input range {span}; with "
                f"scale={scale:.6g} they run from {lo * scale:.6g} to {hi * scale:.6g} "
                f"({found})."
            )
        how = "pass scale={} or divide them by {}" if name == "images" else "divide them by {1}"
        unit = (low, high) == (0.0, 1.0) and scale is None and lo >= 0
        width = high - low
        if unit and 2 < hi <= 255:
            tail = (
                " If they are 8-bit pixel values (as np.asarray(pil_image, dtype=np.float32) "
                f"gives), {how.format('1/255', 255)}."
            )
        elif unit and 255 < hi <= 65535:
            tail = f" If they are 16-bit pixel values, {how.format('1/65535', 65535)}."
        elif scale is not None and lo >= 0:
            tail = (
                f" Choose `scale` so that the largest pixel value maps to at most {high:g}: "
                "1/255 for 8-bit pixel values, 1/65535 for 16-bit ones."
            )
        elif scale is None and lo >= low - 0.05 * width and hi <= high + 0.05 * width:
            tail = (
                f" If they overshoot a little (after resampling, say), clip them into {span} "
                f"first: np.clip({name}, {low:g}, {high:g})."
            )
        else:
            tail = (
                f" Map them into {span} first (if they were standardised, by a mean and a "
                "standard deviation for example, undo that)"
                + (", or pass `scale`." if name == "images" and lo >= 0 else ".")
            )
        return head + tail

    def _prepare(self, images, xp, data_format, dtype, scale=None):
        fmt = self._check_images(images.shape, images.dtype, xp, data_format, scale)
        self._check_values(images, xp, name="images", scale=scale)
        kind = images.dtype
        if images.ndim == 3:
            images = xp.expand_dims(images, axis=-1 if fmt == "NHWC" else 1)
        if fmt != self.data_format:
            images = xp.permute_dims(images, (0, 2, 3, 1) if fmt == "NCHW" else (0, 3, 1, 2))
        images = xp.astype(images, dtype)
        if scale is not None:
            return images * scale
        if xp.isdtype(kind, "integral"):  # uint8: _check_images refused the others
            low, high = self.input_range
            if (low, high) == (0.0, 1.0):
                return images / 255.0
            return images * ((high - low) / 255.0) + low
        return images


class ModelOverflowError(ValueError):
    """A model's computation overflowed on input within its range: weights too large for the
    dtype. Raised by :meth:`Model.forward`; the predict methods re-raise it as a ValueError
    that names their own arguments."""

    def __init__(self, model, layer, dtype, *, arg):
        self.model_name = model.name
        self.where = (
            "its last layer's output"
            if layer is None
            else f"layer {layer.name!r} ({type(layer).__name__})"
        )
        self.dtype = dtype
        self.largest = max(
            (float(np.max(np.abs(w))) for w in model._weights.values() if w.size), default=0.0
        )
        self.input_range = model.input_range
        super().__init__(self.message(arg=arg))

    def message(self, *, arg):
        text = (
            f"model {self.model_name!r} overflowed at {self.where}, computing in {self.dtype} "
            f"on `{arg}` within its input range {_range_text(self.input_range)}: its weights "
            f"(largest magnitude {self.largest:.3g}) are too large for {self.dtype}."
        )
        if self.dtype == "float64":
            return text + " Check the weights the model holds (Model.get_weights)."
        fix = "pass dtype='float64'" if arg == "images" else "pass `x` as float64"
        return text + f" Compute in float64: {fix}."


def _check_predict_options(batch_size, dtype, scale):
    """Check predict_scores' ``batch_size``, ``dtype`` and ``scale``; return the batch size as
    an int, the dtype's name ('float32' or 'float64') and the scale as a float or None.

    ``dtype`` may be the name or a NumPy dtype or type (``np.float32``), as NumPy users pass it.
    """
    batch_size = check_int(batch_size, name="batch_size", min_value=1)
    name = dtype
    if dtype is None:  # np.dtype(None) would read it as float64
        name = None
    elif not isinstance(dtype, str):
        try:
            name = np.dtype(dtype).name
        except TypeError:  # not a dtype NumPy knows
            name = None
    if name not in FLOAT_DTYPES:
        raise ValueError(f"`dtype` must be 'float32' or 'float64'; got {dtype!r}.")
    if scale is not None:
        scale = check_scalar(scale, name="scale", low=0, low_inclusive=False)
    return batch_size, name, scale


def parse_input_range(value, *, name):
    """A model's input range as ``(low, high)`` floats, from a pair of numbers or the JSON text
    a model file stores; ``name`` is where the value came from, for the message."""
    given = value
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    if (
        isinstance(value, (str, bytes, Mapping))
        or not isinstance(value, Iterable)
        or len(value := list(value)) != 2
        or not all(
            isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
            for v in value
        )
    ):
        raise ValueError(
            f"`{name}` must be two numbers [low, high] (the range of the pixel values the "
            f"model was trained on); got {given!r}."
        )
    low, high = (float(v) for v in value)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"`{name}` must be finite with low < high; got {given!r}.")
    return low, high


def _is_overflow(exc):
    """Whether a layer's ValueError says that finite input overflowed inside it (the routing
    functions' checks of their inputs and outputs)."""
    text = str(exc)
    return type(exc) is ValueError and (
        "must contain only finite values" in text or "overflowed" in text
    )


def _is_real_dtype(xp, kind):
    """Whether ``kind`` is an integer or real floating dtype (not bool, complex, str, object)."""
    try:
        return not xp.isdtype(kind, "bool") and xp.isdtype(kind, ("integral", "real floating"))
    except (TypeError, ValueError):  # str, object and other dtypes outside the Array API
        return False


def _range_text(bounds):
    return f"[{bounds[0]:g}, {bounds[1]:g}]"


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


def _with_channels(input_shape, data_format, channels):
    """``input_shape`` (in ``data_format``) with another channel count."""
    if data_format == "NCHW":
        return (channels, *input_shape[1:])
    return (*input_shape[:2], channels)


def _with_size(input_shape, data_format, size):
    """``input_shape`` (in ``data_format``) with square images of another size."""
    if data_format == "NCHW":
        return (input_shape[0], size, size)
    return (size, size, input_shape[2])


def _dense_caps_sizes(layer, shape, n_in, in_dim):
    """(n_in, in_dim) that a DenseCaps weight of ``shape`` (in the layer's layout) was made
    for, or None where its other axes do not match the layer."""
    n, o = layer.n_out, layer.out_dim
    layout = layer.weight_layout
    if layout == "tf":
        if len(shape) == 3 and shape[2] == n * o:
            return shape[0], shape[1]
        return None
    if len(shape) != 4:
        return None
    if layout == "caproute" and shape[1:3] == (n, o):
        return shape[0], shape[3]
    if layout == "keras" and (shape[0], shape[2]) == (n, o):
        return shape[1], shape[3]
    if layout == "torch" and (shape[0], shape[3]) == (n, o):
        return shape[1], shape[2]
    return None


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
    except (TypeError, ValueError):
        raise TypeError(
            f"`{name}` must be an array, or a sequence of images of one shape; could not make "
            f"one array of the {type(x).__name__} given (images of different sizes, or "
            "entries that are not numbers?)."
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
