"""Recovery figures of RELIABILITY.md's bounded scenarios, measured in one run.

Run (from a checkout, with herdcache installed, e.g. ``pip install -e .``)::

    python benchmarks/recovery.py            # about 15 s
    python benchmarks/recovery.py --rounds 5 # quicker, rougher

It prints one line per figure, each a median, p95 and max over the rounds,
and the bound RELIABILITY.md gives for it.  Nothing here asserts a number:
the tests prove the behaviour, this script reports how fast it is on the
machine it runs on.  Every child is forked from this process and shares an
anonymous segment; a SIGKILL is sent right after the time it is measured
from.

- lock owner killed (scenario 1): a child holds a ``Lock``; a thread of
  this process is blocked in ``acquire()``; from the kill until
  ``acquire()`` returns (``owner_died``).
- flight owner killed (scenarios 5 and 10): a child computes a key
  forever; a thread of this process waits in ``get_or_compute``; from the
  kill until the waiter's own computation starts (the takeover).
- compute raises (scenario 7): a child computes a key and raises; four
  threads of this process wait in ``get_or_compute``; from the raise
  until the last of them has raised the owner's exception.
- wait_timeout accuracy (scenario 8): a child computes forever; the time
  ``get_or_compute(wait_timeout=T)`` takes to raise ``ComputeTimeout``,
  as a ratio to T (1.00 is exact; the bound is within 10 %).
- Condition.wait(timeout) with the lock kept by another process: the time
  until ``LockNotRetaken``, as a ratio to the timeout (the re-take gets
  the timeout's deadline plus one 10 ms probe step).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import statistics
import threading
import time
from typing import Callable

import herdcache
from herdcache import errors

CTX = multiprocessing.get_context("fork")
#: How long a waiter is given to fall asleep before the kill; it only
#: makes sure the kill finds it waiting, it is not part of any figure.
SETTLE = 0.05


def summary(name: str, values: list[float], unit: str, bound: str) -> None:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    print(
        f"{name:<52} median {statistics.median(ordered):8.2f} {unit}  p95 {p95:8.2f}  max {ordered[-1]:8.2f}"
        f"   ({len(values)} rounds; bound: {bound})"
    )


def forever(conn) -> None:
    """A computation that says it started, then never ends."""
    conn.send("computing")
    threading.Event().wait()


def child_computing(cache: herdcache.Cache, key: str) -> multiprocessing.process.BaseProcess:
    reader, writer = CTX.Pipe(duplex=False)
    proc = CTX.Process(target=lambda: cache.get_or_compute(key, lambda: forever(writer), lease=3600), daemon=True)
    proc.start()
    assert reader.poll(30) and reader.recv() == "computing"
    return proc


def kill(proc: multiprocessing.process.BaseProcess) -> float:
    """SIGKILL proc; the time just before, from time.monotonic()."""
    start = time.monotonic()
    os.kill(proc.pid, signal.SIGKILL)
    return start


def lock_recovery(seg: herdcache.Segment) -> float:
    lock = seg.lock("recovery")
    ready = CTX.Event()

    def hold() -> None:
        lock.acquire()
        ready.set()
        threading.Event().wait()

    holder = CTX.Process(target=hold, daemon=True)
    holder.start()
    assert ready.wait(30)
    got: list[tuple[float, bool]] = []

    def take() -> None:
        lock.acquire()
        got.append((time.monotonic(), lock.owner_died))
        lock.release()

    waiter = threading.Thread(target=take)
    waiter.start()
    time.sleep(SETTLE)
    start = kill(holder)
    waiter.join(30)
    holder.join()
    assert got and got[0][1], "the waiter did not hear of the owner's death"
    return (got[0][0] - start) * 1000


def flight_recovery(cache: herdcache.Cache, key: str) -> float:
    owner = child_computing(cache, key)
    started: list[float] = []

    def compute() -> int:
        started.append(time.monotonic())
        return 1

    waiter = threading.Thread(target=lambda: cache.get_or_compute(key, compute, lease=3600))
    waiter.start()
    time.sleep(SETTLE)
    start = kill(owner)
    waiter.join(30)
    owner.join()
    cache.delete(key)
    assert started
    return (started[0] - start) * 1000


class ComputeFailed(Exception):
    """What the owner's computation raises in error_delivery()."""


