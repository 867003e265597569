"""herdcache's primitives beside multiprocessing's, measured in one run.

Run (from a checkout, with herdcache installed, e.g. ``pip install -e .``)::

    python benchmarks/primitives.py            # about 10 s
    python benchmarks/primitives.py --quick    # about 1 s, rougher numbers

It prints one table.  Each row measures a herdcache primitive and the
matching :mod:`multiprocessing` one the same way, in the same run, and gives
the ratio (how many times better herdcache is; above 1 means herdcache
wins).  Throughputs and mean times are the best of three runs:

- counter adds per second, in 1 and in 2 processes: ``Counter.add(1)``
  against ``multiprocessing.Value("q")`` incremented under its own lock;
- uncontended lock acquire + release, in ns: ``Lock`` against
  ``multiprocessing.Lock``;
- lock hand-off between two processes, in ns: a ping-pong in which each
  release wakes the other process blocked in acquire (three locks passed
  round, so every hand-off is a real wake-up, never a re-take);
- condition notify-to-wake latency, median and p99 in us: the time from
  a notifier's timestamp just before ``notify()`` to the waiter's return
  from ``wait()`` (lock re-taken), ``Condition`` against
  ``multiprocessing.Condition``.

Machine of the numbers quoted in the foundation report: 2 vCPUs of an
"Intel(R) Xeon(R) Processor" VM, Linux 6.18, CPython 3.11.7, herdcache
built with -O2; other jobs shared the machine, so expect some noise.  The
script prints the machine it ran on.  Nothing here asserts a number: the
tests never time anything, the benchmark only reports.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import time
from multiprocessing.connection import Connection
from typing import Any, Callable

import herdcache

CTX = mp.get_context("fork")


# -- counters ----------------------------------------------------------------


def hc_adds(seg: herdcache.Segment, n: int) -> None:
    add = seg.counter("adds").add
    for _ in range(n):
        add(1)


def mp_adds(value: Any, n: int) -> None:
    lock = value.get_lock()
    for _ in range(n):
        with lock:
            value.value += 1


def timed_in_children(target: Callable[..., None], args: tuple, processes: int) -> float:
    """Run target(*args) in ``processes`` children released by one barrier;
    return the seconds from the first start to the last finish."""
    barrier = CTX.Barrier(processes)
    pipes = []
    for _ in range(processes):
        reader, writer = CTX.Pipe(duplex=False)
        CTX.Process(target=_timed_child, args=(target, args, barrier, writer)).start()
        pipes.append(reader)
    spans = [conn.recv() for conn in pipes]
    return (max(end for _, end in spans) - min(start for start, _ in spans)) / 1e9


def _timed_child(target: Callable[..., None], args: tuple, barrier: Any, conn: Connection) -> None:
    barrier.wait()
    start = time.monotonic_ns()
    target(*args)
    conn.send((start, time.monotonic_ns()))


def adds_per_second(processes: int, n: int) -> tuple[float, float]:
    seg = herdcache.Segment.anonymous("1MiB")
    hc = processes * n / timed_in_children(hc_adds, (seg, n), processes)
    assert seg.counter("adds").load() == processes * n
    value = CTX.Value("q", 0)
    mpv = processes * n / timed_in_children(mp_adds, (value, n), processes)
    assert value.value == processes * n
    return hc, mpv


def counter_rows(n: int) -> list[tuple[str, float, float, str]]:
    rows = []
    for processes in (1, 2):
        runs = [adds_per_second(processes, n) for _ in range(3)]
        hc, mpv = max(r[0] for r in runs), max(r[1] for r in runs)
        rows.append((f"counter adds/s, {processes} process{'es' if processes > 1 else ''}", hc, mpv, "higher"))
    return rows


# -- uncontended lock ------------------------------------------------------------


def acquire_release_ns(lock: Any, n: int) -> float:
    acquire, release = lock.acquire, lock.release
    start = time.perf_counter_ns()
    for _ in range(n):
        acquire()
        release()
    return (time.perf_counter_ns() - start) / n


def uncontended_row(n: int) -> tuple[str, float, float, str]:
    seg = herdcache.Segment.anonymous("1MiB")
    hc = min(acquire_release_ns(seg.lock("l"), n) for _ in range(3))
    mpl = min(acquire_release_ns(CTX.Lock(), n) for _ in range(3))
    return ("lock acquire+release, uncontended (ns)", hc, mpl, "lower")


# -- lock hand-off ping-pong -----------------------------------------------------
#
# Locks L0, L1, L2.  The first process holds L0 and L1, the second L2, and
# the second blocks acquiring L0.  At step k the first releases L[k%3] and
# blocks on L[(k+2)%3]; the second, woken by that release, takes L[k%3] and
# releases L[(k+2)%3], which wakes the first.  Every release hands the lock
# to a process already waiting for it, so each step is one hand-off.


def pingpong_first(locks: list, steps: int, barrier: Any) -> None:
    locks[0].acquire()
    locks[1].acquire()
    barrier.wait()
    for k in range(steps):
        locks[k % 3].release()
        locks[(k + 2) % 3].acquire()
    locks[steps % 3].release()  # after step k it holds L[k+1] and L[k+2]
    locks[(steps + 1) % 3].release()


def pingpong_second(locks: list, steps: int, barrier: Any) -> None:
    locks[2].acquire()
    barrier.wait()
    for k in range(steps):
        locks[k % 3].acquire()
        locks[(k + 2) % 3].release()
    locks[(steps - 1) % 3].release()  # after step k it holds L[k]


def handoff_ns(make_locks: Callable[[], list], steps: int) -> float:
    locks = make_locks()
    barrier = CTX.Barrier(3)
    procs = [CTX.Process(target=fn, args=(locks, steps, barrier)) for fn in (pingpong_first, pingpong_second)]
    for proc in procs:
        proc.start()
    barrier.wait()
    start = time.monotonic_ns()
    for proc in procs:
        proc.join()
    return (time.monotonic_ns() - start) / (2 * steps)


def handoff_row(steps: int) -> tuple[str, float, float, str]:
    seg = herdcache.Segment.anonymous("1MiB")
    hc = min(handoff_ns(lambda: [seg.lock(f"l{i}") for i in range(3)], steps) for _ in range(3))
    mpl = min(handoff_ns(lambda: [CTX.Lock() for _ in range(3)], steps) for _ in range(3))
    return ("lock hand-off between 2 processes (ns)", hc, mpl, "lower")


# -- condition notify-to-wake ------------------------------------------------------


class Scene:
    """The shared state of the condition benchmark, for either library."""

    def __init__(self, cond: Any, ready: Any, go: Any, stamp: Any):
        self.cond, self.ready, self.go, self.stamp = cond, ready, go, stamp


def hc_scene() -> Scene:
    seg = herdcache.Segment.anonymous("1MiB")
    lock = seg.lock("lock")
    return Scene((seg.condition("cv", lock=lock), seg.condition("ready_cv", lock=lock)), seg.counter("ready"), seg.counter("go"), seg.counter("stamp"))


class _Cell:
    """multiprocessing.RawValue with herdcache.Counter's load/store."""

    def __init__(self) -> None:
        self.raw = CTX.RawValue("q", 0)

    def load(self) -> int:
        return self.raw.value

    def store(self, value: int) -> None:
        self.raw.value = value


