"""huge_pages="off"|"try"|"on" at segment creation (README, "Huge pages").

What this machine offers decides what "on" must do, so the tests read it
the way the kernel documents it: reserved pages (HugePages_Free in
/proc/meminfo) serve an anonymous segment through MFD_HUGETLB; shmem's
transparent huge pages serve it when
/sys/kernel/mm/transparent_hugepage/shmem_enabled allows them.  Either
way, "try" never fails and says what it got, "on" either gets huge pages
or raises SegmentFull naming the setting to change, and a cache on such
a segment behaves as any other.  A named segment on a tmpfs mounted with
huge= is tested when HERDCACHE_HUGE_DIR names one.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from herdcache import Cache, Segment, errors

SIZE = "8MiB"
GOT = {"hugetlb", "thp", "none"}


def meminfo(field: str) -> int:
    """A number of /proc/meminfo (0 if absent)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == field:
            return int(value.split()[0])
    return 0


def shmem_thp_allowed() -> bool:
    """Does the kernel give memfds transparent huge pages when advised?"""
    path = Path("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
    if not path.exists():
        return False
    chosen = path.read_text().split("[")[1].split("]")[0]
    return chosen in {"always", "within_size", "advise", "force"}


def anonymous_huge_pages_exist() -> bool:
    """Could an 8 MiB anonymous segment get huge pages of either kind?"""
    page_kib = meminfo("Hugepagesize") or 2048
    return meminfo("HugePages_Free") * page_kib >= 8 << 10 or shmem_thp_allowed()


def test_off_is_the_default_and_reports_off() -> None:
    """Without huge_pages= a segment is made of ordinary pages and says so."""
    with Segment.anonymous(SIZE) as seg:
        assert seg.info()["huge_pages"] == "off"


def test_try_never_fails_and_says_what_it_got() -> None:
    """huge_pages="try" makes the segment whatever the system offers, and
    info() says which: reserved pages, transparent ones, or none."""
    with Segment.anonymous(SIZE, huge_pages="try") as seg:
        got = seg.info()["huge_pages"]
        assert got in GOT
        if not anonymous_huge_pages_exist():
            assert got == "none"


def test_on_gets_huge_pages_or_says_how_to_have_them() -> None:
    """huge_pages="on" either gets huge pages or raises SegmentFull (a
    MemoryError) naming both ways to have them."""
    if anonymous_huge_pages_exist():
        with Segment.anonymous(SIZE, huge_pages="on") as seg:
            assert seg.info()["huge_pages"] in {"hugetlb", "thp"}
        return
    with pytest.raises(errors.SegmentFull) as info:
        Segment.anonymous(SIZE, huge_pages="on")
    assert isinstance(info.value, MemoryError)
    message = str(info.value)
    assert "HugePages_Free" in message and "vm.nr_hugepages" in message
    assert "huge=within_size" in message and "huge_pages='try'" in message


def test_a_named_segment_that_cannot_have_them_is_not_left_behind(segment_name: str, tmp_path: Path) -> None:
    """A named create refused for huge_pages="on" leaves no file (an
    ordinary directory is no huge= tmpfs and no hugetlbfs)."""
    directory = str(tmp_path)
    try:
        seg = Segment.create(segment_name, SIZE, dir=directory, huge_pages="on")
    except errors.SegmentFull:
        assert os.listdir(directory) == []
    else:  # a system that gives every file THP (shmem_enabled=force)
        with seg:
            assert seg.info()["huge_pages"] in {"hugetlb", "thp"}
            seg.unlink()


def test_a_cache_on_a_try_segment_works_and_keeps_its_option(segment_name: str) -> None:
    """A cache made with huge_pages="try" stores, reads and evicts as any
    other, and another process's handle (pickled) opens it the same way."""
    with Cache(segment_name, SIZE, huge_pages="try", serializer="raw") as cache:
        assert cache.segment.info()["huge_pages"] in GOT
        for i in range(20_000):
            cache[f"k{i}"] = b"v" * 500
        assert cache["k19999"] == b"v" * 500
        assert cache.stats()["evictions"] > 0
        cache.check()
        with pickle.loads(pickle.dumps(cache)) as again:
            assert again["k19999"] == b"v" * 500
            assert again.segment.info()["huge_pages"] in GOT


@pytest.mark.skipif(not os.environ.get("HERDCACHE_HUGE_DIR"), reason="HERDCACHE_HUGE_DIR names no huge= tmpfs")
def test_a_named_segment_on_a_huge_tmpfs_gets_transparent_huge_pages(segment_name: str) -> None:
    """On a tmpfs mounted with huge=always or within_size, "on" gets THP."""
    directory = os.environ["HERDCACHE_HUGE_DIR"]
    with Cache(segment_name, SIZE, dir=directory, huge_pages="on") as cache:
        assert cache.segment.info()["huge_pages"] == "thp"
        cache["k"] = 1
        assert cache["k"] == 1
        cache.segment.unlink()


@pytest.mark.parametrize("bad", ["yes", "ON", "", None, True])
def test_an_unknown_mode_is_invalid(bad: object) -> None:
    """Anything but "off", "try" and "on" is InvalidArgument."""
    with pytest.raises(errors.InvalidArgument, match="huge_pages must be"):
        Segment.anonymous(SIZE, huge_pages=bad)  # type: ignore[arg-type]
