"""Inference-only capsule networks: layers, models, weights I/O and importers, shipped models."""

from .architectures import capsnet, matrix_capsnet
from .errors import UnsupportedLayerError, WeightsFileError, WeightsMismatchError
from .importers import (
    capsnet_from_keras_h5,
    capsnet_from_torch,
    read_keras_h5,
    read_state_dict,
    torch_conv_to_hwio,
)
from .keras_import import load_keras
from .layers import (
    WEIGHT_LAYOUTS,
    Activation,
    BatchNorm,
    ClassMatrixCaps,
    Conv2D,
    ConvMatrixCaps,
    DenseCaps,
    Layer,
    PrimaryCaps,
    PrimaryMatrixCaps,
    fold_batchnorm,
)
from .model import Model
from .registry import available_pretrained, load_pretrained, pretrained_info
from .serialization import load, save
from .torch_import import EM_PRESETS, TORCH_LAYOUTS, load_torch

__all__ = [
    "EM_PRESETS",
    "TORCH_LAYOUTS",
    "WEIGHT_LAYOUTS",
    "Activation",
    "BatchNorm",
    "ClassMatrixCaps",
    "Conv2D",
    "ConvMatrixCaps",
    "DenseCaps",
    "Layer",
    "Model",
    "PrimaryCaps",
    "PrimaryMatrixCaps",
    "UnsupportedLayerError",
    "WeightsFileError",
    "WeightsMismatchError",
    "available_pretrained",
    "capsnet",
    "capsnet_from_keras_h5",
    "capsnet_from_torch",
    "fold_batchnorm",
    "load",
    "load_keras",
    "load_pretrained",
    "load_torch",
    "matrix_capsnet",
    "pretrained_info",
    "read_keras_h5",
    "read_state_dict",
    "save",
    "torch_conv_to_hwio",
]
