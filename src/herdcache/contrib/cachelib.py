"""cachelib's cache API on herdcache (what Flask-Caching builds on).

::

    from herdcache.contrib.cachelib import HerdcacheCache

    cache = HerdcacheCache("myapp", default_timeout=300, size="256MiB")
    cache.set("user:1", {"name": "Ada"})
    cache.inc("hits")                       # a missing key starts from 0, atomically
    cache.get_or_set("report", build, 60)   # build() runs in one process of the host

cachelib's semantics, not Django's: a timeout of 0 never expires, None is
the ``default_timeout`` (whose 0 also means never), and a negative one
expires at once.  Values go through the cache's ``serializer`` attribute
(cachelib's pickle serializer by default, which Flask-Caching may replace
with its ``CACHE_SERIALIZER``); herdcache stores the bytes it makes.  As
with every pickle cache, only trusted writers may reach the segment: it is
mode 0600, so that is the processes of your user.

For Flask-Caching, use :mod:`herdcache.contrib.flask` (its ``CACHE_TYPE``
and a ``memoize`` that computes once for all workers); setting
``CACHE_TYPE`` to this class works too, with the options in
``CACHE_OPTIONS``.
"""

from __future__ import annotations

import datetime as dt
import pickle
from collections.abc import Callable
from typing import Any

from cachelib import BaseCache
from cachelib.serializers import SimpleSerializer

from ..cache import FOREVER, Cache
from ..compute import DEFAULT_LEASE, ComputeOptions
from ..errors import CacheFull, ValueTooLarge
from ._shared import shared_cache


class HerdcacheCache(BaseCache):
    """A cachelib cache in a herdcache segment, shared by every process
    that opens the same ``name`` (see the module docstring).

    :param name: the segment's name; None for an anonymous cache, shared
        only with processes forked after it was opened.
    :param default_timeout: seconds (or a timedelta) when a call gives none;
        0: never expire.
    :param key_prefix: put before every key (and :meth:`clear` removes only
        the keys that have it).
    :param lease: seconds :meth:`get_or_set`'s computing process may take
        before another takes over; ``wait_timeout``: how long the others
        wait (None: the lease).
    :param options: for :class:`herdcache.Cache`: ``size``,
        ``max_value_size``, ``evict``, ``dir``, ``mode``, ``allow_shared``.
    """

    serializer = SimpleSerializer()

    def __init__(
        self,
        name: str | None = None,
        default_timeout: int | dt.timedelta = 300,
        ignore_delete_many_errors: bool = True,
        *,
        key_prefix: str = "",
        lease: float = DEFAULT_LEASE,
        wait_timeout: float | None = None,
        **options: Any,
    ):
        """Open (or attach to) the cache; see the class docstring."""
        super().__init__(default_timeout, ignore_delete_many_errors)
        self._cache: Cache = shared_cache(name, serializer="raw", **options)
        self.key_prefix = key_prefix
        self._lease = lease
        self._wait_timeout = wait_timeout

    @property
    def cache(self) -> Cache:
        """The :class:`herdcache.Cache` underneath."""
        return self._cache

    def _ttl(self, timeout: int | dt.timedelta | None) -> float:
        seconds = self._normalize_timeout(timeout)
        if seconds == 0:
            return FOREVER
        return max(float(seconds), 0.0)

    def _dumps(self, value: Any) -> bytes | None:
        data = self.serializer.dumps(value, pickle.HIGHEST_PROTOCOL)
        return None if data is None else bytes(data)

    def _loads(self, data: bytes | None) -> Any:
        return None if data is None else self.serializer.loads(data)

    # -- cachelib's API ------------------------------------------------------------

    def get(self, key: str) -> Any:
        """The value of ``key``, or None."""
        return self._loads(self._cache.get(self.key_prefix + key))

    def has(self, key: str) -> bool:
        """True if ``key`` is present and unexpired."""
        return self.key_prefix + key in self._cache

    def set(self, key: str, value: Any, timeout: int | dt.timedelta | None = None) -> bool:
        """Store ``value``; False if it could not be (the serializer refused
        it, or it is too large): the key's old value is then gone too."""
        return self._store(self._cache.set, key, value, timeout) is not False

    def add(self, key: str, value: Any, timeout: int | dt.timedelta | None = None) -> bool:
        """Store ``value`` only if ``key`` is absent; True if stored."""
        return bool(self._store(self._cache.add, key, value, timeout))

    def _store(self, store: Callable[..., Any], key: str, value: Any, timeout: Any) -> Any:
        full = self.key_prefix + key
        data = self._dumps(value)
        if data is None:
            self._cache.delete(full)  # as a failed set: no stale old value
            return False
        try:
            return store(full, data, self._ttl(timeout))
        except (ValueTooLarge, CacheFull):
            return False

    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it was there."""
        return self._cache.delete(self.key_prefix + key)

    def get_many(self, *keys: str) -> list[Any]:
        """The values of ``keys``, None for each one absent."""
        return [self.get(key) for key in keys]

    def clear(self) -> bool:
        """Remove every key (with a key_prefix: every key that has it)."""
        if not self.key_prefix:
            self._cache.clear()
        else:
            mine = [k for k in self._cache.keys() if isinstance(k, str) and k.startswith(self.key_prefix)]
            self._cache.delete_many(mine)
        return True

    def inc(self, key: str, delta: int = 1) -> int:
        """Add ``delta`` to the number under ``key`` (a missing key starts
        from 0), atomically across processes; return the new value."""
        full = self.key_prefix + key
        while True:
            data, token = self._cache.gets(full)
            if token is None:
                ttl = self._ttl(None)  # a new key: the default timeout
            else:
                try:
                    left = self._cache.ttl(full)
                except KeyError:
                    continue  # removed since gets(): start again
                ttl = FOREVER if left is None else left  # keep its expiry
            new = (self._loads(data) or 0) + delta
            if self._cache.compare_and_set(full, self._dumps(new), token, ttl):
                return new

    def dec(self, key: str, delta: int = 1) -> int:
        """Subtract ``delta`` (see :meth:`inc`)."""
        return self.inc(key, -delta)

    # -- single flight ----------------------------------------------------------------

    def get_or_set(self, key: str, compute: Callable[[], Any], timeout: int | dt.timedelta | None = None) -> Any:
        """The value of ``key``; if it is missing, ``compute()`` runs in one
        caller of the whole host while every other caller (any process or
        thread) waits and receives the same value."""
        full = self.key_prefix + key

        def stored() -> bytes:
            data = self._dumps(compute())
            if data is None:
                raise pickle.PicklingError(f"the serializer refused the value computed for {key!r}")
            return data

        options = ComputeOptions(ttl=self._ttl(timeout), lease=self._lease, wait_timeout=self._wait_timeout)
        return self._loads(self._cache.get_or_compute(full, stored, options=options))
