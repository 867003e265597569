"""Django's cache framework on herdcache: one cache for every worker of a host.

::

    CACHES = {
        "default": {
            "BACKEND": "herdcache.contrib.django.HerdcacheCache",
            "LOCATION": "myapp",          # the segment's name: one per host
            "TIMEOUT": 300,
            "OPTIONS": {"size": "256MiB"},
        }
    }

The whole of Django's ``BaseCache`` contract, with Django's semantics:
``timeout`` is ``DEFAULT_TIMEOUT`` (the ``TIMEOUT`` setting), ``None``
(never expire) or seconds, 0 or less expiring at once; ``KEY_PREFIX``,
``VERSION`` and ``KEY_FUNCTION`` make keys, and ``validate_key`` warns
(``CacheKeyWarning``) about keys memcached would refuse, which work here
(keys over 250 bytes are stored under a digest).  ``incr``/``decr`` raise
ValueError on a missing key, and work on floats as LocMem's do.

What Django's own backends do not give:

- ``get_or_set``/``aget_or_set`` compute a missing key once for the whole
  host (:meth:`herdcache.Cache.get_or_compute`): concurrent callers in
  every worker wait for that one computation and get its value.
- Every ``a*`` method runs in the event loop's thread (a hit costs what a
  sync ``get`` costs); only a wait for another process's computation
  happens in a worker thread.
- django-redis's extras: :meth:`~HerdcacheCache.ttl`, ``expire``,
  ``persist``, ``lock`` (a lock that survives its holder being killed),
  ``keys``/``iter_keys``/``delete_pattern``.

Values are pickled, as every Django backend does (model instances,
``HttpResponse`` objects of the cache middleware).  Unpickling runs the
writer's code, so this is safe because the segment is mode 0600: only
processes of the same user can write it.  Do not open it with
``allow_shared``/``mode`` for other users unless they are as trusted.

``close()``, which Django calls after every request, keeps the cache: the
segment stays mapped for the life of the process, shared by every backend
object of the same configuration.

``OPTIONS``: ``size``, ``serializer`` (default ``"pickle"``),
``max_value_size``, ``evict``, ``dir``, ``mode``, ``allow_shared`` (see
:class:`herdcache.Cache`); ``lease``, ``wait_timeout`` and ``stale_ttl``
for ``get_or_set`` (see :meth:`herdcache.Cache.get_or_compute`).
``MAX_ENTRIES`` and ``CULL_FREQUENCY`` are ignored: the segment's size
bounds the cache, and a full one evicts by SIEVE.  Without a
``LOCATION`` the cache is anonymous, shared only with processes forked
after it was opened (gunicorn ``--preload``): give it a name.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import logging
import math
from collections.abc import Iterator
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache, get_key_func

from ..cache import FOREVER, Cache
from ..compute import DEFAULT_LEASE, ComputeOptions
from ..errors import CacheFull, ValueTooLarge
from ..sync import Lock
from ._shared import shared_cache

logger = logging.getLogger(__name__)

#: OPTIONS passed on to herdcache.Cache.
CACHE_OPTIONS = ("size", "serializer", "max_value_size", "evict", "dir", "mode", "allow_shared")

_MISSING = object()


def default_reverse_key(key: str) -> str:
    """The user's key in a key made by Django's default KEY_FUNCTION
    (``prefix:version:key``)."""
    return key.split(":", 2)[2]


class HerdcacheCache(BaseCache):
    """A Django cache backend on a :class:`herdcache.Cache` (see the module
    docstring for settings and semantics)."""

    def __init__(self, location: str, params: dict[str, Any]):
        """Open (or attach to) the cache named ``location``."""
        super().__init__(params)
        options = dict(params.get("OPTIONS") or {})
        cache_options = {name: options[name] for name in CACHE_OPTIONS if name in options}
        cache_options.setdefault("serializer", "pickle")
        self._cache: Cache = shared_cache(location or None, **cache_options)
        self._lease = float(options.get("lease", DEFAULT_LEASE))
        self._wait_timeout = options.get("wait_timeout")
        self._stale_ttl = float(options.get("stale_ttl", 0.0))
        self.reverse_key = get_key_func(params.get("REVERSE_KEY_FUNCTION") or default_reverse_key)

    @property
    def cache(self) -> Cache:
        """The :class:`herdcache.Cache` underneath (stats(), memoize...)."""
        return self._cache

    def _ttl(self, timeout: Any) -> float:
        """Django's timeout as herdcache's ttl: None never expires, 0 or less
        expires at once."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return FOREVER
        return max(float(timeout), 0.0)

    def _key(self, key: Any, version: int | None) -> str:
        made: str = self.make_and_validate_key(key, version=version)
        return made

    # -- BaseCache ---------------------------------------------------------------

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        """Store ``value`` if ``key`` is absent; True if stored."""
        try:
            return self._cache.add(self._key(key, version), value, self._ttl(timeout))
        except (ValueTooLarge, CacheFull) as exc:
            logger.warning("cache add of %r failed: %s", key, exc)
            return False

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        """The value of ``key``, or ``default``."""
        return self._cache.get(self._key(key, version), default)

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> None:
        """Store ``value``.  A value too large for the cache (or no room with
        ``evict`` off) is logged and not stored, and the key's old value is
        removed, as Django's memcached backends do; an unpicklable value
        raises :class:`pickle.PicklingError`."""
        self._set(self._key(key, version), value, self._ttl(timeout))

    def _set(self, key: str, value: Any, ttl: float) -> bool:
        try:
            self._cache.set(key, value, ttl)
        except (ValueTooLarge, CacheFull) as exc:
            logger.warning("cache set of %r failed (its old value is removed): %s", key, exc)
            return False
        return True

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        """Give ``key`` a new timeout; True if it was there."""
        return self._cache.touch(self._key(key, version), self._ttl(timeout))

    def delete(self, key: Any, version: int | None = None) -> bool:
        """Remove ``key``; True if it was there."""
        return self._cache.delete(self._key(key, version))

    def get_many(self, keys: Any, version: int | None = None) -> dict[Any, Any]:
        """The values of the ``keys`` that are present."""
        # str | bytes: the keys of what Cache.get_many returns.
        made: dict[str | bytes, Any] = {self._key(key, version): key for key in keys}
        return {made[key]: value for key, value in self._cache.get_many(made).items()}

    def set_many(self, data: dict[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> list[Any]:
        """Store every item; return the keys that could not be stored."""
        ttl = self._ttl(timeout)
        return [key for key, value in data.items() if not self._set(self._key(key, version), value, ttl)]

    def delete_many(self, keys: Any, version: int | None = None) -> None:
        """Remove ``keys``."""
        self._cache.delete_many([self._key(key, version) for key in keys])

    def has_key(self, key: Any, version: int | None = None) -> bool:
        """True if ``key`` is present and unexpired."""
        return self._key(key, version) in self._cache

    def incr(self, key: Any, delta: int | float = 1, version: int | None = None) -> int | float:
        """Add ``delta`` to the number under ``key``, atomically across
        processes; ValueError if the key is absent."""
        made = self._key(key, version)
        try:
            return self._cache.incr(made, delta)
        except KeyError:
            raise ValueError(f"Key '{made}' not found") from None

    def clear(self) -> None:
        """Remove every key of the cache, for every process."""
        self._cache.clear()

    def close(self, **kwargs: Any) -> None:
        """Nothing to do: Django calls this after every request and keeps
        using the backend, and the segment stays mapped for the process."""

    def get_or_set(self, key: Any, default: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> Any:
        """The value of ``key``; if it is missing, ``default`` (called if
        callable) computed by one caller of the whole host while every
        other caller, in any worker, waits for it and gets the same value."""
        compute = default if callable(default) else (lambda: default)
        return self._cache.get_or_compute(self._key(key, version), compute, options=self._compute_options(timeout))

    async def aget_or_set(
        self, key: Any, default: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> Any:
        """:meth:`get_or_set` for asyncio: a hit never leaves the loop's
        thread; only waiting for another process's computation does."""

        async def compute() -> Any:
            return default() if callable(default) else default

        made = self._key(key, version)
        return await self._cache.aget_or_compute(made, compute, options=self._compute_options(timeout))

    def _compute_options(self, timeout: Any) -> ComputeOptions:
        return ComputeOptions(
            ttl=self._ttl(timeout), stale_ttl=self._stale_ttl, lease=self._lease, wait_timeout=self._wait_timeout
        )

    # -- django-redis's extras -------------------------------------------------------

    def ttl(self, key: Any, version: int | None = None) -> int | None:
        """Whole seconds ``key`` has left (rounded up), None if it never
        expires, 0 if it is absent (django-redis's ``ttl``)."""
        try:
            left = self._cache.ttl(self._key(key, version))
        except KeyError:
            return 0
        return None if left is None else max(math.ceil(left), 1)

    def expire(self, key: Any, timeout: Any, version: int | None = None) -> bool:
        """Set ``key``'s timeout to ``timeout`` seconds; True if it was there."""
        return self.touch(key, timeout, version=version)

    def persist(self, key: Any, version: int | None = None) -> bool:
        """Make ``key`` never expire; True if it was there."""
        return self.touch(key, None, version=version)

    def lock(self, key: Any, version: int | None = None) -> Lock:
        """The cross-process lock named by ``key`` (:class:`herdcache.Lock`:
        ``with cache.lock("rebuild"):``).  If its holder is killed, the next
        ``acquire`` takes it.  Each distinct name takes one of the segment's
        256 named structures, for good: use a few fixed names."""
        digest = hashlib.blake2b(self._key(key, version).encode(), digest_size=16).hexdigest()
        return self._cache.segment.lock(f"django-lock:{digest}")

    def iter_keys(self, search: str, version: int | None = None) -> Iterator[str]:
        """The user keys (KEY_PREFIX and version removed) of this cache's
        keys that match the glob ``search`` in that version."""
        pattern = self.make_key(search, version=version)
        for key in self._cache.keys():
            if isinstance(key, str) and fnmatch.fnmatchcase(key, pattern):
                yield self.reverse_key(key)

    def keys(self, search: str, version: int | None = None) -> list[str]:
        """:meth:`iter_keys` as a list."""
        return list(self.iter_keys(search, version=version))

    def delete_pattern(self, pattern: str, version: int | None = None) -> int:
        """Remove the keys :meth:`iter_keys` lists; return how many went."""
        return self._cache.delete_many([self.make_key(key, version=version) for key in self.iter_keys(pattern, version)])


def _native(name: str) -> Any:
    """The ``a``-method of ``name``: the sync method, called in the event
    loop's thread.  Django's default hops to a thread (~190 us against ~4 us
    for a hit); herdcache's calls never block for long (a stripe lock is held
    for a copy), except get_or_set's wait, which aget_or_set does apart."""
    sync = getattr(HerdcacheCache, name)

    @functools.wraps(sync)
    async def method(self: HerdcacheCache, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, name)(*args, **kwargs)

    method.__name__ = method.__qualname__ = f"a{name}"
    method.__doc__ = f"Async :meth:`{name}`, run in the event loop's thread (never a thread hop)."
    return method


for _name in (
    "add", "get", "set", "touch", "delete", "get_many", "set_many", "delete_many", "has_key",
    "incr", "decr", "clear", "close", "incr_version", "decr_version",
):  # fmt: skip
    setattr(HerdcacheCache, f"a{_name}", _native(_name))
del _name
