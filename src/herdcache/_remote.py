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
delete) at the process's next successful call.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .errors import InvalidArgument, NotSupported, RemoteUnavailable, SerializationError
from .segment import Segment

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
# remove the lock), makes the late result a no-op.
_PUBLISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
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
if redis.call('GET', KEYS[1]) == ARGV[1] then
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


class Remote:
    """The Redis operations of one TieredCache, each with timeouts and the
    host's circuit breaker."""

    def __init__(self, remote: redis.Redis, prefix: bytes, segment: Segment, timeout: float):
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
        self._read_or_lock = self.client.register_script(_READ_OR_LOCK)
        self._publish = self.client.register_script(_PUBLISH)
        self._release = self.client.register_script(_RELEASE)

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
        now = _now_ms()
        until = self._down_until.load()
        if now < until:
            raise RemoteUnavailable(
                f"{self.where} failed recently ({self._last_error or 'in another process'}); "
                f"this host retries it in {until - now} ms. Reads of values held locally keep working"
            )
        try:
            result = fn(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.trip(exc)
            raise RemoteUnavailable(
                f"{self.where} did not answer within {self.timeout} s or refused the connection "
                f"({type(exc).__name__}: {exc}); check that it runs and is reachable"
            ) from exc
        except redis.RedisError as exc:
            raise RemoteUnavailable(f"{self.where} refused the command: {type(exc).__name__}: {exc}") from exc
        if self._pause.load():
            self._pause.store(0)
        if self._maybe_held:
            self._free_maybe_held()
        return result

    def _free_maybe_held(self) -> None:
        """Free the locks that requests which timed out may have taken."""
        pending, self._maybe_held = self._maybe_held, []
        for key, token in pending:
            try:
                self.release(key, token)
            except RemoteUnavailable:
                self._maybe_held.append((key, token))
                return

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

    # -- reads ------------------------------------------------------------------------

    def fetch(self, key: Any) -> Record | None:
        """``key``'s record and its PTTL, in one round trip; None if absent."""
        return self.fetch_many([key])[0]

    def fetch_many(self, keys: list[Any]) -> list[Record | None]:
        """The keys' records (None where absent), in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            name = self.value_key(key)
            pipe.get(name)
            pipe.pttl(name)
        replies = self.call(pipe.execute)
        return [
            None if data is None else decode(data, pttl, key)
            for key, data, pttl in zip(keys, replies[::2], replies[1::2])
        ]

    def still(self, key: Any, header: bytes) -> bool:
        """Whether ``key``'s record still has this header (GETRANGE: the
        header only, never the value)."""
        got: bytes = self.call(self.client.getrange, self.value_key(key), 0, len(header) - 1)
        return got == header

    # -- the fleet-wide lock ----------------------------------------------------------

    def read_or_lock(self, key: Any, lease: float, seen: bytes) -> tuple[int, Any, int]:
        """``key``'s record if its header is not ``seen`` (b"": none seen),
        else its lock.  Returns (READ, record, 0), (LOCKED, token, lease_ms)
        for this caller, or (HELD, 0, pttl_ms) when another holds the lock."""
        token = random.getrandbits(52) | 1
        keys = [self.lock_key(key), self.value_key(key)]
        try:
            state, got, pttl = self.call(self._read_or_lock, keys, [milliseconds(lease), len(seen) or 1, seen, token])
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
        keys = [self.lock_key(key), self.value_key(key)]
        try:
            return bool(self.call(self._publish, keys, [str(token), record, str(px)]))
        except RemoteUnavailable:
            self.maybe_held(key, token)
            raise

    def release(self, key: Any, token: int) -> None:
        """Free the lock if ``token`` still holds it."""
        self.call(self._release, [self.lock_key(key)], [str(token)])

    # -- writes -------------------------------------------------------------------------

    def store(self, key: Any, record: bytes, px: int, nx: bool = False, xx: bool = False) -> bool:
        """Drop the key's lock, then SET the record: a write wins over a
        computation under way, whose publish then finds its token gone (a
        publish between the two commands lands before the SET)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.unlink(self.lock_key(key))
        pipe.set(self.value_key(key), record, px=px or None, nx=nx, xx=xx)
        _, stored = self.call(pipe.execute)
        return bool(stored)

    def delete(self, keys: list[Any]) -> int:
        """UNLINK the keys' values and locks; how many values were there."""
        names = [self.value_key(k) for k in keys]
        pipe = self.client.pipeline(transaction=True)
        pipe.unlink(*names)
        pipe.unlink(*[self.lock_key(k) for k in keys])
        removed, _ = self.call(pipe.execute)
        return int(removed)

    def touch(self, key: Any, px: int) -> bool:
        """Give the value a new ttl (px 0: none)."""
        name = self.value_key(key)
        if px:
            return bool(self.call(self.client.pexpire, name, px))
        return bool(self.call(self.client.persist, name)) or bool(self.call(self.client.exists, name))

    def update(self, key: Any, change: Callable[[Record], bytes | None]) -> bytes | None:
        """Replace the record by ``change(record)`` atomically (WATCH/MULTI,
        retried on conflict), keeping its ttl; None if the key is absent."""
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
        new: bytes | None = self.call(self.client.transaction, attempt, name, value_from_callable=True)
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


