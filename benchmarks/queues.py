"""Message queues between processes of one host, side by side.

    python benchmarks/queues.py [--seconds 0.5] [--latency-messages 500]

Every cell is one producer process and one consumer process (forked),
started together; the rate is messages received per second, measured by
the consumer from the start signal to its last message.  Each cell runs
once short to size itself, then for about --seconds.  Messages are
bytes objects of 64 bytes or 4 KiB for every transport, except the
"herdcache msgpack" row, which sends dicts that msgpack encodes to about
those sizes.  Batches are 1000 messages through the transport's batch
API; multiprocessing's queues have none, so their batched cells send one
pickled list of 1000 per put (what users do), marked "(lists)".

Then: 2 producers to 2 consumers (64-byte messages), and the latency of
one 64-byte message to a consumer that is asleep in its blocking get
(median and p99, microseconds).  The machine's other load makes numbers
noisy: compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import pickle
import resource
import statistics
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing import get_context
from queue import Empty
from typing import Any

import herdcache

ctx = get_context("fork")
BATCH = 1000
SIZES = {"64 B": 64, "4 KiB": 4096}
RING = 16 * 1024 * 1024


# -- transports --------------------------------------------------------------


@dataclass
class Transport:
    """How to make, feed and drain one kind of queue (see the module doc)."""

    name: str
    make: Callable[[int], Any]  # message size -> queue object (fork-shared)
    put: Callable[[Any, Any], None]
    get: Callable[[Any], Any]
    put_batch: Callable[[Any, list], None] | None = None
    get_batch: Callable[[Any], list] | None = None  # up to BATCH, blocking
    lists: bool = False  # batched by sending lists (no batch API)
    many: bool = True  # safe with several producers and consumers
    objects: bool = False  # sends dicts, not bytes
    cleanup: Callable[[Any], None] = lambda q: None
    skipped: str = ""


def herdcache_transport(name: str, serializer: str, **flags: bool) -> Transport:
    return Transport(
        name,
        make=lambda size: herdcache.Queue(size=RING, serializer=serializer, **flags),
        put=lambda q, m: q.put(m),
        get=lambda q: q.get(),
        put_batch=lambda q, ms: q.put_many(ms),
        get_batch=lambda q: q.get_many(max_items=BATCH),
        many=not flags,
        objects=serializer == "msgpack",
    )


def mp_queue_transport(name: str, make: Callable[[], Any]) -> Transport:
    return Transport(
        name,
        make=lambda size: make(),
        put=lambda q, m: q.put(m),
        get=lambda q: q.get(),
        put_batch=lambda q, ms: q.put(ms),
        get_batch=lambda q: q.get(),
        lists=True,
    )


def pipe_transport() -> Transport:
    return Transport(
        "multiprocessing.Pipe send_bytes",
        make=lambda size: ctx.Pipe(duplex=False),
        put=lambda p, m: p[1].send_bytes(m),
        get=lambda p: p[0].recv_bytes(),
        many=False,
    )


def faster_fifo_transports() -> list[Transport]:
    try:
        import faster_fifo
    except ImportError as exc:
        return [
            Transport(n, None, None, None, skipped=f"not installed ({exc})")
            for n in ("faster_fifo", "faster_fifo pickle")
        ]  # type: ignore[arg-type]

    def make(**kw: Any) -> Callable[[int], Any]:
        return lambda size: faster_fifo.Queue(max_size_bytes=RING, **kw)

    def transport(name: str, **kw: Any) -> Transport:
        return Transport(
            name,
            make=make(**kw),
            put=lambda q, m: q.put(m, timeout=1e9),
            get=lambda q: q.get(timeout=1e9),
            put_batch=lambda q, ms: q.put_many(ms, timeout=1e9),
            get_batch=lambda q: q.get_many(timeout=1e9, max_messages_to_get=BATCH),
        )

    return [
        transport("faster_fifo (default serializer)"),
        transport("faster_fifo (plain pickle)", loads=pickle.loads, dumps=pickle.dumps),
    ]


def posix_ipc_transport() -> Transport:
    name = "posix_ipc.MessageQueue"
    try:
        import posix_ipc
    except ImportError as exc:
        return Transport(name, None, None, None, skipped=f"not installed ({exc})")  # type: ignore[arg-type]
    # Without CAP_SYS_RESOURCE a queue holds at most fs.mqueue.msg_max
    # messages (10 by default) within RLIMIT_MSGQUEUE bytes: use what is
    # allowed, and say so.
    with open("/proc/sys/fs/mqueue/msg_max") as f:
        msg_max = int(f.read())

    def make(size: int) -> Any:
        limit = resource.getrlimit(resource.RLIMIT_MSGQUEUE)[0]
        depth = max(1, min(msg_max, BATCH, limit // (size + 64) - 1))
        return posix_ipc.MessageQueue(
            f"/hcbench-{os.getpid()}-{time.monotonic_ns()}",
            posix_ipc.O_CREX,
            max_messages=depth,
            max_message_size=size,
        )

    def cleanup(q: Any) -> None:
        q.close()
        q.unlink()

    return Transport(
        f"{name} (depth {msg_max})", make, lambda q, m: q.send(m), lambda q: q.receive()[0], cleanup=cleanup
    )


def transports() -> list[Transport]:
    return [
        herdcache_transport("herdcache raw", "raw"),
        herdcache_transport(
            "herdcache raw, single producer/consumer", "raw", single_producer=True, single_consumer=True
        ),
        herdcache_transport("herdcache msgpack", "msgpack"),
        mp_queue_transport("multiprocessing.Queue", ctx.Queue),
        mp_queue_transport("multiprocessing.SimpleQueue", ctx.SimpleQueue),
        pipe_transport(),
        *faster_fifo_transports(),
        posix_ipc_transport(),
    ]


def message(t: Transport, size: int, i: int = 0) -> Any:
    if t.objects:  # msgpack: 2 small fields and a blob, about `size` bytes
        return {"id": i, "data": b"x" * (size - 22)}
    return i.to_bytes(8, "little") + b"x" * (size - 8)


def batch_of(t: Transport, size: int) -> list:
    # Distinct objects: pickle would send one shared object once per list.
    return [message(t, size, i) for i in range(BATCH)]


# -- one cell ----------------------------------------------------------------


def _produce(t: Transport, q: Any, size: int, n: int, batched: bool, go: int) -> None:
    msg, chunk = message(t, size), batch_of(t, size)
    os.read(go, 1)
    if batched:
        for _ in range(n // BATCH):
            t.put_batch(q, chunk)  # type: ignore[misc]
    else:
        put = t.put
        for _ in range(n):
            put(q, msg)


def _consume(t: Transport, q: Any, n: int, batched: bool, go: int, out: Any, count: Any = None) -> None:
    os.read(go, 1)
    got, last = 0, time.perf_counter()
    while count is not None and t.lists:  # several consumers, no timeouts:
        item = t.get(q)  # run until a sentinel (None) comes
        if item is None:
            out.send((got, last))
            return
        got += len(item) if batched else 1
        last = time.perf_counter()
    while (count.load() if count is not None else got) < n:
        if count is not None:  # several consumers: stop when all is taken
            try:
                k = _take(t, q, batched, timeout=True)
            except Empty:
                continue
            count.add(k)
        else:
            k = _take(t, q, batched)
        got += k
        last = time.perf_counter()
    out.send((got, last))


def _take(t: Transport, q: Any, batched: bool, timeout: bool = False) -> int:
    if timeout and isinstance(q, herdcache.Queue):
        return len(q.get_many(max_items=BATCH if batched else 1, timeout=0.01))
    if timeout and hasattr(q, "get_many"):  # faster_fifo
        return len(q.get_many(timeout=0.01, max_messages_to_get=BATCH if batched else 1))
    if timeout:
        return _take_with_timeout(q, batched)
    if not batched:
        t.get(q)
        return 1
    return len(t.get_batch(q))  # type: ignore[misc]


def _take_with_timeout(q: Any, batched: bool) -> int:
    try:  # posix_ipc is the one left
        q.receive(0.01)
    except Exception as exc:  # posix_ipc.BusyError
        raise Empty from exc
    return 1


def run_cell(t: Transport, size: int, batched: bool, n: int, producers: int = 1) -> float:
    """Messages per second from `producers` producers to as many consumers."""
    q = t.make(size)
    seg = herdcache.Segment.anonymous("1MiB") if producers > 1 else None
    count = seg.counter("taken") if seg is not None else None
    go_r, go_w = os.pipe()
    outs = [ctx.Pipe(duplex=False) for _ in range(producers)]
    per = n // producers // (BATCH if batched else 1) * (BATCH if batched else 1)
    procs = [ctx.Process(target=_produce, args=(t, q, size, per, batched, go_r)) for _ in range(producers)]
    procs += [
        ctx.Process(target=_consume, args=(t, q, per * producers if count else per, batched, go_r, w, count))
        for _, w in outs
    ]
    try:
        for p in procs:
            p.start()
        start = time.perf_counter()
        os.write(go_w, b"g" * len(procs))
        for p in procs[:producers]:
            p.join()
        if count is not None and t.lists:
            for _ in outs:
                t.put(q, None)
        results = [r.recv() for r, _ in outs]
        for p in procs:
            p.join()
    finally:
        for p in procs:
            p.kill()
        os.close(go_r)
        os.close(go_w)
        t.cleanup(q)
    got = sum(k for k, _ in results)
    return got / (max(end for _, end in results) - start)


def rate(t: Transport, size: int, batched: bool, seconds: float, producers: int = 1) -> float:
    first = 20 * BATCH if batched else 5000
    estimate = run_cell(t, size, batched, first * producers, producers)
    n = int(min(max(estimate * seconds, first), 5_000_000))
    return run_cell(t, size, batched, n * producers, producers)


# -- latency -----------------------------------------------------------------


def _latency_consumer(t: Transport, q: Any, n: int, out: Any) -> None:
    delays = []
    for _ in range(n):
        m = t.get(q)
        now = time.perf_counter_ns()
        sent = m["id"] if t.objects else struct.unpack_from("<q", m)[0]
        delays.append(now - sent)
    out.send(delays)


def latency(t: Transport, n: int) -> tuple[float, float]:
    """Median and p99 microseconds of one message to a sleeping consumer."""
    q = t.make(64)
    r, w = ctx.Pipe(duplex=False)
    c = ctx.Process(target=_latency_consumer, args=(t, q, n, w))
    c.start()
    try:
        for _ in range(n):
            time.sleep(0.002)  # long enough for the consumer to fall asleep
            now = time.perf_counter_ns()
            t.put(q, {"id": now, "data": b"x" * 42} if t.objects else struct.pack("<q", now) + b"x" * 56)
        delays = sorted(r.recv())
        c.join()
    finally:
        c.kill()
        t.cleanup(q)
    return statistics.median(delays) / 1e3, delays[int(len(delays) * 0.99) - 1] / 1e3


# -- the report --------------------------------------------------------------


@dataclass
class Report:
    rows: dict[str, dict[str, str]] = field(default_factory=dict)
    rates: dict[tuple[str, str], float] = field(default_factory=dict)

    def cell(self, row: str, col: str, value: float | None, text: str = "") -> None:
        self.rows.setdefault(row, {})[col] = text or (
            f"{value / 1e6:.2f} M" if value and value >= 1e6 else f"{value / 1e3:.0f} k"
        )
        if value is not None:
            self.rates[(row, col)] = value

    def table(self, cols: list[str], title: str) -> str:
        lines = [f"| {title} | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for row, cells in self.rows.items():
            if any(c in cells for c in cols):
                lines.append(f"| {row} | " + " | ".join(cells.get(c, "") for c in cols) + " |")
        return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=0.5, help="target duration of each cell")
    ap.add_argument("--latency-messages", type=int, default=500)
    args = ap.parse_args(argv)
    ts = transports()
    rep, lat, two = Report(), Report(), Report()
    cols = [f"{s} {mode}" for mode in ("one by one", "batched") for s in SIZES]
    for t in ts:
        if t.skipped:
            print(f"skipping {t.name}: {t.skipped}", file=sys.stderr)
            continue
        for size_name, size in SIZES.items():
            for batched in (False, True):
                col = f"{size_name} {'batched' if batched else 'one by one'}"
                if batched and t.put_batch is None:
                    rep.cell(t.name, col, None, "n/a")
                    continue
                value = rate(t, size, batched, args.seconds)
                rep.cell(t.name, col, value, f"{value / 1e3:,.0f} k" + (" (lists)" if batched and t.lists else ""))
                print(f"{t.name:45} {col:20} {value:12,.0f} msg/s", file=sys.stderr)
        for batched in (False, True):
            col = "2x2 batched" if batched else "2x2 one by one"
            if not t.many or (batched and t.put_batch is None):
                two.cell(t.name, col, None, "n/a")
                continue
            value = rate(t, 64, batched, args.seconds, producers=2)
            two.cell(t.name, col, value, f"{value / 1e3:,.0f} k" + (" (lists)" if batched and t.lists else ""))
            print(f"{t.name:45} {col:20} {value:12,.0f} msg/s", file=sys.stderr)
        med, p99 = latency(t, args.latency_messages)
        lat.cell(t.name, "median µs", None, f"{med:.1f}")
        lat.cell(t.name, "p99 µs", None, f"{p99:.1f}")
        print(f"{t.name:45} latency median {med:.1f} µs, p99 {p99:.1f} µs", file=sys.stderr)

    print(
        f"python benchmarks/queues.py --seconds {args.seconds}  ({os.cpu_count()} CPUs, Python {sys.version.split()[0]})\n"
    )
    print(rep.table(cols, "1 producer → 1 consumer, messages/s") + "\n")
    print(two.table(["2x2 one by one", "2x2 batched"], "2 producers → 2 consumers, 64 B, messages/s") + "\n")
    print(lat.table(["median µs", "p99 µs"], "latency of one 64 B message, consumer asleep") + "\n")
    print(ratios(rep.rates, two.rates))
    return 0


def ratios(rates: dict[tuple[str, str], float], two: dict[tuple[str, str], float]) -> str:
    def r(a: str, b: str, col: str, src: dict[tuple[str, str], float] = rates) -> str:
        if (a, col) not in src or (b, col) not in src:
            return "n/a"
        return f"{src[(a, col)] / src[(b, col)]:.1f}x"

    hr, hm, hs = "herdcache raw", "herdcache msgpack", "herdcache raw, single producer/consumer"
    posix = next((row for row, _ in rates if row.startswith("posix_ipc")), "posix_ipc")
    lines = ["Ratios (same run):"]
    for col in ("64 B one by one", "4 KiB one by one"):
        lines.append(
            f"- {col}: herdcache raw / multiprocessing.Queue = {r(hr, 'multiprocessing.Queue', col)}, "
            f"/ posix_ipc = {r(hr, posix, col)}, "
            f"/ faster_fifo = {r(hr, 'faster_fifo (default serializer)', col)}; "
            f"herdcache msgpack / multiprocessing.Queue = {r(hm, 'multiprocessing.Queue', col)}; "
            f"single/many (lock-free vs locked sides) = {r(hs, hr, col)}"
        )
    for col in ("64 B batched", "4 KiB batched"):
        lines.append(
            f"- {col}: herdcache raw / faster_fifo plain pickle = {r(hr, 'faster_fifo (plain pickle)', col)}, "
            f"herdcache msgpack / faster_fifo plain pickle = {r(hm, 'faster_fifo (plain pickle)', col)}"
        )
    for col in ("2x2 one by one", "2x2 batched"):
        lines.append(
            f"- {col}: herdcache raw / multiprocessing.Queue = {r(hr, 'multiprocessing.Queue', col, two)}, "
            f"/ faster_fifo = {r(hr, 'faster_fifo (default serializer)', col, two)}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
