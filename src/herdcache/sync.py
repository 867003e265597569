"""Cross-process locks and conditions that live in a segment.

Both survive the death of any process: a lock whose holder is killed is
taken over by the next waiter (within about 10 ms), which finds
``lock.owner_died`` set, and a condition keeps no per-waiter state that a
killed waiter could leave behind.  Get them from a segment::

    lock = seg.lock("refresh")
    with lock:
        ...
    ready = seg.condition("ready")
    with ready:                                   # waiter
        ready.wait_for(lambda: flag.load() == 1, timeout=5)
    with ready:                                   # notifier, in another process
        flag.store(1)
        ready.notify_all()
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

from . import _core

T = TypeVar("T")

#: Longest sleep of wait_for() between two tests of its predicate.
_RECHECK_SECONDS = 0.05


class Lock(_core.Lock):
    """A mutex shared by every process attached to the segment.

    It behaves like :class:`threading.Lock` (``acquire(blocking, timeout)``,
    ``release()``, ``locked()``, ``with lock:``), with two differences: it is
    released by the thread that acquired it (another thread's release raises
    :class:`~herdcache.errors.LockNotOwned`), and if the process holding it
    dies, the next ``acquire`` takes it and sets :attr:`owner_died` so that the
    new owner can repair what the dead one may have left half done.
    """

    def __repr__(self) -> str:
        state = "locked" if self.locked() else "unlocked"
        return f"<herdcache.Lock {state}>"


class Condition(_core.Condition):
    """A condition variable shared by every process attached to the segment.

    Like :class:`threading.Condition`: hold the lock, then ``wait()`` or
    ``wait_for(predicate)``; another process changes the state under the
    same lock and calls ``notify()`` or ``notify_all()``.  A waiter may wake
    spuriously, so test the predicate in a loop (``wait_for`` does).
    ``wait(timeout=None)``, ``notify(n=1)`` and ``notify_all()`` behave as
    threading.Condition's; notify raises
    :class:`~herdcache.errors.LockNotOwned` unless the caller holds
    :attr:`lock` (a waiter that just tested its predicate could miss the
    wake-up).

    One difference: ``wait(timeout)`` returns within ``timeout`` (plus one
    10 ms probe step) even when it must take the lock back from another
    process. If the lock's holder keeps it past that (a stopped process, a
    long critical section), ``wait`` raises
    :class:`~herdcache.errors.LockNotRetaken` (a ``TimeoutError``) and the
    lock is NOT held; the ``with`` block around it then exits without
    releasing it. With ``timeout=None`` the lock is taken back however long
    it takes, as threading's is.
    """

    lock: Lock

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Acquire the underlying lock (see :meth:`Lock.acquire`)."""
        return self.lock.acquire(blocking, timeout)

    def release(self) -> None:
        """Release the underlying lock."""
        self.lock.release()

    def __enter__(self) -> bool:
        return self.lock.__enter__()

    def __exit__(self, *exc_info: object) -> None:
        self.lock.__exit__(*exc_info)

    def wait_for(self, predicate: Callable[[], T], timeout: float | None = None) -> T:
        """Wait until ``predicate()`` is true or ``timeout`` passes; return the
        last value of ``predicate()``, as :meth:`threading.Condition.wait_for`.

        The predicate is re-tested at least every 50 ms even without a
        notify: a process killed after it changed the state but before it
        called ``notify()`` delays waiters by that much, never forever.
        Taking the lock back after each of those sleeps is bounded by
        ``timeout`` as a whole, not by the 50 ms: past it,
        :class:`~herdcache.errors.LockNotRetaken` is raised, as by
        :meth:`wait`, and the lock is not held.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        result = predicate()
        while not result:
            slice_ = _RECHECK_SECONDS
            remaining = None
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                slice_ = min(slice_, remaining)
            self._wait(slice_, remaining)
            result = predicate()
        return result

    def __repr__(self) -> str:
        return f"<herdcache.Condition lock={self.lock!r}>"
