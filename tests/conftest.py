"""Shared fixtures: unique segment names that are removed after each test."""

from __future__ import annotations

import uuid
from typing import Iterator

import pytest

import herdcache


@pytest.fixture
def segment_name() -> Iterator[str]:
    """A fresh segment name; whatever the test leaves under it is removed."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    try:
        herdcache.remove(name)
    except herdcache.errors.SegmentNotFound:
        pass
