"""CuPy kernels: CuPy arrays in and out, built once per device, no validation inside."""
