"""What the two routing estimators share: input validation on any Array API namespace,
standardisation, initial centres, the fit driver's hooks with their stopping rule, and the
ordering of the fitted clusters.

**Data at any scale.** X is first divided by ``unit``, the power of two at or below its
largest magnitude, and only then centred and scaled. Dividing by a power of two is exact, so
the standardised points are the same, bit for bit, as without it wherever the plain
computation does not overflow or underflow; where it would (|X| near 1e154 or 1e-154 in
float64, 1e19 or 1e-19 in float32, whose squares leave the dtype), the fit sees the same
standardised points as for X rescaled to unit size. Points far outside the training data at
predict time, and fits whose routing overflows all the same, give an error that names the
argument, never NaN or an arbitrary label.
"""

from __future__ import annotations

import math
import numbers
import warnings

from sklearn.base import ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .._backend import Array, array_namespace, device, overflow_quiet, select_impl, to_numpy
from .._backend.estimator_input import (
    small_array_like,
    validate_sample_weight,
    validate_X,
    validate_X_like_fit,
)
from .._config import BACKENDS
from .._lib.iterative_fit import IterativeFit
from .._lib.validation import as_array, cast_like, dtype_name
from .._sklearn_compat import Hidden, Interval, StrOptions
from ._initial_centres import kmeans_plusplus, random_rows


def _standardisation(X, w, *, xp):
    """``(unit, mean, scale)`` with ``Z = (X / unit - mean) / scale``: ``unit`` is the power
    of two at or below the largest magnitude of X (1 for X = 0), so that X / unit is exact and
    lies in (-2, 2); ``mean`` and ``scale`` are the weighted mean and the isotropic standard
    deviation of X / unit, which cannot overflow or underflow there."""
    largest = xp.max(xp.abs(X))
    largest = xp.where(largest > 0, largest, xp.ones_like(largest))
    unit = 2.0 ** xp.floor(xp.log2(largest))
    Xu = X / unit
    wc = xp.expand_dims(w, axis=1)
    mean = xp.sum(wc * Xu, axis=0) / xp.sum(w)
    diff = Xu - mean
    scale = xp.sqrt(xp.sum(wc * diff * diff) / (xp.sum(w) * X.shape[1]))
    return unit, mean, scale


def _reach_limit(Z, *, xp):
    """The largest standardised magnitude whose squared distances, summed over the features
    of Z, stay finite in Z's dtype (with a margin of 16 for the differences between points)."""
    return math.sqrt(float(xp.finfo(Z.dtype).max) / max(int(Z.shape[1]), 1)) / 4.0


