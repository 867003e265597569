"""Shared memory segments and the named structures inside them.

A :class:`Segment` is one region of shared memory that several processes
map.  A *named* segment is a file under ``/dev/shm`` (or ``dir=``, or the
``HERDCACHE_DIR`` environment variable), mode 0600, that any process of
the same user attaches by name: spawn, forkserver, or another program.  An
*anonymous* segment is shared with ``fork()`` children only and vanishes
with the last process that maps it.

Inside, structures are found by name, PostgreSQL's ``ShmemInitStruct``
way: the first caller allocates, every other one finds the same memory::

    seg = Segment.open("myapp", size="64MiB")
    buf, found = seg.struct("stats", 4096)   # a 64-byte aligned memoryview
    hits = seg.counter("hits")                # atomic int64
    lock = seg.lock("refresh")                # survives its owner's death
    ready = seg.condition("ready")            # wait / notify across processes

Segments are never removed behind anyone's back: attaching and exiting
leaves the file alone (unlike :mod:`multiprocessing.shared_memory`'s
resource tracker).  Remove one with :meth:`Segment.unlink`,
:func:`remove` or ``python -m herdcache rm NAME``, or let :func:`gc`
remove those no live process is attached to.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, NamedTuple

from . import _core
from .counter import Counter
from .errors import InvalidArgument, SegmentNotFound
from .sizes import parse_size
from .sync import Condition, Lock

if TYPE_CHECKING:
    from .queue import Queue

#: Seconds attach() waits for a segment another process is still creating.
ATTACH_TIMEOUT = 30.0


class StructInfo(NamedTuple):
    """One named structure of a segment, as :meth:`Segment.structs` lists it."""

    name: str
    kind: str
    offset: int
    size: int


def default_dir() -> str:
    """The directory named segments live in: ``$HERDCACHE_DIR`` or /dev/shm."""
    return os.environ.get("HERDCACHE_DIR") or _core.DEFAULT_DIR


def _dir(dir: str | None) -> str:
    return dir if dir is not None else default_dir()


#: huge_pages= names and the core's modes (hugepage.h).
_HUGE_PAGES = {"off": 0, "try": 1, "on": 2}


def _huge(huge_pages: str) -> int:
    """The core's mode for a huge_pages= argument."""
    if huge_pages not in _HUGE_PAGES:
        raise InvalidArgument(f"huge_pages must be 'off', 'try' or 'on', got {huge_pages!r}")
    return _HUGE_PAGES[huge_pages]


def _name(name: str) -> str:
    """``name``, checked before any system call (a NUL byte included, which
    the C core would otherwise never see)."""
    _core.validate_name(name)
    return name


