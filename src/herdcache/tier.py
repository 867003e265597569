"""Many hosts: a Redis (or Valkey) tier behind every host's shared cache.

::

    remote = redis.Redis.from_url("redis://cache.internal:6379/0")
    cache = herdcache.TieredCache("myapp", size="256MiB", remote=remote, local_ttl=30)
    cache.get(k); cache.set(k, v, ttl=60); cache.get_or_compute(k, build, ttl=60)

Each host keeps ONE copy of what its processes read (the L1: a
:class:`~herdcache.Cache` in shared memory) in front of Redis, which holds
the truth.  An L1 hit touches no network.  An L1 miss goes through the L1's
single flight, so a host asks Redis once however many of its processes
miss together; the value enters the L1 for Redis's remaining ttl, at most
``local_ttl``.  Writes go to Redis first, then to the L1.

The L1s stay coherent through ONE tracking connection per host
(``_tracking.py``): Redis pushes the name of every changed key under the
cache's prefix and the host drops it from its L1.  get_or_compute computes
once in the whole fleet: within a host the L1's flight, across hosts a
lock in Redis with a fencing token (``_remote.py``); hosts waiting for
another host's computation sleep until the tracking connection reports the
value (or the lock) changed.

Consistency (see README, "Many hosts"): a value written through any host
is served by another host's L1 at most until that host's tracker has read
the invalidation (a few ms on a LAN), or, if its tracking connection broke
or stalled, until the tracker noticed (``HEARTBEAT`` + timeout), when the
L1 is suspended (no copy served as fresh until the PING's late reply) and
then, if no reply comes within the grace, flushed whole; and never past
``local_ttl``.  Values read from Redis stay in an L1 for at most
UNTRACKED_TTL (0.1 s) while its host's tracking is not live.

Why a class of its own rather than ``Cache(remote=...)``: its operations
fail differently (every write can raise
:class:`~herdcache.errors.RemoteUnavailable`, ``len()`` and iteration see
only this host's L1), and a distinct type makes that visible where it is
constructed and in type checks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping
from functools import partial
from typing import Any, TypeVar

import redis

from . import _core, compute
from ._remote import (
    HEADER_SIZE,
    HELD,
    KIND_ERROR,
    KIND_NEGATIVE,
    KIND_VALUE,
    LOCKED,
    Record,
    Remote,
    encode,
    key_bytes,
    milliseconds,
)
from ._steps import Steps, arun, run
from ._tracking import Tracker, Wakeups, confirm_own_write, mark_own_write, unmark_own_write
from .cache import FOREVER, Cache
from .compute import ComputeOptions, _decode_error, _encode_error, _Flight
from .errors import (
    ComputeTimeout,
    InvalidArgument,
    NotSupported,
    RemoteUnavailable,
    SerializationError,
)
from .snapshot import Snapshot

_T = TypeVar("_T")

_MISSING = object()

#: Longest sleep of a host waiting for another host's computation between
#: two reads of Redis when no wake-up came (no tracker, or a lost message).
_WAIT_SLICE = 1.0

#: Longest wait, after a host read another host's new value without word
#: from its tracker, for the tracker to hear of that change.
_CATCH_UP = 0.05

#: Longest stay in the L1 of a value read from Redis while the host has no
#: live tracking connection (starting, reconnecting): long enough for the
#: host's waiting processes to take it, short enough to bound staleness.
UNTRACKED_TTL = 0.1

#: Seconds a failure record (shared with the waiters of its round) lives.
_ERROR_RECORD_TTL = 5.0


class _Absent(Exception):
    """Redis holds no fresh value for the key (shared with the L1 flight's
    waiters of a plain get(), which then return their default)."""


def _check_tag(record: Record, key: Any, tag: int) -> None:
    """Refuse a value another serializer wrote, as the L1 does."""
    if record.tag != tag:
        raise SerializationError(
            f"the Redis value of {key!r} was stored with format {record.tag}, this cache reads "
            f"format {tag}: open the TieredCache with the serializer that wrote it"
        )


def _read_only() -> Any:  # pragma: no cover - a marker, never called
    raise AssertionError("the read-only marker is never called")


def _no_compare_and_set() -> NotSupported:
    return NotSupported(
        "TieredCache has no gets/compare_and_set/compare_and_delete: the token of an L1 copy "
        "says nothing of the value in Redis. Use get_or_compute (one computation fleet-wide) "
        "or incr (atomic in Redis), or a plain Cache on one host"
    )


def _no_snapshots() -> NotSupported:
    return NotSupported(
        "TieredCache has no snapshots, consistent=True or atomic=True: they follow one host's "
        "commit order, not the fleet's in Redis. Use a plain Cache on one host for them"
    )


class _TierFlight(_Flight):
    """The L1 flight of one key, whose owner gets the value through Redis:
    read it, or take the fleet-wide lock and compute it, or wait for the
    host that computes it."""

    def __init__(self, cache: TieredCache, key: Any, options: ComputeOptions):
        super().__init__(cache, key, options)
        self.tier = cache
        self.remote = cache._remote
        self.l1_data: bytes | None = None  # what to publish in the L1, if anything
        self.l1_ttl: float | None = None
        self.l1_stale = 0.0

    # -- getting the value --------------------------------------------------------

    # call and acall are the same walk; each step of it is written once (the
    # *_steps generators), and these two only carry it out (_steps.py).

    def call(self, fn: Callable[[], Any]) -> Any:
        step, got = self.tier._run(self._obtain(fn))
        if step != "compute":
            return got
        started = time.monotonic()
        try:
            value = fn()
        except BaseException as exc:
            self.tier._run(self._share_failure(exc, got))
            raise
        return self.tier._run(self._finish(value, got, started))

    async def acall(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        step, got = await self.tier._arun(self._obtain(fn))
        if step != "compute":
            return got
        started = time.monotonic()
        try:
            value = await fn()
        except BaseException as exc:
            await self.tier._arun(self._share_failure(exc, got))
            raise
        return await self.tier._arun(self._finish(value, got, started))

    def _obtain(self, fn: Any) -> Steps[tuple[str, Any]]:
        """("value", v) from Redis, ("compute", token) when this caller holds
        the fleet-wide lock, ("compute", 0) to compute locally (Redis down)."""
        live = self.tier._live.load()
        try:
            if fn is _read_only:
                return "value", (yield from self._read(live))
            return (yield from self._through_fleet(live))
        except RemoteUnavailable:
            if self._fallback is not None:
                return "value", self._serve_fallback()
            if fn is _read_only:
                raise
            return "compute", 0

    #: (bytes, seconds to the end of its stale window or None) of the L1
    #: copy this caller may serve if Redis fails (see TieredCache stale_if_error).
    _fallback: tuple[bytes, float | None] | None = None

    def _lookup(self) -> tuple[bytes, float | None, int] | None:
        """As the L1's, but while the host's tracking is suspended (see
        _tracking, "Suspension") no copy is fresh, save one stored since
        the round this caller waited for: what that round read from Redis
        during the suspension (or a write made after it)."""
        if not self.tier._is_suspended():
            return super()._lookup()
        found = self.cache._stored(self.where, self.raw)
        if found is None or found[1] != self.cache._tag or not 0 < self.waited_round < found[3]:
            return None
        return found[0], found[2], found[4]

    def begin(self) -> Any:
        # While suspended, a fresh copy is no hit: a round starts over it,
        # as an early refresh does (serving it only as a stale_ttl value).
        refresh = self.refreshing or bool(self.tier._is_suspended())
        return self.cache._flight_begin(self.where, self.options.lease, self.waited_round, refresh)

    def fresh_value(self) -> tuple[bool, Any]:
        found, value = super().fresh_value()
        if not found:  # before begin(), which would replace the copy by the flight
            self._fallback = self.tier._fallback_copy(self.where, self.options.stale_ttl)
            if self._fallback is not None and self.remote.is_down():
                # Redis failed a moment ago: serve the copy and leave it in
                # place (no flight, which would take it out and put it back).
                self.tier._stale_if_error.add(1)
                self.cache._count_stat("stale_served")
                return True, self.cache._loads(self._fallback[0])
        return found, value

    def next_step(self, begun: Any) -> tuple[str, Any, Any]:
        if begun[0] == "stale" and not self.options.stale_ttl:
            # A stale window this caller did not ask for (stale_if_error's,
            # or a suspension's): wait for the host's fetch, that round,
            # instead of serving the old copy.
            return "wait", begun[3], begun[4]
        return super().next_step(begun)

    def _serve_fallback(self) -> Any:
        """Serve the L1 copy Redis could not confirm, and put it back in the
        L1 (the flight replaced it), expired, its stale window ending no
        later than before: a stale window is whole seconds, so it ends up
        to one second early, never late (this happens at most once per
        pause of the host's breaker; meanwhile fresh_value serves the copy
        in place)."""
        data, end = self._fallback  # type: ignore[misc]
        self.tier._stale_if_error.add(1)
        self.cache._count_stat("stale_served")
        self.l1_header, self._fence_seen = None, None
        if end is None:  # a copy that never expires, being refreshed early
            self.l1_data, self.l1_ttl, self.l1_stale = data, None, 0.0
        elif end >= 1.0:  # 1 ns: expired when anyone reads it
            self.l1_data, self.l1_ttl, self.l1_stale = data, 1e-9, float(math.floor(end))
        return self.cache._loads(data)

    def _read(self, live: int) -> Steps[Any]:
        self._fence_seen = self.tier._wakeups.snapshot(key_bytes(self.key))
        record = yield self.remote.fetch_op(self.key)
        if record is None or record.kind != KIND_VALUE or not self._fresh(record):
            raise _Absent()
        _check_tag(record, self.key, self.cache._tag)
        return self._take(record, live)

    def _through_fleet(self, live: int) -> Steps[tuple[str, Any]]:
        """Read the value, or lock and compute, or wait for the host that
        computes.  ``seen`` is the header of the record this caller judged
        unfit (stale, or an older round's failure): Redis sends a record
        again only once it changed, so one sent after a wait is new."""
        seen = b""
        kb = key_bytes(self.key)
        waited = heard = False
        while True:
            wake_seen = self._fence_seen = self.tier._wakeups.snapshot(kb)
            state, got, pttl = yield self.remote.read_or_lock_op(self.key, self.options.lease, seen)
            if state == LOCKED:
                return "compute", got
            if state == HELD:
                if self._servable is not None:  # another host refreshes it meanwhile
                    return "value", self._take(self._servable, live)
                heard = yield partial(self._wait_for_fleet, kb, wake_seen, pttl)
                waited = True
                continue
            if waited and not heard and live:
                # Woken by the clock, not by the tracker: the change that
                # brought this value may still be on its way to the
                # tracker, which would delete the copy published before it
                # arrives (and the host's waiters would each read Redis).
                yield partial(self.tier._wakeups.wait, kb, wake_seen, _CATCH_UP)
            outcome = self._judge(got, live, waited)
            if outcome is not _MISSING:
                return "value", outcome
            seen = got.header

    #: A record this caller may serve while another host recomputes it: a
    #: stale one (with stale_ttl), or a fresh one picked for early refresh.
    _servable: Record | None = None

    def _judge(self, record: Record, live: int, waited: bool) -> Any:
        """The value to return from a record Redis sent, or _MISSING when
        this caller should try to compute (stale, or an older round's failure)."""
        if record.kind == KIND_NEGATIVE or (record.kind == KIND_ERROR and waited):
            raise _decode_error(record.payload, self.key)
        if record.kind != KIND_VALUE:
            return _MISSING
        _check_tag(record, self.key, self.cache._tag)
        if not self._fresh(record):
            self._servable = record if self.options.stale_ttl and record.pttl_ms > 0 else None
            return _MISSING
        if self.refreshing and self._xfetch_remote(record):
            self.refreshing = False
            self._servable = record
            return _MISSING
        return self._take(record, live)

    def _fresh(self, record: Record) -> bool:
        remaining = record.fresh_seconds
        return remaining is None or remaining > 0

    def _xfetch_remote(self, record: Record) -> bool:
        remaining = record.fresh_seconds
        return remaining is not None and self._xfetch(remaining, record.delta_ms)


    def _take(self, record: Record, live: int) -> Any:
        """Decode a record read from Redis and plan its L1 copy (for at most
        UNTRACKED_TTL while this host's tracking is not live: a change
        could go unheard)."""
        value = self.cache._loads(record.payload)
        remaining = record.fresh_seconds
        if remaining is None or remaining <= 0:  # forever, or a stale value served meanwhile
            remaining = record.pttl_ms / 1000.0 if record.pttl_ms > 0 else None
        self.l1_data = record.payload
        self.l1_header = record.header
        self.l1_ttl = self.tier._local(remaining, live)
        self.l1_stale = self.tier._window(min(record.stale_ms / 1000.0, self.options.stale_ttl) if live else 0.0)
        self._delta_ms = record.delta_ms
        return value

    def _wait_for_fleet(self, kb: bytes, wake_seen: int, lock_pttl: int) -> bool:
        """Sleep until the tracker reports a change of the key or its lock,
        the lock's lease ends, or one slice passes (a lost wake-up costs
        one slice, never a hang); whether the tracker reported one."""
        if not self.waited:
            self.waited = True
            self.cache._count_stat("waits")
        timeout = _WAIT_SLICE if lock_pttl < 0 else min(_WAIT_SLICE, lock_pttl / 1000.0 + 0.001)
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise ComputeTimeout(
                    f"waited {self.options.wait_timeout} s for another host to compute {self.key!r}: "
                    "raise wait_timeout, or lower the computation's time; the owner keeps its lease"
                )
            timeout = min(timeout, left)
        return self.tier._wakeups.wait(kb, wake_seen, timeout)

    # -- after computing ------------------------------------------------------------

    def _finish(self, value: Any, token: int, started: float) -> Steps[Any]:
        """Publish a computed value to Redis (fenced by ``token``) and plan
        its L1 copy."""
        data = self.cache._dumps(value)
        delta_ms = int((time.monotonic() - started) * 1000)
        ttl = self.cache._ttl(self.options.ttl)
        stored = False
        if token:
            px = 0 if ttl is None else milliseconds(ttl + self.options.stale_ttl)
            record = encode(KIND_VALUE, self.cache._tag, data, delta_ms, int(self.options.stale_ttl * 1000), token)
            try:
                publish = self.remote.publish_op(self.key, token, record, px)
                stored = self.wrote = yield from self.tier._marked(self.key, publish, own=True)
                self.l1_header = record[:HEADER_SIZE]
            except RemoteUnavailable:
                token = 0
        if stored or not token:  # refused: a write or a takeover won; keep ours out of the L1
            if stored:
                live = self.tier._live.load()
            else:  # computed with Redis unreachable
                self.computed_locally = self._local_compute_lasts()
                live = int(self.computed_locally)
            self.l1_data, self.l1_ttl = data, self.tier._local(ttl, live)
            self.l1_stale = self.tier._window(self.options.stale_ttl)
            self._delta_ms = delta_ms
        return value

    def _local_compute_lasts(self) -> bool:
        """Whether a value computed with Redis unreachable may stay its
        local_ttl in the L1, shared by the host's processes through an
        outage, or only UNTRACKED_TTL.  It lasts while the host's
        tracking is lost or suspended: the tracker then flushes it when it
        hears from Redis again (the local_computes count, bumped in
        _publish).  With tracking live, Redis answers the host: the value
        goes by itself, and asks for no flush (a flush per such value
        would empty the L1 over and over while some calls time out)."""
        return not self.tier._live.load() or bool(self.tier._is_suspended())

    def _share_failure(self, exc: BaseException, token: int) -> Steps[None]:
        """Give the round's waiters on every host the exception (and cache
        it for negative_ttl), or free the lock if it is not an Exception."""
        if not token:
            return
        try:
            if not isinstance(exc, Exception):
                try:
                    yield self.remote.release_op(self.key, token)
                except RemoteUnavailable:
                    self.remote.maybe_held(self.key, token)
                return
            negative = self.options.negative_ttl
            kind = KIND_NEGATIVE if negative > 0 else KIND_ERROR
            record = encode(kind, self.cache._tag, _encode_error(exc), version=token)
            yield self.remote.publish_op(self.key, token, record, milliseconds(negative or _ERROR_RECORD_TTL))
        except RemoteUnavailable:
            pass

    # -- the L1 side --------------------------------------------------------------------

    _delta_ms = 0

    _fence_seen: int | None = None
    l1_header: bytes | None = None
    wrote = False  # this flight published its computation to Redis
    computed_locally = False  # ... or computed it with Redis unreachable, to last (_local_compute_lasts)

    def publish(self, value: Any, round_: int, started: float) -> None:
        self.tier._run(self._publish(round_))

    async def apublish(self, value: Any, round_: int, started: float) -> None:
        await self.tier._arun(self._publish(round_))

    def _publish(self, round_: int) -> Steps[None]:
        if self.l1_data is None:  # nothing fit for the L1: free its flight
            self.cache._flight_abort(self.where, round_)
            return
        own = self.wrote and self.tier._live.load()  # marked pending since (_finish)
        if self.cache._flight_publish(
            self.where, self.l1_data, self.cache._tag, self.l1_ttl, round_, self.l1_stale, self._delta_ms
        ):
            if own:
                found = self.cache._lookup(self.where)
                if found is not None:
                    confirm_own_write(self.tier, key_bytes(self.key), found[4])
            if self.computed_locally:
                # After the publish: the tracker's flush that this asks
                # for comes after it, and expires the copy (_tracking,
                # "Values computed with Redis unreachable").
                self.tier._local_computes.add(1)
            yield from self.tier._fill_fence(self.key, self._fence_seen, self.l1_header)
        elif own:
            unmark_own_write(self.tier, key_bytes(self.key))

    def fail(self, exc: BaseException, round_: int) -> None:
        if isinstance(exc, _Absent):  # not a failure: the waiters return their default
            self.cache._flight_abort(self.where, round_, _encode_error(exc), 0.0)
            return
        super().fail(exc, round_)


class TieredCache(Cache):
    """A :class:`~herdcache.Cache` per host in front of a Redis or Valkey
    server shared by many hosts (see the module docstring).

    :param name: the L1 segment's name (every process of a host opens the
        same); also the default Redis prefix.
    :param size: bytes of the L1 segment.
    :param remote: a ``redis.Redis`` client (redis-py >= 5; Redis >= 6.0 or
        Valkey).  The tier makes its own connection pool from its settings,
        without retries, its socket timeouts capped at ``timeout``.
    :param local_ttl: seconds a value may stay in the L1 at most.
    :param prefix: Redis key prefix of this cache (default
        ``"herdcache:NAME:"``): every host of the fleet must use the same.
    :param timeout: seconds a Redis connect, and a Redis reply, may take
        at most (the client's own timeouts if shorter).
    :param stale_if_error: seconds past its expiry (or past the flush of
        the L1 after a lost tracking connection) an L1 copy may still be
        served when Redis fails or is known down; 0 (default): never, a read
        that Redis cannot answer raises RemoteUnavailable.
    :param aremote: a ``redis.asyncio.Redis`` whose connection settings the
        async methods (aget, aset, adelete, aget_or_compute) use, on a
        client of their own per event loop (bytes replies, no retries,
        timeouts capped at ``timeout``); default: ``remote``'s settings.
    :param kwargs: the other parameters of :class:`~herdcache.Cache`.
    """

    def __init__(
        self,
        name: str | None = None,
        size: int | str = "64MiB",
        *,
        remote: redis.Redis,
        local_ttl: float = 30.0,
        prefix: str | bytes | None = None,
        timeout: float = 0.25,
        stale_if_error: float = 0.0,
        aremote: Any = None,
        **kwargs: Any,
    ):
        """Open (or create) the L1 and join the host's tracking; see the class docstring."""
        if not local_ttl > 0 or local_ttl == FOREVER:
            raise InvalidArgument(f"local_ttl must be > 0 seconds (and finite), got {local_ttl!r}")
        if not 0 <= stale_if_error <= 65535:
            raise InvalidArgument(f"stale_if_error must be 0..65535 seconds, got {stale_if_error!r}")
        if prefix is None:
            if name is None:
                raise InvalidArgument("an anonymous TieredCache needs prefix= (the key prefix in Redis)")
            prefix = f"herdcache:{name}:"
        super().__init__(name, size, **kwargs)
        self.local_ttl = float(local_ttl)
        self.stale_if_error = float(stale_if_error)
        self.prefix = key_bytes(prefix)
        try:
            self._remote = Remote(remote, self.prefix, self.segment, timeout, aremote)
            self._remote.check_server()
            self._live = self.segment.counter("tier.live")
            self._epoch = self.segment.counter("tier.epoch")
            self._stale_if_error = self.segment.counter("tier.stale_if_error")
            self._local_computes = self.segment.counter("tier.local_computes")
            # Bound once: every L1 hit loads it (see _tracking, "Suspension").
            self._is_suspended = self.segment.counter("tier.suspended").load
            self._wakeups = Wakeups(self)
            self._tracker = Tracker(self, self._remote)
        except BaseException:
            super().close()
            raise
        self._tracker.start()

    # -- helpers ------------------------------------------------------------------

    def _l1_delete(self, key: Any) -> bool:
        """Remove ``key`` from this host's L1 only (delete() goes to Redis)."""
        return _core.Cache.delete(self, key)

    def _l1_clear(self) -> None:
        """Empty this host's L1 only (clear() goes to Redis)."""
        _core.Cache.clear(self)

    def _window(self, stale: float) -> float:
        """The stale window of an L1 copy: its own, or stale_if_error's."""
        return max(stale, self.stale_if_error)

    def _fallback_copy(self, where: Any, stale_ttl: float) -> tuple[bytes, float | None] | None:
        """The L1 copy of a key that a caller with ``stale_ttl`` may serve
        if Redis fails: one whose stale window is not over, and that
        expired at most the caller's window ago.  None if there is none,
        or the caller did not opt in."""
        window = max(stale_ttl, self.stale_if_error)
        if not window:
            return None
        found = self._lookup(where)
        if found is None or found[1] != self._tag:
            return None
        data, _fmt, ttl, stale_s, _csn, _delta = found
        if ttl is None:
            return data, None
        if ttl + stale_s <= 0 or -ttl > window:
            return None
        return data, ttl + stale_s

    def _local(self, ttl: float | None, live: int = 1) -> float:
        """The L1 ttl for a value that lives ``ttl`` more seconds in Redis."""
        cap = self.local_ttl if live else min(UNTRACKED_TTL, self.local_ttl)
        return cap if ttl is None else min(ttl, cap)

    # -- running steps (see _steps.py) -------------------------------------------

    def _execute(self, request: Any) -> Any:
        """Carry out one request of a step generator, blocking: a Redis
        operation (itself steps) on the sync client, or a wait."""
        if isinstance(request, Generator):
            return self._remote.run(request)
        return request()

    async def _aexecute(self, request: Any) -> Any:
        """:meth:`_execute` on asyncio: Redis through ``redis.asyncio``; a
        wait (on a herdcache condition, woken from another process) in a
        worker thread, so the loop never blocks."""
        if isinstance(request, Generator):
            return await self._remote.arun(request)
        import asyncio  # here, not at the top: it doubles `import herdcache`

        return await asyncio.get_running_loop().run_in_executor(None, request)

    def _run(self, steps: Steps[_T]) -> _T:
        return run(steps, self._execute)

    async def _arun(self, steps: Steps[_T]) -> _T:
        return await arun(steps, self._aexecute)

    def _remember(self, key: Any, data: bytes, ttl: float | None, seen: int, header: bytes) -> Steps[None]:
        """Put a value this process just wrote to Redis in the L1, marked
        as an own write (see _tracking), then fenced (see _fill_fence;
        ``seen`` is the key's wake counter before the write)."""
        live = self._live.load()
        csn = self._store(key, data, self._tag, self._local(ttl, live), stale_ttl=self._window(0.0))
        if live:
            confirm_own_write(self, key_bytes(key), csn)
        yield from self._fill_fence(key, seen, header)

    def _fill_fence(self, key: Any, seen: int | None, header: bytes | None) -> Steps[None]:
        """After an L1 publish of the record ``header`` read or written when
        the key's wake counter was ``seen``: if an invalidation came since,
        keep the copy only if Redis still holds that record.  The tracker
        bumps the counter before it looks at the copy, so one of the two
        sees the other.  An own write's mark stays: the counter also moves
        for changes the mark does not answer for (this flight's own lock,
        taken in Redis before the value), and the mark is used up by the
        first change reported after it (see _tracking, "Own writes")."""
        if seen is None or header is None or self._wakeups.snapshot(key_bytes(key)) == seen:
            return
        try:
            # Only with tracking live now does a check that the record is
            # current cover what follows it (the flush on a lost tracking
            # connection expires copies and leaves fills to this fence).
            if self._live.load() and (yield self._remote.still_op(key, header)):
                return
        except RemoteUnavailable:
            pass
        self._l1_delete(key)

    def _write(self, key: Any, operation: Steps[_T], own: bool = False) -> Steps[_T]:
        """A Redis write (see _marked); on failure forget the key here too
        (the write may have happened) and raise."""
        try:
            return (yield from self._marked(key, operation, own))
        except RemoteUnavailable:
            self._l1_delete(key)
            raise

    def _marked(self, key: Any, operation: Steps[_T], own: bool) -> Steps[_T]:
        """``operation``, a Redis write of ``key``; with ``own`` (a value this
        process then puts in the L1), under a pending own-write mark taken
        *before* the write: Redis may report the change before the value
        is in the L1, and without the mark the tracker would drop the
        previous copy meanwhile, and the host's readers would go to Redis
        for a value it is about to have (see _tracking).  The mark goes if
        the write failed or did not happen."""
        kb = key_bytes(key)
        own = own and bool(self._live.load())
        if own:
            mark_own_write(self, kb)
        try:
            done: _T = yield operation
        except BaseException:
            if own:
                unmark_own_write(self, kb)
            raise
        if own and not done:
            unmark_own_write(self, kb)
        return done

    def _record(self, data: bytes) -> bytes:
        return encode(KIND_VALUE, self._tag, data)

    @property
    def epoch(self) -> int:
        """How many times this host's L1 was flushed whole (tracking started
        or lost, FLUSHALL, clear())."""
        return self._epoch.load()

    @property
    def tracking(self) -> bool:
        """Whether this host's tracking connection is live now."""
        return self._live.load() != 0

    @property
    def suspended(self) -> bool:
        """Whether this host's tracking is suspended now: its tracker's
        PING is late, and no L1 copy is served as fresh until the reply."""
        return self._is_suspended() != 0

    @property
    def tracker_elected(self) -> bool:
        """Whether this process holds the host's tracking connection."""
        return self._tracker.elected

    # -- reads ----------------------------------------------------------------------

    def get(self, key: Any, default: Any = None) -> Any:
        """The value of ``key`` from the L1, else from Redis (one request per
        host however many processes ask together), else ``default``.

        :raises RemoteUnavailable: not in the L1, and Redis did not answer.
        """
        # _l1_value(), written out: one call less on the hit path.
        value = _MISSING if self._is_suspended() else self._get_value(key, _MISSING)
        if value is not _MISSING:
            return value
        try:
            return compute.get_or_compute(self, key, _read_only, self._read_options(), _TierFlight)
        except _Absent:
            return default

    async def aget(self, key: Any, default: Any = None) -> Any:
        """:meth:`get` for asyncio: Redis through ``redis.asyncio``, and a
        wait for another process of the host in a worker thread (the loop
        never blocks beyond an L1 lookup).

        :raises RemoteUnavailable: not in the L1, and Redis did not answer.
        """
        value = self._l1_value(key)
        if value is not _MISSING:
            return value
        try:
            return await compute.aget_or_compute(self, key, _read_only, self._read_options(), _TierFlight)
        except _Absent:
            return default

    def _l1_value(self, key: Any) -> Any:
        """The L1's fresh value of ``key``, or _MISSING: also while the
        host's tracking is suspended (see _tracking, "Suspension")."""
        if self._is_suspended():
            return _MISSING
        return self._get_value(key, _MISSING)

    def _read_options(self) -> ComputeOptions:
        """The flight options of a plain read: a lease that outlasts its Redis call."""
        return ComputeOptions(lease=max(4 * self._remote.timeout, 1.0))

    def __getitem__(self, key: Any) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return self.get(key, _MISSING) is not _MISSING

    def get_many(self, keys: Iterable[Any], consistent: bool = False) -> dict[Any, Any]:
        """The values of those ``keys`` that are present: from the L1, and
        the rest from Redis in one round trip (without the L1's single
        flight: each process asks for its own misses).

        :raises RemoteUnavailable: some keys are not in the L1, and Redis
            did not answer.
        :raises NotSupported: with ``consistent=True`` (see :meth:`snapshot`).
        """
        if consistent:
            raise _no_snapshots()
        found, missing = {}, []
        for key in keys:
            value = self._l1_value(key)
            if value is _MISSING:
                missing.append(key)
            else:
                found[key] = value
        if missing:
            seen = [self._wakeups.snapshot(key_bytes(k)) for k in missing]
            live = self._live.load()
            fallbacks = {k: self._fallback_copy(k, 0.0) for k in missing}
            try:
                records = self._remote.fetch_many(missing)
            except RemoteUnavailable:
                if not any(fallbacks.values()):
                    raise
                for key, copy in fallbacks.items():
                    if copy is not None:
                        self._stale_if_error.add(1)
                        found[key] = self._loads(copy[0])
                return found
            for key, record, before in zip(missing, records, seen):
                if record is None or record.kind != KIND_VALUE:
                    continue
                _check_tag(record, key, self._tag)
                remaining = record.fresh_seconds
                if remaining is not None and remaining <= 0:
                    continue
                found[key] = self._loads(record.payload)
                self._store(key, record.payload, self._tag, self._local(remaining, live), stale_ttl=self._window(0.0))
                self._run(self._fill_fence(key, before, record.header))
        return found

    def ttl(self, key: Any) -> float | None:
        """Seconds ``key`` has left in Redis; None if it never expires.

        :raises KeyError: if the key is absent or expired.
        """
        record = self._remote.fetch(key)
        if record is None or record.kind != KIND_VALUE:
            raise KeyError(key)
        remaining = record.fresh_seconds
        if remaining is not None and remaining <= 0:
            raise KeyError(key)
        return remaining

    # -- writes ---------------------------------------------------------------------

    # Ignored override: unlike Cache._put (serialized bytes, a table
    # mode and csn), this takes the value and Redis's NX/XX.  Renaming it
    # would change what Cache methods this class inherits do: today
    # Cache.compare_and_set (via _encode_and_store) reaches this method with
    # mode/csn as nx/xx and redis-py refuses the SET (DataError); renamed, it
    # would store in the L1 alone.  Left as is until that is decided.
    def snapshot(self) -> Snapshot:
        """Not offered: a snapshot is one host's commit order, not the
        fleet's in Redis.

        :raises NotSupported: always.
        """
        raise _no_snapshots()

    def gets(self, key: Any, default: Any = None) -> tuple[Any, int | None]:
        """Not offered: a token would name one host's L1 copy, not the
        fleet's value in Redis.

        :raises NotSupported: always.
        """
        raise _no_compare_and_set()

    def compare_and_set(self, key: Any, value: Any, token: int | None, ttl: float | None = None) -> bool:
        """Not offered (see :meth:`gets`).

        :raises NotSupported: always.
        """
        raise _no_compare_and_set()

    def compare_and_delete(self, key: Any, token: int | None) -> bool:
        """Not offered (see :meth:`gets`).

        :raises NotSupported: always.
        """
        raise _no_compare_and_set()

    def _put_remote(
        self, key: Any, value: Any, ttl: float | None, nx: bool = False, xx: bool = False
    ) -> bool:
        return self._run(self._put_steps(key, value, ttl, nx, xx))

    def _put_steps(self, key: Any, value: Any, ttl: float | None, nx: bool = False, xx: bool = False) -> Steps[bool]:
        data = self._dumps(value)
        effective = self._ttl(ttl)
        if effective is not None and effective <= 0:
            yield from self._delete_steps(key)
            return False
        record = self._record(data)
        seen = self._wakeups.snapshot(key_bytes(key))
        stored = yield from self._write(key, self._remote.store_op(key, record, milliseconds(effective), nx, xx), own=True)
        if stored:
            yield from self._remember(key, data, effective, seen, record[:HEADER_SIZE])
        return stored

    def set(self, key: Any, value: Any, ttl: float | None = None) -> None:
        """Store in Redis, then in this host's L1; other hosts drop their copy.

        :raises RemoteUnavailable: Redis did not take the write.
        """
        self._put_remote(key, value, ttl)

    async def aset(self, key: Any, value: Any, ttl: float | None = None) -> None:
        """:meth:`set` for asyncio, through ``redis.asyncio``."""
        await self._arun(self._put_steps(key, value, ttl))

    def add(self, key: Any, value: Any, ttl: float | None = None) -> bool:
        """Store only if ``key`` is absent in Redis; True if stored."""
        return self._put_remote(key, value, ttl, nx=True)

    def replace(self, key: Any, value: Any, ttl: float | None = None) -> bool:
        """Store only if ``key`` is present in Redis; True if stored."""
        return self._put_remote(key, value, ttl, xx=True)

    def set_many(self, mapping: Mapping[Any, Any], ttl: float | None = None, atomic: bool = False) -> None:
        """Store every item (each serialized before any is stored).

        :raises NotSupported: with ``atomic=True`` (see :meth:`snapshot`).
        """
        if atomic:
            raise _no_snapshots()
        for key, value in mapping.items():
            self._dumps(value)
        for key, value in mapping.items():
            self._put_remote(key, value, ttl)

    def delete(self, key: Any) -> bool:
        """Remove ``key`` from Redis and the L1; True if Redis had it."""
        return self._run(self._delete_steps(key))

    async def adelete(self, key: Any) -> bool:
        """:meth:`delete` for asyncio, through ``redis.asyncio``."""
        return await self._arun(self._delete_steps(key))

    def _delete_steps(self, key: Any) -> Steps[bool]:
        removed = yield from self._write(key, self._remote.delete_op([key]))
        self._l1_delete(key)
        return removed > 0

    def __delitem__(self, key: Any) -> None:
        if not self.delete(key):
            raise KeyError(key)

    def delete_many(self, keys: Iterable[Any], atomic: bool = False) -> int:
        """Remove ``keys`` (one round trip); how many Redis had.

        :raises NotSupported: with ``atomic=True`` (see :meth:`snapshot`).
        """
        if atomic:
            raise _no_snapshots()
        keys = list(keys)
        if not keys:
            return 0
        try:
            removed = self._remote.run(self._remote.delete_op(keys))
        finally:
            for key in keys:
                self._l1_delete(key)
        return removed

    def touch(self, key: Any, ttl: float | None = None) -> bool:
        """Give ``key`` a new ttl in Redis; True if it was there."""
        effective = self._ttl(ttl)
        found = self._run(self._write(key, self._remote.touch_op(key, milliseconds(effective))))
        self._l1_delete(key)  # the next read takes the new ttl
        return found

    def incr(self, key: Any, delta: int | float = 1, *, default: int | float | None = None) -> int | float:
        """Add ``delta`` to the number under ``key`` in Redis, atomically
        across the fleet (WATCH/MULTI), keeping its ttl; the new value.

        :param default: if the key is absent, start from this number (as
            :meth:`herdcache.Cache.incr`); None: raise KeyError.
        :raises KeyError: if the key is absent and no default was given.
        :raises TypeError: if the value is not a number.
        """
        result: list[int | float] = []

        def change(record: Record) -> bytes:
            if record.kind != KIND_VALUE or record.tag != self._tag:
                raise SerializationError(f"the Redis value of {key!r} is not this cache's format {self._tag}")
            value = self._loads(record.payload)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"incr/decr need a number, {key!r} holds {type(value).__name__}")
            result[:] = [value + delta]
            return self._record(self._dumps(value + delta))

        while True:
            new = self._run(self._write(key, self._remote.update_op(key, change)))
            self._l1_delete(key)
            if new is not None:
                return result[0]
            if default is None:
                raise KeyError(key)
            if self.add(key, default + delta):
                return default + delta
            # another host created it first: add to theirs

    def clear(self) -> None:
        """Remove this cache's keys from Redis (SCAN + UNLINK in batches;
        never KEYS or FLUSHDB) and flush this host's L1."""
        self._remote.clear()
        self._tracker.flush()

    # -- no stampede, fleet-wide ------------------------------------------------------

    def get_or_compute(self, key: Any, fn: Callable[[], Any], ttl: float | None = None, **kwargs: Any) -> Any:
        """As :meth:`herdcache.Cache.get_or_compute`, with exactly one
        computation in the whole fleet; if Redis is down, this host computes
        (once) and keeps the value in its L1 only."""
        options = kwargs.pop("options", None) or ComputeOptions(ttl, **kwargs)
        return compute.get_or_compute(self, key, fn, options, _TierFlight)

    async def aget_or_compute(
        self, key: Any, fn: Callable[[], Awaitable[Any]], ttl: float | None = None, **kwargs: Any
    ) -> Any:
        """:meth:`get_or_compute` for asyncio: ``fn`` runs on the loop, Redis
        calls go through ``redis.asyncio`` (the same steps, timeouts, breaker
        and fencing as the sync path), and waits (for another process of
        the host, or another host's computation) run in worker threads."""
        options = kwargs.pop("options", None) or ComputeOptions(ttl, **kwargs)
        return await compute.aget_or_compute(self, key, fn, options, _TierFlight)

    # -- introspection ------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The L1's statistics plus the tier's: epoch, tracking,
        invalidations, and the suspensions of the tracking (late PINGs)
        and how many of them ended in a resume rather than a flush."""
        stats = super().stats()
        stats["tier"] = {
            "epoch": self.epoch,
            "tracking": self.tracking,
            "invalidations": self._tracker.invalidations.load(),
            "remote_down": self._remote.is_down(),
            "stale_if_error": self._stale_if_error.load(),
            "suspended": self.suspended,
            "suspensions": self._tracker.suspensions.load(),
            "resumes": self._tracker.resumes.load(),
        }
        return stats

    def close(self) -> None:
        """Stop this process's tracking candidate (handing the role over),
        then close the L1."""
        self._tracker.stop()
        super().close()

    def __repr__(self) -> str:
        return f"<herdcache.TieredCache {self.name or '(anonymous)'!r} prefix={self.prefix!r} epoch={self.epoch}>"


__all__ = ["TieredCache"]
