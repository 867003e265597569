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

Keys are ``str`` (stored as UTF-8) or ``bytes`` of 1 byte or more; a str
key and the bytes of its UTF-8 encoding are the same key.  Keys over 250
bytes (memcached's limit) work too, a little slower: they are stored
under a digest, with the full key kept beside the value (see
:mod:`herdcache.longkeys`).  Values go through
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

import math
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any, Awaitable, Callable

from . import _core, compute, longkeys
from .compute import DEFAULT_LEASE, ComputeOptions
from .errors import HerdcacheError, InvalidArgument, SerializationError, ValueTooLarge
from .memoize import memoize
from .prefork import warn_if_worker_private
from .segment import Segment
from .serializers import TAG_RAW, get_serializer
from .sizes import parse_size

#: A ttl meaning "never expires", whatever the cache's default_ttl.
FOREVER = math.inf

#: Bytes of a named segment kept outside the cache for other structures
#: (counters, locks, queues) its users may add.
RESERVED_BYTES = 1 << 20

_MISSING = object()

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
                warn_if_worker_private()
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

    def _ttl(self, ttl: float | None) -> float | None:
        """The effective ttl: None means forever (as the core takes it)."""
        if ttl is None:
            ttl = self.default_ttl
        if ttl is None or ttl == FOREVER:
            return None
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or math.isnan(ttl):
            raise InvalidArgument(f"ttl must be seconds (a number), None or herdcache.FOREVER, not {ttl!r}")
        return float(ttl)

    def _where(self, key: Any) -> tuple[Any, bytes | None]:
        """(the key the table stores, the full key if it is a long one)."""
        raw = longkeys.long_key(key)
        return (key, None) if raw is None else (longkeys.table_key(raw), raw)

    def _store(self, key: Any, value: Any, ttl: float | None, mode: int = _SET, expect: int = 0) -> int:
        data = self._dumps(value)  # refuses bad values before any shared write
        return self._put(key, data, self._ttl(ttl), mode, expect)

    def _put(self, key: Any, data: bytes, ttl: float | None, mode: int = _SET, expect: int = 0) -> int:
        """Store serialized bytes for an effective ttl; the item's csn, 0 if
        the mode refused.  A long key stores its envelope under its digest."""
        raw = longkeys.long_key(key)
        if raw is None:  # the common case, without a call more
            return self._core.store(key, data, self._tag, ttl, mode, expect)
        return self._core.store(longkeys.table_key(raw), *self._seal(raw, data), ttl, mode, expect)

    def _seal(self, raw: bytes | None, data: bytes) -> tuple[bytes, int]:
        """(bytes, format) the table stores for serialized ``data`` under a
        long key ``raw``, or under a short key (``raw`` None)."""
        if raw is None:
            return data, self._tag
        return longkeys.wrap(raw, data), self._tag + longkeys.LONG_FORMAT

    def _unseal(self, key: Any, raw: bytes | None, data: bytes, fmt: int) -> bytes | None:
        """The value bytes of an item :meth:`_seal` stored for ``key``; None
        if the item holds another long key's value (same digest).

        :raises SerializationError: another serializer wrote the value.
        """
        if raw is not None:
            if fmt < longkeys.LONG_FORMAT:
                return None
            fmt -= longkeys.LONG_FORMAT
            data = longkeys.unwrap(raw, data)
            if data is None:
                return None
        if fmt != self._tag:
            # As get() does: another serializer's bytes are not ours to
            # decode (raw b"\x05" would read as msgpack's 5).
            raise SerializationError(
                f"the value of {key!r} was stored with format {fmt}, this cache reads "
                f"format {self._tag}: open the cache with the serializer that wrote it"
            )
        return data

    def _entry(self, key: Any) -> tuple[bytes, float | None, int, int] | None:
        """(value bytes, seconds left or None for never, csn, delta_ms) of
        the live value of ``key``, read lock-free; None if it is absent or
        expired (or being computed).

        :raises SerializationError: another serializer wrote the value.
        """
        return self._entry_at(key, *self._where(key))

    def _entry_at(self, key: Any, where: Any, raw: bytes | None) -> tuple[bytes, float | None, int, int] | None:
        """:meth:`_entry`, for a caller that has the key's :meth:`_where`."""
        found = self._core.lookup(where)
        if found is None or (found[2] is not None and found[2] <= 0):
            return None
        data, fmt, remaining, _stale, csn, delta_ms = found
        data = self._unseal(key, raw, data, fmt)
        return None if data is None else (data, remaining, csn, delta_ms)

    def _get_long(self, key: Any, default: Any) -> Any:
        """get() of a key the table refused as too long (called while the
        table's ValueTooLarge is being handled: any other key re-raises it)."""
        if longkeys.long_key(key) is None:
            raise  # noqa: PLE0704 - the empty key's ValueTooLarge, unchanged
        entry = self._entry(key)
        self._core.count_stat("misses" if entry is None else "hits")
        return default if entry is None else self._loads(entry[0])

    # -- the dict / Django-like API ----------------------------------------------

    def get(self, key: Any, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` if it is absent or expired."""
        try:
            return self._core.get_value(key, default)
        except ValueTooLarge:
            return self._get_long(key, default)

    def set(self, key: Any, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (None: default_ttl).

        A set that fails leaves no old value behind (memcached's rule): the
        key is then absent, never holding the value the set meant to replace.

        :raises SerializationError: the serializer refused the value.
        :raises ValueTooLarge: the serialized value is too large.
        :raises CacheFull: the cache is full and was opened with evict=False.
        """
        # Validate first: comparing a ttl that is not seconds ("10", [1])
        # with 0 would raise a bare TypeError instead of InvalidArgument.
        effective = self._ttl(ttl)
        try:
            data = self._dumps(value)
        except SerializationError:
            self.delete(key)
            raise
        if effective is not None and effective <= 0:
            self.delete(key)
        else:
            # The table removes the old value itself, under the same stripe
            # lock, when the new one is too large or finds no room.
            self._put(key, data, effective)

    def add(self, key: Any, value: Any, ttl: float | None = None) -> bool:
        """Store only if ``key`` is absent (or expired); True if stored."""
        return self._store(key, value, ttl, _ADD) != 0

    def replace(self, key: Any, value: Any, ttl: float | None = None) -> bool:
        """Store only if ``key`` is present; True if stored."""
        return self._store(key, value, ttl, _REPLACE) != 0

    def delete(self, key: Any) -> bool:
        """Remove ``key``; True if it was there."""
        where, raw = self._where(key)
        if raw is None:
            return self._core.delete(key)
        # Only the item that holds this very key (never another long key
        # with the same digest), and only the version just read.
        entry = self._entry_at(key, where, raw)
        return entry is not None and self._core.compare_and_delete(where, entry[2])

    def touch(self, key: Any, ttl: float | None = None) -> bool:
        """Give ``key`` a new ttl (None: default_ttl); True if it was there."""
        where, raw = self._where(key)
        if raw is not None and self._entry(key) is None:
            return False
        return self._core.touch(where, self._ttl(ttl))

    def ttl(self, key: Any) -> float | None:
        """Seconds ``key`` has left; None if it never expires.

        :raises KeyError: if the key is absent or expired.
        """
        entry = self._entry(key)
        if entry is None:
            raise KeyError(key)
        return entry[1]

    # -- compare-and-set -----------------------------------------------------------

    def gets(self, key: Any, default: Any = None) -> tuple[Any, int | None]:
        """``(value, token)`` of ``key``, or ``(default, None)`` if it is absent.

        The token (the item's commit sequence number) changes with every
        write of the key, in any process: pass it to
        :meth:`compare_and_set` or :meth:`compare_and_delete` to write only
        if nobody wrote since (memcached's ``gets``/``cas``).

        >>> cache = Cache(size="4MiB")
        >>> cache.set("n", 1)
        >>> value, token = cache.gets("n")
        >>> cache.compare_and_set("n", value + 1, token)
        True
        >>> cache.compare_and_set("n", value + 10, token)   # token is stale now
        False
        >>> cache.get("n")
        2
        """
        entry = self._entry(key)
        if entry is None:
            return default, None
        return self._loads(entry[0]), entry[2]

    def compare_and_set(self, key: Any, value: Any, token: int | None, ttl: float | None = None) -> bool:
        """Store ``value`` only if ``key`` still holds the write that
        :meth:`gets` returned ``token`` for; True if stored, False if the key
        changed or went away since (then nothing is stored).  A token of
        None (what :meth:`gets` returns for an absent key) stores only if the
        key is still absent, as :meth:`add`."""
        if token is None:
            return self.add(key, value, ttl)
        return self._store(key, value, ttl, _CAS, token) != 0

    def compare_and_delete(self, key: Any, token: int | None) -> bool:
        """Remove ``key`` only if it still holds the write ``token`` names
        (see :meth:`gets`); True if removed (never for a token of None)."""
        return token is not None and self._core.compare_and_delete(self._where(key)[0], token)

    def incr(self, key: Any, delta: int | float = 1, *, default: int | float | None = None) -> int | float:
        """Add ``delta`` to the number (int or float) stored under ``key``,
        atomically across processes, and return the new value (its ttl is
        kept).

        :param default: if the key is absent, start from this number (the
            key then gets the cache's default_ttl); None: raise KeyError.
        :raises KeyError: if the key is absent and no default was given.
        :raises TypeError: if the stored value is not a number.
        :raises SerializationError: if another serializer wrote the value.
        """
        while True:
            entry = self._entry(key)
            if entry is None:
                if default is None:
                    raise KeyError(key)
                if self.add(key, default + delta):
                    return default + delta
                continue  # another process created it first: add to theirs
            data, remaining, csn, _delta = entry
            value = self._loads(data)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"incr/decr need a number, {key!r} holds {type(value).__name__}")
            new = value + delta
            ttl = FOREVER if remaining is None else max(remaining, 1e-9)
            if self._store(key, new, ttl, _CAS, csn):
                return new

    def decr(self, key: Any, delta: int | float = 1, *, default: int | float | None = None) -> int | float:
        """Subtract ``delta`` (see :meth:`incr`)."""
        return self.incr(key, -delta, default=default)

    def get_many(self, keys: Iterable[Any]) -> dict[Any, Any]:
        """The values of those ``keys`` that are present, as a dict."""
        found = {}
        get = self.get
        for key in keys:
            value = get(key, _MISSING)
            if value is not _MISSING:
                found[key] = value
        return found

    def set_many(self, mapping: Mapping[Any, Any], ttl: float | None = None) -> None:
        """Store every item of ``mapping``, each serialized before any is
        stored: if one value is refused, nothing is stored and that key is
        removed (as :meth:`set` does).  A ttl of 0 or less removes them all."""
        effective = self._ttl(ttl)
        encoded = []
        for key, value in mapping.items():
            try:
                encoded.append((key, self._dumps(value)))
            except SerializationError:
                self.delete(key)
                raise
        for key, data in encoded:
            if effective is not None and effective <= 0:
                self.delete(key)
            else:
                self._put(key, data, effective)

    def delete_many(self, keys: Iterable[Any]) -> int:
        """Remove ``keys``; return how many were there."""
        return sum(1 for key in keys if self.delete(key))

    def clear(self) -> None:
        """Remove every key, for every process."""
        self._core.clear()

    def keys(self) -> list[Any]:  # type: ignore[override]
        """The unexpired keys: str where they are valid UTF-8, else bytes."""
        result: list[Any] = []
        for raw in self._core.keys():
            if raw.startswith(longkeys.PREFIX):
                raw = self._full_key(raw)
                if raw is None:
                    continue
            try:
                result.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                result.append(raw)
        return result

    def _full_key(self, stored: bytes) -> bytes | None:
        """The long key stored under the table key ``stored``, if it is live."""
        found = self._core.lookup(stored)
        if found is None or found[1] < longkeys.LONG_FORMAT or (found[2] is not None and found[2] <= 0):
            return None
        return longkeys.stored_key(found[0])

    def __getitem__(self, key: Any) -> Any:
        try:
            value = self._core.get_value(key, _MISSING)
        except ValueTooLarge:
            value = self._get_long(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: Any) -> None:
        if not self.delete(key):
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        try:
            return self._core.get(key, self._tag) is not None
        except ValueTooLarge:
            return self._get_long(key, _MISSING) is not _MISSING

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
        payload_bytes) and ``per_process``: the counters of each process."""
        stats = self._core.stats()
        stats["per_process"] = self._core.stats_by_process()
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
