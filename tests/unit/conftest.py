"""Fixtures of the one-process tests."""

from __future__ import annotations

import pytest

from herdcache import Segment


@pytest.fixture
def seg() -> Segment:
    """A fresh 1 MiB anonymous segment."""
    return Segment.anonymous("1MiB")
