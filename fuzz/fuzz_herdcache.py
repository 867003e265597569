"""Coverage-guided fuzzing of herdcache (RELIABILITY.md scenario 20), by atheris.

Each input damages a valid segment image and plants serialized bytes:

    input := count:u8, count x patch, planted bytes (the rest)
    patch := region:u8, offset:u16 LE, length:u8 (1-8), bytes

A region is a part of the image the fuzzer should hit often: the segment
header and registry, the cache header and stripes, the header of one of
the seed's items (its key follows), the queue, or anywhere.  The harness
writes the damaged image as a segment file, attaches a Cache and a Queue
to it and uses them the way users do: get every key, iterate, len,
stats, check, get_or_compute over a dead process's flight, get a queued
message; then stores the planted bytes as a msgpack value and reads them
back through get, get_or_compute and incr.

A finding is any exception outside herdcache.errors (except the builtins
an API documents: KeyError and TypeError from incr), any signal (the C
core built with clang -fsanitize=fuzzer-no-link, so its branches guide
the search too), an input that takes longer than HANG_SECONDS (1 s,
RELIABILITY scenario 20's bound), and a get_or_compute that waits
although no other process is attached (nobody can be computing but the
caller itself).

An input over HANG_SECONDS is caught twice: one that never returns by
libFuzzer's own -timeout=1 (run.sh passes it; its SIGALRM handler is C,
so it fires inside the core too, and writes the input as timeout-*), one
that returns late, which libFuzzer's timer, ticking once a second, may
miss, by the harness timing every input.  The harness sets no alarm of
its own: that would take libFuzzer's timer and handler away.  Each time
an input is the slowest so far, the harness prints its time, so a run's
log ends with the slowest input it saw.

    fuzz/run.sh [seconds]        build with clang, then fuzz (default 60)

The seeds in fuzz/corpus/, small on purpose:

    plain                      no damage, nothing odd planted
    decimal-damaged            a msgpack Decimal ext of b"1.5e" (defect 10)
    timedelta-damaged          a timedelta ext of [10**12, 0, 0] (defect 10)
    flight-damaged-queue-link  the dead owner's FLIGHT gets it_qnext =
                               0xFFFFFFFF, so the takeover's store finds
                               the stripe corrupt after linking its own
                               flight, which the retry then waits for
                               (defect 11)
"""

import os
import struct
import sys
import tempfile
import time

import atheris

# Imported in main(), after atheris.Setup(), so that herdcache's Python is
# instrumented for coverage (the C extension's coverage hooks come from
# the libFuzzer that run.sh preloads).
msgpack = herdcache = errors = TAG_MSGPACK = None

NAME = "fuzz"
HANG_SECONDS = 1.0
ITEM_KEYS = ["inflight", "int", "decimal", "timedelta", "text"]


class Hang(Exception):
    """An input took longer than HANG_SECONDS."""


def _make_seed(directory):
    """A segment with a cache (some values, and a FLIGHT whose owner died)
    and a queue holding one message; returns its file's path."""
    cache = herdcache.Cache(NAME, size="4MiB", dir=directory)
    import datetime
    import decimal

    cache.set("int", 7)
    cache.set("decimal", decimal.Decimal("1.5"))
    cache.set("timedelta", datetime.timedelta(days=1, seconds=2))
    cache.set("text", "hello")
    pid = os.fork()
    if pid == 0:  # begin a computation, then die inside it
        cache.get_or_compute("inflight", lambda: os._exit(0))
        os._exit(1)
    os.waitpid(pid, 0)
    queue = cache.segment.queue("q", "64KiB")
    queue.put({"message": 1})
    cache.close()
    (path,) = [os.path.join(directory, f) for f in os.listdir(directory)]
    return path


def _regions(image):
    """(start, span) of the parts of the image the patches aim at."""
    regions = [(0, 65536), (0, len(image))]  # header and registry; anywhere
    for key in ITEM_KEYS:  # an item's 48-byte header precedes its key
        at = image.find(key.encode(), 65536)
        if at >= 48:
            regions.append((at - 48, 48 + len(key) + 32))
    queue_at = image.find(msgpack.packb({"message": 1}))
    if queue_at > 0:
        regions.append((max(0, queue_at - 4096), 8192))
    return regions


