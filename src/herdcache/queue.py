"""A message queue in shared memory, for processes of one host.

:class:`Queue` has the methods and exceptions of :class:`queue.Queue` and
:class:`multiprocessing.Queue` (``put``, ``get``, their ``_nowait``
forms, ``qsize``, ``empty``, ``full``, ``close``, :class:`queue.Empty`,
:class:`queue.Full`), plus batches (``put_many``, ``get_many``) and
iteration until the queue is closed::

    q = herdcache.Queue("jobs", size="16MiB")   # named: any process attaches
    q.put({"id": 1})                             # msgpack by default
    job = q.get(timeout=1.0)
    for job in q:                                # until closed and drained
        ...

It is a ring of bytes in a segment, after PostgreSQL's ``shm_mq``: a
producer copies whole messages in and then publishes them with one store,
a consumer copies them out and then frees them with one store, and
nobody makes a system call while nobody sleeps.  A process killed at any
instruction never leaves a torn message behind; a blocked ``get`` (or
``put``) whose every producer (consumer) died raises
:class:`~herdcache.errors.PeerDied` instead of hanging.

Lifetimes: an anonymous queue (no name) lives as long as the processes
that inherited it through ``fork()``.  A named queue is a segment file
(``/dev/shm/herdcache.NAME``) that outlives its processes until
:meth:`Queue.unlink` or ``python -m herdcache rm NAME``.
"""

from __future__ import annotations

import contextlib
import os
import queue as _stdqueue
import weakref
from collections.abc import Iterator
from multiprocessing import util as _mp_util
from typing import Any

from . import _core
from .errors import QueueClosed, SegmentBusy, StructMismatch
from .segment import Segment
from .serializers import TAG_RAW, get_serializer
from .sizes import parse_size

__all__ = ["Empty", "Full", "Queue"]

#: The exceptions of the standard library's queue module, for convenience.
Empty = _stdqueue.Empty
Full = _stdqueue.Full

#: The name of the queue structure inside a queue's own segment.
_STRUCT = "queue"

# Queues alive in this process, so that a forked child re-arms their
# detach-at-exit (multiprocessing clears its finalizers in a new child).
_live: weakref.WeakSet[Queue] = weakref.WeakSet()


