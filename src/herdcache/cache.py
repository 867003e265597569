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

A named cache pickles by name (for spawn and forkserver children and
``ProcessPoolExecutor`` initializers): the receiving process attaches it.

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

import datetime
import decimal
import math
import uuid
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Awaitable, Callable, TypeVar, Union, cast, overload

from . import _core, compute, longkeys
from .compute import ComputeKwargs, ComputeOptions
from .errors import HerdcacheError, InvalidArgument, SerializationError, ValueTooLarge
from .memoize import Memoized, P, R, memoize
from .prefork import warn_if_worker_private
from .segment import Segment
from .serializers import TAG_RAW, get_serializer
from .sizes import parse_size
from .snapshot import Snapshot, present_values

if TYPE_CHECKING:
    from typing_extensions import Unpack

#: A ttl meaning "never expires", whatever the cache's default_ttl.
FOREVER = math.inf

#: The name of the cache's structure in its segment.
STRUCT_NAME = "cache"

#: Bytes of a named segment kept outside the cache for other structures
#: (counters, locks, queues) its users may add.
RESERVED_BYTES = 1 << 20

_MISSING = object()

#: A key: a str (stored as UTF-8) or bytes of 1 byte or more.
Key = Union[str, bytes]

T = TypeVar("T")
D = TypeVar("D")

#: local_values= choices: the types the decoded layer may keep (None: any).
_LOCAL_VALUES = {
    "any": None,
    "immutable": (bool, int, float, complex, str, bytes, datetime.datetime, datetime.date,
                  datetime.time, datetime.timedelta, decimal.Decimal, uuid.UUID),
}


# The eviction= names and the core's codes for them.
_EVICTIONS = {
    None: _core.EVICTION_STORED,
    "sieve": _core.EVICTION_SIEVE,
    "s3fifo": _core.EVICTION_S3FIFO,
}


