"""Dynamic routing (Sabour et al. 2017) as a clustering algorithm."""

from __future__ import annotations

import numbers

from .._backend import Array, device, overflow_quiet
from .._lib.validation import check_scalar_fits, dtype_name
from .._sklearn_compat import Interval
from ..routing._dynamic_math import couplings
from ._base import _RoutingClusteringBase


def _lift(Z, *, xp):
    """Inverse stereographic projection of rows of Z onto the unit sphere in d + 1 dimensions.

    With radius rho = sqrt(d) (the RMS norm of standardised points), p(z) =
    (2 rho z, |z|^2 - rho^2) / (|z|^2 + rho^2). The map is conformal and the dot product of two
    lifted points falls as their distance grows, so clustering directions on the sphere (what
    dynamic routing's dot-product agreement does) clusters positions in the plane.

    Each row is divided by m, the power of two at or below its largest magnitude (1 for rows
    inside the unit box), and the fraction's terms by m^2: exact, so rows that the plain
    formula handles give the same bits, and far rows, whose |z|^2 would overflow, reach the
    north pole (0, ..., 0, 1) as the map does in the limit.
    """
    rho2 = float(Z.shape[1])
    with overflow_quiet(Z):
        largest = xp.max(xp.abs(Z), axis=1, keepdims=True)
        m = 2.0 ** xp.floor(xp.log2(xp.maximum(largest, 1.0)))
        t = Z / m
        n2 = xp.sum(t * t, axis=1, keepdims=True)
        r = rho2 / m / m  # underflows to 0 for far rows, as it should
        return xp.concat([2.0 * rho2**0.5 * (t / m), n2 - r], axis=1) / (n2 + r)


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

    **Scale.** X may have any magnitude its dtype holds: it is divided by a power of two near
    its largest value before the standardisation, which keeps squares from overflowing or
    underflowing, so X times 1e200 (or 1e-200, or 1e37 in float32) gives the same clusters as X.
    New points far outside the training data route to the cluster nearest the lift's pole;
    points whose standardised values leave the dtype raise ValueError.

    **How it differs.** Compared with KMeans: assignments are soft and harden as routing goes,
    and distances are measured as angles after the lift. Compared with GaussianMixture: no
    covariances and no likelihood; a parent's length ``|v_j|`` (``activations_``) says how much
    agreeing mass it collected, and a parent that collects none shrinks towards zero length.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of parent capsules (clusters).
    max_iter : int, default=100
        Maximum number of routing iterations.
    tol : float, default=1e-4
        Stop when the parents move by at most ``tol`` (sum of squared changes of ``v``).
    init : {"k-means++", "random"} or array-like of shape (n_clusters, n_features), \
