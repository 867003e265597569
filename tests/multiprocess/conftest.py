"""Fixtures of the multi-process tests: a start method, and a segment its
children can reach (inherited under fork, attached by name otherwise)."""

from __future__ import annotations

import multiprocessing
from multiprocessing.context import BaseContext
from typing import Iterator

import pytest
from helpers import CONTEXTS

from herdcache import Segment, errors

@pytest.fixture(params=CONTEXTS)
def ctx(request: pytest.FixtureRequest) -> BaseContext:
    """A multiprocessing context for each start method under test."""
    return multiprocessing.get_context(request.param)


@pytest.fixture
def shared(ctx: BaseContext, segdir: str) -> Iterator[Segment]:
    """A segment for the children of ``ctx``: anonymous under fork (children
    inherit it), named in a private directory otherwise (children attach)."""
    if ctx.get_start_method() == "fork":
        seg = Segment.anonymous("4MiB")
    else:
        seg = Segment.create("shared", "4MiB", dir=segdir)
    yield seg
    try:
        seg.close()
    except errors.SegmentBusy:
        pass  # the test left a lock held or a view alive on purpose
