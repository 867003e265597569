"""The Redis (or Valkey) side of a TieredCache: keys, records, the
fleet-wide lock, timeouts and a circuit breaker shared by a host.

Keys.  A cache with prefix ``P`` keeps the value of ``k`` at ``P v:k``
and the fleet-wide computation lock of ``k`` at ``P l:k``, both under
``P`` so that one tracking subscription (BCAST PREFIX P) hears of every
change to either.

Tokens.  The lock holds its owner's token, a random 52-bit number the
owner picks before asking.  It fences: the script that stores a
computation's result compares the lock with the token in the same atomic
step, so a late owner (lease over, or a write meanwhile) stores nothing.
A counter would give ordered tokens, but nothing here compares their
order, and a token the caller picked lets it free a lock it may hold
without knowing: a request that timed out may still run (a stopped
server runs it when continued), which would leave a lock for a whole
lease.  Such possibly-held locks are remembered and freed (compare and
delete) at the process's next successful call, and by its tracking
candidate thread as soon as the server answers it (a process that calls
no more would otherwise keep other hosts waiting for the whole lease).

Records.  A value in Redis is a 20-byte header then the serializer's
bytes: magic ``hc``, kind (value or error), the serializer's tag (a host
with another serializer refuses it, as the L1 does), the time its
computation took (for early refresh), the stale window in ms (the key's
PTTL counts it: the value is fresh while PTTL > stale window) and a
version (the computation's token, or random for a set), which
lets the lock script notice that the value changed since a caller read it.

Failures.  Every call runs with the client's socket timeouts, capped at
``timeout``, and no retries.  A failed
call opens the host's circuit breaker: two counters in the L1 segment say
until when every process of the host fails fast with RemoteUnavailable
instead of waiting for its own timeout; the pause doubles from 50 ms up to
5 s while failures go on, with jitter, and resets on the first success.
"""

from __future__ import annotations

import random
import struct
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ._steps import Steps, arun, run
from .errors import InvalidArgument, NotSupported, RemoteUnavailable, SerializationError
from .segment import Segment

_T = TypeVar("_T")

_HEADER = struct.Struct("<2sBBIIQ")
HEADER_SIZE = _HEADER.size
_MAGIC = b"hc"
#: Kinds of record: a value; a failure shared with the waiters of the
#: round (version) that raised it; a failure cached for everyone (negative_ttl).
KIND_VALUE, KIND_ERROR, KIND_NEGATIVE = 0, 1, 2
#: What read_or_lock found.
HELD, LOCKED, READ = 0, 1, 2

_MIN_PAUSE_MS, _MAX_PAUSE_MS = 50, 5000
_SCAN_BATCH = 500

# Read the value or take the lock, in one round trip.  A value whose
# header differs from the one the caller last saw (ARGV[3], b"" when it saw
# none) is returned; otherwise (absent, or the stale or failed record the
# caller already judged) report the lock's holder if there is one, else
# take the lock with the caller's token (ARGV[4]).  EXISTS and GETRANGE, not GET,
# look first, so GET counts exactly the values sent to hosts.
_READ_OR_LOCK = """
if redis.call('EXISTS', KEYS[2]) == 1 then
    local head = redis.call('GETRANGE', KEYS[2], 0, tonumber(ARGV[2]) - 1)
    if head ~= ARGV[3] then
        return {2, redis.call('GET', KEYS[2]), redis.call('PTTL', KEYS[2])}
    end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
    return {0, 0, redis.call('PTTL', KEYS[1])}
end
redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[1])
return {1, ARGV[4], tonumber(ARGV[1])}
"""

# Store a computation's record only while its token still holds the lock,
# then free the lock (one step, so no host sees the lock gone and the
# value absent).  A lease that ran out, or a set/delete meanwhile (both
# remove the lock), makes the late result a no-op.  The lock is read with
# GETRANGE (the whole string; "" when absent), as in the other scripts:
# GET counts only the values sent to hosts.
_PUBLISH = """
if redis.call('GETRANGE', KEYS[1], 0, -1) ~= ARGV[1] then
    return 0
end
if ARGV[3] == '0' then
    redis.call('SET', KEYS[2], ARGV[2])
else
    redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
end
redis.call('DEL', KEYS[1])
return 1
"""

