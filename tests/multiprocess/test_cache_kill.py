"""A writer SIGKILLed at a random moment, again and again, while readers
read (RELIABILITY scenarios 2 and 4, the issue's acceptance test).

Each round forks a writer that sets, replaces, adds and deletes
self-checking values on a few keys as fast as it can, so that it is
nearly always inside some stripe operation; once it says it has started,
the test waits a random fraction of a millisecond or three (the kill
moment, drawn at random; nothing waits on it) and SIGKILLs it.  Then:

- every key reads as some value a writer stored, or absent, never torn;
- ``check()`` passes: the operations after the kill repaired the stripe
  the writer died in (``stats()['recoveries']`` counts those repairs);
- both readers, which never stop, finish another pass: none is stuck
  behind the dead writer's lock;

and at the end no reader ever saw a bad value.  The default run kills
``HERDCACHE_KILLS`` (200) writers; the stress form 1,000 per cache size
(``HERDCACHE_STRESS_KILLS``).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time

import cache_workers
import pytest
from cache_helpers import HANG, cache_ref, env_number, join_all, start, verify_value, wait_until

from herdcache import Cache

KILLS = int(env_number("HERDCACHE_KILLS", 200))


def kill_loop(kills: int, size: str, seed: int) -> None:
    """Kill ``kills`` writers of a cache of ``size`` under two readers and
    check everything the module docstring promises."""
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(seed)
    with Cache(size=size, serializer="raw") as cache:
        keys = [b"kill-%d" % i for i in range(16)]
        pool = cache_workers.value_pool(keys, per_key=8, largest=60_000, seed=seed)
        ref = cache_ref(cache, ctx)
        stop, results = ctx.Event(), ctx.Queue()
        passes = [ctx.Value("Q", 0, lock=False) for _ in range(2)]
        readers = [start(ctx, cache_workers.looping_reader, ref, keys, count, stop, results) for count in passes]
        recoveries = cache.stats()["recoveries"]
        try:
            for _ in range(kills):
                ours, theirs = ctx.Pipe(duplex=False)
                writer = start(ctx, cache_workers.doomed_writer, ref, pool, rng.randrange(2**32), theirs)
                theirs.close()
                assert ours.poll(HANG) and ours.recv() == "started", "the writer never started"
                time.sleep(rng.uniform(0, 0.003))  # the random kill moment
                os.kill(writer.pid, signal.SIGKILL)
                writer.join(HANG)
                assert writer.exitcode == -signal.SIGKILL
                ours.close()
                for key in keys:
                    value = cache.get(key)
                    assert value is None or verify_value(key, value), f"{key!r} is torn after a kill"
                cache.check()
                marks = [count.value for count in passes]
                wait_until(
                    lambda: all(count.value > mark + 1 for count, mark in zip(passes, marks)),
                    "both readers finished a pass after the kill",
                )
        finally:
            stop.set()
        outcomes = [results.get(timeout=HANG) for _ in readers]
        join_all(readers)
        for reads, hits, bad, examples in outcomes:
            assert bad == 0, f"{bad} bad reads of {reads}, e.g. {examples}"
            assert hits > 0
        repaired = cache.stats()["recoveries"] - recoveries
        assert repaired > 0, f"none of {kills} kills landed inside a stripe operation"
        cache.check()


@pytest.mark.parametrize(("size", "kills"), [("16MiB", KILLS), ("1MiB", KILLS // 2)])
def test_a_killed_writer_never_tears_wedges_or_breaks_the_cache(size: str, kills: int) -> None:
    """Writers killed mid-operation (HERDCACHE_KILLS of them in a cache of
    several stripes, half as many in a tiny one that evicts all the time):
    no torn value, no hung reader, check() passes after each kill, and some
    kills needed repair."""
    kill_loop(kills, size, seed=1)


@pytest.mark.stress
@pytest.mark.timeout(0)
@pytest.mark.parametrize("size", ["1MiB", "16MiB"])
def test_a_thousand_killed_writers(size: str) -> None:
    """The long form: 1,000 kills (HERDCACHE_STRESS_KILLS) per cache size."""
    kill_loop(int(env_number("HERDCACHE_STRESS_KILLS", 1000)), size, seed=2)
