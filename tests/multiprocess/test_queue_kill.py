"""Processes killed around a queue (RELIABILITY.md scenario 27).

A blocked get (put) whose producers (consumers) were all SIGKILLed raises
PeerDied instead of hanging; a clean exit is not a death.  The kill loop
SIGKILLs producers mid-enqueue and consumers mid-dequeue while messages
flow, then checks every message: none torn (checksums), none duplicated,
none lost but the one a killed consumer was taking, and the queue still
works.  200 kills by default (CI); `-m stress` runs 1000.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import queue
import random
import select
import signal
import time
import struct
from pathlib import Path
from typing import Any

import pytest
from helpers import HANG, join_all, receive
from queue_helpers import consume_to_file, produce_until_stopped

import herdcache
from herdcache import errors

fork = multiprocessing.get_context("fork")


def _put_then_wait(q: herdcache.Queue, ready: Any, msg: Any) -> None:
    q.put(msg)
    ready.set()
    os.read(os.open("/dev/null", os.O_RDONLY), 1)  # returns at once; then
    signal.pause()  # wait for our SIGKILL


def _get_then_report(q: herdcache.Queue, ready: Any, conn: Any) -> None:
    q.get()
    ready.set()
    try:
        q.get()
        conn.send("returned")
    except errors.PeerDied as exc:
        conn.send(f"PeerDied: {exc}")


def test_blocked_get_raises_when_its_producer_is_killed() -> None:
    q = herdcache.Queue(size="64KiB")
    put_ready, got_ready = fork.Event(), fork.Event()
    recv, send = fork.Pipe(duplex=False)
    producer = fork.Process(target=_put_then_wait, args=(q, put_ready, "last words"))
    consumer = fork.Process(target=_get_then_report, args=(q, got_ready, send))
    producer.start()
    assert put_ready.wait(HANG), "the producer never put its message"
    consumer.start()
    assert got_ready.wait(HANG), "the consumer never took the message"  # its next get blocks
    producer.kill()
    producer.join()
    report = receive(recv)
    join_all([consumer])
    assert report.startswith("PeerDied") and "producer" in report
    # A new producer clears it: the queue works again.
    q.put("again")
    assert q.get() == "again"


def _get_one_then_wait(q: herdcache.Queue, ready: Any) -> None:
    q.get()
    ready.set()
    signal.pause()


def _one_message_consumer(q: herdcache.Queue) -> Any:
    """A child consumer that took one message and waits for its SIGKILL."""
    ready = fork.Event()
    consumer = fork.Process(target=_get_one_then_wait, args=(q, ready))
    consumer.start()
    q.put(b"first")
    assert ready.wait(HANG), "the consumer never took the first message"
    return consumer


def test_blocked_put_raises_when_its_consumer_is_killed() -> None:
    q = herdcache.Queue(size=1024, serializer="raw")
    consumer = _one_message_consumer(q)
    while not q.full():
        q.put_nowait(b"")
    consumer.kill()
    consumer.join()
    with pytest.raises(errors.PeerDied, match="consumer"):
        q.put(b"blocked")


def test_put_many_cut_short_by_a_dead_consumer_says_how_many_went_in() -> None:
    """A batch that fills the queue, then finds its consumer dead, raises
    PeerDied carrying .count, as queue.Full does: the messages that went in
    are exactly the first .count of the batch (issue 9, defect 12)."""
    q = herdcache.Queue(size=1024, serializer="raw")
    consumer = _one_message_consumer(q)
    consumer.kill()
    consumer.join()
    batch = [b"%03d" % i for i in range(1000)]
    with pytest.raises(errors.PeerDied, match="consumer") as info:
        q.put_many(batch)
    count = info.value.count
    assert 0 < count < len(batch)
    assert q.get_many(max_items=len(batch), block=False) == batch[:count]


def test_clean_exit_is_not_a_death() -> None:
    q = herdcache.Queue(size="64KiB")
    producer = fork.Process(target=q.put, args=("bye",))
    producer.start()
    join_all([producer])
    assert q.get() == "bye"
    with pytest.raises(queue.Empty):  # not PeerDied: it detached at exit
        q.get(timeout=0.05)


def _wait_for_progress(fd: int, n: int, what: str) -> None:
    """Read ``n`` bytes of ``what`` from ``fd``, failing after HANG seconds."""
    deadline = time.monotonic() + HANG
    while n > 0:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"gave up after {HANG:.0f} s waiting for {n} more bytes of {what}"
        n -= len(os.read(fd, n))


def _kill_loop(tmp_path: Path, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    seg = herdcache.Segment.anonymous("8MiB")
    q = seg.queue("q", "128KiB", serializer="raw")
    prog_r, prog_w = os.pipe()  # one byte per message, from every worker
    # One byte per worker that joined its side: a supervisor must not kill
    # the last joined process of a side while its successor is starting,
    # or the other side rightly reports PeerDied.
    joined_r, joined_w = os.pipe()
    stop = seg.counter("stop")
    # Puts that returned, per producer: int64 slots that only the producer
    # writes (one aligned store each) and the parent reads once all is over.
    view, _ = seg.struct("done", 8 * (kills // 2 + 2))
    done = view.cast("q")
    producers = 0
    consumer_kills = 0
    consumed_by = [0]

    def start_producer() -> Any:
        nonlocal producers
        producers += 1
        args = (q, producers - 1, done, prog_w, joined_w, stop)
        p = fork.Process(target=produce_until_stopped, args=args)
        p.start()
        _wait_for_progress(joined_r, 1, "the new producer joining")
        return p

    def start_consumer() -> Any:
        consumed_by[0] += 1
        path = str(tmp_path / f"consumer-{consumed_by[0]}")
        c = fork.Process(target=consume_to_file, args=(q, path, prog_w, joined_w))
        c.start()
        _wait_for_progress(joined_r, 1, "the new consumer joining")
        return c

    producer = start_producer()
    consumers = [start_consumer(), start_consumer()]
    try:
        for i in range(kills):
            _wait_for_progress(prog_r, rng.randint(1, 40), "messages moved")
            if i % 2 == 0:
                # A new producer first, so that consumers always have a live one.
                fresh = start_producer()
                producer.kill()
                producer.join()
                producer = fresh
            else:
                k = rng.randrange(len(consumers))
                consumers[k].kill()
                consumers[k].join()
                consumer_kills += 1
                consumers[k] = start_consumer()
        stop.store(1)  # the last producer stops cleanly, then consumers drain
        join_all([producer])
        q.close()
        join_all(consumers)
    finally:
        for proc in [producer, *consumers]:
            proc.kill()
    for fd in (prog_r, prog_w, joined_r, joined_w):
        os.close(fd)
    _check_records(tmp_path, list(done[:producers]), consumer_kills)
    # Attaching again finds it whole: closed, drained, nothing half-read.
    q2 = seg.queue("q")
    assert q2.closed and q2.empty() and q2.qsize() == 0


def _check_records(tmp_path: Path, done: list[int], consumer_kills: int) -> None:
    raw = b"".join(p.read_bytes() for p in sorted(tmp_path.glob("consumer-*")))
    records = [struct.unpack_from("<qq", raw, i) for i in range(0, len(raw), 16)]
    assert (-1, -1) not in records, "a torn or altered message was delivered"
    seen = collections.Counter(records)
    assert max(seen.values(), default=1) == 1, "a message was delivered twice"
    missing = 0
    for producer, count in enumerate(done):
        seqs = {s for (p, s) in seen if p == producer}
        # Every put that returned was delivered (one more may have gone in
        # just before the kill, ahead of the count), save what killed
        # consumers were taking.
        assert max(seqs, default=-1) <= count
        missing += sum(1 for s in range(count) if s not in seqs)
    assert missing <= consumer_kills, f"{missing} messages lost, {consumer_kills} consumers killed"


def test_kill_loop(tmp_path: Path) -> None:
    """The CI-short form: 200 kills, about 3 s on 2 cores."""
    _kill_loop(tmp_path, kills=200, seed=27)


@pytest.mark.stress
@pytest.mark.timeout(1800)
def test_kill_loop_long(tmp_path: Path) -> None:
    _kill_loop(tmp_path, kills=1000, seed=1027)
