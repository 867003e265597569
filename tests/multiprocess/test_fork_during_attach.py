"""fork() while another thread attaches (issue 9, defect 1).

What users rely on: a process that dies is seen dead, whatever its
threads were doing.  Attaching claims a process slot (an OFD lock through
a description of the process's own); a fork() in the middle of that claim
must not hand the child a copy of that description, or the child keeps the
dead parent's slot "alive" forever (locks it held are never taken over,
its flights wait out their lease).  Before the fix, 14 to 18 of 300
attaches made with a forking thread beside them left such a copy.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from helpers import HANG

import herdcache

SEGMENTS = 200

#: The parent: one thread attaches SEGMENTS segments (each claims a slot)
#: and holds a lock in each, while another forks children that stay
#: alive, blocked on a pipe; then, once its last child runs, it says
#: "ready" and waits to be killed.
PARENT = textwrap.dedent(
    """
    import os, sys, threading, herdcache
    names, where = sys.argv[1].split(","), sys.argv[2]
    os.setsid()
    r, w = os.pipe()
    started_r, started_w = os.pipe()
    stop = threading.Event()

    def forker():
        # Each child says it runs before the next fork: by then its atfork
        # handler has closed the slot descriptors it inherited, so a child
        # not yet scheduled when the parent dies cannot pass for the parent.
        while not stop.is_set():
            if os.fork() == 0:
                os.write(started_w, b"s")
                os.read(r, 1)
                os._exit(0)
            os.read(started_r, 1)

    forking = threading.Thread(target=forker, daemon=True)
    forking.start()
    held = []
    for name in names:
        seg = herdcache.Segment.attach(name, dir=where)
        lock = seg.lock("held")
        assert lock.acquire(timeout=10)
        held.append((seg, lock))
    stop.set()
    forking.join()
    print("ready", flush=True)
    sys.stdin.read()
    """
)


def test_a_process_killed_after_attaching_while_forking_is_seen_dead(segdir: str) -> None:
    """After the parent is SIGKILLed, none of its slots looks alive and
    each of its locks is taken over at once (owner_died), although the
    children it forked while attaching still live."""
    names = [f"forkattach{i}" for i in range(SEGMENTS)]
    for name in names:
        herdcache.Segment.create(name, "256KiB", dir=segdir).close()
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, ",".join(names), segdir], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout.readline().strip() == "ready", "the parent did not attach its segments"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(HANG)
        alive = []
        for name in names:
            seg = herdcache.Segment.attach(name, dir=segdir)
            lock = seg.lock("held")
            if seg.info()["attached"] != 1 or not lock.acquire(timeout=1.0):
                alive.append(name)
            else:
                assert lock.owner_died
                lock.release()
            seg.close()
        assert alive == [], f"the dead parent still looks alive in {len(alive)} of {SEGMENTS} segments"
    finally:
        try:
            os.killpg(parent.pid, signal.SIGKILL)  # the children, blocked on their pipe
        except ProcessLookupError:
            pass
        parent.wait(HANG)
        for name in names:
            herdcache.remove(name, dir=segdir)
