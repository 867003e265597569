"""The lock in one process: threading.Lock's interface, owned by a thread."""

from __future__ import annotations

import os
import threading

import pytest
from helpers import HANG, joined

from herdcache import Lock, Segment, errors


@pytest.fixture
def lock(seg: Segment) -> Lock:
    return seg.lock("l")


def in_thread(fn):
    """Run fn in another thread; return what it returned, or raise what it raised."""
    result: list = []

    def run() -> None:
        try:
            result.append((True, fn()))
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller
            result.append((False, exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    joined(thread)
    ok, value = result[0]
    if not ok:
        raise value
    return value


def test_acquire_release_and_locked(lock: Lock) -> None:
    assert not lock.locked()
    assert lock.acquire() is True
    assert lock.locked() and lock._is_owned()
    assert lock.owner_died is False
    assert "locked" in repr(lock)
    lock.release()
    assert not lock.locked() and not lock._is_owned()


def test_with_statement_releases_even_on_error(lock: Lock) -> None:
    with pytest.raises(KeyError):
        with lock:
            assert lock.locked()
            raise KeyError("boom")
    assert not lock.locked()


def test_non_blocking_acquire(lock: Lock) -> None:
    assert lock.acquire(blocking=False) is True
    assert in_thread(lambda: lock.acquire(blocking=False)) is False
    lock.release()
    assert in_thread(lambda: lock.acquire(blocking=False)) is True
    assert lock.locked(), "the other thread's acquire did not take it"


def test_non_blocking_with_a_timeout_is_a_value_error(lock: Lock) -> None:
    with pytest.raises(ValueError, match="non-blocking"):
        lock.acquire(blocking=False, timeout=1)
    assert not lock.locked()


def test_timeout_gives_false_while_another_thread_holds_it(lock: Lock) -> None:
    lock.acquire()
    assert in_thread(lambda: lock.acquire(timeout=0.2)) is False
    assert in_thread(lambda: lock.acquire(timeout=0)) is False
    lock.release()


def test_release_from_another_thread_raises_and_keeps_the_lock(lock: Lock) -> None:
    lock.acquire()
    with pytest.raises(errors.LockNotOwned, match="thread that acquired it") as info:
        in_thread(lock.release)
    assert isinstance(info.value, RuntimeError)
    assert lock.locked() and lock._is_owned()
    lock.release()


def test_release_of_a_free_lock_raises(lock: Lock) -> None:
    with pytest.raises(errors.LockNotOwned):
        lock.release()


@pytest.mark.parametrize(
    "again",
    [lambda lk: lk.acquire(), lambda lk: lk.acquire(timeout=5), lambda lk: lk.acquire(blocking=False), lambda lk: lk.__enter__()],
    ids=["blocking", "timeout", "non-blocking", "with"],
)
def test_reacquire_by_the_same_thread_raises_instead_of_hanging(lock: Lock, again) -> None:
    """In a thread of its own, so that a re-acquire that hangs fails the
    test after a deadline, naming the thread, instead of hanging it."""

    def twice() -> None:
        lock.acquire()
        try:
            with pytest.raises(errors.LockNotOwned, match="not reentrant"):
                again(lock)
            assert lock._is_owned()
        finally:
            lock.release()

    in_thread(twice)
    assert not lock.locked()


def test_waiting_thread_gets_the_lock_when_it_is_released(lock: Lock) -> None:
    lock.acquire()
    started = threading.Event()
    got: list[bool] = []

    def waiter() -> None:
        started.set()
        got.append(lock.acquire(timeout=60))
        lock.release()

    thread = threading.Thread(target=waiter)
    thread.start()
    assert started.wait(HANG), "the waiting thread never started"
    lock.release()
    joined(thread)
    assert got == [True]
    assert not lock.locked()


def test_close_while_holding_a_lock_is_busy_and_keeps_the_mapping(seg: Segment, lock: Lock) -> None:
    counter = seg.counter("c")
    lock.acquire()
    with pytest.raises(errors.SegmentBusy, match="locks are held"):
        seg.close()
    assert not seg.closed
    assert counter.add(1) == 1, "the mapping went away"
    view, _ = seg.struct("data", 8)
    view[0] = 1
    del view
    lock.release()
    seg.close()
    assert seg.closed


def test_close_while_another_thread_holds_a_lock_is_busy(seg: Segment, lock: Lock) -> None:
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            holding.set()
            done.wait(HANG)

    thread = threading.Thread(target=hold)
    thread.start()
    assert holding.wait(HANG), "the other thread never took the lock"
    try:
        with pytest.raises(errors.SegmentBusy):
            seg.close()
    finally:
        done.set()
        joined(thread)
    seg.close()


def test_same_name_is_the_same_lock(seg: Segment) -> None:
    a, b = seg.lock("x"), seg.lock("x")
    a.acquire()
    assert b.locked() and b._is_owned()
    b.release()
    assert not a.locked()


def test_a_fork_child_holds_none_of_its_parents_locks(seg: Segment, lock: Lock) -> None:
    """A child forked while the parent holds a lock does not own it: its
    release() raises LockNotOwned, and its close() works instead of
    refusing forever with SegmentBusy; the parent still holds the lock
    (issue 9, defect 9)."""
    assert lock.acquire()
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports one line, and never returns into pytest
        outcome = []
        try:
            lock.release()
            outcome.append("released")
        except errors.LockNotOwned:
            outcome.append("not owned")
        try:
            seg.close()
            outcome.append("closed")
        except errors.SegmentBusy as exc:
            outcome.append(f"busy: {exc}")
        os.write(writer, ";".join(outcome).encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as child_said:
        said = child_said.read()
    os.waitpid(pid, 0)
    assert said == "not owned;closed"
    assert lock.locked()
    lock.release()
