"""One cache, many processes: what one process stores the others read,
concurrent writers leave a consistent table, expiry and statistics are
shared, incr is atomic across processes, and eviction under concurrent
writers never hands anyone a damaged value.

Each test runs under fork (an anonymous cache the children inherit) and
spawn (a named cache the children attach).  Processes meet at Barriers and
talk through pipes; nobody sleeps to wait for anybody.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from multiprocessing.context import BaseContext

import cache_workers
import pytest
from cache_helpers import cache_ref, open_for, verify_value
from helpers import CONTEXTS, HANG, join_all, receive, start, wait_until

from herdcache import Cache


@pytest.fixture(params=CONTEXTS)
def ctx(request: pytest.FixtureRequest) -> BaseContext:
    """A multiprocessing context for each start method under test."""
    return multiprocessing.get_context(request.param)


@pytest.fixture
def cache(ctx: BaseContext, segment_name: str) -> Iterator[Cache]:
    """A msgpack cache the children of ``ctx`` can reach."""
    opened = open_for(ctx, segment_name)
    yield opened
    opened.close()


def test_a_value_stored_in_one_process_is_read_in_another(ctx: BaseContext, cache: Cache) -> None:
    """The parent's value reaches the child and the child's the parent, types intact."""
    cache["from-parent"] = {"nested": [1, (2, b"3")]}
    ours, theirs = ctx.Pipe()
    child = start(ctx, cache_workers.read_then_write, cache_ref(cache, ctx), theirs)
    assert receive(ours) == {"nested": [1, (2, b"3")]}
    assert receive(ours) == "stored"
    join_all([child])
    assert cache["from-child"] == {"pid-known": True, "tuple": (1, 2)}


def test_concurrent_writers_leave_a_consistent_table(ctx: BaseContext, cache: Cache) -> None:
    """Four processes writing their own keys and fifty shared ones at once:
    afterwards every own key holds what its writer stored (or is gone if it
    deleted it), every shared key holds a value some writer stored, len()
    counts exactly those, check() passes and each writer's statistics are
    listed under its pid."""
    nprocs, rounds = 4, 400
    barrier = ctx.Barrier(nprocs)
    pipes = [ctx.Pipe() for _ in range(nprocs)]
    children = [
        start(ctx, cache_workers.disjoint_and_shared, cache_ref(cache, ctx), i, nprocs, rounds, barrier, pipes[i][1])
        for i in range(nprocs)
    ]
    deleted = [set(receive(pipes[i][0])) for i in range(nprocs)]  # type: ignore[arg-type]
    join_all(children)
    for i in range(nprocs):
        for j in range(rounds):
            assert cache.get(f"p{i}-{j}") == (None if j in deleted[i] else (i, j))
    for k in range(50):
        writer, seq = cache[f"s{k}"]
        assert 0 <= writer < nprocs and seq % 50 == k
    own = nprocs * rounds - sum(map(len, deleted))
    assert len(cache) == own + 50
    cache.check()
    stats = cache.stats()
    by_pid = {entry["pid"]: entry for entry in stats["per_process"]}
    for child in children:
        assert by_pid[child.pid]["sets"] == 2 * rounds
    assert stats["sets"] >= nprocs * 2 * rounds


def test_expiry_is_the_same_for_every_process(ctx: BaseContext, cache: Cache) -> None:
    """A ttl set in one process is the ttl every process sees, a key set to
    expire in a child expires for the parent, and a touch in the child
    changes the parent's key."""
    cache.set("timed", 1, ttl=100)
    ours, theirs = ctx.Pipe()
    child = start(ctx, cache_workers.ttl_child, cache_ref(cache, ctx), theirs)
    assert 0 < receive(ours) <= 100  # type: ignore[operator]
    assert receive(ours) == "stored"
    wait_until(lambda: "short" not in cache, "the child's short-lived key expired")
    ours.send("touch")
    assert receive(ours) is True
    join_all([child])
    assert cache.ttl("timed") is None


def test_incr_is_atomic_across_processes(ctx: BaseContext, cache: Cache) -> None:
    """Increments from four processes at once are none of them lost."""
    nprocs, times = 4, 200
    cache["counter"] = 0
    barrier = ctx.Barrier(nprocs)
    children = [start(ctx, cache_workers.incr_many, cache_ref(cache, ctx), times, barrier) for _ in range(nprocs)]
    join_all(children)
    assert cache["counter"] == nprocs * times


def test_eviction_under_concurrent_writers(ctx: BaseContext, segment_name: str) -> None:
    """Three processes overfill a small cache with self-checking values of
    sizes up to 64 KB: no set fails, every value anyone reads verifies,
    entries were evicted, and the table's invariants hold."""
    with open_for(ctx, segment_name, size="4MiB", serializer="raw") as cache:
        keys = [b"key-%d" % i for i in range(2000)]
        stop, results = ctx.Event(), ctx.Queue()
        ref = cache_ref(cache, ctx, serializer="raw")
        started = [ctx.Event() for _ in range(3)]
        writers = [
            start(ctx, cache_workers.checked_writer, ref, keys, seed, 64_000, stop, started[seed])
            for seed in range(3)
        ]
        for event in started:
            assert event.wait(HANG), "a writer never started"
        reader = start(ctx, cache_workers.checked_reader, ref, keys, 20_000, 0.0, False, results)
        _reads, hits, bad, examples = results.get(timeout=HANG)
        stop.set()
        join_all(writers + [reader])
        assert bad == 0, f"{bad} bad reads, e.g. {examples}"
        assert hits > 0
        for key in keys:
            value = cache.get(key)
            assert value is None or verify_value(key, value)
        assert cache.stats()["evictions"] > 0
        cache.check()
