"""gc() racing an attach never splits one cache in two (issue 9, defect 5).

gc decides that a segment is unattached and unlinks it while holding the
segment file's creation byte.  An attacher that opened the file before the
unlink waits for that byte and then checks that the name still leads to
its file; if gc removed it, it opens the name again.  The test plays gc's
part by hand, holding the byte (an OFD lock, as gc takes it) while it
unlinks the file and another process creates a new segment under the name.
"""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import sys
import threading

from helpers import HANG, wait_until_asleep

import herdcache

#: The creation byte of a segment file (segment.c: HC_MAX_SLOTS).
CREATION_BYTE = 1024


def ofd_lock(fd: int, kind: int) -> None:
    """Take (F_WRLCK) or drop (F_UNLCK) an OFD lock on the creation byte."""
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi", kind, os.SEEK_SET, CREATION_BYTE, 1, 0))


def test_an_attach_during_gc_ends_on_the_file_the_name_leads_to(segdir: str) -> None:
    """The attacher, held off while "gc" unlinks and a new segment takes
    the name, ends up attached to the new segment: what it writes, a
    process opening the name later reads."""
    herdcache.Segment.create("raced", "1MiB", dir=segdir).close()
    path = os.path.join(segdir, "herdcache.raced")
    gc_fd = os.open(path, os.O_RDWR)
    ofd_lock(gc_fd, fcntl.F_WRLCK)
    attached: list[herdcache.Segment] = []
    attacher = threading.Thread(target=lambda: attached.append(herdcache.Segment.attach("raced", dir=segdir)))
    attacher.start()
    wait_until_asleep(os.getpid(), attacher.native_id, sleep="setlk")  # in F_OFD_SETLKW: held off
    os.unlink(path)
    # Another process makes the successor: this one's attach holds its open lock.
    in_child(f"herdcache.Segment.create('raced', '1MiB', dir={segdir!r}).close()")
    ofd_lock(gc_fd, fcntl.F_UNLCK)
    os.close(gc_fd)
    attacher.join(HANG)
    assert attached, "the attach never finished"
    attached[0].counter("written").store(7)
    seen = in_child(f"print(herdcache.Segment.attach('raced', dir={segdir!r}).counter('written').load())")
    assert seen == "7", "the attacher kept the unlinked file"
    attached[0].close()


def in_child(code: str) -> str:
    """Run code (herdcache imported) in a fresh interpreter; its output."""
    done = subprocess.run(
        [sys.executable, "-c", f"import herdcache; {code}"], capture_output=True, text=True, timeout=HANG, check=True
    )
    return done.stdout.strip()
