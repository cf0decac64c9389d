"""caproute: capsule routing and Gaussian-mixture EM from scratch on NumPy, Numba and CuPy.

Public names only. Importing caproute loads neither Numba nor CuPy: kernels are imported when a
backend first selects them.
"""

from . import testing
from ._backend import BackendUnavailableError, capabilities, to_numpy
from ._config import config_context, get_config, set_config
from ._version import __version__
from .routing import dense_dynamic_routing, dynamic_routing, em_routing, squash

__all__ = [
    "BackendUnavailableError",
    "capabilities",
    "config_context",
    "dense_dynamic_routing",
    "dynamic_routing",
    "em_routing",
    "get_config",
    "set_config",
    "squash",
    "testing",
    "to_numpy",
    "__version__",
]
