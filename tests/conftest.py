"""Shared fixtures: unique segment names and private segment directories,
both cleaned up after each test."""

from __future__ import annotations

import shutil
import tempfile
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


@pytest.fixture
def segdir() -> Iterator[str]:
    """A private directory on tmpfs for named segments, removed afterwards.

    Tests that list, gc or corrupt segments use it so that they never see
    (or remove) the segments of anything else running on the machine.
    """
    path = tempfile.mkdtemp(prefix="hc-test-", dir="/dev/shm")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def named(segdir: str) -> Iterator[herdcache.Segment]:
    """A fresh 4 MiB named segment in a private directory."""
    seg = herdcache.Segment.create("seg", "4MiB", dir=segdir)
    yield seg
    try:
        seg.close()
    except herdcache.errors.SegmentBusy:
        pass  # the test left a lock held or a view alive on purpose