class Segment(_core.Segment):
    """A mapped shared memory segment.  Make one with :meth:`create`,
    :meth:`attach`, :meth:`open` or :meth:`anonymous`.

    A segment is a context manager (``with`` closes it) and supports the
    buffer protocol: ``memoryview(seg)`` is the whole mapping.  ``size``,
    ``path``, ``closed``, ``created`` and ``hash_seed`` describe it;
    ``close()`` unmaps it (SegmentBusy while one of its locks is held by
    this process, a memoryview of it is alive, or a call is in flight).
    """

    #: The segment's name; None if anonymous.
    name: str | None
    #: The directory of a named segment; None if anonymous.
    dir: str | None

    def _named(self, name: str | None, dir: str | None) -> Segment:
        self.name = name
        self.dir = dir
        return self

    # -- making and finding segments -------------------------------------

    @classmethod
    def create(
        cls,
        name: str,
        size: int | str = "64MiB",
        *,
        dir: str | None = None,
        mode: int = 0o600,
        huge_pages: str = "off",
    ) -> Segment:
        """Create the named segment; fail if the name exists.

        :param name: letters, digits and ``. _ - : @ +``, at most 200 bytes.
        :param size: bytes, or a string such as ``"64MiB"``; reserved in full
            now, so a too-small ``/dev/shm`` fails here, not later.
        :param mode: file mode, exactly (the umask does not apply).
        :param huge_pages: "off" (default), "try" or "on": back the segment
            with huge pages (README, "Huge pages"); ``info()["huge_pages"]``
            says what it got.
        :raises SegmentExists: if a file of that name exists.
        :raises SegmentFull: if the directory has no room for ``size``, or
            huge_pages="on" finds none.
        """
        seg = cls._create(_name(name), parse_size(size), dir=_dir(dir), mode=mode, huge_pages=_huge(huge_pages))
        return seg._named(name, _dir(dir))

    @classmethod
    def attach(
        cls,
        name: str,
        *,
        dir: str | None = None,
        allow_shared: bool = False,
        timeout: float = ATTACH_TIMEOUT,
        huge_pages: str = "off",
    ) -> Segment:
        """Attach an existing named segment, made by any process of this user.

        :param allow_shared: accept a segment other users may write (its
            mode has group or other write bits).  Only if you trust them.
        :param timeout: seconds to wait for a segment another process is
            still creating (reserving a large one takes a while).
        :param huge_pages: "try" or "on" advise this process's mapping to
            use transparent huge pages (never an error here); "off" leaves it.
        :raises SegmentNotFound: no such segment.
        :raises NotASegment, LayoutMismatch, CorruptSegment, UnsafeSegment:
            the file is not one this process can safely use.
        """
        seg = cls._attach(
            _name(name), dir=_dir(dir), allow_shared=allow_shared, timeout=timeout, huge_pages=_huge(huge_pages)
        )
        return seg._named(name, _dir(dir))

    @classmethod
    def open(
        cls,
        name: str,
        size: int | str = "64MiB",
        *,
        dir: str | None = None,
        mode: int = 0o600,
        allow_shared: bool = False,
        timeout: float = ATTACH_TIMEOUT,
        huge_pages: str = "off",
    ) -> Segment:
        """Attach the named segment, or create it with ``size`` if absent.

        Many processes may call this at once: exactly one creates, the
        others attach.  An existing segment keeps the size it was made with.
        ``huge_pages`` is as for :meth:`create` and :meth:`attach`.
        """
        seg, _created = cls._open(
            _name(name),
            parse_size(size),
            dir=_dir(dir),
            mode=mode,
            allow_shared=allow_shared,
            timeout=timeout,
            huge_pages=_huge(huge_pages),
        )
        return seg._named(name, _dir(dir))

    @classmethod
    def anonymous(cls, size: int | str = "64MiB", *, huge_pages: str = "off") -> Segment:
        """Create a segment shared with ``fork()`` children only.

        It has no name; it is gone when the last process that maps it exits.
        ``huge_pages`` is as for :meth:`create`: "try" and "on" take
        reserved (hugetlb) pages first, then transparent ones.
        """
        return cls._anonymous(parse_size(size), _huge(huge_pages))._named(None, None)

    # -- named structures --------------------------------------------------

    def struct(self, name: str, size: int | str) -> tuple[memoryview, bool]:
        """Find the structure called ``name`` or allocate ``size`` bytes for it.

        Return ``(view, found)``: a writable memoryview of the structure
        (zero-filled when new, 64-byte aligned, never freed) and whether it
        existed before.  Of many processes racing, exactly one gets
        ``found=False``.  While a view is alive, :meth:`close` refuses.

        :raises StructMismatch: the name exists with another size or kind.
        :raises SegmentFull: no room or no free name (256 per segment).
        """
        size = parse_size(size)
        offset, found = self.alloc(name, size, _core.KIND_RAW)
        return memoryview(self)[offset : offset + size], found

    def counter(self, name: str) -> Counter:
        """The atomic int64 counter called ``name`` (created at 0)."""
        offset, _ = self.alloc(name, _core.PLACED_SIZE, _core.KIND_COUNTER)
        return Counter(self, offset)

    def lock(self, name: str) -> Lock:
        """The cross-process lock called ``name`` (created unlocked)."""
        offset, _ = self.alloc(name, _core.PLACED_SIZE, _core.KIND_LOCK)
        return Lock(self, offset)

    def condition(self, name: str, lock: Lock | None = None) -> Condition:
        """The cross-process condition called ``name``.

        It uses ``lock`` if given (several conditions may share a lock), or
        else a lock of its own, stored beside it.
        """
        offset, _ = self.alloc(name, _core.PLACED_SIZE, _core.KIND_CONDITION)
        if lock is None:
            lock = Lock(self, offset + _core.CONDITION_LOCK_OFFSET)
        return Condition(self, offset, lock)

    def queue(
        self,
        name: str,
        size: int | str | None = None,
        *,
        serializer: Any = "msgpack",
        single_producer: bool = False,
        single_consumer: bool = False,
    ) -> Queue:
        """The message queue called ``name`` (see :class:`herdcache.Queue`).

        :param size: bytes of its ring, when it is created here; an
            existing queue keeps its size, and ``None`` means it must exist.
        :param serializer: as for :class:`herdcache.Queue`.
        :param single_producer: at creation, one producing thread, no lock.
        :param single_consumer: at creation, one consuming thread, no lock.
        :raises StructMismatch: the name is taken by another kind of
            structure, or (``size=None``) no such queue exists.
        :raises SegmentFull: no room in the segment for ``size``.
        """
        from .queue import Queue, queue_flags

        return Queue._in_segment(self, name, size, serializer, queue_flags(single_producer, single_consumer))

    def names(self) -> list[str]:
        """The names of every structure in the segment."""
        return [info.name for info in self.structs()]

    def structs(self) -> list[StructInfo]:
        """Every named structure, with its kind, offset and size."""
        return [StructInfo(*entry) for entry in super().structs()]

    # -- the segment itself ----------------------------------------------------

    def info(self) -> dict[str, Any]:
        """Identity and usage: name, path, size, used and free bytes, creator
        pid and uid, creation time, live attached processes, own slot."""
        info = super().info()
        info["name"] = self.name
        info["structs"] = len(super().structs())
        return info

    def unlink(self) -> None:
        """Remove the segment's name; processes that have it mapped keep it."""
        if self.name is None:
            return
        remove(self.name, dir=self.dir)

    def __enter__(self) -> Segment:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return f"<herdcache.Segment {self.name!r} closed>"
        return f"<herdcache.Segment {self.name or '(anonymous)'!r} size={self.size}>"


