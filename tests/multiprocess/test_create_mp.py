"""Creating segments from several processes: private whatever the umask,
and exactly one creator when many open() at once."""

from __future__ import annotations

import multiprocessing
import os
import stat
from multiprocessing.context import BaseContext

from helpers import HANG, join_all, receive, start, start_with_pipe

from herdcache import Segment


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
    conn.send(seg._handle.created)
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