class Queue(_core.Queue):
    """A FIFO queue of messages shared by processes, in shared memory.

    ``Queue(name, size)`` attaches the named queue or creates it (any
    number of processes may race: one creates, the others attach);
    ``Queue(size=...)`` makes an anonymous one that ``fork()`` children
    share; :meth:`Segment.queue` puts one inside a segment of yours.

    Producers and consumers may be many processes and threads; each side
    takes a lock of its own (which a killed holder does not wedge) around
    every message or batch.  A queue made with ``single_producer=True``
    (or ``single_consumer=True``) takes no lock on that side: exactly one
    thread of one process may use the side at a time, and others are
    refused with :class:`~herdcache.errors.InvalidArgument`.

    Messages are serialized with msgpack unless ``serializer`` says
    otherwise (see :mod:`herdcache.serializers`).  A message, once
    serialized, may have at most :attr:`max_message_size` bytes (the
    ring less 8); larger ones raise
    :class:`~herdcache.errors.ValueTooLarge` rather than being split, so
    that no reader ever sees part of a message.

    :param name: the segment's name (letters, digits, ``. _ - : @ +``), or
        None for an anonymous queue shared by ``fork()`` only.
    :param size: bytes of the ring, e.g. ``"16MiB"``; each message takes
        8 bytes plus its length rounded up to 8.  An existing queue keeps
        the size it was made with.
    :param serializer: ``"msgpack"``, ``"raw"`` (bytes in, bytes out),
        ``"pickle"`` (trusted peers only) or an object with
        ``dumps``/``loads``.
    :param dir: the directory of named segments (default ``/dev/shm`` or
        ``$HERDCACHE_DIR``).
    :param single_producer: at creation, make the producer side lock-free
        for one producing thread.
    :param single_consumer: likewise for the consumer side.
    :param mode: file mode of a new named segment.
    :raises SegmentFull: ``/dev/shm`` has no room for ``size``.
    :raises StructMismatch: the segment holds something else by that name.
    """

    def __init__(
        self,
        name: str | None = None,
        size: int | str = "1MiB",
        *,
        serializer: Any = "msgpack",
        dir: str | None = None,
        single_producer: bool = False,
        single_consumer: bool = False,
        mode: int = 0o600,
    ):
        struct_size = Queue.struct_size(parse_size(size))
        # The segment header, the queue, and a page of slack for alignment.
        segment_size = _core.MIN_SEGMENT_SIZE + struct_size + 4096
        if name is None:
            segment = Segment.anonymous(segment_size)
        else:
            segment = Segment.open(name, segment_size, dir=dir, mode=mode)
        flags = queue_flags(single_producer, single_consumer)
        self._setup(segment, _STRUCT, struct_size, flags, serializer)

    @classmethod
    def _in_segment(
        cls, segment: Segment, name: str, size: int | str | None, serializer: Any = "msgpack", flags: int = 0
    ) -> Queue:
        """The queue called ``name`` inside ``segment`` (see :meth:`Segment.queue`)."""
        self = cls.__new__(cls)
        struct_size = None if size is None else Queue.struct_size(parse_size(size))
        self._setup(segment, name, struct_size, flags, serializer)
        return self

    def _setup(self, segment: Segment, struct: str, struct_size: int | None, flags: int, serializer: Any) -> None:
        ser = get_serializer(serializer)
        offset, struct_size = _find_or_alloc(segment, struct, struct_size)
        # raw: the core stores bytes-like messages as they are.
        dumps, loads = (None, None) if ser.tag == TAG_RAW else (ser.dumps, ser.loads)
        super().__init__(segment, offset, struct_size, flags, dumps, loads, ser.name)
        self._segment = segment
        self._struct = struct
        self._serializer = ser
        self._serializer_spec = serializer  # to rebuild it in another process
        self._arm_detach()
        _live.add(self)

    def _arm_detach(self) -> None:
        # At exit (multiprocessing children included), stop counting this
        # process as a producer or consumer: a clean exit is not a death.
        _mp_util.Finalize(self, _detach, args=(weakref.ref(self),), exitpriority=0)

    # -- the API of queue.Queue beyond what the C type implements -----------

    def __iter__(self) -> Iterator[Any]:
        """Yield messages as :meth:`get` returns them, until the queue is
        closed and drained.

        :raises PeerDied: every producer died with the queue empty.
        """
        get = self.get
        while True:
            try:
                yield get()
            except QueueClosed:
                return

    @property
    def name(self) -> str | None:
        """The segment's name; None for an anonymous queue."""
        return self._segment.name

    @property
    def serializer(self) -> str:
        """The serializer's name (``"msgpack"``, ``"raw"``, ...)."""
        name: str = self._serializer.name
        return name

    @property
    def single_producer(self) -> bool:
        """True if the queue was made for one producing thread (no lock)."""
        return bool(self._flags & _core.QUEUE_SINGLE_PRODUCER)

    @property
    def single_consumer(self) -> bool:
        """True if the queue was made for one consuming thread (no lock)."""
        return bool(self._flags & _core.QUEUE_SINGLE_CONSUMER)

    def unlink(self) -> None:
        """Remove the named queue's segment file; processes that have it
        keep using it.  Nothing for an anonymous queue or one made by
        :meth:`Segment.queue` (remove that segment instead)."""
        if self._struct == _STRUCT and self._segment.name is not None:
            self._segment.unlink()

    def __reduce__(self) -> tuple[Any, ...]:
        if self._segment.name is None:
            raise TypeError(
                "an anonymous herdcache.Queue is shared with fork() children only: "
                "give it a name (Queue('jobs', ...)) to pass it to spawn or forkserver children"
            )
        return (_attach, (self._segment.name, self._segment.dir, self._struct, self._serializer_spec))

    def __repr__(self) -> str:
        where = self._segment.name or "(anonymous)"
        if self._segment.closed:
            return f"<herdcache.Queue {where!r} segment closed>"
        state = " closed" if self.closed else ""
        return f"<herdcache.Queue {where!r} capacity={self.capacity} qsize={self.qsize()}{state}>"


def queue_flags(single_producer: bool, single_consumer: bool) -> int:
    """The core's flags for a queue made with these options."""
    return (_core.QUEUE_SINGLE_PRODUCER if single_producer else 0) | (
        _core.QUEUE_SINGLE_CONSUMER if single_consumer else 0
    )


def _find_or_alloc(segment: Segment, struct: str, size: int | None) -> tuple[int, int]:
    """Find the queue structure, or allocate it with ``size`` bytes.

    An existing queue keeps its size; ``size=None`` means it must exist.
    """
    existing = next((s for s in segment.structs() if s.name == struct), None)
    if existing is not None and existing.kind == "queue":
        size = existing.size
    if size is None:
        raise StructMismatch(
            f"queue: no queue called {struct!r} in the segment. Create it first (with a size), or check the name"
        )
    try:
        offset, _ = segment.alloc(struct, size, _core.KIND_QUEUE)
    except StructMismatch:
        # Another process created it with another size between our looks.
        existing = next((s for s in segment.structs() if s.name == struct), None)
        if existing is None or existing.kind != "queue":
            raise
        size = existing.size
        offset, _ = segment.alloc(struct, size, _core.KIND_QUEUE)
    return offset, size


def _attach(segment_name: str, dir: str | None, struct: str, serializer: Any) -> Queue:
    """Unpickle: attach the queue another process passed us."""
    return Queue._in_segment(Segment.attach(segment_name, dir=dir), struct, None, serializer)


def _detach(ref: weakref.ref[Queue]) -> None:
    q = ref()
    if q is not None and not q._segment.closed:
        # A thread still inside a put or get on a single side at exit: this
        # process does not leave that side cleanly, and the other side will
        # see a death, which is what it is.
        with contextlib.suppress(SegmentBusy):
            q.detach()


def _after_fork_in_child(*_: object) -> None:
    for q in list(_live):
        q._arm_detach()


class _ForkHook:
    """A long-lived object for multiprocessing's after-fork registry."""


_FORK_HOOK = _ForkHook()
_mp_util.register_after_fork(_FORK_HOOK, _after_fork_in_child)
os.register_at_fork(after_in_child=_after_fork_in_child)
