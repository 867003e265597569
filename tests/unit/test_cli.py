"""``python -m herdcache``: exit codes and output a user or script relies on."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from herdcache import Segment


def cli(segdir: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "herdcache", "--dir", segdir, *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def in_use(segdir: str):
    """A segment this test process keeps attached, with two structures."""
    with Segment.create("busy", "1MiB", dir=segdir) as seg:
        seg.counter("hits").add(1)
        seg.struct("table", 4096)
        yield seg


def test_ls_lists_segments_and_whether_they_are_in_use(segdir: str, in_use: Segment) -> None:
    Segment.create("idle", "1MiB", dir=segdir).close()
    done = cli(segdir, "ls")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["busy\tin use", "idle\torphan"]


def test_ls_of_an_empty_directory_prints_nothing(segdir: str) -> None:
    done = cli(segdir, "ls")
    assert (done.returncode, done.stdout) == (0, "")


def test_info_shows_identity_usage_and_structures(segdir: str, in_use: Segment) -> None:
    done = cli(segdir, "info", "busy")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "segment   busy" in out and in_use.path in out
    assert f"pid {os.getpid()}" in out
    assert "2 attached" in out  # this process and the CLI itself
    assert "counter" in out and "hits" in out and "table" in out


def test_info_of_a_missing_segment_exits_1_with_a_message(segdir: str) -> None:
    done = cli(segdir, "info", "nothing")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("herdcache: ") and "nothing" in done.stderr
    assert "Traceback" not in done.stderr


def test_info_of_a_bad_name_exits_1(segdir: str) -> None:
    done = cli(segdir, "info", "..")
    assert done.returncode == 1 and "invalid name" in done.stderr


def test_rm_removes_the_segment_and_says_so(segdir: str) -> None:
    Segment.create("old", "1MiB", dir=segdir).close()
    done = cli(segdir, "rm", "old")
    assert (done.returncode, done.stdout) == (0, "removed old\n")
    assert not os.path.exists(os.path.join(segdir, "herdcache.old"))


def test_rm_of_a_missing_segment_exits_1(segdir: str) -> None:
    done = cli(segdir, "rm", "ghost")
    assert done.returncode == 1 and "ghost" in done.stderr


def test_gc_removes_only_segments_nobody_is_attached_to(segdir: str, in_use: Segment) -> None:
    Segment.create("idle", "1MiB", dir=segdir).close()
    done = cli(segdir, "gc")
    assert (done.returncode, done.stdout) == (0, "removed idle\n")
    assert sorted(os.listdir(segdir)) == ["herdcache.busy"]
    assert in_use.counter("hits").load() == 1


def test_gc_prefix_removes_only_the_named_applications_segments(segdir: str) -> None:
    """gc removes every unattached segment of the user; --prefix keeps it
    to one application's names (issue 9, defect 5)."""
    for name in ("mine-a", "mine-b", "theirs"):
        Segment.create(name, "1MiB", dir=segdir).close()
    done = cli(segdir, "gc", "--prefix", "mine-")
    assert (done.returncode, done.stdout) == (0, "removed mine-a\nremoved mine-b\n")
    assert sorted(os.listdir(segdir)) == ["herdcache.theirs"]


def test_unknown_command_is_a_usage_error(segdir: str) -> None:
    done = cli(segdir, "frobnicate")
    assert done.returncode == 2 and "usage" in done.stderr


def test_info_of_a_file_that_is_not_a_segment_exits_1(segdir: str) -> None:
    with open(os.path.join(segdir, "herdcache.junk"), "wb") as f:
        f.write(b"x" * 200_000)
    done = cli(segdir, "info", "junk")
    assert done.returncode == 1 and "not a herdcache segment" in done.stderr


def test_stats_of_a_cache_prints_its_counters(segdir: str) -> None:
    from herdcache import Cache

    with Cache("cached", "4MiB", dir=segdir) as cache:
        cache["k"] = 1
        assert cache["k"] == 1
        done = cli(segdir, "stats", "cached")
    assert done.returncode == 0, done.stderr
    assert "hits" in done.stdout and "per process" in done.stdout


def test_stats_of_a_segment_without_a_cache_exits_1_and_writes_nothing(segdir: str, in_use: Segment) -> None:
    before = in_use.structs()
    used = in_use.info()["used"]
    done = cli(segdir, "stats", "busy")
    assert done.returncode == 1
    assert done.stderr.startswith("herdcache: ") and "holds no cache" in done.stderr
    assert "Traceback" not in done.stderr
    assert in_use.structs() == before and in_use.info()["used"] == used
