"""Processes racing for one name: exactly one allocates, all share the memory."""

from __future__ import annotations

from multiprocessing.context import BaseContext

from helpers import HANG, SegmentRef, join_all, ref, resolve, start

from herdcache import Segment, errors

RACERS = 16


def race_for_struct(segref: SegmentRef, barrier, index: int, results) -> None:
    """Ask for struct "x" at the same moment as the others; mark our byte; read all."""
    seg = resolve(segref)
    barrier.wait(HANG)
    view, found = seg.struct("x", RACERS)
    view[index] = index + 1
    barrier.wait(HANG)  # every racer has written its byte
    results.put((index, found, bytes(view)))


def test_racing_processes_allocate_one_struct_and_share_it(ctx: BaseContext, shared: Segment) -> None:
    barrier, results = ctx.Barrier(RACERS), ctx.Queue()
    procs = [start(ctx, race_for_struct, ref(shared), barrier, i, results) for i in range(RACERS)]
    reports = [results.get(timeout=HANG) for _ in range(RACERS)]
    join_all(procs)
    allocated = [index for index, found, _ in reports if not found]
    assert len(allocated) == 1, f"{len(allocated)} processes allocated the struct"
    every_byte = bytes(range(1, RACERS + 1))
    assert {seen for _, _, seen in reports} == {every_byte}
    view, found = shared.struct("x", RACERS)
    assert found and bytes(view) == every_byte
    del view
    assert shared.names() == ["x"]


def race_for_kind(segref: SegmentRef, barrier, index: int, results) -> None:
    """Half the racers want a lock called "k", the other half a counter."""
    seg = resolve(segref)
    want = "lock" if index % 2 else "counter"
    barrier.wait(HANG)
    try:
        seg.lock("k") if want == "lock" else seg.counter("k")
        results.put((want, "ok"))
    except errors.StructMismatch:
        results.put((want, "mismatch"))


def test_racing_for_one_name_as_two_kinds_gives_one_kind(ctx: BaseContext, shared: Segment) -> None:
    barrier, results = ctx.Barrier(RACERS), ctx.Queue()
    procs = [start(ctx, race_for_kind, ref(shared), barrier, i, results) for i in range(RACERS)]
    reports = [results.get(timeout=HANG) for _ in range(RACERS)]
    join_all(procs)
    winners = {want for want, outcome in reports if outcome == "ok"}
    assert len(winners) == 1
    (kind,) = winners
    assert all(outcome == "mismatch" for want, outcome in reports if want != kind)
    assert [(s.name, s.kind) for s in shared.structs()] == [("k", kind)]
