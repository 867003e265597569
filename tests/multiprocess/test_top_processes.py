"""``top`` and ``stats`` show one line per attached process: a process
that is killed leaves the list, and its counts move to the "exited" line
(the kernel, not a pid, says it is gone)."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from collections.abc import Iterator

import cache_workers
import pytest
from helpers import kill, receive, start_with_pipe

import herdcache


def cli(segdir: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "herdcache", "--dir", segdir, *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def rows(frame: str) -> dict[str, list[str]]:
    """top's per-process table: first column (pid or "exited") -> the rest."""
    table = frame.split("\n\n", 1)[1].splitlines()[1:]
    return {line.split()[0]: line.split()[1:] for line in table}


@pytest.fixture
def cache(segdir: str) -> Iterator[herdcache.Cache]:
    with herdcache.Cache("watched", "4MiB", dir=segdir) as opened:
        opened.set("k", 1)
        yield opened


def test_a_killed_process_leaves_the_list_and_its_counts_stay(cache: herdcache.Cache, segdir: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    child, conn = start_with_pipe(ctx, cache_workers.read_then_block, cache, 7)
    assert receive(conn) == "counted"
    frame = cli(segdir, "top", "watched", "--once", "--interval", "0")
    assert rows(frame)[str(child.pid)][0] == "7"  # HITS
    assert rows(frame)["exited"][0] == "0"
    kill(child)
    frame = cli(segdir, "top", "watched", "--once", "--interval", "0")
    assert str(child.pid) not in rows(frame), frame
    assert rows(frame)["exited"][0] == "7"
    report = json.loads(cli(segdir, "stats", "watched", "--format", "json"))
    assert [p["alive"] for p in report["processes"] if p["pid"] == child.pid] == [False]
    assert report["counters"]["hits"] == 7
