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
from typing import TYPE_CHECKING, Any, Awaitable, Callable, TypedDict

from .errors import (
    ComputeError,
    ComputeTimeout,
    HerdcacheError,
    InvalidArgument,
    ReentrantCompute,
)
from .serializers import MsgpackSerializer

if TYPE_CHECKING:
    from . import _core
    from .cache import Cache

#: Default seconds a computing process may take before another takes over.
DEFAULT_LEASE = 30.0

_errors_codec = MsgpackSerializer()


class ComputeKwargs(TypedDict, total=False):
    """The keyword options of get_or_compute, aget_or_compute and memoize:
    the fields of :class:`ComputeOptions` other than ``ttl``."""

    stale_ttl: float
    early_refresh: float
    lease: float
    wait_timeout: float | None
    negative_ttl: float


@dataclass(frozen=True)
class ComputeOptions:
    """How one get_or_compute call behaves.

    :param ttl: seconds the computed value lives (None: the cache's
        default_ttl).
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
    """

    ttl: float | None = None
    stale_ttl: float = 0.0
    early_refresh: float = 0.0
    lease: float = DEFAULT_LEASE
    wait_timeout: float | None = None
    negative_ttl: float = 0.0

    def __post_init__(self) -> None:
        if not self.lease > 0:
            raise InvalidArgument(f"lease must be > 0 seconds, got {self.lease!r}")
        # Written as "not in range" so that NaN, which compares False, is refused.
        if not 0 <= self.stale_ttl <= 65535:
            raise InvalidArgument(f"stale_ttl must be 0..65535 seconds, got {self.stale_ttl!r}")
        if not (self.early_refresh >= 0 and self.negative_ttl >= 0):
            raise InvalidArgument("early_refresh and negative_ttl must be >= 0")
        if self.wait_timeout is not None and not self.wait_timeout >= 0:
            raise InvalidArgument(f"wait_timeout must be >= 0 or None, got {self.wait_timeout!r}")


# -- the flights this process owns, released at exit --------------------------

_local = threading.local()
_owned: dict[tuple[int, Any, int], Any] = {}
_owned_lock = threading.Lock()


def _computing() -> set[tuple[int, Any]]:
    keys: set[tuple[int, Any]] | None = getattr(_local, "computing", None)
    if keys is None:
        keys = _local.computing = set()
    return keys


def _release_owned_flights() -> None:
    """At interpreter exit, end every flight this process still owns, so
    waiters elsewhere compute at once instead of waiting for the lease."""
    with _owned_lock:
        owned = list(_owned.items())
        _owned.clear()
    for (_ident, key, round_), cache in owned:
        try:
            cache._flight_abort(key, round_)
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
    exc.remote_traceback = info["traceback"]  # type: ignore[union-attr]
    return exc


# -- the state machine -------------------------------------------------------------


