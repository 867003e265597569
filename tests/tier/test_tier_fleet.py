"""Several hosts on one server: one computation in the fleet, writes seen
everywhere within the bound, a killed tracker or computing process taken
over.

Each simulated host is its own L1 segment and its own forked worker
processes; all hosts share one real redis-server.
"""

from __future__ import annotations

import statistics

import pytest
from _fleet import Fleet, Worker, counter_key, until

from herdcache import _tracking

#: The documented bound on a stale read once the writer's set returned
#: (README, "Many hosts"): the heartbeat plus the call timeout.
STALE_BOUND = _tracking.HEARTBEAT + 0.25


@pytest.fixture
def fleet_factory(redis_server, segdir, prefix):
    fleets = []

    def make(hosts: int, per_host: int, **kwargs) -> Fleet:
        fleet = Fleet(hosts, per_host, segdir, prefix, redis_server.socket, **kwargs)
        fleets.append(fleet)
        return fleet

    yield make
    for fleet in fleets:
        fleet.stop()


def waits(fleet: Fleet) -> int:
    return sum(fleet.l1(host).stats()["waits"] for host in fleet.hosts)


def start_herd(fleet: Fleet, key: str) -> Worker:
    """Every worker asks for ``key``; return the one computing it, once all
    the others are known to wait (on its host's flight or on Redis)."""
    waiting_before = waits(fleet)
    for w in fleet.workers:
        w.send("herd", key, {"ttl": 60})
    computing, message = fleet.next_message(fleet.workers)
    assert message[0] == "computing", message
    others = len(fleet.workers) - 1
    until(lambda: waits(fleet) - waiting_before == others, f"{others} callers waiting for the computation")
    return computing


def test_three_hosts_of_eight_compute_a_cold_key_once(fleet_factory, redis_server, prefix) -> None:
    """24 processes on 3 hosts miss one key together: one computes, the 23
    others wait (7 on their host's flight, 2 hosts' owners on Redis) and
    get its value; each host reads the value from Redis at most once."""
    fleet = fleet_factory(3, 8)
    fleet.all_tracking()  # a tracker that starts flushes its host's L1, flights too
    epochs = {host: _epoch(fleet, host) for host in fleet.hosts}
    client = redis_server.client()
    client.config_resetstat()
    computing = start_herd(fleet, "cold")
    computing.send("return", {"price": 42})

    replies = [w.receive() for w in fleet.workers]

    assert replies == [("value", {"price": 42})] * 24
    assert int(client.get(counter_key(prefix))) == 1
    # A host whose tracking broke meanwhile (a PING unanswered within the
    # timeout, on a loaded machine) flushed its L1 and may read the value
    # once more, as documented; every other host made one flight round:
    # it went to Redis once for all 8.
    flushed = {host for host in fleet.hosts if _epoch(fleet, host) != epochs[host]}
    rounds = {host: fleet.l1(host).stats()["computes"] for host in fleet.hosts}
    assert all(n == 1 or (host in flushed and n == 2) for host, n in rounds.items()), (rounds, flushed)
    # GET sends a value to a host (the scripts read locks and headers with
    # GETRANGE): once for each of the 2 waiting hosts (and a flushed
    # host's second read), and this test read its counter with one.
    gets = redis_server.commandstats().get("get", 0)
    assert gets <= 2 + len(flushed) + 1, f"{gets} GETs, hosts flushed meanwhile: {flushed}"


def _epoch(fleet: Fleet, host: str) -> int:
    return fleet.l1(host).segment.counter("tier.epoch").load()


def test_a_write_on_one_host_reaches_the_others_within_the_bound(fleet_factory) -> None:
    """Host 0 sets a key 30 times; after each set returns, hosts 1 and 2
    (which hold the old value in their L1) read the new one within the
    bound, and never an older one after that."""
    fleet = fleet_factory(3, 1)
    fleet.all_tracking()
    writer, *readers = fleet.workers
    delays = []
    for i in range(30):
        for r in readers:  # each reader holds the old value in its L1
            assert r.ask("get", "k") == ("value", None if i == 0 else i - 1)
        _, written_at = writer.ask("set", "k", i, 60)
        for r in readers:
            reply = r.ask("await", "k", i, written_at)
            assert reply[0] == "seen", reply
            assert not reply[2], "a read went back to an older value"
            delays.append(reply[1])
    assert max(delays) < STALE_BOUND, f"slowest {max(delays):.4f} s, median {statistics.median(delays):.4f} s"


def test_a_killed_tracker_is_replaced_and_nothing_stays_stale(fleet_factory) -> None:
    """SIGKILL the process holding host 1's tracking connection: another
    process of host 1 takes the role over (the host's L1 epoch moves), and
    a write made meanwhile on host 0 is read on host 1 within the bound."""
    fleet = fleet_factory(2, 3)
    fleet.all_tracking()
    writer = fleet.of("host0")[0]
    assert writer.ask("set", "k", "old", 60)[0] == "done"
    states = [w.ask("state") for w in fleet.of("host1")]
    tracker = [w for w, s in zip(fleet.of("host1"), states) if s[2]]
    assert len(tracker) == 1, states
    survivors = [w for w in fleet.of("host1") if w is not tracker[0]]
    assert all(w.ask("get", "k") == ("value", "old") for w in survivors)
    epoch_before = states[0][3]

    tracker[0].kill()
    _, written_at = writer.ask("set", "k", "new", 60)

    reply = survivors[0].ask("await", "k", "new", written_at)
    assert reply[0] == "seen" and not reply[2]
    assert reply[1] < STALE_BOUND + 0.1, f"stale for {reply[1]:.3f} s after the write"
    until(lambda: any(w.ask("state")[2] for w in survivors), "a survivor to take the tracking over")
    assert survivors[0].ask("state")[3] > epoch_before


def test_a_killed_computing_process_is_taken_over_once_in_the_fleet(fleet_factory, redis_server, prefix) -> None:
    """3 hosts x 2 processes miss a key whose fleet lease is 2 s; the
    computing process is SIGKILLed: exactly one other process (on any host)
    takes over once the lease runs out, and every survivor gets its value."""
    fleet = fleet_factory(3, 2)
    client = redis_server.client()
    for w in fleet.workers:
        w.send("herd", "victim", {"ttl": 60, "lease": 2.0})
    first, message = fleet.next_message(fleet.workers)
    assert message[0] == "computing", message
    first.kill()

    survivors = [w for w in fleet.workers if w is not first]
    second, message = fleet.next_message(survivors)
    assert message[0] == "computing", message
    second.send("return", "after takeover")
    replies = [w.receive() for w in survivors]

    assert replies == [("value", "after takeover")] * 5
    assert int(client.get(counter_key(prefix))) == 2


def test_a_failure_reaches_the_waiting_callers_of_every_host(fleet_factory, redis_server, prefix) -> None:
    """The computing process raises: every caller waiting for it, on its
    own host and on the others, gets the same exception; nothing is cached,
    and the next call computes again."""
    fleet = fleet_factory(3, 2)
    fleet.all_tracking()
    computing = start_herd(fleet, "failing")
    computing.send("raise", "no price today")

    replies = [w.receive() for w in fleet.workers]

    assert replies == [("raised", "LookupError", "no price today")] * 6
    assert int(redis_server.client().get(counter_key(prefix))) == 1
    for w in fleet.workers:
        w.send("herd", "failing", {"ttl": 60})
    again, message = fleet.next_message(fleet.workers)
    assert message[0] == "computing"
    again.send("return", "fine now")
    assert [w.receive() for w in fleet.workers] == [("value", "fine now")] * 6
