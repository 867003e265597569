"""A small linearizability checker (Wing & Gong's search with Lowe's
memoization, as porcupine does) for one key of a cache seen as a register.

An operation is a dict: ``op`` (get, set, delete, goc), ``arg`` (the value
set, or the value get_or_compute's fn returns), ``call`` and ``ret``
(monotonic ns; ``ret`` None if its process was killed before it returned)
and ``result``.  The register's state is a value or None (absent):

- get returns the state;
- set(v) makes it v;
- delete makes it None and returns whether a value was there;
- goc(u) returns the state if there is one, else makes it u and returns u.

An operation that never returned (its process was killed) may take effect
at any moment after its call, or never; a killed writer may also leave the
key absent, since a cache may lose the entry a dead process was writing.

A write wins over a computation (README, get_or_compute): a set or delete
while a goc computes ends its round and refuses its result, and the
computing caller still returns its own value.  So a goc that overlaps a
set or delete of its key may also return u and leave the register absent.
"""

from __future__ import annotations

from bisect import bisect_left
from itertools import accumulate
from typing import Any


def _apply(entry: dict, state: Any, refusable: bool) -> list[tuple[Any, Any]]:
    """The (new state, result) pairs the operation may produce from state;
    ``refusable``: a write overlaps this goc and may refuse its result."""
    op, arg = entry["op"], entry["arg"]
    if op == "get":
        outcomes = [(state, state)]
    elif op == "set":
        outcomes = [(arg, None)]
    elif op == "delete":
        outcomes = [(None, state is not None)]
    elif op == "goc":
        outcomes = [(state, state)] if state is not None else [(arg, arg)]
        if state is None and refusable:
            outcomes.append((None, arg))  # a set or delete ended its round
    else:
        raise ValueError(f"unknown operation {op!r}")
    if entry["ret"] is None and op != "get":
        outcomes.append((None, None))  # the dead writer's entry was lost
    return outcomes


def _refusable(ops: list[dict]) -> list[bool]:
    """Per operation (sorted by call): a goc that a set or delete of its key
    may have overlapped.  A write overlaps [call, ret) if it was called in
    there, or called before and returned after call (ret None: never)."""
    infinity = float("inf")
    writes = [e for e in ops if e["op"] in ("set", "delete")]
    calls = [w["call"] for w in writes]
    latest_ret = list(accumulate((infinity if w["ret"] is None else w["ret"] for w in writes), max))
    marks = []
    for e in ops:
        ret = infinity if e["ret"] is None else e["ret"]
        before = bisect_left(calls, e["call"])  # writes called before e
        marks.append(
            e["op"] == "goc"
            and (bisect_left(calls, ret) > before or (before > 0 and latest_ret[before - 1] > e["call"]))
        )
    return marks


def check(history: list[dict], initial: Any = None) -> tuple[bool, str]:
    """(True, "") if the history of one key is linearizable, else (False, why)."""
    ops = sorted(history, key=lambda e: e["call"])
    refusable = _refusable(ops)
    done = [e for e in ops if e["ret"] is not None]
    done_mask = sum(1 << i for i, e in enumerate(ops) if e["ret"] is not None)
    killed = [i for i, e in enumerate(ops) if e["ret"] is None]
    infinity = float("inf")
    n = len(ops)
    seen: set[tuple[int, Any]] = set()
    # Depth-first over (set of linearized ops, state): pick any op that is
    # minimal (called before every pending completed op returned).
    stack = [(0, initial)]
    while stack:
        linearized, state = stack.pop()
        if linearized & done_mask == done_mask:
            return True, ""
        if (linearized, state) in seen:
            continue
        seen.add((linearized, state))
        # The earliest return among completed ops not yet linearized: ops are
        # sorted by call and ret >= call, so the scan stops at a call past it.
        lo = (~linearized & done_mask & -(~linearized & done_mask)).bit_length() - 1
        first_ret = infinity
        for i in range(max(lo, 0), n):
            if ops[i]["call"] > first_ret:
                break
            if not linearized >> i & 1 and ops[i]["ret"] is not None:
                first_ret = min(first_ret, ops[i]["ret"])
        # Candidates: called before first_ret.  Try the one that returned
        # first first, and killed ones last: they may go anywhere, so they
        # are what blows a search up.
        candidates = []
        for i in list(killed) + list(range(max(lo, 0), n)):
            entry = ops[i]
            if entry["call"] > first_ret:
                if entry["ret"] is None:
                    continue
                break
            if linearized >> i & 1:
                continue
            for new_state, result in _apply(entry, state, refusable[i]):
                if entry["ret"] is not None and result != entry["result"]:
                    continue
                rank = entry["ret"] if entry["ret"] is not None else infinity
                candidates.append((rank, linearized | 1 << i, new_state))
        candidates.sort(key=lambda c: c[0], reverse=True)
        stack.extend((lin, st) for _rank, lin, st in candidates if (lin, st) not in seen)
    last = max(done, key=lambda e: e["ret"]) if done else None
    return False, f"no linearization of {n} operations (the last to return: {last})"
