"""Routing as clustering: scikit-learn estimators built on the routing functions."""

from .dynamic import DynamicRoutingClustering
from .em import EMRoutingClustering

__all__ = ["DynamicRoutingClustering", "EMRoutingClustering"]
