"""One description of an operation that talks to Redis, run blocking or on
asyncio.

The tier's operations (read the value or take the lock, publish, write,
the fill fence, ...) are written once, as generators that *yield* each
request they need done and get its result back (or its exception, thrown
in where they yielded): what a request is, and whether it blocks the
thread or is awaited, is the driver's business.  :func:`run` does each
request in the calling thread; :func:`arun` awaits it.  So the sync
methods (``get``, ``set``, ``get_or_compute``) and the async ones
(``aget``, ``aset``, ``aget_or_compute``, on ``redis.asyncio``) share every
decision, timeout, breaker step and fence, and differ only in how a
request is carried out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

_R = TypeVar("_R")

#: An operation: yields requests, receives their results, returns its own.
Steps = Generator[Any, Any, _R]


def _advance(steps: Steps[Any], result: Any, error: BaseException | None) -> tuple[bool, Any]:
    """Resume ``steps`` with a result (or throw the error in where it
    yielded): (False, its next request), or (True, what it returned)."""
    try:
        return False, (steps.send(result) if error is None else steps.throw(error))
    except StopIteration as stop:
        return True, stop.value


def run(steps: Steps[_R], execute: Callable[[Any], Any]) -> _R:
    """Drive ``steps`` to its end, doing each request with ``execute``."""
    result: Any = None
    error: BaseException | None = None
    while True:
        done, got = _advance(steps, result, error)
        if done:
            return got  # type: ignore[no-any-return]
        try:
            result, error = execute(got), None
        except BaseException as exc:  # thrown in where the request was made
            result, error = None, exc


async def arun(steps: Steps[_R], execute: Callable[[Any], Awaitable[Any]]) -> _R:
    """:func:`run`, awaiting each request (``execute`` is a coroutine function)."""
    result: Any = None
    error: BaseException | None = None
    while True:
        done, got = _advance(steps, result, error)
        if done:
            return got  # type: ignore[no-any-return]
        try:
            result, error = await execute(got), None
        except BaseException as exc:
            result, error = None, exc
