"""``python -m microturn``: the same CLI as the ``microturn`` command (for a Python without the package installed)."""
import sys

from .cli import main

sys.exit(main())
