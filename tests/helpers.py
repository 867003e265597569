"""Helpers shared by the tests: hand a segment to a child process, hold a
lock in a child until it is killed, start, join and kill children.

Processes are synchronised with Events, Barriers, pipes and herdcache's own
conditions, never with sleeps.  The polls here, :func:`wait_until` and
:func:`wait_until_asleep`, watch an observable state (a counter moved, the
process is asleep in a futex); they do not guess how long something takes.

Every wait has a deadline of its own, far below pytest-timeout's 120 s,
and fails with an assertion that says what it waited for and what it saw.
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from multiprocessing.connection import Connection, wait
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import IO, Any, Callable, Iterable, Union

from herdcache import Segment

#: The start methods every multi-process feature is tested under.
CONTEXTS = ("fork", "spawn")

#: How long a child may take before the test calls it hung.  A liveness
#: bound, not a latency assertion: healthy runs finish in milliseconds.
HANG = 60.0

#: How long a process that was woken (notified, released) may take to say
#: so: it is running already, so this bound is shorter than HANG.
WOKEN = 10.0

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


def wait_until(
    predicate: Callable[[], object], what: str, seen: Callable[[], object] | None = None, timeout: float = HANG
) -> None:
    """Poll ``predicate`` until it is true; after ``timeout`` fail with an
    assertion naming ``what`` was awaited and, if ``seen`` is given, what
    ``seen()`` shows at that moment."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not predicate():
        if time.monotonic() > deadline:
            found = "" if seen is None else f"; saw {seen()}"
            raise AssertionError(f"gave up after {timeout:.0f} s waiting until {what}{found}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def joined(*threads: threading.Thread, timeout: float = HANG) -> None:
    """Join ``threads``; fail naming those still running after ``timeout``."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    running = [thread.name for thread in threads if thread.is_alive()]
    assert not running, f"threads {running} still running after {timeout:.0f} s"


def read_line(stream: IO[str], what: str, timeout: float = HANG) -> str:
    """The next line of a child's pipe ``stream``, failing after
    ``timeout`` seconds with ``what`` was awaited."""
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"gave up after {timeout:.0f} s waiting for a line: {what}"
    return stream.readline()


def receive_from_each(children: dict[BaseProcess, Connection], what: str, timeout: float = HANG) -> dict[BaseProcess, Any]:
    """One message from each child, all within ``timeout``; else fail saying
    how many reported and which pids are still ``what``."""
    deadline = time.monotonic() + timeout
    pending = {conn: proc for proc, conn in children.items()}
    got: dict[BaseProcess, Any] = {}
    while pending:
        ready = wait(list(pending), timeout=max(0.0, deadline - time.monotonic()))
        if not ready:
            late = sorted(proc.pid for proc in pending.values())
            raise AssertionError(f"{len(got)} of {len(children)} returned; pids {late} still {what} after {timeout:.0f} s")
        for conn in ready:
            proc = pending.pop(conn)
            try:
                got[proc] = conn.recv()
            except EOFError:
                raise AssertionError(f"pid {proc.pid} ended (exit code {proc.exitcode}) without reporting") from None
    return got


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
