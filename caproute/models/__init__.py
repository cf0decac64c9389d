"""Inference-only capsule networks: layers, models, weights I/O and importers, shipped models."""

from .architectures import capsnet, matrix_capsnet
from .errors import WeightsFileError, WeightsMismatchError
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

__all__ = [
    "WEIGHT_LAYOUTS", "Activation", "ClassMatrixCaps", "Conv2D", "ConvMatrixCaps", "DenseCaps",
    "Layer", "Model", "PrimaryCaps", "PrimaryMatrixCaps", "WeightsFileError",
    "WeightsMismatchError", "capsnet", "matrix_capsnet",
]
