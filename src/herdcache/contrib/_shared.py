"""One :class:`~herdcache.Cache` per process for each configuration.

Frameworks make backend objects freely: Django one per thread (and per
``caches[alias]`` context), Flask-Caching one per app.  They must all use
the same mapping of the segment, opened once and kept for the life of the
process; closing it under a request that still reads would be a bug.
An anonymous cache opened before ``fork()`` (gunicorn ``--preload``) is
inherited by the workers through this table, so they share it.
"""

from __future__ import annotations

import threading
from typing import Any

from ..cache import Cache

_opened: dict[tuple[Any, ...], Cache] = {}
_lock = threading.Lock()


def shared_cache(name: str | None, **options: Any) -> Cache:
    """The process's Cache for ``name`` and ``options``, opened on first use."""
    key = (name, tuple(sorted((k, repr(v)) for k, v in options.items())))
    with _lock:
        cache = _opened.get(key)
        if cache is None:
            cache = _opened[key] = Cache(name, **options)
        return cache
