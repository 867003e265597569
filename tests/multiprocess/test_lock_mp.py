"""The lock across processes: exclusive, and never wedged by a dead owner."""

from __future__ import annotations

import multiprocessing
import os
import signal
from multiprocessing.context import BaseContext

import pytest
from helpers import (
    HANG,
    SegmentRef,
    join_all,
    kill,
    receive,
    ref,
    resolve,
    run_all,
    start_holder,
    start_with_pipe,
    wait_until_asleep,
)

from herdcache import Segment, errors


def test_killed_holder_is_detected_by_the_next_acquire(ctx: BaseContext, shared: Segment) -> None:
    lock = shared.lock("l")
    holder = start_holder(ctx, ref(shared), "l")
    assert lock.locked()
    assert lock.acquire(timeout=0.2) is False, "took a lock a live process holds"
    assert lock.acquire(blocking=False) is False
    kill(holder)
    assert lock.acquire(timeout=HANG) is True
    assert lock.owner_died is True
    lock.release()
    assert lock.acquire(timeout=HANG) is True
    assert lock.owner_died is False, "owner_died stuck after a clean release"
    lock.release()


def test_non_blocking_acquire_takes_a_dead_owners_lock(ctx: BaseContext, shared: Segment) -> None:
    lock = shared.lock("l")
    kill(start_holder(ctx, ref(shared), "l"))
    assert lock.acquire(blocking=False) is True
    assert lock.owner_died is True
    lock.release()


def acquire_and_report(segref: SegmentRef, lock_name: str, conn) -> None:
    """Say "waiting", block in acquire(), then send (acquired, owner_died)."""
    lock = resolve(segref).lock(lock_name)
    conn.send("waiting")
    got = lock.acquire(timeout=HANG)
    conn.send((got, lock.owner_died))
    if got:
        lock.release()


def test_waiter_blocked_in_acquire_gets_the_lock_when_the_owner_is_killed(ctx: BaseContext, shared: Segment) -> None:
    holder = start_holder(ctx, ref(shared), "l")
    waiter, conn = start_with_pipe(ctx, acquire_and_report, ref(shared), "l")
    assert receive(conn) == "waiting"
    wait_until_asleep(waiter.pid)  # inside acquire(), asleep on the lock
    kill(holder)
    assert receive(conn) == (True, True)
    join_all([waiter])
    assert not shared.lock("l").locked()


def test_several_blocked_waiters_all_get_it_and_one_hears_of_the_death(ctx: BaseContext, shared: Segment) -> None:
    holder = start_holder(ctx, ref(shared), "l")
    waiters = [start_with_pipe(ctx, acquire_and_report, ref(shared), "l") for _ in range(3)]
    for proc, conn in waiters:
        assert receive(conn) == "waiting"
        wait_until_asleep(proc.pid)
    kill(holder)
    results = [receive(conn) for _, conn in waiters]
    join_all([proc for proc, _ in waiters])
    assert all(got for got, _ in results)
    assert sorted(died for _, died in results) == [False, False, True]


def test_lock_held_by_a_live_process_times_out(ctx: BaseContext, shared: Segment) -> None:
    lock = shared.lock("l")
    lock.acquire()
    waiter, conn = start_with_pipe(ctx, acquire_with_timeout, ref(shared), "l", 0.2)
    assert receive(conn) is False
    join_all([waiter])
    lock.release()


def acquire_with_timeout(segref: SegmentRef, lock_name: str, timeout: float, conn) -> None:
    conn.send(resolve(segref).lock(lock_name).acquire(timeout=timeout))


def increment_under_lock(segref: SegmentRef, barrier, rounds: int) -> None:
    """A read-modify-write of a shared struct, safe only under the lock."""
    seg = resolve(segref)
    lock = seg.lock("guard")
    view, _ = seg.struct("total", 8)
    barrier.wait(HANG)
    for _ in range(rounds):
        with lock:
            value = int.from_bytes(view, "little")
            view[:] = (value + 1).to_bytes(8, "little")


