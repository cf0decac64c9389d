"""Accelerator kernels (Numba for NumPy arrays, CuPy for the GPU). Imported only when a backend
selects them; each one is tested against the pure Array API reference."""
