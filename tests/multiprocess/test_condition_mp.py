"""The condition across processes: every waiter wakes, none is lost, a dead
waiter leaves nothing behind.

Every test shares one lock between the condition under test (``cv``) and a
second condition (``arrived``) on which waiters announce that they are
about to wait.  Holding that lock with all waiters announced proves they
have all released it inside ``wait()``, so a notify from then on must
reach them: no sleep is needed to "let them get there".
"""

from __future__ import annotations

import multiprocessing.connection
import os
import signal
import threading
from multiprocessing.context import BaseContext

from helpers import (
    HANG,
    WOKEN,
    SegmentRef,
    block_forever,
    join_all,
    joined,
    kill,
    receive,
    receive_from_each,
    ref,
    resolve,
    start,
    start_with_pipe,
    wait_until_asleep,
)

from herdcache import Segment

WAITERS = 4


def conditions(seg: Segment):
    """(cv, arrived, waiting, flag) of the scenario, all on one lock."""
    lock = seg.lock("lock")
    return seg.condition("cv", lock=lock), seg.condition("arrived", lock=lock), seg.counter("waiting"), seg.counter("flag")


def wait_for_flag(segref: SegmentRef, value: int, conn=None) -> None:
    """Announce, then wait without a timeout until flag == value.

    No timeout: a waiter that is never woken hangs, and the test's join
    reports it.  ``conn``, if given, counts every test of the predicate.
    """
    seg = resolve(segref)
    cv, arrived, waiting, flag = conditions(seg)
    tests = seg.counter("predicate_tests")

    def predicate() -> bool:
        tests.add(1)
        arrived.notify_all()
        return flag.load() == value

    with cv:
        waiting.add(1)
        arrived.notify_all()
        assert cv.wait_for(predicate) is True
        assert cv.lock._is_owned()
    if conn is not None:
        conn.send("woke")


def until_waiting(seg: Segment, count: int):
    """Hold the lock once ``count`` waiters have announced themselves; return cv."""
    cv, arrived, waiting, _ = conditions(seg)
    arrived.acquire()
    assert arrived.wait_for(lambda: waiting.load() >= count, timeout=HANG)
    return cv


def test_notify_all_wakes_every_waiter_in_every_process(ctx: BaseContext, shared: Segment) -> None:
    waiters = [start(ctx, wait_for_flag, ref(shared), 1) for _ in range(WAITERS)]
    cv = until_waiting(shared, WAITERS)
    shared.counter("flag").store(1)
    cv.notify_all()
    cv.release()
    join_all(waiters)


def wait_once(segref: SegmentRef, conn) -> None:
    """Announce, then one raw wait() without a timeout; send what it returned.

    No predicate and no timeout: only a notify ends this wait, so a notify
    that misses this process leaves it asleep, and the test names it.
    """
    cv, arrived, waiting, _ = conditions(resolve(segref))
    with cv:
        waiting.add(1)
        arrived.notify_all()
        conn.send(cv.wait())


def test_notify_all_ends_every_raw_wait(ctx: BaseContext, shared: Segment) -> None:
    """wait_for() re-tests its predicate every 50 ms and would hide a
    notify_all() that wakes only one waiter; a raw wait() does not."""
    waiters = dict(start_with_pipe(ctx, wait_once, ref(shared)) for _ in range(WAITERS))
    cv = until_waiting(shared, WAITERS)  # all inside wait(): we hold the lock
    cv.notify_all()
    cv.release()
    returned = receive_from_each(waiters, "waiting in Condition.wait() for notify_all()", timeout=WOKEN)
    assert set(returned.values()) == {True}, f"wait() returned {returned}"
    join_all(waiters)


def test_each_notify_one_wakes_at_least_one_waiter(ctx: BaseContext, shared: Segment) -> None:
    waiters = dict(start_with_pipe(ctx, wait_for_flag, ref(shared), 1) for _ in range(3))
    cv = until_waiting(shared, 3)
    shared.counter("flag").store(1)
    cv.release()
    pending = {conn: proc for proc, conn in waiters.items()}
    while pending:
        with cv:
            cv.notify(1)
        woken = multiprocessing.connection.wait(list(pending), timeout=WOKEN)
        assert woken, f"notify(1) woke none of {len(pending)} waiters"
        for conn in woken:
            assert conn.recv() == "woke"
            del pending[conn]
    join_all(waiters)


def test_wait_for_sleeps_again_after_a_wakeup_that_changes_nothing(ctx: BaseContext, shared: Segment) -> None:
    waiter = start(ctx, wait_for_flag, ref(shared), 1)
    tests = shared.counter("predicate_tests")
    cv = until_waiting(shared, 1)
    arrived = conditions(shared)[1]
    assert tests.load() == 1
    cv.notify_all()  # spurious: the predicate is still false
    assert arrived.wait_for(lambda: tests.load() == 2, timeout=HANG)
    assert waiter.is_alive(), "wait_for returned on a wakeup that changed nothing"
    shared.counter("flag").store(1)
    cv.notify_all()
    cv.release()
    join_all([waiter])
    assert tests.load() == 3


def test_waiter_killed_while_waiting_leaves_nothing_behind(ctx: BaseContext, shared: Segment) -> None:
    doomed = start(ctx, wait_for_flag, ref(shared), 1)
    survivor = start(ctx, wait_for_flag, ref(shared), 1)
    cv = until_waiting(shared, 2)
    kill(doomed)  # inside wait(): it holds nothing
    shared.counter("flag").store(1)
    cv.notify_all()
    cv.release()
    join_all([survivor])
    # A new round of waiting and notifying works as on a fresh condition.
    later = start(ctx, wait_for_flag, ref(shared), 2)
    cv = until_waiting(shared, 3)
    shared.counter("flag").store(2)
    cv.notify_all()
    cv.release()
    join_all([later])
    assert cv.lock.acquire(timeout=HANG) and not cv.lock.owner_died
    cv.release()


