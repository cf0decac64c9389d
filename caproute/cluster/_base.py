"""What the two routing estimators share: input validation on any Array API namespace,
standardisation, initial centres, the iteration loop with its stopping rule, and the ordering
of the fitted clusters."""

from __future__ import annotations

import numbers
import warnings

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, check_is_fitted

from .._backend import (
    array_namespace,
    device,
    is_array,
    is_numpy_namespace,
    to_numpy,
)
from .._config import BACKENDS, get_config
from .._lib.estimator_input import check_weight_xp, validate_X, validate_X_like_fit
from ._initial_centres import kmeans_plusplus, random_rows


class _RoutingClusteringBase(
    ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, BaseEstimator
):
    """Shared machinery; subclasses provide ``_start``, ``_step``, ``_finish`` and ``_assign``."""

    _parameter_constraints: dict = {
        "n_clusters": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "init": [StrOptions({"k-means++", "random"}), "array-like"],
        "random_state": ["random_state"],
        "backend": [StrOptions(set(BACKENDS)), None],
    }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.array_api_support = True
        return tags

    # ------------------------------------------------------------------ validation
    def _backend(self):
        return get_config()["backend"] if self.backend is None else self.backend

    def _validate_X(self, X, *, reset):
        return validate_X(self, X, reset=reset, backend=self._backend())

    def _validate_fit_input(self, X, sample_weight):
        X, xp = self._validate_X(X, reset=True)
        n_samples = int(X.shape[0])
        if n_samples < self.n_clusters:
            raise ValueError(f"n_samples={n_samples} should be >= n_clusters={self.n_clusters}.")
        if is_array(sample_weight) and array_namespace(sample_weight) is not xp:
            # scikit-learn's rule for mixed inputs: everything follows X (one float per sample)
            sample_weight = to_numpy(sample_weight)
        if is_numpy_namespace(xp):
            sample_weight = _check_sample_weight(
                sample_weight, X, dtype=X.dtype, ensure_non_negative=True
            )
        else:
            sample_weight = check_weight_xp(sample_weight, X, xp)
        return X, xp, sample_weight

    def _initial_centres(self, Z, sample_weight, rng, *, xp):
        if isinstance(self.init, str):
            n_positive = int(xp.sum(xp.astype(sample_weight > 0, xp.int64)))
            if self.init == "random" and n_positive < self.n_clusters:
                raise ValueError(
                    f"init='random' needs at least n_clusters={self.n_clusters} samples with a "
                    f"positive weight; got {n_positive}."
                )
            pick = kmeans_plusplus if self.init == "k-means++" else random_rows
            return pick(Z, self.n_clusters, sample_weight=sample_weight, rng=rng, xp=xp)
        init = self.init
        if not is_array(init):
            init = xp.asarray(np.asarray(init, dtype=np.float64), device=device(Z))
        elif array_namespace(init) is not xp:
            if not is_numpy_namespace(array_namespace(init)):
                raise TypeError(
                    f"`init` must be a NumPy array or an array of the same library as X "
                    f"({xp.__name__}); got {array_namespace(init).__name__}."
                )
            init = xp.asarray(init, device=device(Z))  # k x d centres: an explicit small copy
        shape = tuple(int(s) for s in init.shape)
        expected = (self.n_clusters, self.n_features_in_)
        if shape != expected:
            raise ValueError(
                f"The shape of the initial centers {shape} does not match the number of "
                f"clusters {self.n_clusters} and features {self.n_features_in_}; expected "
                f"{expected}."
            )
        init = xp.astype(init, Z.dtype)
        if not bool(xp.all(xp.isfinite(init))):
            raise ValueError("`init` must contain only finite values.")
        return (init - self._mean) / self._scale

    # ------------------------------------------------------------------ fitting
    def _fit(self, X, sample_weight):
        self._validate_params()
        X, xp, sample_weight = self._validate_fit_input(X, sample_weight)
        rng = check_random_state(self.random_state)
        # Isotropic standardisation: centre on the weighted mean and divide by one overall
        # scale, so distances keep their geometry while the routing options become unit-free.
        w = sample_weight / xp.max(sample_weight)
        mean = xp.sum(xp.expand_dims(w, axis=1) * X, axis=0) / xp.sum(w)
        diff = X - mean
        scale = xp.sqrt(xp.sum(xp.expand_dims(w, axis=1) * diff * diff) / (xp.sum(w) * X.shape[1]))
        if not float(scale) > 0:
            scale = xp.ones_like(scale)
        self._mean, self._scale = mean, scale
        Z = diff / scale

        centres = self._initial_centres(Z, sample_weight, rng, xp=xp)
        state = self._start(Z, w, centres, xp=xp)
        converged, shift, n_done = False, float("inf"), 1
        while n_done < self.n_iter:
            prev = state["pose"]
            state = self._step(Z, w, state, xp=xp)
            n_done += 1
            diff = state["pose"] - prev
            shift = float(xp.sum(diff * diff))
            if shift <= self.tol:
                converged = True
                break
        self.n_iter_ = n_done
        if not converged and self.n_iter > 1:
            warnings.warn(
                f"{type(self).__name__} did not converge after n_iter={self.n_iter} iterations: "
                f"the parents moved by {shift:.3g} (squared, in standardised units) > "
                f"tol={self.tol}. Increase n_iter or tol.",
                ConvergenceWarning,
                stacklevel=2,
            )
        self._finish(state, xp=xp)
        labels = xp.argmax(self._assign(Z, xp=xp), axis=1)
        self._reorder(labels, xp=xp)
        self.labels_ = xp.argmax(self._assign(Z, xp=xp), axis=1)
        self.active_clusters_ = self.activations_ > 0.5
        self.n_active_clusters_ = int(xp.sum(xp.astype(self.active_clusters_, xp.int64)))
        self._n_features_out = self.n_clusters
        return self

    def _reorder(self, labels, *, xp):
        """Put the clusters that own training points first (keeping their order), so labels
        run 0 .. m-1 without gaps, as scikit-learn's clusterers promise."""
        counts = [int(xp.sum(xp.astype(labels == j, xp.int64))) for j in range(self.n_clusters)]
        order = [j for j in range(self.n_clusters) if counts[j] > 0]
        order += [j for j in range(self.n_clusters) if counts[j] == 0]
        if order != list(range(self.n_clusters)):
            self._permute(xp.asarray(order, device=device(labels)), xp=xp)

    # ------------------------------------------------------------------ prediction
    def _prepare(self, X, method):
        check_is_fitted(self)
        X, xp = validate_X_like_fit(self, X, method=method, fitted=self._mean, backend=self._backend())
        return (X - self._mean) / self._scale, xp

    def transform(self, X):
        """Each point's assignment to every cluster, as a new child would be routed.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            New points.

        Returns
        -------
        assignments : array of shape (n_samples, n_clusters)
            Couplings (dynamic routing) or assignments ``R`` (EM routing), in the namespace
            and dtype of the fitted data.
        """
        Z, xp = self._prepare(X, "transform")
        return self._assign(Z, xp=xp)

    def predict(self, X):
        """The cluster each point routes to most.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            New points.

        Returns
        -------
        labels : array of shape (n_samples,)
            Index of the cluster with the largest assignment.
        """
        Z, xp = self._prepare(X, "predict")
        return xp.argmax(self._assign(Z, xp=xp), axis=1)
