"""The linearizability checker of scenario 19 (tests/linearizability.py)
accepts what herdcache promises and rejects what it does not.

Histories are written by hand from what the scenario's workers logged:
(op, arg, call, ret, result), times in arbitrary units.
"""

from __future__ import annotations

from linearizability import check


def _history(*ops):
    return [{"op": op, "arg": arg, "call": call, "ret": ret, "result": result} for op, arg, call, ret, result in ops]


def test_sequential_register_is_accepted():
    ok, why = check(_history(("set", "x", 0, 1, None), ("get", None, 2, 3, "x"), ("delete", None, 4, 5, True)))
    assert ok, why


def test_stale_read_is_rejected():
    ok, _ = check(_history(("set", "x", 0, 1, None), ("set", "y", 2, 3, None), ("get", None, 4, 5, "x")))
    assert not ok


def test_goc_refused_by_an_overlapping_delete_is_accepted():
    # Seen in scenario 19: a delete during the computation ends the round
    # (README: a write wins over a computation) and finds nothing; the
    # computing caller returns its own value, which is never stored.
    ok, why = check(
        _history(
            ("goc", "u", 0, 47, "u"),
            ("delete", None, 18, 22, False),
            ("get", None, 53, 58, None),
        )
    )
    assert ok, why


def test_goc_that_returns_its_value_without_storing_it_alone_is_rejected():
    # No write overlaps the computation: its value must be in the cache.
    ok, _ = check(_history(("goc", "u", 0, 47, "u"), ("delete", None, 50, 52, False)))
    assert not ok
    ok, _ = check(_history(("goc", "u", 0, 47, "u"), ("get", None, 53, 58, None)))
    assert not ok
