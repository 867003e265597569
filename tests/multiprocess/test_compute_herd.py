"""The herd: many callers miss one key at once, exactly one computes it.

What users rely on: however many processes (forked or spawned) or threads
ask ``get_or_compute`` for a missing key at the same moment, the function
runs once, every other caller sleeps until it is done and then receives
the very value the computing caller stored; and each time the value
expires, the same holds again.
"""

from __future__ import annotations

import threading

from _flightkit import FLIGHT_STATS, Troupe, computations, moved, stat, stats, until, until_waiting
from helpers import HANG, joined, wait_until_asleep

import herdcache

pytest_plugins = ["_flight_fixtures"]  # start_method, flight_cache, troupe

HERD = 32


def test_a_herd_of_processes_computes_a_missing_key_once(troupe, flight_cache) -> None:
    """32 processes released together by a barrier miss one key: one
    computes, and only once the other 31 are known to be asleep waiting for
    it does it return; all 32 then hold the winner's value."""
    herd = troupe("herd:cold", ttl=60)
    before = stats(flight_cache, *FLIGHT_STATS)
    herd.start(HERD, together=True)
    winner = herd.next_computer()
    until_waiting(flight_cache, HERD - 1, before["waits"], herd)
    stored = {"price": 42, "computed_by": winner.pid}
    winner.order("return", stored)

    reports = herd.finish()

    assert computations(flight_cache).load() == 1
    assert len(reports) == HERD
    assert all(report == ("value", stored) for report in reports.values())
    assert flight_cache.get("herd:cold") == stored
    assert moved(before, flight_cache) == {"computes": 1, "waits": HERD - 1, "coalesced": HERD - 1}


def test_every_expiry_is_computed_once(troupe, flight_cache) -> None:
    """After the value expires, the next herd computes it once again: one
    computation per key per expiry, each herd served the value of its own
    round."""
    key = "herd:expiring"
    for expiry in range(3):
        herd = troupe(key, ttl=3600)
        waits = stat(flight_cache, "waits")
        herd.start(6, together=True)
        winner = herd.next_computer()
        until_waiting(flight_cache, 5, waits, herd)
        winner.order("return", f"round {expiry}")
        assert set(herd.finish().values()) == {("value", f"round {expiry}")}
        assert computations(flight_cache).load() == expiry + 1
        # Expire it now (a ttl of one nanosecond) rather than sleep past a ttl.
        assert flight_cache.touch(key, 1e-9)
        until(lambda: key not in flight_cache, f"{key!r} expired")


def test_threads_of_one_process_compute_a_missing_key_once() -> None:
    """16 threads of one process miss one key together: one computes (and
    returns only after the other 15 wait), all get its value."""
    threads_n = 16
    cache = herdcache.Cache(size="4MiB")
    barrier = threading.Barrier(threads_n)
    release = threading.Event()
    calls = []
    results: dict[int, object] = {}

    def compute() -> dict:
        calls.append(threading.get_ident())
        release.wait(HANG)
        return {"computed_by": threading.get_ident()}

    def ask(i: int) -> None:
        barrier.wait(HANG)
        results[i] = cache.get_or_compute("herd:threads", compute, ttl=60)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    until_waiting(cache, threads_n - 1)
    release.set()
    joined(*threads)

    assert len(calls) == 1
    assert list(results.values()) == [{"computed_by": calls[0]}] * threads_n
    assert moved(dict.fromkeys(FLIGHT_STATS, 0), cache) == {
        "computes": 1,
        "waits": threads_n - 1,
        "coalesced": threads_n - 1,
    }
    cache.close()


def _word_of(cache: herdcache.Cache, key: str) -> int:
    """The value of key's wake word, read by a flight of key that begins
    and ends at once (which bumps the word by one)."""
    begun = cache._flight_begin(key, 60.0)
    assert begun[0] == "compute", f"{key!r} is not free to probe: {begun[0]}"
    assert cache._flight_abort(key, begun[3])
    return begun[4]


def _key_on_another_word(cache: herdcache.Cache, key: str) -> str:
    """A key whose flights wake another word than ``key``'s: ending its
    flight leaves ``key``'s word where it was."""
    for i in range(200):
        other = f"{key}:other:{i}"
        before = _word_of(cache, key)
        _word_of(cache, other)
        if _word_of(cache, key) == before + 1:  # only its own probe moved it
            return other
    raise AssertionError(f"200 keys all share {key!r}'s wake word")


def test_another_keys_publish_wakes_none_of_a_keys_waiters() -> None:
    """Processes waiting for key A sleep through the computation of key B
    of the same stripe: B's publish wakes nobody (the kernel's count), and
    A's own publish then serves every one of them."""
    cache = herdcache.Cache(size="4MiB")
    assert cache.stats()["stripes"] == 1  # A and B share the stripe
    other = _key_on_another_word(cache, "herd:A")
    herd = Troupe("fork", cache, "herd:A", ttl=60)
    try:
        herd.start(5, together=True)
        winner = herd.next_computer()
        until_waiting(cache, 4, 0, herd)
        for puppet in herd.live():
            if puppet is not winner:
                wait_until_asleep(puppet.pid)
        before = stats(cache, "flight_wakes", "flight_woken")

        assert cache.get_or_compute(other, lambda: "b", ttl=60) == "b"

        assert moved(before, cache) == {"flight_wakes": 1}  # it woke no one
        winner.order("return", "a")
        assert set(herd.finish().values()) == {("value", "a")}
        assert stat(cache, "coalesced") == 4
    finally:
        herd.close()
        cache.close()
