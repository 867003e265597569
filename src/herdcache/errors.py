"""The exceptions herdcache raises.

Every exception derives from :class:`HerdcacheError` and also from the
builtin exception a caller would catch anyway, so ``except TimeoutError``
or ``except FileNotFoundError`` keep working::

    HerdcacheError
    ├── SegmentError
    │   ├── SegmentNotFound      (FileNotFoundError)  no segment by that name
    │   ├── SegmentExists        (FileExistsError)    create() found one
    │   ├── NotASegment          (ValueError)         wrong magic or byte order
    │   ├── LayoutMismatch       (ValueError)         made by another layout version
    │   ├── CorruptSegment       (ValueError)         truncated, half-created, bad offsets
    │   ├── UnsafeSegment        (PermissionError)    other owner, writable by others, a link
    │   ├── SegmentFull          (MemoryError)        no room, no free name, no free slot
    │   │   └── CacheFull                              the cache is full and may not evict
    │   ├── SegmentBusy          (BufferError)        close() with locks held or views alive
    │   ├── SegmentClosed        (ValueError)         use after close()
    │   ├── LivenessLost         (OSError)            this process's slot descriptor was closed
    │   └── StructMismatch       (ValueError)         name exists as another kind or size
    ├── InvalidName              (ValueError)
    ├── InvalidArgument          (ValueError)
    ├── LockNotOwned             (RuntimeError)       release from a non-owner, re-acquire
    ├── ReentrantCompute         (RuntimeError)       a computation asks for its own key
    ├── HerdcacheTimeout         (TimeoutError)
    │   ├── ComputeTimeout                             waited too long for another's compute
    │   └── LockNotRetaken                             Condition.wait timed out without its lock
    ├── ValueTooLarge            (ValueError)         key, value or message over its limit
    ├── SerializationError       (TypeError)          the serializer refused a value
    │   └── UnpicklableValue     (pickle.PicklingError) serializer="pickle" refused it
    ├── ComputeError                                   a computation raised in another process
    ├── SnapshotTooOld           (RuntimeError)       a snapshot lost a version it needed
    ├── QueueClosed                                    the queue was closed
    ├── PeerDied                                       the process on the other side died
    ├── RemoteUnavailable        (ConnectionError)    the tier's Redis/Valkey did not answer
    ├── NotSupported             (NotImplementedError) this kind of cache has no such operation
    └── HerdcacheOSError         (OSError)            a system call failed

Every message says what went wrong, with the numbers, and what to do.
"""

from __future__ import annotations

import pickle


class HerdcacheError(Exception):
    """Base class of every herdcache exception."""


class SegmentError(HerdcacheError):
    """A shared memory segment could not be made, attached or used."""


class SegmentNotFound(SegmentError, FileNotFoundError):
    """No segment exists by that name."""


class SegmentExists(SegmentError, FileExistsError):
    """A segment (or another file) exists by that name already."""


class NotASegment(SegmentError, ValueError):
    """The file is not a herdcache segment (or of the other byte order)."""


class LayoutMismatch(SegmentError, ValueError):
    """The segment was made by a herdcache with another memory layout."""


class CorruptSegment(SegmentError, ValueError):
    """The segment is truncated, half-created, or holds invalid offsets."""


class UnsafeSegment(SegmentError, PermissionError):
    """The segment belongs to another user, others may write it, or it is a link."""


class SegmentFull(SegmentError, MemoryError):
    """The segment has no room, no free name or no free process slot."""


class CacheFull(SegmentFull):
    """The cache is full and eviction is disabled."""


class SegmentBusy(SegmentError, BufferError):
    """close() was called while locks are held or memoryviews are alive."""


class SegmentClosed(SegmentError, ValueError):
    """The segment (or an object made from it) was used after close()."""


class LivenessLost(SegmentError, OSError):
    """This process's slot descriptor (the open file description whose lock
    tells other processes it is alive) was closed by code that closes
    descriptors it does not own (``os.closerange``, a daemonizer), and the
    slot could not be proved this process's own again.  Nothing was done;
    close the segment and attach again."""


class StructMismatch(SegmentError, ValueError):
    """A name exists in the segment as another kind or size of structure."""


class InvalidName(HerdcacheError, ValueError):
    """A segment or structure name is empty, too long or has bad characters."""


class InvalidArgument(HerdcacheError, ValueError):
    """An argument is out of its documented range."""


class LockNotOwned(HerdcacheError, RuntimeError):
    """A lock was released by a thread that does not hold it, or re-acquired."""


class ReentrantCompute(HerdcacheError, RuntimeError):
    """get_or_compute was called for a key this thread is computing."""


class HerdcacheTimeout(HerdcacheError, TimeoutError):
    """A wait passed its timeout."""


class ComputeTimeout(HerdcacheTimeout):
    """A caller waited longer than wait_timeout for another process's computation."""


class LockNotRetaken(HerdcacheTimeout):
    """``Condition.wait(timeout)`` ended, but the lock could not be taken back
    before the timeout: another holder kept it.  The lock is NOT held; a
    ``with`` block around the wait does not release it on the way out."""


class ValueTooLarge(HerdcacheError, ValueError):
    """A key, value or message is larger than its documented limit."""


class SerializationError(HerdcacheError, TypeError):
    """The serializer could not encode (or decode) a value."""


class UnpicklableValue(SerializationError, pickle.PicklingError):
    """pickle could not store a value (``serializer="pickle"``); Django's
    callers catch it as :class:`pickle.PicklingError`."""


class ComputeError(HerdcacheError):
    """A computation failed in another process; the original is described.

    ``original_type`` is the qualified name of the exception class raised
    there and ``original_traceback`` its formatted traceback.
    """

    def __init__(self, message: str, original_type: str = "", original_traceback: str = ""):
        super().__init__(message)
        self.original_type = original_type
        self.original_traceback = original_traceback


class SnapshotTooOld(HerdcacheError, RuntimeError):
    """A snapshot can no longer be read exactly: it is older than
    ``max_snapshot_age``, or a version it needed was freed (the versions
    kept for snapshots reached their share of memory, or eviction took
    one).  Take a new snapshot and read again."""


class QueueClosed(HerdcacheError):
    """The queue was closed; nothing more can be put (or, once drained, got)."""


class PeerDied(HerdcacheError):
    """The process on the other side of a queue died."""


class RemoteUnavailable(HerdcacheError, ConnectionError):
    """A TieredCache's Redis (or Valkey) server did not answer in time, or
    refused the connection; the message names the server and the cause."""


class NotSupported(HerdcacheError, NotImplementedError):
    """This kind of cache does not offer the operation (for example
    compare-and-set on a TieredCache); the message says what to use."""


class HerdcacheOSError(HerdcacheError, OSError):
    """A system call failed; errno and strerror say which and why."""


__all__ = [name for name, value in globals().items() if isinstance(value, type) and issubclass(value, HerdcacheError)]
