"""close() from one thread while another thread uses the segment.

Every call that runs without the GIL on segment memory is pinned, so
close() either refuses with SegmentBusy or waits for a moment when nothing
is in flight; the busy thread then sees SegmentClosed.  Nothing may crash:
each scenario runs in a child process, so that a crash (SIGSEGV on
unmapped memory) shows as the child's exit code instead of ending pytest.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
import threading
from typing import Callable

import pytest
from helpers import HANG

from herdcache import Cache, Segment, errors

#: Operations each busy thread runs, unless close() stops it first.
ROUNDS = 300
#: A message or value large enough that its copy releases the GIL.
LARGE = 1024 * 1024


def lock_ops(seg: Segment) -> Callable[[], None]:
    lock = seg.lock("lock")

    def op() -> None:
        with lock:
            pass

    return op


def condition_ops(seg: Segment) -> Callable[[], None]:
    cond = seg.condition("cond")

    def op() -> None:
        with cond:
            cond.wait(0.0005)

    return op


def counter_ops(seg: Segment) -> Callable[[], None]:
    return seg.counter("counter").add


def segment_ops(seg: Segment) -> Callable[[], None]:
    def op() -> None:
        seg.info()
        seg.names()

    return op


def cache_ops(seg: Segment) -> Callable[[], None]:
    cache = Cache(segment=seg, max_value_size=2 * LARGE, serializer="raw")
    value = b"v" * LARGE

    def op() -> None:
        cache.set("k", value)
        assert cache.get("k") == value
        cache.get_or_compute("g", lambda: value, ttl=0.001)

    return op


def queue_ops(**flags: bool) -> Callable[[Segment], Callable[[], None]]:
    def make(seg: Segment) -> Callable[[], None]:
        q = seg.queue("q", 4 * LARGE, serializer="raw", **flags)
        message = b"m" * LARGE

        def op() -> None:
            q.put(message)
            assert q.get() == message

        return op

    return make


SCENARIOS: dict[str, Callable[[Segment], Callable[[], None]]] = {
    "segment": segment_ops,
    "lock": lock_ops,
    "condition": condition_ops,
    "counter": counter_ops,
    "cache": cache_ops,
    "queue-locked": queue_ops(),
    "queue-single-producer": queue_ops(single_producer=True),
    "queue-single-consumer": queue_ops(single_consumer=True),
    "queue-single-both": queue_ops(single_producer=True, single_consumer=True),
}


def close_while_busy(scenario: str, segdir: str) -> None:
    """Child: one thread runs the scenario's operations, this one closes.

    Exits 0 if close() succeeded, no call crashed, and every failure the
    busy thread saw was SegmentClosed.
    """
    sys.setswitchinterval(1e-6)  # switch threads as often as CPython allows
    seg = Segment.create("seg", 16 * LARGE, dir=segdir)
    op = SCENARIOS[scenario](seg)
    started = threading.Event()
    failures: list[BaseException] = []

    def busy() -> None:
        try:
            for _ in range(ROUNDS):
                op()
                started.set()
        except errors.SegmentClosed:
            pass
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)
        finally:
            started.set()

    thread = threading.Thread(target=busy)
    thread.start()
    assert started.wait(HANG), "the busy thread did not finish one operation"
    while True:
        try:
            seg.close()
            break
        except errors.SegmentBusy:
            continue  # a call is in flight, or a lock held: try again
    thread.join(HANG)
    assert not thread.is_alive(), "the busy thread hung after close()"
    assert not failures, failures


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_close_from_another_thread_never_crashes(scenario: str, segdir: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=close_while_busy, args=(scenario, segdir))
    proc.start()
    proc.join(HANG)
    if proc.is_alive():
        proc.kill()
        proc.join()
        pytest.fail(f"{scenario}: the child was still running after {HANG} s")
    assert proc.exitcode != -signal.SIGSEGV, f"{scenario}: the child died of SIGSEGV"
    assert proc.exitcode == 0, f"{scenario}: the child exited with {proc.exitcode}"
