"""Helpers of the backend tests: poll with a deadline, and run a herd of
forked processes that all miss one key at once.

A herd member's computation returns only once every other member is
counted as waiting for it (the cache's ``waits`` statistic), so a backend
that let a second member compute would be caught, never raced past."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from typing import Any

import pytest

#: Deadline of every wait in these tests (far below pytest-timeout's 120 s).
HANG = 30.0


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Poll ``predicate`` until true; fail saying what was awaited."""
    deadline = time.monotonic() + HANG
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {HANG} s for {what}")
        time.sleep(0.005)


def after_the_herd_waits(stats: Callable[[], dict[str, Any]], herd: int, value: Any, since: int) -> Any:
    """In the computing member: wait (bounded) until the ``herd - 1``
    others are waiting for this computation, then return ``value``.
    ``since`` is the ``waits`` statistic the member read before the herd
    was released: a baseline read here would miss the members that began
    waiting before this computation started, and the owner would wait out
    its bound (past the lease, letting a second member compute)."""
    # Half the herd's deadline: if the others never wait, the value still
    # arrives in time for the test to say how many computed.
    deadline = time.monotonic() + HANG / 2
    while stats()["waits"] - since < herd - 1 and time.monotonic() < deadline:
        time.sleep(0.002)
    return value


def run_herd(member: Callable[..., None], size: int, *args: Any) -> list[Any]:
    """Fork ``size`` processes running ``member(*args, barrier, results)``;
    each puts one result.  Return the results, after checking every member
    exited cleanly."""
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(size), context.Queue()
    children = [context.Process(target=member, args=(*args, barrier, results)) for _ in range(size)]
    for child in children:
        child.start()
    values = [results.get(timeout=HANG) for _ in children]
    for child in children:
        child.join(HANG)
        assert child.exitcode == 0, f"a herd member exited with {child.exitcode}"
    return values
