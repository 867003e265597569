"""Prometheus metrics of herdcache caches, for ``prometheus_client``.

::

    from prometheus_client import REGISTRY
    from herdcache.metrics import CacheCollector

    REGISTRY.register(CacheCollector(cache))               # a Cache this process has open
    REGISTRY.register(CacheCollector("myapp", "sessions"))  # named caches, read at each scrape

Every scrape reads the caches' statistics (no lock, nothing written) and
exposes, labelled ``cache="<name>"``:

- counters, ``herdcache_<name>_total``: hits, misses, sets, deletes,
  evictions, expirations, computes, waits, coalesced (waiters served a
  computed value), takeovers, stale_served, early_refreshes,
  compute_errors, read_retries, recoveries;
- gauges: ``herdcache_entries``, ``herdcache_used_bytes``,
  ``herdcache_free_bytes``, ``herdcache_capacity_bytes``,
  ``herdcache_payload_bytes``, ``herdcache_attached_processes``, and
  ``herdcache_queue_depth{cache=..., queue=...}`` for every queue in the
  cache's segment.

The hit ratio is ``rate(herdcache_hits_total[5m]) / (rate(herdcache_hits_total[5m])
+ rate(herdcache_misses_total[5m]))``.  The figures are the whole host's
(every process's counts, summed in shared memory), so export them from one
process per host, not from every worker.

This module imports only where ``prometheus_client`` is installed
(``pip install 'herdcache[metrics]'``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

try:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "herdcache.metrics needs the prometheus_client package: "
        "pip install 'herdcache[metrics]' (or pip install prometheus_client)"
    ) from exc

from . import report
from .report import COUNTERS, Report

if TYPE_CHECKING:
    from .cache import Cache

__all__ = ["CacheCollector", "exposition", "families"]

#: Gauge name and help text for each usage figure of a report.
_GAUGES = {
    "entries": ("herdcache_entries", "Unexpired entries the cache holds."),
    "bytes_used": ("herdcache_used_bytes", "Bytes of the cache's value memory in use."),
    "bytes_free": ("herdcache_free_bytes", "Bytes of the cache's value memory free."),
    "bytes_capacity": ("herdcache_capacity_bytes", "Bytes of value memory the cache has in all."),
    "payload_bytes": ("herdcache_payload_bytes", "Bytes of keys and values stored (without overhead)."),
}

_COUNTER_HELP = {
    "hits": "Reads that found a fresh value.",
    "misses": "Reads that found nothing (absent or expired).",
    "sets": "Values stored.",
    "deletes": "Keys deleted.",
    "evictions": "Entries evicted to make room.",
    "expirations": "Expired entries removed.",
    "computes": "Computations started by get_or_compute or memoize.",
    "waits": "Callers that waited for another caller's computation.",
    "coalesced": "Waiting callers served the value another caller computed.",
    "takeovers": "Computations taken over from a dead or overdue owner.",
    "stale_served": "Stale values served while one caller recomputed.",
    "early_refreshes": "Computations started early (probabilistic early refresh).",
    "compute_errors": "Computations that raised.",
    "read_retries": "Lock-free reads retried because a writer moved.",
    "recoveries": "Stripes rebuilt after a writer died holding their lock.",
}


def families(reports: Iterable[Report]) -> list[Metric]:
    """The metric families of ``reports``, one sample per cache in each."""
    counters: dict[str, CounterMetricFamily] = {name: CounterMetricFamily(f"herdcache_{name}", _COUNTER_HELP[name], labels=["cache"]) for name in COUNTERS}
    gauges: dict[str, GaugeMetricFamily] = {key: GaugeMetricFamily(name, text, labels=["cache"]) for key, (name, text) in _GAUGES.items()}
    attached = GaugeMetricFamily(
        "herdcache_attached_processes", "Processes attached to the cache's segment.", labels=["cache"]
    )
    depth = GaugeMetricFamily(
        "herdcache_queue_depth", "Messages waiting in a queue of the cache's segment.", labels=["cache", "queue"]
    )
    for rep in reports:
        for name, family in counters.items():
            family.add_metric([rep.name], rep.counters[name])
        for key, gauge in gauges.items():
            gauge.add_metric([rep.name], rep.usage[key])
        attached.add_metric([rep.name], rep.attached)
        for queue, messages in rep.queues.items():
            depth.add_metric([rep.name, queue], messages)
    return [*counters.values(), *gauges.values(), attached, depth]


class CacheCollector(Collector):
    """A ``prometheus_client`` collector of herdcache caches.

    :param caches: :class:`~herdcache.Cache` objects this process has open
        (an anonymous one is labelled ``cache="anonymous"``), or names of
        caches to attach read-only at each scrape.
    :param dir: the directory of named segments, for names.
    """

    def __init__(self, *caches: Cache | str, dir: str | None = None):
        """Collect ``caches`` at each scrape; see the class docstring."""
        self.caches = caches
        self.dir = dir

    def reports(self) -> list[Report]:
        """A fresh report of each cache."""
        return [report.read(c, dir=self.dir) if isinstance(c, str) else report.of(c) for c in self.caches]

    def collect(self) -> Iterator[Metric]:
        """The metric families, read now (prometheus_client calls this)."""
        yield from families(self.reports())

    def describe(self) -> Iterator[Metric]:
        """The families without samples: registering reads no cache."""
        yield from families([])


class _Reports(Collector):
    """Collects reports already read."""

    def __init__(self, reports: list[Report]):
        self._reports = reports

    def collect(self) -> Iterator[Metric]:
        yield from families(self._reports)


def exposition(reports: Iterable[Report]) -> str:
    """``reports`` in the Prometheus text exposition format (for
    ``python -m herdcache stats NAME --format prometheus``, or a
    node_exporter textfile)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Reports(list(reports)))
    return generate_latest(registry).decode()
