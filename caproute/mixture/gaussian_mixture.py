"""GaussianMixture: scikit-learn's estimator and numbers, EM over chunked sufficient statistics."""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np
from sklearn.base import DensityMixin
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture as _SKGaussianMixture
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .._backend import (
    Array,
    array_namespace,
    device,
    is_numpy_namespace,
    select_impl,
    to_device,
    to_numpy,
)
from .._backend.dask_arrays import is_dask_array
from .._backend.estimator_input import validate_sample_weight, validate_X, validate_X_like_fit
from .._config import BACKENDS
from .._lib.iterative_fit import IterativeFit
from .._sklearn_compat import Interval, StrOptions
from . import _gmm_math, _online
from ._choice import choice_without_replacement
from ._init_checks import check_means, check_precisions, check_weights
from ._kmeans_plusplus import kmeans_plusplus_indices
from ._sources import ArraySource, ChunkedSource, is_out_of_core


class GaussianMixture(DensityMixin, IterativeFit):
    """Gaussian mixture fitted by EM, with scikit-learn's interface and numbers.

    The same constructor parameters, defaults, fitted attributes, methods, warnings and
    messages as :class:`sklearn.mixture.GaussianMixture`, for every covariance type and
    initialisation; results agree with it (see ``tests/mixture``). The EM loop runs over
    sufficient statistics computed chunk by chunk, so a fit never holds the (n_samples,
    n_components) responsibilities, and no initialisation holds anything N-sized beyond what
    scikit-learn's KMeans needs for ``init_params="kmeans"``.

    Beyond scikit-learn: ``sample_weight`` in :meth:`fit`, :meth:`fit_predict` and
    :meth:`partial_fit` (online EM); X may also be a NumPy memmap, a Zarr or h5py array, a
    list of 2-D arrays (read chunk by chunk, once per iteration) or a ``dask.array.Array``
    (per-block statistics on the cluster; the per-point methods then return lazy arrays).
    See ``docs/out_of_core.md``.

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
    n_samples_seen_ : int or float
        Total weight of the points fitted (their number without ``sample_weight``); for
        :meth:`partial_fit`, of all the chunks seen so far.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (`n_features_in_`,)

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
    def _chunk(self, n_samples, n_features):
        if self.chunk_size is not None:
            return int(self.chunk_size)
        return _gmm_math.auto_chunk_size(n_samples, n_features, self.n_components)

    def _params_from_stats(self, stats, *, xp, weights_over="sum"):
        weights, means, cov = _gmm_math.mstep(
            stats, self.covariance_type, self.reg_covar, xp=xp, weights_over=weights_over
        )
        return weights, means, cov, _gmm_math.precision_cholesky(cov, self.covariance_type, xp=xp)

    def _source(self, X, sample_weight, *, reset, method=None):
        """The points as a data source (``_sources``): validated in memory, or read in
        chunks; ``reset`` (fit) records ``n_features_in_``, otherwise X is checked against
        the fit (its namespace and device, its number of features)."""
        backend = self._backend()
        name = type(self).__name__
        if is_dask_array(X):
            from ._dask_source import DaskSource

            source = DaskSource(X, sample_weight, est_name=name, check_now=reset)
        elif is_out_of_core(X):
            if self.chunk_size is not None:
                rows = int(self.chunk_size)
            else:
                rows = None
            source = ChunkedSource.from_data(
                X, sample_weight, chunk_rows=rows, backend=backend, est_name=name
            )
        else:
            if reset:
                X, xp = validate_X(self, X, reset=True, backend=backend, ensure_min_samples=2)
            else:
                X, xp = validate_X_like_fit(
                    self, X, method=method, fitted=self.means_, backend=backend
                )
            w = None if sample_weight is None else validate_sample_weight(sample_weight, X, xp)
            n, d = (int(s) for s in X.shape)
            return ArraySource(X, w, xp=xp, chunk_size=self._chunk(n, d))
        if reset:
            if source.n_samples < 2:
                raise ValueError(
                    f"Found array with {source.n_samples} sample(s) while a minimum of 2 is "
                    f"required by {name}."
                )
            self.n_features_in_ = source.n_features
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        elif source.n_features != self.n_features_in_:
            raise ValueError(
                f"X has {source.n_features} features, but {name} is expecting "
                f"{self.n_features_in_} features as input."
            )
        return source

    # ------------------------------------------------------------------ initialisation
    def _init_stats(self, source, rng):
        """Statistics of scikit-learn's initial responsibilities, drawn from the same random
        stream in the same order, built chunk by chunk (no N x K matrix, nothing N-sized
        beyond what scikit-learn's KMeans itself holds for ``"kmeans"``)."""
        xp, K = source.xp, self.n_components
        if self.init_params in ("k-means++", "random_from_data"):
            # one point per component: the statistics of those rows alone are the statistics
            # of the one-hot responsibilities (every other point adds exact zeros)
            idx = _initial_indices(source, K, self.init_params, rng)
            Xr, wr = source.rows(idx)
            one_hot = xp.eye(K, dtype=Xr.dtype, device=device(Xr))
            pass_stats = lambda cov_type, shift: _gmm_math.stats_from_resp(  # noqa: E731
                Xr, one_hot, cov_type, shift=shift, xp=xp, sample_weight=wr
            )
            stats = pass_stats("diag", None)
            if self.covariance_type == "full":
                stats = pass_stats("full", _init_means(stats, xp=xp))
            elif self.covariance_type == "tied":
                stats = stats._replace(sxx=_weighted_gram(source))
            return stats._replace(n=source.total_weight())
        if self.init_params == "kmeans":
            resp = _kmeans_resp(source, K, rng)
        else:
            resp = _RandomResp(source, K, rng)

        def one_pass(cov_type, shift):
            fn = functools.partial(_resp_block_stats, cov_type=cov_type, shift=shift, xp=xp)
            return source.reduce_indexed(fn, resp)

        # pass 1: masses and means; pass 2 (full only): scatter around those exact means,
        # which is scikit-learn's centred formula
        stats = one_pass("tied" if self.covariance_type == "tied" else "diag", None)
        if self.covariance_type == "full":
            stats = one_pass("full", _init_means(stats, xp=xp))
        return stats._replace(n=source.total_weight())

    def _initial_parameters(self, source, rng, inits):
        xp = source.xp
        weights_init, means_init, precisions_init = inits
        weights = means = cov = None
        if weights_init is None or means_init is None or precisions_init is None:
            stats = self._init_stats(source, rng)
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

    def _check_inits(self, source):
        """Validated copies of the user's initial parameters, in X's namespace and dtype."""
        xp, n_features = source.xp, source.n_features
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
                arr = to_device(np.asarray(arr), xp, device=source.device)
                out.append(xp.astype(arr, source.dtype))
        return tuple(out)

    # ------------------------------------------------------------------ fit
    def fit(self, X: Array, y: None = None, sample_weight: Array | None = None) -> GaussianMixture:
        """Estimate the parameters with EM (``n_init`` times, keeping the best).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points: NumPy or array-like, an array of another Array API library, or data read
            chunk by chunk (a NumPy memmap, a Zarr or h5py array, a list of 2-D arrays, or a
            ``dask.array.Array``; see ``docs/out_of_core.md``).
        y : Ignored
            Not used, present for API consistency.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of every point: a weight of k counts the point k times, a
            weight of 0 leaves it out. None weighs every point 1.

        Returns
        -------
        self : object
            The fitted mixture.
        """
        self._fit(X, sample_weight)
        return self

    def fit_predict(self, X: Array, y: None = None, sample_weight: Array | None = None) -> Array:
        """Fit, then return the most probable component of every point.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points (any input :meth:`fit` accepts).
        y : Ignored
            Not used, present for API consistency.
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of every point (see :meth:`fit`).

        Returns
        -------
        labels : array of shape (n_samples,)
            Component labels (the same as ``fit(X).predict(X)``).
        """
        source = self._fit(X, sample_weight)
        # a last E-step, as scikit-learn does, so that the labels match fit(X).predict(X)
        return self._map_chunks(source, self._chunk_labels, "labels")

    def _fit(self, X, sample_weight):
        """The EM fit; returns the data source. (``fit`` skips the final labels pass that
        ``fit_predict`` needs: they would be an N-sized array for nothing.)"""
        fit_state = self._start_fit(X, sample_weight)
        best = self._fit_loop(fit_state)
        self.lower_bound_ = best.score
        self.lower_bounds_ = best.history
        self.n_samples_seen_ = fit_state["total_weight"]
        return fit_state["source"]

    def _start_fit(self, X, sample_weight):
        self._validate_params()
        source = self._source(X, sample_weight, reset=True)
        self._check_n_samples(source)
        # the E-step kernel is chosen once per fit, not per iteration
        plan = select_impl("gmm_estep_stats", source.xp, self._backend())
        return {
            "source": source,
            "xp": source.xp,
            "inits": self._check_inits(source),
            "plan": plan,
            "total_weight": source.total_weight(),
        }

    def _check_n_samples(self, source):
        n = source.n_samples
        if n < self.n_components:
            raise ValueError(
                "Expected n_samples >= n_components but got n_components = "
                f"{self.n_components}, n_samples = {n}"
            )

    def _initialize(self, fit_state, random_state):
        return self._initial_parameters(fit_state["source"], random_state, fit_state["inits"])

    def _estep(self, source, plan, params):
        """E-step statistics of all the source's points under ``params``."""
        weights, means, _, prec_chol = params
        shift = means if self.covariance_type == "full" else None
        chunk = self._chunk(source.n_samples, source.n_features)
        return source.reduce(
            functools.partial(
                _estep_block,
                plan.func,
                weights=weights,
                means=means,
                prec_chol=prec_chol,
                covariance_type=self.covariance_type,
                shift=shift,
                chunk_size=chunk,
                xp=plan.xp,
            )
        )

    def _iterate(self, fit_state, params):
        stats = self._estep(fit_state["source"], fit_state["plan"], params)
        score = float(stats.loglik) / fit_state["total_weight"]
        return self._params_from_stats(stats, xp=fit_state["xp"]), score

    # ------------------------------------------------------------------ streaming
    def partial_fit(
        self, X: Array, y: None = None, sample_weight: Array | None = None
    ) -> GaussianMixture:
        """One step of online EM on a chunk of points.

        The first call initialises the mixture from this chunk (``init_params`` or the
        given initial parameters, one initialisation). Every call then runs one E-step on
        the chunk under the current parameters and moves the sufficient statistics toward
        the chunk's, with step ``gamma = w / (W + w)``, where ``w`` is the chunk's total
        weight and ``W`` the weight seen before it (``n_samples_seen_``), followed by an
        M-step: online EM (Cappé and Moulines, 2009) whose step size makes every point seen
        so far count equally. A mixture fitted by :meth:`fit` continues from its fit, whose
        points count as ``n_samples_seen_``. To fit data that is all available, prefer
        :meth:`fit` on a memmap, a Zarr array or a list of chunks: it runs exact EM over
        all of it.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The chunk's points (at least ``n_components`` of them for the first call).
        y : Ignored
            Not used, present for API consistency.
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of every point (see :meth:`fit`).

        Returns
        -------
        self : object
            The updated mixture.
        """
        first = not hasattr(self, "means_")
        if first:
            self._validate_params()
        source = self._source(X, sample_weight, reset=first, method="partial_fit")
        xp = source.xp
        plan = select_impl("gmm_estep_stats", xp, self._backend())
        w = source.total_weight()
        if first:
            self._check_n_samples(source)
            rng = check_random_state(self.random_state)
            params = self._initial_parameters(source, rng, self._check_inits(source))
            seen = 0.0
            self.n_iter_ = 0
        else:
            params = self._get_parameters()
            seen = self.n_samples_seen_
        stats = self._estep(source, plan, params)
        gamma = w / (seen + w)
        running = _online.stats_from_params(params, self.covariance_type, self.reg_covar, xp=xp)
        blended = _online.blend_stats(running, _online.scale_stats(stats, 1.0 / w), gamma)
        self._set_parameters(self._params_from_stats(blended, xp=xp))
        self.lower_bound_ = float(stats.loglik) / w
        self.lower_bounds_ = [self.lower_bound_]
        self.n_iter_ += 1
        self.converged_ = False
        self.n_samples_seen_ = seen + w
        return self

    def _get_parameters(self):
        return self.weights_, self.means_, self.covariances_, self.precisions_cholesky_

    def _set_parameters(self, params):
        self.weights_, self.means_, self.covariances_, self.precisions_cholesky_ = params
        self.precisions_ = _gmm_math.precisions_from_cholesky(
            self.precisions_cholesky_, self.covariance_type, xp=array_namespace(self.means_)
        )

    # ------------------------------------------------------------------ prediction
    def _map_chunks(self, source, fn, kind):
        """fn over the source's chunks, written into one preallocated result (concatenating
        the pieces would hold the result twice); a lazy array for Dask input."""
        if hasattr(source, "map_blocks"):
            return source.map_blocks(fn, kind, self.n_components)
        xp, out = source.xp, None
        for start, Xc, _ in source.chunks():
            part = fn(Xc, xp=xp)
            if out is None:
                out = xp.empty(
                    (source.n_samples, *part.shape[1:]), dtype=part.dtype, device=device(part)
                )
            out[start : start + int(Xc.shape[0]), ...] = part
        return out

    def _log_prob_resp(self, X, *, xp):
        return _gmm_math.estimate_log_prob_resp(
            X, self.weights_, self.means_, self.precisions_cholesky_, self.covariance_type, xp=xp
        )

    def _chunk_labels(self, X, *, xp):
        return xp.argmax(self._log_prob_resp(X, xp=xp)[1], axis=1)

    def _chunk_proba(self, X, *, xp):
        return xp.exp(self._log_prob_resp(X, xp=xp)[1])

    def _chunk_scores(self, X, *, xp):
        return self._log_prob_resp(X, xp=xp)[0]

    def _validate_for(self, X, method):
        check_is_fitted(self)
        return self._source(X, None, reset=False, method=method)

    def predict(self, X: Array) -> Array:
        """The most probable component of every point.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points (any input :meth:`fit` accepts; a lazy array for a Dask array).

        Returns
        -------
        labels : array of shape (n_samples,)
            Component labels.
        """
        source = self._validate_for(X, "predict")
        return self._map_chunks(source, self._chunk_labels, "labels")

    def predict_proba(self, X: Array) -> Array:
        """Posterior probability of every component for every point.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points (any input :meth:`fit` accepts; a lazy array for a Dask array).

        Returns
        -------
        resp : array of shape (n_samples, n_components)
            Responsibilities.
        """
        source = self._validate_for(X, "predict_proba")
        return self._map_chunks(source, self._chunk_proba, "proba")

    def score_samples(self, X: Array) -> Array:
        """Log-likelihood of every point under the mixture.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points (any input :meth:`fit` accepts; a lazy array for a Dask array).

        Returns
        -------
        log_prob : array of shape (n_samples,)
            Log-densities.
        """
        source = self._validate_for(X, "score_samples")
        return self._map_chunks(source, self._chunk_scores, "scores")

    def _score_sum(self, X):
        """``(sum of the points' log-likelihoods, n_samples)``, chunk by chunk."""
        source = self._validate_for(X, "score")
        if hasattr(source, "map_blocks"):
            lazy = source.map_blocks(self._chunk_scores, "scores", self.n_components)
            return float(lazy.sum().compute()), source.n_samples
        xp = source.xp
        total = 0.0
        for _, Xc, _ in source.chunks():
            total += float(xp.sum(self._chunk_scores(Xc, xp=xp)))
        return total, source.n_samples

    def score(self, X: Array, y: None = None) -> float:
        """Mean log-likelihood of X under the mixture.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points (any input :meth:`fit` accepts).
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        log_likelihood : float
            Mean of :meth:`score_samples`.
        """
        total, n = self._score_sum(X)
        return total / n

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
        total, n = self._score_sum(X)
        return -2 * total + self._n_parameters() * math.log(n)

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
        total, _ = self._score_sum(X)
        return -2 * total + 2 * self._n_parameters()

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


# ----------------------------------------------------------------------------- private helpers
#: Above this many points, the ``"kmeans"`` initialisation of data read in chunks runs KMeans on
#: this many points drawn at random, and labels the rest by their nearest centre; up to it,
#: KMeans runs on all the points, as scikit-learn does (they are loaded into memory for it).
KMEANS_SAMPLE_ROWS = 1_000_000


def _estep_block(func, X, w, **kwargs):
    """One block's E-step statistics (a module-level function: Dask ships it to workers)."""
    return func(X, sample_weight=w, **kwargs)


def _init_means(stats, *, xp):
    eps = xp.finfo(stats.sx.dtype).eps
    return stats.sx / xp.expand_dims(stats.nk + 10 * eps, axis=1)


def _weighted_gram(source):
    """``sum_i w_i x_i x_i^T`` over all the points, chunk by chunk."""
    xp, total = source.xp, None
    for _, Xc, wc in source.chunks():
        Xw = Xc if wc is None else Xc * xp.expand_dims(wc, axis=1)
        part = xp.matmul(xp.matrix_transpose(Xw), Xc)
        total = part if total is None else total + part
    return total


def _initial_indices(source, K, init_params, rng):
    """The rows scikit-learn's "k-means++" or "random_from_data" initialisation picks, from
    its random stream, in memory independent of N. With sample weights, a point is picked
    with probability proportional to its weight (so a weight of 0 is never picked)."""
    weighted = source.sample_weight is not None
    if init_params == "k-means++":
        sample = None
        if source.in_memory and not is_numpy_namespace(source.xp):
            # k-means++ runs on the host (scikit-learn's numbers): X copied there once per fit
            X_host, w_host = source.host_array()
            source = ArraySource(X_host, w_host, xp=np, chunk_size=1 << 16)
        elif getattr(source, "distributed", False):
            # k-means++ passes over the data 2K times: on a cluster it runs on the client, on
            # all the points up to KMEANS_SAMPLE_ROWS (fetched once), else on that many
            # points drawn at random
            if source.n_samples > KMEANS_SAMPLE_ROWS:
                sample = np.sort(
                    choice_without_replacement(rng, source.n_samples, KMEANS_SAMPLE_ROWS)
                )
                X_local, w_local = source.rows(sample)
            else:
                X_local, w_local = source.host_array()
            source = ArraySource(
                np.ascontiguousarray(to_numpy(X_local)),
                None if w_local is None else to_numpy(w_local),
                xp=np,
                chunk_size=1 << 16,
            )
        idx, _ = kmeans_plusplus_indices(
            functools.partial(_host_chunks, source),
            source.n_samples,
            source.n_features,
            K,
            random_state=rng,
            weighted=weighted,
            dtype=np.dtype(_host_dtype(source)),
        )
        return idx if sample is None else sample[idx]
    if not weighted:
        return choice_without_replacement(rng, source.n_samples, K)
    return _weighted_choice(source, K, rng)


def _host_dtype(source):
    return np.float32 if source.dtype == source.xp.float32 else np.float64


def _host_chunks(source):
    for start, Xc, wc in source.chunks():
        yield start, np.ascontiguousarray(to_numpy(Xc)), None if wc is None else to_numpy(wc)


def _weighted_choice(source, K, rng):
    """K distinct points drawn without replacement with probabilities proportional to their
    weights (numpy's successive-draw method for ``choice(replace=False, p=...)``, with a
    chunked cumulative sum instead of an N-sized one)."""
    n_positive = 0
    for _, _, wc in _host_chunks(source):
        n_positive += int(np.count_nonzero(wc))
    if n_positive < K:
        raise ValueError(
            "sample_weight: init_params='random_from_data' needs at least "
            f"n_components = {K} points of positive weight; got {n_positive}."
        )
    found: list[int] = []
    while len(found) < K:
        u = rng.random_sample(K - len(found))
        taken = np.asarray(found, dtype=np.int64)
        total = 0.0
        for start, _, wc in _host_chunks(source):
            w = wc.astype(np.float64)
            in_chunk = taken[(taken >= start) & (taken < start + w.shape[0])] - start
            w[in_chunk] = 0.0
            total += float(np.sum(w))
        targets = u * total
        carry, new = 0.0, np.full(targets.shape, -1, dtype=np.int64)
        for start, _, wc in _host_chunks(source):
            w = wc.astype(np.float64)
            in_chunk = taken[(taken >= start) & (taken < start + w.shape[0])] - start
            w[in_chunk] = 0.0
            cdf = np.cumsum(w) + carry
            todo = (new < 0) & (targets < cdf[-1])
            new[todo] = start + np.searchsorted(cdf, targets[todo], side="right")
            carry = float(cdf[-1])
        new[new < 0] = source.n_samples - 1  # rounding at the very end of the cdf
        for i in new.tolist():
            if i not in found and len(found) < K:
                found.append(i)
    return np.asarray(found, dtype=np.int64)


def _resp_block_stats(start, X, w, resp, *, cov_type, shift, xp):
    """Statistics of one chunk's initial responsibilities (module level: Dask ships it)."""
    r = xp.astype(resp(start, X, xp=xp), X.dtype)
    if w is None:
        return _gmm_math.stats_from_resp(X, r, cov_type, shift=shift, xp=xp)
    # n is left at 0 (the caller sets the total weight once): a chunk waits for nothing
    return _gmm_math._weighted_stats_from_resp(X, r, cov_type, shift=shift, sample_weight=w, xp=xp)


def _kmeans_resp(source, K, rng):
    """Responsibilities of the ``"kmeans"`` initialisation: one-hot KMeans labels, per
    chunk. In memory, KMeans runs on all of X (its labels are the only N-sized array, and
    KMeans holds them anyway); for data read in chunks, see ``KMEANS_SAMPLE_ROWS``."""
    if source.in_memory or source.n_samples <= KMEANS_SAMPLE_ROWS:
        X_host, w_host = source.host_array()
        km = KMeans(n_clusters=K, n_init=1, random_state=rng)
        labels = km.fit(X_host, sample_weight=w_host).labels_
        del X_host, w_host
        return _LabelResp(labels, 0, K)
    idx = np.sort(choice_without_replacement(rng, source.n_samples, KMEANS_SAMPLE_ROWS))
    X_sample, w_sample = source.rows(idx)
    km = KMeans(n_clusters=K, n_init=1, random_state=rng).fit(
        to_numpy(X_sample), sample_weight=None if w_sample is None else to_numpy(w_sample)
    )
    return _NearestResp(km.cluster_centers_, K)


def _one_hot(labels, K, like, *, xp):
    part = to_device(np.asarray(labels, dtype=np.int64), xp, device=device(like))
    return xp.expand_dims(part, axis=1) == xp.arange(K, dtype=xp.int64, device=device(like))


class _LabelResp:
    """One-hot responsibilities from host labels (``labels[i]`` is point ``offset + i``)."""

    def __init__(self, labels, offset, K):
        self.labels, self.offset, self.K = labels, offset, K

    def block(self, start, stop):
        return _LabelResp(self.labels[start - self.offset : stop - self.offset], start, self.K)

    def __call__(self, start, X, *, xp):
        a = start - self.offset
        return _one_hot(self.labels[a : a + int(X.shape[0])], self.K, X, xp=xp)


class _NearestResp:
    """One-hot responsibilities of the nearest of KMeans's centres (KMeans's ``predict``)."""

    def __init__(self, centres, K):
        self.centres, self.K = centres, K

    def block(self, start, stop):
        return self

    def __call__(self, start, X, *, xp):
        Xh = to_numpy(X).astype(np.float64)
        c = self.centres.astype(np.float64)
        d = (Xh * Xh).sum(axis=1)[:, None] - 2.0 * Xh @ c.T + (c * c).sum(axis=1)
        return _one_hot(np.argmin(d, axis=1), self.K, X, xp=xp)


class _RandomResp:
    """Responsibilities of the ``"random"`` initialisation: scikit-learn's uniform draws,
    normalised per point, drawn chunk by chunk from the same stream. The stream's state at
    the start of every chunk is kept (2.5 KB each), so any pass (or any worker) can redraw
    any chunk, and ``rng`` ends where scikit-learn's draw of all N x K numbers leaves it."""

    def __init__(self, source, K, rng, states=None):
        self.K = K
        if states is None:
            states = {}
            for start, stop in source.bounds():
                states[start] = rng.get_state()
                _advance_uniform(rng, (stop - start) * K)
        self.states = states

    def block(self, start, stop):
        return _RandomResp(None, self.K, None, {start: self.states[start]})

    def __call__(self, start, X, *, xp):
        local = np.random.RandomState()
        local.set_state(self.states[start])
        draws = local.uniform(size=(int(X.shape[0]), self.K))
        r = xp.astype(to_device(draws, xp, device=device(X)), X.dtype)
        return r / xp.sum(r, axis=1, keepdims=True)


def _advance_uniform(rng, count, piece=1 << 20):
    while count > 0:
        m = min(count, piece)
        rng.uniform(size=m)
        count -= m
