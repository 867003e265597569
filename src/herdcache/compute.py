"""get_or_compute: exactly one process computes a missing key.

The protocol lives in the C core (``_core/flight.h``): under the key's
stripe lock, a caller learns whether it has a value, must wait, may serve
the old value, or must compute, in which case the key holds a *flight*
naming this process and a lease.  This module runs that state machine
from Python: it calls the function outside every lock, publishes the
result with the round's fencing token, shares a failure with the round's
waiters, and releases its flights when the process exits normally (the
``on_shmem_exit`` pattern; a killed process is noticed by the kernel).

Waiting callers sleep in the kernel with the GIL released, waking at each
end of a flight in the key's stripe and at least every 50 ms to check
whether the computing process is still alive.
"""

from __future__ import annotations

import atexit
import math
import os
import random
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from .errors import (
    ComputeError,
    ComputeTimeout,
    HerdcacheError,
    InvalidArgument,
    ReentrantCompute,
    SerializationError,
)
from .serializers import MsgpackSerializer

if TYPE_CHECKING:
    from .cache import Cache

#: Default seconds a computing process may take before another takes over.
DEFAULT_LEASE = 30.0

_errors_codec = MsgpackSerializer()


@dataclass(frozen=True)
class ComputeOptions:
    """How one get_or_compute call behaves (see Cache.get_or_compute)."""

    ttl: float | None = None
    stale_ttl: float = 0.0
    early_refresh: float = 0.0
    lease: float = DEFAULT_LEASE
    wait_timeout: float | None = None
    negative_ttl: float = 0.0

    def __post_init__(self) -> None:
        if not self.lease > 0:
            raise InvalidArgument(f"lease must be > 0 seconds, got {self.lease!r}")
        if self.stale_ttl < 0 or self.stale_ttl > 65535:
            raise InvalidArgument(f"stale_ttl must be 0..65535 seconds, got {self.stale_ttl!r}")
        if self.early_refresh < 0 or self.negative_ttl < 0:
            raise InvalidArgument("early_refresh and negative_ttl must be >= 0")
        if self.wait_timeout is not None and self.wait_timeout < 0:
            raise InvalidArgument(f"wait_timeout must be >= 0 or None, got {self.wait_timeout!r}")


# -- the flights this process owns, released at exit --------------------------

_local = threading.local()
_owned: dict[tuple[int, Any, int], Any] = {}
_owned_lock = threading.Lock()


def _computing() -> set:
    keys = getattr(_local, "computing", None)
    if keys is None:
        keys = _local.computing = set()
    return keys


def _release_owned_flights() -> None:
    """At interpreter exit, end every flight this process still owns, so
    waiters elsewhere compute at once instead of waiting for the lease."""
    with _owned_lock:
        owned = list(_owned.items())
        _owned.clear()
    for (_ident, key, round_), core in owned:
        try:
            core.flight_abort(key, round_)
        except HerdcacheError:
            pass


atexit.register(_release_owned_flights)
if hasattr(os, "register_at_fork"):
    # A child owns none of its parent's flights.
    os.register_at_fork(after_in_child=_owned.clear)


# -- errors shared with waiters ------------------------------------------------------


def _message(exc: BaseException) -> str:
    """str(exc), which user code can break (a __str__ that raises): the
    failure must still be shared and the key freed, not stuck to the lease."""
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__qualname__}: str() failed>"


def _encode_error(exc: BaseException) -> bytes:
    cls = type(exc)
    message = _message(exc)
    try:
        args = _errors_codec.loads(_errors_codec.dumps(list(exc.args)))
    except HerdcacheError:
        args = [message]
    return _errors_codec.dumps(
        {
            "module": cls.__module__,
            "qualname": cls.__qualname__,
            "args": args,
            "message": message,
            "traceback": "".join(traceback.format_exception(cls, exc, exc.__traceback__)),
            "pid": os.getpid(),
        }
    )


def _resolve_class(module: str, qualname: str) -> type | None:
    """The exception class, only from modules this process already imported
    (bytes in a segment never make us import anything)."""
    obj: Any = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if isinstance(obj, type) and issubclass(obj, Exception):
        return obj
    return None