class _Flight:
    """One caller's walk through the flight protocol for one key."""

    def __init__(self, cache: Cache, key: Any, options: ComputeOptions):
        self.cache = cache
        self.key = key
        # The key the table holds (a long key's digest), and the long key.
        self.where, self.raw = cache._where(key)
        self.options = options
        self.deadline = None if options.wait_timeout is None else time.monotonic() + options.wait_timeout
        self.waited_round = 0
        self.waited = False
        self.refreshing = False

    def _lookup(self) -> tuple[bytes, float | None, int] | None:
        """The key's fresh value, read lock-free: (data, ttl_left, delta_ms),
        or None if there is none (absent, expired, in flight, failed, or
        in another format: begin() then reports that under the lock)."""
        found = self.cache._stored(self.where, self.raw)
        if found is None or found[1] != self.cache._tag:
            return None
        data, _fmt, ttl_left, _csn, delta_ms = found
        return data, ttl_left, delta_ms

    def fresh_value(self) -> tuple[bool, Any]:
        """The lock-free fast path: (True, value) on a hit; (False, None) on
        a miss, or when early refresh picked this caller to recompute (then
        :attr:`refreshing` is set)."""
        found = self._lookup()
        if found is None:
            # Counted so that hits / (hits + misses) stays the hit ratio
            # for callers of get_or_compute too (lookup counts nothing).
            self.cache._count_stat("misses")
            return False, None
        data, ttl_left, delta_ms = found
        self.cache._count_stat("hits")
        if self.options.early_refresh and ttl_left is not None and self._xfetch(ttl_left, delta_ms):
            self.refreshing = True
            return False, None
        return True, self.cache._loads(data)

    def _xfetch(self, ttl_left: float, delta_ms: int) -> bool:
        """Probabilistic early expiry (Vattani et al., VLDB 2015): refresh
        now with a probability that grows as expiry nears, scaled by how
        long the value took to compute."""
        delta = max(delta_ms, 1) / 1000.0
        return delta * self.options.early_refresh * -math.log(1.0 - random.random()) >= ttl_left

    def begin(self) -> _core.FlightStart:
        """Under the stripe lock, what this caller does next (flight.h)."""
        return self.cache._flight_begin(self.where, self.options.lease, self.waited_round, self.refreshing)

    def next_step(self, begun: _core.FlightStart) -> tuple[str, Any, Any]:
        """What begin() decided, as ("compute", round, took_over), ("wait",
        round, wait_seq) or ("done", value, None)."""
        outcome, data, fmt, round_, seq, _ttl, _delta, took_over = begun
        if outcome == "compute":
            return "compute", round_, took_over
        self.refreshing = False
        if outcome == "wait":
            return "wait", round_, seq
        return "done", self.served(outcome, data, fmt, round_), None

    def wait(self, round_: int, seq: int) -> tuple[bool, Any]:
        """Sleep until a flight of the key's stripe ends, the deadline, or
        one probe slice; then what :meth:`published` finds."""
        if not self.waited:
            self.waited = True
            self.cache._count_stat("waits")
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise ComputeTimeout(
                f"waited {self.options.wait_timeout} s for another process to compute {self.key!r}: "
                "raise wait_timeout, or lower the computation's time; the owner keeps its lease"
            )
        self.waited_round = round_
        remaining = None if self.deadline is None else max(self.deadline - time.monotonic(), 0.0)
        self.cache._flight_wait(self.where, seq, remaining)
        return self.published()

    def published(self) -> tuple[bool, Any]:
        """After a wake-up: (True, value) if a fresh value is there, read
        lock-free; else (False, None), and the caller begins again under
        the stripe lock.  A publish wakes the whole herd at once: reading
        without the lock spares its waiters queueing on it one by one."""
        found = self._lookup()
        if found is None:
            return False, None
        self.cache._count_stat("coalesced")
        return True, self.cache._loads(found[0])

    def served(self, outcome: str, data: bytes | None, fmt: int, round_: int) -> Any:
        """The value (or the raised error) for outcomes other than compute/wait."""
        assert data is not None, f"flight outcome {outcome} comes with data"
        if outcome == "failed":
            self.cache._count_stat("compute_errors")
            raise _decode_error(data, self.key)
        if outcome == "stale":
            self.cache._count_stat("stale_served")
        elif self.waited:
            self.cache._count_stat("coalesced")
        sealed = self.cache._unseal(self.raw, data, fmt)
        if sealed is None:
            raise ComputeError(f"the stored value of {self.key!r} belongs to another long key with its digest")
        return self.cache._decode(self.key, *sealed)

    def own(self, round_: int, thread_bound: bool = True) -> None:
        """Record the round, to release it at exit (and catch re-entry)."""
        with _owned_lock:
            _owned[(id(self.cache), self.where, round_)] = self.cache
        if thread_bound:
            _computing().add((id(self.cache), self.where))

    def disown(self, round_: int) -> None:
        with _owned_lock:
            _owned.pop((id(self.cache), self.where, round_), None)
        _computing().discard((id(self.cache), self.where))

    def start(self, round_: int, took_over: bool, thread_bound: bool = True) -> float:
        """Account for a computation this caller starts; return its start time."""
        self.cache._count_stat("computes")
        if took_over:
            self.cache._count_stat("takeovers")
        if self.refreshing:
            self.cache._count_stat("early_refreshes")
        self.own(round_, thread_bound)
        return time.monotonic()

    def call(self, fn: Callable[[], Any]) -> Any:
        """Produce the value this caller computes (a tier fetches it first)."""
        return fn()

    async def acall(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        """:meth:`call` for a coroutine function."""
        return await fn()

    def publish(self, value: Any, round_: int, started: float) -> None:
        data, fmt = self.cache._seal(self.raw, self.cache._dumps(value))
        delta_ms = int((time.monotonic() - started) * 1000)
        ttl = self.cache._ttl(self.options.ttl)
        self.cache._flight_publish(self.where, data, fmt, ttl, round_, self.options.stale_ttl, delta_ms)
        self.cache._count_stat("sets")  # a stored value, as set() counts one

    async def apublish(self, value: Any, round_: int, started: float) -> None:
        """:meth:`publish` from a coroutine (a tier's does Redis calls)."""
        self.publish(value, round_, started)

    def fail(self, exc: BaseException, round_: int) -> None:
        if isinstance(exc, Exception):
            self.cache._count_stat("compute_errors")
            self.cache._flight_abort(self.where, round_, _encode_error(exc), self.options.negative_ttl)
        else:  # KeyboardInterrupt, SystemExit: free the key, share nothing
            self.cache._flight_abort(self.where, round_)

    def check_reentry(self) -> None:
        if (id(self.cache), self.where) in _computing():
            raise ReentrantCompute(
                f"get_or_compute({self.key!r}) was called while this thread computes that same key: "
                "the computation would wait for itself. Compute the value without the cache, "
                "or use another key"
            )


def get_or_compute(
    cache: Cache, key: Any, fn: Callable[[], Any], options: ComputeOptions, flight_type: type[_Flight] | None = None
) -> Any:
    """See :meth:`herdcache.Cache.get_or_compute`; ``flight_type`` is a
    :class:`_Flight` subclass that changes how a value is produced and stored
    (the tier's, in ``tier.py``)."""
    flight = (flight_type or _Flight)(cache, key, options)
    found, value = flight.fresh_value()
    if found:
        return value
    flight.check_reentry()
    # This loop and aget_or_compute's stay parallel on purpose: the same
    # steps (_Flight does each), but there every one that may block runs in
    # a worker thread or is awaited.
    while True:
        step, first, second = flight.next_step(flight.begin())
        if step == "done":
            return first
        if step == "compute":
            return _compute(flight, fn, first, second)
        found, value = flight.wait(first, second)
        if found:
            return value


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
    cache: Cache,
    key: Any,
    fn: Callable[[], Awaitable[Any]],
    options: ComputeOptions,
    flight_type: type[_Flight] | None = None,
) -> Any:
    """See :meth:`herdcache.Cache.aget_or_compute`: waits in a worker
    thread (the core sleeps with the GIL released), never in the loop.
    Everything else runs in the loop's thread: a hit, and the begin step,
    which holds a stripe lock for a lookup and a store (as a set does)."""
    import asyncio  # here, not at the top: it doubles `import herdcache`

    flight = (flight_type or _Flight)(cache, key, options)
    found, value = flight.fresh_value()
    if found:
        return value
    loop = asyncio.get_running_loop()
    while True:  # parallel to get_or_compute's loop (see there)
        # begin() is one stripe-locked step, as a set is: it runs in the
        # loop's thread; only the wait for another process goes to a thread.
        step, first, second = flight.next_step(flight.begin())
        if step == "done":
            return first
        if step == "compute":
            return await _acompute(flight, fn, first, second)
        found, value = await loop.run_in_executor(None, flight.wait, first, second)
        if found:
            return value


async def _acompute(flight: _Flight, fn: Callable[[], Awaitable[Any]], round_: int, took_over: bool) -> Any:
    # Tasks share a thread: re-entry is not tracked per thread here.
    started = flight.start(round_, took_over, thread_bound=False)
    try:
        value = await flight.acall(fn)
        await flight.apublish(value, round_, started)
    except BaseException as exc:  # includes CancelledError: free the key
        flight.fail(exc, round_)
        raise
    finally:
        flight.disown(round_)
    return value