def test_lock_makes_read_modify_write_exact_across_processes(ctx: BaseContext, shared: Segment) -> None:
    barrier = ctx.Barrier(4)
    run_all(ctx, increment_under_lock, [(ref(shared), barrier, 5_000)] * 4)
    view, _ = shared.struct("total", 8)
    assert int.from_bytes(view, "little") == 20_000
    del view


def child_of_holder(lock, conn) -> None:
    """In a child forked while the parent holds ``lock``: it is not ours."""
    conn.send((lock.locked(), lock._is_owned(), lock.acquire(timeout=0.2)))
    try:
        lock.release()
        conn.send("released")
    except errors.LockNotOwned:
        conn.send("not owned")
    conn.send(lock.acquire(timeout=HANG))  # the parent releases it now
    lock.release()


def test_lock_held_across_fork_belongs_to_the_parent_only(shared: Segment) -> None:
    ctx = multiprocessing.get_context("fork")
    lock = shared.lock("l")
    lock.acquire()
    child, conn = start_with_pipe(ctx, child_of_holder, lock)
    assert receive(conn) == (True, False, False)
    assert receive(conn) == "not owned"
    assert lock._is_owned(), "the child's release freed the parent's lock"
    lock.release()
    assert receive(conn) is True
    join_all([child])
    assert not lock.locked()


def interruptible_acquire(segref: SegmentRef, conn) -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    lock = resolve(segref).lock("l")
    conn.send("waiting")
    try:
        lock.acquire()
        conn.send("acquired")
    except KeyboardInterrupt:
        conn.send(("interrupted", lock._is_owned()))


def test_ctrl_c_interrupts_a_blocked_acquire(ctx: BaseContext, shared: Segment) -> None:
    lock = shared.lock("l")
    lock.acquire()
    child, conn = start_with_pipe(ctx, interruptible_acquire, ref(shared))
    assert receive(conn) == "waiting"
    wait_until_asleep(child.pid)
    os.kill(child.pid, signal.SIGINT)
    assert receive(conn) == ("interrupted", False)
    join_all([child])
    assert lock._is_owned()
    lock.release()


def churn(segref: SegmentRef, conn) -> None:
    """Take and release the lock forever, keeping begin/end counts under it."""
    seg = resolve(segref)
    lock, begun, ended = seg.lock("l"), seg.counter("begun"), seg.counter("ended")
    with lock:
        begun.add(1)
        ended.add(1)
    conn.send("running")
    while True:
        with lock:
            begun.add(1)
            ended.add(1)


def kill_holders(shared: Segment, kills: int) -> None:
    """Kill a holder inside its critical section, then a churner at a random
    point; after each death the lock is taken at once and the counts agree
    unless the dead process was inside (then ``owner_died`` says so)."""
    ctx = multiprocessing.get_context("fork")
    lock = shared.lock("l")
    begun, ended = shared.counter("begun"), shared.counter("ended")
    for _ in range(kills):
        kill(start_holder(ctx, ref(shared), "l"))
        assert lock.acquire(timeout=HANG) and lock.owner_died
        lock.release()
        child, conn = start_with_pipe(ctx, churn, ref(shared))
        assert receive(conn) == "running"
        kill(child)
        assert lock.acquire(timeout=HANG)
        gap = begun.load() - ended.load()
        assert gap in ((0, 1) if lock.owner_died else (0,)), (gap, lock.owner_died)
        ended.store(begun.load())
        lock.release()


@pytest.mark.parametrize("kills", [20, pytest.param(1000, marks=pytest.mark.stress)])
def test_lock_survives_repeated_holder_kills(kills: int) -> None:
    with Segment.anonymous("1MiB") as shared:
        kill_holders(shared, kills)
        assert not shared.lock("l").locked()