def _cache_bytes(segment: Segment) -> int:
    """The size of the cache structure in a segment: a pure function of the
    segment's size, so every process that opens it asks for the same."""
    info = segment.info()
    size: int = info["size"] - info["data_offset"] - min(RESERVED_BYTES, info["size"] // 8)
    return size


class Cache(_core.Cache, MutableMapping[Key, Any]):
    """A key/value cache in shared memory, shared by every process that opens it.

    :param name: the segment's name (attach or create); None for an
        anonymous segment shared with fork() children only.
    :param size: bytes of the segment when it is created (int or "256MiB").
    :param default_ttl: seconds a value lives when set without a ttl; None:
        forever.
    :param serializer: "msgpack" (default), "pickle" (trusted writers only),
        "raw" (bytes), or an object with dumps/loads.
    :param evict: when full, evict (True) or raise CacheFull.
    :param eviction: the eviction policy of a new cache: "sieve" (the
        default) or "s3fifo" (scan-resistant; 8 bytes of ghost per 128
        bytes of memory).  None: the policy an existing cache was created
        with, or "sieve" for a new one; a name that differs from an
        existing cache's raises StructMismatch.  See README, "Eviction".
    :param huge_pages: "off" (default), "try" or "on": back a segment this
        call creates with huge pages (README, "Huge pages");
        ``cache.segment.info()["huge_pages"]`` says what it got.
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
    :param max_snapshot_age: seconds a :meth:`snapshot` may stay readable
        (default 60; None: no limit but memory).  An older one raises
        :class:`~herdcache.errors.SnapshotTooOld` on its next read, and
        writers stop keeping old versions for it.
    """

    def __init__(
        self,
        name: str | None = None,
        size: int | str = "64MiB",
        *,
        default_ttl: float | None = None,
        serializer: Any = "msgpack",
        evict: bool = True,
        eviction: str | None = None,
        huge_pages: str = "off",
        max_value_size: int | str = "1MiB",
        dir: str | None = None,
        mode: int = 0o600,
        allow_shared: bool = False,
        segment: Segment | None = None,
        local_items: int = 0,
        local_bytes: int | str = "16MiB",
        local_values: str = "any",
        max_snapshot_age: float | None = 60.0,
    ):
        """Open (or create) the cache; see the class docstring."""
        if default_ttl is not None and not default_ttl > 0:
            raise InvalidArgument(f"default_ttl must be > 0 seconds or None (never), got {default_ttl!r}")
        if eviction not in _EVICTIONS:
            raise InvalidArgument(f"eviction must be 'sieve', 's3fifo' or None (the cache's own), got {eviction!r}")
        self._serializer = get_serializer(serializer)
        self._tag = self._serializer.tag
        self._dumps = self._serializer.dumps
        self._loads = self._serializer.loads
        self.default_ttl = default_ttl
        if max_snapshot_age is not None and (
            isinstance(max_snapshot_age, bool) or not isinstance(max_snapshot_age, (int, float)) or not max_snapshot_age > 0
        ):
            raise InvalidArgument(f"max_snapshot_age must be > 0 seconds or None (no limit), got {max_snapshot_age!r}")
        self._max_snapshot_age_ns = 0 if max_snapshot_age is None else max(1, int(max_snapshot_age * 1e9))
        self._owns_segment = segment is None
        if segment is None:
            if name is None:
                warn_if_worker_private()
                segment = Segment.anonymous(size, huge_pages=huge_pages)
            else:
                segment = Segment.open(
                    name, size, dir=dir, mode=mode, allow_shared=allow_shared, huge_pages=huge_pages
                )
        self.segment = segment
        self.name = name if name is not None else segment.name
        # What another process needs to open this same cache (pickling).
        self._reopen = {"serializer": serializer, "default_ttl": default_ttl, "evict": evict,
                        "eviction": eviction, "huge_pages": huge_pages,
                        "max_value_size": max_value_size, "allow_shared": allow_shared,
                        "local_items": local_items, "local_bytes": local_bytes, "local_values": local_values,
                        "max_snapshot_age": max_snapshot_age}
        nbytes = _cache_bytes(segment)
        try:
            offset, _found = segment.alloc(STRUCT_NAME, nbytes, _core.KIND_CACHE)
            super().__init__(segment, offset, nbytes, parse_size(max_value_size), evict, _EVICTIONS[eviction])
            self._set_decoder(self._tag, *self._decoder(), self._serializer.name)
            self._open_local_layer(local_items, local_bytes, local_values)
        except BaseException:
            if self._owns_segment:
                segment.close()
            raise

    # -- helpers -------------------------------------------------------------

    def _decoder(self) -> tuple[Any, dict[str, Any] | None]:
        """What the core calls on the bytes of a hit (get() without frames)."""
        if hasattr(self._serializer, "decoder"):
            decoder: tuple[Any, dict[str, Any] | None] = self._serializer.decoder()
            return decoder
        if self._serializer.tag == TAG_RAW:
            return None, None
        return self._loads, None

    def _open_local_layer(self, items: int, nbytes: int | str, values: str) -> None:
        """Configure the per-process decoded layer (see the class docstring)."""
        if isinstance(items, bool) or not isinstance(items, int) or items < 0:
            raise InvalidArgument(f"local_items must be an int >= 0 (0: off), got {items!r}")
        if values not in _LOCAL_VALUES:
            raise InvalidArgument(f"local_values must be one of {sorted(_LOCAL_VALUES)}, got {values!r}")
        self._set_local(items, parse_size(nbytes), _LOCAL_VALUES[values])
        if items:
            # Every read of a decoded value (get, [], get_many) goes
            # through the layer: one attribute, looked up per call.
            self._get_value = self._get_local  # type: ignore[method-assign]

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

    def _encode_and_store(
        self, key: Any, value: Any, ttl: float | None, mode: int = _core.SET_ALWAYS, expect: int = 0
    ) -> int:
        data = self._dumps(value)  # refuses bad values before any shared write
        return self._put(key, data, self._ttl(ttl), mode, expect)

    def _put(self, key: Any, data: bytes, ttl: float | None, mode: int = _core.SET_ALWAYS, expect: int = 0) -> int:
        """Store serialized bytes for an effective ttl; the item's csn, 0 if
        the mode refused.  A long key stores its envelope under its digest."""
        raw = longkeys.long_key(key)
        if raw is None:  # the common case, without a call more
            return self._store(key, data, self._tag, ttl, mode, expect)
        return self._store(longkeys.table_key(raw), *self._seal(raw, data), ttl, mode, expect)

    def _seal(self, raw: bytes | None, data: bytes) -> tuple[bytes, int]:
        """(bytes, format) the table stores for serialized ``data`` under a
        long key ``raw``, or under a short key (``raw`` None)."""
        if raw is None:
            return data, self._tag
        return longkeys.wrap(raw, data), self._tag + longkeys.LONG_FORMAT

    def _unseal(self, raw: bytes | None, data: bytes, fmt: int) -> tuple[bytes, int] | None:
        """(value bytes, format) of an item :meth:`_seal` stored under a long
        key ``raw`` (or a short one, ``raw`` None); None if the item holds
        another long key's value (same digest)."""
        if raw is None:
            return data, fmt
        if fmt < longkeys.LONG_FORMAT:
            return None
        unwrapped = longkeys.unwrap(raw, data)
        return None if unwrapped is None else (unwrapped, fmt - longkeys.LONG_FORMAT)

    def _entry(self, key: Any) -> tuple[Any, float | None, int, int] | None:
        """(decoded value, seconds left or None for never, csn, delta_ms) of
        the live value of ``key``, read lock-free; None if it is absent or
        expired (or being computed).

        :raises SerializationError: another serializer wrote the value.
        """
        stored = self._stored(*self._where(key))
        if stored is None:
            return None
        data, fmt, remaining, csn, delta_ms = stored
        # As get() does: another serializer's bytes are not ours to decode
        # (raw b"\x05" would read as msgpack's 5).
        return self._decode(key, data, fmt), remaining, csn, delta_ms

    def _stored(self, where: Any, raw: bytes | None) -> tuple[bytes, int, float | None, int, int] | None:
        """(value bytes, format, seconds left or None, csn, delta_ms) of the
        live item under the table key ``where`` (see :meth:`_where`), read
        lock-free; None if it is absent, expired, in flight, or another long
        key's."""
        found = self._lookup(where)
        if found is None or (found[2] is not None and found[2] <= 0):
            return None
        data, fmt, remaining, _stale, csn, delta_ms = found
        sealed = self._unseal(raw, data, fmt)
        return None if sealed is None else (*sealed, remaining, csn, delta_ms)

    def _get_long(self, key: Any, default: Any) -> Any:
        """get() of a key too long for the table (``_get_decoded`` calls it
        for such keys; called while the table's ValueTooLarge is being
        handled, any other key re-raises it)."""
        if longkeys.long_key(key) is None:
            raise  # noqa: PLE0704 - the empty key's ValueTooLarge, unchanged
        entry = self._entry(key)
        self._count_stat("misses" if entry is None else "hits")
        return default if entry is None else entry[0]

    # -- the dict / Django-like API ----------------------------------------------

    if TYPE_CHECKING:

        @overload
        def get(self, key: Key) -> Any | None: ...

        @overload
        def get(self, key: Key, default: D) -> Any | D: ...

        def get(self, key: Key, default: Any = None) -> Any:
            """The value of ``key``, or ``default`` if it is absent or expired."""

    else:
        # The whole of get() in C, one call from Python (a hit of the
        # decoded layer costs little more than the call): the layer if it
        # is on, else _get_value(); over-long keys go to _get_long().
        get = _core.Cache._get_decoded

    def set(self, key: Key, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (None: default_ttl).

        A set that fails leaves no older value behind: the key is removed.

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

    def add(self, key: Key, value: Any, ttl: float | None = None) -> bool:
        """Store only if ``key`` is absent (or expired); True if stored."""
        return self._encode_and_store(key, value, ttl, _core.SET_ADD) != 0

    def replace(self, key: Key, value: Any, ttl: float | None = None) -> bool:
        """Store only if ``key`` is present; True if stored."""
        return self._encode_and_store(key, value, ttl, _core.SET_REPLACE) != 0

    def delete(self, key: Key) -> bool:
        """Remove ``key``; True if it was there."""
        where, raw = self._where(key)
        if raw is None:
            return super().delete(key)
        # Only the item that holds this very key (never another long key
        # with the same digest), and only the version just read.
        stored = self._stored(where, raw)
        return stored is not None and self._compare_and_delete(where, stored[3])

    def touch(self, key: Key, ttl: float | None = None) -> bool:
        """Give ``key`` a new ttl (None: default_ttl); True if it was there."""
        where, raw = self._where(key)
        if raw is not None and self._entry(key) is None:
            return False
        return self._touch(where, self._ttl(ttl))

    def ttl(self, key: Key) -> float | None:
        """Seconds ``key`` has left; None if it never expires.

        :raises KeyError: if the key is absent or expired.
        """
        entry = self._entry(key)
        if entry is None:
            raise KeyError(key)
        return entry[1]

    # -- compare-and-set -----------------------------------------------------------

    def gets(self, key: Key, default: Any = None) -> tuple[Any, int | None]:
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
        return entry[0], entry[2]

    def compare_and_set(self, key: Key, value: Any, token: int | None, ttl: float | None = None) -> bool:
        """Store ``value`` only if ``key`` still holds the write that
        :meth:`gets` returned ``token`` for; True if stored, False if the key
        changed or went away since (then nothing is stored).  A token of
        None (what :meth:`gets` returns for an absent key) stores only if the
        key is still absent, as :meth:`add`."""
        if token is None:
            return self.add(key, value, ttl)
        return self._encode_and_store(key, value, ttl, _core.SET_CAS, token) != 0

    def compare_and_delete(self, key: Key, token: int | None) -> bool:
        """Remove ``key`` only if it still holds the write ``token`` names
        (see :meth:`gets`); True if removed (never for a token of None)."""
        return token is not None and self._compare_and_delete(self._where(key)[0], token)

    def incr(self, key: Key, delta: int | float = 1, *, default: int | float | None = None) -> int | float:
        """Add ``delta`` to the number (int or float) stored under ``key``,
        atomically across processes, and return the new value (its absolute
        expiry and stale window are kept: increments never extend a key's
        life).

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
            value, _remaining, csn, _delta = entry
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"incr/decr need a number, {key!r} holds {type(value).__name__}")
            new = value + delta
            # A swap keeps the item's absolute expiry and stale window (the
            # core ignores the ttl given here).
            if self._encode_and_store(key, new, FOREVER, _core.SET_SWAP, csn):
                return new

    def decr(self, key: Key, delta: int | float = 1, *, default: int | float | None = None) -> int | float:
        """Subtract ``delta`` (see :meth:`incr`)."""
        return self.incr(key, -delta, default=default)

    def get_many(self, keys: Iterable[Key], consistent: bool = False) -> dict[Key, Any]:
        """The values of those ``keys`` that are present, as a dict.

        With ``consistent=True`` they are read in one :meth:`snapshot`: all
        as of the same moment (an atomic ``set_many`` is wholly in or out).
        """
        if consistent:
            with self.snapshot() as snap:
                return snap.get_many(keys)
        return present_values(self.get, keys)

    def set_many(self, mapping: Mapping[Key, Any], ttl: float | None = None, atomic: bool = False) -> None:
        """Store every item of ``mapping``, each serialized before any is
        stored: if one value is refused, nothing is stored and that key is
        removed (as :meth:`set` does).  A ttl of 0 or less removes them all.

        With ``atomic=True`` the items are one commit: every reader (a
        plain get, a :meth:`snapshot`) sees all of them or none, even if
        this process dies half-way.  If any value is refused (serializer,
        size, a full cache), nothing changes at all.
        """
        effective = self._ttl(ttl)
        if atomic:
            self._set_many_atomic(mapping, effective)
            return
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

    def _set_many_atomic(self, mapping: Mapping[Key, Any], effective: float | None) -> None:
        """set_many(atomic=True): serialize all, then one batch."""
        if effective is not None and effective <= 0:
            self.delete_many(mapping, atomic=True)
            return
        ops = []
        for key, value in mapping.items():
            where, raw = self._where(key)
            ops.append((where, *self._seal(raw, self._dumps(value)), effective))
        self._batch(ops)

    def delete_many(self, keys: Iterable[Key], atomic: bool = False) -> int:
        """Remove ``keys``; return how many were there.  With
        ``atomic=True`` the deletes are one commit (see :meth:`set_many`)."""
        if atomic:
            return int(self._batch([(self._where(key)[0], None) for key in dict.fromkeys(keys)])[1])
        return sum(1 for key in keys if self.delete(key))

    @property
    def csn(self) -> int:
        """The current commit sequence number: it grows with every write,
        so an unchanged csn means nothing changed (one load, no lock)."""
        return int(self._csn())

    def snapshot(self) -> Snapshot:
        """A consistent view of the whole cache as of now, for a ``with``
        block: see :class:`~herdcache.snapshot.Snapshot`."""
        return Snapshot(self)

    def keys(self) -> list[Key]:  # type: ignore[override]
        """The unexpired keys: str where they are valid UTF-8, else bytes."""
        result: list[Key] = []
        for raw in self._keys():
            if raw.startswith(longkeys.PREFIX):
                full = self._full_key(raw)
                if full is None:
                    continue
                raw = full
            try:
                result.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                result.append(raw)
        return result

    def _full_key(self, stored: bytes) -> bytes | None:
        """The long key stored under the table key ``stored``, if it is live."""
        found = self._stored(stored, None)
        if found is None or found[1] < longkeys.LONG_FORMAT:
            return None
        return longkeys.stored_key(found[0])

    def __getitem__(self, key: Key) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __setitem__(self, key: Key, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: Key) -> None:
        if not self.delete(key):
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        try:
            return self._get(key, self._tag) is not None
        except ValueTooLarge:
            return self._get_long(key, _MISSING) is not _MISSING

    def __iter__(self) -> Iterator[Key]:
        return iter(self.keys())

    def __len__(self) -> int:
        return self._count()

    # -- no stampede ---------------------------------------------------------------

    def get_or_compute(
        self,
        key: Key,
        fn: Callable[[], T],
        ttl: float | None = None,
        *,
        options: ComputeOptions | None = None,
        **kwargs: Unpack[ComputeKwargs],
    ) -> T:
        """The value of ``key``; if it is missing or expired, ``fn()`` computes
        it, in exactly one process at a time, while every other caller (in any
        process, or thread) waits and receives the same value.

        :param ttl: seconds the computed value lives (None: default_ttl).
        :param kwargs: ``stale_ttl``, ``early_refresh``, ``lease``,
            ``wait_timeout``, ``negative_ttl``: see :class:`ComputeOptions`
            (or pass one as ``options``).
        :raises ReentrantCompute: ``fn`` asked for ``key`` itself.
        :raises ComputeTimeout: waited longer than ``wait_timeout``.
        """
        if options is None:
            options = ComputeOptions(ttl, **kwargs)
        # The stored value is what fn returned (in whichever process ran it).
        return cast(T, compute.get_or_compute(self, key, fn, options))

    async def aget_or_compute(
        self,
        key: Key,
        fn: Callable[[], Awaitable[T]],
        ttl: float | None = None,
        *,
        options: ComputeOptions | None = None,
        **kwargs: Unpack[ComputeKwargs],
    ) -> T:
        """:meth:`get_or_compute` for asyncio: ``fn`` is a coroutine function,
        and waiting happens in a worker thread, never blocking the loop."""
        if options is None:
            options = ComputeOptions(ttl, **kwargs)
        return cast(T, await compute.aget_or_compute(self, key, fn, options))

    def memoize(
        self,
        ttl: float | None = None,
        *,
        key: Callable[..., str] | None = None,
        **kwargs: Unpack[ComputeKwargs],
    ) -> Callable[[Callable[P, R]], Memoized[P, R]]:
        """Decorate a function (or coroutine function) so that its results are
        shared by every process through this cache, each computed once (see
        :mod:`herdcache.memoize` for how keys are built)."""
        return memoize(self, ComputeOptions(ttl, **kwargs), key)

    # -- introspection -----------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters summed over every process (hits, misses, sets, deletes,
        evictions, expirations, ...), usage (entries, bytes_used, bytes_free,
        payload_bytes), ``generation``: how many times a damaged header made
        an opener reset the cache, ``snapshot_retained_bytes`` (old
        versions kept for open snapshots), ``flight_wakes`` and ``flight_woken``
        (wake-up calls at the ends of computations, and the waiters they
        woke: a computation's end wakes only its key's waiters, and those
        sharing its hashed wake word), ``per_process``: the counters of each
        process, and
        ``local``: this process's decoded layer (items, bytes, max_items,
        max_bytes, and its own hits and misses; its hits are not in
        ``hits``, which counts reads of the shared table)."""
        stats = self._stats()
        stats["snapshot_retained_bytes"] = self._retained_bytes()
        stats["per_process"] = self._stats_by_process()
        stats["local"] = self._local_stats()
        return stats

    def close(self) -> None:
        """Close this process's view of the cache, and the segment if the
        cache opened it (not one passed as ``segment=``, which its owner
        closes).  Calling it again does nothing.  Once closed, every
        operation raises :class:`~herdcache.errors.SegmentClosed` (a
        ValueError, as a closed file does); open a new ``Cache(name)`` to
        use the cache again.  The cache itself and its entries stay, for
        every other process."""
        if self._owns_segment and not self.segment.closed:
            self.segment.close()

    @property
    def closed(self) -> bool:
        """True once the cache's segment is closed in this process."""
        return self.segment.closed

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle a named cache by name: the other process (spawn,
        forkserver, a ProcessPoolExecutor initializer) attaches it."""
        if self.segment.name is None:
            raise TypeError(
                "an anonymous herdcache.Cache is shared with fork() children only: "
                "give it a name (Cache('myapp', ...)) to pass it to spawn or forkserver children"
            )
        return (_attach, (self.segment.name, self.segment.dir, self._reopen))

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.name or "(anonymous)"
        try:
            return f"<herdcache.Cache {where!r} entries={self._stats()['entries']}>"
        except HerdcacheError:
            return f"<herdcache.Cache {where!r} closed>"


def _attach(name: str, dir: str | None, options: dict[str, Any]) -> Cache:
    """Unpickle: attach the named cache another process passed us."""
    segment = Segment.attach(name, dir=dir, allow_shared=options["allow_shared"])
    try:
        cache = Cache(name, segment=segment, **options)
    except BaseException:
        segment.close()
        raise
    cache._owns_segment = True
    return cache
