"""The host's one tracking connection: who holds it, what it does with
what Redis says, and how the host's L1 is flushed when it may have missed
something.

Election.  Every process that opens a TieredCache runs one daemon thread,
a *candidate*, blocked on the lock ``tier.tracker`` of the L1 segment (a
herdcache lock: the kernel tells the next waiter when its holder's process
died, within about 10 ms).  The candidate that holds it is the host's
*tracker*.  A forked child inherits no lock and no thread: it starts a
candidate of its own.  A process that exits normally stops its tracker
at once (atexit), so the role passes without waiting for anything.

Why a thread and not a helper process: a thread dies with its process, so
the lock's owner is exactly "the process that reads invalidations", and
the kernel's release of a dead process's lock is the failure detector.  A
helper process would be a second process to supervise, to reap, and to
keep from outliving the application, for no gain: reading the socket costs
the tracker's process a few microseconds per invalidation.

Tracking.  The tracker opens a RESP3 connection and sends ``CLIENT
TRACKING ON BCAST PREFIX <prefix>``: Redis then pushes the name of every
key under the prefix that anyone changes, expires or evicts.  BCAST rather
than the default mode because in the default mode Redis invalidates only
keys the tracking client itself read, so every worker connection would
need ``REDIRECT`` to the tracker (and redoing on every reconnect of either),
and Redis would remember every key read per connection (the tracking
table).  BCAST costs the server no per-key memory, only a prefix table
entry per tracker; it sends each host every change under the prefix, read
by it or not, so its cost is writes x hosts messages.

On each message the tracker, holding the wake condition's lock, bumps
one of :data:`WAKE_BUCKETS` wake counters per key, deletes the changed
keys from the L1, and then wakes the host's processes that wait for a
value or a lock of another host.

Own writes.  A process that writes a key to Redis and then puts the value
in its L1 marks the write as its own, in a small L1 item beside the key;
the tracker, on the change Redis then reports, uses the mark up instead
of dropping the value.  Without it a host would drop every value it
writes a moment after writing it, and read it back from Redis.  The
writer marks *before* its Redis write, as pending: the mark then exists
before any report of the change can arrive, and it spares only an L1
item stored after it (csns grow), i.e. the writer's own, not the copy it
replaces (a writer killed after its Redis write leaves a pending mark
that keeps nothing).  After its L1 store the writer narrows the mark to
its item's csn, only if the mark is still there (SET_REPLACE): the
tracker may have used it up already.  Each reported change of the key
uses up its mark, whatever becomes of the copy (in flight, absent, kept
or dropped), so a mark answers for exactly one change: the writer's, or
another host's that Redis reported first, after which the writer's copy
is the newer one anyway (and the fill fence, below, checks it with Redis
if its wake counter moved).  A mark whose item was replaced since (another
write, a fill) no longer matches, and the tracker drops as usual; a mark
outlives no flush (an expired mark spares nothing).  A write that fails
or does not happen (NX/XX) removes its pending mark.  The fill fence does
not touch marks: the key's wake counter also moves for changes a mark
does not answer for (the lock a computing flight took in Redis).

The fill fence.  A process that fills the L1 from Redis (or computed the
value) read the key's wake counter before its Redis call and reads it
again after its L1 publish; if it moved, an invalidation may be older or
newer than what it read, and it asks Redis whether the record still has
the header (version) it read: if not, it deletes its copy.  Since the
tracker bumps before it deletes, either the filler sees the bump or the
tracker's delete comes after the publish.  The tracker leaves a key whose
L1 flight is under way alone: deleting it would end the flight, and the
host's waiting processes would each go to Redis themselves (the
invalidation of the very value they wait for would do that on every host).
The other way round is a limit: a fill that reads a value before the
tracker has handled the invalidation of the write that made it (the
tracker's process is busy, or waits for a CPU) publishes a copy that
this late invalidation then deletes, since a message names the key, not
the version.  It costs the host one more read of the key, never a stale
value.

Epoch.  After TRACKING is on, and whenever the connection is lost (an
error, no answer to a PING within the timeout and then the grace, see
Suspension, or a message the tracker failed to handle: redis-py only logs
what a push handler raises), the tracker bumps the epoch counter and expires every copy
in the L1, as Redis's documentation advises (it says flush):
invalidations may have been missed.  Expired
rather than deleted, each copy keeps its stale window, so that a caller
that opted in (``stale_if_error``, ``stale_ttl``) can still fall back to
it while Redis fails; it is never served as fresh again.  A fill in flight
across the flush finds its wake counter moved and keeps its copy only if
tracking is live again and Redis still holds what it read (the fill
fence).  ``clear()`` and a FLUSHALL delete instead.
``tier.live`` holds the epoch while tracking is on and 0 otherwise;
processes store values read from Redis in the L1 only while it is nonzero.

Suspension.  After ``HEARTBEAT`` of silence the tracker PINGs.  A reply
that is late loses nothing: Redis sends a connection's pushes in order
(and disconnects a client whose output it cannot buffer), so a reply on
the same connection comes after every invalidation sent before it.  A
late reply is what a starved host sees (the tracker thread, or the
server, waiting for a CPU), and flushing then made every process of the
host read everything again from Redis, just when the host was overloaded.
Only the staleness bound needs the PING's timeout: past it the host cannot
tell that it hears of changes.  So at the timeout the tracker *suspends*
the L1 (``tier.suspended`` = 1, at the moment it used to flush), and goes
on reading the same connection for a grace (:func:`grace`).  While
suspended, no process of the host serves an L1 copy as fresh: get,
get_many, ``in`` and every flight's first look (get_or_compute, memoize,
the async ones) take it as absent, and the flight's begin starts a round
over a fresh copy as an early refresh does: the host still reads a key
from Redis once (the round's waiters take what it publishes, a copy newer
than the round they waited for, and nothing older), and stale_if_error and
stale_ttl fall back on the copy as after a flush.  Stores go on as usual
(fills, own writes, their marks and fences: the tracker still reads every
push, in order): a copy stored meanwhile is served once the suspension
ends, like the older ones.  The reply within the grace resumes the L1
(0): every push sent before it is handled, so the copies are as current
as tracking makes them, with no flush, no epoch bump and no reconnect.
(In BCAST mode Redis sends a write's invalidation when its event loop
goes back to sleep, so a write run in the same loop turn as the PING may
be reported just after the reply: its copy is served until the tracker
reads that push, the next message on the socket, as for any write.)  The
reply is known by the token the PING carries (``PING_TOKEN``): a push
that redis-py reads as None (its own, or one whose handler raised) is
never taken for it.  No reply: the connection is lost, as above.  So a copy stops being served
as fresh exactly when it used to be flushed; a suspension costs reads from
Redis for its length, a flush until the L1 is filled again.

Why a counter of its own rather than a state of ``tier.live``: live 0
means no tracking at all, and everything follows from that: fills keep
their copy for UNTRACKED_TTL only, writers take no own-write marks, the
fill fence drops what it cannot check.  Right for a connection that is
gone, wasteful for one that is late: a resumed L1 would have lost what it
stored meanwhile.  A suspension changes only what readers take.

Values computed with Redis unreachable.  get_or_compute computes
locally when Redis does not answer.  The value has no record in Redis, so
no invalidation will ever name it.  While the host's tracking is lost or
suspended, it goes in the L1 for ``local_ttl`` (the host's processes
share it through the outage), and the process counts it in
``tier.local_computes`` after its publish; the tracker looks at that
count after every message and every PING's reply, and before it resumes
from a suspension, and flushes the L1 (keep_stale) when it moved.  So
such a value lives until the tracker hears from Redis again: a
suspension it outlived ends in that flush, not in a resume (a publish
that lands between the tracker's look and the resume goes at the next
look, a moment later), and one whose process died between its publish
and its count lives at most its ``local_ttl``.  While tracking is live
and not suspended (Redis answers the host, a worker's call timed out),
the value stays UNTRACKED_TTL only, and asks for no flush: a flush per
such value would empty the L1 over and over.

A suspension ends with the resume, or in the tracker's flush (keep_stale:
on a lost connection and at a session's start), which clears the flag
after it has expired every copy, so a reader that sees it cleared finds
no copy to take as fresh.  A tracker killed while suspended leaves the
flag set (the host's reads go to Redis meanwhile) and its successor's
first flush, which it makes whether it connects or not, ends it.  A reader
that loads the flag just before it is raised serves a copy as it would a
moment earlier; one that loads it just before the resume reads Redis once
more.  A forked child reads the same flag, in the segment.
"""

