"""Recovery figures of RELIABILITY.md's bounded scenarios, measured in one run.

Run (from a checkout, with herdcache installed, e.g. ``pip install -e .``)::

    python benchmarks/recovery.py              # about 30 s
    python benchmarks/recovery.py --rounds 5   # quicker, rougher
    python benchmarks/recovery.py --only reads --kills 400   # scenario 4 alone

It prints one line per figure, each a median, p95 and max over the rounds,
and the bound RELIABILITY.md gives for it (the reads section prints
percentiles of every read instead).  Nothing here asserts a number:
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
- reads while writers are killed (scenario 4): 8 reader processes time
  every ``get`` of random keys (``--readers``) while 4 writers
  (``--writers``) set self-checking values; first with no kills, then,
  for as long again and more, while a random writer is SIGKILLed every
  20 ms (``--kill-every``) and replaced, ``--kills`` times.  Per phase:
  p50, p99, p99.9 and max of the reads, and how many took over 10 ms;
  then the reads that met a kill: those that were under way at a kill
  instant, and those during which ``stats()["recoveries"]`` rose (a
  reader or writer taking over a dead writer's stripe lock and rebuilding
  the stripe; a watcher process polls the count every millisecond, so a
  rise is placed between two polls).  The no-kill phase, with the same
  processes on the same machine, is the peer: a loaded machine preempts
  a reader for milliseconds whatever the cache does.  The writers and the
  value checks are the torn-read tests' own (``tests/cache_workers.py``).
"""

from __future__ import annotations

import argparse
import bisect
import multiprocessing
import os
import random
import signal
import statistics
import sys
import threading
import time
from array import array
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Callable

from _timing import now_ns, percentile

import herdcache
from herdcache import errors

# The self-checking values and the doomed writer of the torn-read tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from cache_helpers import cache_ref, verify_value  # noqa: E402
from cache_workers import doomed_writer, value_pool  # noqa: E402

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

# -- scenario 4: every read's time while writers are killed ----------------------

#: Scenario 4's bound on one read, in ns.
READ_BOUND_NS = 10_000_000

#: A read longer than this is followed by a look at the reader's own
#: ``recoveries`` count (a look costs tens of microseconds: not after every
#: read; p99.9 of a get is about 10 us).  A quicker read that rebuilt a
#: stripe is counted with the reader's next slower one, which errs toward
#: a longer figure, never a shorter one.
LOOK_AFTER_NS = 5_000


def timed_reader(cache: herdcache.Cache, keys: list[bytes], seed: int, stop, conn: Connection) -> None:
    """Get random keys until ``stop`` is set, timing each ``get``; send
    (reads, hits, torn values), then every read's start and duration (ns),
    then the indexes of the reads after which this process's own
    ``recoveries`` count had risen (the reads that rebuilt a stripe)."""
    rng = random.Random(seed)
    starts, durations, recovering = array("q"), array("q"), array("q")
    hits = torn = 0
    recovered = own_recoveries(cache)
    while not stop.is_set():
        for key in rng.choices(keys, k=64):
            start = now_ns()
            value = cache.get(key)
            durations.append(now_ns() - start)
            starts.append(start)
            if durations[-1] > LOOK_AFTER_NS and (count := own_recoveries(cache)) > recovered:
                recovering.append(len(durations) - 1)
                recovered = count
            if value is not None:
                hits += 1
                torn += not verify_value(key, value)
    conn.send((len(durations), hits, torn))
    for numbers in (starts, durations, recovering):
        conn.send_bytes(numbers)


def own_recoveries(cache: herdcache.Cache) -> int:
    """The stripes this process rebuilt after a writer died."""
    pid = os.getpid()
    return sum(slot["recoveries"] for slot in cache.stats()["per_process"] if slot["pid"] == pid)


