"""Several threads of one process sharing a cache.

The core releases the GIL around every call that may wait or copy, so
threads of one process really do meet on a stripe's lock and race on its
epoch, as processes do: values must stay whole, increments atomic, and a
thread must never take its own process's lock for a dead owner's.
"""

from __future__ import annotations

import random
import threading

from cache_helpers import checked_value, verify_value
from helpers import HANG

from herdcache import Cache

KEYS = [b"thread-%d" % i for i in range(16)]


def test_threads_share_a_cache_like_processes() -> None:
    """Two writer threads, two reader threads and two incrementing threads
    at once: no torn read, no lost increment, no thread stuck, and the
    table's invariants hold."""
    values = Cache(size="1MiB", serializer="raw")
    counts = Cache(size="8MiB")
    counts["n"] = 0
    start = threading.Barrier(6)
    bad: list[bytes] = []
    hits = [0]
    written = threading.Event()

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        start.wait()
        for n in range(10_000):
            key = rng.choice(KEYS)
            values[key] = checked_value(key, n, int(rng.uniform(16, 30_000)), rng)
            if n % 7 == 0:
                values.delete(key)

    def reader() -> None:
        start.wait()
        while True:
            finished = written.is_set()
            for key in KEYS:
                value = values.get(key)
                if value is not None:
                    hits[0] += 1
                    if not verify_value(key, value):
                        bad.append(key)
            if finished:  # one whole pass after the last write
                return

    def incrementer() -> None:
        start.wait()
        for _ in range(1000):
            counts.incr("n")

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in (1, 2)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    threads += [threading.Thread(target=incrementer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads[:2]:
        thread.join(HANG)
    written.set()
    for thread in threads:
        thread.join(HANG)
    assert not any(thread.is_alive() for thread in threads), "a thread is stuck"
    assert bad == [], f"{len(bad)} torn reads"
    assert hits[0] > 0
    assert counts["n"] == 2000
    values.check()
    counts.check()
    assert values.stats()["recoveries"] == 0, "a live thread's lock was taken for a dead owner's"
    values.close()
    counts.close()
