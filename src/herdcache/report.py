"""One reading of a cache's statistics, for ``stats``, ``top`` and metrics.

::

    report = herdcache.report.read("myapp")     # a named cache, read-only
    report = herdcache.report.of(cache)         # a Cache this process has open
    report.counters["hits"], report.usage["entries"], report.hit_ratio
    report.queues                               # {queue name: messages waiting}

Inspecting never writes to the segment: :func:`read` attaches the named
segment, finds the cache structure that is already there (it never
allocates one), sums the per-process counters with plain loads and counts
queue depths from their counters.  Nothing is counted, locked, repaired or
joined, so ``python -m herdcache stats`` changes nothing it looks at.

Counters only ever grow (they are sums of per-process counters, and a
process that exits leaves its counts behind in the "exited" slot, pid 0);
usage figures (entries, bytes) go up and down.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import _core
from .cache import STRUCT_NAME
from .errors import StructMismatch
from .segment import Segment

if TYPE_CHECKING:
    from .cache import Cache

#: Counters summed over every process; they never decrease.
COUNTERS = (
    "hits",
    "misses",
    "sets",
    "deletes",
    "evictions",
    "expirations",
    "computes",
    "waits",
    "coalesced",
    "takeovers",
    "stale_served",
    "early_refreshes",
    "compute_errors",
    "read_retries",
    "recoveries",
)

#: What the cache holds now.
USAGE = ("entries", "bytes_used", "bytes_free", "bytes_capacity", "payload_bytes")


@dataclass(frozen=True)
class ProcessRow:
    """The counters of one process that used the cache; ``alive``: it is
    still attached (pid 0: the processes that have exited, together)."""

    pid: int
    alive: bool
    counters: dict[str, int]


@dataclass(frozen=True)
class Report:
    """A cache's counters, usage, processes and queue depths at one moment."""

    name: str
    counters: dict[str, int]
    usage: dict[str, int]
    processes: list[ProcessRow]
    #: processes attached to the segment now, the one reading included
    attached: int
    queues: dict[str, int] = field(default_factory=dict)
    taken: float = field(default_factory=time.monotonic)

    @property
    def hit_ratio(self) -> float | None:
        """hits / (hits + misses), or None before the first read."""
        reads = self.counters["hits"] + self.counters["misses"]
        return self.counters["hits"] / reads if reads else None

    def rates(self, earlier: Report) -> dict[str, float]:
        """Each counter's increase per second since ``earlier``."""
        elapsed = self.taken - earlier.taken
        if elapsed <= 0:
            return {name: 0.0 for name in COUNTERS}
        return {name: (self.counters[name] - earlier.counters[name]) / elapsed for name in COUNTERS}

    def by_process(self) -> tuple[list[ProcessRow], dict[str, int]]:
        """The live processes' rows, and the summed counters of every
        process gone (exited, or killed and not yet replaced)."""
        live = [row for row in self.processes if row.alive]
        gone = {name: sum(row.counters[name] for row in self.processes if not row.alive) for name in COUNTERS}
        return live, gone

    def as_dict(self) -> dict[str, Any]:
        """Everything, as JSON-ready builtins."""
        return {
            "name": self.name,
            "counters": self.counters,
            "usage": self.usage,
            "hit_ratio": self.hit_ratio,
            "attached": self.attached,
            "queues": self.queues,
            "processes": [{"pid": row.pid, "alive": row.alive, **row.counters} for row in self.processes],
        }

    def to_json(self) -> str:
        """:meth:`as_dict` as indented JSON."""
        return json.dumps(self.as_dict(), indent=2, sort_keys=True)


def _split(stats: dict[str, Any], rows: list[dict[str, Any]]) -> tuple[dict[str, int], dict[str, int], list[ProcessRow]]:
    counters = {name: int(stats[name]) for name in COUNTERS}
    usage = {name: int(stats[name]) for name in USAGE}
    processes = [
        ProcessRow(int(row["pid"]), bool(row["alive"]), {name: int(row[name]) for name in COUNTERS}) for row in rows
    ]
    return counters, usage, processes


def _queue_depths(segment: Segment) -> dict[str, int]:
    """Messages waiting in every queue of the segment, counted without
    joining either side (the core queue's detach is then a no-op)."""
    depths = {}
    for struct in segment.structs():
        if struct.kind == "queue":
            queue = _core.Queue(segment, struct.offset, struct.size, 0, None, None, "raw")
            depths[struct.name] = queue.qsize()
    return depths


def of(cache: Cache) -> Report:
    """The report of a cache this process has open (anonymous ones too)."""
    counters, usage, processes = _split(cache._stats(), cache._stats_by_process())
    segment = cache.segment
    return Report(
        name=cache.name or "anonymous",
        counters=counters,
        usage=usage,
        processes=processes,
        attached=segment.info()["attached"],
        queues=_queue_depths(segment),
    )


def _open_existing_cache(segment: Segment, name: str) -> Any:
    """The core cache already in ``segment``; never allocates one."""
    for struct in segment.structs():
        if struct.name == STRUCT_NAME and struct.kind == "cache":
            return _core.Cache(segment, struct.offset, struct.size)
    raise StructMismatch(
        f"segment {name!r} holds no cache (its structures: {', '.join(segment.names()) or 'none'}): "
        "check the name with `python -m herdcache ls`"
    )


def read(name: str, *, dir: str | None = None) -> Report:
    """The report of the named cache, read without writing to it.

    :raises SegmentNotFound: no segment by that name.
    :raises StructMismatch: the segment holds no cache.
    """
    segment = Segment.attach(name, dir=dir, allow_shared=True)
    try:
        core = _open_existing_cache(segment, name)
        counters, usage, processes = _split(core._stats(), core._stats_by_process())
        attached = segment.info()["attached"]  # this reading process included
        return Report(name, counters, usage, processes, attached, _queue_depths(segment))
    finally:
        core = None
        segment.close()