from __future__ import annotations

import atexit
import os
import socket
import struct
import threading
import time
import weakref
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis
from redis._parsers import _RESP3Parser

from . import _core
from ._remote import Remote
from .errors import HerdcacheError

if TYPE_CHECKING:
    from .tier import TieredCache

#: Wake counters in the segment: a key's waiters watch the one its hash picks.
WAKE_BUCKETS = 64

#: Seconds of silence on the tracking connection before the tracker PINGs.
HEARTBEAT = 0.5

#: What the tracker's PING carries, and its reply echoes: no push can be
#: taken for that reply (see Tracker._answered).
PING_TOKEN = b"herdcache-tracker"

#: How many timeouts, and at least how many seconds, a suspended tracker
#: waits for its PING's reply before it gives the connection up.  A late
#: reply on an open connection loses nothing (Redis sends the pushes in
#: order before it), so the grace only has to outlast a starved host: its
#: tracker thread, or the server itself, waiting for a CPU.  Long enough
#: for that (a second or more, where the timeout is a few hundred ms), yet
#: bounded, so that a dead server is still given up on, and reconnected
#: to, within about a second.
GRACE_TIMEOUTS = 4
GRACE_MIN = 1.0


def grace(timeout: float) -> float:
    """Seconds a suspended tracker waits for its PING's reply (see GRACE_TIMEOUTS)."""
    return max(GRACE_TIMEOUTS * timeout, GRACE_MIN)

