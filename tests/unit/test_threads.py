"""Several threads of one process share one segment: counts stay exact."""

from __future__ import annotations

import sys
import threading
from typing import Callable, Iterator

import pytest
from helpers import joined

from herdcache import Segment

THREADS = 8


@pytest.fixture(autouse=True)
def frequent_thread_switches() -> Iterator[None]:
    """Switch threads as often as CPython allows, so races have room to happen."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def run_threads(fn: Callable[[], None], count: int = THREADS) -> None:
    """Start ``count`` threads at one barrier, join them, re-raise any error."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    joined(*threads)
    assert not errors, errors


def test_counter_adds_from_many_threads_are_exact() -> None:
    seg = Segment.anonymous("1MiB")
    hits = seg.counter("hits")

    def work() -> None:
        counter = seg.counter("hits")  # each thread looks it up itself
        for _ in range(20_000):
            counter.add(1)

    run_threads(work)
    assert hits.load() == THREADS * 20_000


def test_lock_protects_a_read_modify_write_between_threads() -> None:
    seg = Segment.anonymous("1MiB")
    lock = seg.lock("guard")
    view, _ = seg.struct("total", 8)
    rounds = 3_000

    def work() -> None:
        for _ in range(rounds):
            with lock:
                value = int.from_bytes(view, "little")
                view[:] = (value + 1).to_bytes(8, "little")

    run_threads(work)
    assert int.from_bytes(view, "little") == THREADS * rounds
    assert not lock.locked()
    view.release()
    seg.close()


def test_named_segment_opened_by_every_thread(segdir: str) -> None:
    Segment.create("shared", "1MiB", dir=segdir).close()

    def work() -> None:
        with Segment.attach("shared", dir=segdir) as seg:
            lock, counter = seg.lock("l"), seg.counter("c")
            for _ in range(500):
                with lock:
                    counter.add(1)

    run_threads(work)
    with Segment.attach("shared", dir=segdir) as seg:
        assert seg.counter("c").load() == THREADS * 500
        assert seg.info()["attached"] == 1