def _patch(image, regions, data):
    """Apply the input's patches to a copy of image; the planted bytes."""
    damaged = bytearray(image)
    count, pos = (data[0] if data else 0), 1
    for _ in range(count):
        if pos + 4 > len(data):
            break
        region, offset, length = data[pos], *struct.unpack_from("<HB", data, pos + 1)
        start, span = regions[region % len(regions)]
        # a 16-bit offset reaches all of a large region in steps of 997
        at = start + (offset * 997) % span if span > 65536 else start + offset % span
        chunk = data[pos + 4 : pos + 4 + 1 + length % 8]
        damaged[at : at + len(chunk)] = chunk
        pos += 4 + len(chunk)
    return damaged[: len(image)], data[pos:]


def _write(path, image):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, image)
    finally:
        os.close(fd)


def _expect(call, *allowed):
    """Run call; herdcache errors (and the builtins allowed) are answers."""
    try:
        return call()
    except (errors.HerdcacheError, *allowed):
        return None


def _no_waiting(cache, key):
    """get_or_compute with nobody else attached must never wait."""
    before = cache.stats().get("waits", 0)
    _expect(lambda: cache.get_or_compute(key, lambda: "computed", lease=1.0, wait_timeout=2.0))
    waits = cache.stats().get("waits", 0) - before
    if waits:
        raise AssertionError(f"get_or_compute({key!r}) waited {waits} time(s) with no other process attached")


def _use(directory, planted):
    cache = _expect(lambda: herdcache.Cache(NAME, size="4MiB", dir=directory))
    if cache is None:
        return
    try:
        for key in ITEM_KEYS:
            _expect(lambda: cache.get(key))
        _expect(lambda: list(cache))
        _expect(lambda: len(cache))
        _expect(cache.stats)
        _expect(cache.check)
        _no_waiting(cache, "inflight")
        queue = _expect(lambda: cache.segment.queue("q", "64KiB"))
        if queue is not None:
            # queue.Empty is an answer (the queue.Queue contract): damage
            # may leave a queue that is whole and empty.
            _expect(lambda: queue.get(timeout=0), herdcache.queue.Empty)
        if _expect(lambda: cache._store("planted", bytes(planted), TAG_MSGPACK, None, 0, 0)):
            _expect(lambda: cache.get("planted"))
            _expect(lambda: cache.get_or_compute("planted", lambda: 0))
            _expect(lambda: cache.incr("planted"), KeyError, TypeError)
    finally:
        _expect(cache.close)


def _import():
    global msgpack, herdcache, errors, TAG_MSGPACK
    with atheris.instrument_imports():
        import msgpack
        import herdcache
        from herdcache import errors
        from herdcache.serializers import TAG_MSGPACK


def _timed(use, slowest):
    """Run use(); fail if it took over HANG_SECONDS, and print its time
    when it is the slowest input so far (slowest: a one-item list)."""
    started = time.monotonic()
    use()
    took = time.monotonic() - started
    if took > HANG_SECONDS:
        raise Hang(f"an input took {took:.3f} s, over the {HANG_SECONDS} s bound")
    if took > slowest[0]:
        slowest[0] = took
        print(f"herdcache fuzz: slowest input so far: {took * 1000:.1f} ms", file=sys.stderr, flush=True)


def main():
    state = {"slowest": [0.0]}

    def one_input(data):
        damaged, planted = _patch(state["image"], state["regions"], data)
        _write(state["path"], damaged)
        _timed(lambda: _use(state["directory"], planted), state["slowest"])

    atheris.Setup(sys.argv, one_input)
    _import()
    state["directory"] = tempfile.mkdtemp(prefix="herdcache-fuzz-")
    state["path"] = _make_seed(state["directory"])
    with open(state["path"], "rb") as f:
        state["image"] = f.read()
    state["regions"] = _regions(state["image"])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