class _RoutingClusteringBase(
    ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, IterativeFit
):
    """Shared machinery; subclasses provide ``_step_op`` (the routing-step operation),
    ``_initial_params``, ``_iterate``, ``_run_score``, ``_end_state``, ``_permute`` and
    ``_assign``. Every fit step is one routing iteration through the step kernel selected once
    per fit: no validation and no copy inside the loop."""

    _parameter_constraints: dict = {
        "n_clusters": [Interval(numbers.Integral, 1, None, closed="left")],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_iter": [
            Interval(numbers.Integral, 1, None, closed="left"),
            Hidden(StrOptions({"deprecated"})),
        ],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "n_init": [Interval(numbers.Integral, 1, None, closed="left")],
        "init": [StrOptions({"k-means++", "random"}), "array-like"],
        "random_state": ["random_state"],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "verbose_interval": [Interval(numbers.Integral, 1, None, closed="left")],
        "backend": [StrOptions(set(BACKENDS)), None],
    }

    _change_label = "shift"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.array_api_support = True
        return tags

    # ------------------------------------------------------------------ options
    def _effective_max_iter(self):
        if isinstance(self.n_iter, str):  # "deprecated": not set
            return self.max_iter
        warnings.warn(
            f"`n_iter` was renamed `max_iter` in caproute 0.2 and will be removed in 0.3; "
            f"use max_iter={self.n_iter}.",
            FutureWarning,
            stacklevel=4,
        )
        return self.n_iter

    def _change(self, prev_params, params, prev_score, score):
        if prev_params["pose"] is None:  # the first iteration has nothing to compare with
            return math.inf
        diff = params["pose"] - prev_params["pose"]
        xp = array_namespace(diff)
        change = float(xp.sum(diff * diff))
        if math.isnan(change):  # the routing overflowed: stop now, with the reason
            raise self._overflow_error(dtype_name(diff.dtype))
        return change

    def _overflow_error(self, dtype):
        """The error for a fit whose routing overflowed although X was standardised."""
        return ValueError(
            f"{type(self).__name__} could not fit `X` in {dtype}: routing overflowed (the "
            f"clusters became NaN). {self._overflow_advice(dtype)}"
        )

    def _overflow_advice(self, dtype):
        return "Use options closer to the defaults."

    def _converged(self, change):
        return change <= self.tol

    def _convergence_warning(self, change):
        max_iter = self.max_iter if isinstance(self.n_iter, str) else self.n_iter
        if max_iter <= 1:  # one iteration has nothing to compare with
            return None
        return (
            f"{type(self).__name__} did not converge after max_iter={max_iter} iterations: "
            f"the parents moved by {change:.3g} (squared, in standardised units) > "
            f"tol={self.tol}. Increase max_iter or tol."
        )

    # ------------------------------------------------------------------ validation
    def _validate_X(self, X, *, reset):
        return validate_X(self, X, reset=reset, backend=self._backend())

    def _validate_fit_input(self, X, sample_weight):
        X, xp = self._validate_X(X, reset=True)
        n_samples = int(X.shape[0])
        if n_samples < self.n_clusters:
            raise ValueError(f"n_samples={n_samples} should be >= n_clusters={self.n_clusters}.")
        return X, xp, validate_sample_weight(sample_weight, X, xp)

    def _check_reach(self, Z, *, xp, name, what):
        """Refuse standardised points so far out that routing would overflow on them."""
        limit = _reach_limit(Z, xp=xp)
        with overflow_quiet(Z):
            reach = float(xp.max(xp.abs(Z)))
        if not reach <= limit:
            raise ValueError(
                f"`{name}` lies too far from {what} for {dtype_name(Z.dtype)}: measured in "
                f"standard deviations of that data from its mean, it reaches {reach:.3g}; at "
                f"most {limit:.3g} can be routed. Check that `{name}` is in the units of {what}."
            )

    def _standardise(self, X, *, xp):
        with overflow_quiet(X):
            return (X / self._unit - self._mean) / self._scale

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
        init = as_array(self.init, name="init")  # a clear error for ragged or non-numeric init
        init = small_array_like(init, Z, name="init")  # k x d: an explicit small copy
        shape = tuple(int(s) for s in init.shape)
        expected = (self.n_clusters, self.n_features_in_)
        if shape != expected:
            raise ValueError(
                f"The shape of the initial centers {shape} does not match the number of "
                f"clusters {self.n_clusters} and features {self.n_features_in_}; expected "
                f"{expected}."
            )
        if not xp.isdtype(init.dtype, "real floating"):
            init = xp.astype(init, xp.float64)
        if not bool(xp.all(xp.isfinite(init))):
            raise ValueError("`init` must contain only finite values.")
        init = cast_like(init, Z, name="init", ref_name="X", xp=xp)
        centres = self._standardise(init, xp=xp)
        self._check_reach(centres, xp=xp, name="init", what="the training data `X`")
        return centres

    # ------------------------------------------------------------------ fitting
    def _fit(self, X, sample_weight):
        self._validate_params()
        fit_state = self._start_fit(X, sample_weight)
        self._fit_loop(fit_state)
        self._end_fit(fit_state)
        return self

    def _start_fit(self, X, sample_weight):
        warm = self.warm_start and hasattr(self, "converged_")
        X, xp, sample_weight = self._validate_fit_input(X, sample_weight)
        w = sample_weight / xp.max(sample_weight)
        if not warm:
            # Isotropic standardisation: centre on the weighted mean and divide by one overall
            # scale, so distances keep their geometry while the routing options become
            # unit-free. A warm start keeps the previous fit's units, which its parents live in.
            unit, mean, scale = _standardisation(X, w, xp=xp)
            if not float(scale) > 0:
                scale = xp.ones_like(scale)
            self._unit, self._mean, self._scale = unit, mean, scale
            self._check_units(X, xp=xp)
        Z = self._standardise(X, xp=xp)
        if warm:
            self._check_reach(Z, xp=xp, name="X", what="the data of the previous fit")
        fit_state = {
            "xp": xp,
            "X": X,
            "Z": Z,
            "sample_weight": sample_weight,
            "w": w,
            # the routing-step kernel, chosen once per fit
            "plan": select_impl(self._step_op, xp, self._backend()),
        }
        self._prepare_routing(fit_state)
        return fit_state

    def _initialize(self, fit_state, random_state):
        xp = fit_state["xp"]
        centres = self._initial_centres(
            fit_state["Z"], fit_state["sample_weight"], random_state, xp=xp
        )
        return self._initial_params(fit_state, centres)

    def _get_parameters(self):
        return self._state

    def _run_score(self, fit_state, params, score):
        if fit_state["n_runs"] == 1:  # a single run needs no score to be chosen by
            return 0.0
        return self._objective(fit_state, params)

    def _set_parameters(self, params):
        self._state = params

    def _check_units(self, X, *, xp):
        """Hook: refuse X whose fitted attributes cannot be expressed in its units, before
        the fit (the check after it, ``_attributes_finite``, is the exact one)."""

    def _attributes_finite(self, *, xp):
        """A 0-d boolean array: whether the fitted attributes are finite in X's units."""
        return xp.all(xp.isfinite(self.cluster_centers_))

    def _units_error(self, X, *, xp, what="the cluster centres", direction="large"):
        dtype = dtype_name(X.dtype)
        largest = float(xp.max(xp.abs(X)))
        if direction == "large":
            remedy = f"Divide X by a constant, such as its largest magnitude ({largest:.3g}),"
        else:
            remedy = f"Multiply X by a constant, such as 1 / its largest magnitude ({largest:.3g}),"
        wider = ", or pass float64" if dtype == "float32" else ""
        too = "overflow" if direction == "large" else f"fall below {dtype}'s normal range"
        return ValueError(
            f"`X` is too {direction} for {type(self).__name__} in {dtype}: {what} {too} in "
            f"X's units. {remedy} before fitting{wider}."
        )

    def _end_fit(self, fit_state):
        xp, Z = fit_state["xp"], fit_state["Z"]
        self._end_state(self._state, xp=xp)
        assignments = self._assign(Z, xp=xp)
        # one transfer for both checks: routing did not overflow (a fit of max_iter=1 has no
        # change to catch it by), and the fitted attributes are finite in X's units
        routed = xp.logical_and(
            xp.all(xp.isfinite(assignments)), xp.all(xp.isfinite(self._state["pose"]))
        )
        routed, expressed = (
            bool(b) for b in to_numpy(xp.stack([routed, self._attributes_finite(xp=xp)]))
        )
        if not routed:
            raise self._overflow_error(dtype_name(Z.dtype))
        if not expressed:
            raise self._units_error(fit_state["X"], xp=xp)
        labels = xp.argmax(assignments, axis=1)
        if self._reorder(labels, xp=xp):
            # recomputed, not relabelled, so that ties resolve as predict(X) resolves them
            labels = xp.argmax(self._assign(Z, xp=xp), axis=1)
        self.labels_ = labels
        self.active_clusters_ = self.activations_ > 0.5
        self.n_active_clusters_ = int(xp.sum(xp.astype(self.active_clusters_, xp.int64)))
        self._n_features_out = self.n_clusters

    def _reorder(self, labels, *, xp):
        """Put the clusters that own training points first (keeping their order), so labels
        run 0 .. m-1 without gaps, as scikit-learn's clusterers promise. Returns whether the
        clusters moved."""
        one_hot = xp.expand_dims(labels, axis=1) == xp.arange(
            self.n_clusters, device=device(labels)
        )
        counts = to_numpy(xp.sum(xp.astype(one_hot, xp.int64), axis=0))  # one transfer
        order = [j for j in range(self.n_clusters) if counts[j] > 0]
        order += [j for j in range(self.n_clusters) if counts[j] == 0]
        if order == list(range(self.n_clusters)):
            return False
        self._permute(xp.asarray(order, device=device(labels)), xp=xp)
        return True

    # ------------------------------------------------------------------ prediction
    def _prepare(self, X, method):
        check_is_fitted(self)
        X, xp = validate_X_like_fit(
            self, X, method=method, fitted=self._mean, backend=self._backend()
        )
        return self._standardise(X, xp=xp), xp

    def _checked(self, Z, *results, xp):
        """``results`` (computed from the standardised new points Z), or a clear error naming
        X where points far outside the training data made them overflow."""
        finite = None
        for r in results:
            ok = xp.all(xp.isfinite(r))
            finite = ok if finite is None else xp.logical_and(finite, ok)
        if bool(finite):
            return results if len(results) > 1 else results[0]
        with overflow_quiet(Z):
            reach = float(xp.max(xp.abs(Z)))
        raise ValueError(
            f"`X` lies too far from the data {type(self).__name__} was fitted on for its "
            f"assignments to be computed in {dtype_name(Z.dtype)}: measured in standard "
            f"deviations of the training data from its mean, it reaches {reach:.3g}. Check "
            "that X is in the units of the training data."
        )

    def transform(self, X: Array) -> Array:
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
        return self._checked(Z, self._assign(Z, xp=xp), xp=xp)

    def predict(self, X: Array) -> Array:
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
        return xp.argmax(self._checked(Z, self._assign(Z, xp=xp), xp=xp), axis=1)
