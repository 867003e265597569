"""Messages that check themselves, and worker bodies for the queue tests.

Workers live here, not in the test modules, so that spawn children import
them by a plain module name.  Every message carries its producer, its
sequence number and a CRC of its payload, whose length varies.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from typing import Any

import herdcache

HEAD = struct.Struct("<III")  # producer, sequence, crc32 of the payload


def _pattern(producer: int, seq: int, length: int) -> bytes:
    seed = hashlib.blake2b(f"{producer}:{seq}".encode(), digest_size=32).digest()
    return (seed * (1 + length // 32))[:length]


def make_message(producer: int, seq: int, max_payload: int = 3000) -> bytes:
    """A message whose payload length and bytes follow from (producer, seq)."""
    payload = _pattern(producer, seq, (seq * 7919 + producer * 31) % max_payload)
    return HEAD.pack(producer, seq, zlib.crc32(payload)) + payload


def check_message(data: bytes) -> tuple[int, int]:
    """(producer, seq) of a message; AssertionError if it is torn or altered."""
    producer, seq, crc = HEAD.unpack_from(data)
    payload = data[HEAD.size :]
    assert zlib.crc32(payload) == crc, f"bad checksum in message {producer}:{seq}"
    assert payload == _pattern(producer, seq, len(payload)), f"message {producer}:{seq} differs"
    return producer, seq


def produce(q: herdcache.Queue, producer: int, count: int, batch: int) -> None:
    """Put messages 0..count-1 of this producer, one by one or in batches."""
    for start in range(0, count, batch):
        msgs = [make_message(producer, seq) for seq in range(start, min(count, start + batch))]
        if batch == 1:
            q.put(msgs[0])
        else:
            q.put_many(msgs)


def consume(q: herdcache.Queue, conn: Any, batch: int) -> None:
    """Take messages until the queue is closed; send back [(producer, seq)]."""
    got = []
    try:
        while True:
            msgs = [q.get()] if batch == 1 else q.get_many(max_items=batch)
            got.extend(check_message(m) for m in msgs)
    except herdcache.errors.QueueClosed:
        pass
    conn.send(got)


def relay(inq: herdcache.Queue, outq: herdcache.Queue, loops: int) -> None:
    """One station of the ring: pass each message on, loops times."""
    for _ in range(loops):
        outq.put(inq.get())


def produce_until_stopped(
    q: herdcache.Queue, producer: int, done: memoryview, progress: int, joined: int, stop: herdcache.Counter
) -> None:
    """Kill-loop producer: put until stop is non-zero; done counts the puts
    that returned; one byte on joined once the first put made it a producer.

    Only kernel objects and herdcache atomics here: a multiprocessing.Event
    has a lock that a SIGKILL at the wrong moment leaves held for good.
    """
    os.set_blocking(progress, False)
    seq = 0
    while stop.load() == 0:
        q.put(make_message(producer, seq, 1000))
        seq += 1
        done[producer] = seq
        if seq == 1:
            os.write(joined, b"j")
        _tick(progress)


def consume_to_file(q: herdcache.Queue, path: str, progress: int, joined: int) -> None:
    """Kill-loop consumer: record every (producer, seq) taken, to a file that
    survives the consumer's SIGKILL; a torn message is recorded as (-1, -1).
    One byte on joined after the first message (it is a consumer by then)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.set_blocking(progress, False)
    for n, data in enumerate(q):
        try:
            record = check_message(data)
        except AssertionError:
            record = (-1, -1)
        os.write(fd, struct.pack("<qq", *record))
        if n == 0:
            os.write(joined, b"j")
        _tick(progress)


def _tick(progress: int) -> None:
    """One byte of progress for the supervisor, dropped if it is not reading."""
    try:
        os.write(progress, b".")
    except BlockingIOError:
        pass
