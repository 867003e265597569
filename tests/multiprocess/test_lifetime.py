"""Who may remove a segment, and when: only its creator or an explicit
remove; gc() only once no live process is attached."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap

import psutil
from helpers import HANG, SegmentRef, block_forever, join_all, kill, receive, resolve, start_with_pipe

import herdcache
from herdcache import Segment

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def attach_add_exit(segref: SegmentRef, close: bool) -> None:
    """An attach-only process: use the segment, then exit (closing or not)."""
    seg = resolve(segref)
    seg.counter("visits").add(1)
    if close:
        seg.close()


#: Run as its own program so that its resource tracker (shared with its
#: spawned children) shuts down, and says whatever it has to say, before
#: the test reads its stderr.
CYCLES = textwrap.dedent(
    """
    import multiprocessing, sys
    from helpers import join_all, start
    from test_lifetime import attach_add_exit
    name, dir = sys.argv[1], sys.argv[2]
    ctx = multiprocessing.get_context("spawn")
    for batch in range(10):
        join_all([start(ctx, attach_add_exit, (name, dir), i % 2 == 0) for i in range(5)])
    """
)


def test_fifty_attach_and_exit_cycles_never_remove_the_segment(segdir: str) -> None:
    """Regression target: multiprocessing.shared_memory's resource tracker
    unlinks a segment when an attach-only process exits (CPython gh-82300)."""
    with Segment.create("kept", "1MiB", dir=segdir) as seg:
        done = subprocess.run(
            [sys.executable, "-c", CYCLES, "kept", segdir],
            capture_output=True,
            text=True,
            timeout=HANG * 2,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([TESTS_DIR, os.path.join(TESTS_DIR, "multiprocess")])},
        )
        assert done.returncode == 0, done.stderr
        assert "resource_tracker" not in done.stderr and "leaked" not in done.stderr, done.stderr
        assert done.stderr == ""
        assert seg.counter("visits").load() == 50
        assert herdcache.list_segments(segdir) == ["kept"]
    with Segment.attach("kept", dir=segdir) as again:
        assert again.counter("visits").load() == 50


def read_and_reply(name: str, dir: str, conn) -> None:
    seg = Segment.attach(name, dir=dir)
    view, found = seg.struct("message", 5)
    conn.send((found, bytes(view)))
    view[:] = b"world"
    seg.counter("replies").add(1)


def test_forkserver_children_attach_by_name(segdir: str) -> None:
    ctx = multiprocessing.get_context("forkserver")
    with Segment.create("byname", "1MiB", dir=segdir) as seg:
        view, _ = seg.struct("message", 5)
        view[:] = b"hello"
        child, conn = start_with_pipe(ctx, read_and_reply, "byname", segdir)
        assert receive(conn) == (True, b"hello")
        join_all([child])
        assert bytes(view) == b"world"
        assert seg.counter("replies").load() == 1
        del view


def sleep_attached(name: str, dir: str, conn) -> None:
    seg = Segment.attach(name, dir=dir)  # attached while this frame lives
    conn.send(seg.info()["attached"])
    block_forever()


def test_gc_spares_a_segment_with_a_live_attacher_and_removes_it_after_its_death(segdir: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    Segment.create("s", "1MiB", dir=segdir).close()  # the creator is gone
    sleeper, conn = start_with_pipe(ctx, sleep_attached, "s", segdir)
    assert receive(conn) == 1
    assert herdcache.is_orphan("s", dir=segdir) is False
    assert herdcache.gc(segdir) == []
    assert herdcache.list_segments(segdir) == ["s"]
    kill(sleeper)
    assert herdcache.is_orphan("s", dir=segdir) is True
    assert herdcache.gc(segdir) == ["s"]
    assert herdcache.list_segments(segdir) == []


def test_gc_never_removes_a_segment_this_process_uses(segdir: str) -> None:
    with Segment.create("mine", "1MiB", dir=segdir):
        Segment.create("orphan", "1MiB", dir=segdir).close()
        assert herdcache.gc(segdir) == ["orphan"]
        assert herdcache.list_segments(segdir) == ["mine"]


# -- the creator dies while its forked children keep working -----------------

WORKERS = 4


def traffic(seg: Segment) -> None:
    """A worker forked by the creator: read-modify-write under the lock until
    told to stop; any exception is counted, not lost with the process."""
    lock, total, errors = seg.lock("lock"), seg.counter("total"), seg.counter("errors")
    cv, started, stop, finished = seg.condition("cv", lock=lock), seg.counter("started"), seg.counter("stop"), seg.counter("finished")
    view, _ = seg.struct("value", 8)
    try:
        with cv:
            started.add(1)
            cv.notify_all()
        n = 0
        while stop.load() == 0:
            with lock:
                view[:] = (int.from_bytes(view, "little") + 1).to_bytes(8, "little")
            total.add(1)
            n += 1
            if n % 256 == 0:
                with cv:
                    cv.notify_all()
    except BaseException:
        errors.add(1)
        raise
    finally:
        with cv:
            finished.add(1)
            cv.notify_all()


def creator(segdir: str, pids) -> None:
    """Create the segment, fork the workers, then wait to be killed."""
    seg = Segment.create("work", "1MiB", dir=segdir)
    for _ in range(WORKERS):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                traffic(seg)
                code = 0
            finally:
                os._exit(code)
        pids.send(pid)
    block_forever()


def test_workers_outlive_their_killed_creator_and_gc_waits_for_them(segdir: str) -> None:
    ctx = multiprocessing.get_context("fork")
    parent, pids = start_with_pipe(ctx, creator, segdir)
    workers = [psutil.Process(receive(pids)) for _ in range(WORKERS)]
    seg = Segment.attach("work", dir=segdir)
    lock = seg.lock("lock")
    cv, total = seg.condition("cv", lock=lock), seg.counter("total")
    with cv:
        assert cv.wait_for(lambda: seg.counter("started").load() == WORKERS, timeout=HANG)
    kill(parent)
    with cv:  # the workers go on after their creator's death
        after_kill = total.load()
        assert cv.wait_for(lambda: total.load() >= after_kill + 10_000, timeout=HANG)
    assert herdcache.gc(segdir) == [] and herdcache.list_segments(segdir) == ["work"]
    seg.counter("stop").store(1)
    with cv:
        assert cv.wait_for(lambda: seg.counter("finished").load() == WORKERS, timeout=HANG)
    assert seg.counter("errors").load() == 0
    view, _ = seg.struct("value", 8)
    assert int.from_bytes(view, "little") == total.load(), "an update under the lock was lost"
    view.release()
    seg.close()
    _, alive = psutil.wait_procs(workers, timeout=HANG)
    assert not alive
    assert herdcache.list_segments(segdir) == ["work"], "the segment vanished without an unlink"
    assert herdcache.gc(segdir) == ["work"]
