"""Inference-only capsule networks: layers, models, weights I/O and importers, shipped models."""

from .architectures import capsnet, matrix_capsnet
from .errors import WeightsFileError, WeightsMismatchError
from .importers import (
    capsnet_from_keras_h5,
    capsnet_from_torch,
    read_keras_h5,
    read_state_dict,
    torch_conv_to_hwio,
)
from .layers import (
    WEIGHT_LAYOUTS,
    Activation,
    ClassMatrixCaps,
    Conv2D,
    ConvMatrixCaps,
    DenseCaps,
    Layer,
    PrimaryCaps,
    PrimaryMatrixCaps,
)
from .model import Model
from .registry import available_pretrained, load_pretrained, pretrained_info
from .serialization import load, save

__all__ = [
    "WEIGHT_LAYOUTS",
    "Activation",
    "ClassMatrixCaps",
    "Conv2D",
    "ConvMatrixCaps",
    "DenseCaps",
    "Layer",
    "Model",
    "PrimaryCaps",
    "PrimaryMatrixCaps",
    "WeightsFileError",
    "WeightsMismatchError",
    "available_pretrained",
    "capsnet",
    "capsnet_from_keras_h5",
    "capsnet_from_torch",
    "load",
    "load_pretrained",
    "matrix_capsnet",
    "pretrained_info",
    "read_keras_h5",
    "read_state_dict",
    "save",
    "torch_conv_to_hwio",
]
