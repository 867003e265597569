"""herdcache.Queue in one process: the queue.Queue API, limits, bad input."""

from __future__ import annotations

import pickle
import queue
import signal
import struct
import threading
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from helpers import joined

import herdcache
from herdcache import errors


@pytest.fixture
def q() -> Iterator[herdcache.Queue]:
    yield herdcache.Queue(size="64KiB")


class Doubler:
    """A custom serializer: JSON-ish through repr/eval is too clever; use pickle twice."""

    name = "doubler"

    @staticmethod
    def dumps(obj: Any) -> bytes:
        return pickle.dumps(obj) * 2

    @staticmethod
    def loads(data: bytes) -> Any:
        half = len(data) // 2
        assert data[:half] == data[half:]
        return pickle.loads(data[:half])


@pytest.mark.parametrize(
    "serializer, value",
    [
        ("msgpack", {"id": 1, "tags": ["a", "b"], "blob": b"\x00\xff", 7: None}),
        ("raw", b"\x00raw bytes\xff"),
        ("pickle", {"set": {1, 2}, "tuple": (1, 2)}),
        (Doubler(), [1, "two", 3.0]),
    ],
)
def test_round_trip_per_serializer(serializer: Any, value: Any) -> None:
    q = herdcache.Queue(size="64KiB", serializer=serializer)
    q.put(value)
    assert q.get() == value
    assert q.serializer == getattr(serializer, "name", serializer)


def test_fifo_order_and_sizes(q: herdcache.Queue) -> None:
    for i in range(100):
        q.put(i)
    assert q.qsize() == 100 and not q.empty()
    assert [q.get() for _ in range(100)] == list(range(100))
    assert q.qsize() == 0 and q.empty() and not q.full()


def test_empty_raises_queue_empty(q: herdcache.Queue) -> None:
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(block=False)
    with pytest.raises(queue.Empty):
        q.get(timeout=0.01)
    with pytest.raises(queue.Empty):
        q.get_many(timeout=0)


def test_full_raises_queue_full() -> None:
    q = herdcache.Queue(size=256, serializer="raw")
    while not q.full():
        q.put_nowait(b"")
    with pytest.raises(queue.Full):
        q.put_nowait(b"")
    with pytest.raises(queue.Full):
        q.put(b"", timeout=0.01)
    assert q.qsize() == 256 // 8
    q.get()
    q.put(b"", timeout=0.01)


def test_timeouts_like_the_stdlib(q: herdcache.Queue) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        q.get(timeout=-1)
    with pytest.raises(ValueError, match="non-negative"):
        q.put(1, timeout=-1)
    q.put(1, block=False, timeout=-1)  # timeout is ignored when not blocking
    assert q.get(True, None) == 1


def test_put_many_get_many(q: herdcache.Queue) -> None:
    q.put_many(range(10))
    q.put_many(x for x in range(10, 15))
    assert q.get_many(max_items=4) == [0, 1, 2, 3]
    assert q.get_many() == list(range(4, 15))
    with pytest.raises(ValueError):
        q.get_many(max_items=0)


def test_get_many_caps_bytes_but_returns_at_least_one() -> None:
    q = herdcache.Queue(size="1MiB", serializer="raw")
    q.put_many([b"x" * 1000] * 20)
    assert len(q.get_many(max_bytes=2500)) == 3  # stops once 2500 are taken
    assert len(q.get_many(max_bytes=1)) == 1
    assert len(q.get_many(max_bytes=None)) == 16
    q.put_many([b"y" * 100_000] * 4)
    assert len(q.get_many()) == 3  # the default cap: 256 KiB


def test_put_many_partial_full_says_how_many() -> None:
    q = herdcache.Queue(size=128, serializer="raw")
    with pytest.raises(queue.Full) as info:
        q.put_many([b"12345678"] * 20, block=False)
    assert info.value.count == 128 // 16
    assert q.get_many(max_items=100) == [b"12345678"] * info.value.count


def test_oversize_message_is_refused_with_the_limit() -> None:
    q = herdcache.Queue(size=1024, serializer="raw")
    assert q.capacity == 1024 and q.max_message_size == 1016
    q.put(b"x" * 1016)
    assert len(q.get()) == 1016
    with pytest.raises(errors.ValueTooLarge, match="at most 1016") as info:
        q.put(b"x" * 1017)
    assert isinstance(info.value, ValueError)
    assert "size=" in str(info.value)
    with pytest.raises(errors.ValueTooLarge, match="message 1 of the batch"):
        q.put_many([b"ok", b"x" * 2000, b"ok"])
    assert q.empty()  # all or nothing for size


def test_unserialisable_object(q: herdcache.Queue) -> None:
    with pytest.raises(errors.SerializationError, match="cannot encode a object") as info:
        q.put(object())
    assert isinstance(info.value, TypeError)
    assert info.value.__cause__ is not None
    raw = herdcache.Queue(size=1024, serializer="raw")
    with pytest.raises(errors.SerializationError, match="bytes-like"):
        raw.put("text")
    assert q.empty() and raw.empty()


