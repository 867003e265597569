"""Puppet processes for the single-flight tests.

A puppet is a process (forked or spawned) that asks the cache for one key
with ``get_or_compute`` and reports, through a pipe of its own, what came
back.  Its computation decides nothing by itself: it adds one to the
segment's ``computations`` counter, tells the test ``("computing", pid)``
and waits for the test's order (return a value, raise, exit...).  So the
test decides who computes what and when, and whom to kill, and waits for
events, never for time.

Every puppet has a private pipe, never a shared queue: a puppet killed
while writing corrupts no other puppet's channel and leaves no lock of a
shared queue held.  For the same reason a computation blocks on its pipe,
not on a ``multiprocessing.Event``: ``Event.set()`` waits for every
sleeper to acknowledge, and a killed sleeper never does.

This module imports neither pytest nor the test modules: a spawned puppet
imports it, herdcache and :mod:`helpers` (for its deadlines) and nothing
else.  Every wait of the test's side has a deadline and fails naming the
puppets it still waited for.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import signal
import sys
from multiprocessing.connection import Connection, wait
from typing import Any, Callable

from helpers import HANG, wait_until

import herdcache

COUNTER = "computations"
CACHE_SIZE = "16MiB"
START_METHODS = ("fork", "spawn")

#: An order a computation obeys: what the test's reply to "computing" says.
Order = tuple


class PriceUnavailable(LookupError):
    """An application's own exception, importable in every puppet."""


def open_cache(where: Any) -> herdcache.Cache:
    """The cache a puppet uses: the parent's object (fork) or attached by name (spawn)."""
    return where if isinstance(where, herdcache.Cache) else herdcache.Cache(where)


def computations(cache: herdcache.Cache) -> herdcache.Counter:
    """The counter every computation of the tests adds one to."""
    return cache.segment.counter(COUNTER)


def obey(order: Order) -> Any:
    """Do what the test ordered the computation to do."""
    what = order[0]
    if what == "return":
        return order[1]
    if what == "raise":
        module, name, args = order[1:]
        raise getattr(importlib.import_module(module), name)(*args)
    if what == "interrupt":
        raise KeyboardInterrupt
    if what == "exit":
        sys.exit(order[1])
    if what == "_exit":
        os._exit(order[1])
    raise AssertionError(f"unknown order {order!r}")


def describe(exc: BaseException) -> dict:
    """What a test checks of an exception raised in a puppet (picklable)."""
    return {
        "type": type(exc).__qualname__,
        "module": type(exc).__module__,
        "message": str(exc),
        "remote_traceback": getattr(exc, "remote_traceback", None),
        "notes": list(getattr(exc, "__notes__", [])),
        "original_type": getattr(exc, "original_type", None),
        "timeout": isinstance(exc, TimeoutError),
    }


def puppet_main(conn: Connection, where: Any, key: Any, options: dict, barrier: Any) -> None:
    """The puppet: ask for key once, let the test steer the computation,
    report ``("value", v)`` or ``("raised", describe(exc))``."""
    cache = open_cache(where)
    counter = computations(cache)

    def compute() -> Any:
        counter.add(1)
        conn.send(("computing", os.getpid()))
        return obey(conn.recv())

    if barrier is not None:
        barrier.wait()
    try:
        value = cache.get_or_compute(key, compute, **options)
    except BaseException as exc:  # reported, whatever it is
        conn.send(("raised", describe(exc)))
        if isinstance(exc, SystemExit):
            raise
        return
    conn.send(("value", value))


class Puppet:
    """The test's side of one puppet."""

    def __init__(self, process: multiprocessing.process.BaseProcess, conn: Connection):
        self.process = process
        self.conn = conn
        self.gone = False  # killed, or told to end without a word
        self.final: tuple | None = None  # ("value", v) or ("raised", info)

    @property
    def pid(self) -> int:
        return self.process.pid

    def order(self, *order: Any) -> None:
        """Tell this puppet's computation what to do."""
        self.gone = order[0] == "_exit"
        self.conn.send(order)

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def kill(self) -> None:
        """SIGKILL, and reap."""
        self.gone = True
        self.signal(signal.SIGKILL)
        self.process.join()