_MAX_RECONNECT_PAUSE = 5.0
#: Seconds a candidate waits for the lock before it checks whether to stop
#: (a dead holder is noticed by the lock itself, within ~10 ms).
_LOCK_SLICE = 0.2
_CSN = struct.Struct("<Q")
_OWN_WRITE = b"\x00herdcache-own:"
#: Seconds an own-write mark waits for its invalidation (a tracker that
#: lags longer deletes the value instead: only a wasted read).
OWN_WRITE_TTL = 10.0


def own_write_key(key: bytes) -> bytes | None:
    """The L1 key of the mark of an own write of ``key`` (None if too long)."""
    mark = _OWN_WRITE + key
    return mark if len(mark) <= 250 else None


#: The csn of a pending mark: the writer is about to put its value in the L1.
PENDING = 0


def mark_own_write(cache: Any, key: bytes) -> None:
    """Before a Redis write of ``key`` whose value this process then puts
    in the L1: tell the tracker that an L1 item stored after this mark is
    newer than the change Redis will report (the writer cannot know its
    item's csn yet)."""
    mark = own_write_key(key)
    if mark is not None:
        cache._store(mark, _CSN.pack(PENDING), 0, OWN_WRITE_TTL)


def confirm_own_write(cache: Any, key: bytes, csn: int) -> None:
    """After the writer's L1 store: narrow its mark to the item ``csn``,
    only if the mark is still there (SET_REPLACE): once the tracker has
    used it up on the change, a new mark would spare the copy from the
    next change, another host's."""
    mark = own_write_key(key)
    if mark is not None:
        cache._store(mark, _CSN.pack(csn), 0, OWN_WRITE_TTL, _core.SET_REPLACE)


def _spares(mark: tuple[Any, ...] | None, item_csn: int) -> bool:
    """Whether an own-write mark (an L1 lookup) names the item ``item_csn``:
    its csn, or pending and older than the item (a copy from before the
    writer's mark is not its write: a writer killed after its Redis write
    leaves a pending mark, which must not keep the old copy)."""
    if mark is None or (mark[2] is not None and mark[2] <= 0):  # none, or expired in a flush
        return False
    csn = _CSN.unpack(mark[0])[0] if len(mark[0]) == _CSN.size else -1
    return csn == item_csn or (csn == PENDING and item_csn > mark[4])


