"""``python -m caproute``: the ``caproute`` command."""

import sys

from .cli import main

sys.exit(main())
