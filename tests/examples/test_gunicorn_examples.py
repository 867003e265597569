"""The examples, run as users run them: under a real gunicorn with 4
workers.  What is asserted is what the examples promise: concurrent
requests that miss, spread over the workers, run the slow computation
once and all get its result; a named cache is one cache for every worker;
an anonymous cache made in a worker draws herdcache's warning.

The slow computation sleeps (it stands for a slow query); the tests
themselves wait only on observable states (the log, the HTTP port), each
with a deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HANG = 60.0
WORKERS = 4
CONCURRENT = 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=HANG) as response:
        assert response.status == 200
        return response.read().decode()


@contextmanager
def gunicorn(app_dir: str, app: str, *options: str, cache_name: str | None = "auto") -> Iterator[tuple[str, Path]]:
    """Serve ``app`` from ``examples/app_dir`` with 4 workers on a free
    port; yield (base URL, log file) once every worker has booted and the
    site answers."""
    segdir = tempfile.mkdtemp(prefix="hc-example-", dir="/dev/shm")
    log = Path(segdir) / "gunicorn.log"
    port = free_port()
    env = {
        **os.environ,
        "EXAMPLE_CACHE_NAME": f"example-{uuid.uuid4().hex[:8]}" if cache_name == "auto" else (cache_name or ""),
        "EXAMPLE_CACHE_DIR": segdir,
        "EXAMPLE_QUERY_SECONDS": "3",
        # gunicorn >= 23 puts a control socket under $HOME: keep it private.
        "HOME": segdir,
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the example names its own
    command = [sys.executable, "-m", "gunicorn", "--workers", str(WORKERS), "--bind", f"127.0.0.1:{port}"]
    # --timeout: a loaded CI machine must not get a worker killed mid-test.
    command += ["--chdir", str(EXAMPLES / app_dir), "--graceful-timeout", "5", "--timeout", "120", *options, app]
    with open(log, "wb") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + HANG
        while log.read_text().count("Booting worker") < WORKERS or not _answers(port):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"gunicorn did not start {WORKERS} workers within {HANG} s:\n{log.read_text()}")
            time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}", log
        except AssertionError as failure:
            raise AssertionError(f"{failure}\n\ngunicorn's log:\n{log.read_text()}") from failure
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(HANG)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(HANG)
        shutil.rmtree(segdir, ignore_errors=True)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def concurrently(url: str, n: int = CONCURRENT) -> list[Any]:
    """GET ``url`` from ``n`` threads released together; the JSON bodies."""
    barrier = threading.Barrier(n)
    bodies: list[Any] = [None] * n
    errors: list[str] = []

    def get(i: int) -> None:
        try:
            barrier.wait(HANG)
            bodies[i] = json.loads(fetch(url))
        except Exception as exc:  # reported below, with the others
            errors.append(f"request {i}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=get, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG * 2)
    assert not errors and all(body is not None for body in bodies), f"requests failed: {errors}"
    return bodies


def test_django_site_computes_a_slow_query_once_for_every_worker() -> None:
    """16 concurrent requests for a missing report: one slow query in all
    4 workers; every response carries its result, served by several
    workers, some of which waited for it; @cache_page serves one render."""
    with gunicorn("django_site", "wsgi:application") as (base, log):
        bodies = concurrently(f"{base}/report/7/")
        stats = json.loads(fetch(f"{base}/stats/"))
        assert stats["queries"] == 1, f"the query ran {stats['queries']} times: {stats}"
        assert {(b["report"], b["total"], b["computed_by"]) for b in bodies} == {(7, 7000, bodies[0]["computed_by"])}
        assert len({b["served_by"] for b in bodies}) > 1, "every request went to one worker: nothing was shared"
        assert stats["waits"] >= 1, f"no request waited for the computation: the test raced past it: {stats}"
        pages = {fetch(f"{base}/page/") for _ in range(8)}
        assert len(pages) == 1, f"@cache_page rendered {len(pages)} times"
        assert "PrivateCacheWarning" not in log.read_text()


def test_flask_memoize_computes_once_for_every_worker() -> None:
    """The same with Flask-Caching's memoize: one slow call for 16
    concurrent requests over 4 workers."""
    with gunicorn("flask_app", "app:app") as (base, log):
        bodies = concurrently(f"{base}/rate/EUR")
        stats = json.loads(fetch(f"{base}/stats"))
        assert stats["calls"] == 1, f"the slow call ran {stats['calls']} times: {stats}"
        assert len({b["computed_by"] for b in bodies}) == 1
        assert len({b["served_by"] for b in bodies}) > 1, "every request went to one worker"
        assert stats["waits"] >= 1, f"no request waited for the computation: {stats}"
        assert "PrivateCacheWarning" not in log.read_text()


def test_an_anonymous_cache_without_preload_is_private_and_warned_about() -> None:
    """No cache name and no --preload: each worker makes its own cache,
    and herdcache says so in the log; with --preload the master makes it
    and the workers share it, without a warning."""
    with gunicorn("flask_app", "app:app", cache_name=None) as (base, log):
        fetch(f"{base}/stats")  # a worker has imported the app
        deadline = time.monotonic() + HANG
        while "PrivateCacheWarning" not in log.read_text():
            assert time.monotonic() < deadline, f"no PrivateCacheWarning in the log:\n{log.read_text()}"
            time.sleep(0.05)
    with gunicorn("flask_app", "app:app", "--preload", cache_name=None) as (base, log):
        bodies = concurrently(f"{base}/rate/USD")
        assert json.loads(fetch(f"{base}/stats"))["calls"] == 1
        assert len({b["computed_by"] for b in bodies}) == 1
        assert "PrivateCacheWarning" not in log.read_text()
