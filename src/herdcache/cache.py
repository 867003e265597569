"""The shared cache: one key/value store for every process of a host.

::

    cache = herdcache.Cache("myapp", size="256MiB", default_ttl=300)
    cache.set("user:1", {"name": "Ada", "roles": ["admin"]}, ttl=30)
    cache.get("user:1")                      # -> the dict, or None
    cache["user:1"]; "user:1" in cache; del cache["user:1"]; len(cache)

A named cache lives in the segment of that name (attached, or created if
absent); ``Cache(size=...)`` without a name makes an anonymous segment
shared with ``fork()`` children.  Reads take no lock and write nothing
shared; writers lock one stripe of the table.  A process killed in the
middle of a write costs at most that one entry: readers never see a torn
value, and the stripe is repaired by the next writer (see
``docs/design.md``).

Keys are ``str`` (stored as UTF-8) or ``bytes``, 1 to 250 bytes; a str key
and the bytes of its UTF-8 encoding are the same key.  Values go through
the serializer (msgpack by default, see :mod:`herdcache.serializers`) and
may be up to ``max_value_size`` bytes once serialized (1 MiB by default,
less in a small cache: see ``stats()["max_value_size"]``).

TTLs are float seconds.  ``ttl=None`` means the cache's ``default_ttl``;
``default_ttl=None`` means never expire; :data:`FOREVER` means never
expire whatever the default; a ttl of 0 or less stores nothing and removes
the key (as Django does).  Expiry uses the monotonic clock, so changing the
wall clock changes nothing.
"""

from __future__ import annotations

import datetime
import decimal
import math
import uuid
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any, Awaitable, Callable

from . import _core, compute
from .compute import DEFAULT_LEASE, ComputeOptions
from .errors import HerdcacheError, InvalidArgument, SerializationError
from .memoize import memoize
from .segment import Segment
from .serializers import TAG_RAW, get_serializer
from .sizes import parse_size

#: A ttl meaning "never expires", whatever the cache's default_ttl.
FOREVER = math.inf

#: Bytes of a named segment kept outside the cache for other structures
#: (counters, locks, queues) its users may add.
RESERVED_BYTES = 1 << 20

_MISSING = object()

#: local_values= choices: the types the decoded layer may keep (None: any).
_LOCAL_VALUES = {
    "any": None,
    "immutable": (bool, int, float, complex, str, bytes, datetime.datetime, datetime.date,
                  datetime.time, datetime.timedelta, decimal.Decimal, uuid.UUID),
}

# hc_set_mode in table.h
_SET, _ADD, _REPLACE, _CAS = 0, 1, 2, 3