def error_delivery(cache: herdcache.Cache, key: str, waiters: int = 4) -> float:
    raised_at = CTX.Value("d", 0.0, lock=False)
    go = CTX.Event()
    reader, writer = CTX.Pipe(duplex=False)

    def fail() -> None:
        writer.send("computing")
        assert go.wait(30)
        raised_at.value = time.monotonic()
        raise ComputeFailed("the owner's computation failed")

    def own() -> None:
        try:
            cache.get_or_compute(key, fail, lease=3600)
        except ComputeFailed:
            pass

    owner = CTX.Process(target=own, daemon=True)
    owner.start()
    assert reader.poll(30) and reader.recv() == "computing"
    got: list[float] = []

    def wait() -> None:
        try:
            cache.get_or_compute(key, lambda: "not the owner's", lease=3600)
        except ComputeFailed:
            got.append(time.monotonic())

    threads = [threading.Thread(target=wait) for _ in range(waiters)]
    for thread in threads:
        thread.start()
    time.sleep(SETTLE)
    go.set()
    for thread in threads:
        thread.join(30)
    owner.join(30)
    cache.delete(key)
    assert len(got) == waiters, f"{len(got)} of {waiters} waiters raised the owner's exception"
    return (max(got) - raised_at.value) * 1000


def wait_timeout_ratio(cache: herdcache.Cache, key: str, timeout: float) -> float:
    owner = child_computing(cache, key)
    start = time.monotonic()
    try:
        cache.get_or_compute(key, lambda: 1, lease=3600, wait_timeout=timeout)
        raise AssertionError("get_or_compute returned while the owner still computes")
    except errors.ComputeTimeout:
        elapsed = time.monotonic() - start
    kill(owner)
    owner.join()
    cache.delete(key)
    return elapsed / timeout


def retake_ratio(seg: herdcache.Segment, timeout: float) -> float:
    lock = seg.lock("cv-lock")
    cv = seg.condition("cv", lock=lock)
    waiting, release = CTX.Event(), CTX.Event()

    def keep_lock() -> None:
        assert waiting.wait(30)
        with lock:
            release.wait(30)

    keeper = CTX.Process(target=keep_lock, daemon=True)
    keeper.start()
    lock.acquire()
    start = time.monotonic()
    waiting.set()  # the keeper takes the lock once wait() releases it
    try:
        cv.wait(timeout)
        raise AssertionError("wait() took the lock back from a process that kept it")
    except errors.LockNotRetaken:
        elapsed = time.monotonic() - start
    release.set()
    keeper.join(30)
    return elapsed / timeout


def rounds(n: int, measure: Callable[[], float]) -> list[float]:
    return [measure() for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, herdcache {herdcache.__version__}")
    seg = herdcache.Segment.anonymous("8MiB")
    cache = herdcache.Cache(size="8MiB")
    summary("lock owner killed -> waiter has the lock", rounds(args.rounds, lambda: lock_recovery(seg)), "ms", "< 100 ms")
    summary(
        "flight owner killed -> takeover computes",
        rounds(args.rounds, lambda: flight_recovery(cache, "k")),
        "ms",
        "< 200 ms",
    )
    summary(
        "compute raises -> the last of 4 waiters raises it",
        rounds(args.rounds, lambda: error_delivery(cache, "e")),
        "ms",
        "< 50 ms",
    )
    quick = max(3, args.rounds // 4)
    summary(
        "wait_timeout=0.5 s: time to ComputeTimeout / 0.5",
        rounds(quick, lambda: wait_timeout_ratio(cache, "w", 0.5)),
        "x",
        "1.0 +- 10 %",
    )
    summary(
        "Condition.wait(0.2) lock kept: LockNotRetaken / 0.2",
        rounds(quick, lambda: retake_ratio(seg, 0.2)),
        "x",
        "1.0 + one 10 ms probe step (1.05)",
    )


if __name__ == "__main__":
    main()