def recovery_watch(cache: herdcache.Cache, stop, conn: Connection) -> None:
    """Poll ``stats()["recoveries"]`` about every millisecond until ``stop``
    is set; send, for each rise, the two instants (ns) it happened between:
    just before the poll that last saw the old count, just after the one
    that saw the new."""
    rises = array("q")
    before = now_ns()
    last = cache.stats()["recoveries"]
    while not stop.is_set():
        time.sleep(0.001)
        start = now_ns()
        count = cache.stats()["recoveries"]
        if count > last:
            rises.extend((before, now_ns()))
        last, before = count, start
    conn.send_bytes(rises)


def start_reporting(target: Callable[..., None], *args: object) -> tuple[multiprocessing.process.BaseProcess, Connection]:
    """Start ``target(*args, conn)`` in a child; return it and the reading end."""
    reader, writer = CTX.Pipe(duplex=False)
    proc = CTX.Process(target=target, args=(*args, writer), daemon=True)
    proc.start()
    writer.close()
    return proc, reader


class Writers:
    """Doomed writers (the kill tests' own) of one cache, each replaced as
    soon as it is killed."""

    def __init__(self, cache: herdcache.Cache, count: int, pool: dict[bytes, list[bytes]], rng: random.Random):
        self.ref, self.pool, self.rng = cache_ref(cache, CTX), pool, rng
        self.procs = [self.start() for _ in range(count)]
        for _, conn in self.procs:
            assert conn.poll(30) and conn.recv() == "started", "a writer never started"

    def start(self) -> tuple[multiprocessing.process.BaseProcess, Connection]:
        return start_reporting(doomed_writer, self.ref, self.pool, self.rng.randrange(2**32))

    def kill_one(self) -> int:
        """SIGKILL a random writer, reap it and start its replacement (not
        waiting for it to write: the kills keep their pace); return the
        kill instant (ns)."""
        i = self.rng.randrange(len(self.procs))
        instant = self.kill(i)
        self.procs[i] = self.start()
        return instant

    def kill(self, i: int) -> int:
        proc, conn = self.procs[i]
        instant = now_ns()
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        conn.close()
        return instant

    def kill_all(self) -> None:
        for i in range(len(self.procs)):
            self.kill(i)


def paced(times: int, every: float, act: Callable[[], int]) -> list[int]:
    """Call ``act`` ``times`` times, one every ``every`` seconds (or as fast
    as it goes, if slower); return what it returned."""
    first, results = now_ns(), []
    for n in range(1, times + 1):
        results.append(act())
        time.sleep(max(0.0, (first - now_ns()) / 1e9 + n * every))
    return results


class Reads:
    """Every read of every reader: start and duration (ns), each reader's
    reads in order (one ends before the next starts)."""

    def __init__(self, conns: list[Connection]):
        self.count = self.hits = self.torn = 0
        self.runs: list[tuple[array, array]] = []
        self.recovering: list[int] = []
        for conn in conns:
            count, hits, torn = conn.recv()
            self.count, self.hits, self.torn = self.count + count, self.hits + hits, self.torn + torn
            starts, durations, recovering = array("q"), array("q"), array("q")
            for numbers in (starts, durations, recovering):
                numbers.frombytes(conn.recv_bytes())
            self.runs.append((starts, durations))
            self.recovering += (durations[i] for i in recovering)

    def between(self, first: int, last: int) -> list[int]:
        """Durations of the reads that started in [first, last)."""
        found: list[int] = []
        for starts, durations in self.runs:
            found += durations[bisect.bisect_left(starts, first) : bisect.bisect_left(starts, last)]
        return found

    def meeting(self, spans: list[tuple[int, int]]) -> list[int]:
        """Durations of the reads under way at some moment of some span
        (a kill instant is a span of one instant), each read once."""
        found: list[int] = []
        for starts, durations in self.runs:
            met: set[int] = set()
            for first, last in spans:
                # The read before ``first`` may still run at first; later
                # ones start inside the span.
                for i in range(max(bisect.bisect_left(starts, first) - 1, 0), bisect.bisect_right(starts, last)):
                    if starts[i] + durations[i] >= first:
                        met.add(i)
            found += (durations[i] for i in met)
        return found


