"""Gaussian mixtures fitted by EM: scikit-learn's GaussianMixture interface and numbers."""

from .gaussian_mixture import GaussianMixture

__all__ = ["GaussianMixture"]
