"""The long scenarios of the cache tests, run short by default and long
with ``-m stress`` (both forms in tests/multiprocess), or without pytest
(:func:`main`): writers racing readers of self-checking values, and
writers killed at random moments.

Both are driven from the parent; the children's bodies are in
:mod:`cache_workers`.  See the test modules for what each promises.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from multiprocessing.context import BaseContext

import cache_workers
from cache_helpers import cache_ref, verify_value
from helpers import HANG, join_all, start, wait_until

from herdcache import Cache

#: Concurrent reader processes of the torn-read and kill tests: the bound of
#: RELIABILITY scenario 4 (a writer's death under 8 readers).
READERS = 8


def race(
    ctx: BaseContext, cache: Cache, writers: int, readers: int, reads: int, seconds: float, deletes: float = 0.1
) -> None:
    """Run writers (``deletes``: the fraction of their operations that
    delete) against readers (half using lookup()) and assert that no reader
    saw a bad value, that they saw values at all, and that the table is
    sound afterwards."""
    keys = [b"torn-%d" % i for i in range(32)]
    ref = cache_ref(cache, ctx, serializer="raw")
    stop, results = ctx.Event(), ctx.Queue()
    started = [ctx.Event() for _ in range(writers)]
    writing = [
        start(ctx, cache_workers.checked_writer, ref, keys, seed, 20_000, stop, started[seed], deletes)
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


def kill_loop(kills: int, size: str, seed: int, eviction: str = "sieve", readers: int = READERS) -> None:
    """Kill ``kills`` writers of a cache of ``size`` under ``readers``
    readers and check everything the module docstring promises."""
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(seed)
    with Cache(size=size, serializer="raw", eviction=eviction) as cache:
        keys = [b"kill-%d" % i for i in range(16)]
        pool = cache_workers.value_pool(keys, per_key=8, largest=60_000, seed=seed)
        ref = cache_ref(cache, ctx)
        stop, results = ctx.Event(), ctx.Queue()
        passes = [ctx.Value("Q", 0, lock=False) for _ in range(readers)]
        reading = [start(ctx, cache_workers.looping_reader, ref, keys, count, stop, results) for count in passes]
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
                    lambda marks=marks: all(count.value > mark + 1 for count, mark in zip(passes, marks)),
                    "every reader finished a pass after the kill",
                    seen=lambda marks=marks: f"passes {[count.value for count in passes]}, before the kill {marks}",
                )
        finally:
            stop.set()
        outcomes = [results.get(timeout=HANG) for _ in reading]
        join_all(reading)
        for reads, hits, bad, examples in outcomes:
            assert bad == 0, f"{bad} bad reads of {reads}, e.g. {examples}"
            assert hits > 0
        repaired = cache.stats()["recoveries"] - recoveries
        assert repaired > 0, f"none of {kills} kills landed inside a stripe operation"
        cache.check()


#: Cache sizes of the long runs: one stripe that evicts all the time, and
#: many stripes.
SOAK_SIZES = ["1MiB", "64MiB"]


def soak(size: str, seconds: float) -> None:
    """Four writers against READERS readers (half using lookup) for ``seconds``."""
    with Cache(size=size, serializer="raw") as cache:
        race(multiprocessing.get_context("fork"), cache, writers=4, readers=READERS, reads=0, seconds=seconds)


def main() -> None:
    """The long runs without pytest, e.g. an overnight soak::

    python tests/cache_scenarios.py --seconds 600 --kills 10000
    """
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60, help="torn-read soak per cache size")
    parser.add_argument("--kills", type=int, default=1000, help="killed writers per cache size")
    parser.add_argument("--seed", type=int, default=2)
    args = parser.parse_args()
    for size in SOAK_SIZES:
        soak(size, args.seconds)
        print(f"torn reads, {size}: {args.seconds:.0f} s, no bad read")
        kill_loop(args.kills, size, seed=args.seed)
        print(f"kill loop, {size}: {args.kills} kills, no bad read")


if __name__ == "__main__":
    main()
