"""caproute's own model files: safetensors with the architecture in the metadata."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from .._version import __version__
from .errors import WeightsFileError
from .model import Model
from .weights_file import load_file, save_file

ARCHITECTURE_KEY = "caproute_model"


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
        Extra notes stored in the file (training command, accuracy, ...).

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
    """
    if not isinstance(model, Model):
        raise TypeError(f"`model` must be a caproute.models.Model; got {type(model).__name__}.")
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
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
        With its weights; ``model.metadata`` holds the file's metadata.

    Raises
    ------
    WeightsFileError
        Unreadable file, or no or invalid architecture in the metadata.
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
    model.set_weights(tensors)
    model.metadata = {k: v for k, v in meta.items() if k != ARCHITECTURE_KEY}
    return model
