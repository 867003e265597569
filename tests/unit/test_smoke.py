"""The foundation's public surface in one process."""

from __future__ import annotations

import herdcache
from herdcache import errors


def test_named_segment_round_trip(segment_name: str) -> None:
    with herdcache.Segment.create(segment_name, "1MiB") as seg:
        view, found = seg.struct("stats", 128)
        view[:5] = b"hello"
        assert not found
        with herdcache.Segment.attach(segment_name) as again:
            other, found_again = again.struct("stats", 128)
            assert found_again and bytes(other[:5]) == b"hello"
            del other
        del view


def test_attach_missing_segment_names_the_fix(segment_name: str) -> None:
    try:
        herdcache.Segment.attach(segment_name)
    except errors.SegmentNotFound as exc:
        assert isinstance(exc, FileNotFoundError)
        assert "Segment.create" in str(exc)
    else:
        raise AssertionError("attach of a missing segment succeeded")
