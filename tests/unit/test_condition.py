"""The condition in one process: threading.Condition's interface."""

from __future__ import annotations

import threading

import pytest
from helpers import HANG, joined


from herdcache import Condition, Segment, errors


@pytest.fixture
def cond(seg: Segment) -> Condition:
    return seg.condition("c")


def test_wait_times_out_with_false_and_holds_the_lock_again(cond: Condition) -> None:
    with cond:
        assert cond.wait(timeout=0.05) is False
        assert cond.lock._is_owned()
        assert cond.wait(timeout=0) is False
    assert not cond.lock.locked()


def test_wait_without_the_lock_raises(cond: Condition) -> None:
    with pytest.raises(errors.LockNotOwned):
        cond.wait(timeout=0.01)
    assert not cond.lock.locked()


def test_wait_for_returns_at_once_when_the_predicate_holds(cond: Condition) -> None:
    with cond:
        assert cond.wait_for(lambda: "ready") == "ready"


def test_wait_for_times_out_with_the_last_predicate_value(cond: Condition) -> None:
    calls = []

    def predicate() -> int:
        calls.append(1)
        return 0

    with cond:
        assert cond.wait_for(predicate, timeout=0.05) == 0
        assert cond.lock._is_owned()
    assert len(calls) >= 2, "the predicate was not tested again after the wait"


def test_notify_wakes_a_waiting_thread(seg: Segment, cond: Condition) -> None:
    flag = seg.counter("flag")
    waiting = threading.Event()
    result: list[bool] = []

    def waiter() -> None:
        with cond:
            waiting.set()
            result.append(cond.wait_for(lambda: flag.load() == 1, timeout=60))

    thread = threading.Thread(target=waiter)
    thread.start()
    assert waiting.wait(HANG), "the waiting thread never started"
    with cond:  # the waiter has released the lock inside wait()
        flag.store(1)
        cond.notify()
    joined(thread)
    assert result == [True]


def test_notify_without_waiters_is_harmless(cond: Condition) -> None:
    with cond:
        cond.notify()
        cond.notify(0)
        cond.notify_all()
        with pytest.raises(ValueError):
            cond.notify(-1)


def test_notify_needs_the_lock_as_threading_condition_does(cond: Condition) -> None:
    """A notify outside the lock could slip between a waiter's test of its
    predicate and its sleep; like threading.Condition, it is refused."""
    with pytest.raises(errors.LockNotOwned, match="lock"):
        cond.notify()
    with pytest.raises(errors.LockNotOwned):
        cond.notify_all()


def test_same_name_shares_its_own_lock(seg: Segment) -> None:
    a, b = seg.condition("x"), seg.condition("x")
    with a:
        assert b.lock.locked() and b.lock._is_owned()
    assert seg.names() == ["x"]


def test_conditions_can_share_an_explicit_lock(seg: Segment) -> None:
    lock = seg.lock("state")
    not_empty = seg.condition("not_empty", lock=lock)
    not_full = seg.condition("not_full", lock=lock)
    assert not_empty.lock is lock and not_full.lock is lock
    with not_empty:
        assert lock._is_owned()
        assert not_full.wait(timeout=0.01) is False  # waits on the shared lock
        assert lock._is_owned()
    assert not lock.locked()


def test_condition_and_lock_must_share_a_segment(seg: Segment) -> None:
    other = Segment.anonymous("1MiB")
    with pytest.raises(ValueError, match="one segment"):
        seg.condition("c", lock=other.lock("l"))