def read_summary(name: str, durations: list[int]) -> None:
    if not durations:
        print(f"{name:<44} no reads")
        return
    ordered = sorted(durations)
    over = len(ordered) - bisect.bisect_right(ordered, READ_BOUND_NS)
    p50, p99, p999 = (percentile(ordered, f) / 1e3 for f in (0.5, 0.99, 0.999))
    print(
        f"{name:<44} p50 {p50:7.1f} us  p99 {p99:7.1f} us  p99.9 {p999:8.1f} us  max {ordered[-1] / 1e6:6.1f} ms"
        f"  over 10 ms: {over:,} of {len(ordered):,}"
    )


def reads_under_kills(args: argparse.Namespace) -> None:
    """Scenario 4's figure (see the module docstring)."""
    cache = herdcache.Cache(size=args.size, serializer="raw")
    keys = [b"read-%d" % i for i in range(64)]
    rng = random.Random(4)
    writers = Writers(cache, args.writers, value_pool(keys, per_key=8, largest=20_000, seed=4), rng)
    stop = CTX.Event()
    readers = [start_reporting(timed_reader, cache, keys, seed, stop) for seed in range(args.readers)]
    watcher = start_reporting(recovery_watch, cache, stop)
    time.sleep(SETTLE * 10)  # every reader under way; not measured
    killing = now_ns()
    kills = paced(args.kills, args.kill_every, writers.kill_one)
    # The peer: as long again with the same processes, no kill, and as
    # many instants at the pace the kills kept.
    calm = now_ns()
    instants = paced(args.kills, (calm - killing) / 1e9 / args.kills, now_ns)
    end = now_ns()
    stop.set()
    reads = Reads([conn for _, conn in readers])
    rises = array("q")
    rises.frombytes(watcher[1].recv_bytes())
    writers.kill_all()
    for proc, _ in [*readers, watcher]:
        proc.join(30)
    cache.check()
    print(
        f"{args.readers} readers, {args.writers} writers, {args.size}: {len(kills)} kills in {(calm - killing) / 1e9:.1f} s,"
        f" then as long with none; recoveries rose {len(rises) // 2} times; {reads.count:,} reads,"
        f" {reads.hits / max(reads.count, 1):.0%} hits, torn: {reads.torn}"
    )
    met = report_phase("writers killed", reads, (killing, calm), kills, list(zip(rises[::2], rises[1::2])))
    peer = report_phase("no kills (the peer)", reads, (calm, end), instants)
    print(f"max of the reads that met a kill / max of the peer's reads under way at an instant: {met / max(peer, 1):.2f}x")


def report_phase(
    name: str, reads: Reads, phase: tuple[int, int], instants: list[int], rises: list[tuple[int, int]] | None = None
) -> int:
    """Print a phase's figures; return the longest read that met one of
    its instants, or (with ``rises``, the kill phase) a rise of the
    recoveries or a rebuild of its own (ns)."""
    read_summary(f"{name}: every read", reads.between(*phase))
    met = reads.meeting([(t, t) for t in instants])
    read_summary(f"  under way at {'a kill instant' if rises is not None else 'an instant'}", met)
    if rises is not None:
        at_rise = reads.meeting(rises)
        read_summary("  under way when recoveries rose", at_rise)
        read_summary("  that rebuilt a dead writer's stripe", reads.recovering)
        print("    each (ms):", " ".join(f"{d / 1e6:.1f}" for d in sorted(reads.recovering)[:40]))
        met += at_rise + reads.recovering
    return max(met, default=0)


def rounds(n: int, measure: Callable[[], float]) -> list[float]:
    return [measure() for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--only", choices=("recoveries", "reads"), help="run one section only")
    parser.add_argument("--kills", type=int, default=200, help="writers killed in the reads section")
    parser.add_argument("--kill-every", type=float, default=0.02, help="seconds between kills")
    parser.add_argument("--readers", type=int, default=8)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--size", default="16MiB", help="the reads section's cache size")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, herdcache {herdcache.__version__}")
    if args.only != "reads":
        recoveries(args)
    if args.only != "recoveries":
        reads_under_kills(args)


def recoveries(args: argparse.Namespace) -> None:
    """The lock, flight, error, wait_timeout and Condition figures."""
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
