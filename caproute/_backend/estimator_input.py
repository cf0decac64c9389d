"""Validation of estimator input on any Array API namespace, with scikit-learn's messages.

NumPy input and array-likes go through scikit-learn's own ``validate_data``; arrays of other
libraries (array_api_strict, CuPy, torch) are checked here with the same messages and stay in
their namespace and on their device.
"""

from __future__ import annotations

import numpy as np

from .._sklearn_compat import check_sample_weight, validate_data
from .namespace import (
    array_namespace,
    check_plain_array,
    cupy_namespace,
    device,
    is_array,
    is_cupy_namespace,
    is_numpy_namespace,
    numpy_namespace,
    to_device,
    to_numpy,
)


def validate_X(est, X, *, reset, backend, ensure_min_samples=1):
    """Return ``(X, xp)``: X as a 2-D float32/float64 array of its namespace.

    With ``backend="cupy"``, host input is moved to the GPU (the one place it happens).
    """
    check_plain_array(X, name="X")
    if is_array(X) and not is_numpy_namespace(array_namespace(X)):
        xp = array_namespace(X)
        X = check_foreign_array(est, X, xp, reset=reset, ensure_min_samples=ensure_min_samples)
    else:
        X = validate_data(
            est,
            X,
            reset=reset,
            dtype=[np.float64, np.float32],
            ensure_min_samples=ensure_min_samples,
        )
        xp = numpy_namespace()
    if backend == "cupy" and not is_cupy_namespace(xp):
        xp = cupy_namespace()
        X = to_device(X, xp)
    return X, xp


def validate_X_like_fit(est, X, *, method, fitted, backend):
    """Validate X for a method of a fitted estimator: the same namespace and device as the
    fitted array ``fitted`` (scikit-learn's rule), array-likes converted into it."""
    fitted_xp = array_namespace(fitted)
    if is_array(X):
        given_xp = array_namespace(X)
        moving = backend == "cupy" and is_cupy_namespace(fitted_xp)
        if not moving and (given_xp is not fitted_xp or device(X) != device(fitted)):
            raise ValueError(
                f"Inputs passed to {type(est).__name__}.{method}() must use the same "
                f"namespace and the same device as those passed to fit(); got "
                f"{given_xp.__name__} on {device(X)!r}, fitted on {fitted_xp.__name__} on "
                f"{device(fitted)!r}. Convert X explicitly (caproute.to_numpy, "
                "or backend='cupy')."
            )
    X, xp = validate_X(est, X, reset=False, backend=backend)
    if xp is not fitted_xp:  # an array-like (list, DataFrame) for a model fitted elsewhere
        X = xp_asarray_like(X, fitted)
        xp = fitted_xp
    return X, xp


def xp_asarray_like(X, like):
    """Host array-like data into the namespace and device of ``like`` (explicit; a copy)."""
    xp = array_namespace(like)
    return xp.astype(to_device(np.asarray(X), xp, device=device(like)), like.dtype, copy=False)


def check_foreign_array(est, X, xp, *, reset, ensure_min_samples=1):
    """scikit-learn's checks and messages for an Array API array that is not NumPy's."""
    if xp.isdtype(X.dtype, "complex floating"):
        raise ValueError(f"Complex data not supported\n{X}\n")
    if X.ndim != 2:
        raise ValueError(
            f"Expected 2D array, got {X.ndim}D array instead. Reshape your data either using "
            "array.reshape(-1, 1) if your data has a single feature or array.reshape(1, -1) "
            "if it contains a single sample."
        )
    if X.dtype not in (xp.float32, xp.float64):
        if not (xp.isdtype(X.dtype, "integral") or X.dtype == xp.bool):
            raise ValueError(f"Unsupported dtype {X.dtype} for X.")
        X = xp.astype(X, xp.float64)
    n_samples, n_features = (int(s) for s in X.shape)
    if n_samples < ensure_min_samples:
        raise ValueError(
            f"Found array with {n_samples} sample(s) (shape={tuple(X.shape)}) while a minimum "
            f"of {ensure_min_samples} is required by {type(est).__name__}."
        )
    if n_features < 1:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={tuple(X.shape)}) while a minimum of 1 is "
            f"required by {type(est).__name__}."
        )
    if bool(xp.any(xp.isnan(X))):
        raise ValueError(
            f"Input X contains NaN.\n{type(est).__name__} does not accept missing values "
            "encoded as NaN natively."
        )
    if not bool(xp.all(xp.isfinite(X))):
        raise ValueError(f"Input X contains infinity or a value too large for dtype('{X.dtype}').")
    if reset:
        est.n_features_in_ = n_features
        if hasattr(est, "feature_names_in_"):
            del est.feature_names_in_
    elif n_features != est.n_features_in_:
        raise ValueError(
            f"X has {n_features} features, but {type(est).__name__} is expecting "
            f"{est.n_features_in_} features as input."
        )
    return X


def check_weight_xp(sample_weight, X, xp):
    n = int(X.shape[0])
    if sample_weight is None:
        return xp.ones((n,), dtype=X.dtype, device=device(X))
    check_plain_array(sample_weight, name="sample_weight")
    if not is_array(sample_weight) or array_namespace(sample_weight) is not xp:
        host = np.asarray(to_numpy(sample_weight), dtype=np.float64)
        sample_weight = to_device(host, xp, device=device(X))
    sample_weight = xp.astype(sample_weight, X.dtype)
    if sample_weight.ndim != 1:
        raise ValueError("Sample weights must be 1D array or scalar")
    if int(sample_weight.shape[0]) != n:
        raise ValueError(f"sample_weight.shape == {tuple(sample_weight.shape)}, expected {(n,)}!")
    if not bool(xp.all(xp.isfinite(sample_weight))):
        raise ValueError("Input sample_weight contains NaN or infinity.")
    if bool(xp.any(sample_weight < 0)):
        raise ValueError("Negative values in data passed to `sample_weight`")
    if not bool(xp.any(sample_weight != 0)):
        raise ValueError("Sample weights must contain at least one non-zero number.")
    return sample_weight


def validate_sample_weight(sample_weight, X, xp):
    """Per-sample weights for X of namespace ``xp``: scikit-learn's checks and messages for
    NumPy, the same checks on the device for other namespaces. Weights of another library than
    X's follow X, as scikit-learn's rule for mixed inputs says (one float per sample)."""
    check_plain_array(sample_weight, name="sample_weight")  # before NumPy drops its mask
    if is_array(sample_weight) and array_namespace(sample_weight) is not xp:
        sample_weight = to_numpy(sample_weight)
    if is_numpy_namespace(xp):
        return check_sample_weight(sample_weight, X, dtype=X.dtype)
    return check_weight_xp(sample_weight, X, xp)


def small_array_like(value, like, *, name):
    """A small parameter array (initial centres, say) in the namespace and on the device of
    ``like``: array-likes and NumPy arrays are copied there explicitly; arrays of a third
    library are refused."""
    xp = array_namespace(like)
    if not is_array(value):
        return to_device(np.asarray(value, dtype=np.float64), xp, device=device(like))
    given = array_namespace(value)
    if given is xp:  # on another device of the same library: an explicit small copy
        return value if device(value) == device(like) else to_device(value, xp, device=device(like))
    if not is_numpy_namespace(given):
        raise TypeError(
            f"`{name}` must be a NumPy array or an array of the same library as X "
            f"({xp.__name__}); got {given.__name__}."
        )
    return to_device(value, xp, device=device(like))
