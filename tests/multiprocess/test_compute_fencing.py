"""Fencing: a computation's result is stored only if its round still holds.

What users rely on: a computing process that stalls past its lease (here
SIGSTOPped) is taken over by exactly one waiter, whose value everyone gets;
when the stalled process resumes, its late result is refused and never
overwrites the newer value (RELIABILITY.md §b scenario 6).  Likewise a
set() or delete() by someone else during a computation wins over that
computation's result.
"""

from __future__ import annotations

import signal

import pytest
from _flightkit import FLIGHT_STATS, computations, moved, stats, until, until_waiting

pytest_plugins = ["_flight_fixtures"]  # start_method, flight_cache, troupe

SHORT_LEASE = 0.5
LONG_LEASE = 3600.0


@pytest.mark.parametrize("resumes", ["before the takeover publishes", "after the takeover published"])
def test_a_stopped_owner_past_its_lease_is_taken_over_once_and_its_late_result_refused(
    troupe, flight_cache, resumes: str
) -> None:
    """The owner (lease 0.5 s) is SIGSTOPped mid-computation; one waiter
    takes over once the lease is over (the takers' own lease is an hour,
    so no second takeover can follow); the resumed owner's result is
    refused whether it comes while the takeover still computes or after it
    stored its value; every waiter gets the takeover's value."""
    key = "report:stalled"
    herd = troupe(key, ttl=60, lease=LONG_LEASE)
    before = stats(flight_cache, *FLIGHT_STATS)
    (owner,) = herd.start(1, lease=SHORT_LEASE)
    herd.next_computer()
    owner.signal(signal.SIGSTOP)
    owner.order("return", "stale result")  # obeyed as soon as it runs again
    waiters = herd.start(3)

    taker = herd.next_computer()
    assert taker in waiters
    if resumes == "before the takeover publishes":
        owner.signal(signal.SIGCONT)
        assert herd.finish([owner]) == {owner: ("value", "stale result")}
        assert key not in flight_cache  # still the takeover's round: nothing stored
        taker.order("return", "fresh result")
    else:
        taker.order("return", "fresh result")
        until(lambda: flight_cache.get(key) == "fresh result", f"{key!r} holds the fresh result", herd, seen=lambda: flight_cache.get(key))
        owner.signal(signal.SIGCONT)
        assert herd.finish([owner]) == {owner: ("value", "stale result")}

    reports = herd.finish(waiters)
    assert set(reports.values()) == {("value", "fresh result")}
    assert flight_cache.get(key) == "fresh result"
    assert computations(flight_cache).load() == 2
    assert moved(before, flight_cache)["takeovers"] == 1


def test_a_set_during_a_computation_wins_over_its_result(troupe, flight_cache) -> None:
    """Someone sets the key while it is being computed: the waiters get the
    set value at once, and the computation's late result is refused."""
    key = "report:set-meanwhile"
    herd = troupe(key, ttl=60)
    before = stats(flight_cache, *FLIGHT_STATS)
    puppets = herd.start(3, together=True)
    owner = herd.next_computer()
    until_waiting(flight_cache, 2, before["waits"], herd)

    flight_cache.set(key, "set by the admin", ttl=60)
    waiters = [p for p in puppets if p is not owner]
    assert herd.finish(waiters) == {w: ("value", "set by the admin") for w in waiters}
    owner.order("return", "computed")
    assert herd.finish([owner]) == {owner: ("value", "computed")}

    assert flight_cache.get(key) == "set by the admin"
    assert computations(flight_cache).load() == 1


def test_a_delete_during_a_computation_wins_over_its_result(troupe, flight_cache) -> None:
    """Someone deletes the key while it is being computed: the
    computation's late result is refused, the key stays absent."""
    key = "report:deleted-meanwhile"
    herd = troupe(key, ttl=60)
    (owner,) = herd.start(1)
    herd.next_computer()

    flight_cache.delete(key)
    owner.order("return", "computed")
    assert herd.finish([owner]) == {owner: ("value", "computed")}

    assert key not in flight_cache
    assert flight_cache.get(key) is None
    assert computations(flight_cache).load() == 1
