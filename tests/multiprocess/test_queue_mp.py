"""Messages through many processes: none lost, none duplicated, none torn.

N producers and M consumers (fork and spawn) pass sequence-numbered,
checksummed messages; a PostgreSQL-style ring (test_shm_mq) passes one
message through N processes K times and compares it byte for byte.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
from typing import Any

import pytest
from helpers import join_all, receive
from queue_helpers import consume, produce, relay

import herdcache

PRODUCERS, CONSUMERS, COUNT = 3, 2, 1500


def _queue(name: str | None, method: str, size: Any, serializer: str = "raw") -> herdcache.Queue:
    # spawn children attach by name; fork children inherit an anonymous one.
    return herdcache.Queue(name if method == "spawn" else None, size=size, serializer=serializer)


@pytest.mark.parametrize("batch", [1, 64])
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_many_producers_many_consumers_exactly_once(segment_name: str, method: str, batch: int) -> None:
    ctx = multiprocessing.get_context(method)
    q = _queue(segment_name, method, "32KiB")  # small: producers wait for room
    pipes = [ctx.Pipe(duplex=False) for _ in range(CONSUMERS)]
    consumers = [ctx.Process(target=consume, args=(q, w, batch)) for _, w in pipes]
    producers = [ctx.Process(target=produce, args=(q, p, COUNT, batch)) for p in range(PRODUCERS)]
    for proc in consumers + producers:
        proc.start()
    join_all(producers)
    q.close()
    results = [receive(r) for r, _ in pipes]
    join_all(consumers)

    seen = collections.Counter(record for got in results for record in got)
    expected = {(p, s) for p in range(PRODUCERS) for s in range(COUNT)}
    assert set(seen) == expected, "lost or invented messages"
    assert max(seen.values()) == 1, "duplicated messages"
    for got in results:  # each consumer sees each producer's messages in order
        for p in range(PRODUCERS):
            seqs = [s for (pp, s) in got if pp == p]
            assert seqs == sorted(seqs)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_ring_of_processes(segment_name: str, method: str) -> None:
    stations, loops = 4, 25
    ctx = multiprocessing.get_context(method)
    queues = [_queue(f"{segment_name}-{i}", method, "256KiB") for i in range(stations + 1)]
    workers = [ctx.Process(target=relay, args=(queues[i], queues[i + 1], loops)) for i in range(stations)]
    for w in workers:
        w.start()
    original = os.urandom(100_000)
    message = original
    try:
        for _ in range(loops):
            queues[0].put(message)
            message = queues[stations].get(timeout=60)
        join_all(workers)
    finally:
        for q in queues:
            q.unlink()
    assert len(message) == len(original)
    first_difference = next((i for i, (a, b) in enumerate(zip(message, original)) if a != b), None)
    assert first_difference is None, f"messages differ at byte {first_difference} of {len(original)}"


def test_msgpack_objects_across_fork() -> None:
    q = herdcache.Queue(size="64KiB")
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=lambda: q.put_many({"n": i, "sq": [i * i]} for i in range(500)))
    child.start()
    got = [q.get(timeout=60) for _ in range(500)]
    join_all([child])
    assert got == [{"n": i, "sq": [i * i]} for i in range(500)]
