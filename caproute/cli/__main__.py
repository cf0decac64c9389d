"""``python -m caproute.cli``: the ``caproute`` command (as ``python -m caproute``)."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
