"""Numba kernels: NumPy in, NumPy out, contiguous arrays, no validation inside."""
