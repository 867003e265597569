"""Metrics: ``herdcache.metrics`` scraped with prometheus_client's own parser,
``python -m herdcache stats --format json|prometheus`` and ``top --once``,
and the promise that inspecting a cache writes nothing to it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import herdcache
from herdcache.errors import SegmentNotFound
from herdcache.metrics import CacheCollector


def cli(segdir: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "herdcache", "--dir", segdir, *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def busy(segdir: str) -> Iterator[herdcache.Cache]:
    """A named cache with known counts: 3 hits, 3 misses (one of them
    get_or_compute's, which then computes), 3 sets (one the computed
    value), 1 delete, 1 computation, 2 entries, and a queue holding 2 messages."""
    with herdcache.Cache("app", "4MiB", dir=segdir) as cache:
        cache.set("a", 1)
        cache.set("b", 2)
        cache.get("a"), cache.get("b"), cache.get("a")
        cache.get("x"), cache.get("y")
        cache.delete("b")
        cache.get_or_compute("c", lambda: 3, ttl=60)
        queue = cache.segment.queue("jobs", "64KiB")
        queue.put_many([1, 2])
        yield cache
        del queue


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, parsed by prometheus_client."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _registry(collector: CacheCollector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


def check_exposition(text: str, cache: herdcache.Cache) -> None:
    got = samples(text)
    label = frozenset({("cache", "app")})
    stats = cache.stats()
    for counter in ("hits", "misses", "sets", "deletes", "computes", "waits", "takeovers", "stale_served"):
        assert got[(f"herdcache_{counter}_total", label)] == stats[counter], counter
    assert (got[("herdcache_hits_total", label)], got[("herdcache_misses_total", label)]) == (3, 3)
    assert got[("herdcache_entries", label)] == 2
    assert got[("herdcache_used_bytes", label)] == stats["bytes_used"] > 0
    assert got[("herdcache_free_bytes", label)] == stats["bytes_free"] > 0
    assert got[("herdcache_queue_depth", frozenset({("cache", "app"), ("queue", "jobs")}))] == 2
    assert got[("herdcache_evictions_total", label)] == 0


def test_a_scrape_parses_with_counters_gauges_and_labels(busy: herdcache.Cache) -> None:
    text = generate_latest(_registry(CacheCollector(busy))).decode()
    check_exposition(text, busy)
    types = {family.name: family.type for family in text_string_to_metric_families(text)}
    assert types["herdcache_hits"] == "counter" and types["herdcache_entries"] == "gauge"


def test_a_named_cache_is_read_at_each_scrape(busy: herdcache.Cache, segdir: str) -> None:
    registry = _registry(CacheCollector("app", dir=segdir))
    before = samples(generate_latest(registry).decode())
    busy.get("a")
    after = samples(generate_latest(registry).decode())
    key = ("herdcache_hits_total", frozenset({("cache", "app")}))
    assert (before[key], after[key]) == (3, 4)


def test_registering_reads_nothing_and_a_scrape_names_a_missing_cache(segdir: str) -> None:
    registry = _registry(CacheCollector("nothing", dir=segdir))
    with pytest.raises(SegmentNotFound, match="nothing"):
        generate_latest(registry)


def test_a_segment_without_a_cache_is_a_clear_error(segdir: str) -> None:
    herdcache.Segment.create("plain", "1MiB", dir=segdir).close()
    done = cli(segdir, "stats", "plain")
    assert done.returncode == 1 and "holds no cache" in done.stderr
    assert not any(s.name == "cache" for s in herdcache.Segment.attach("plain", dir=segdir).structs())


def test_the_module_says_how_to_install_prometheus_client() -> None:
    code = "import sys; sys.modules['prometheus_client'] = None; import herdcache.metrics"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "ImportError: herdcache.metrics needs the prometheus_client package" in done.stderr
    assert "pip install 'herdcache[metrics]'" in done.stderr


def test_stats_json(busy: herdcache.Cache, segdir: str) -> None:
    done = cli(segdir, "stats", "app", "--format", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["counters"]["hits"] == 3 and report["counters"]["misses"] == 3
    assert report["hit_ratio"] == pytest.approx(0.5)
    assert report["usage"]["entries"] == 2 and report["queues"] == {"jobs": 2}
    assert os.getpid() in [row["pid"] for row in report["processes"]]


def test_stats_prometheus(busy: herdcache.Cache, segdir: str) -> None:
    done = cli(segdir, "stats", "app", "--format", "prometheus")
    assert done.returncode == 0, done.stderr
    check_exposition(done.stdout, busy)


def test_top_once_prints_one_frame(busy: herdcache.Cache, segdir: str) -> None:
    done = cli(segdir, "top", "app", "--once", "--interval", "0.01")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("herdcache top - app") and "2 processes attached" in lines[0]
    assert "entries 2" in done.stdout and "hit ratio 50.0%" in done.stdout
    assert "sets/s" in done.stdout and "evictions/s" in done.stdout
    assert "computations 1   waits 0   takeovers 0" in done.stdout
    assert "queue jobs: 2 waiting" in done.stdout
    mine = next(line.split() for line in lines if line.split()[:1] == [str(os.getpid())])
    assert mine[1:4] == ["3", "3", "3"]  # hits, misses, sets
    assert "\x1b[" not in done.stdout  # --once does not clear the screen


def test_inspecting_writes_nothing_to_the_cache(busy: herdcache.Cache, segdir: str) -> None:
    struct = next(s for s in busy.segment.structs() if s.name == "cache")
    path = busy.segment.path
    assert path is not None

    def cache_bytes() -> bytes:
        with open(path, "rb") as f:
            f.seek(struct.offset)
            return f.read(struct.size)

    before = cache_bytes()
    for args in (("stats", "app"), ("stats", "app", "--format", "json"), ("top", "app", "--once", "--interval", "0")):
        done = cli(segdir, *args)
        assert done.returncode == 0, done.stderr
    assert cache_bytes() == before


def test_stats_of_a_missing_cache_exits_1(segdir: str) -> None:
    done = cli(segdir, "stats", "ghost", "--format", "json")
    assert (done.returncode, done.stdout) == (1, "")
    assert "ghost" in done.stderr and "Traceback" not in done.stderr


def test_a_report_of_an_anonymous_cache_is_labelled_anonymous() -> None:
    cache = herdcache.Cache(size="4MiB")
    cache.set("k", "v")
    text = generate_latest(_registry(CacheCollector(cache))).decode()
    assert samples(text)[("herdcache_sets_total", frozenset({("cache", "anonymous")}))] == 1