def _cache_bytes(segment: Segment) -> int:
    """The size of the cache structure in a segment: a pure function of the
    segment's size, so every process that opens it asks for the same."""
    info = segment.info()
    return info["size"] - info["data_offset"] - min(RESERVED_BYTES, info["size"] // 8)


class Cache(MutableMapping):
    """A key/value cache in shared memory, shared by every process that opens it.

    :param name: the segment's name (attach or create); None for an
        anonymous segment shared with fork() children only.
    :param size: bytes of the segment when it is created (int or "256MiB").
    :param default_ttl: seconds a value lives when set without a ttl; None:
        forever.
    :param serializer: "msgpack" (default), "pickle" (trusted writers only),
        "raw" (bytes), or an object with dumps/loads.
    :param evict: when full, evict by SIEVE (True) or raise CacheFull.
    :param max_value_size: the largest serialized value accepted.
    :param segment: an already open Segment to put the cache in, instead of
        name/size.
    :param local_items: keep the decoded values of up to this many keys in
        this process (0, the default: off).  A get served from them costs
        about what ``functools.lru_cache`` costs, and is still exactly what
        a plain get returns at that moment: every hit first checks, in
        O(1) and without decoding, that the shared table still holds the
        very item the value was decoded from and that it has not expired,
        so a write, delete, expiry, eviction or clear by any process is
        seen at once.  Such a hit returns the *same object* every time, as
        ``lru_cache`` does: do not mutate it (that would change what this
        process's later hits return, never the shared value), or use
        ``local_values="immutable"``.
    :param local_bytes: bound on the serialized bytes of the values kept
        (the decoded objects take more; default 16 MiB).
    :param local_values: "any" (default) keeps every value; "immutable"
        keeps only values of immutable types (None, bool, int, float, str,
        bytes, datetime, date, time, timedelta, Decimal, UUID, and tuples
        and frozensets of them): mutable ones are decoded afresh on every
        get.
    """

    def __init__(
        self,
        name: str | None = None,
        size: int | str = "64MiB",
        *,
        default_ttl: float | None = None,
        serializer: Any = "msgpack",
        evict: bool = True,
        max_value_size: int | str = "1MiB",
        dir: str | None = None,
        mode: int = 0o600,
        allow_shared: bool = False,
        segment: Segment | None = None,
        local_items: int = 0,
        local_bytes: int | str = "16MiB",
        local_values: str = "any",
    ):
        """Open (or create) the cache; see the class docstring."""
        if default_ttl is not None and not default_ttl > 0:
            raise InvalidArgument(f"default_ttl must be > 0 seconds or None (never), got {default_ttl!r}")
        self._serializer = get_serializer(serializer)
        self._tag = self._serializer.tag
        self._dumps = self._serializer.dumps
        self._loads = self._serializer.loads
        self.default_ttl = default_ttl
        self._owns_segment = segment is None
        if segment is None:
            if name is None:
                segment = Segment.anonymous(size)
            else:
                segment = Segment.open(name, size, dir=dir, mode=mode, allow_shared=allow_shared)
        self.segment = segment
        self.name = name
        nbytes = _cache_bytes(segment)
        try:
            offset, _found = segment._handle.alloc("cache", nbytes, _core.KIND_CACHE)
            self._core = _core.Cache(segment._handle, offset, nbytes, parse_size(max_value_size), evict)
            self._core.set_decoder(self._tag, *self._decoder(), self._serializer.name)
            self._set_local(local_items, local_bytes, local_values)
        except BaseException:
            if self._owns_segment:
                segment.close()
            raise

    # -- helpers -------------------------------------------------------------

    def _decoder(self) -> tuple[Any, dict[str, Any] | None]:
        """What the core calls on the bytes of a hit (get() without frames)."""
        if hasattr(self._serializer, "decoder"):
            return self._serializer.decoder()
        if self._serializer.tag == TAG_RAW:
            return None, None
        return self._loads, None

    def _set_local(self, items: int, nbytes: int | str, values: str) -> None:
        """Configure the per-process decoded layer (see the class docstring)."""
        if isinstance(items, bool) or not isinstance(items, int) or items < 0:
            raise InvalidArgument(f"local_items must be an int >= 0 (0: off), got {items!r}")
        if values not in _LOCAL_VALUES:
            raise InvalidArgument(f"local_values must be one of {sorted(_LOCAL_VALUES)}, got {values!r}")
        self._core.set_local(items, parse_size(nbytes), _LOCAL_VALUES[values])
        self._get_value = self._core.get_local if items else self._core.get_value

    def _ttl(self, ttl: float | None) -> float | None:
        """The effective ttl: None means forever (as the core takes it)."""
        if ttl is None:
            ttl = self.default_ttl
        if ttl is None or ttl == FOREVER:
            return None
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or math.isnan(ttl):
            raise InvalidArgument(f"ttl must be seconds (a number), None or herdcache.FOREVER, not {ttl!r}")
        return float(ttl)

    def _store(self, key: Any, value: Any, ttl: float | None, mode: int = _SET, expect: int = 0) -> int:
        data = self._dumps(value)  # refuses bad values before any shared write
        return self._core.store(key, data, self._tag, self._ttl(ttl), mode, expect)

    # -- the dict / Django-like API ----------------------------------------------

    def get(self, key: Any, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` if it is absent or expired."""
        return self._get_value(key, default)

    def set(self, key: Any, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (None: default_ttl).

        :raises SerializationError: the serializer refused the value (nothing
            was stored).
        :raises ValueTooLarge: the key or the serialized value is too large.
        :raises CacheFull: the cache is full and was opened with evict=False.
        """
        # Validate first: comparing a ttl that is not seconds ("10", [1])
        # with 0 would raise a bare TypeError instead of InvalidArgument.
        effective = self._ttl(ttl)
        if effective is not None and effective <= 0:
            self._dumps(value)
            self.delete(key)
            return
        self._store(key, value, ttl)

    def add(self, key: Any, value: Any, ttl: float | None = None) -> bool:
        """Store only if ``key`` is absent (or expired); True if stored."""
        return self._store(key, value, ttl, _ADD) != 0

    def replace(self, key: Any, value: Any, ttl: float | None = None) -> bool:
        """Store only if ``key`` is present; True if stored."""
        return self._store(key, value, ttl, _REPLACE) != 0

    def delete(self, key: Any) -> bool:
        """Remove ``key``; True if it was there."""
        return self._core.delete(key)

    def touch(self, key: Any, ttl: float | None = None) -> bool:
        """Give ``key`` a new ttl (None: default_ttl); True if it was there."""
        return self._core.touch(key, self._ttl(ttl))

    def ttl(self, key: Any) -> float | None:
        """Seconds ``key`` has left; None if it never expires.

        :raises KeyError: if the key is absent or expired.
        """
        found = self._core.lookup(key)
        if found is None or (found[2] is not None and found[2] <= 0):
            raise KeyError(key)
        return found[2]

    def incr(self, key: Any, delta: int = 1) -> int:
        """Add ``delta`` to the integer stored under ``key``, atomically across
        processes, and return the new value (its ttl is kept).

        :raises KeyError: if the key is absent.
        :raises TypeError: if the stored value is not an integer.
        :raises SerializationError: if another serializer wrote the value.
        """
        while True:
            found = self._core.lookup(key)
            if found is None or (found[2] is not None and found[2] <= 0):
                raise KeyError(key)
            data, fmt, remaining, _stale, csn, _delta = found
            if fmt != self._tag:
                # As get() does: another serializer's bytes are not ours to
                # decode (raw b"\x05" would read as msgpack's 5).
                raise SerializationError(
                    f"the value of {key!r} was stored with format {fmt}, this cache reads "
                    f"format {self._tag}: open the cache with the serializer that wrote it"
                )
            value = self._loads(data)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"incr/decr need an integer value, {key!r} holds {type(value).__name__}")
            new = value + delta
            ttl = FOREVER if remaining is None else max(remaining, 1e-9)
            if self._store(key, new, ttl, _CAS, csn):
                return new

    def decr(self, key: Any, delta: int = 1) -> int:
        """Subtract ``delta`` (see :meth:`incr`)."""
        return self.incr(key, -delta)

    def get_many(self, keys: Iterable[Any]) -> dict[Any, Any]:
        """The values of those ``keys`` that are present, as a dict."""
        found = {}
        get = self._get_value
        for key in keys:
            value = get(key, _MISSING)
            if value is not _MISSING:
                found[key] = value
        return found

    def set_many(self, mapping: Mapping[Any, Any], ttl: float | None = None) -> None:
        """Store every item of ``mapping`` (each serialized before any is stored)."""
        encoded = [(key, self._dumps(value)) for key, value in mapping.items()]
        effective = self._ttl(ttl)
        for key, data in encoded:
            self._core.store(key, data, self._tag, effective)

    def delete_many(self, keys: Iterable[Any]) -> int:
        """Remove ``keys``; return how many were there."""
        return sum(1 for key in keys if self._core.delete(key))

    def clear(self) -> None:
        """Remove every key, for every process."""
        self._core.clear()

    def keys(self) -> list[Any]:  # type: ignore[override]
        """The unexpired keys: str where they are valid UTF-8, else bytes."""
        result: list[Any] = []
        for raw in self._core.keys():
            try:
                result.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                result.append(raw)
        return result

    def __getitem__(self, key: Any) -> Any:
        value = self._get_value(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: Any) -> None:
        if not self._core.delete(key):
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return self._core.get(key, self._tag) is not None

    def __iter__(self) -> Iterator[Any]:
        return iter(self.keys())

    def __len__(self) -> int:
        return self._core.count()

    # -- no stampede ---------------------------------------------------------------

    def get_or_compute(
        self,
        key: Any,
        fn: Callable[[], Any],
        ttl: float | None = None,
        *,
        stale_ttl: float = 0.0,
        early_refresh: float = 0.0,
        lease: float = DEFAULT_LEASE,
        wait_timeout: float | None = None,
        negative_ttl: float = 0.0,
        options: ComputeOptions | None = None,
    ) -> Any:
        """The value of ``key``; if it is missing or expired, ``fn()`` computes
        it, in exactly one process at a time, while every other caller (in any
        process, or thread) waits and receives the same value.

        :param ttl: seconds the computed value lives (None: default_ttl).
        :param stale_ttl: for that many seconds past expiry, callers get the
            old value at once while one process recomputes it.
        :param early_refresh: XFetch beta (1.0 is the paper's default): start
            recomputing before expiry, with a probability that rises as expiry
            nears, so a hot key is refreshed once and callers never wait.
        :param lease: seconds the computing process may take; past it (or at
            once if it dies) one waiter takes over.  A late owner's result is
            then refused.
        :param wait_timeout: seconds a caller waits for another's computation
            before :class:`~herdcache.errors.ComputeTimeout`; None: the lease.
        :param negative_ttl: cache a failure for that many seconds (callers get
            the same exception without recomputing); 0: only the callers
            waiting at the time get it.
        :raises ReentrantCompute: ``fn`` asked for ``key`` itself.
        :raises ComputeTimeout: waited longer than ``wait_timeout``.
        """
        if options is None:
            options = ComputeOptions(ttl, stale_ttl, early_refresh, lease, wait_timeout, negative_ttl)
        return compute.get_or_compute(self, key, fn, options)

    async def aget_or_compute(
        self,
        key: Any,
        fn: Callable[[], Awaitable[Any]],
        ttl: float | None = None,
        *,
        stale_ttl: float = 0.0,
        early_refresh: float = 0.0,
        lease: float = DEFAULT_LEASE,
        wait_timeout: float | None = None,
        negative_ttl: float = 0.0,
        options: ComputeOptions | None = None,
    ) -> Any:
        """:meth:`get_or_compute` for asyncio: ``fn`` is a coroutine function,
        and waiting happens in a worker thread, never blocking the loop."""
        if options is None:
            options = ComputeOptions(ttl, stale_ttl, early_refresh, lease, wait_timeout, negative_ttl)
        return await compute.aget_or_compute(self, key, fn, options)

    def memoize(
        self,
        ttl: float | None = None,
        *,
        stale_ttl: float = 0.0,
        early_refresh: float = 0.0,
        lease: float = DEFAULT_LEASE,
        wait_timeout: float | None = None,
        negative_ttl: float = 0.0,
        key: Callable[..., str] | None = None,
    ) -> Callable:
        """Decorate a function (or coroutine function) so that its results are
        shared by every process through this cache, each computed once (see
        :mod:`herdcache.memoize` for how keys are built)."""
        options = ComputeOptions(ttl, stale_ttl, early_refresh, lease, wait_timeout, negative_ttl)
        return memoize(self, options, key)

    # -- introspection -----------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters summed over every process (hits, misses, sets, deletes,
        evictions, expirations, ...), usage (entries, bytes_used, bytes_free,
        payload_bytes), ``per_process``: the counters of each process, and
        ``local``: this process's decoded layer (items, bytes, max_items,
        max_bytes, and its own hits and misses; its hits are not in
        ``hits``, which counts reads of the shared table)."""
        stats = self._core.stats()
        stats["per_process"] = self._core.stats_by_process()
        stats["local"] = self._core.local_stats()
        return stats

    def check(self) -> None:
        """Verify the table's invariants; raise CorruptSegment if one is broken."""
        self._core.check()

    def close(self) -> None:
        """Close this process's view (the segment too, if the cache opened it)."""
        if self._owns_segment and not self.segment.closed:
            self.segment.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.name or "(anonymous)"
        try:
            return f"<herdcache.Cache {where!r} entries={self._core.stats()['entries']}>"
        except HerdcacheError:
            return f"<herdcache.Cache {where!r} closed>"
