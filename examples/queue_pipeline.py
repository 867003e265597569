"""A producer/consumer pipeline on herdcache.Queue, across spawned processes.

Run it:  python examples/queue_pipeline.py

Two producers put 5,000 jobs each on the queue ``jobs``; three consumers
take them, work, and put results on the queue ``results``; the parent
collects the results.  The queues are named, so they reach the spawned
children pickled by name (an anonymous queue is for fork() children).
When both producers are done, the parent closes ``jobs``: the consumers
drain what is left, their ``for job in jobs`` loops end, and they exit.
Messages are msgpack'd dicts; ``put_many`` / ``get_many`` would move them
in batches.
"""

from __future__ import annotations

import multiprocessing
import os

import herdcache

PRODUCERS, CONSUMERS, JOBS_EACH = 2, 3, 5000


def produce(jobs: herdcache.Queue, first: int) -> None:
    for n in range(first, first + JOBS_EACH):
        jobs.put({"id": n, "n": n})


def consume(jobs: herdcache.Queue, results: herdcache.Queue) -> None:
    done = 0
    for job in jobs:  # ends when the queue is closed and drained
        results.put({"id": job["id"], "square": job["n"] ** 2})
        done += 1
    results.put({"consumer": os.getpid(), "done": done})


def main() -> None:
    tag = os.getpid()
    jobs = herdcache.Queue(f"example-jobs-{tag}", size="1MiB")
    results = herdcache.Queue(f"example-results-{tag}", size="4MiB")
    spawn = multiprocessing.get_context("spawn")
    try:
        producers = [spawn.Process(target=produce, args=(jobs, i * JOBS_EACH)) for i in range(PRODUCERS)]
        consumers = [spawn.Process(target=consume, args=(jobs, results)) for _ in range(CONSUMERS)]
        for proc in producers + consumers:
            proc.start()
        squares, per_consumer = {}, []
        for proc in producers:
            proc.join()
        jobs.close()  # no more jobs: consumers drain the rest, then stop
        while len(per_consumer) < CONSUMERS:
            message = results.get(timeout=60)
            if "consumer" in message:
                per_consumer.append(message["done"])
            else:
                squares[message["id"]] = message["square"]
        for proc in consumers:
            proc.join()
        total = PRODUCERS * JOBS_EACH
        print(f"jobs: {total}")
        print(f"results: {len(squares)}")
        print(f"all correct: {squares == {n: n * n for n in range(total)}}")
        print(f"consumers: {len(per_consumer)}, jobs each: {sorted(per_consumer)}")
    finally:
        jobs.unlink()
        results.unlink()


if __name__ == "__main__":
    main()