def unmark_own_write(cache: Any, key: bytes) -> None:
    """Remove the own-write mark of ``key``, if any."""
    mark = own_write_key(key)
    if mark is not None:
        cache._l1_delete(mark)
_trackers: weakref.WeakSet[Tracker] = weakref.WeakSet()


def wake_bucket(key: bytes) -> int:
    """The wake counter of a key (the same in every process)."""
    return zlib.crc32(key) % WAKE_BUCKETS


class Wakeups:
    """The wake counters and the condition their waiters sleep on."""

    def __init__(self, cache: TieredCache):
        seg = cache.segment
        self.counters = [seg.counter(f"tier.wake.{i}") for i in range(WAKE_BUCKETS)]
        self.condition = seg.condition("tier.wake")

    def snapshot(self, key: bytes) -> int:
        """The key's counter now: wait() returns once it moves."""
        return self.counters[wake_bucket(key)].load()

    def wait(self, key: bytes, seen: int, timeout: float) -> bool:
        """Sleep until the key's counter moves from ``seen`` or ``timeout``;
        whether it moved."""
        counter = self.counters[wake_bucket(key)]
        with self.condition:
            return bool(self.condition.wait_for(lambda: counter.load() != seen, timeout=max(timeout, 0.0)))

    def wake(self, keys: list[bytes] | None, then: Callable[[], None] | None = None) -> None:
        """Bump the counters of ``keys`` (all of them for None), run
        ``then``, and wake everyone, all under the condition's lock: a
        waiter sees the bump only once ``then`` is done (a filler's fence,
        which reads the counter without the lock, sees it at once)."""
        buckets = range(WAKE_BUCKETS) if keys is None else {wake_bucket(k) for k in keys}
        with self.condition:
            for i in buckets:
                self.counters[i].add(1)
            if then is not None:
                then()
            self.condition.notify_all()


