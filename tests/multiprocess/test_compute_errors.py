"""A computation that raises: the error is shared, not cached.

What users rely on: when the computing process's function raises, every
caller that was waiting for that round raises too, in its own process,
with the same exception type and message and the remote traceback
attached (``exc.remote_traceback`` and a note); nothing is stored unless
``negative_ttl=`` asks for it (then callers within it get the error
without recomputing), and the next call computes afresh.
"""

from __future__ import annotations

import signal

import pytest
from _flightkit import FLIGHT_STATS, computations, moved, stat, stats, until_waiting

pytest_plugins = ["_flight_fixtures"]  # start_method, flight_cache, troupe

WAITERS = 5


def fail_a_round(herd, cache, *error) -> tuple:
    """Start an owner and WAITERS waiters, let the owner raise ``error``
    once every waiter sleeps; return (owner, reports)."""
    waits = stat(cache, "waits")
    herd.start(WAITERS + 1, together=True)
    owner = herd.next_computer()
    until_waiting(cache, WAITERS, waits, herd)
    owner.order("raise", *error)
    return owner, herd.finish()


def test_every_waiter_of_the_round_raises_the_owners_exception(troupe, flight_cache) -> None:
    """Each waiter raises the owner's exception class with the owner's
    message, carrying the owner's traceback; the owner raises its own."""
    herd = troupe("price:X1", ttl=60)
    before = stats(flight_cache, *FLIGHT_STATS)
    owner, reports = fail_a_round(herd, flight_cache, "_flightkit", "PriceUnavailable", ["no price for X1", 42])

    expected_message = str(("no price for X1", 42))
    assert reports[owner] == (
        "raised",
        {
            "type": "PriceUnavailable",
            "module": "_flightkit",
            "message": expected_message,
            "remote_traceback": None,
            "notes": [],
            "original_type": None,
            "timeout": False,
        },
    )
    waiters = [info for puppet, (_, info) in reports.items() if puppet is not owner]
    assert len(waiters) == WAITERS
    for info in waiters:
        assert (info["type"], info["module"], info["message"]) == ("PriceUnavailable", "_flightkit", expected_message)
        assert "raise getattr(importlib.import_module(module), name)(*args)" in info["remote_traceback"]
        assert info["remote_traceback"].rstrip().endswith(f"PriceUnavailable: {expected_message}")
        assert info["notes"] == [
            f"raised in process {owner.pid} while computing 'price:X1':\n{info['remote_traceback']}"
        ]
    assert computations(flight_cache).load() == 1
    assert moved(before, flight_cache) == {"computes": 1, "waits": WAITERS, "compute_errors": WAITERS + 1}


def test_a_failure_is_not_cached_and_the_next_call_computes_afresh(troupe, flight_cache) -> None:
    """Without negative_ttl the failed key holds nothing, and the next
    caller computes again (and may succeed)."""
    herd = troupe("price:X2", ttl=60)
    fail_a_round(herd, flight_cache, "builtins", "ValueError", ["upstream said 503"])

    assert "price:X2" not in flight_cache
    assert flight_cache.get("price:X2") is None
    (again,) = herd.start(1)
    herd.next_computer().order("return", 17.5)
    assert herd.finish([again]) == {again: ("value", 17.5)}
    assert computations(flight_cache).load() == 2
    assert flight_cache.get("price:X2") == 17.5


def test_an_error_class_the_waiter_never_imported_arrives_as_compute_error(troupe, flight_cache) -> None:
    """A waiter never imports a module named by the segment's bytes: an
    exception class it does not have arrives as ComputeError naming the
    original type, with the original message and traceback."""
    herd = troupe("quote:EURUSD", ttl=60)
    owner, reports = fail_a_round(herd, flight_cache, "_owner_only", "QuoteServiceDown", ["quotes are down"])

    assert reports[owner][1]["type"] == "QuoteServiceDown"
    for puppet, (outcome, info) in reports.items():
        if puppet is owner:
            continue
        assert (outcome, info["type"], info["module"]) == ("raised", "ComputeError", "herdcache.errors")
        assert info["original_type"] == "QuoteServiceDown"
        assert "QuoteServiceDown: quotes are down" in info["message"]
        assert f"process {owner.pid}" in info["message"]
        assert "_owner_only.QuoteServiceDown: quotes are down" in info["remote_traceback"]


def test_negative_ttl_serves_the_error_without_recomputing(troupe, flight_cache) -> None:
    """With negative_ttl, callers after the failure (within it) raise the
    same exception at once, and nothing computes again; the key still
    holds no value, and deleting it clears the cached failure."""
    herd = troupe("price:X3", ttl=60, negative_ttl=3600)
    fail_a_round(herd, flight_cache, "_flightkit", "PriceUnavailable", ["delisted"])
    before = stats(flight_cache, *FLIGHT_STATS)

    later = herd.start(3, together=True)
    reports = herd.finish(later)

    assert {(r[0], r[1]["type"], r[1]["message"]) for r in reports.values()} == {
        ("raised", "PriceUnavailable", "delisted")
    }
    assert computations(flight_cache).load() == 1
    assert moved(before, flight_cache) == {"compute_errors": 3}
    assert "price:X3" not in flight_cache

    flight_cache.delete("price:X3")
    (relisted,) = herd.start(1)
    herd.next_computer().order("return", 99)
    assert herd.finish([relisted]) == {relisted: ("value", 99)}
    assert computations(flight_cache).load() == 2


@pytest.mark.parametrize("then", ["get", "get and a new round"])
def test_a_late_waiter_gets_its_rounds_exception_whatever_happened_since(troupe, flight_cache, then) -> None:
    """negative_ttl=0 stores nothing a user sees, yet a waiter of the
    failed round that looks late (here: stopped until then) still raises
    that round's exception: after a plain get() of the key, and after a
    newcomer started a new round (issue 9, defect 6)."""
    herd = troupe("price:X9", ttl=60)
    waits = stat(flight_cache, "waits")
    herd.start(2, together=True)
    owner = herd.next_computer()
    until_waiting(flight_cache, 1, waits, herd)
    (waiter,) = [p for p in herd.live() if p is not owner]
    waiter.signal(signal.SIGSTOP)
    owner.order("raise", "builtins", "ValueError", ["upstream said 503"])
    herd.finish([owner])
    assert flight_cache.get("price:X9") is None and "price:X9" not in flight_cache
    if then == "get and a new round":
        (newcomer,) = herd.start(1)
        assert herd.next_computer() is newcomer
    waiter.signal(signal.SIGCONT)
    reports = herd.finish([waiter])
    assert reports[waiter][0] == "raised", reports[waiter]
    assert (reports[waiter][1]["type"], reports[waiter][1]["message"]) == ("ValueError", "upstream said 503")
    if then == "get and a new round":
        newcomer.order("return", 3)
        assert herd.finish([newcomer]) == {newcomer: ("value", 3)}
    assert computations(flight_cache).load() == (2 if then == "get and a new round" else 1)
