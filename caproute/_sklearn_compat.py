"""The one door to scikit-learn's private helpers (a leaf module: it imports nothing from
caproute, so every layer, ``_backend`` included, may use it).

caproute's estimators reuse scikit-learn's parameter constraints (so that every message,
including the order option sets print in, is scikit-learn's own) and its sample-weight check.
Those live in private modules that may move between releases; they are imported here only, and
``pyproject.toml`` bounds scikit-learn's version from above, so a move breaks one file, loudly.
"""

from __future__ import annotations

from sklearn.utils._param_validation import Hidden, Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, validate_data

__all__ = ["Hidden", "Interval", "StrOptions", "check_sample_weight", "validate_data"]


def check_sample_weight(sample_weight, X, *, dtype):
    """scikit-learn's sample-weight validation (non-negative; its messages)."""
    return _check_sample_weight(sample_weight, X, dtype=dtype, ensure_non_negative=True)
