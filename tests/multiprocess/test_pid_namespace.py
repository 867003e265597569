"""RELIABILITY.md scenario 14: an attacher in another PID namespace.

Liveness in herdcache is a kernel lock on the process's slot byte, not a
pid, so a process in a new PID namespace (`unshare -p -f`, as root) must
work: it reads and writes the cache, waits for (never steals) a lock held
by a live process outside its namespace, and when it is killed holding a
lock, a process outside takes the lock over.  The namespaced child is a
real process started through unshare(1); it reports on its stdout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from helpers import HANG

import herdcache

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) for a new PID namespace",
)

CHILD = textwrap.dedent(
    """
    import os, sys, threading
    import herdcache
    directory = sys.argv[1]
    cache = herdcache.Cache("pidns", dir=directory)
    print("pid", os.getpid(), flush=True)          # 1 or 2: a new namespace
    print("get", cache.get("outside"), flush=True)
    cache.set("inside", "written in the namespace")
    held = cache.segment.lock("held-outside")
    print("steal", held.acquire(timeout=0.3), flush=True)
    mine = cache.segment.lock("held-inside")
    assert mine.acquire(timeout=5)
    print("holding", flush=True)
    threading.Event().wait()                        # until killed
    """
)


def test_attacher_in_another_pid_namespace(tmp_path):
    directory = str(tmp_path)
    cache = herdcache.Cache("pidns", size="8MiB", dir=directory)
    cache.set("outside", "written outside")
    outside_lock = cache.segment.lock("held-outside")
    assert outside_lock.acquire(timeout=HANG)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.Popen(
        ["unshare", "-p", "-f", "--kill-child", sys.executable, "-c", CHILD, directory],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        seen = {}
        while "holding" not in seen:
            line = child.stdout.readline()
            assert line, f"the namespaced child ended early; it said {seen}"
            key, _, value = line.strip().partition(" ")
            seen[key] = value
        assert int(seen["pid"]) <= 2, "the child is not in a new PID namespace"
        assert seen["get"] == "written outside"
        assert seen["steal"] == "False"  # a live owner outside: never taken
        assert cache.get("inside") == "written in the namespace"
        inside_lock = cache.segment.lock("held-inside")
        assert not inside_lock.acquire(timeout=0.2)  # alive in its namespace
    finally:
        child.kill()  # unshare --kill-child takes the namespace down with it
        child.wait(HANG)
    assert inside_lock.acquire(timeout=HANG), "a lock of a killed namespaced process was not taken over"
    inside_lock.release()
    outside_lock.release()
    cache.check()
    cache.close()
