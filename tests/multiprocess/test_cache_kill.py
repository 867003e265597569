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
- every reader, which never stops, finishes another pass: none is stuck
  behind the dead writer's lock;

and at the end no reader ever saw a bad value.  Killed readers, for
their part, must cost nothing at all.  The default run kills
``HERDCACHE_KILLS`` (200) writers under two readers; the long form
(``-m stress``) kills 1,000 per cache size (``HERDCACHE_STRESS_KILLS``)
under eight (READERS, the bound of RELIABILITY scenario 4), which the
default run cannot afford: every kill waits for each reader's next pass,
and eight readers on two cores made 200 kills take 65 s instead of 11 s.
"""

from __future__ import annotations

import multiprocessing
import random
import time

import cache_workers
import pytest
from cache_helpers import cache_ref, env_number, verify_value
from cache_scenarios import SOAK_SIZES, kill_loop
from helpers import HANG, join_all, kill, start, wait_until

from herdcache import Cache

KILLS = int(env_number("HERDCACHE_KILLS", 200))

#: Readers of the default run's kill loops (see the module docstring).
QUICK_READERS = 2


@pytest.mark.parametrize(("size", "kills"), [("16MiB", KILLS), ("1MiB", KILLS // 2)])
def test_a_killed_writer_never_tears_wedges_or_breaks_the_cache(size: str, kills: int) -> None:
    """Writers killed mid-operation (HERDCACHE_KILLS of them in a cache of
    several stripes, half as many in a tiny one that evicts all the time):
    no torn value, no hung reader, check() passes after each kill, and some
    kills needed repair."""
    kill_loop(kills, size, seed=1, readers=QUICK_READERS)


def test_a_writer_killed_while_s3fifo_evicts_leaves_a_working_cache() -> None:
    """The same with S3-FIFO in a 1 MiB cache, which evicts on nearly every
    set, so kills land between its moves (small to main, main's
    reinsertions, the ghost): no torn value, no hung reader, check() (which
    checks both halves of the queue and small's size) passes after each
    kill.  test_inject.c kills at each of those moves exactly."""
    kill_loop(KILLS // 2, "1MiB", seed=4, eviction="s3fifo", readers=QUICK_READERS)


@pytest.mark.stress
@pytest.mark.timeout(0)
@pytest.mark.parametrize("size", SOAK_SIZES)
def test_a_thousand_killed_writers(size: str) -> None:
    """HERDCACHE_STRESS_KILLS (1,000) killed writers under eight readers: no
    torn value, no hung reader, check() passes after each kill."""
    kill_loop(int(env_number("HERDCACHE_STRESS_KILLS", 1000)), size, seed=2)


def test_a_killed_reader_costs_nothing() -> None:
    """Readers SIGKILLed at random moments, 50 times, while a writer writes
    (RELIABILITY: "a reader death has zero effect"): the writer keeps
    writing, every key reads whole, and check() passes after each kill."""
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(3)
    with Cache(size="1MiB", serializer="raw") as cache:
        keys = [b"read-kill-%d" % i for i in range(16)]
        ref = cache_ref(cache, ctx)
        stop, started = ctx.Event(), ctx.Event()
        writer = start(ctx, cache_workers.checked_writer, ref, keys, 7, 60_000, stop, started)
        assert started.wait(HANG), "the writer never started"
        try:
            for _ in range(50):
                passes = ctx.Value("Q", 0, lock=False)
                reader = start(ctx, cache_workers.looping_reader, ref, keys, passes, ctx.Event(), ctx.Queue())
                wait_until(lambda passes=passes: passes.value > 0, "the reader read")
                time.sleep(rng.uniform(0, 0.002))  # the random kill moment
                kill(reader)
                sets = cache.stats()["sets"]
                wait_until(lambda sets=sets: cache.stats()["sets"] > sets, "the writer wrote after the kill")
                for key in keys:
                    value = cache.get(key)
                    assert value is None or verify_value(key, value)
                cache.check()
        finally:
            stop.set()
        join_all([writer])
