"""GPU kernels written with numba-cuda, launched on CuPy arrays on CuPy's current stream.

Tested without a GPU in numba-cuda's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, tests marked
``cudasim``) and compiled to PTX for sm_80 and sm_90 by the compile gate. Kernels validate
nothing; the public functions do.
"""
