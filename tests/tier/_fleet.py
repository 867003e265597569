"""Simulated hosts for the tier's tests: each host is an L1 segment name
(in a private directory) and its own worker processes; all hosts share one
redis-server.

A worker obeys orders sent through a private duplex pipe (never a shared
queue, which a killed worker could leave locked) and answers each.  A
computation decides nothing by itself: it adds one to the Redis counter
``computations``, tells the test ``("computing", pid)`` and waits for the
test's order, so the test chooses who computes, when, and whom to kill.

This module imports neither pytest nor the tests' other modules.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

import redis

import herdcache

#: How long an answer may take before the test calls the worker hung.
HANG = 60.0
L1_SIZE = "8MiB"


def counter_key(prefix: str) -> str:
    """The Redis counter every computation of a test adds one to (outside
    the cache's prefix, so no host hears of it)."""
    return "computations:" + prefix


def open_host(host: str, segdir: str, prefix: str, socket: str, **kwargs: Any) -> herdcache.TieredCache:
    """A worker's TieredCache: the host's L1 in front of the shared server."""
    remote = redis.Redis(unix_socket_path=socket, protocol=3)
    return herdcache.TieredCache(host, L1_SIZE, remote=remote, prefix=prefix, dir=segdir, **kwargs)


def _compute(conn: Connection, counter: redis.Redis, prefix: str) -> Callable[[], Any]:
    def compute() -> Any:
        counter.incr(counter_key(prefix))
        conn.send(("computing", os.getpid()))
        order = conn.recv()
        if order[0] == "raise":
            raise LookupError(order[1])
        return order[1]

    return compute


def _read(cache: herdcache.TieredCache, key: str) -> Any:
    """get, or the exception's class name while Redis is away (the host's
    breaker may still be open for a moment after the server came back)."""
    try:
        return cache.get(key)
    except herdcache.errors.RemoteUnavailable:
        return "RemoteUnavailable"


def _await(cache: herdcache.TieredCache, key: str, value: Any, since: float) -> tuple:
    """Read ``key`` until it is ``value``; the delay since ``since`` and
    whether a read after the first sight went back to an older value."""
    deadline = time.monotonic() + HANG
    while _read(cache, key) != value:
        if time.monotonic() > deadline:
            return ("timeout", _read(cache, key))
    seen_at = time.monotonic()
    regressed = any(cache.get(key) != value for _ in range(20))
    return ("seen", seen_at - since, regressed)


def _soak(cache: herdcache.TieredCache, conn: Connection) -> tuple:
    """get_or_compute and set in a loop until told to stop: how many calls
    succeeded and failed with RemoteUnavailable, other errors, the longest
    call (s)."""
    done = failed = 0
    others: list[str] = []
    longest = 0.0
    conn.send(("soaking",))
    i = 0
    while not conn.poll():
        i += 1
        started = time.monotonic()
        try:
            if i % 10 == 0:
                cache.set(f"soak{i % 7}", i, 5)
            else:
                cache.get_or_compute(f"soak{i % 7}", lambda i=i: i, ttl=0.05)
            done += 1
        except herdcache.errors.RemoteUnavailable:
            failed += 1
        except Exception as exc:
            others.append(f"{type(exc).__name__}: {exc}")
        longest = max(longest, time.monotonic() - started)
    conn.recv()
    return ("soaked", done, failed, others[:5], longest)


def worker(host: str, segdir: str, prefix: str, socket: str, barrier: Any, conn: Connection, kwargs: dict) -> None:
    """A host's worker process: open the tier, then obey orders."""
    cache = open_host(host, segdir, prefix, socket, **kwargs)
    counter = redis.Redis(unix_socket_path=socket)
    conn.send(("ready", os.getpid()))
    while True:
        order = conn.recv()
        what, args = order[0], order[1:]
        if what == "exit":
            cache.close()
            conn.send(("bye",))
            return
        if what == "herd":
            key, options = args
            barrier.wait(HANG)
            try:
                conn.send(("value", cache.get_or_compute(key, _compute(conn, counter, prefix), **options)))
            except Exception as exc:
                conn.send(("raised", type(exc).__name__, str(exc)))
        elif what == "set":
            try:
                cache.set(*args)
                conn.send(("done", time.monotonic()))
            except herdcache.errors.RemoteUnavailable as exc:
                conn.send(("unavailable", str(exc)))
        elif what == "soak":
            conn.send(_soak(cache, conn))
        elif what == "get":
            conn.send(("value", cache.get(args[0])))
        elif what == "await":
            conn.send(_await(cache, *args))
        elif what == "tracking":
            deadline = time.monotonic() + HANG
            while not cache.tracking and time.monotonic() < deadline:
                time.sleep(0.001)
            conn.send(("tracking", cache.tracking, cache.tracker_elected, cache.epoch))
        elif what == "state":
            conn.send(("state", cache.tracking, cache.tracker_elected, cache.epoch))


class Worker:
    """The test's side of one worker process."""

    def __init__(self, host: str, proc: multiprocessing.Process, conn: Connection):
        self.host = host
        self.proc = proc
        self.conn = conn
        self.pid = proc.pid

    def send(self, *order: Any) -> None:
        self.conn.send(order)

    def receive(self, timeout: float = HANG) -> tuple:
        """The worker's next message; AssertionError if none comes in time."""
        if not self.conn.poll(timeout):
            raise AssertionError(f"worker {self.pid} of host {self.host} sent nothing within {timeout} s")
        return self.conn.recv()

    def ask(self, *order: Any) -> tuple:
        self.send(*order)
        return self.receive()

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.proc.join()


class Fleet:
    """``hosts`` x ``per_host`` worker processes (forked) on one server."""

    def __init__(self, hosts: int, per_host: int, segdir: str, prefix: str, socket: str, **kwargs: Any):
        ctx = multiprocessing.get_context("fork")
        self.segdir = segdir
        self.barrier = ctx.Barrier(hosts * per_host)
        self.hosts = [f"host{h}" for h in range(hosts)]
        self.workers: list[Worker] = []
        for host in self.hosts:
            # Create the host's segment before its workers race to: an
            # attacher that finds a file whose creator was descheduled for
            # 100 ms before taking the creation lock judges it dead
            # (segment.c, STALE_INIT_NS; seen under load).
            self.l1(host).close()
            for _ in range(per_host):
                mine, theirs = ctx.Pipe()
                proc = ctx.Process(
                    target=worker, args=(host, segdir, prefix, socket, self.barrier, theirs, kwargs), daemon=True
                )
                proc.start()
                theirs.close()
                self.workers.append(Worker(host, proc, mine))
        for w in self.workers:
            assert w.receive()[0] == "ready"

    def of(self, host: str) -> list[Worker]:
        """The live workers of a host."""
        return [w for w in self.workers if w.host == host and w.proc.is_alive()]

    def l1(self, host: str) -> herdcache.Cache:
        """The host's L1, opened as a plain Cache (no tracker) to read its stats."""
        return herdcache.Cache(host, L1_SIZE, dir=self.segdir)

    def all_tracking(self) -> None:
        """Return once every host's tracking is live."""
        for host in self.hosts:
            reply = self.of(host)[0].ask("tracking")
            assert reply[1], f"{host} has no live tracking after {HANG} s"

    def next_message(self, among: list[Worker], timeout: float = HANG) -> tuple[Worker, tuple]:
        """The first message any of ``among`` sends, and its sender."""
        ready = wait([w.conn for w in among], timeout)
        if not ready:
            raise AssertionError(f"none of {len(among)} workers sent anything within {timeout} s")
        sender = next(w for w in among if w.conn is ready[0])
        return sender, sender.receive()

    def stop(self) -> None:
        for w in self.workers:
            if w.proc.is_alive():
                w.kill()


def succeeds(fn: Callable[..., Any], *args: Any) -> bool:
    """Whether ``fn(*args)`` went through (False: RemoteUnavailable)."""
    try:
        fn(*args)
        return True
    except herdcache.errors.RemoteUnavailable:
        return False


def settle(*caches: herdcache.TieredCache) -> None:
    """Wait until each cache's tracker has handled every invalidation sent
    so far: until then, one may still drop the L1 copy the test reads next
    (a fill that overtook the invalidation of the write it read goes when
    that invalidation comes: one more read, never a stale one).  Redis
    sends a connection's messages in order, and the tracker handles them
    one by one, so once it counts that of a write made now, it is done
    with every earlier one."""
    counted = [c.stats()["tier"]["invalidations"] for c in caches]
    remote = caches[0]._remote
    remote.client.set(remote.value_key("settle"), b"")
    for cache, before in zip(caches, counted):
        until(lambda c=cache, n=before: c.stats()["tier"]["invalidations"] > n, f"{cache.name} to hear a write")


def until(predicate: Callable[[], bool], what: str, timeout: float = HANG) -> None:
    """Poll ``predicate`` (an observable state) until it holds; fail with ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what}")
        time.sleep(0.001)