default="k-means++"
        Initial centres that break the parents' symmetry.
    concentration : float, default=10.0
        Length of a unit-weight vote: the inverse temperature of the agreement (larger values
        make couplings decisive sooner). At most ``cbrt(largest float) / (2 n_samples)`` (2.3e100
        for 120 points in float64, 2.9e10 in float32), beyond which the parents' squash
        overflows.
    leaky : bool, default=False
        Leaky routing: an orphan parent with a zero logit lets outlying points route nowhere,
        so their couplings (``transform``) sum to less than 1.
    eps : float, default=1e-8
        The squash's constant inside the square root (see :func:`caproute.dynamic_routing`).
    random_state : int, RandomState instance or None, default=None
        Seeds the initial centres.
    n_init : int, default=1
        Number of fits from different initial centres; the best one is kept (the largest
        mean agreement of the points with the parents they route to).
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
        Routing iterations run by the best initialisation.
    converged_ : bool
        Whether the best initialisation converged before ``max_iter``.
    n_features_in_ : int
        Number of features seen in fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
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
        max_iter=100,
        tol=1e-4,
        init="k-means++",
        concentration=10.0,
        leaky=False,
        eps=1e-8,
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
        self.concentration = concentration
        self.leaky = leaky
        self.eps = eps
        self.random_state = random_state
        self.n_init = n_init
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.n_iter = n_iter
        self.backend = backend

    def fit(self, X: Array, y: None = None) -> DynamicRoutingClustering:
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

    _step_op = "dynamic_routing_step"

    def _overflow_advice(self, dtype):
        return (
            f"concentration={self.concentration!r} makes the votes too long for {dtype}; "
            "use a smaller value (the default is 10)."
        )

    def _prepare_routing(self, fit_state):
        xp, Z = fit_state["xp"], fit_state["Z"]
        n, d1 = int(Z.shape[0]), int(Z.shape[1]) + 1
        check_scalar_fits(self.eps, Z, name="eps", ref_name="X", positive=True)
        # a parent sums up to n votes of length concentration, and the squash takes the cube of
        # that length: keep it below the dtype's largest value, with a margin of 2
        bound = float(xp.finfo(Z.dtype).max) ** (1 / 3) / (2 * n)
        if self.concentration > bound:
            raise ValueError(
                f"`concentration` must be at most {bound:.3g} for {n} points in "
                f"{dtype_name(Z.dtype)} X (a cluster adds up to n_samples votes of length "
                f"concentration, and the squash cubes their sum); got {self.concentration:.3g}."
            )
        u = self.concentration * xp.expand_dims(fit_state["w"], axis=1) * _lift(Z, xp=xp)
        fit_state["u"] = u  # (n, d + 1)
        # every child casts the same vote for every parent: a broadcast view, not a copy
        fit_state["U"] = xp.broadcast_to(xp.reshape(u, (1, n, 1, d1)), (1, n, self.n_clusters, d1))

    def _initial_params(self, fit_state, centres):
        xp = fit_state["xp"]
        D = _lift(centres, xp=xp)
        v = xp.zeros((1, *D.shape), dtype=D.dtype, device=device(D))
        # the logits are always u_i . D_j, where D starts at the lifted centres (as if those
        # had been the parents' previous outputs) and adds every iteration's parents
        return {"D": D, "v": v, "logits": None, "c": None, "pose": None}

    def _iterate(self, fit_state, params):
        xp, plan = fit_state["xp"], fit_state["plan"]
        logits = params["logits"]
        if logits is None:
            n = int(fit_state["u"].shape[0])
            D = params["D"]
            logits = xp.reshape(xp.matmul(fit_state["u"], xp.permute_dims(D, (1, 0))), (1, n, -1))
        v, c, logits = plan.func(
            fit_state["U"],
            logits,
            params["v"],
            bias=None,
            leaky=self.leaky,
            eps=self.eps,
            xp=plan.xp,
        )
        return {
            "D": params["D"] + params["v"][0, ...],
            "v": v,
            "logits": logits,
            "c": c,
            "pose": v[0, ...],
        }, None

    def _objective(self, fit_state, params):
        """Mean agreement: each point's coupling-weighted cosine with the parents' directions."""
        xp = fit_state["xp"]
        v = params["pose"]
        direction = v / xp.maximum(xp.sqrt(xp.sum(v * v, axis=1, keepdims=True)), self.eps)
        cosine = xp.matmul(_lift(fit_state["Z"], xp=xp), xp.permute_dims(direction, (1, 0)))
        return float(xp.mean(xp.sum(params["c"][0, ...] * cosine, axis=1)))

    def _get_parameters(self):
        # a warm start continues from the parents; the logits follow from them and the data
        return {**self._state, "logits": None, "c": None, "pose": None}

    def _end_state(self, state, *, xp):
        v = state["pose"]
        length = xp.sqrt(xp.sum(v * v, axis=1, keepdims=True))
        self._D = state["D"]
        self._v = v
        direction = v / xp.maximum(length, self.eps)
        with overflow_quiet(v):  # X near its dtype's largest values: checked by _end_fit
            centres = _unlift(direction, eps=self.eps, xp=xp) * self._scale + self._mean
            self.cluster_centers_ = centres * self._unit
        self.activations_ = xp.reshape(length, (-1,))

    def _permute(self, order, *, xp):
        self._D = xp.take(self._D, order, axis=0)
        self._v = xp.take(self._v, order, axis=0)
        self._state = {**self._state, "D": self._D, "v": xp.expand_dims(self._v, axis=0)}
        self.cluster_centers_ = xp.take(self.cluster_centers_, order, axis=0)
        self.activations_ = xp.take(self.activations_, order, axis=0)

    def _assign(self, Z, *, xp):
        logits = self.concentration * xp.matmul(_lift(Z, xp=xp), xp.permute_dims(self._D, (1, 0)))
        return couplings(logits, leaky=self.leaky, xp=xp)
