"""Capsule routing: dynamic routing (Sabour et al. 2017) and EM routing (Hinton et al. 2018)."""

from .dense import dense_dynamic_routing
from .dynamic import dynamic_routing
from .em_routing import em_routing, official_inverse_temperature
from .squash import squash

__all__ = [
    "dense_dynamic_routing",
    "dynamic_routing",
    "em_routing",
    "official_inverse_temperature",
    "squash",
]
