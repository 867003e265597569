"""Bodies of the clock tests.  Each runs in a fresh spawned process (see
test_clock.py), because advancing the clock is for good in a process: the
pytest process must keep the real clock for every other test."""

from __future__ import annotations

from typing import Any

import herdcache
from herdcache import clock
from herdcache.errors import InvalidArgument


def skew_at_start() -> float:
    return clock.skew()


def expire_by_advancing(name: str, dir: str) -> dict[str, Any]:
    """Store with ttls, advance past one of them, report what is left."""
    cache = herdcache.Cache(name, dir=dir)
    cache.set("short", 1, ttl=300)
    cache.set("forever", 2, ttl=herdcache.FOREVER)
    clock.advance(299)
    before = (cache.get("short"), round(cache.ttl("short")))
    clock.advance(2)
    cache.set("from-child", 3, ttl=10)  # stamped with the skewed clock
    return {
        "before": before,
        "after": cache.get("short"),
        "in": "short" in cache,
        "keys": sorted(cache.keys()),
        "len": len(cache),
        "forever": cache.get("forever"),
        "skew": clock.skew(),
    }


def recompute_after_advancing(name: str, dir: str) -> list[Any]:
    """get_or_compute recomputes once the clock passes the value's ttl."""
    cache = herdcache.Cache(name, dir=dir)
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        return len(calls)

    first = cache.get_or_compute("k", compute, ttl=60)
    again = cache.get_or_compute("k", compute, ttl=60)
    clock.advance(61)
    later = cache.get_or_compute("k", compute, ttl=60)
    return [first, again, later, len(calls)]


def refuse_going_back() -> list[str]:
    """Negative, NaN and infinite advances are refused; the skew stays."""
    refused = []
    clock.advance(5)
    for bad in (-1, float("nan"), float("inf"), "10"):
        try:
            clock.advance(bad)  # type: ignore[arg-type]
        except InvalidArgument as exc:
            refused.append(str(exc))
    assert clock.skew() == 5.0
    return refused
