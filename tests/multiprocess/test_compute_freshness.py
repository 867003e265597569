"""Serving while refreshing: stale_ttl and early refresh (XFetch).

What users rely on: with ``stale_ttl``, once a value expires and while one
process recomputes it, every other caller gets the old value at once
instead of waiting; with ``early_refresh``, a hot key is recomputed by one
caller before it expires while the others keep getting the current value
without waiting.  Either way exactly one process refreshes.
"""

from __future__ import annotations

from _flightkit import FLIGHT_STATS, computations, moved, stats, until

pytest_plugins = ["_flight_fixtures"]  # start_method, flight_cache, troupe

#: An XFetch beta this large makes the draw beta * delta * -log(U) exceed
#: any ttl unless random() returns exactly 0.0 (probability 2**-53): the
#: refresh is certain, not likely, so the test cannot be flaky.
CERTAIN_REFRESH = 1e300


def compute_first(herd, value) -> None:
    (first,) = herd.start(1)
    herd.next_computer().order("return", value)
    assert herd.finish([first]) == {first: ("value", value)}


def test_stale_ttl_serves_the_old_value_while_one_process_refreshes(troupe, flight_cache) -> None:
    """Inside the stale window, the first caller refreshes (blocked here
    until the test lets it go) and four others get the old value at once,
    none of them waiting or computing; then everyone gets the new one."""
    key = "board:stale"
    herd = troupe(key, ttl=3600, stale_ttl=3600)
    compute_first(herd, "v1")
    # Expire it now (a ttl of one nanosecond) rather than sleep past a ttl.
    assert flight_cache.touch(key, 1e-9)
    until(lambda: key not in flight_cache, f"{key!r} expired")

    before = stats(flight_cache, *FLIGHT_STATS)
    (refresher,) = herd.start(1)
    assert herd.next_computer() is refresher
    readers = herd.start(4, together=True)
    assert herd.finish(readers) == {r: ("value", "v1") for r in readers}
    assert computations(flight_cache).load() == 2
    assert moved(before, flight_cache) == {"computes": 1, "stale_served": 4}

    refresher.order("return", "v2")
    assert herd.finish([refresher]) == {refresher: ("value", "v2")}
    assert flight_cache.get(key) == "v2"


def test_early_refresh_recomputes_a_hot_key_before_it_expires(troupe, flight_cache) -> None:
    """With early_refresh, a caller of a fresh value recomputes it (here
    with certainty) while the others keep getting the current value without
    waiting, and the key never expires meanwhile."""
    key = "board:hot"
    herd = troupe(key, ttl=3600, early_refresh=CERTAIN_REFRESH)
    compute_first(herd, "v1")

    before = stats(flight_cache, *FLIGHT_STATS)
    (refresher,) = herd.start(1)
    assert herd.next_computer() is refresher
    assert flight_cache.get(key) == "v1"  # still fresh, still served
    readers = herd.start(4, together=True)
    assert herd.finish(readers) == {r: ("value", "v1") for r in readers}
    refresher.order("return", "v2")
    assert herd.finish([refresher]) == {refresher: ("value", "v2")}

    assert flight_cache.get(key) == "v2"
    assert 3000 < flight_cache.ttl(key) <= 3600
    assert computations(flight_cache).load() == 2
    changes = moved(before, flight_cache)
    assert changes.get("waits", 0) == 0
    assert changes["early_refreshes"] == 1 and changes["computes"] == 1


def test_without_early_refresh_a_fresh_value_is_never_recomputed(troupe, flight_cache) -> None:
    """The control: the same calls without early_refresh are plain hits."""
    key = "board:cold"
    herd = troupe(key, ttl=3600)
    compute_first(herd, "v1")
    readers = herd.start(4, together=True)
    assert herd.finish(readers) == {r: ("value", "v1") for r in readers}
    assert computations(flight_cache).load() == 1


def test_a_key_under_early_refresh_is_present_with_its_old_value_to_every_operation(troupe, flight_cache) -> None:
    """While one process refreshes a fresh key early, the key is present with
    its old value to every operation, not only get(): gets, ttl, in, len,
    keys, touch and add agree.  A write then wins over the refresh, whose
    late result is refused."""
    key = "board:present"
    herd = troupe(key, ttl=3600, early_refresh=CERTAIN_REFRESH)
    compute_first(herd, "v1")
    (refresher,) = herd.start(1)
    assert herd.next_computer() is refresher  # computing, blocked until ordered

    assert flight_cache.get(key) == "v1"
    assert key in flight_cache and len(flight_cache) == 1 and list(flight_cache.keys()) == [key]
    value, token = flight_cache.gets(key)
    assert value == "v1" and token is not None
    assert 3000 < flight_cache.ttl(key) <= 3600
    assert flight_cache.add(key, "other") is False
    assert flight_cache.touch(key, 60) is True  # present; the refresh sets the next lifetime
    assert 3000 < flight_cache.ttl(key) <= 3600
    assert flight_cache.get(key) == "v1"

    assert flight_cache.compare_and_set(key, "mine", token) is True  # a write wins
    refresher.order("return", "v2")
    assert herd.finish([refresher]) == {refresher: ("value", "v2")}
    assert flight_cache.get(key) == "mine", "the refresh's late result overwrote a write"


def test_incr_with_a_default_adds_to_the_value_under_early_refresh(troupe, flight_cache) -> None:
    """Before: incr(k, default=d) saw a key under early refresh as absent and
    overwrote its value with d + delta."""
    key = "board:counter"
    herd = troupe(key, ttl=3600, early_refresh=CERTAIN_REFRESH)
    compute_first(herd, 10)
    (refresher,) = herd.start(1)
    assert herd.next_computer() is refresher
    assert flight_cache.incr(key, 1, default=0) == 11
    assert 3000 < flight_cache.ttl(key) <= 3600, "incr must keep the value's own expiry"
    refresher.order("return", 99)
    herd.finish([refresher])
    assert flight_cache.get(key) == 11
