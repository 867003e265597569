"""Helpers shared by the tests: hand a segment to a child process, hold a
lock in a child until it is killed, start, join and kill children.

Processes are synchronised with Events, Barriers, pipes and herdcache's own
conditions, never with sleeps.  The one poll here, :func:`wait_until_asleep`,
watches an observable kernel state (the process is asleep in a futex); it
does not guess how long something takes.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any, Callable, Iterable, Union

from herdcache import Segment

#: The start methods every multi-process feature is tested under.
CONTEXTS = ("fork", "spawn")

#: How long a child may take before the test calls it hung.  A liveness
#: bound, not a latency assertion: healthy runs finish in milliseconds.
HANG = 60.0

#: What a child gets to reach a segment: the Segment itself (inherited by
#: fork) or the (name, dir) it attaches by.
SegmentRef = Union[Segment, "tuple[str, str | None]"]


def ref(seg: Segment) -> SegmentRef:
    """How a child reaches ``seg``: by inheritance if it has no name, else by name."""
    if seg.name is None:
        return seg
    return (seg.name, seg.dir)


def resolve(segref: SegmentRef) -> Segment:
    """The segment behind a :func:`ref`, attached if it came by name."""
    if isinstance(segref, Segment):
        return segref
    name, dir = segref
    return Segment.attach(name, dir=dir)


def block_forever() -> None:
    """Block this thread until the process is killed (no timer, no polling)."""
    threading.Event().wait()


def hold_lock(segref: SegmentRef, lock_name: str, conn: Connection) -> None:
    """Child: take the lock, say so through ``conn``, block until killed."""
    lock = resolve(segref).lock(lock_name)
    assert lock.acquire(timeout=HANG)
    conn.send("holding")
    block_forever()


def start(ctx: BaseContext, target: Callable[..., object], *args: object) -> BaseProcess:
    """Start ``target(*args)`` in a new process of ``ctx``."""
    proc = ctx.Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


def start_with_pipe(ctx: BaseContext, target: Callable[..., object], *args: object) -> tuple[BaseProcess, Connection]:
    """Start ``target(*args, conn)``; return the child and the reading end of ``conn``.

    Children that will be killed report through a pipe of their own, not a
    Queue: a Queue's writer holds a lock shared by every writer, which a
    killed child can take with it, hanging the next child's put().
    """
    reader, writer = ctx.Pipe(duplex=False)
    proc = start(ctx, target, *args, writer)
    writer.close()
    return proc, reader


def receive(conn: Connection) -> Any:
    """The next message from a child, or an AssertionError if none comes."""
    if not conn.poll(HANG):
        raise AssertionError(f"no message from the child within {HANG} s")
    return conn.recv()


def start_holder(ctx: BaseContext, segref: SegmentRef, lock_name: str) -> BaseProcess:
    """A child process that holds ``lock_name`` until it is killed."""
    proc, conn = start_with_pipe(ctx, hold_lock, segref, lock_name)
    assert receive(conn) == "holding"
    return proc


def kill(proc: BaseProcess) -> None:
    """SIGKILL a child that is still running, and reap it.

    A child that already exited fails the test (it was meant to be killed,
    and its pid may be reused: never signal a reaped child).  join()
    without a timeout waits in waitpid(), which SIGKILL ends; with a
    timeout it would watch the child's sentinel pipe, which the child's own
    forked children keep open after its death.
    """
    assert proc.exitcode is None, f"child {proc.pid} had already exited with {proc.exitcode}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert proc.exitcode == -signal.SIGKILL, f"child exited with {proc.exitcode}"


def join_all(procs: Iterable[BaseProcess], timeout: float = HANG) -> None:
    """Join every child; fail if one hangs (it is killed) or exits non-zero."""
    procs = list(procs)
    deadline = time.monotonic() + timeout
    hung = []
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            hung.append(proc.pid)
            kill(proc)
    assert not hung, f"children {hung} were still running after {timeout} s"
    codes = [proc.exitcode for proc in procs]
    assert codes == [0] * len(procs), f"child exit codes {codes}"


def run_all(ctx: BaseContext, target: Callable[..., object], arg_tuples: Iterable[tuple]) -> None:
    """Run ``target(*args)`` in one child per tuple, all at once; all must exit 0."""
    join_all([start(ctx, target, *args) for args in arg_tuples])


def wait_until_asleep(pid: int, tid: int | None = None, sleep: str = "futex", timeout: float = HANG) -> None:
    """Return once process ``pid`` (or its thread ``tid``) sleeps in the
    kernel function named like ``sleep`` (its wchan).

    Used to be sure a child is blocked *inside* acquire() or wait(), or a
    thread inside attach's wait for a creator, before the test acts.  It
    polls the kernel's view of the process, which no message sent from
    Python just before the call could give.  With ``tid`` None the process
    must be single-threaded (a waiting thread's GIL wait is a futex too).
    """
    deadline = time.monotonic() + timeout
    path = f"/proc/{pid}/wchan" if tid is None else f"/proc/{pid}/task/{tid}/wchan"
    while time.monotonic() < deadline:
        with open(path) as f:
            if sleep in f.read():
                return
        time.sleep(0.001)
    raise AssertionError(f"process {pid} did not sleep in {sleep} within {timeout} s")
