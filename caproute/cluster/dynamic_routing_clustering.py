"""Dynamic routing (Sabour et al. 2017) as a clustering algorithm."""

from __future__ import annotations

import numbers

from sklearn.utils._param_validation import Interval

from ..routing import dynamic as _dyn
from ..routing.dynamic import dynamic_routing
from ._base import _RoutingClusteringBase


def _lift(Z, *, xp):
    """Inverse stereographic projection of rows of Z onto the unit sphere in d + 1 dimensions.

    With radius rho = sqrt(d) (the RMS norm of standardised points), p(z) =
    (2 rho z, |z|^2 - rho^2) / (|z|^2 + rho^2). The map is conformal and the dot product of two
    lifted points falls as their distance grows, so clustering directions on the sphere (what
    dynamic routing's dot-product agreement does) clusters positions in the plane.
    """
    rho2 = float(Z.shape[1])
    n2 = xp.sum(Z * Z, axis=1, keepdims=True)
    return xp.concat([2.0 * rho2**0.5 * Z, n2 - rho2], axis=1) / (n2 + rho2)


def _unlift(Q, *, eps, xp):
    """Inverse of :func:`_lift` for unit rows of Q: z = rho q_x / (1 - q_last)."""
    d = Q.shape[1] - 1
    rho = float(d) ** 0.5
    return rho * Q[:, :d] / xp.maximum(1.0 - Q[:, d:], eps)


