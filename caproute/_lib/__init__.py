"""Backend-free helpers: stable log-space math and input validation."""