def test_waiter_that_times_out_returns_false_with_the_lock(ctx: BaseContext, shared: Segment) -> None:
    child, conn = start_with_pipe(ctx, wait_with_timeout, ref(shared))
    assert receive(conn) == (False, True)
    join_all([child])


def wait_with_timeout(segref: SegmentRef, conn) -> None:
    cv = resolve(segref).condition("alone")
    with cv:
        conn.send((cv.wait(timeout=0.1), cv.lock._is_owned()))


def interruptible_wait(segref: SegmentRef, conn) -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    cv = resolve(segref).condition("alone")
    with cv:
        conn.send("waiting")
        try:
            cv.wait()
            conn.send("woken")
        except KeyboardInterrupt:
            conn.send(("interrupted", cv.lock._is_owned()))
    conn.send(cv.lock.locked())


def test_ctrl_c_interrupts_wait_and_the_with_block_releases_the_lock(ctx: BaseContext, shared: Segment) -> None:
    child, conn = start_with_pipe(ctx, interruptible_wait, ref(shared))
    assert receive(conn) == "waiting"
    wait_until_asleep(child.pid)
    os.kill(child.pid, signal.SIGINT)
    assert receive(conn) == ("interrupted", True)  # wait() took the lock back
    assert receive(conn) is False
    join_all([child])


def notify_then_die_holding_the_lock(segref: SegmentRef, conn) -> None:
    seg = resolve(segref)
    cv = seg.condition("alone")
    cv.acquire()
    seg.counter("flag").store(1)
    cv.notify_all()
    conn.send("holding")
    block_forever()


def test_waiter_wakes_even_if_the_notifier_dies_holding_the_lock(ctx: BaseContext, shared: Segment) -> None:
    """wait() re-takes the lock from the dead notifier and says so in owner_died."""
    cv, flag = shared.condition("alone"), shared.counter("flag")
    with cv:
        notifier, conn = start_with_pipe(ctx, notify_then_die_holding_the_lock, ref(shared))
        killer = threading.Thread(target=lambda: (receive(conn), kill(notifier)))
        killer.start()
        assert cv.wait_for(lambda: flag.load() == 1, timeout=HANG)
        assert cv.lock.owner_died is True
    joined(killer)
    assert not cv.lock.locked()


def wait_then_report(segref: SegmentRef, timeout: float, conn) -> None:
    """Announce, wait(timeout) on cv inside a with block, and report how it
    ended and the lock's state once out of the block."""
    from herdcache import errors

    seg = resolve(segref)
    cv, arrived, waiting, _ = conditions(seg)
    try:
        with cv:
            waiting.add(1)
            arrived.notify_all()
            outcome: tuple = ("returned", cv.wait(timeout))
    except errors.LockNotRetaken as exc:  # and not LockNotOwned from the with's exit
        outcome = ("LockNotRetaken", isinstance(exc, TimeoutError), "not held" in str(exc))
    conn.send((outcome, cv.lock._is_owned(), cv.lock.locked()))
    assert cv.lock.acquire(timeout=HANG)
    conn.send("acquired again")
    cv.lock.release()


def test_wait_timeout_bounds_taking_the_lock_back(ctx: BaseContext, shared: Segment) -> None:
    """A waiter whose timeout passes while another process keeps the lock does
    not block until that process lets go: wait raises LockNotRetaken (a
    TimeoutError), the lock is not held, and its with block exits cleanly."""
    waiter, conn = start_with_pipe(ctx, wait_then_report, ref(shared), 0.2)
    cv = until_waiting(shared, 1)  # we hold the lock, the waiter sleeps
    try:
        outcome, owned, locked = receive(conn)  # before the fix: never, while we hold it
        assert outcome == ("LockNotRetaken", True, True), outcome
        assert not owned and locked, "the waiter must not hold the lock; we do"
    finally:
        cv.lock.release()
    assert receive(conn) == "acquired again"
    join_all([waiter])


def hold_until_told(segref: SegmentRef, conn) -> None:
    """Take the lock once the waiter sleeps, hold it until the parent says 'go'."""
    seg = resolve(segref)
    cv, arrived, waiting, flag = conditions(seg)
    with arrived:
        assert arrived.wait_for(lambda: waiting.load() >= 1, timeout=HANG)
        conn.send("holding")
        assert conn.poll(HANG), "the parent never said go"
        conn.recv()
        flag.store(1)
        cv.notify_all()


def test_wait_for_without_timeout_takes_the_lock_back_however_long_it_is_held(ctx: BaseContext, shared: Segment) -> None:
    """wait_for(timeout=None) sleeps in 50 ms slices, but taking the lock back
    after a slice is not bounded by the slice: a holder that keeps the lock
    for many slices delays it, never makes it raise."""
    reader, writer = ctx.Pipe()
    holder = start(ctx, hold_until_told, ref(shared), writer)
    cv, _, waiting, flag = conditions(shared)
    result: list[object] = []

    def waiter() -> None:
        with cv:
            waiting.add(1)
            conditions(shared)[1].notify_all()
            result.append(cv.wait_for(lambda: flag.load() == 1))

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    assert receive(reader) == "holding"
    # Let several 50 ms slices end while the holder keeps the lock: the
    # waiter is then blocked taking it back, which it must keep doing.
    seen = waiting.load()
    assert not threading.Event().wait(0.3) and seen == 1
    reader.send("go")
    joined(thread)
    assert result == [True]
    join_all([holder])
