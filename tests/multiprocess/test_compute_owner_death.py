"""The computing process dies, or ends, or its waiters do.

What users rely on: a computation never leaves its key stuck.  If the
computing process is SIGKILLed, exactly one waiter takes over and computes
again, and nobody hangs (RELIABILITY.md §b scenario 5).  If it ends
normally (KeyboardInterrupt, sys.exit, interpreter exit) it releases its
keys on the way out, so waiters compute at once instead of waiting for the
lease.  Waiters that die cost nothing: the owner completes and the other
waiters are served (scenario 11).  A waiter may bound its wait with
``wait_timeout``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from _flightkit import CACHE_SIZE, FLIGHT_STATS, Troupe, computations, moved, stat, stats, until_waiting
from helpers import HANG, read_line

import herdcache

pytest_plugins = ["_flight_fixtures"]  # start_method, flight_cache, troupe

#: Long enough that only a release, or the kernel noticing a death, can
#: explain a prompt takeover; pytest-timeout fails a test that waits for it.
LONG_LEASE = 3600.0


def kill_owners(herd: Troupe, cache: herdcache.Cache, kills: int, waiters: int) -> None:
    """Kill the computing process ``kills`` times, each time once every
    other caller is known to be asleep waiting for it, replacing each
    victim by a new caller; then let the last owner finish and check that
    every survivor got its value, computed kills + 1 times in all."""
    key = herd.key
    before = stats(cache, *FLIGHT_STATS)
    herd.start(waiters + 1, together=True)
    started = waiters + 1
    owner = herd.next_computer()
    for _ in range(kills):
        # Everyone but the first owner waits once (a taker waited first).
        until_waiting(cache, started - 1, before["waits"], herd)
        owner.kill()
        owner = herd.next_computer()
        # Started only now, the newcomer finds a live flight and waits too.
        herd.start(1)
        started += 1
    until_waiting(cache, started - 1, before["waits"], herd)
    owner.order("return", {"computed_by": owner.pid})

    reports = herd.finish()

    assert len(reports) == waiters + 1
    assert set(map(repr, reports.values())) == {repr(("value", {"computed_by": owner.pid}))}
    assert computations(cache).load() == kills + 1
    assert moved(before, cache) == {
        "computes": kills + 1,
        "takeovers": kills,
        "waits": started - 1,
        "coalesced": waiters,
    }
    # Nothing is left in flight: one more call returns at once, without waiting.
    waits = stat(cache, "waits")
    assert cache.get_or_compute(key, pytest.fail, ttl=60) == {"computed_by": owner.pid}
    assert stat(cache, "waits") == waits


def test_a_killed_owner_is_replaced_by_exactly_one_waiter_each_time(troupe, flight_cache) -> None:
    """Scenario 5, short form: 20 owners SIGKILLed mid-computation, 4
    waiters each time: computations == kills + 1, each kill one takeover,
    every survivor served, no key left in flight."""
    kill_owners(troupe("report:kill-loop", ttl=60, lease=LONG_LEASE), flight_cache, kills=20, waiters=4)


@pytest.mark.stress
@pytest.mark.parametrize("kills", [200, 1000])
@pytest.mark.timeout(1800)
def test_a_killed_owner_is_replaced_by_exactly_one_waiter_each_time_long(troupe, flight_cache, kills: int) -> None:
    """Scenario 5, long form: 200 and 1000 kills with 8 waiters."""
    kill_owners(troupe("report:kill-loop", ttl=60, lease=LONG_LEASE), flight_cache, kills=kills, waiters=8)


@pytest.mark.parametrize(
    ("ending", "reported"),
    [(("interrupt",), "KeyboardInterrupt"), (("exit", 3), "SystemExit")],
)
def test_an_owner_that_ends_normally_releases_its_key_at_once(troupe, flight_cache, ending, reported) -> None:
    """KeyboardInterrupt or sys.exit inside the computation frees the key
    on the way out: with an hour-long lease, the waiter computes at once,
    as a fresh round (no takeover: nothing had to be noticed dead)."""
    herd = troupe("report:ends", ttl=60, lease=LONG_LEASE)
    before = stats(flight_cache, *FLIGHT_STATS)
    (owner,) = herd.start(1)
    herd.next_computer()
    (waiter,) = herd.start(1)
    until_waiting(flight_cache, 1, before["waits"], herd)

    owner.order(*ending)
    assert herd.next_computer() is waiter
    waiter.order("return", "recomputed")
    reports = herd.finish()

    assert reports[owner][1]["type"] == reported
    assert reports[waiter] == ("value", "recomputed")
    assert owner.process.exitcode == (3 if reported == "SystemExit" else 0)
    assert moved(before, flight_cache) == {"computes": 2, "waits": 1}


def test_an_owner_that_exits_without_cleanup_is_noticed_dead(troupe, flight_cache) -> None:
    """os._exit inside the computation skips every cleanup, like a kill:
    the kernel releases the owner's process slot and one waiter takes
    over (a takeover, unlike a release), long before the lease."""
    herd = troupe("report:os-exit", ttl=60, lease=LONG_LEASE)
    before = stats(flight_cache, *FLIGHT_STATS)
    (owner,) = herd.start(1)
    herd.next_computer()
    herd.start(2)
    until_waiting(flight_cache, 2, before["waits"], herd)

    owner.order("_exit", 0)
    taker = herd.next_computer()
    taker.order("return", "after os._exit")
    reports = herd.finish()

    assert set(reports.values()) == {("value", "after os._exit")}
    assert moved(before, flight_cache) == {"computes": 2, "takeovers": 1, "waits": 2, "coalesced": 1}


EXITING_OWNER = textwrap.dedent(
    """
    import sys, threading
    import herdcache

    cache = herdcache.Cache(sys.argv[1])
    def compute():
        print("computing", flush=True)
        threading.Event().wait()        # never returns
    threading.Thread(
        target=cache.get_or_compute, args=("report:atexit", compute),
        kwargs={"ttl": 60, "lease": 3600.0}, daemon=True,
    ).start()
    sys.stdin.readline()                # then the interpreter exits
    """
)


def test_interpreter_exit_releases_the_keys_a_thread_still_computes(segment_name: str) -> None:
    """A program that exits while a daemon thread computes releases that
    key at exit (atexit): its waiter computes a fresh round (no takeover)
    instead of waiting an hour for the lease."""
    cache = herdcache.Cache(segment_name, size=CACHE_SIZE)
    herd = Troupe("fork", cache, "report:atexit", ttl=60, lease=LONG_LEASE)
    before = stats(cache, *FLIGHT_STATS)
    program = subprocess.Popen(
        [sys.executable, "-c", EXITING_OWNER, segment_name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert read_line(program.stdout, "the program's computation starting") == "computing\n"
        (waiter,) = herd.start(1)
        until_waiting(cache, 1, before["waits"], herd)
        program.stdin.write("exit\n")
        program.stdin.close()
        assert herd.next_computer() is waiter
        waiter.order("return", "after exit")

        assert herd.finish() == {waiter: ("value", "after exit")}
        assert program.wait(HANG) == 0
        assert moved(before, cache) == {"computes": 2, "waits": 1}
    finally:
        program.kill()
        program.wait()
        herd.close()
        cache.close()


def test_killed_waiters_cost_nothing(troupe, flight_cache) -> None:
    """Scenario 11: SIGKILL half of the waiters mid-wait; the owner
    completes, the other half are served, nothing computes twice."""
    herd = troupe("report:waiter-death", ttl=60)
    before = stats(flight_cache, *FLIGHT_STATS)
    puppets = herd.start(9, together=True)
    owner = herd.next_computer()
    until_waiting(flight_cache, 8, before["waits"], herd)
    waiters = [p for p in puppets if p is not owner]
    for victim in waiters[:4]:
        victim.kill()

    owner.order("return", "served")
    reports = herd.finish()

    assert sorted(p.pid for p in reports) == sorted(p.pid for p in [owner, *waiters[4:]])
    assert set(reports.values()) == {("value", "served")}
    assert computations(flight_cache).load() == 1
    assert moved(before, flight_cache) == {"computes": 1, "waits": 8, "coalesced": 4}


def test_wait_timeout_raises_compute_timeout_and_the_owner_carries_on(troupe, flight_cache) -> None:
    """A waiter with wait_timeout raises ComputeTimeout (a TimeoutError)
    when the owner does not finish in time; the owner keeps its round and
    computes once; later callers get its value."""
    herd = troupe("report:slow", ttl=60)
    (owner,) = herd.start(1)
    herd.next_computer()
    (impatient,) = herd.start(1, wait_timeout=0.2)

    ((outcome, info),) = herd.finish([impatient]).values()
    assert (outcome, info["type"], info["timeout"]) == ("raised", "ComputeTimeout", True)
    assert "wait_timeout" in info["message"]
    assert computations(flight_cache).load() == 1

    owner.order("return", "slow but done")
    assert herd.finish([owner]) == {owner: ("value", "slow but done")}
    assert flight_cache.get("report:slow") == "slow but done"
    assert computations(flight_cache).load() == 1