def _decode_error(data: bytes, key: Any) -> Exception:
    try:
        info = _errors_codec.loads(data)
        cls = _resolve_class(info["module"], info["qualname"])
        exc = cls(*info["args"]) if cls is not None else None
    except Exception:  # a bad record or a class that will not rebuild
        info, exc = None, None
    if info is None:
        return ComputeError(f"the computation of {key!r} failed in another process")
    if exc is None:
        exc = ComputeError(
            f"{info['qualname']}: {info['message']} (raised computing {key!r} in process {info['pid']})",
            info["qualname"],
            info["traceback"],
        )
    note = f"raised in process {info['pid']} while computing {key!r}:\n{info['traceback']}"
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    exc.remote_traceback = info["traceback"]  # type: ignore[attr-defined]
    return exc


# -- the state machine -------------------------------------------------------------


class _Flight:
    """One caller's walk through the flight protocol for one key."""

    def __init__(self, cache: Cache, key: Any, options: ComputeOptions):
        self.cache = cache
        self.core = cache._core
        self.key = key
        self.options = options
        self.deadline = None if options.wait_timeout is None else time.monotonic() + options.wait_timeout
        self.waited_round = 0
        self.waited = False
        self.refreshing = False

    def _lookup(self) -> tuple | None:
        """The key's fresh value, read lock-free: (data, ttl_left, delta_ms),
        or None if there is none (absent, expired, in flight, failed)."""
        found = self.core.lookup(self.key)
        if found is None:
            return None
        data, fmt, ttl_left, _stale, _csn, delta_ms = found
        if fmt != self.cache._tag or (ttl_left is not None and ttl_left <= 0):
            return None
        return data, ttl_left, delta_ms

    def fresh_value(self) -> tuple[str, Any]:
        """The lock-free fast path: ("hit", value), ("refresh", None) when
        early refresh picked this caller to recompute, or ("miss", None)."""
        found = self._lookup()
        if found is None:
            return "miss", None
        data, ttl_left, delta_ms = found
        self.core.count_stat("hits")
        if self.options.early_refresh and ttl_left is not None and self._xfetch(ttl_left, delta_ms):
            return "refresh", None
        return "hit", self.cache._loads(data)

    def _xfetch(self, ttl_left: float, delta_ms: int) -> bool:
        """Probabilistic early expiry (Vattani et al., VLDB 2015): refresh
        now with a probability that grows as expiry nears, scaled by how
        long the value took to compute."""
        delta = max(delta_ms, 1) / 1000.0
        return delta * self.options.early_refresh * -math.log(1.0 - random.random()) >= ttl_left

    def begin(self, refresh: bool) -> tuple:
        return self.core.flight_begin(self.key, self.options.lease, self.waited_round, refresh)

    def wait(self, round_: int, seq: int) -> tuple[bool, Any]:
        """Sleep until a flight of the key's stripe ends, the deadline, or
        one probe slice; then what :meth:`published` finds."""
        if not self.waited:
            self.waited = True
            self.core.count_stat("waits")
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise ComputeTimeout(
                f"waited {self.options.wait_timeout} s for another process to compute {self.key!r}: "
                "raise wait_timeout, or lower the computation's time; the owner keeps its lease"
            )
        self.waited_round = round_
        remaining = None if self.deadline is None else max(self.deadline - time.monotonic(), 0.0)
        self.core.flight_wait(self.key, seq, remaining)
        return self.published()

    def published(self) -> tuple[bool, Any]:
        """After a wake-up: (True, value) if a fresh value is there, read
        lock-free; else (False, None), and the caller begins again under
        the stripe lock.  A publish wakes the whole herd at once: reading
        without the lock spares its waiters queueing on it one by one."""
        found = self._lookup()
        if found is None:
            return False, None
        self.core.count_stat("coalesced")
        return True, self.cache._loads(found[0])

    def served(self, outcome: str, data: bytes, fmt: int, round_: int) -> Any:
        """The value (or the raised error) for outcomes other than compute/wait."""
        if outcome == "failed":
            self.core.count_stat("compute_errors")
            raise _decode_error(data, self.key)
        if outcome == "stale":
            self.core.count_stat("stale_served")
        elif self.waited:
            self.core.count_stat("coalesced")
        if fmt != self.cache._tag:
            raise SerializationError(
                f"the value of {self.key!r} was stored with format {fmt}, this cache reads "
                f"format {self.cache._tag}: open the cache with the serializer that wrote it"
            )
        return self.cache._loads(data)

    def own(self, round_: int, thread_bound: bool = True) -> None:
        """Record the round, to release it at exit (and catch re-entry)."""
        with _owned_lock:
            _owned[(id(self.core), self.key, round_)] = self.core
        if thread_bound:
            _computing().add((id(self.core), self.key))

    def disown(self, round_: int) -> None:
        with _owned_lock:
            _owned.pop((id(self.core), self.key, round_), None)
        _computing().discard((id(self.core), self.key))

    def start(self, round_: int, took_over: bool, thread_bound: bool = True) -> float:
        """Account for a computation this caller starts; return its start time."""
        self.core.count_stat("computes")
        if took_over:
            self.core.count_stat("takeovers")
        if self.refreshing:
            self.core.count_stat("early_refreshes")
        self.own(round_, thread_bound)
        return time.monotonic()

    def call(self, fn: Callable[[], Any]) -> Any:
        """Produce the value this caller computes (a tier fetches it first)."""
        return fn()

    async def acall(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        """:meth:`call` for a coroutine function."""
        return await fn()

    def publish(self, value: Any, round_: int, started: float) -> None:
        data = self.cache._dumps(value)
        delta_ms = int((time.monotonic() - started) * 1000)
        ttl = self.cache._ttl(self.options.ttl)
        self.core.flight_publish(self.key, data, self.cache._tag, ttl, round_, self.options.stale_ttl, delta_ms)

    def fail(self, exc: BaseException, round_: int) -> None:
        if isinstance(exc, Exception):
            self.core.count_stat("compute_errors")
            self.core.flight_abort(self.key, round_, _encode_error(exc), self.options.negative_ttl)
        else:  # KeyboardInterrupt, SystemExit: free the key, share nothing
            self.core.flight_abort(self.key, round_)

    def check_reentry(self) -> None:
        if (id(self.core), self.key) in _computing():
            raise ReentrantCompute(
                f"get_or_compute({self.key!r}) was called while this thread computes that same key: "
                "the computation would wait for itself. Compute the value without the cache, "
                "or use another key"
            )


def get_or_compute(
    cache: Cache, key: Any, fn: Callable[[], Any], options: ComputeOptions, flight_type: type = _Flight
) -> Any:
    """See :meth:`herdcache.Cache.get_or_compute`; ``flight_type`` is a
    :class:`_Flight` subclass that changes how a value is produced and stored
    (the tier's, in ``tier.py``)."""
    flight = flight_type(cache, key, options)
    state, value = flight.fresh_value()
    if state == "hit":
        return value
    flight.refreshing = state == "refresh"
    flight.check_reentry()
    while True:
        outcome, data, fmt, round_, seq, _ttl, _delta, took_over = flight.begin(flight.refreshing)
        if outcome == "compute":
            return _compute(flight, fn, round_, took_over)
        flight.refreshing = False
        if outcome == "wait":
            found, value = flight.wait(round_, seq)
            if found:
                return value
            continue
        return flight.served(outcome, data, fmt, round_)


def _compute(flight: _Flight, fn: Callable[[], Any], round_: int, took_over: bool) -> Any:
    started = flight.start(round_, took_over)
    try:
        value = flight.call(fn)
        flight.publish(value, round_, started)
    except BaseException as exc:
        flight.fail(exc, round_)
        raise
    finally:
        flight.disown(round_)
    return value


async def aget_or_compute(
    cache: Cache, key: Any, fn: Callable[[], Awaitable[Any]], options: ComputeOptions, flight_type: type = _Flight
) -> Any:
    """See :meth:`herdcache.Cache.aget_or_compute`: waits in a worker
    thread (the core sleeps with the GIL released), never in the loop."""
    import asyncio  # here, not at the top: it doubles `import herdcache`

    flight = flight_type(cache, key, options)
    state, value = flight.fresh_value()
    if state == "hit":
        return value
    flight.refreshing = state == "refresh"
    loop = asyncio.get_running_loop()
    while True:
        outcome, data, fmt, round_, seq, _ttl, _delta, took_over = await loop.run_in_executor(
            None, flight.begin, flight.refreshing
        )
        if outcome == "compute":
            return await _acompute(flight, fn, round_, took_over)
        flight.refreshing = False
        if outcome == "wait":
            found, value = await loop.run_in_executor(None, flight.wait, round_, seq)
            if found:
                return value
            continue
        return flight.served(outcome, data, fmt, round_)


async def _acompute(flight: _Flight, fn: Callable[[], Awaitable[Any]], round_: int, took_over: bool) -> Any:
    # Tasks share a thread: re-entry is not tracked per thread here.
    started = flight.start(round_, took_over, thread_bound=False)
    try:
        value = await flight.acall(fn)
        flight.publish(value, round_, started)
    except BaseException as exc:  # includes CancelledError: free the key
        flight.fail(exc, round_)
        raise
    finally:
        flight.disown(round_)
    return value
