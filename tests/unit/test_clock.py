"""herdcache.clock: a test can expire entries by advancing this process's
cache clock; the clock is off by default, only moves forward, and other
processes keep the real one."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from typing import Any, Callable

import _clock_scenarios as scenarios
import pytest

import herdcache

#: A liveness bound for the child, not a latency assertion.
HANG = 60


def in_fresh_process(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` run in a new spawned process (whose clock we may skew)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply_async(fn, args).get(timeout=HANG)


@pytest.fixture
def cache(segdir: str) -> Iterator[herdcache.Cache]:
    with herdcache.Cache("clocked", "4MiB", dir=segdir) as opened:
        yield opened


def test_the_clock_is_off_by_default() -> None:
    assert in_fresh_process(scenarios.skew_at_start) == 0.0


def test_advancing_expires_entries_and_other_processes_keep_the_real_clock(cache: herdcache.Cache, segdir: str) -> None:
    seen = in_fresh_process(scenarios.expire_by_advancing, "clocked", segdir)
    assert seen["before"] == (1, 1)  # 1 s left after 299 of 300
    assert (seen["after"], seen["in"], seen["keys"], seen["len"]) == (None, False, ["forever", "from-child"], 2)
    assert seen["forever"] == 2 and seen["skew"] == 301.0
    # This process keeps the real clock: what the child stored for 10 s
    # lives 301 s longer here.
    assert herdcache.clock.skew() == 0.0
    assert cache.get("from-child") == 3 and 300 < cache.ttl("from-child") <= 311


def test_get_or_compute_recomputes_once_the_clock_passes_the_ttl(cache: herdcache.Cache, segdir: str) -> None:
    assert in_fresh_process(scenarios.recompute_after_advancing, "clocked", segdir) == [1, 1, 2, 2]


def test_the_clock_never_goes_back() -> None:
    refused = in_fresh_process(scenarios.refuse_going_back)
    assert len(refused) == 4
    assert all("only moves forward" in message for message in refused)
