"""``python -m herdcache demo``: a herd of processes sharing one cache.

Three acts, each printed as it happens:

1. The herd: N worker processes ask for one slow key at the same moment.
   One computes it; the others sleep and receive its value.
2. Expiry under load: the workers keep asking while the key expires,
   again and again; each time exactly one of them recomputes it.
3. A crash: the worker computing the key is SIGKILLed mid-computation;
   one waiter takes over, and everyone still gets a value.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from multiprocessing import connection
from multiprocessing.connection import Connection
import signal
import time
import uuid
from typing import Any

from .cache import Cache
from .segment import remove

COMPUTE_SECONDS = 0.3
TTL_SECONDS = 0.5
LOAD_SECONDS = 2.0


def _build_report(cache: Cache, log: Any) -> dict[str, Any]:
    """The slow computation: counts itself and says who ran it."""
    number = cache.segment.counter("computations").add(1)
    # In act 3 the first process to compute claims the role of victim.
    if cache.segment.counter("doomed").compare_exchange(-1, os.getpid()):
        log.send(("doomed", os.getpid(), number))
        time.sleep(3600)  # the parent SIGKILLs us here, mid-computation
    log.send(("computing", os.getpid(), number))
    time.sleep(COMPUTE_SECONDS)
    return {"built_by": os.getpid(), "number": number, "rows": list(range(10))}


def _worker(name: str, index: int, start: Any, log: Any, act: str) -> None:
    cache = Cache(name)
    start.wait()
    deadline = time.monotonic() + (LOAD_SECONDS if act == "load" else 0)
    calls = 0
    while True:
        report = cache.get_or_compute("report", lambda: _build_report(cache, log), ttl=TTL_SECONDS, lease=10)
        calls += 1
        cache.set(f"worker:{index}:last", report["number"])
        if time.monotonic() >= deadline:
            break
    log.send(("done", os.getpid(), calls, report["built_by"], report["number"]))


class _Log:
    """One pipe per worker: a multiprocessing.Queue has a lock that a worker
    killed while writing would keep forever (the very failure herdcache's
    own locks recover from)."""

    def __init__(self, ctx: Any, workers: int):
        self.pipes = [ctx.Pipe(duplex=False) for _ in range(workers)]

    def writer(self, index: int) -> Any:
        return self.pipes[index][1]

    def events(self) -> Any:
        readers: list[Connection] = [reader for reader, _ in self.pipes]
        while readers:
            for reader in connection.wait(readers):
                assert isinstance(reader, Connection)  # wait() returns what it was given
                try:
                    yield reader.recv()
                except EOFError:
                    readers.remove(reader)


def _act(ctx: Any, name: str, workers: int, act: str, kill_first: bool = False) -> None:
    start, log = ctx.Event(), _Log(ctx, workers)
    procs = [ctx.Process(target=_worker, args=(name, i, start, log.writer(i), act)) for i in range(workers)]
    for proc in procs:
        proc.start()
    for _, writer in log.pipes:
        writer.close()
    cache = Cache(name)
    cache.segment.counter("doomed").store(-1 if kill_first else 0)
    start.set()
    for event in log.events():
        if event[0] == "computing":
            print(f"  pid {event[1]}: computing the report (computation #{event[2]})")
        elif event[0] == "doomed":
            print(f"  pid {event[1]}: computing the report (computation #{event[2]}) ... SIGKILLed")
            os.kill(event[1], signal.SIGKILL)
        else:
            _, pid, calls, built_by, number = event
            print(f"  pid {pid}: {calls} call(s), last value built by pid {built_by} (#{number})")
    for proc in procs:
        proc.join()
    cache.close()


def run(workers: int = 8) -> None:
    """Run the three acts and print what every process did."""
    name = f"demo-{uuid.uuid4().hex[:8]}"
    ctx = mp.get_context("spawn")
    cache = Cache(name, size="16MiB")
    computations = cache.segment.counter("computations")
    try:
        print(f"{workers} processes share cache {name!r}; computing the report takes {COMPUTE_SECONDS} s.\n")
        print("Act 1: the herd asks for a missing key at once")
        _act(ctx, name, workers, "herd")
        print(f"  -> {computations.load()} computation for {workers} callers\n")

        before = computations.load()
        print(f"Act 2: {LOAD_SECONDS} s of load while the key expires every {TTL_SECONDS} s")
        _act(ctx, name, workers, "load")
        print(f"  -> {computations.load() - before} recomputations, one per expiry, however many callers\n")

        cache.delete("report")
        before = computations.load()
        print("Act 3: the process computing the key is killed")
        _act(ctx, name, workers, "herd", kill_first=True)
        stats = cache.stats()
        print(f"  -> {computations.load() - before} computations (the killed one and one takeover); "
              f"takeovers counted: {stats['takeovers']}\n")
        print(f"cache stats: computes={stats['computes']} waits={stats['waits']} coalesced={stats['coalesced']} "
              f"hits={stats['hits']} sets={stats['sets']} entries={stats['entries']}")
    finally:
        cache.close()
        remove(name)
