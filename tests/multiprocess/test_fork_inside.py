"""RELIABILITY.md scenario 28: fork while another thread of the parent is
inside get_or_compute (its flight open) and while the parent holds a lock.

The child must use the cache normally, must not take the parent's flight
or lock for its own (the parent is alive: it waits for them or is
refused), and once the parent's thread publishes, the child gets that
value.  The child reports through a pipe; every wait has a deadline.
"""

from __future__ import annotations

import os
import threading

import pytest
from helpers import HANG

import herdcache
from herdcache import errors

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")


def _child(cache: herdcache.Cache, lock: herdcache.Lock, write_fd: int, go_fd: int) -> None:
    """In the forked child: report each observation as one line."""
    out = []
    try:
        cache.set("child-key", "from the child")
        out.append(f"get={cache.get('child-key')}")
        out.append("other=" + cache.get_or_compute("child-flight", lambda: "computed in child"))
        try:  # the parent's flight is alive: wait, never compute it
            cache.get_or_compute("slow", lambda: "child computed it", wait_timeout=0.2)
            out.append("slow=computed")
        except errors.ComputeTimeout:
            out.append("slow=timeout")
        out.append(f"lock_acquired={lock.acquire(timeout=0.2)}")
        try:
            lock.release()
            out.append("release=allowed")
        except errors.LockNotOwned:
            out.append("release=refused")
        os.write(write_fd, ("\n".join(out) + "\n--\n").encode())
        os.read(go_fd, 1)  # the parent's thread has published
        out = ["slow_after=" + cache.get_or_compute("slow", lambda: "child computed it", wait_timeout=HANG)]
        os.write(write_fd, ("\n".join(out) + "\n").encode())
    except BaseException as exc:  # report, never raise into the forked pytest
        os.write(write_fd, f"error={exc!r}\n".encode())
    finally:
        os._exit(0)


def _read_until(fd: int, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data


def test_fork_while_computing_and_locked(tmp_path):
    cache = herdcache.Cache("fork28", size="8MiB", dir=str(tmp_path))
    lock = cache.segment.lock("held")
    inside, release = threading.Event(), threading.Event()
    result = {}

    def compute_slowly():
        inside.set()
        assert release.wait(HANG), "the test never let the computation finish"
        return "parent's value"

    worker = threading.Thread(target=lambda: result.setdefault("v", cache.get_or_compute("slow", compute_slowly)))
    worker.start()
    assert inside.wait(HANG), "the parent's thread never entered get_or_compute"
    assert lock.acquire(timeout=HANG)
    report_r, report_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        _child(cache, lock, report_w, go_r)
    os.close(report_w)
    first = _read_until(report_r, b"--\n").decode()
    release.set()
    worker.join(HANG)
    assert not worker.is_alive(), "the parent's computation never finished"
    os.write(go_w, b"g")
    rest = _read_until(report_r, b"slow_after=").decode() + os.read(report_r, 4096).decode()
    _, status = os.waitpid(pid, 0)
    lock.release()
    lines = dict(line.split("=", 1) for line in (first + rest).splitlines() if "=" in line)
    assert "error" not in lines, lines["error"]
    assert lines["get"] == "from the child"
    assert lines["other"] == "computed in child"
    assert lines["slow"] == "timeout"  # waited for the live parent, did not compute
    assert lines["lock_acquired"] == "False"  # the parent's lock is not the child's
    assert lines["release"] == "refused"
    assert lines["slow_after"] == "parent's value"
    assert result["v"] == "parent's value"
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    cache.check()
    cache.close()
