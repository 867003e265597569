"""Bad segment and structure names are InvalidName, before any system call."""

from __future__ import annotations

import pytest

import herdcache
from herdcache import Segment, errors

BAD_SEGMENT_NAMES = {
    "slash": "/",
    "path": "a/b",
    "dotdot": "..",
    "dot": ".",
    "nul": "a\0b",
    "empty": "",
    "too-long": "x" * 201,
    "space": "a b",
    "non-ascii": "caf\u00e9",
}

#: A directory that does not exist: reaching the file system would give
#: SegmentNotFound or an OSError, so InvalidName proves nothing got that far.
NOWHERE = "/nonexistent/herdcache-test"


@pytest.mark.parametrize("name", BAD_SEGMENT_NAMES.values(), ids=BAD_SEGMENT_NAMES.keys())
@pytest.mark.parametrize(
    "call",
    [
        lambda name: Segment.create(name, "1MiB", dir=NOWHERE),
        lambda name: Segment.attach(name, dir=NOWHERE),
        lambda name: Segment.open(name, "1MiB", dir=NOWHERE),
        lambda name: herdcache.remove(name, dir=NOWHERE),
        lambda name: herdcache.is_orphan(name, dir=NOWHERE),
    ],
    ids=["create", "attach", "open", "remove", "is_orphan"],
)
def test_bad_segment_names_are_refused_before_touching_the_file_system(call, name: str) -> None:
    with pytest.raises(errors.InvalidName, match="name") as info:
        call(name)
    assert isinstance(info.value, ValueError)


def test_longest_valid_name_works(segdir: str) -> None:
    name = "n" * herdcache._core.SEGMENT_NAME_MAX
    with Segment.create(name, "1MiB", dir=segdir) as seg:
        assert herdcache.list_segments(segdir) == [name]
        with Segment.attach(name, dir=segdir) as again:
            assert again.path == seg.path


def test_every_documented_character_is_allowed(segdir: str) -> None:
    name = "aZ09._-:@+"
    with Segment.create(name, "1MiB", dir=segdir):
        assert herdcache.list_segments(segdir) == [name]


@pytest.mark.parametrize("name", ["", "x" * 64, "a\0b"], ids=["empty", "too-long", "nul"])
def test_bad_structure_names_are_invalid_name(named: Segment, name: str) -> None:
    with pytest.raises(errors.InvalidName, match="1 to 63 bytes"):
        named.struct(name, 8)
    with pytest.raises(errors.InvalidName):
        named.counter(name)
    assert named.names() == []


def test_structure_names_are_utf8_up_to_63_bytes(named: Segment) -> None:
    longest = "\u00e9" * 31 + "x"  # 63 bytes of UTF-8
    named.counter(longest).add(1)
    assert named.names() == [longest]
    with pytest.raises(errors.InvalidName):
        named.counter("\u00e9" * 32)  # 64 bytes
