"""Creating segments from several processes: private whatever the umask,
and exactly one creator when many open() at once."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import stat
import threading
from multiprocessing.context import BaseContext

import pytest
from helpers import HANG, block_forever, join_all, kill, receive, start, start_with_pipe, wait_until_asleep

from herdcache import Segment, errors


def create_under_umask_zero(segdir: str, conn) -> None:
    os.umask(0)
    with Segment.create("loose", "1MiB", dir=segdir) as seg:
        conn.send(stat.S_IMODE(os.stat(seg.path).st_mode))


def test_mode_is_0600_even_under_umask_zero(segdir: str) -> None:
    """umask is per process: set it to 0 in a child, not in the test runner."""
    child, conn = start_with_pipe(multiprocessing.get_context("fork"), create_under_umask_zero, segdir)
    assert receive(conn) == 0o600
    join_all([child])


def open_at_once(segdir: str, barrier, conn) -> None:
    barrier.wait(HANG)
    seg = Segment.open("raced", "1MiB", dir=segdir)
    seg.counter("openers").add(1)
    conn.send(seg.created)
    barrier.wait(HANG)  # nobody closes before everybody has opened


def test_processes_racing_to_open_create_it_once(ctx: BaseContext, segdir: str) -> None:
    barrier = ctx.Barrier(8)
    children = [start_with_pipe(ctx, open_at_once, segdir, barrier) for _ in range(8)]
    created = [receive(conn) for _, conn in children]
    join_all([proc for proc, _ in children])
    assert created.count(True) == 1
    with Segment.attach("raced", dir=segdir) as seg:
        assert seg.counter("openers").load() == 8


def attach_and_count(name: str, segdir: str) -> None:
    with Segment.attach(name, dir=segdir) as seg:
        seg.counter("seen").add(1)


def test_spawned_children_attach_a_named_segment(segdir: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    with Segment.create("named", "1MiB", dir=segdir) as seg:
        join_all([start(ctx, attach_and_count, "named", segdir) for _ in range(3)])
        assert seg.counter("seen").load() == 3


#: The byte of the file a creator holds an fcntl lock on while it writes
#: the header (HC_INIT_LOCK_BYTE = HC_MAX_SLOTS in segment.c).
INIT_LOCK_BYTE = 1024


def segment_image(segdir: str) -> bytes:
    """The bytes of a finished segment whose counter "c" is 5."""
    with Segment.create("template", "1MiB", dir=segdir) as seg:
        seg.counter("c").store(5)
        path = seg.path
    with open(path, "rb") as f:
        image = f.read()
    os.unlink(path)
    return image


def slow_creator(path: str, image: bytes, go, conn) -> None:
    """Create the file the way herdcache does, but pause before writing the
    header (holding the creation lock) until ``go`` is set (never if None)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, INIT_LOCK_BYTE, os.SEEK_SET)
    os.ftruncate(fd, len(image))
    conn.send("creating")
    if go is None:
        block_forever()
    assert go.wait(HANG)
    os.pwrite(fd, image[8:], 8)
    os.pwrite(fd, image[:8], 0)  # the magic last, as herdcache's creator does
    os.close(fd)  # and the creation lock goes with the descriptor


def test_attach_waits_for_a_creator_at_work(segdir: str) -> None:
    ctx = multiprocessing.get_context("fork")
    image, go = segment_image(segdir), ctx.Event()
    creator, conn = start_with_pipe(ctx, slow_creator, os.path.join(segdir, "herdcache.slow"), image, go)
    assert receive(conn) == "creating"
    attached: list = []
    attacher = threading.Thread(target=lambda: attached.append(Segment.attach("slow", dir=segdir)))
    attacher.start()
    wait_until_asleep(os.getpid(), tid=attacher.native_id, sleep="nanosleep")  # polling for the header
    go.set()
    attacher.join(HANG)
    join_all([creator])
    assert attached, "attach failed while the creator was still at work"
    with attached[0] as seg:
        assert seg.counter("c").load() == 5


def test_attach_gives_up_on_a_creator_that_never_finishes(segdir: str) -> None:
    ctx = multiprocessing.get_context("fork")
    creator, conn = start_with_pipe(ctx, slow_creator, os.path.join(segdir, "herdcache.stuck"), segment_image(segdir), None)
    assert receive(conn) == "creating"
    try:
        with pytest.raises(errors.CorruptSegment, match="still being created"):
            Segment.attach("stuck", dir=segdir, timeout=1.0)
    finally:
        kill(creator)
