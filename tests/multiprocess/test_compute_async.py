"""aget_or_compute: single flight for asyncio code.

What users rely on: while a coroutine waits for another process's
computation, the event loop keeps running its other tasks; tasks of one
loop and other processes asking for one key compute it once; cancelling
the task that computes frees the key at once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

import pytest
from _flightkit import FLIGHT_STATS, computations, moved, stat, stats
from helpers import HANG

pytest_plugins = ["_flight_fixtures"]  # start_method, flight_cache, troupe

LONG_LEASE = 3600.0


async def until_async(predicate: Callable[[], bool], what: str) -> None:
    """Poll without blocking the loop, at most HANG seconds, else fail
    saying what was awaited."""
    deadline = time.monotonic() + HANG
    while not predicate():
        assert time.monotonic() < deadline, f"gave up after {HANG:.0f} s waiting until {what}"
        await asyncio.sleep(0.001)


def test_waiting_for_another_process_does_not_block_the_event_loop(troupe, flight_cache) -> None:
    """A task waits for a computation in another process; the computation
    is released by a second task of the same loop once the first is known
    to wait, which can only happen if waiting leaves the loop free (else
    the test hangs)."""
    key = "feed:remote"
    herd = troupe(key, ttl=60)
    (owner,) = herd.start(1)
    herd.next_computer()
    waits = stat(flight_cache, "waits")
    ticks = 0

    async def never() -> str:
        raise AssertionError("the waiting task computed")

    async def release_when_waited() -> None:
        nonlocal ticks
        await until_async(lambda: stat(flight_cache, "waits") > waits, "the task waits for the other process")
        for _ in range(10):  # the loop keeps turning while the wait goes on
            ticks += 1
            await asyncio.sleep(0)
        owner.order("return", "from another process")

    async def main() -> str:
        value, _ = await asyncio.gather(flight_cache.aget_or_compute(key, never, ttl=60), release_when_waited())
        return value

    assert asyncio.run(main()) == "from another process"
    assert ticks == 10
    assert herd.finish() == {owner: ("value", "from another process")}
    assert computations(flight_cache).load() == 1


def test_tasks_of_one_loop_and_another_process_compute_once(troupe, flight_cache) -> None:
    """Eight tasks of one loop and one other process miss a key together:
    one task computes (after everyone else waits), all get its value."""
    key = "feed:shared"
    herd = troupe(key, ttl=60)
    before = stats(flight_cache, *FLIGHT_STATS)
    calls = []

    async def main() -> list:
        release = asyncio.Event()

        async def compute() -> str:
            calls.append(1)
            await release.wait()
            return "computed in a task"

        tasks = [asyncio.create_task(flight_cache.aget_or_compute(key, compute, ttl=60)) for _ in range(8)]
        await until_async(lambda: bool(calls), "the computation started")
        herd.start(1)
        await until_async(lambda: stat(flight_cache, "waits") - before["waits"] == 8, "7 other tasks and the process wait")
        release.set()
        return await asyncio.gather(*tasks)

    assert asyncio.run(main()) == ["computed in a task"] * 8
    assert set(herd.finish().values()) == {("value", "computed in a task")}
    assert len(calls) == 1
    assert computations(flight_cache).load() == 0  # no puppet computed
    assert moved(before, flight_cache) == {"computes": 1, "waits": 8, "coalesced": 8}


def test_cancelling_the_computing_task_frees_the_key(troupe, flight_cache) -> None:
    """Cancel the task that computes (lease: an hour): the waiting process
    computes at once, a fresh round rather than a takeover."""
    key = "feed:cancelled"
    herd = troupe(key, ttl=60, lease=LONG_LEASE)
    before = stats(flight_cache, *FLIGHT_STATS)

    async def main() -> None:
        started = asyncio.Event()

        async def compute() -> str:
            started.set()
            await asyncio.Event().wait()  # never set: only cancellation ends it
            return "unreachable"

        task = asyncio.create_task(flight_cache.aget_or_compute(key, compute, ttl=60, lease=LONG_LEASE))
        await asyncio.wait_for(started.wait(), HANG)  # the computing task started
        herd.start(1)
        await until_async(lambda: stat(flight_cache, "waits") - before["waits"] == 1, "the other process waits")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    herd.next_computer().order("return", "after the cancel")
    assert set(herd.finish().values()) == {("value", "after the cancel")}
    assert flight_cache.get(key) == "after the cancel"
    assert moved(before, flight_cache) == {"computes": 2, "waits": 1}
