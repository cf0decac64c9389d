"""What every GPU kernel launch needs: the stream to launch on and a per-dtype kernel cache.

Kernels run on CuPy's current stream, so they order with the CuPy work around them. In the
CUDA simulator (no GPU, no CuPy arrays) they run on the simulator's default stream.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import config, cuda


def launch_stream():
    """CuPy's current stream as a numba-cuda stream (the default stream in the simulator)."""
    if config.ENABLE_CUDASIM:
        return cuda.default_stream()
    import cupy

    return cuda.external_stream(cupy.cuda.get_current_stream().ptr)


def launch(kernel, grid, block):
    """``kernel`` configured for ``grid`` x ``block`` on :func:`launch_stream`; call the result
    with the kernel's arguments.

    numba-cuda normally synchronises the stream a ``__cuda_array_interface__`` array names
    before reading it. Here that stream is the launch stream itself (CuPy's current one), so
    the synchronisation would only stall the host: it is switched off for the launch."""
    configured = kernel[grid, block, launch_stream()]

    def run(*args):
        saved = config.CUDA_ARRAY_INTERFACE_SYNC
        config.CUDA_ARRAY_INTERFACE_SYNC = False
        try:
            configured(*args)
        finally:
            config.CUDA_ARRAY_INTERFACE_SYNC = saved

    return run


def per_dtype(build):
    """Decorate ``build(dtype) -> kernels`` so each dtype is built once. ``build`` receives the
    NumPy scalar type (np.float32 or np.float64) and closes over typed constants made with it
    (``half = dtype(0.5)``): a Python float in a float32 kernel would compute in float64."""

    @functools.cache
    def cached(dtype_name):
        return build(np.dtype(dtype_name).type)

    def get(dtype):
        return cached(np.dtype(dtype).name)

    return get
