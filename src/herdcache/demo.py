"""``python -m herdcache demo``: several processes share one segment.

Worker processes attach a named segment, count their work in a shared
counter and take turns under a shared lock.  One worker is SIGKILLed while
it holds the lock; the next worker takes the lock over (``owner_died``)
and everybody finishes.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
import uuid

from .segment import Segment, remove


def _worker(name: str, index: int, rounds: int, doomed: bool, holding) -> None:
    seg = Segment.attach(name)
    lock, done, recoveries = seg.lock("turn"), seg.counter("done"), seg.counter("recoveries")
    for _ in range(rounds):
        with lock:
            if lock.owner_died:
                recoveries.add(1)
                print(f"  worker {index} (pid {os.getpid()}): took the lock from a dead owner", flush=True)
            if doomed:
                holding.set()  # tell the parent: kill me now, lock in hand
                time.sleep(3600)
            done.add(1)
    print(f"  worker {index} (pid {os.getpid()}): {rounds} rounds done", flush=True)


def run(workers: int = 4, rounds: int = 1000) -> None:
    """Run the demo and print what each process did."""
    name = f"demo-{uuid.uuid4().hex[:8]}"
    ctx = mp.get_context("spawn")
    with Segment.create(name, "1MiB") as seg:
        holding = ctx.Event()
        print(f"segment {name}: {workers} workers x {rounds} rounds under one lock; worker 0 is killed holding it")
        doomed = ctx.Process(target=_worker, args=(name, 0, rounds, True, holding))
        doomed.start()
        holding.wait()
        others = [ctx.Process(target=_worker, args=(name, i, rounds, False, holding)) for i in range(1, workers)]
        for proc in others:
            proc.start()
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.join()
        print(f"  worker 0 (pid {doomed.pid}): SIGKILLed while holding the lock")
        for proc in others:
            proc.join()
        done = seg.counter("done").load()
        recovered = seg.counter("recoveries").load()
        print(f"total rounds {done} (expected {(workers - 1) * rounds}), lock recovered {recovered} time(s)")
    remove(name)