class Troupe:
    """Puppets asking one cache for one key with the same options."""

    def __init__(self, method: str, cache: herdcache.Cache, key: Any, **options: Any):
        if method == "spawn" and cache.name is None:
            raise ValueError("spawned puppets attach by name: give the cache a name")
        self.ctx = multiprocessing.get_context(method)
        self.where = cache if method == "fork" else cache.name
        self.key = key
        self.options = options
        self.puppets: list[Puppet] = []
        # A spawned puppet opens the barrier by name once it runs: keep it
        # alive here (start() drops the process's references to its args).
        self.barriers: list[Any] = []
        computations(cache)  # made before any puppet races for it

    def start(self, count: int = 1, together: bool = False, **options: Any) -> list[Puppet]:
        """Start ``count`` puppets; ``together``: all released by one barrier.
        ``options`` override the troupe's for these puppets."""
        barrier = self.ctx.Barrier(count) if together else None
        self.barriers.append(barrier)
        started = []
        for _ in range(count):
            mine, theirs = self.ctx.Pipe()
            process = self.ctx.Process(
                target=puppet_main,
                args=(theirs, self.where, self.key, {**self.options, **options}, barrier),
                daemon=True,
            )
            process.start()
            theirs.close()
            started.append(Puppet(process, mine))
        self.puppets += started
        return started

    def live(self) -> list[Puppet]:
        return [p for p in self.puppets if not p.gone and p.final is None]

    def next_message(self, among: list[Puppet] | None = None) -> tuple[Puppet, tuple]:
        """The next message of any puppet (of ``among``), waiting as long as it takes."""
        candidates = [p for p in (among if among is not None else self.live()) if not p.gone]
        assert candidates, "no live puppet left to hear from"
        by_conn = {p.conn: p for p in candidates}
        ready = wait(list(by_conn), timeout=HANG)
        if not ready:
            raise AssertionError(
                f"none of the puppets {sorted(p.pid for p in candidates)} said anything within {HANG:.0f} s "
                f"(each was computing or waiting on key {self.key!r})"
            )
        puppet = by_conn[ready[0]]
        try:
            message = puppet.conn.recv()
        except EOFError:
            puppet.process.join()
            raise AssertionError(
                f"puppet {puppet.pid} ended (exit code {puppet.process.exitcode}) without reporting"
            ) from None
        if message[0] in ("value", "raised"):
            puppet.final = message
        return puppet, message

    def next_computer(self) -> Puppet:
        """The puppet whose computation starts next (final reports that
        arrive meanwhile are kept for :meth:`finish`)."""
        while True:
            puppet, message = self.next_message()
            if message[0] == "computing":
                return puppet

    def finish(self, among: list[Puppet] | None = None) -> dict[Puppet, tuple]:
        """Wait for the final report of each live puppet (of ``among``);
        a computation that starts meanwhile fails the test."""
        waiting = [p for p in (among if among is not None else self.live()) if p.final is None]
        while waiting:
            puppet, message = self.next_message(waiting)
            assert message[0] != "computing", f"an unexpected computation started in {puppet.pid}"
            waiting.remove(puppet)
        for puppet in among if among is not None else self.puppets:
            if not puppet.gone:
                puppet.process.join()
        return {p: p.final for p in (among if among is not None else self.puppets) if p.final}

    def check(self) -> None:
        """Fail at once if a puppet died on its own without reporting."""
        for p in self.puppets:
            if not p.gone and p.final is None and p.process.exitcode is not None and not p.conn.poll():
                raise AssertionError(f"puppet {p.pid} died (exit code {p.process.exitcode})")

    def close(self) -> None:
        """Kill what is left (a stopped puppet too)."""
        for p in self.puppets:
            if p.process.is_alive():
                p.signal(signal.SIGCONT)
                p.process.kill()
            p.process.join()
            p.conn.close()


def until(
    predicate: Callable[[], bool], what: str, troupe: Troupe | None = None, seen: Callable[[], object] | None = None
) -> None:
    """Poll ``predicate`` until it holds, at most HANG seconds, else fail
    saying ``what`` was awaited and what ``seen()`` showed; a puppet that
    crashes meanwhile fails at once."""

    def holds() -> bool:
        if troupe is not None:
            troupe.check()
        return predicate()

    wait_until(holds, what, seen)


def until_waiting(cache: herdcache.Cache, count: int, since: int = 0, troupe: Troupe | None = None) -> None:
    """Until ``count`` callers more than ``since`` (an earlier ``waits``
    stat) sleep waiting for another's computation."""
    key = "" if troupe is None else f" on key {troupe.key!r}"
    until(
        lambda: stat(cache, "waits") - since == count,
        f"{count} callers wait{key}",
        troupe,
        seen=lambda: f"{stat(cache, 'waits') - since} waiting",
    )


def stat(cache: herdcache.Cache, name: str) -> int:
    """One counter of the cache's stats, summed over every process."""
    return cache.stats()[name]


def stats(cache: herdcache.Cache, *names: str) -> dict[str, int]:
    """Several counters of the cache's stats at one moment."""
    current = cache.stats()
    return {name: current[name] for name in names}


FLIGHT_STATS = ("computes", "waits", "coalesced", "takeovers", "stale_served", "early_refreshes", "compute_errors")


def moved(before: dict[str, int], cache: herdcache.Cache) -> dict[str, int]:
    """How much each counter of ``before`` grew since, the zeros left out."""
    now = stats(cache, *before)
    return {name: now[name] - before[name] for name in before if now[name] != before[name]}
