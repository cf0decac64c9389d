"""caproute's own model files: safetensors with the architecture in the metadata."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from .._version import __version__
from .errors import WeightsFileError
from .model import Model, parse_input_range
from .weights_file import load_file, save_file

ARCHITECTURE_KEY = "caproute_model"
INPUT_RANGE_KEY = "input_range"


def save(
    model: Model, path: os.PathLike | str, *, metadata: Mapping[str, object] | None = None
) -> None:
    """Write a model's weights and architecture to a safetensors file.

    Parameters
    ----------
    model : Model
        With weights.
    path : str or os.PathLike
        The file to write (replaced if it exists), by convention ``*.safetensors``.
    metadata : dict of str to str, optional
        Extra notes stored in the file (training command, accuracy, ...). The model's
        :attr:`~Model.input_range` is always stored, under ``"input_range"`` (as JSON, e.g.
        ``"[0.0, 1.0]"``); an ``"input_range"`` given here replaces it (two numbers, or their
        JSON text).

    Raises
    ------
    TypeError
        If ``model`` is not a :class:`Model`.
    ValueError
        If ``metadata["input_range"]`` or the model's recorded input range is not two finite
        numbers ``[low, high]`` with ``low < high``.

    Examples
    --------
    >>> import os, tempfile
    >>> from caproute import models
    >>> net = models.capsnet(conv_channels=8, primary_types=2).initialize(random_state=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "net.safetensors")
    >>> models.save(net, path, metadata={"note": "random weights"})
    >>> again = models.load(path)
    >>> again.metadata["note"], again.n_parameters() == net.n_parameters()
    ('random weights', True)
    >>> again.input_range  # recorded in the file; (0.0, 1.0) unless set otherwise
    (0.0, 1.0)
    """
    if not isinstance(model, Model):
        raise TypeError(f"`model` must be a caproute.models.Model; got {type(model).__name__}.")
    meta = {str(k): v for k, v in (metadata or {}).items()}
    if INPUT_RANGE_KEY in meta:
        low, high = parse_input_range(meta[INPUT_RANGE_KEY], name="metadata['input_range']")
    else:
        low, high = model.input_range
    meta = {k: str(v) for k, v in meta.items()}
    meta[INPUT_RANGE_KEY] = json.dumps([low, high])
    meta[ARCHITECTURE_KEY] = json.dumps(model.get_config())
    meta["caproute_version"] = __version__
    save_file(path, model.get_weights(), meta)


def load(path: os.PathLike | str) -> Model:
    """Rebuild a model from a file written by :func:`save` (architecture and weights).

    Parameters
    ----------
    path : str or os.PathLike
        A ``.safetensors`` file written by caproute.

    Returns
    -------
    model : Model
        With its weights; ``model.metadata`` holds the file's metadata, its
        ``"input_range"`` as a list ``[low, high]`` (:attr:`Model.input_range`; a file
        without one gives a model that assumes (0.0, 1.0)).

    Raises
    ------
    WeightsFileError
        Unreadable file, or no or invalid architecture or input range in the metadata.
    WeightsMismatchError
        Tensors that do not fit the described architecture (all listed at once).

    Examples
    --------
    >>> import os, tempfile
    >>> from caproute import models
    >>> path = os.path.join(tempfile.mkdtemp(), "net.safetensors")
    >>> models.save(models.capsnet(conv_channels=8, primary_types=2).initialize(), path)
    >>> net = models.load(path)
    >>> net.name, net.weights_loaded
    ('capsnet', True)
    """
    tensors, meta = load_file(path)
    if ARCHITECTURE_KEY not in meta:
        raise WeightsFileError(
            f"{str(path)!r} has no {ARCHITECTURE_KEY!r} entry in its metadata, so it does not "
            "describe a caproute model. For another library's checkpoint use an importer "
            "(caproute.models.capsnet_from_torch, capsnet_from_keras_h5) or build the model and "
            "call Model.set_weights."
        )
    try:
        config = json.loads(meta[ARCHITECTURE_KEY])
        model = Model.from_config(config)
    except (json.JSONDecodeError, ValueError, KeyError, TypeError) as exc:
        raise WeightsFileError(
            f"{str(path)!r}: the architecture in its metadata is invalid: {exc}"
        ) from None
    metadata = {k: v for k, v in meta.items() if k != ARCHITECTURE_KEY}
    if INPUT_RANGE_KEY in metadata:
        try:
            metadata[INPUT_RANGE_KEY] = list(
                parse_input_range(metadata[INPUT_RANGE_KEY], name="input_range")
            )
        except ValueError as exc:
            raise WeightsFileError(
                f"{str(path)!r}: the input range in its metadata: {exc}"
            ) from None
    model.set_weights(tensors)
    model.metadata = metadata
    return model
