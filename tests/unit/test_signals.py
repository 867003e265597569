"""A signal interrupts a blocked wait even when another thread receives it.

The kernel hands a process-directed signal to any thread.  If it is not
the thread asleep in the futex, that sleep is not interrupted, and the
Python handler, which runs in the main thread, waits for it: forever
without a timeout.  Waits therefore sleep in slices and run the handlers
between them.  Each case runs in a child process, so that a hang is a
failure with a message (pytest-timeout's own SIGALRM could be lost the
same way).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from typing import Callable

import pytest
from helpers import HANG, wait_until_asleep

from herdcache import Queue, Segment


class Interrupted(Exception):
    """What the test's signal handler raises."""


def blocked_get() -> Callable[[], object]:
    q = Queue(size="64KiB")
    return q.get


def blocked_acquire() -> Callable[[], object]:
    seg = Segment.anonymous("1MiB")
    lock = seg.lock("l")
    holder = threading.Thread(target=lock.acquire)
    holder.start()
    holder.join()  # the holder thread exits, the lock stays taken
    return lock.acquire


WAITS = {"queue.get": blocked_get, "lock.acquire": blocked_acquire}


def interrupted_by_another_thread(wait: str) -> None:
    """Child: block in the wait; another thread, once this one sleeps,
    sends SIGUSR1 to itself.  Exits 0 if the wait raised the handler's
    exception."""

    def handler(signum: int, frame: object) -> None:
        raise Interrupted

    signal.signal(signal.SIGUSR1, handler)
    block = WAITS[wait]()
    main = threading.get_native_id()

    def signal_self() -> None:
        wait_until_asleep(os.getpid(), main)
        signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)

    threading.Thread(target=signal_self, daemon=True).start()
    try:
        block()
    except Interrupted:
        os._exit(0)
    os._exit(3)  # the wait returned without the handler's exception


@pytest.mark.parametrize("wait", sorted(WAITS))
def test_a_signal_received_by_another_thread_interrupts_a_wait(wait: str) -> None:
    proc = multiprocessing.get_context("spawn").Process(target=interrupted_by_another_thread, args=(wait,))
    proc.start()
    proc.join(HANG)
    if proc.is_alive():
        proc.kill()
        proc.join()
        pytest.fail(f"{wait}: still blocked {HANG} s after the signal (the handler never ran)")
    assert proc.exitcode == 0, f"{wait}: the child exited with {proc.exitcode}"
