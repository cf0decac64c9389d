"""Global and context-local configuration (``get_config``, ``set_config``, ``config_context``).

The global defaults live in a lock-protected dict; :func:`config_context` overrides them in a
:class:`contextvars.ContextVar`, so an override is local to the thread (and to the asyncio task)
that entered it and never leaks into another thread.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["BACKENDS", "get_config", "set_config", "config_context"]

BACKENDS = ("auto", "numpy", "numba", "cupy")

_DEFAULTS = {"backend": "auto"}
_global_config = dict(_DEFAULTS)
_global_lock = threading.Lock()
_local_config: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "caproute_config", default=None
)


def validate_backend(
    backend: object, *, name: str = "backend", allow_none: bool = False
) -> str | None:
    """Return ``backend`` if it is one of :data:`BACKENDS`, else raise ValueError."""
    if backend is None and allow_none:
        return None
    if not isinstance(backend, str) or backend not in BACKENDS:
        allowed = ", ".join(repr(b) for b in BACKENDS)
        extra = " or None" if allow_none else ""
        raise ValueError(f"`{name}` must be one of {allowed}{extra}; got {backend!r}.")
    return backend


def _validated(options):
    unknown = sorted(set(options) - set(_DEFAULTS))
    if unknown:
        known = ", ".join(sorted(_DEFAULTS))
        raise TypeError(f"unknown configuration option(s) {unknown}; known options: {known}.")
    out = {}
    for key, value in options.items():
        if value is None:
            continue
        if key == "backend":
            value = validate_backend(value)
        out[key] = value
    return out


def get_config() -> dict[str, Any]:
    """Return the configuration in force here, as a new dict.

    Returns
    -------
    config : dict
        ``{"backend": ...}``: the global values of :func:`set_config`, overridden by any
        :func:`config_context` entered in this thread or task.

    Examples
    --------
    >>> import caproute as cr
    >>> cr.get_config()["backend"]
    'auto'
    """
    with _global_lock:
        config = dict(_global_config)
    local = _local_config.get()
    if local:
        config.update(local)
    return config


def set_config(backend: str | None = None) -> None:
    """Set global configuration, for every thread.

    Parameters
    ----------
    backend : {"auto", "numpy", "numba", "cupy"} or None, default=None
        Default backend of every routing call and estimator whose own ``backend`` is None.
        ``"auto"`` runs where the input lives (Numba kernels for NumPy input where they exist,
        CuPy kernels for CuPy input); ``"numpy"`` is the pure Array API reference path;
        ``"numba"`` forces the Numba kernels; ``"cupy"`` runs on the GPU. None leaves it as is.

    Examples
    --------
    >>> import caproute as cr
    >>> cr.set_config(backend="numpy")
    >>> cr.get_config()["backend"]
    'numpy'
    >>> cr.set_config(backend="auto")
    """
    options = _validated({"backend": backend})
    with _global_lock:
        _global_config.update(options)


@contextmanager
def config_context(*, backend: str | None = None) -> Iterator[None]:
    """Context manager that overrides the configuration in this thread or task only.

    Parameters
    ----------
    backend : {"auto", "numpy", "numba", "cupy"} or None, default=None
        Backend in force inside the block; None keeps the current one.

    Yields
    ------
    None
        The overrides hold until the block exits, even by an exception.

    Examples
    --------
    >>> import caproute as cr
    >>> with cr.config_context(backend="numpy"):
    ...     cr.get_config()["backend"]
    'numpy'
    >>> cr.get_config()["backend"]
    'auto'
    """
    options = _validated({"backend": backend})
    current = _local_config.get() or {}
    token = _local_config.set({**current, **options})
    try:
        yield
    finally:
        _local_config.reset(token)