# Compare-and-delete: only the token's owner frees the lock.
_RELEASE = """
if redis.call('GETRANGE', KEYS[1], 0, -1) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class Record:
    """A value (or a shared error) as stored in Redis, with its PTTL."""

    kind: int
    tag: int
    payload: bytes
    delta_ms: int
    stale_ms: int
    version: int
    header: bytes
    pttl_ms: int

    @property
    def fresh_seconds(self) -> float | None:
        """Seconds the value stays fresh (<= 0: only stale); None: forever."""
        if self.pttl_ms < 0:
            return None
        return (self.pttl_ms - self.stale_ms) / 1000.0


def encode(kind: int, tag: int, payload: bytes, delta_ms: int = 0, stale_ms: int = 0, version: int = 0) -> bytes:
    """A record's bytes; version 0 means a random one (a plain write)."""
    if version == 0:
        version = random.getrandbits(63) | 1
    header = _HEADER.pack(_MAGIC, kind, tag, min(delta_ms, 0xFFFFFFFF), stale_ms, version)
    return header + payload


def decode(data: bytes, pttl_ms: int, key: Any) -> Record:
    """The record in ``data``.

    :raises SerializationError: the bytes were not written by a TieredCache.
    """
    if len(data) < _HEADER.size or data[:2] != _MAGIC:
        raise SerializationError(
            f"the Redis value of {key!r} was not written by a herdcache TieredCache "
            f"({len(data)} bytes, no 'hc' header): give the tier a prefix no other program writes under"
        )
    _magic, kind, tag, delta_ms, stale_ms, version = _HEADER.unpack_from(data)
    return Record(kind, tag, data[_HEADER.size :], delta_ms, stale_ms, version, data[: _HEADER.size], pttl_ms)


def key_bytes(key: Any) -> bytes:
    """A cache key as Redis sees it (str is UTF-8, as in the L1)."""
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key)
    raise InvalidArgument(f"keys are str or bytes, not {type(key).__name__}")


def milliseconds(seconds: float | None) -> int:
    """A ttl for PX: 0 means none (never expires); at least 1 ms otherwise."""
    if seconds is None:
        return 0
    return max(int(seconds * 1000), 1)


def own_client(remote: redis.Redis, timeout: float, **overrides: Any) -> redis.Redis:
    """A client to the user's server, with the user's connection settings
    but bytes replies, no retries (a retry would multiply the time a caller
    can be held), and socket timeouts of at most ``timeout``."""
    pool = remote.connection_pool
    kwargs = dict(pool.connection_kwargs)
    for name in ("socket_timeout", "socket_connect_timeout"):
        kwargs[name] = timeout if kwargs.get(name) is None else min(kwargs[name], timeout)
    for name in ("cache", "cache_config"):  # redis-py's own client-side cache
        kwargs.pop(name, None)
    kwargs.update(decode_responses=False, retry=Retry(NoBackoff(), 0), **overrides)
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))


#: The connection settings an asyncio client takes over from another
#: client (sync or async): where and as whom to connect, and how (the
#: others are each library's own machinery: parsers, retry, callbacks).
_PORTABLE = {
    "host", "port", "path", "db", "username", "password", "credential_provider", "client_name",
    "socket_timeout", "socket_connect_timeout", "socket_keepalive", "socket_keepalive_options",
    "encoding", "encoding_errors", "protocol",
}