class DynamicRoutingClustering(_RoutingClusteringBase):
    """Cluster points with dynamic routing between capsules.

    **The model.** Every point is a child capsule and every cluster a parent capsule. The
    points are centred and divided by one overall scale, then lifted onto the unit sphere in
    ``n_features + 1`` dimensions by inverse stereographic projection, which keeps nearby
    points at nearby directions. A child's vote for every parent is its lifted point times
    ``concentration``. (A capsule's length is its activation, and it sets both the child's
    weight in ``s_j`` and how fast its agreement grows; a weighted child therefore never acts
    like repeated copies, which is why ``fit`` takes no ``sample_weight``.)
    Routing then runs as in the paper: couplings ``c_ij = softmax_j(b_ij)``, parent
    ``v_j = squash(sum_i c_ij u_i)``, agreement ``b_ij += u_i . v_j``. Agreement is a dot
    product, so a parent is a direction on the sphere, like spherical k-means with soft,
    annealed assignments (the logits grow every iteration, so couplings harden).

    **Breaking symmetry.** Routing starts from equal logits, and with every child casting the
    same vote for every parent, all parents would stay identical forever. The initial centres
    (``init``) break the tie: the starting logits are the children's agreement with the lifted
    initial centres, as if those had been the parents' previous outputs.

    **How it differs.** Compared with KMeans: assignments are soft and harden as routing goes,
    and distances are measured as angles after the lift. Compared with GaussianMixture: no
    covariances and no likelihood; a parent's length ``|v_j|`` (``activations_``) says how much
    agreeing mass it collected, and a parent that collects none shrinks towards zero length.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of parent capsules (clusters).
    n_iter : int, default=100
        Maximum number of routing iterations.
    tol : float, default=1e-4
        Stop when the parents move by at most ``tol`` (sum of squared changes of ``v``).
    init : {"k-means++", "random"} or array-like of shape (n_clusters, n_features), \
default="k-means++"
        Initial centres that break the parents' symmetry.
    concentration : float, default=10.0
        Length of a unit-weight vote: the inverse temperature of the agreement (larger values
        make couplings decisive sooner).
    leaky : bool, default=False
        Leaky routing: an orphan parent with a zero logit lets outlying points route nowhere,
        so their couplings (``transform``) sum to less than 1.
    eps : float, default=1e-8
        The squash's constant inside the square root (see :func:`caproute.dynamic_routing`).
    random_state : int, RandomState instance or None, default=None
        Seeds the initial centres.
    backend : {"auto", "numpy", "numba", "cupy"} or None, default=None
        Where routing runs (see :func:`caproute.set_config`); None takes the configured one.

    Attributes
    ----------
    cluster_centers_ : array of shape (n_clusters, n_features)
        The parents' directions mapped back to data space.
    activations_ : array of shape (n_clusters,)
        The parents' lengths ``|v_j|`` in [0, 1).
    active_clusters_ : array of shape (n_clusters,)
        True where the activation exceeds 1/2.
    n_active_clusters_ : int
        Number of active clusters.
    labels_ : array of shape (n_samples,)
        Cluster of each training point. Clusters owning training points come first.
    n_iter_ : int
        Routing iterations run.
    n_features_in_ : int
        Number of features seen in fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features, when X has string column names.

    See Also
    --------
    EMRoutingClustering : EM routing, where a cluster's activation can switch it off.
    caproute.dynamic_routing : The routing function this estimator iterates.

    Examples
    --------
    >>> from sklearn.datasets import make_blobs
    >>> from caproute.cluster import DynamicRoutingClustering
    >>> X, y = make_blobs(n_samples=300, centers=[[0, 0], [5, 0], [0, 5]], random_state=0)
    >>> model = DynamicRoutingClustering(n_clusters=3, random_state=0).fit(X)
    >>> model.cluster_centers_.shape
    (3, 2)
    >>> from sklearn.metrics import adjusted_rand_score
    >>> bool(adjusted_rand_score(y, model.labels_) > 0.9)
    True
    """

    _parameter_constraints: dict = {
        **_RoutingClusteringBase._parameter_constraints,
        "concentration": [Interval(numbers.Real, 0, None, closed="neither")],
        "leaky": ["boolean"],
        "eps": [Interval(numbers.Real, 0, None, closed="neither")],
    }

    def __init__(
        self,
        n_clusters=8,
        *,
        n_iter=100,
        tol=1e-4,
        init="k-means++",
        concentration=10.0,
        leaky=False,
        eps=1e-8,
        random_state=None,
        backend=None,
    ):
        self.n_clusters = n_clusters
        self.n_iter = n_iter
        self.tol = tol
        self.init = init
        self.concentration = concentration
        self.leaky = leaky
        self.eps = eps
        self.random_state = random_state
        self.backend = backend

    def fit(self, X, y=None):
        """Cluster ``X`` by routing its points (children) to ``n_clusters`` parents.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training points: a NumPy array or array-like, or an array of any Array API
            library (array_api_strict, CuPy), whose namespace the fitted attributes keep.
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        return self._fit(X, None)

    def fit_predict(self, X, y=None):
        """Fit, then return the training points' labels (the same as ``fit(X).predict(X)``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training points: a NumPy array or array-like, or an array of any Array API
            library (array_api_strict, CuPy), whose namespace the fitted attributes keep.
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        labels : array of shape (n_samples,)
            Cluster labels.
        """
        return self.fit(X).labels_

    def _route(self, U, logits, n_iter):
        v, c = dynamic_routing(
            U, n_iter, leaky=self.leaky, eps=self.eps, initial_logits=logits,
            return_coupling=True, backend=self._backend(),
        )
        return v[0, ...], c[0, ...]

    def _start(self, Z, w, centres, *, xp):
        n, d1 = Z.shape[0], Z.shape[1] + 1
        u = self.concentration * xp.expand_dims(w, axis=1) * _lift(Z, xp=xp)  # (n, d+1)
        # every child casts the same vote for every parent: a broadcast view, not a copy
        U = xp.broadcast_to(xp.reshape(u, (1, n, 1, d1)), (1, n, self.n_clusters, d1))
        D = _lift(centres, xp=xp)  # the logits are always u_i . D_j for this D
        v, c = self._route(U, xp.reshape(xp.matmul(u, xp.permute_dims(D, (1, 0))), (1, n, -1)), 1)
        return {"pose": v, "c": c, "D": D, "U": U}

    def _step(self, Z, w, state, *, xp):
        tiny = float(xp.finfo(Z.dtype).smallest_normal)
        # log(c) differs from the logits by a per-child constant, which the softmax ignores;
        # the first of the two iterations recomputes the previous parents, the second moves on
        logits = xp.expand_dims(xp.log(xp.maximum(state["c"], tiny)), axis=0)
        v, c = self._route(state["U"], logits, 2)
        return {"pose": v, "c": c, "D": state["D"] + state["pose"], "U": state["U"]}

    def _finish(self, state, *, xp):
        v = state["pose"]
        length = xp.sqrt(xp.sum(v * v, axis=1, keepdims=True))
        self._D = state["D"]
        self._v = v
        direction = v / xp.maximum(length, self.eps)
        self.cluster_centers_ = _unlift(direction, eps=self.eps, xp=xp) * self._scale + self._mean
        self.activations_ = xp.reshape(length, (-1,))

    def _permute(self, order, *, xp):
        self._D = xp.take(self._D, order, axis=0)
        self._v = xp.take(self._v, order, axis=0)
        self.cluster_centers_ = xp.take(self.cluster_centers_, order, axis=0)
        self.activations_ = xp.take(self.activations_, order, axis=0)

    def _assign(self, Z, *, xp):
        logits = self.concentration * xp.matmul(_lift(Z, xp=xp), xp.permute_dims(self._D, (1, 0)))
        return _dyn._couplings(logits, leaky=self.leaky, xp=xp)