class Tracker:
    """This process's candidate for the host's tracking connection."""

    def __init__(self, cache: TieredCache, remote: Remote):
        seg = cache.segment
        self.cache = cache
        self.remote = remote
        self.wakeups = cache._wakeups
        self.lock = seg.lock("tier.tracker")
        self.epoch = seg.counter("tier.epoch")
        self.live = seg.counter("tier.live")
        self.invalidations = seg.counter("tier.invalidations")
        self.local_computes = seg.counter("tier.local_computes")
        self._computed_locally_seen = 0
        self.suspended = seg.counter("tier.suspended")
        self.suspensions = seg.counter("tier.suspensions")
        self.resumes = seg.counter("tier.resumes")
        self._stop = threading.Event()
        self._missed = False  # a message went unhandled this session (_on_invalidate)
        self._conn: Any = None
        self._thread: threading.Thread | None = None
        _trackers.add(self)

    # -- lifetime ------------------------------------------------------------------

    def start(self) -> None:
        """Start this process's candidate thread."""
        self._stop.clear()
        if self._conn is not None:
            # Forked from the tracker: close this process's copy of its
            # socket (close, not shutdown: the parent's stays up), so the
            # connection ends when the parent does.
            try:
                self._conn._sock.close()
            except (AttributeError, OSError):  # never connected, or closed
                pass
        self._conn = None
        self._thread = threading.Thread(target=self._run, name="herdcache-tier-tracker", daemon=True)
        self._thread.start()

    def stop(self, wait: bool = True) -> None:
        """Stop the candidate; if it is the tracker, it gives the role up now.

        :param wait: also wait for a candidate that is not the tracker (at
            most one lock-wait slice); close() must, before the segment goes.
        """
        self._stop.set()
        conn = self._conn
        if conn is not None:
            try:  # wakes the tracker out of its read at once
                conn._sock.shutdown(socket.SHUT_RDWR)
            except (AttributeError, OSError):  # not connected yet, or gone
                pass
        thread = self._thread
        if thread is None or not thread.is_alive() or thread is threading.current_thread():
            return
        if wait or conn is not None:
            thread.join(timeout=2.0)

    @property
    def elected(self) -> bool:
        """Whether this process holds the host's tracking connection."""
        return self._conn is not None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.remote.free_maybe_held()
            try:
                if not self.lock.acquire(timeout=_LOCK_SLICE):
                    continue
            except HerdcacheError:
                return  # the segment was closed under us: nothing to track
            try:
                self._track_until_stopped()
            finally:
                self.live.store(0)
                self.lock.release()

    # -- the tracking connection ---------------------------------------------------------

    def _track_until_stopped(self) -> None:
        pause = 0.05
        while not self._stop.is_set():
            try:
                self._session()
                pause = 0.05
            except (redis.RedisError, OSError):
                # Not the host's breaker: that one paces the workers' calls,
                # and its pause must not grow with the tracker's retries.
                pass
            finally:
                self.live.store(0)
                self.flush(keep_stale=True)  # invalidations may have been missed
                self._disconnect()
            self._stop.wait(pause)
            pause = min(pause * 2, _MAX_RECONNECT_PAUSE)

    def _session(self) -> None:
        """Connect, subscribe, flush the L1, then read until an error."""
        conn = self._connect()
        conn.send_command("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", self.remote.prefix)
        conn.read_response()
        self._computed_locally_seen = self.local_computes.load()  # before the flush: see below
        self._missed = False
        self.live.store(self.flush(keep_stale=True))
        while not self._stop.is_set():
            if conn.can_read(timeout=HEARTBEAT):
                conn.read_response(push_request=True)
            else:  # silence: prove the server still answers
                conn.send_command("PING", PING_TOKEN)
                self._await_pong(conn)
            self._check_missed()
            self._flush_if_computed_locally()
            self.remote.free_maybe_held()

    def _flush_if_computed_locally(self) -> bool:
        """Flush the L1 if a process of the host published a value it
        computed with Redis unreachable since the last look (see the
        module docstring); whether it did.  The count is read before the
        flush, and a process counts after its publish: a publish counted
        later is flushed by the next look."""
        count = self.local_computes.load()
        if count == self._computed_locally_seen:
            return False
        self._computed_locally_seen = count
        self.live.store(self.flush(keep_stale=True))
        return True

    def _await_pong(self, conn: Any) -> None:
        """Read up to the PING's reply, handling the pushes before it.  No
        reply within the timeout suspends the host's L1 (no copy is served
        as fresh) while the wait goes on, for the grace; a reply then
        resumes it, with every copy.  None by then: TimeoutError, and the
        connection is given up (flushed)."""
        timeout = self.remote.timeout
        if self._answered(conn, timeout):
            return
        self.suspended.store(1)
        self.suspensions.add(1)
        if not self._answered(conn, grace(timeout)):
            raise redis.TimeoutError(f"no reply to the tracking connection's PING within {timeout + grace(timeout):.2f} s")
        self._check_missed()  # a flush, not a resume
        # Every push Redis sent before the reply is handled: the copies are
        # as current as the tracking says, as before the PING, save those
        # computed meanwhile with Redis unreachable (then the flush ends
        # the suspension instead).
        if self._flush_if_computed_locally():
            return
        self.suspended.store(0)
        self.resumes.add(1)

    @staticmethod
    def _answered(conn: Any, timeout: float) -> bool:
        """Whether the reply to the PING sent last came within ``timeout``
        seconds; each push before it is handled on the way."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            # can_read() polls without consuming: a reply that comes late
            # stays whole in the socket for the next call.
            if left <= 0 or not conn.can_read(timeout=left):
                return False
            # Only the PING's reply echoes its token.  A push reads as a
            # list, or as None where redis-py handled it itself or our
            # handler raised: handled either way, and the wait goes on.
            if conn.read_response(push_request=True) in (PING_TOKEN, PING_TOKEN.decode()):
                return True

    def _connect(self) -> Any:
        pool = self.remote.client.connection_pool
        # Any: this uses redis-py's connection internals (.protocol and the
        # RESP3 parser's push handler on ._parser), which the declared type
        # ConnectionInterface does not have; its connect() is untyped too.
        conn: Any = pool.make_connection()
        if str(conn.protocol) != "3":
            conn = pool.connection_class(**{**pool.connection_kwargs, "protocol": 3, "parser_class": _RESP3Parser})
        conn.connect()
        conn._parser.set_invalidation_push_handler(self._on_invalidate)
        self._conn = conn
        return conn

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.disconnect()
            except (redis.RedisError, OSError):  # it is going anyway
                pass

    # -- what the messages do -------------------------------------------------------------

    def _on_invalidate(self, message: list[Any]) -> list[Any]:
        """``["invalidate", keys]``; keys None after FLUSHALL/FLUSHDB."""
        try:
            return self._invalidate(message)
        except BaseException:
            # redis-py logs and drops what a push handler raises: this
            # invalidation would be lost without a word.  The session ends
            # as on a lost connection, and its flush covers it.
            self._missed = True
            raise

    def _check_missed(self) -> None:
        """End the session (its flush follows) if a message went unhandled."""
        if self._missed:
            raise redis.ConnectionError("an invalidation could not be handled; the L1 is flushed")

    def _invalidate(self, message: list[Any]) -> list[Any]:
        names = message[1] if len(message) > 1 else None
        self.invalidations.add(1)
        if names is None:
            self.flush()
            return message
        parsed = [p for p in (self.remote.parse(bytes(name)) for name in names) if p is not None]
        # Bump first, then delete: a fill that publishes after the bump sees
        # its key's counter moved and checks its value against Redis; one
        # that published before it is deleted here (the fill fence).  The
        # waiters wake only after the deletes: one that read the new value
        # and published it before this delete ran would lose its copy.
        values = [key for kind, key in parsed if kind == "value"]

        def drop_values() -> None:
            for key in values:
                self._drop(key)

        self.wakeups.wake([key for _, key in parsed], drop_values)
        return message

    def _drop(self, key: bytes) -> None:
        """Delete the L1's copy of a key that changed in Redis, unless it is
        in flight or is this host's own write that the message reports
        (using up the key's own-write mark, see the module docstring)."""
        cache = self.cache
        found = cache._lookup(key)
        # Each reported change uses up the key's mark, whatever becomes of
        # the copy: the mark answers for one write, this one or (reported
        # first) another host's, after which the writer's own copy is newer.
        mark = own_write_key(key)
        marked = None if mark is None else cache._lookup(mark)
        if marked is not None:
            cache._l1_delete(mark)
        if found is None:
            # In flight (or absent): the flight's owner has the wake counter
            # to tell whether what it read is older than this change.
            return
        if not _spares(marked, found[4]):
            # This very copy: one stored since is the writer's, newer than
            # the change, or a fill whose fence sees this change's bump.
            cache._compare_and_delete(key, found[4])

    def flush(self, keep_stale: bool = False) -> int:
        """Clear the host's L1, then bump the epoch; return the new epoch.

        :param keep_stale: expire every copy instead, keeping its stale
            window (when invalidations may have been missed, not when the
            values went: clear(), FLUSHALL): a copy is then never served as
            fresh, only as stale_if_error's or stale_ttl's fallback.  Fills
            under way go on, and their fence drops them (their wake
            counter moves here, and tracking is not live).  This flush,
            the tracker's, also ends a suspension (see the module
            docstring)."""
        empty = self.cache._expire_all if keep_stale else self.cache._l1_clear
        epochs: list[int] = []

        def empty_then_count() -> None:
            empty()
            if keep_stale:
                # Every copy a suspension guards is expired now: it ends
                # here (a tracker killed while suspended leaves its
                # successor this very flush to end it).
                self.suspended.store(0)
            # The epoch moves only once the flush is done: whoever sees it
            # moved (epoch, stats(), tests) finds no copy served as fresh.
            epochs.append(self.epoch.add(1))

        # Bump every wake counter first (wake runs the flush after it): a
        # fill that publishes after the flush must see its counter moved.
        self.wakeups.wake(None, empty_then_count)
        return epochs[0]


def _stop_all() -> None:
    """At exit: every tracker of this process gives its role up now."""
    for tracker in list(_trackers):
        tracker.stop(wait=False)


def _restart_in_child() -> None:
    """A forked child has no threads: it starts its own candidates."""
    for tracker in list(_trackers):
        if tracker._thread is not None:
            tracker.start()


atexit.register(_stop_all)
os.register_at_fork(after_in_child=_restart_in_child)
