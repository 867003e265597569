"""Counters across processes: no lost update, one winner per compare_exchange."""

from __future__ import annotations

import os
from multiprocessing.context import BaseContext

from helpers import HANG, SegmentRef, ref, resolve, run_all

from herdcache import Segment

PROCESSES = 4
ADDS = 1_000_000


def add_many(segref: SegmentRef, barrier) -> None:
    add = resolve(segref).counter("hits").add
    barrier.wait(HANG)
    for _ in range(ADDS):
        add(1)


def test_adds_from_four_processes_are_exact(ctx: BaseContext, shared: Segment) -> None:
    run_all(ctx, add_many, [(ref(shared), ctx.Barrier(PROCESSES))] * PROCESSES)
    assert shared.counter("hits").load() == PROCESSES * ADDS


def claim(segref: SegmentRef, barrier, wins) -> None:
    owner = resolve(segref).counter("owner")
    barrier.wait(HANG)
    if owner.compare_exchange(0, os.getpid()):
        wins.put(os.getpid())


def test_compare_exchange_has_exactly_one_winner(ctx: BaseContext, shared: Segment) -> None:
    barrier, wins = ctx.Barrier(8), ctx.Queue()
    run_all(ctx, claim, [(ref(shared), barrier, wins)] * 8)
    winner = wins.get(timeout=HANG)
    assert wins.empty()
    assert shared.counter("owner").load() == winner


def take_tickets(segref: SegmentRef, barrier, taken) -> None:
    """Take distinct tickets with exchange-free fetch-and-add until they run out."""
    tickets = resolve(segref).counter("next")
    mine = []
    barrier.wait(HANG)
    while (ticket := tickets.add(1)) <= 1000:
        mine.append(ticket)
    taken.put(mine)


def test_add_hands_out_each_value_once(ctx: BaseContext, shared: Segment) -> None:
    barrier, taken = ctx.Barrier(4), ctx.Queue()
    run_all(ctx, take_tickets, [(ref(shared), barrier, taken)] * 4)
    tickets = sorted(t for _ in range(4) for t in taken.get(timeout=HANG))
    assert tickets == list(range(1, 1001))