def test_undecodable_message_is_reported(segment_name: str) -> None:
    writer = herdcache.Queue(segment_name, size=4096, serializer="raw")
    reader = herdcache.Queue(segment_name, serializer="msgpack")
    writer.put(b"\xc1")  # never valid msgpack
    # A 4 GiB string announced in 5 bytes: refused without allocating it.
    writer.put(b"\xdb\xff\xff\xff\xff")
    writer.put(msgpack.packb("fine"))
    for _ in range(2):
        with pytest.raises(errors.SerializationError, match="same serializer"):
            reader.get()
    assert reader.get() == "fine"


def test_corrupted_length_is_an_error_not_a_crash(q: herdcache.Queue) -> None:
    q.put("hello")
    ring = memoryview(q._segment)[q._ring_offset :]
    try:
        length, check = struct.unpack_from("<II", ring, 0)
        struct.pack_into("<II", ring, 0, 1 << 30, (1 << 30) ^ (check ^ length))
        with pytest.raises(errors.CorruptSegment, match="message header"):
            q.get()
        struct.pack_into("<II", ring, 0, 60000, 60000 ^ (check ^ length))
        with pytest.raises(errors.CorruptSegment, match="60000 bytes"):
            q.get_many()
        struct.pack_into("<II", ring, 0, length, check)
        assert q.get() == "hello"
    finally:
        ring.release()


def test_close_drains_then_raises(q: herdcache.Queue) -> None:
    q.put_many([1, 2, 3])
    q.close()
    assert q.closed
    with pytest.raises(errors.QueueClosed, match="closed"):
        q.put(4)
    assert q.get() == 1
    assert list(q) == [2, 3]
    with pytest.raises(errors.QueueClosed):
        q.get_nowait()
    with pytest.raises(errors.QueueClosed):
        q.get_many()


def test_iteration_ends_at_close_from_another_thread(q: herdcache.Queue) -> None:
    got: list[int] = []

    def consume() -> None:
        got.extend(q)

    t = threading.Thread(target=consume)
    t.start()
    q.put_many(range(5))
    q.close()
    joined(t)
    assert got == list(range(5))


def test_blocked_get_is_woken_by_a_put(q: herdcache.Queue) -> None:
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(q.get()))
    t.start()
    q.put("wake up")
    joined(t)
    assert result == ["wake up"]


def test_a_signal_interrupts_a_blocked_get(q: herdcache.Queue) -> None:
    class Alarm(Exception):
        pass

    def handler(signum: int, frame: object) -> None:
        raise Alarm

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(Alarm):
            q.get()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    q.put(1)
    assert q.get() == 1


def test_named_queue_attaches_and_keeps_its_size(segment_name: str) -> None:
    a = herdcache.Queue(segment_name, size="128KiB")
    b = herdcache.Queue(segment_name, size="1KiB")
    assert a.name == b.name == segment_name
    assert b.capacity == a.capacity == 128 * 1024
    a.put("from a")
    assert b.get() == "from a"


def test_segment_queue(segment_name: str) -> None:
    with herdcache.Segment.create(segment_name, "4MiB") as seg:
        q = seg.queue("jobs", "64KiB")
        same = seg.queue("jobs")
        q.put(1)
        assert same.get() == 1
        assert "jobs" in seg.names()
        with pytest.raises(errors.StructMismatch, match="no queue called"):
            seg.queue("missing")
        seg.counter("hits")
        with pytest.raises(errors.StructMismatch):
            seg.queue("hits", 4096)
        del q, same


def test_pickling(segment_name: str) -> None:
    named = herdcache.Queue(segment_name, size="64KiB", serializer="pickle")
    again = pickle.loads(pickle.dumps(named))
    named.put({1, 2})
    assert again.get() == {1, 2} and again.serializer == "pickle"
    with pytest.raises(TypeError, match="fork"):
        pickle.dumps(herdcache.Queue(size=1024))


def test_single_producer_refuses_a_second_thread() -> None:
    q = herdcache.Queue(size=4096, single_producer=True, single_consumer=True)
    assert q.single_producer and q.single_consumer
    q.put(1)
    errs: list[BaseException] = []

    def other() -> None:
        try:
            q.put(2)
        except errors.InvalidArgument as exc:
            errs.append(exc)

    t = threading.Thread(target=other)
    t.start()
    joined(t)
    assert len(errs) == 1 and "single_producer=False" in str(errs[0])
    assert q.get() == 1 and q.empty()


def test_closed_segment_gives_a_clear_error(segment_name: str) -> None:
    seg = herdcache.Segment.create(segment_name, "1MiB")
    q = seg.queue("q", 4096)
    seg.close()
    with pytest.raises(errors.SegmentClosed):
        q.put(1)
    assert "segment closed" in repr(q)


def test_repr_and_unlink(segment_name: str) -> None:
    q = herdcache.Queue(segment_name, size=4096)
    assert segment_name in repr(q) and "capacity=4096" in repr(q)
    q.unlink()
    assert segment_name not in herdcache.list_segments()
    q.put(1)  # the mapping stays usable for those who have it
    assert q.get() == 1
