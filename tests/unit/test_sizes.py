"""Sizes: bytes as integers or strings such as "64MiB"; bad ones fail early."""

from __future__ import annotations

import pytest

import herdcache
from herdcache import Segment, errors, parse_size


@pytest.mark.parametrize(
    "text, expected",
    [
        ("4096", 4096),
        ("512K", 512 * 1024),
        ("64MiB", 64 * 1024**2),
        ("64mib", 64 * 1024**2),
        ("1G", 1024**3),
        ("1GB", 1000**3),
        ("2 MB", 2 * 1000**2),
        ("1.5K", 1536),
        (" 1T ", 1024**4),
    ],
)
def test_size_strings_mean_what_they_say(text: str, expected: int) -> None:
    assert parse_size(text) == expected


def test_integer_sizes_are_bytes() -> None:
    assert parse_size(0) == 0
    assert parse_size(123_456) == 123_456


@pytest.mark.parametrize("bad", ["", "abc", "-1", "64XB", "1.5.3M", "M", "1 M B"])
def test_unreadable_size_strings_raise_value_error(bad: str) -> None:
    with pytest.raises(ValueError, match="64MiB"):
        parse_size(bad)


def test_negative_size_raises_value_error() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        parse_size(-1)


@pytest.mark.parametrize("bad", [1.5, None, True, b"1M", [4096]])
def test_sizes_of_other_types_raise_type_error(bad: object) -> None:
    with pytest.raises(TypeError, match="int or a string"):
        parse_size(bad)  # type: ignore[arg-type]


def test_segment_sizes_accept_strings_and_round_up_to_pages(segdir: str) -> None:
    with Segment.create("s", "1MiB", dir=segdir) as seg:
        assert seg.size == 1024**2
    with Segment.create("odd", 1024**2 + 1, dir=segdir) as seg:
        assert seg.size == 1024**2 + 4096
    with Segment.anonymous("2M") as seg:
        assert seg.size == 2 * 1024**2


def test_bad_sizes_are_refused_by_every_constructor(segdir: str) -> None:
    with pytest.raises(ValueError):
        Segment.create("s", "lots", dir=segdir)
    with pytest.raises(TypeError):
        Segment.open("s", 1.0, dir=segdir)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Segment.anonymous("-5")
    with Segment.create("s", "1MiB", dir=segdir) as seg:
        with pytest.raises(ValueError):
            seg.struct("x", "many")


def test_segment_smaller_than_its_header_is_an_invalid_argument(segdir: str) -> None:
    """The message gives the minimum, so the user knows what to ask for."""
    with pytest.raises(errors.InvalidArgument, match=str(herdcache._core.MIN_SEGMENT_SIZE)):
        Segment.create("tiny", 100, dir=segdir)
    with pytest.raises(errors.InvalidArgument):
        Segment.anonymous(100)
    assert herdcache.list_segments(segdir) == []
