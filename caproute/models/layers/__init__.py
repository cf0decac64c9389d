"""Inference layers: pure Array API, batched, float32 and float64, any backend."""

from .activations import Activation
from .base import Layer
from .batch_norm import BatchNorm, fold_batchnorm
from .capsules import WEIGHT_LAYOUTS, DenseCaps, PrimaryCaps
from .conv import Conv2D
from .matrix_caps import ClassMatrixCaps, ConvMatrixCaps, PrimaryMatrixCaps

LAYERS = {
    cls.__name__: cls
    for cls in (
        Activation,
        BatchNorm,
        Conv2D,
        PrimaryCaps,
        DenseCaps,
        PrimaryMatrixCaps,
        ConvMatrixCaps,
        ClassMatrixCaps,
    )
}

__all__ = [
    "LAYERS",
    "WEIGHT_LAYOUTS",
    "Activation",
    "BatchNorm",
    "ClassMatrixCaps",
    "Conv2D",
    "ConvMatrixCaps",
    "DenseCaps",
    "Layer",
    "PrimaryCaps",
    "PrimaryMatrixCaps",
    "fold_batchnorm",
]
