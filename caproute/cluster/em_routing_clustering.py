"""EM routing (Hinton et al. 2018) as a clustering algorithm."""

from __future__ import annotations

import math
import numbers

from .._backend import Array, array_namespace, device, overflow_quiet, select_impl, to_numpy
from .._lib.validation import check_scalar_fits, dtype_name
from .._sklearn_compat import Interval
from ..routing import _em_math
from ..routing._options import DEFAULT_EM_EPS, broadcast_param
from ._base import _RoutingClusteringBase


class EMRoutingClustering(_RoutingClusteringBase):
    """Cluster points with EM routing between matrix capsules.

    **The model.** Every point is a child capsule and every cluster a parent capsule, an
    axis-aligned Gaussian. The points are centred and divided by one overall scale; a child's
    vote for every parent is its (standardised) point and its activation is its sample weight
    divided by the largest weight. EM routing then alternates, as in the paper, an M-step
    (each parent's mean ``mu_j`` and variances ``sigma_j^2`` from the assigned votes, plus an
    activation ``a_j = logistic(lambda (beta_a - sum_h (beta_u + log sigma_j^h) m_j))`` where
    ``m_j`` is the parent's assigned mass) and an E-step (``R_ij`` proportional to
    ``a_j N(x_i | mu_j, sigma_j^2)``). It is EM for a diagonal Gaussian mixture whose mixing
    weights are the parents' activations instead of their shares of the data.

    **Breaking symmetry.** Routing starts with every child split equally over the parents, and
    with every child casting the same vote for every parent all parents would stay identical.
    The initial centres (``init``) break the tie: the first assignments are an E-step against
    unit-variance Gaussians at those centres.

    **Switching clusters off.** A parent's activation falls when its cost (mass times the log
    of its spread, offset by ``beta_u``) exceeds ``beta_a``; a parent with a low activation
    attracts fewer points in the next E-step, loses mass, and can end with almost none. So
    the number of clusters in use can be smaller than ``n_clusters``: ``active_clusters_``
    marks parents with activation above 1/2 and ``n_active_clusters_`` counts them. Negative
    ``beta_a`` and larger ``inverse_temperature`` make the competition fiercer. The cost is
    measured in units of the average cluster mass (``lambda`` is ``inverse_temperature``
    times ``n_clusters / sum(activations)``, and ``beta_a`` is compared with the cost per
    average cluster mass), so the options do not depend on the number of samples.

    **Scale.** X is divided by a power of two near its largest value before the
    standardisation, so X at any magnitude gives the clusters of X rescaled, as long as
    ``cluster_variances_`` (X's spread squared) fit in X's dtype: X whose spread is beyond about
    1e154 or below 1e-154 in float64 (1e19 and 1e-19 in float32) raises ValueError, which says
    how to rescale. New points so far from the training data that their densities leave the
    dtype raise ValueError too. ``inverse_temperature``, ``beta_u`` and ``beta_a`` are at most
    the cube root of the dtype's largest value in magnitude (5.6e102 in float64, 7e12 in
    float32), so that the clusters' cost cannot overflow.

    **How it differs.** Compared with KMeans: soft assignments, a variance per cluster and
    feature, and clusters that can switch off. Compared with GaussianMixture(covariance_type=
    "diag"): the mixing weights are activations set by the cost, not the clusters' shares of the
    data, so a tight cluster can outweigh a bigger loose one, and a variance floor ``min_var``
    is added to every variance.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of parent capsules (clusters).
    max_iter : int, default=100
        Maximum number of routing iterations (M-steps).
    tol : float, default=1e-4
        Stop when the parents' means move by at most ``tol`` (sum of squared changes, in
        standardised units).
    init : {"k-means++", "random"} or array-like of shape (n_clusters, n_features), \
default="k-means++"
        Initial centres that break the parents' symmetry.
    beta_u : float or array-like of shape (n_clusters,) or (n_clusters, n_features), default=0.0
        Cost offset per unit mass and feature (see :func:`caproute.em_routing`).
    beta_a : float or array-like of shape (n_clusters,), default=0.0
        Activation threshold.
    inverse_temperature : float, default=1.0
        ``lambda`` per average cluster mass.
    min_var : float, default=1e-3
        Added to every variance (standardised units).
    random_state : int, RandomState instance or None, default=None
        Seeds the initial centres.
    n_init : int, default=1
        Number of fits from different initial centres; the best one is kept (the largest
        mean log agreement of the points).
    warm_start : bool, default=False
        Continue from the previous fit's parents (and its standardisation) instead of new
        initial centres; ``n_init`` is then ignored.
    verbose : int, default=0
        Print progress: 1 each initialisation, 2 also the time and the change per iteration.
    verbose_interval : int, default=10
        Iterations between two progress lines.
    n_iter : int
        Deprecated name of ``max_iter`` (removed in 0.3).
    backend : {"auto", "numpy", "numba", "cupy"} or None, default=None
        Where routing runs (see :func:`caproute.set_config`); None takes the configured one.

    Attributes
    ----------
    cluster_centers_ : array of shape (n_clusters, n_features)
        The parents' poses (means) in data space.
    cluster_variances_ : array of shape (n_clusters, n_features)
        The parents' variances in data space, ``min_var`` included.
    activations_ : array of shape (n_clusters,)
        The parents' activations in (0, 1).
    active_clusters_ : array of shape (n_clusters,)
        True where the activation exceeds 1/2.
    n_active_clusters_ : int
        Number of active clusters.
    labels_ : array of shape (n_samples,)
        Cluster of each training point (from a final E-step, so ``fit(X).predict(X)`` equals
        ``labels_``). Clusters owning training points come first.
    n_iter_ : int
        Routing iterations run by the best initialisation.
    converged_ : bool
        Whether the best initialisation converged before ``max_iter``.
    n_features_in_ : int
        Number of features seen in fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of the features, when X has string column names.

    See Also
    --------
    DynamicRoutingClustering : Dynamic routing as clustering.
    caproute.em_routing : The routing function this estimator iterates.

    Examples
    --------
    >>> from sklearn.datasets import make_blobs
    >>> from caproute.cluster import EMRoutingClustering
    >>> X, y = make_blobs(n_samples=300, centers=[[0, 0], [5, 0], [0, 5]], random_state=0)
    >>> model = EMRoutingClustering(n_clusters=3, random_state=0).fit(X)
    >>> model.cluster_centers_.shape, model.activations_.shape
    ((3, 2), (3,))
    >>> from sklearn.metrics import adjusted_rand_score
    >>> bool(adjusted_rand_score(y, model.labels_) > 0.9)
    True
    """

    _parameter_constraints: dict = {
        **_RoutingClusteringBase._parameter_constraints,
        "beta_u": [Interval(numbers.Real, None, None, closed="neither"), "array-like"],
        "beta_a": [Interval(numbers.Real, None, None, closed="neither"), "array-like"],
        "inverse_temperature": [Interval(numbers.Real, 0, None, closed="neither")],
        "min_var": [Interval(numbers.Real, 0, None, closed="left")],
    }

    def __init__(
        self,
        n_clusters=8,
        *,
        max_iter=100,
        tol=1e-4,
        init="k-means++",
        beta_u=0.0,
        beta_a=0.0,
        inverse_temperature=1.0,
        min_var=1e-3,
        random_state=None,
        n_init=1,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        n_iter="deprecated",
        backend=None,
    ):
        self.n_clusters = n_clusters
        self.max_iter = max_iter
        self.tol = tol
        self.init = init
        self.beta_u = beta_u
        self.beta_a = beta_a
        self.inverse_temperature = inverse_temperature
        self.min_var = min_var
        self.random_state = random_state
        self.n_init = n_init
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.n_iter = n_iter
        self.backend = backend

    def fit(
        self, X: Array, y: None = None, sample_weight: Array | None = None
    ) -> EMRoutingClustering:
        """Cluster ``X`` by routing its points (children) to ``n_clusters`` parents.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training points: a NumPy array or array-like, or an array of any Array API
            library (array_api_strict, CuPy), whose namespace the fitted attributes keep.
        y : Ignored
            Not used, present for API consistency.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights, the children's activations once divided by their maximum.
            A weight of k acts as k copies of the point.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        return self._fit(X, sample_weight)

    _step_op = "em_routing_step"

    def _votes(self, Z, *, xp):
        n, d = Z.shape
        return xp.broadcast_to(xp.reshape(Z, (1, n, 1, d)), (1, n, self.n_clusters, d))

    def _check_units(self, X, *, xp):
        # cluster_variances_ are in X's units squared: refuse X whose spread squared leaves
        # the dtype before fitting (_attributes_finite checks the fitted values exactly)
        info = xp.finfo(X.dtype)
        log2_spread = math.log2(float(self._scale)) + math.log2(float(self._unit))
        if 2 * log2_spread > math.log2(float(info.max)):
            direction = "large"
        elif 2 * log2_spread < math.log2(float(info.smallest_normal)):
            direction = "small"
        else:
            return
        log10_spread = log2_spread * math.log10(2)  # the spread itself may not fit in a float
        exponent = math.floor(log10_spread)
        spread = f"{10 ** (log10_spread - exponent):.3g}e{exponent:+d}"
        raise self._units_error(
            X,
            xp=xp,
            what=f"its cluster variances (its spread, about {spread}, squared)",
            direction=direction,
        )

    def _attributes_finite(self, *, xp):
        tiny = float(xp.finfo(self.cluster_variances_.dtype).smallest_normal)
        var = self.cluster_variances_
        expressed = xp.logical_and(
            xp.isfinite(var), xp.logical_or(var >= tiny, self._var[0, ...] == 0)
        )
        return xp.logical_and(xp.all(xp.isfinite(self.cluster_centers_)), xp.all(expressed))

    def _units_error(self, X, *, xp, what=None, direction=None):
        if what is None:  # found after the fit: say which way the variances left the dtype
            var = self.cluster_variances_
            direction = "large" if not bool(xp.all(xp.isfinite(var))) else "small"
            what = "the cluster centres or variances"
        return super()._units_error(X, xp=xp, what=what, direction=direction)

    def _overflow_advice(self, dtype):
        return (
            "Use a smaller `inverse_temperature` or smaller `beta_u` and `beta_a` "
            f"(inverse_temperature={self.inverse_temperature!r}, beta_u={self.beta_u!r}, "
            f"beta_a={self.beta_a!r}), or a larger `min_var` (min_var={self.min_var!r})."
        )

    def _check_option_range(self, beta_u, beta_a, *, xp):
        """The activation's logit multiplies inverse_temperature, a beta and a cluster mass: each
        must stay below the cube root of the dtype's largest value (5.6e102 in float64, 7e12 in
        float32), so that their product cannot overflow into a NaN fit."""
        dtype = dtype_name(beta_u.dtype)
        bound = float(xp.finfo(beta_u.dtype).max) ** (1 / 3)
        largest_u, largest_a = (
            float(v) for v in to_numpy(xp.stack([xp.max(xp.abs(beta_u)), xp.max(xp.abs(beta_a))]))
        )
        for name, value in (
            ("inverse_temperature", float(self.inverse_temperature)),
            ("beta_u", largest_u),
            ("beta_a", largest_a),
        ):
            if value > bound:
                raise ValueError(
                    f"`{name}` must be at most {bound:.3g} in magnitude for {dtype} X (the "
                    f"clusters' cost multiplies it, and larger values overflow); got "
                    f"{value:.3g}."
                )

    def _prepare_routing(self, fit_state):
        xp, Z, w = fit_state["xp"], fit_state["Z"], fit_state["w"]
        K, d = self.n_clusters, int(Z.shape[1])
        V = self._votes(Z, xp=xp)  # every child casts the same vote: a broadcast view
        # em_routing's logit is lam * (beta_a - cost) with cost in units of summed activation;
        # measuring it per average cluster mass m means lam / m and beta_a * m
        mass_unit = float(xp.sum(w)) / K
        beta_u = broadcast_param(
            self.beta_u, name="beta_u", like=V, xp=xp, shapes=[(K, d), (K,)], ref_name="X"
        )
        beta_a = broadcast_param(
            self.beta_a, name="beta_a", like=V, xp=xp, shapes=[(K,)], ref_name="X"
        )
        check_scalar_fits(self.min_var, Z, name="min_var", ref_name="X")
        self._check_option_range(beta_u, beta_a, xp=xp)
        # (the mass unit is at least 1 / n_clusters: weights are divided by their largest)
        lam = self.inverse_temperature / mass_unit
        fit_state.update(
            V=V,
            a=xp.expand_dims(w, axis=0),
            beta_u=beta_u,
            beta_a=beta_a * mass_unit,
            lam=lam,
        )

    def _initial_params(self, fit_state, centres):
        xp, Z = fit_state["xp"], fit_state["Z"]
        K, d = self.n_clusters, int(Z.shape[1])
        # unit-variance Gaussians at the centres with equal activations: the first iteration's
        # E-step against them gives the first assignments
        return {
            "mu": xp.expand_dims(centres, axis=0),
            "var": xp.ones((1, K, d), dtype=Z.dtype, device=device(Z)),
            "logit": xp.zeros((1, K), dtype=Z.dtype, device=device(Z)),
            "log_norm": None,
            "pose": None,
        }

    def _iterate(self, fit_state, params):
        plan, s = fit_state["plan"], fit_state
        mu, var, logit, _, log_norm = plan.func(
            s["V"],
            s["a"],
            params["mu"],
            params["var"],
            params["logit"],
            s["beta_u"],
            s["beta_a"],
            lam=s["lam"],
            min_var=self.min_var,
            eps=DEFAULT_EM_EPS,
            xp=plan.xp,
        )
        return {
            "mu": mu,
            "var": var,
            "logit": logit,
            "log_norm": log_norm,
            "pose": mu[0, ...],
        }, None

    def _objective(self, fit_state, params):
        """Mean log agreement of the points in the last iteration's E-step."""
        xp = fit_state["xp"]
        return float(xp.mean(params["log_norm"]))

    def _get_parameters(self):
        return {**self._state, "log_norm": None, "pose": None}

    def _end_state(self, state, *, xp):
        self._mu, self._var, self._logit = state["mu"], state["var"], state["logit"]
        unit = self._unit
        with overflow_quiet(self._var):  # leaving the dtype is checked by _end_fit
            self.cluster_centers_ = (self._mu[0, ...] * self._scale + self._mean) * unit
            self.cluster_variances_ = self._var[0, ...] * (self._scale * self._scale) * unit * unit
        self.activations_ = _em_math.activation(self._logit[0, ...], xp=xp)

    def _permute(self, order, *, xp):
        self._mu = xp.take(self._mu, order, axis=1)
        self._var = xp.take(self._var, order, axis=1)
        self._logit = xp.take(self._logit, order, axis=1)
        for name in ("cluster_centers_", "cluster_variances_", "activations_"):
            setattr(self, name, xp.take(getattr(self, name), order, axis=0))
        self._state = {**self._state, "mu": self._mu, "var": self._var, "logit": self._logit}

    def _e_step(self, Z, *, xp):
        # the E-step kernel where one exists: fit's labels and predict take the same path
        plan = select_impl("em_routing_e_step", xp, self._backend())
        return plan.func(self._votes(Z, xp=xp), self._mu, self._var, self._logit, xp=plan.xp)

    def _assign(self, Z, *, xp):
        return self._e_step(Z, xp=xp)[0][0, ...]

    def score_samples(self, X: Array) -> Array:
        """Log of each point's total agreement ``sum_j a_j N(x | mu_j, sigma_j^2)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points.

        Returns
        -------
        log_agreement : array of shape (n_samples,)
            In data units (a log-density when the activations sum to 1).
        """
        Z, xp = self._prepare(X, "score_samples")
        R, log_norm = self._e_step(Z, xp=xp)[:2]
        R, log_norm = self._checked(Z, R, log_norm, xp=xp)
        log_scale = xp.log(self._scale) + xp.log(self._unit)  # the data's spread, unrounded
        return log_norm[0, ...] - Z.shape[1] * log_scale

    def score(self, X: Array, y: None = None) -> float:
        """Mean of :meth:`score_samples` over X: higher means the parents explain X better.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points.
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        score : float
            Mean log agreement.
        """
        scores = self.score_samples(X)
        xp = array_namespace(scores)
        return float(xp.mean(scores))
