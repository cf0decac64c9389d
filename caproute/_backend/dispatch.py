"""The capability table (which operation has which implementation) and backend selection.

Implementations are named by ``"module:function"`` strings and imported only when selected, so
that importing caproute loads neither Numba nor CuPy. Every operation has a ``"reference"``
implementation (pure Array API, the oracle); ``"numba"`` and ``"cupy"`` kernels are accelerators
registered next to it when they exist.

While a GPU is emulated (``caproute.testing.emulated_gpu``, switch in ``emulation.py``) the
device plans run on array_api_strict's "device1": a ``"cupy"`` kernel through numba-cuda's
simulator, its arguments moved to the host and its results back (see :func:`_device_plan`).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

from .._config import get_config, validate_backend
from . import emulation as _emulation
from .namespace import (
    BackendUnavailableError,
    cupy_namespace,
    device,
    is_array,
    is_cupy_namespace,
    is_numpy_namespace,
    numpy_namespace,
    to_device,
)

__all__ = [
    "CAPABILITIES",
    "Plan",
    "adopt",
    "capabilities",
    "numba_available",
    "option_fallbacks",
    "resolve_backend",
    "select_impl",
]

# op -> {implementation name -> "module:function"}; extend this table when a kernel lands.
CAPABILITIES: dict[str, dict[str, str]] = {
    "squash": {
        "reference": "caproute._lib.stable_math:squash",
        "numba": "caproute.kernels.numba.squash:squash",
        "cupy": "caproute.kernels.cuda.squash:squash",
    },
    "dynamic_routing": {
        "reference": "caproute.routing._dynamic_math:dynamic_routing",
        "numba": "caproute.kernels.numba.dynamic_routing:dynamic_routing",
        "cupy": "caproute.kernels.cuda.dynamic_routing:dynamic_routing",
    },
    "dynamic_routing_step": {
        "reference": "caproute.routing._dynamic_math:dynamic_routing_step",
        "numba": "caproute.kernels.numba.routing_steps:dynamic_routing_step",
    },
    "dense_dynamic_routing": {
        "reference": "caproute.routing._dynamic_math:dense_dynamic_routing",
        "numba": "caproute.kernels.numba.dynamic_routing:dense_routing",
        "cupy": "caproute.kernels.cuda.dynamic_routing:dense_routing",
    },
    "em_routing": {
        "reference": "caproute.routing._em_math:em_routing",
        "numba": "caproute.kernels.numba.em_routing:em_routing",
        "cupy": "caproute.kernels.cuda.em_routing:em_routing",
    },
    "em_routing_e_step": {
        "reference": "caproute.routing._em_math:e_step",
        "numba": "caproute.kernels.numba.routing_steps:em_routing_e_step",
    },
    "em_routing_step": {
        "reference": "caproute.routing._em_math:em_routing_step",
        "numba": "caproute.kernels.numba.routing_steps:em_routing_step",
    },
    "em_routing_all_positions": {
        "reference": "caproute.routing._em_conv_math:em_routing_all_positions",
    },
    "conv2d": {
        "reference": "caproute.models.layers.conv:conv2d",
        "numba": "caproute.kernels.numba.conv_gemm:conv2d",
    },
    "primary_squash": {
        "reference": "caproute.models.layers.capsules:primary_squash",
        "numba": "caproute.kernels.numba.primary_squash:primary_squash",
    },
    "conv_matrix_votes": {
        "reference": "caproute.models.layers.matrix_caps:conv_matrix_votes",
        "numba": "caproute.kernels.numba.conv_matrix_votes:conv_matrix_votes",
    },
    "gmm_estep_stats": {
        "reference": "caproute.mixture._gmm_math:fit_stats",
        "numba": "caproute.kernels.numba.gmm_estep:fit_stats",
        "cupy": "caproute.kernels.cuda.gmm_estep:fit_stats",
    },
}


# op -> the options that change its math (the public function's variants), and, per kernel,
# those it implements. A call that sets an option its kernel lacks runs the reference instead
# with backend="auto" (and on the GPU with backend="cupy"); backend="numba" raises.
OPTIONS: dict[str, tuple[str, ...]] = {
    "em_routing": (
        "pose_momentum",
        "e_step_log_var_weight",
        "e_step_norm",
        "mass_floor",
        "cost_log_var",
        "renormalize_assignments",
        "last_inverse_temperature",
    ),
}
KERNEL_OPTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "em_routing": {
        # e_step_norm: only "ratio_child" (the per-sample and per-batch shifts fall back);
        # last_inverse_temperature is folded into the schedule before any kernel runs
        "numba": (
            "pose_momentum",
            "e_step_log_var_weight",
            "e_step_norm=ratio_child",
            "mass_floor",
            "cost_log_var",
            "renormalize_assignments",
            "last_inverse_temperature",
        ),
        "cupy": ("last_inverse_temperature",),
    },
}


@dataclass(frozen=True)
class Plan:
    """Where and how an operation runs: implementation name, namespace, and the callable."""

    impl: str
    xp: object
    func: Callable
    move_to_device: bool = False


def capabilities() -> dict[str, dict[str, bool]]:
    """Which implementations each operation has.

    Returns
    -------
    table : dict
        ``{operation: {"reference": True, "numba": bool, "cupy": bool}}``: whether a kernel
        of that kind exists for the operation (not whether its library is installed here).

    Examples
    --------
    >>> import caproute as cr
    >>> cr.capabilities()["dynamic_routing"]["reference"]
    True
    """
    return {
        op: {impl: impl in impls for impl in ("reference", "numba", "cupy")}
        for op, impls in CAPABILITIES.items()
    }


def option_fallbacks() -> dict[str, dict[str, list[str]]]:
    """Which options of each operation its kernels lack (calls setting them run the reference).

    Returns
    -------
    table : dict
        ``{operation: {kernel: [option, ...]}}`` for the operations with options and kernels.
        An entry ``name=value`` is one value of an option that the kernel implements for
        other values.

    Examples
    --------
    >>> from caproute._backend.dispatch import option_fallbacks
    >>> option_fallbacks()["em_routing"]["numba"]
    ['e_step_norm=ratio_sample', 'e_step_norm=ratio_batch']
    """
    table = {}
    for op, names in OPTIONS.items():
        per_kernel = {}
        for impl in ("numba", "cupy"):
            if impl not in CAPABILITIES[op]:
                continue
            has = KERNEL_OPTIONS.get(op, {}).get(impl, ())
            lacks = []
            for name in names:
                if name in has:
                    continue
                done = [h.partition("=")[2] for h in has if h.startswith(name + "=")]
                if done:
                    values = _OPTION_VALUES.get(name, ())
                    lacks += [f"{name}={v}" for v in values if v not in done]
                else:
                    lacks.append(name)
            per_kernel[impl] = lacks
        table[op] = per_kernel
    return table


# the non-default values of options that kernels implement only in part
_OPTION_VALUES = {"e_step_norm": ("ratio_child", "ratio_sample", "ratio_batch")}


def _lacking(op, impl, options):
    """The entries of ``options`` (``name`` or ``(name, value)``) that kernel ``impl`` of
    ``op`` does not implement, as text for messages."""
    has = KERNEL_OPTIONS.get(op, {}).get(impl, ())
    lacks = []
    for opt in options:
        name, value = opt if isinstance(opt, tuple) else (opt, None)
        if name in has or f"{name}={value}" in has:
            continue
        lacks.append(f"{name}={value!r}" if isinstance(value, str) else name)
    return lacks


def numba_available():
    return importlib.util.find_spec("numba") is not None


def _load(path):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def resolve_backend(xp, backend=None):
    """Where work on input of namespace ``xp`` runs: ``(backend, namespace, move_to_device)``.

    ``backend=None`` takes the configured one. Explicit requests that cannot be honoured raise
    (ImportError for a missing library, BackendUnavailableError for no device, ValueError for
    input on the wrong side of the host/device line); nothing falls back silently.
    """
    backend = validate_backend(get_config()["backend"] if backend is None else backend)
    if backend == "cupy":
        return backend, cupy_namespace(), not is_cupy_namespace(xp)
    if is_cupy_namespace(xp) and backend in ("numpy", "numba"):
        where = (
            "an array on the emulated GPU (caproute.testing.emulated_gpu)"
            if _emulation.emulating()
            else "a CuPy array on the GPU"
        )
        raise ValueError(
            f"backend={backend!r} runs on the host but the input is {where}; "
            "use backend='cupy' or 'auto', or move the input with caproute.to_numpy first."
        )
    if backend == "numba":
        if not is_numpy_namespace(xp):
            raise ValueError(
                f"backend='numba' needs NumPy arrays; got arrays of namespace {xp.__name__!r}. "
                "Convert them with caproute.to_numpy or use backend='numpy'."
            )
        if not numba_available():
            raise ImportError(
                "backend='numba' needs Numba, which is not installed: pip install numba."
            )
    return backend, xp, False


def select_impl(op, xp, backend=None, *, options=()):
    """Choose the implementation of ``op`` for input of namespace ``xp`` (rules of
    :func:`resolve_backend`; an explicit ``backend='numba'`` for an op without a Numba kernel
    raises BackendUnavailableError).

    ``options`` names the call's options that differ from their defaults (a name, or a
    ``(name, value)`` pair for options that kernels implement for some values only): a kernel
    that lacks one is skipped for the reference (``backend='auto'``, and on the device for
    ``backend='cupy'``); ``backend='numba'`` then raises BackendUnavailableError naming it."""
    backend, run_xp, move = resolve_backend(xp, backend)
    impls = CAPABILITIES[op]
    if options:
        impls = dict(impls)
        for impl in ("numba", "cupy"):
            lacks = _lacking(op, impl, options) if impl in impls else []
            if lacks and impl == "numba" and backend == "numba":
                raise BackendUnavailableError(
                    f"backend='numba': the Numba kernel of {op!r} does not implement "
                    f"{', '.join(lacks)}. Use backend='auto' (which runs the reference for "
                    "these options) or 'numpy'."
                )
            if lacks:
                del impls[impl]

    if backend == "cupy":
        return _device_plan(impls, run_xp, move)

    if backend == "numba":
        if "numba" not in impls:
            raise BackendUnavailableError(
                f"backend='numba': there is no Numba kernel for {op!r}; "
                f"it has {sorted(impls)}. Use backend='auto' or 'numpy'."
            )
        return Plan("numba", xp, _load(impls["numba"]))

    if backend == "auto":
        if is_cupy_namespace(xp) and "cupy" in impls:
            return _device_plan(impls, xp, False)
        if is_numpy_namespace(xp) and "numba" in impls and numba_available():
            return Plan("numba", xp, _load(impls["numba"]))

    return Plan("reference", xp, _load(impls["reference"]))


def _device_plan(impls, run_xp, move):
    """The plan on the device: the op's ``"cupy"`` kernel where one is registered, else the
    reference (which runs on CuPy as it is).

    While a GPU is emulated (:func:`caproute.testing.emulated_gpu`), a ``"cupy"`` kernel (a
    numba-cuda launcher) can run only in numba-cuda's CUDA simulator, which takes NumPy arrays:
    the plan's function is then the kernel wrapped by :func:`_through_simulator`, which moves
    the device arrays to the host explicitly, calls the kernel with the NumPy namespace and
    moves its results back to the device. Without the simulator (``NUMBA_ENABLE_CUDASIM`` not
    "1") no kernel can run, and the plan is the reference on the emulated device.
    """
    impl = "cupy" if "cupy" in impls else "reference"
    if impl == "cupy" and _emulation.emulating():
        if not _emulation.cuda_simulator_enabled():  # checked before numba-cuda is imported
            return Plan("reference", run_xp, _load(impls["reference"]), move_to_device=move)
        return Plan("cupy", run_xp, _through_simulator(_load(impls["cupy"])), move_to_device=move)
    return Plan(impl, run_xp, _load(impls[impl]), move_to_device=move)


def _map_arrays(fn, value):
    """``value`` with ``fn`` applied to every array in it (through tuples, named tuples such
    as the GMM statistics, lists and dicts); everything else as it is."""
    if is_array(value):
        return fn(value)
    if isinstance(value, tuple):
        items = [_map_arrays(fn, v) for v in value]
        return type(value)._make(items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, list):
        return [_map_arrays(fn, v) for v in value]
    if isinstance(value, dict):
        return {k: _map_arrays(fn, v) for k, v in value.items()}
    return value


def _first_device(values):
    found = []

    def note(a):
        if not found:
            found.append(device(a))
        return a

    _map_arrays(note, values)
    return found[0] if found else None


def _through_simulator(kernel):
    """A ``"cupy"`` kernel made to run on the emulated GPU: its array arguments go to the host
    (explicitly, through ``to_device``), the kernel runs in numba-cuda's simulator with
    ``xp`` the NumPy namespace, and its results come back to the arguments' device."""
    host = numpy_namespace()

    @functools.wraps(kernel)
    def run(*args, xp, **kwargs):
        home = _first_device((args, kwargs))
        if home is None:
            home = _emulation.emulated_device()
        args, kwargs = _map_arrays(lambda a: to_device(a, host), (args, kwargs))
        out = kernel(*args, xp=host, **kwargs)
        return _map_arrays(lambda a: to_device(a, xp, device=home), out)

    run.kernel = kernel
    return run


def adopt(plan, *arrays):
    """Move ``arrays`` into the plan's namespace when the plan says so (backend='cupy' with host
    input: the one place a host -> device copy happens); None entries pass through."""
    if not plan.move_to_device:
        return arrays
    from .namespace import to_device

    return tuple(None if a is None else to_device(a, plan.xp) for a in arrays)