def own_async_client(model: Any) -> Any:
    """An asyncio client with ``model``'s settings (the tier's own sync
    client, or the ``redis.asyncio.Redis`` the user passed): bytes replies,
    no retries, the same connection class (TCP, TLS or unix socket)."""
    import redis.asyncio
    import redis.asyncio.connection as aconn
    from redis.asyncio.retry import Retry as AsyncRetry

    pool = model.connection_pool
    kwargs = {k: v for k, v in pool.connection_kwargs.items() if k in _PORTABLE or k.startswith("ssl_")}
    kind = getattr(aconn, pool.connection_class.__name__, aconn.Connection)
    kwargs.update(decode_responses=False, retry=AsyncRetry(NoBackoff(), 0))
    return redis.asyncio.Redis(connection_pool=redis.asyncio.ConnectionPool(connection_class=kind, **kwargs))


def describe(client: redis.Redis) -> str:
    """Where a client connects, for messages."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"Redis at unix:{kwargs['path']}"
    return f"Redis at {kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def _now_ms() -> int:
    # CLOCK_MONOTONIC is one clock for every process of the host, so the
    # breaker's deadline means the same in all of them.
    return int(time.monotonic() * 1000)


class _Side:
    """A client and the tier's scripts registered on it: what a step
    (``step(side) -> reply``, or an awaitable of it on asyncio) runs on."""

    def __init__(self, client: Any):
        self.client = client
        self.read_or_lock = client.register_script(_READ_OR_LOCK)
        self.publish = client.register_script(_PUBLISH)
        self.release = client.register_script(_RELEASE)


#: A request to Redis inside an operation: called with a _Side, returns
#: the reply (sync) or an awaitable of it (asyncio).
Step = Callable[[_Side], Any]


class Remote:
    """The Redis operations of one TieredCache, each with timeouts and the
    host's circuit breaker.

    Each operation is written once, as steps (``*_op`` methods: generators
    that yield a :data:`Step` per round trip, see ``_steps.py``); the
    plain methods run them on the tier's sync client, :meth:`arun` on an
    asyncio client of this event loop, with the same timeouts and breaker.
    """

    def __init__(
        self, remote: redis.Redis, prefix: bytes, segment: Segment, timeout: float, aremote: Any = None
    ):
        self.client = own_client(remote, timeout)
        self.where = describe(self.client)
        self.timeout = timeout
        self.prefix = prefix
        self._values = prefix + b"v:"
        self._locks = prefix + b"l:"
        self._maybe_held: list[tuple[Any, int]] = []  # locks to free once Redis answers
        self._down_until = segment.counter("tier.down_until")
        self._pause = segment.counter("tier.pause")
        self._last_error = ""
        self._side = _Side(self.client)
        # asyncio clients are bound to the loop they were made in: one per loop.
        self._async_model = aremote if aremote is not None else self.client
        self._async_sides: weakref.WeakKeyDictionary[Any, _Side] = weakref.WeakKeyDictionary()

    # -- keys --------------------------------------------------------------------

    def value_key(self, key: Any) -> bytes:
        """The Redis key holding ``key``'s record."""
        return self._values + key_bytes(key)

    def lock_key(self, key: Any) -> bytes:
        """The Redis key of ``key``'s fleet-wide computation lock."""
        return self._locks + key_bytes(key)

    def parse(self, redis_key: bytes) -> tuple[str, bytes] | None:
        """("value" | "lock", cache key) for a key under the prefix, else None."""
        if redis_key.startswith(self._values):
            return "value", redis_key[len(self._values) :]
        if redis_key.startswith(self._locks):
            return "lock", redis_key[len(self._locks) :]
        return None

    # -- the breaker ---------------------------------------------------------------

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` against Redis, unless the breaker is open.

        :raises RemoteUnavailable: the server is known down, or this call
            failed (connection refused or lost, timeout, an error reply).
        """
        self._refuse_if_open()
        try:
            result = fn(*args, **kwargs)
        except redis.RedisError as exc:
            raise self._failure(exc) from exc
        if self._succeeded():
            run(self._free_maybe_held_op(), self._execute)
        return result

    async def acall(self, step: Step) -> Any:
        """:meth:`call` of one step on this event loop's asyncio client."""
        self._refuse_if_open()
        try:
            result = await step(self._async_side())
        except redis.RedisError as exc:
            raise self._failure(exc) from exc
        if self._succeeded():
            await arun(self._free_maybe_held_op(), self.acall)
        return result

    def _refuse_if_open(self) -> None:
        now = _now_ms()
        until = self._down_until.load()
        if now < until:
            raise RemoteUnavailable(
                f"{self.where} failed recently ({self._last_error or 'in another process'}); "
                f"this host retries it in {until - now} ms. Reads of values held locally keep working"
            )

    def _failure(self, exc: redis.RedisError, trip: bool = True) -> RemoteUnavailable:
        """The error to raise for a failed call (tripping the breaker if the
        server is away rather than refusing the command, unless not ``trip``)."""
        if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
            if trip:
                self.trip(exc)
            return RemoteUnavailable(
                f"{self.where} did not answer within {self.timeout} s or refused the connection "
                f"({type(exc).__name__}: {exc}); check that it runs and is reachable"
            )
        return RemoteUnavailable(f"{self.where} refused the command: {type(exc).__name__}: {exc}")

    def _succeeded(self) -> bool:
        """Reset the breaker's pause; whether possibly-held locks wait to be freed."""
        if self._pause.load():
            self._pause.store(0)
        return bool(self._maybe_held)

    def _free_maybe_held_op(self) -> Steps[None]:
        """Free the locks that requests which timed out may have taken.  The
        list is emptied first, item by item (a caller's thread and the
        tracking candidate's may both be at it, and the releases' own
        successful calls must find nothing more to free)."""
        pending = []
        while self._maybe_held:
            try:
                pending.append(self._maybe_held.pop())
            except IndexError:  # another thread took the last one
                break
        for i, (key, token) in enumerate(pending):
            try:
                yield from self.release_op(key, token)
            except RemoteUnavailable:
                self._maybe_held.extend(pending[i:])
                return

    def free_maybe_held(self) -> None:
        """Free the locks that requests which timed out may hold, from a
        thread no caller waits on (the tracking candidate's, every slice),
        past the breaker (whose pause paces callers, and does not grow with
        these attempts).  A process frees them at its next successful call
        too; but one that makes none soon (idle, or its breaker still open
        when the server is back) would leave other hosts' callers waiting
        for the lock's whole lease."""
        if self._maybe_held:
            try:
                run(self._free_maybe_held_op(), self._unguarded)
            except RemoteUnavailable:
                pass  # kept on the list: the next attempt retries

    def _unguarded(self, step: Step) -> Any:
        try:
            return step(self._side)
        except redis.RedisError as exc:
            raise self._failure(exc, trip=False) from exc

    def trip(self, exc: BaseException) -> None:
        """Open the breaker for the host after a failure, for a pause that
        doubles while failures go on."""
        self._last_error = f"{type(exc).__name__}: {exc}"
        pause = min(max(self._pause.load() * 2, _MIN_PAUSE_MS), _MAX_PAUSE_MS)
        self._pause.store(pause)
        self._down_until.store(_now_ms() + int(pause * random.uniform(0.5, 1.0)))

    def is_down(self) -> bool:
        """Whether the breaker is open now."""
        return _now_ms() < self._down_until.load()

    # -- running operations --------------------------------------------------------

    def _execute(self, step: Step) -> Any:
        return self.call(step, self._side)

    def run(self, op: Steps[_T]) -> _T:
        """Run an operation on the sync client, blocking this thread."""
        return run(op, self._execute)

    async def arun(self, op: Steps[_T]) -> _T:
        """Run an operation on this event loop's asyncio client."""
        return await arun(op, self.acall)

    def _async_side(self) -> _Side:
        import asyncio

        loop = asyncio.get_running_loop()
        side = self._async_sides.get(loop)
        if side is None:
            side = self._async_sides[loop] = _Side(own_async_client(self._async_model))
        return side

    # -- reads ------------------------------------------------------------------------

    def fetch(self, key: Any) -> Record | None:
        """``key``'s record and its PTTL, in one round trip; None if absent."""
        return self.run(self.fetch_op(key))

    def fetch_op(self, key: Any) -> Steps[Record | None]:
        """Steps of :meth:`fetch`."""
        return (yield from self.fetch_many_op([key]))[0]

    def fetch_many(self, keys: list[Any]) -> list[Record | None]:
        """The keys' records (None where absent), in one round trip."""
        return self.run(self.fetch_many_op(keys))

    def fetch_many_op(self, keys: list[Any]) -> Steps[list[Record | None]]:
        """Steps of :meth:`fetch_many`."""

        def send(side: _Side) -> Any:
            pipe = side.client.pipeline(transaction=False)
            for key in keys:
                name = self.value_key(key)
                pipe.get(name)
                pipe.pttl(name)
            return pipe.execute()

        replies = yield send
        return [
            None if data is None else decode(data, pttl, key)
            for key, data, pttl in zip(keys, replies[::2], replies[1::2])
        ]

    def still_op(self, key: Any, header: bytes) -> Steps[bool]:
        """Whether ``key``'s record still has this header (GETRANGE: the
        header only, never the value)."""
        name = self.value_key(key)
        got = yield lambda side: side.client.getrange(name, 0, len(header) - 1)
        return bool(got == header)

    # -- the fleet-wide lock ----------------------------------------------------------

    def read_or_lock(self, key: Any, lease: float, seen: bytes) -> tuple[int, Any, int]:
        """``key``'s record if its header is not ``seen`` (b"": none seen),
        else its lock.  Returns (READ, record, 0), (LOCKED, token, lease_ms)
        for this caller, or (HELD, 0, pttl_ms) when another holds the lock."""
        return self.run(self.read_or_lock_op(key, lease, seen))

    def read_or_lock_op(self, key: Any, lease: float, seen: bytes) -> Steps[tuple[int, Any, int]]:
        """Steps of :meth:`read_or_lock`."""
        token = random.getrandbits(52) | 1
        keys = [self.lock_key(key), self.value_key(key)]
        args = [milliseconds(lease), len(seen) or 1, seen, token]
        try:
            state, got, pttl = yield lambda side: side.read_or_lock(keys, args)
        except RemoteUnavailable:
            self.maybe_held(key, token)
            raise
        if state == READ:
            return READ, decode(got, int(pttl), key), 0
        return int(state), int(got), int(pttl)

    def maybe_held(self, key: Any, token: int) -> None:
        """Remember a lock a failed request may hold, to free it later."""
        if len(self._maybe_held) < 1000:
            self._maybe_held.append((key, token))

    def publish(self, key: Any, token: int, record: bytes, px: int) -> bool:
        """Store a computation's record if ``token`` still holds the lock
        (if the request fails, the lock is freed later: see maybe_held)."""
        return self.run(self.publish_op(key, token, record, px))

    def publish_op(self, key: Any, token: int, record: bytes, px: int) -> Steps[bool]:
        """Steps of :meth:`publish`."""
        keys = [self.lock_key(key), self.value_key(key)]
        args = [str(token), record, str(px)]
        try:
            return bool((yield lambda side: side.publish(keys, args)))
        except RemoteUnavailable:
            self.maybe_held(key, token)
            raise

    def release_op(self, key: Any, token: int) -> Steps[None]:
        """Free the lock if ``token`` still holds it."""
        keys, args = [self.lock_key(key)], [str(token)]
        yield lambda side: side.release(keys, args)

    # -- writes -------------------------------------------------------------------------

    def store_op(self, key: Any, record: bytes, px: int, nx: bool = False, xx: bool = False) -> Steps[bool]:
        """Drop the key's lock, then SET the record: a write wins over a
        computation under way, whose publish then finds its token gone (a
        publish between the two commands lands before the SET)."""

        def send(side: _Side) -> Any:
            pipe = side.client.pipeline(transaction=False)
            pipe.unlink(self.lock_key(key))
            pipe.set(self.value_key(key), record, px=px or None, nx=nx, xx=xx)
            return pipe.execute()

        _, stored = yield send
        return bool(stored)

    def delete_op(self, keys: list[Any]) -> Steps[int]:
        """UNLINK the keys' values and locks; how many values were there."""

        def send(side: _Side) -> Any:
            pipe = side.client.pipeline(transaction=True)
            pipe.unlink(*[self.value_key(k) for k in keys])
            pipe.unlink(*[self.lock_key(k) for k in keys])
            return pipe.execute()

        removed, _ = yield send
        return int(removed)

    def touch_op(self, key: Any, px: int) -> Steps[bool]:
        """Give the value a new ttl (px 0: none)."""
        name = self.value_key(key)
        if px:
            return bool((yield lambda side: side.client.pexpire(name, px)))
        if (yield lambda side: side.client.persist(name)):
            return True
        return bool((yield lambda side: side.client.exists(name)))

    def update_op(self, key: Any, change: Callable[[Record], bytes | None]) -> Steps[bytes | None]:
        """Replace the record by ``change(record)`` atomically (WATCH/MULTI,
        retried on conflict), keeping its ttl; None if the key is absent.
        Sync client only (the transaction runs ``change`` between its reads
        and its writes)."""
        name = self.value_key(key)

        def attempt(pipe: Any) -> bytes | None:
            data, pttl = pipe.get(name), pipe.pttl(name)
            if data is None:
                return None
            new = change(decode(data, pttl, key))
            pipe.multi()
            pipe.set(name, new, keepttl=True)
            pipe.unlink(self.lock_key(key))
            return new

        # value_from_callable: the transaction returns what attempt returned.
        new: bytes | None = yield lambda side: side.client.transaction(attempt, name, value_from_callable=True)
        return new

    def clear(self) -> int:
        """UNLINK every key under the prefix, in SCAN batches (never KEYS,
        never FLUSHDB: the database may hold other programs' keys)."""
        removed = 0
        for under in (self._values, self._locks):  # not prefix*: another cache's prefix may extend ours
            pattern = _glob_escape(under) + b"*"
            cursor = 0
            while True:
                cursor, names = self.call(self.client.scan, cursor, match=pattern, count=_SCAN_BATCH)
                if names:
                    removed += int(self.call(self.client.unlink, *names))
                if cursor == 0:
                    break
        return removed

    def server_version(self) -> str:
        """The server's version string (INFO server)."""
        return str(self.call(self.client.info, "server").get("redis_version", "?"))

    def check_server(self) -> None:
        """Refuse a server too old for the tier, if it answers now (one that
        does not is the tracker's and the callers' business, later).

        :raises NotSupported: Redis before 6.0.
        """
        try:
            info = self.call(self.client.info, "server")
        except RemoteUnavailable:
            return
        refusal = server_refusal(info)
        if refusal:
            raise NotSupported(f"{self.where}: {refusal}")


#: The oldest Redis the tier runs on: CLIENT TRACKING (BCAST, PREFIX),
#: RESP3 push messages and SET KEEPTTL came in 6.0.  It uses nothing newer
#: (no GETEX, SET GET, PXAT, or tracking options of 6.2+/7.0+), so every
#: Valkey (which reports redis_version 7.2.4) qualifies.
MIN_REDIS = (6, 0)


def server_refusal(info: dict[str, Any]) -> str | None:
    """Why the server that sent this INFO server cannot carry the tier, or None."""
    version = str(info.get("redis_version", ""))
    try:
        found = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return None  # not a Redis version string: let the commands tell
    if found >= MIN_REDIS:
        return None
    return (
        f"Redis {version} is too old for TieredCache, which needs Redis >= 6.0 or Valkey "
        "(CLIENT TRACKING and RESP3): upgrade the server"
    )


def _glob_escape(raw: bytes) -> bytes:
    """``raw`` with SCAN MATCH's special characters escaped."""
    out = bytearray()
    for byte in raw:
        if byte in b"*?[]\\":
            out += b"\\"
        out.append(byte)
    return bytes(out)