def remove(name: str, *, dir: str | None = None) -> None:
    """Remove the named segment's file (``unlink``).

    Processes that have it mapped keep working with it; new ones cannot
    attach it any more.

    :raises SegmentNotFound: if there is no such segment.
    """
    _core.unlink(_name(name), dir=_dir(dir))


def list_segments(dir: str | None = None) -> list[str]:
    """The names of the herdcache segments in ``dir`` (default: see :func:`default_dir`)."""
    prefix = _core.FILE_PREFIX
    try:
        entries = os.listdir(_dir(dir))
    except FileNotFoundError:
        return []
    return sorted(entry[len(prefix) :] for entry in entries if entry.startswith(prefix))


def is_orphan(name: str, *, dir: str | None = None) -> bool:
    """True if no live process is attached to the named segment.

    The kernel answers: every attached process holds a record lock on the
    file that is released when it dies, so a killed process counts as gone.
    """
    return _core.is_orphan(_name(name), dir=_dir(dir))


def gc(dir: str | None = None, *, prefix: str = "") -> list[str]:
    """Remove every segment in ``dir`` whose name starts with ``prefix``
    and that no live process is attached to.

    Return the names removed.  A segment some process still maps is never
    removed, however its creator ended, and a process attaching one while
    gc decides either keeps it or finds it gone and makes a new one: never
    two files under one name.  But every unattached segment of the user in
    ``dir`` goes, other applications' included (a cache merely between two
    runs of its program is lost): give ``prefix`` (your application's
    naming prefix) to touch only your own.
    """
    removed = []
    for name in list_segments(dir):
        if not name.startswith(prefix):
            continue
        try:
            if _core.remove_if_orphan(_name(name), dir=_dir(dir)):
                removed.append(name)
        except SegmentNotFound:
            continue
    return removed
