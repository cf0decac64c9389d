"""The models shipped with caproute: where each file is, its checksum and how it was trained."""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from typing import TYPE_CHECKING, Any

from .errors import WeightsFileError
from .model import DEFAULT_INPUT_RANGE, parse_input_range
from .serialization import load

if TYPE_CHECKING:
    from .model import Model

_PACKAGE = __package__ + ".pretrained"
_REGISTRY = "registry.json"


def _registry():
    with resources.files(_PACKAGE).joinpath(_REGISTRY).open("r", encoding="utf-8") as f:
        return json.load(f)


def available_pretrained() -> list[str]:
    """Names of the shipped models.

    Returns
    -------
    list of str
        Sorted; each one a name for :func:`load_pretrained` and :func:`pretrained_info`.

    Examples
    --------
    >>> from caproute import models
    >>> "capsnet-fashion-mnist" in models.available_pretrained()
    True
    """
    return sorted(_registry())


def pretrained_info(name: str) -> dict[str, Any]:
    """The registry entry of a shipped model.

    Parameters
    ----------
    name : str
        One of :func:`available_pretrained`.

    Returns
    -------
    dict
        A copy of the entry: file, sha256, training command, epochs, test accuracy on the
        full Fashion-MNIST test set and on the bundled subset (as caproute computes them),
        the input range ``[low, high]`` of the pixel values it was trained on, and notes.

    Raises
    ------
    ValueError
        If no shipped model has that name (the message lists those that do).

    Examples
    --------
    >>> from caproute import models
    >>> info = models.pretrained_info("capsnet-fashion-mnist")
    >>> info["file"], info["epochs"] >= 1, 0.0 < info["test_accuracy"] <= 1.0
    ('capsnet-fashion-mnist.safetensors', True, True)
    """
    registry = _registry()
    if name not in registry:
        raise ValueError(f"no shipped model named {name!r}; available: {sorted(registry)}.")
    return dict(registry[name])


def load_pretrained(name: str) -> Model:
    """Load a shipped model after checking its file's sha256 against the registry.

    Parameters
    ----------
    name : str
        One of :func:`available_pretrained`.

    Returns
    -------
    model : Model
        With its weights; ``model.metadata["pretrained"]`` is ``name`` and
        ``model.metadata["input_range"]`` the registry's (``[0.0, 1.0]`` for every shipped
        model: :attr:`Model.input_range`, which the predict methods enforce).

    Raises
    ------
    ValueError
        If no shipped model has that name.
    WeightsFileError
        If the file's sha256 differs from the registry's (a damaged installation).

    Examples
    --------
    >>> from caproute import models
    >>> from caproute.datasets import load_fashion_mnist_subset
    >>> net = models.load_pretrained("capsnet-fashion-mnist")
    >>> images, labels = load_fashion_mnist_subset()
    >>> pred = net.predict(images)
    >>> recorded = models.pretrained_info("capsnet-fashion-mnist")["subset_accuracy"]
    >>> float((pred == labels).mean()) == recorded
    True
    >>> net.input_range
    (0.0, 1.0)
    """
    info = pretrained_info(name)
    resource = resources.files(_PACKAGE).joinpath(info["file"])
    with resources.as_file(resource) as path:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != info["sha256"]:
            raise WeightsFileError(
                f"shipped model {name!r}: {info['file']} has sha256 {digest}, but the registry "
                f"records {info['sha256']}; the installation is damaged (reinstall caproute)."
            )
        model = load(path)
    # the files predate the input_range record: the registry holds it (the training range)
    low, high = parse_input_range(
        info.get("input_range", list(DEFAULT_INPUT_RANGE)), name=f"{name}'s input_range"
    )
    model.metadata = {**model.metadata, "input_range": [low, high], "pretrained": name}
    return model
