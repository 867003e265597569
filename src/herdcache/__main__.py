"""``python -m herdcache``: see :mod:`herdcache.cli`."""

import sys

from .cli import main

sys.exit(main())
