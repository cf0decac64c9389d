"""EM routing (Hinton et al. 2018) as a clustering algorithm."""

from __future__ import annotations

import numbers

from sklearn.utils._param_validation import Interval

from .._backend import array_namespace, device
from .._lib import stable_math as _math
from ..routing import em_routing as _em
from ..routing.em_routing import em_routing
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

    **How it differs.** Compared with KMeans: soft assignments, a variance per cluster and
    feature, and clusters that can switch off. Compared with GaussianMixture(covariance_type=
    "diag"): the mixing weights are activations set by the cost, not the clusters' shares of the
    data, so a tight cluster can outweigh a bigger loose one, and a variance floor ``min_var``
    is added to every variance.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of parent capsules (clusters).
    n_iter : int, default=100
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
        Routing iterations run.
    n_features_in_ : int
        Number of features seen in fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
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
        n_iter=100,
        tol=1e-4,
        init="k-means++",
        beta_u=0.0,
        beta_a=0.0,
        inverse_temperature=1.0,
        min_var=1e-3,
        random_state=None,
        backend=None,
    ):
        self.n_clusters = n_clusters
        self.n_iter = n_iter
        self.tol = tol
        self.init = init
        self.beta_u = beta_u
        self.beta_a = beta_a
        self.inverse_temperature = inverse_temperature
        self.min_var = min_var
        self.random_state = random_state
        self.backend = backend

    def fit(self, X, y=None, sample_weight=None):
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

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then return the training points' labels (the same as ``fit(X).predict(X)``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training points: a NumPy array or array-like, or an array of any Array API
            library (array_api_strict, CuPy), whose namespace the fitted attributes keep.
        y : Ignored
            Not used, present for API consistency.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights, the children's activations.

        Returns
        -------
        labels : array of shape (n_samples,)
            Cluster labels.
        """
        return self.fit(X, sample_weight=sample_weight).labels_

    def _votes(self, Z, *, xp):
        n, d = Z.shape
        return xp.broadcast_to(xp.reshape(Z, (1, n, 1, d)), (1, n, self.n_clusters, d))

    def _route(self, state, R, n_iter):
        pose, act, R = em_routing(
            state["V"], state["a"], state["beta_u"], state["beta_a"], n_iter,
            inverse_temperature=state["lam"], min_var=self.min_var, initial_assignments=R,
            return_assignments=True, backend=self._backend(),
        )
        return {**state, "pose": pose[0, ...], "R": R}

    def _start(self, Z, w, centres, *, xp):
        K, d = self.n_clusters, Z.shape[1]
        V = self._votes(Z, xp=xp)
        ones = xp.ones((1, K, d), dtype=Z.dtype, device=device(Z))
        zeros = xp.zeros((1, K), dtype=Z.dtype, device=device(Z))
        R0, _ = _em._e_step(V, xp.expand_dims(centres, axis=0), ones, zeros, xp=xp)
        # em_routing's logit is lam * (beta_a - cost) with cost in units of summed activation;
        # measuring it per average cluster mass m means lam / m and beta_a * m
        mass_unit = float(xp.sum(w)) / K
        beta_u = _em._as_param(self.beta_u, name="beta_u", like=V, xp=xp, shapes=[(K, d), (K,)])
        beta_a = _em._as_param(self.beta_a, name="beta_a", like=V, xp=xp, shapes=[(K,)])
        state = {
            "V": V, "a": xp.expand_dims(w, axis=0), "lam": self.inverse_temperature / mass_unit,
            "beta_u": beta_u, "beta_a": beta_a * mass_unit,
        }
        return self._route(state, R0, 1)

    def _step(self, Z, w, state, *, xp):
        return self._route(state, state["R"], 2)

    def _finish(self, state, *, xp):
        # the final parents, from the same M-step that em_routing ran on the final assignments
        self._mu, self._var, self._logit = _em._m_step(
            state["V"], state["R"], state["a"], state["beta_u"], state["beta_a"],
            lam=state["lam"], min_var=self.min_var, eps=_em.DEFAULT_EPS, xp=xp,
        )
        self.cluster_centers_ = self._mu[0, ...] * self._scale + self._mean
        self.cluster_variances_ = self._var[0, ...] * (self._scale * self._scale)
        self.activations_ = xp.exp(_math.log_sigmoid(self._logit[0, ...], xp=xp))

    def _permute(self, order, *, xp):
        self._mu = xp.take(self._mu, order, axis=1)
        self._var = xp.take(self._var, order, axis=1)
        self._logit = xp.take(self._logit, order, axis=1)
        for name in ("cluster_centers_", "cluster_variances_", "activations_"):
            setattr(self, name, xp.take(getattr(self, name), order, axis=0))

    def _e_step(self, Z, *, xp):
        return _em._e_step(self._votes(Z, xp=xp), self._mu, self._var, self._logit, xp=xp)

    def _assign(self, Z, *, xp):
        return self._e_step(Z, xp=xp)[0][0, ...]

    def score_samples(self, X):
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
        log_norm = self._e_step(Z, xp=xp)[1][0, ...]
        return log_norm - Z.shape[1] * xp.log(self._scale)

    def score(self, X, y=None):
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
