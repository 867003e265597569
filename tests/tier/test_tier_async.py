"""The tier on asyncio: aget/aset/adelete/aget_or_compute talk to Redis
through ``redis.asyncio`` (the same steps, timeouts, breaker and fencing
as the sync methods), and a wait for another host's computation, or a
Redis call to a stopped server, leaves the event loop free."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio
from _fleet import HANG, Fleet, until

import herdcache
from herdcache.errors import RemoteUnavailable


async def poll(predicate, what: str) -> None:
    """Await until ``predicate()`` holds, yielding to the loop between looks."""
    deadline = time.monotonic() + HANG
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {HANG} s for {what}")
        await asyncio.sleep(0.001)


def test_async_reads_and_writes_go_through_redis_asyncio(open_host, redis_server) -> None:
    """The client the user passes as ``aremote`` is the model of the
    tier's own asyncio connections (its name shows in CLIENT LIST); other
    hosts see async writes as they see sync ones."""
    aremote = redis.asyncio.Redis(unix_socket_path=redis_server.socket, client_name="hc-async-side")
    a = open_host("a", redis_server, aremote=aremote)
    b = open_host("b", redis_server)

    async def writes() -> None:
        await a.aset("k", {"v": 1}, ttl=60)
        assert await a.aget("k") == {"v": 1}
        assert await b.aget("k") == {"v": 1}  # b's L1 miss, through Redis
        await a.aset("k", {"v": 2}, ttl=60)

    asyncio.run(writes())
    names = {c.get("name") for c in redis_server.client().client_list()}
    assert "hc-async-side" in names, names
    until(lambda: b.get("k") == {"v": 2}, "b to see a's async write")
    # A second event loop gets clients of its own (asyncio connections
    # belong to the loop that made them).
    assert asyncio.run(a.adelete("k")) is True
    until(lambda: asyncio.run(b.aget("k", "gone")) == "gone", "b to hear of a's async delete")
    assert asyncio.run(a.adelete("k")) is False


def test_waiting_for_another_hosts_computation_leaves_the_loop_free(open_host, redis_server, segdir, prefix) -> None:
    """While this host's aget_or_compute waits for the process of another
    host that computes the key, another coroutine of the same loop runs:
    it is the one that tells that process to finish."""
    fleet = Fleet(1, 1, segdir, prefix, redis_server.socket)
    try:
        fleet.all_tracking()
        other = fleet.workers[0]
        other.send("herd", "slow", {"ttl": 60})
        assert other.receive()[0] == "computing"
        here = open_host("here", redis_server)

        async def never() -> str:
            raise AssertionError("the other host computes this key")

        async def main() -> str:
            waits = here.stats()["waits"]
            task = asyncio.create_task(here.aget_or_compute("slow", never, ttl=60, wait_timeout=HANG / 3))
            await poll(lambda: here.stats()["waits"] > waits, "aget_or_compute to wait for the other host")
            other.send("return", "computed there")
            return await task

        assert asyncio.run(main()) == "computed there"
        assert other.receive() == ("value", "computed there")
    finally:
        fleet.stop()


def test_a_stopped_server_fails_async_calls_clearly_without_blocking_the_loop(open_host, own_redis) -> None:
    cache = open_host("a", own_redis, timeout=0.25)
    asyncio.run(cache.aset("before", 1))
    own_redis.pause()
    try:

        async def main() -> int:
            task = asyncio.create_task(cache.aget("missing"))
            ticks = 0
            while not task.done():  # runs while the task waits on Redis
                ticks += 1
                await asyncio.sleep(0.001)
            with pytest.raises(RemoteUnavailable, match="did not answer within 0.25 s"):
                await task
            # The failure tripped the host's breaker, as a sync call's does.
            assert cache._remote._pause.load() > 0
            with pytest.raises(RemoteUnavailable):
                await cache.aset("k", 1)
            return ticks

        assert asyncio.run(main()) > 1
    finally:
        own_redis.resume()
    until(lambda: succeeds_async(cache), "an async write to go through after the server came back")
    assert asyncio.run(cache.aget("before")) == 1


def succeeds_async(cache: herdcache.TieredCache) -> bool:
    try:
        asyncio.run(cache.aset("after", 1))
        return True
    except RemoteUnavailable:
        return False
