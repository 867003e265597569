"""RELIABILITY.md scenario 19: linearizability under a kill nemesis.

Six worker processes run random get / set / delete / get_or_compute on
three keys of one cache, logging each call and return (CLOCK_MONOTONIC,
which all processes share) to a file each; the parent SIGKILLs a worker
now and then and starts a new one in its place.  Each key's history,
where an operation of a killed worker never returned (it may have taken
effect or not), must be linearizable as a register (tests/
linearizability.py).  Short form: 16 kills; `-m stress`: 300.

The kills are aimed: each worker raises a flag of its own in shared
memory (a counter) from just after it logs a call until just before it
logs the return, and the parent kills a worker whose flag it sees up, so
that most kills land inside an operation (when the victims were picked
at random moments, about 7 % did); the test counts them and fails if
fewer than half did.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import time

import pytest
from helpers import HANG
from linearizability import check

import herdcache

KEYS = ("a", "b", "c")
WORKERS = 6


def _worker(directory: str, wid: int, place: int, seed: int) -> None:
    """Run operations for ever, logging each call before and its return
    after (one write of one line each, to a file of its own), and counting
    them in a shared counter the parent watches."""
    cache = herdcache.Cache("lin", dir=directory)
    done, budget = cache.segment.counter("ops"), cache.segment.counter("budget")
    inside = cache.segment.counter(f"inside-{place}")
    log = os.open(os.path.join(directory, f"log-{wid}"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    rng = random.Random(seed)
    n = 0
    while True:
        while done.load() >= budget.load():  # paced by the parent
            time.sleep(0.0005)
        n += 1
        key, op = rng.choice(KEYS), rng.choice(("get", "set", "delete", "goc"))
        arg = f"{wid}.{n}" if op in ("set", "goc") else None
        os.write(log, (json.dumps([wid, n, "call", key, op, arg, time.monotonic_ns()]) + "\n").encode())
        inside.store(1)
        if op == "get":
            result = cache.get(key)
        elif op == "set":
            result = cache.set(key, arg)
        elif op == "delete":
            result = cache.delete(key)
        else:
            result = cache.get_or_compute(key, lambda: arg, lease=5.0)
        inside.store(0)
        os.write(log, (json.dumps([wid, n, "ret", key, op, result, time.monotonic_ns()]) + "\n").encode())
        done.add(1)


def _read_logs(directory: str) -> list[list]:
    """Every whole line of every worker's log (a killed one's last may be cut)."""
    records = []
    for name in sorted(os.listdir(directory)):
        if name.startswith("log-"):
            with open(os.path.join(directory, name)) as f:
                for line in f:
                    if line.endswith("\n"):
                        records.append(json.loads(line))
    return records


def _collect(records) -> dict[str, list[dict]]:
    """Per key, the operations with their call and return (None: killed)."""
    ops: dict[tuple[int, int], dict] = {}
    for wid, n, kind, key, op, value, t in records:
        if kind == "call":
            ops[(wid, n)] = {"key": key, "op": op, "arg": value, "call": t, "ret": None, "result": None}
        else:
            ops[(wid, n)].update(ret=t, result=value)
    histories: dict[str, list[dict]] = {k: [] for k in KEYS}
    for entry in ops.values():
        histories[entry["key"]].append(entry)
    return histories


def _run(tmp_path, kills: int, ops_between: int) -> None:
    directory = str(tmp_path)
    cache = herdcache.Cache("lin", size="8MiB", dir=directory)
    done, budget = cache.segment.counter("ops"), cache.segment.counter("budget")
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(19)
    workers: dict[int, multiprocessing.Process] = {}
    # A worker's flag is the counter of its place (0..WORKERS-1), which its
    # replacement takes over: the registry holds 256 names, not one a kill.
    places: dict[int, int] = {}
    flags = [cache.segment.counter(f"inside-{place}") for place in range(WORKERS)]

    def start(wid: int, place: int) -> None:
        flags[place].store(0)  # the dead worker's flag may still be up
        places[wid] = place
        workers[wid] = ctx.Process(target=_worker, args=(directory, wid, place, rng.random()), daemon=True)
        workers[wid].start()

    def await_ops(target: int) -> None:
        """Poll the shared counter (observable state) until target ops ended."""
        deadline = time.monotonic() + HANG
        while done.load() < target:
            assert time.monotonic() < deadline, (
                f"workers ended {done.load()} operations, waiting for {target} (budget {budget.load()})"
            )
            time.sleep(0)  # yield only: a kill should catch workers mid-operation

    def victim_inside() -> int:
        """A worker seen inside an operation (its flag up); if the budget
        runs out first (every worker idle), a little more of it."""
        deadline = time.monotonic() + HANG
        while True:
            busy = [wid for wid in workers if flags[places[wid]].load()]
            if busy:
                return rng.choice(busy)
            if done.load() >= budget.load():
                budget.add(WORKERS)
            assert time.monotonic() < deadline, f"no worker was seen inside an operation ({done.load()} ended)"
            time.sleep(0)

    for wid in range(1, WORKERS + 1):
        start(wid, wid - 1)
    victims = []
    try:
        for kill in range(kills):
            # Let ops_between more operations run, and kill halfway through.
            # The halfway mark is reckoned from the budget, never from the
            # count read after raising it: the workers may spend the whole
            # slice before this process runs again (a loaded machine), and
            # "30 more than now" would then lie past the budget: a wait
            # for ever on workers the budget has stopped.
            await_ops(budget.add(ops_between) - ops_between // 2)
            victim = victim_inside()
            os.kill(workers[victim].pid, signal.SIGKILL)
            workers.pop(victim).join(HANG)
            victims.append(victim)
            start(WORKERS + 1 + kill, places[victim])
        await_ops(budget.add(ops_between) - ops_between // 2)
    finally:
        for proc in workers.values():
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(HANG)
    records = _read_logs(directory)
    for key, history in _collect(records).items():
        ok, why = check(history)
        assert ok, f"key {key!r}: {why}"
    mid = _killed_mid_operation(records, victims)
    assert mid >= len(victims) / 2, f"only {mid} of {len(victims)} kills landed inside an operation"
    cache.check()
    cache.close()


def _killed_mid_operation(records, victims: list[int]) -> int:
    """How many victims' last logged line is a call with no return."""
    last = {wid: kind for wid, _, kind, *_ in records}
    return sum(last.get(wid) == "call" for wid in victims)


def test_linearizable_under_kills(tmp_path):
    _run(tmp_path, kills=16, ops_between=60)


@pytest.mark.stress
def test_linearizable_under_many_kills(tmp_path):
    _run(tmp_path, kills=300, ops_between=60)
