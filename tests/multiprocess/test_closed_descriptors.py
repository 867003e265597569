"""Defect 2 of issue 9: a process that closes descriptors it does not own
(``os.closerange``, a daemonizer) drops its slot's OFD lock, the kernel's
proof that it is alive.  Other processes must still not take its locks while
it runs (two owners in one critical section); once it dies they must; and
the process itself must go on judging others correctly, or fail loudly with
:class:`~herdcache.errors.LivenessLost` where it cannot prove its slot its
own again (an anonymous segment, whose memfd has no name to re-open).
"""

from __future__ import annotations

import os
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Callable

from helpers import HANG, SegmentRef, block_forever, kill, receive, ref, resolve, start_holder

from herdcache import Segment, errors

#: How long the others try for a lock whose live owner closed its
#: descriptors.  Not a latency bound: before the fix they took it at the
#: first probe (10 ms); a window of many probes shows that they no longer do.
PROBE_WINDOW = 0.5


def start_talking(ctx: BaseContext, target: Callable[..., object], *args: object) -> tuple[BaseProcess, Connection]:
    """Start ``target(*args, conn)`` with a two-way pipe; return the child and our end."""
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=target, args=(*args, theirs), daemon=True)
    proc.start()
    theirs.close()
    return proc, ours


def close_all_but(conn: Connection) -> None:
    """Close every descriptor above stderr except ``conn``'s, as daemonizers do."""
    keep = conn.fileno()
    os.closerange(3, keep)
    os.closerange(keep + 1, 65536)


def command(conn: Connection) -> str:
    """The parent's next command."""
    assert conn.poll(HANG), "no command from the parent"
    return str(conn.recv())


def hold_then_close(segref: SegmentRef, conn: Connection) -> None:
    """Take the lock, close every descriptor, then release, take it again and hold it."""
    lock = resolve(segref).lock("lock")
    assert lock.acquire(timeout=HANG)
    close_all_but(conn)
    conn.send("closed")
    assert command(conn) == "release"
    lock.release()
    conn.send("released")
    assert command(conn) == "take"
    assert lock.acquire(timeout=HANG)
    conn.send("holding")
    block_forever()


def test_a_live_owner_that_closed_its_descriptors_keeps_its_lock(ctx: BaseContext, shared: Segment) -> None:
    owner, conn = start_talking(ctx, hold_then_close, ref(shared))
    lock = shared.lock("lock")
    assert receive(conn) == "closed"
    # Before the fix: taken at once, with owner_died, while the owner runs.
    assert not lock.acquire(timeout=PROBE_WINDOW), "took the lock of a live owner"
    conn.send("release")
    assert receive(conn) == "released"
    assert lock.acquire(timeout=HANG) and not lock.owner_died
    lock.release()
    conn.send("take")
    assert receive(conn) == "holding"
    assert not lock.acquire(timeout=PROBE_WINDOW), "took the lock of a live owner"
    kill(owner)
    assert lock.acquire(timeout=HANG), "the dead owner's lock was never taken over"
    assert lock.owner_died
    lock.release()


def take_after_closing(segref: SegmentRef, conn: Connection) -> None:
    """Close every descriptor, then (told to) take the lock and report how it went."""
    lock = resolve(segref).lock("lock")
    close_all_but(conn)
    conn.send("closed")
    assert command(conn) == "take"
    try:
        got = lock.acquire(timeout=HANG / 4)
        conn.send(("acquired", got, lock.owner_died))
        if got:
            lock.release()
    except errors.HerdcacheError as exc:
        conn.send((type(exc).__name__, str(exc)))


def test_a_process_that_closed_its_descriptors_still_takes_over_from_a_dead_owner(ctx: BaseContext, segdir: str) -> None:
    """A named segment: the process re-opens its descriptions by name, so its
    own probes see the dead owner.  Before the fix they failed with EBADF,
    read as "alive", and it waited out its whole timeout."""
    seg = Segment.create("named", "4MiB", dir=segdir)
    taker, conn = start_talking(ctx, take_after_closing, ref(seg))
    assert receive(conn) == "closed"
    kill(start_holder(ctx, ref(seg), "lock"))
    conn.send("take")
    assert receive(conn) == ("acquired", True, True)
    taker.join(HANG)
    assert taker.exitcode == 0
    seg.close()


def test_an_anonymous_segment_whose_descriptors_were_closed_fails_loudly() -> None:
    """The memfd of an anonymous segment cannot be opened again once closed:
    the process's next probe raises LivenessLost, naming the cause and the fix,
    rather than judging other processes through a descriptor it lost."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    seg = Segment.anonymous("4MiB")
    lock = seg.lock("lock")
    taker, conn = start_talking(ctx, take_after_closing, seg)
    assert receive(conn) == "closed"
    assert lock.acquire(timeout=HANG)  # held while the child asks for it
    try:
        conn.send("take")
        name, message = receive(conn)
    finally:
        lock.release()
    assert name == "LivenessLost", message
    assert "closed" in message and "files_preserve" in message
    taker.join(HANG)
    assert taker.exitcode == 0
    seg.close()