def mp_scene() -> Scene:
    lock = CTX.Lock()
    return Scene((CTX.Condition(lock), CTX.Condition(lock)), _Cell(), _Cell(), _Cell())


def condition_waiter(scene: Scene, rounds: int, conn: Connection) -> None:
    cv, ready_cv = scene.cond
    latencies = []
    with cv:
        for i in range(1, rounds + 1):
            scene.ready.store(i)
            ready_cv.notify()
            while scene.go.load() < i:
                cv.wait()
            latencies.append(time.monotonic_ns() - scene.stamp.load())
    conn.send(latencies)


def notify_latencies(scene: Scene, rounds: int) -> list[int]:
    cv, ready_cv = scene.cond
    reader, writer = CTX.Pipe(duplex=False)
    waiter = CTX.Process(target=condition_waiter, args=(scene, rounds, writer))
    waiter.start()
    with cv:
        for i in range(1, rounds + 1):
            while scene.ready.load() < i:  # the waiter is inside wait() now
                ready_cv.wait()
            scene.go.store(i)
            scene.stamp.store(time.monotonic_ns())
            cv.notify()
    latencies = reader.recv()
    waiter.join()
    return latencies


def condition_rows(rounds: int) -> list[tuple[str, float, float, str]]:
    hc = sorted(notify_latencies(hc_scene(), rounds))
    mpc = sorted(notify_latencies(mp_scene(), rounds))

    def p99(values: list[int]) -> float:
        return values[min(len(values) - 1, int(len(values) * 0.99))]

    return [
        ("condition notify-to-wake, median (us)", statistics.median(hc) / 1e3, statistics.median(mpc) / 1e3, "lower"),
        ("condition notify-to-wake, p99 (us)", p99(hc) / 1e3, p99(mpc) / 1e3, "lower"),
    ]


# -- the table -------------------------------------------------------------------


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{os.cpu_count()} x {cpu}, Linux {platform.release()}, "
        f"{platform.python_implementation()} {platform.python_version()}, herdcache {herdcache.__version__}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )


def fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.2f}"


def print_table(rows: list[tuple[str, float, float, str]]) -> None:
    print(f"{'measure':<42} {'herdcache':>14} {'multiprocessing':>16} {'ratio':>8}")
    print("-" * 83)
    for name, hc, mpv, better in rows:
        ratio = hc / mpv if better == "higher" else mpv / hc
        print(f"{name:<42} {fmt(hc):>14} {fmt(mpv):>16} {ratio:>7.1f}x")
    print("ratio: how many times better herdcache is (above 1: herdcache wins)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations: rougher numbers, about 3 s")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    print(machine())
    rows = counter_rows(1_000_000 // scale)
    rows.append(uncontended_row(1_000_000 // scale))
    rows.append(handoff_row(20_000 // scale))
    rows += condition_rows(20_000 // scale)
    print_table(rows)


if __name__ == "__main__":
    main()
