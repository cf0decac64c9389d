"""GaussianMixture: scikit-learn's estimator and numbers, EM over chunked sufficient statistics."""

from __future__ import annotations

import math
import numbers

import numpy as np
from sklearn.base import DensityMixin
from sklearn.cluster import KMeans, kmeans_plusplus
from sklearn.mixture import GaussianMixture as _SKGaussianMixture
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .._backend import Array, array_namespace, device, select_impl, to_device, to_numpy
from .._backend.estimator_input import validate_X, validate_X_like_fit
from .._config import BACKENDS
from .._lib.iterative_fit import IterativeFit
from .._sklearn_compat import Interval, StrOptions
from . import _gmm_math
from ._init_checks import check_means, check_precisions, check_weights


class GaussianMixture(DensityMixin, IterativeFit):
    """Gaussian mixture fitted by EM, with scikit-learn's interface and numbers.

    The same constructor parameters, defaults, fitted attributes, methods, warnings and
    messages as :class:`sklearn.mixture.GaussianMixture`, for every covariance type and
    initialisation; results agree with it (see ``tests/mixture``). The EM loop runs over
    sufficient statistics computed chunk by chunk, so a fit never holds the (n_samples,
    n_components) responsibilities: its extra memory does not grow with N x K.

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
        Covariance of each component: its own full matrix, one shared matrix, its own
        diagonal, or its own single variance.
    tol : float, default=1e-3
        Convergence threshold on the change of the lower bound (mean log-likelihood).
    reg_covar : float, default=1e-6
        Added to the diagonal of the covariances.
    max_iter : int, default=100
        Number of EM iterations (0: initialise only).
    n_init : int, default=1
        Number of initialisations; the best lower bound wins.
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default="kmeans"
        How the initial responsibilities are chosen.
    weights_init : array-like of shape (n_components,), default=None
        Initial weights (in [0, 1], summing to 1); None takes them from ``init_params``.
    means_init : array-like of shape (n_components, n_features), default=None
        Initial means; None takes them from ``init_params``.
    precisions_init : array-like, default=None
        Initial precisions, shaped per covariance type as in scikit-learn: (n_components,
        n_features, n_features) full, (n_features, n_features) tied, (n_components,
        n_features) diag, (n_components,) spherical.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation (scikit-learn's random stream, so the same seed gives
        scikit-learn's initial parameters).
    warm_start : bool, default=False
        Start the next fit from this fit's solution (with a single initialisation).
    verbose : int, default=0
        Print progress: 1 each initialisation, 2 also the time and the lower bound's change
        per iteration (scikit-learn's messages).
    verbose_interval : int, default=10
        Iterations between two progress lines.
    chunk_size : int or None, default=None
        Points per chunk of the E-step; None picks a size that keeps a chunk's temporaries
        near 16 MiB.
    backend : {"auto", "numpy", "numba", "cupy"} or None, default=None
        Where the E-step runs (see :func:`caproute.set_config`).

    Attributes
    ----------
    weights_ : array of shape (n_components,)
    means_ : array of shape (n_components, n_features)
    covariances_ : array
    precisions_ : array
    precisions_cholesky_ : array
        Upper factors ``U`` with ``precision = U U^T``.
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        Lower bound of the best initialisation (mean log-likelihood of its last E-step).
    lower_bounds_ : list of float
        Lower bound after every iteration of the best initialisation.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)

    Examples
    --------
    >>> import numpy as np
    >>> from caproute.mixture import GaussianMixture
    >>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]])
    >>> gm = GaussianMixture(n_components=2, random_state=0).fit(X)
    >>> np.round(gm.means_, 2)
    array([[10.,  2.],
           [ 1.,  2.]])
    >>> gm.predict([[0, 0], [12, 3]])
    array([1, 0])
    """

    # scikit-learn's own constraint objects for the parameters we share with it, so that
    # every message (including the order it prints option sets in) is identical
    _parameter_constraints: dict = {
        **_SKGaussianMixture._parameter_constraints,
        "chunk_size": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "backend": [StrOptions(set(BACKENDS)), None],
    }

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        chunk_size=None,
        backend=None,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.chunk_size = chunk_size
        self.backend = backend

    # ------------------------------------------------------------------ helpers
    def _chunk(self, X):
        if self.chunk_size is not None:
            return int(self.chunk_size)
        return _gmm_math.auto_chunk_size(int(X.shape[0]), int(X.shape[1]), self.n_components)

    def _params_from_stats(self, stats, *, xp, weights_over="sum"):
        weights, means, cov = _gmm_math.mstep(
            stats, self.covariance_type, self.reg_covar, xp=xp, weights_over=weights_over
        )
        return weights, means, cov, _gmm_math.precision_cholesky(cov, self.covariance_type, xp=xp)

    # ------------------------------------------------------------------ initialisation
    def _init_stats(self, X, rng, *, xp, host_X):
        """Statistics of scikit-learn's initial responsibilities, drawn from the same random
        stream in the same order, built chunk by chunk (no N x K matrix)."""
        n, K = int(X.shape[0]), self.n_components
        dtype, dev = X.dtype, device(X)
        chunk = self._chunk(X)
        if self.init_params in ("kmeans", "k-means++", "random_from_data"):
            labels = self._initial_labels(X, rng, host_X)
            # the labels go to X's device once (a no-op on the host); the one-hot
            # responsibilities are built there, chunk by chunk
            labels = to_device(labels, xp, device=dev)
            components = xp.arange(K, dtype=labels.dtype, device=dev)

            def resp_chunks():
                for start, stop in _gmm_math.chunks(n, chunk):
                    one_hot = xp.expand_dims(labels[start:stop], axis=1) == components
                    yield start, stop, xp.astype(one_hot, dtype)
        else:
            state = rng.get_state()

            def resp_chunks():
                rng.set_state(state)  # replaying the draws gives the same responsibilities
                for start, stop in _gmm_math.chunks(n, chunk):
                    # scikit-learn's draws come from the host's RandomState: explicitly moved
                    draws = rng.uniform(size=(stop - start, K))
                    r = xp.astype(to_device(draws, xp, device=dev), dtype)
                    yield start, stop, r / xp.sum(r, axis=1, keepdims=True)

        # pass 1: masses and means; pass 2 (full only): scatter around those exact means,
        # which is scikit-learn's centred formula
        total = None
        for start, stop, r in resp_chunks():
            part = _gmm_math.stats_from_resp(X[start:stop, ...], r, "diag", shift=None, xp=xp)
            total = part if total is None else _gmm_math.add_stats(total, part)
        if self.covariance_type == "full":
            eps = xp.finfo(dtype).eps
            shift = total.sx / xp.expand_dims(total.nk + 10 * eps, axis=1)
            total = None
            for start, stop, r in resp_chunks():
                part = _gmm_math.stats_from_resp(X[start:stop, ...], r, "full", shift=shift, xp=xp)
                total = part if total is None else _gmm_math.add_stats(total, part)
        elif self.covariance_type == "tied":
            total = total._replace(sxx=xp.matmul(xp.matrix_transpose(X), X))
        return total

    def _initial_labels(self, X, rng, host_X):
        """Each point's initial component on the host (NumPy, int64), -1 for none:
        scikit-learn's KMeans labels, or one point per component for "k-means++" and
        "random_from_data"; the draws come from scikit-learn's stream. KMeans and k-means++
        run on the host, on ``host_X()``: X copied there once per fit (see ``_host_X``)."""
        n, K = int(X.shape[0]), self.n_components
        if self.init_params == "kmeans":
            km = KMeans(n_clusters=K, n_init=1, random_state=rng).fit(host_X())
            return km.labels_.astype(np.int64)
        if self.init_params == "k-means++":
            _, idx = kmeans_plusplus(host_X(), K, random_state=rng)
        else:
            idx = rng.choice(n, size=K, replace=False)
        labels = np.full(n, -1, dtype=np.int64)
        labels[idx] = np.arange(K)
        return labels

    def _initial_parameters(self, X, rng, inits, *, xp, host_X):
        weights_init, means_init, precisions_init = inits
        weights = means = cov = None
        if weights_init is None or means_init is None or precisions_init is None:
            stats = self._init_stats(X, rng, xp=xp, host_X=host_X)
            weights, means, cov = _gmm_math.mstep(
                stats, self.covariance_type, self.reg_covar, xp=xp, weights_over="n_samples"
            )
        weights = weights if weights_init is None else weights_init
        means = means if means_init is None else means_init
        if precisions_init is None:
            prec_chol = _gmm_math.precision_cholesky(cov, self.covariance_type, xp=xp)
        else:
            prec_chol = _gmm_math.precision_cholesky_from_precisions(
                precisions_init, self.covariance_type, xp=xp
            )
            cov = _gmm_math.covariances_from_precisions(
                precisions_init, self.covariance_type, xp=xp
            )
        return weights, means, cov, prec_chol

    def _check_inits(self, X, *, xp):
        """Validated copies of the user's initial parameters, in X's namespace and dtype."""
        n_features = int(X.shape[1])
        out = []
        for value, check in (
            (self.weights_init, lambda v: check_weights(v, self.n_components)),
            (self.means_init, lambda v: check_means(v, self.n_components, n_features)),
            (
                self.precisions_init,
                lambda v: check_precisions(v, self.covariance_type, self.n_components, n_features),
            ),
        ):
            if value is None:
                out.append(None)
            else:
                # checked on the host (scikit-learn's checks), then moved to X's device
                arr = check(to_numpy(value) if not isinstance(value, (list, tuple)) else value)
                out.append(xp.astype(to_device(arr, xp, device=device(X)), X.dtype))
        return tuple(out)

    # ------------------------------------------------------------------ fit
    def fit(self, X: Array, y: None = None) -> GaussianMixture:
        """Estimate the parameters with EM (``n_init`` times, keeping the best).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points: NumPy or array-like, or an array of another Array API library.
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        self : object
            The fitted mixture.
        """
        self._fit(X)
        return self

    def fit_predict(self, X: Array, y: None = None) -> Array:
        """Fit, then return the most probable component of every point.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points.
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        labels : array of shape (n_samples,)
            Component labels (the same as ``fit(X).predict(X)``).
        """
        X, xp = self._fit(X)
        # a last E-step, as scikit-learn does, so that the labels match fit(X).predict(X)
        return self._labels(X, xp=xp)

    def _fit(self, X):
        """The EM fit; returns the validated X and its namespace. (``fit`` skips the final
        labels pass that ``fit_predict`` needs: they would be an N-sized array for nothing.)"""
        fit_state = self._start_fit(X)
        best = self._fit_loop(fit_state)
        self.lower_bound_ = best.score
        self.lower_bounds_ = best.history
        return fit_state["X"], fit_state["xp"]

    def _start_fit(self, X):
        self._validate_params()
        X, xp = validate_X(self, X, reset=True, backend=self._backend(), ensure_min_samples=2)
        n = int(X.shape[0])
        if n < self.n_components:
            raise ValueError(
                "Expected n_samples >= n_components but got n_components = "
                f"{self.n_components}, n_samples = {n}"
            )
        # the E-step kernel is chosen once per fit, not per iteration
        plan = select_impl("gmm_estep_stats", xp, self._backend())
        return {
            "X": X,
            "xp": xp,
            "inits": self._check_inits(X, xp=xp),
            "plan": plan,
            "chunk_size": self._chunk(X),
        }

    def _initialize(self, fit_state, random_state):
        return self._initial_parameters(
            fit_state["X"],
            random_state,
            fit_state["inits"],
            xp=fit_state["xp"],
            host_X=lambda: self._host_X(fit_state),
        )

    @staticmethod
    def _host_X(fit_state):
        """X on the host, for scikit-learn's KMeans: copied from the device explicitly, once
        per fit however many ``n_init`` runs need it (no copy for NumPy input)."""
        if fit_state.get("X_host") is None:
            fit_state["X_host"] = to_numpy(fit_state["X"])
        return fit_state["X_host"]

    def _iterate(self, fit_state, params):
        X, xp, plan = fit_state["X"], fit_state["xp"], fit_state["plan"]
        weights, means, _, prec_chol = params
        shift = means if self.covariance_type == "full" else None
        stats = plan.func(
            X,
            weights,
            means,
            prec_chol,
            self.covariance_type,
            shift=shift,
            chunk_size=fit_state["chunk_size"],
            xp=plan.xp,
        )
        return self._params_from_stats(stats, xp=xp), float(stats.loglik) / int(X.shape[0])

    def _get_parameters(self):
        return self.weights_, self.means_, self.covariances_, self.precisions_cholesky_

    def _set_parameters(self, params):
        self.weights_, self.means_, self.covariances_, self.precisions_cholesky_ = params
        self.precisions_ = _gmm_math.precisions_from_cholesky(
            self.precisions_cholesky_, self.covariance_type, xp=array_namespace(self.means_)
        )

    # ------------------------------------------------------------------ prediction
    def _per_chunk(self, X, fn, *, xp):
        """fn over chunks of X, written into one preallocated result (concatenating the
        pieces would hold the result twice)."""
        out = None
        for a, b in _gmm_math.chunks(int(X.shape[0]), self._chunk(X)):
            part = fn(X[a:b, ...])
            if out is None:
                out = xp.empty(
                    (int(X.shape[0]), *part.shape[1:]), dtype=part.dtype, device=device(X)
                )
            out[a:b, ...] = part
        return out

    def _log_prob_resp(self, X, *, xp):
        return _gmm_math.estimate_log_prob_resp(
            X, self.weights_, self.means_, self.precisions_cholesky_, self.covariance_type, xp=xp
        )

    def _labels(self, X, *, xp):
        return self._per_chunk(
            X, lambda c: xp.argmax(self._log_prob_resp(c, xp=xp)[1], axis=1), xp=xp
        )

    def _validate_for(self, X, method):
        check_is_fitted(self)
        return validate_X_like_fit(
            self, X, method=method, fitted=self.means_, backend=self._backend()
        )

    def predict(self, X: Array) -> Array:
        """The most probable component of every point.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points.

        Returns
        -------
        labels : array of shape (n_samples,)
            Component labels.
        """
        X, xp = self._validate_for(X, "predict")
        return self._labels(X, xp=xp)

    def predict_proba(self, X: Array) -> Array:
        """Posterior probability of every component for every point.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points.

        Returns
        -------
        resp : array of shape (n_samples, n_components)
            Responsibilities.
        """
        X, xp = self._validate_for(X, "predict_proba")
        return self._per_chunk(X, lambda c: xp.exp(self._log_prob_resp(c, xp=xp)[1]), xp=xp)

    def score_samples(self, X: Array) -> Array:
        """Log-likelihood of every point under the mixture.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points.

        Returns
        -------
        log_prob : array of shape (n_samples,)
            Log-densities.
        """
        X, xp = self._validate_for(X, "score_samples")
        return self._per_chunk(X, lambda c: self._log_prob_resp(c, xp=xp)[0], xp=xp)

    def score(self, X: Array, y: None = None) -> float:
        """Mean log-likelihood of X under the mixture.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points.
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        log_likelihood : float
            Mean of :meth:`score_samples`.
        """
        scores = self.score_samples(X)
        return float(array_namespace(scores).mean(scores))

    def _n_parameters(self):
        n_features = int(self.means_.shape[1])
        K = self.n_components
        cov_params = {
            "full": K * n_features * (n_features + 1) / 2.0,
            "diag": K * n_features,
            "tied": n_features * (n_features + 1) / 2.0,
            "spherical": K,
        }[self.covariance_type]
        return int(cov_params + n_features * K + K - 1)

    def bic(self, X: Array) -> float:
        """Bayesian information criterion on X (lower is better).

        Parameters
        ----------
        X : array of shape (n_samples, n_features)
            Points.

        Returns
        -------
        bic : float
            ``-2 * score(X) * n_samples + n_parameters * log(n_samples)``.
        """
        return -2 * self.score(X) * X.shape[0] + self._n_parameters() * math.log(X.shape[0])

    def aic(self, X: Array) -> float:
        """Akaike information criterion on X (lower is better).

        Parameters
        ----------
        X : array of shape (n_samples, n_features)
            Points.

        Returns
        -------
        aic : float
            ``-2 * score(X) * n_samples + 2 * n_parameters``.
        """
        return -2 * self.score(X) * X.shape[0] + 2 * self._n_parameters()

    def sample(self, n_samples: int = 1) -> tuple[Array, Array]:
        """Draw points from the fitted mixture (scikit-learn's random stream).

        Parameters
        ----------
        n_samples : int, default=1
            Number of points.

        Returns
        -------
        X : array of shape (n_samples, n_features)
            The points, float64.
        y : array of shape (n_samples,)
            Their components.
        """
        check_is_fitted(self)
        xp = array_namespace(self.means_)
        if n_samples < 1:
            # scikit-learn's message, which prints n_components where it means n_samples
            raise ValueError(
                f"Invalid value for 'n_samples': {self.n_components:d} . The sampling requires "
                "at least one sample."
            )
        n_features = int(self.means_.shape[1])
        rng = check_random_state(self.random_state)
        weights, means = to_numpy(self.weights_), to_numpy(self.means_)
        covariances = to_numpy(self.covariances_)
        counts = rng.multinomial(n_samples, weights)
        if self.covariance_type == "full":
            X = np.vstack(
                [
                    rng.multivariate_normal(m, c, int(s))
                    for m, c, s in zip(means, covariances, counts, strict=True)
                ]
            )
        elif self.covariance_type == "tied":
            X = np.vstack(
                [
                    rng.multivariate_normal(m, covariances, int(s))
                    for m, s in zip(means, counts, strict=True)
                ]
            )
        else:
            X = np.vstack(
                [
                    m + rng.standard_normal(size=(s, n_features)) * np.sqrt(c)
                    for m, c, s in zip(means, covariances, counts, strict=True)
                ]
            )
        y = np.concatenate([np.full(int(s), j, dtype=np.int64) for j, s in enumerate(counts)])
        # drawn on the host (scikit-learn's random stream), moved to the model's device
        dev = device(self.means_)
        return to_device(X, xp, device=dev), to_device(y, xp, device=dev)
