"""A clock for tests: make entries expire without waiting.

::

    cache.set("session", data, ttl=300)
    herdcache.clock.advance(301)      # this process's cache clock jumps ahead
    assert cache.get("session") is None

Expiry follows ``CLOCK_MONOTONIC`` (the wall clock, and so freezegun's
fake ``time.time()``, never moves it).  :func:`advance` adds a skew to
the clock that expiries, leases and stale windows are stamped with and
compared against, in this process only:

- off by default: the skew is 0 until a test advances it;
- monotonic: it only moves forward, so nothing that expired comes back;
- process-local: other processes keep the real clock.  A value this
  process stores lives that much longer for them, and a computation
  another process has in flight looks overdue here once the skew passes
  its lease.  What this process finds expired it may also remove (reads
  reclaim expired entries), for every process.  Forked children inherit
  the skew, as they inherit memory.

With freezegun, advance both clocks together::

    with freezegun.freeze_time() as frozen:
        frozen.tick(301)
        herdcache.clock.advance(301)

Waits (locks, queues, ``wait_timeout``) keep real time: a test cannot
make a sleeping process wake early.
"""

from __future__ import annotations

import math
import time

from . import _core
from .errors import InvalidArgument

__all__ = ["advance", "now", "skew"]


def advance(seconds: float) -> None:
    """Move this process's cache clock ``seconds`` forward (a test helper).

    :raises InvalidArgument: ``seconds`` is negative, NaN or infinite (the
        clock never goes back).
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
        raise InvalidArgument(
            f"advance() takes a finite number of seconds >= 0, got {seconds!r}: the cache clock only moves forward"
        )
    _core.clock_advance(int(seconds * 1e9))


def skew() -> float:
    """Seconds this process's cache clock is ahead of the monotonic clock."""
    return float(_core.clock_skew()) / 1e9


def now() -> float:
    """The cache clock in this process, in seconds: ``time.monotonic()``
    plus :func:`skew`."""
    return time.monotonic() + skew()
