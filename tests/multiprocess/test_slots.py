"""Process slots: who is attached, as the kernel sees it."""

from __future__ import annotations

import os
from multiprocessing.context import BaseContext

from helpers import SegmentRef, block_forever, join_all, kill, receive, ref, resolve, start_with_pipe

from herdcache import Segment


def report_slot(segref: SegmentRef, block: bool, conn) -> None:
    """Attach, send (pid, slot, attached), then block until killed or exit."""
    seg = resolve(segref)  # stays attached while this frame lives
    info = seg.info()
    conn.send((os.getpid(), info["slot"], info["attached"]))
    if block:
        block_forever()


def attached_child(ctx: BaseContext, seg: Segment):
    """A child attached to ``seg`` until killed, and its (pid, slot, attached)."""
    proc, conn = start_with_pipe(ctx, report_slot, ref(seg), True)
    return proc, receive(conn)


def test_attached_counts_live_processes_and_forgets_killed_ones(ctx: BaseContext, shared: Segment) -> None:
    assert shared.info()["attached"] == 1
    children = []
    for expected in (2, 3, 4):
        child, (pid, _, attached) = attached_child(ctx, shared)
        children.append(child)
        assert (pid, attached) == (child.pid, expected)
    assert shared.info()["attached"] == 4
    kill(children.pop(0))
    assert shared.info()["attached"] == 3
    for child in children:
        kill(child)
    assert shared.info()["attached"] == 1


def test_every_process_has_its_own_slot(ctx: BaseContext, shared: Segment) -> None:
    """A forked child does not share its parent's slot, nor do siblings share one."""
    children = [attached_child(ctx, shared) for _ in range(4)]
    slots = [slot for _, (_, slot, _) in children]
    assert len(set(slots + [shared.info()["slot"]])) == 5
    for child, _ in children:
        kill(child)


def test_a_clean_exit_frees_the_slot(ctx: BaseContext, shared: Segment) -> None:
    child, conn = start_with_pipe(ctx, report_slot, ref(shared), False)
    assert receive(conn)[2] == 2
    join_all([child])
    assert shared.info()["attached"] == 1


def test_slot_of_a_killed_process_is_free_for_the_next_one(ctx: BaseContext, shared: Segment) -> None:
    """The kernel, not a pid, says the slot's owner is gone: attach never runs out."""
    for _ in range(5):
        child, (_, _, attached) = attached_child(ctx, shared)
        assert attached == 2
        kill(child)
    assert shared.info()["attached"] == 1
