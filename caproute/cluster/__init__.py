"""Routing as clustering: scikit-learn estimators built on the routing functions."""

from .dynamic_routing_clustering import DynamicRoutingClustering
from .em_routing_clustering import EMRoutingClustering

__all__ = ["DynamicRoutingClustering", "EMRoutingClustering"]
