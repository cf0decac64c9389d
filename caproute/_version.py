"""The package version, in one place."""

__version__ = "0.1.0.dev0"


def version_string():
    return __version__
