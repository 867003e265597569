"""herdcache: a shared-memory cache and toolkit for the processes of one host.

The pieces, each in a module of its own:

- :class:`Cache` (``herdcache.cache``): the shared key/value cache.
- :class:`Segment` (``herdcache.segment``): shared memory by name or by fork,
  with named structures inside.
- :class:`Counter`, :class:`Lock`, :class:`Condition`: atomic counters, and a
  lock and condition that survive any process being killed.
- :class:`Queue` (``herdcache.queue``): a message queue in shared memory
  with the API of :class:`queue.Queue`, after PostgreSQL's ``shm_mq``.
- :class:`TieredCache` (``herdcache.tier``): many hosts, each with its
  shared cache in front of one Redis or Valkey (needs ``redis``).
- ``herdcache.errors``: every exception, rooted at :class:`HerdcacheError`.
- ``herdcache.clock``: move this process's cache clock forward, in tests.
"""

from __future__ import annotations

try:
    from . import _core  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "herdcache's C extension (herdcache._core) is not built: install with "
        "`pip install .` on Linux with gcc and the Python headers "
        f"(python3-dev) present. The import failed with: {exc}"
    ) from exc

from . import clock
from .cache import FOREVER, Cache
from .counter import Counter
from .errors import HerdcacheError
from .queue import Queue
from .segment import Segment, StructInfo, gc, is_orphan, list_segments, remove
from .sizes import parse_size
from .snapshot import Snapshot
from .sync import Condition, Lock


def __getattr__(name: str) -> object:
    # TieredCache needs redis-py (the "redis" extra); import it on first use
    # so that `import herdcache` works without it.
    if name == "TieredCache":
        from .tier import TieredCache

        return TieredCache
    raise AttributeError(f"module 'herdcache' has no attribute {name!r}")

__version__ = "0.1.0"

__all__ = [
    "FOREVER",
    "Cache",
    "Condition",
    "Counter",
    "HerdcacheError",
    "Lock",
    "Queue",
    "Segment",
    "Snapshot",
    "StructInfo",
    "TieredCache",
    "gc",
    "is_orphan",
    "list_segments",
    "parse_size",
    "remove",
]
