"""Torn reads (RELIABILITY scenario 18): readers racing writers never get a
value that is not exactly one some writer stored.

Writers set, replace, add and delete self-checking values (a sequence
number, filler, and a keyed digest of both) of 16 bytes to 20 KB on a
few keys, so blocks are freed and reused all the time; readers get (or
lookup) those keys in a loop and verify every value.  A tiny cache (one
stripe, constant eviction) makes reuse of the block a reader is copying as
likely as it can be.

The default run reads 100,000 values per reader; the stress form runs
for ``HERDCACHE_STRESS_SECONDS`` (60) with four writers and four readers.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.context import BaseContext

import cache_workers
import pytest
from cache_helpers import CONTEXTS, HANG, cache_ref, env_number, join_all, open_for, start

from herdcache import Cache

#: Reads per reader in the default run.
READS = int(env_number("HERDCACHE_TORN_READS", 100_000))


def race(ctx: BaseContext, cache: Cache, writers: int, readers: int, reads: int, seconds: float) -> None:
    """Run writers against readers (half using lookup()) and assert that no
    reader saw a bad value, that they saw values at all, and that the table
    is sound afterwards."""
    keys = [b"torn-%d" % i for i in range(32)]
    ref = cache_ref(cache, ctx, serializer="raw")
    stop, results = ctx.Event(), ctx.Queue()
    started = [ctx.Event() for _ in range(writers)]
    writing = [
        start(ctx, cache_workers.checked_writer, ref, keys, seed, 20_000, stop, started[seed])
        for seed in range(writers)
    ]
    for event in started:
        assert event.wait(HANG), "a writer never started"
    reading = [
        start(ctx, cache_workers.checked_reader, ref, keys, reads, seconds, i % 2 == 1, results)
        for i in range(readers)
    ]
    outcomes = [results.get(timeout=HANG + seconds) for _ in reading]
    stop.set()
    join_all(writing + reading, timeout=HANG + seconds)
    for done, hits, bad, examples in outcomes:
        assert bad == 0, f"{bad} bad reads of {done}, e.g. {examples}"
        assert hits > 0 and done >= min(reads, 1)
    cache.check()


@pytest.mark.parametrize("size", ["1MiB", "16MiB"])
@pytest.mark.parametrize("start_method", CONTEXTS)
def test_readers_never_see_a_torn_value(start_method: str, size: str, segment_name: str) -> None:
    """Two writers, two readers (one with get, one with lookup): zero bad reads."""
    ctx = multiprocessing.get_context(start_method)
    with open_for(ctx, segment_name, size=size, serializer="raw") as cache:
        race(ctx, cache, writers=2, readers=2, reads=READS, seconds=0.0)


@pytest.mark.stress
@pytest.mark.timeout(0)
@pytest.mark.parametrize("size", ["1MiB", "64MiB"])
def test_readers_never_see_a_torn_value_soak(size: str) -> None:
    """Scenario 18's soak: four writers, four readers, for
    HERDCACHE_STRESS_SECONDS (default 60) per cache size: zero bad reads."""
    ctx = multiprocessing.get_context("fork")
    seconds = env_number("HERDCACHE_STRESS_SECONDS", 60)
    with Cache(size=size, serializer="raw") as cache:
        race(ctx, cache, writers=4, readers=4, reads=0, seconds=seconds)
