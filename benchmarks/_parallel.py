"""Run N workers at once, as forked processes or as threads, released together.

Every worker is started up front and does its own preparation (connecting,
attaching), then waits on a shared barrier, so what a worker measures after
the barrier does not include process creation. Workers return small
picklable results; a worker that raises makes the whole run fail with its
error, and a run that exceeds its time limit has its processes killed.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from collections.abc import Callable

FORK = multiprocessing.get_context("fork")
BARRIER_TIMEOUT_S = 120.0

Worker = Callable[[int, object], object]  # worker(index, barrier) -> result


class WorkerFailed(RuntimeError):
    pass


def run_workers(worker: Worker, count: int, mode: str, timeout_s: float) -> list:
    """Run ``worker(index, barrier)`` in ``count`` processes or threads; results in index order.

    The worker must call ``barrier.wait()`` once it is ready.
    """
    if mode == "process":
        return _run_processes(worker, count, timeout_s)
    if mode == "thread":
        return _run_threads(worker, count, timeout_s)
    raise ValueError(f"mode must be 'process' or 'thread', not {mode!r}")


def _run_processes(worker: Worker, count: int, timeout_s: float) -> list:
    barrier = FORK.Barrier(count, timeout=BARRIER_TIMEOUT_S)
    results = FORK.Queue()
    processes = [
        FORK.Process(target=_report, args=(worker, i, barrier, results.put), daemon=True)
        for i in range(count)
    ]
    for process in processes:
        process.start()
    try:
        collected = _collect(results.get, count, timeout_s)
    finally:
        for process in processes:
            if process.is_alive():
                process.join(1.0)
            if process.is_alive():
                process.kill()
                process.join()
        results.close()
    return collected


def _run_threads(worker: Worker, count: int, timeout_s: float) -> list:
    barrier = threading.Barrier(count, timeout=BARRIER_TIMEOUT_S)
    results: queue.Queue = queue.Queue()
    threads = [
        threading.Thread(target=_report, args=(worker, i, barrier, results.put), daemon=True)
        for i in range(count)
    ]
    for thread in threads:
        thread.start()
    collected = _collect(results.get, count, timeout_s)
    for thread in threads:
        thread.join()
    return collected


def _report(worker: Worker, index: int, barrier, put) -> None:
    try:
        put((index, worker(index, barrier), None))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        barrier.abort()
        put((index, None, f"{type(exc).__name__}: {exc}"))


def _collect(get, count: int, timeout_s: float) -> list:
    deadline = time.monotonic() + timeout_s
    results: list = [None] * count
    for _ in range(count):
        try:
            index, result, error = get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise WorkerFailed(f"workers did not finish within {timeout_s:.0f} s") from None
        if error is not None:
            raise WorkerFailed(f"worker {index} failed: {error}")
        results[index] = result
    return results
