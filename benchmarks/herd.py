"""Stampede benchmark: many callers want one missing key that takes 100 ms to compute.

What it measures, in one run, side by side: for 16, 64 and 256 callers
(forked processes, then threads of one process), every caller asks a
contender for the same missing key at once; the compute function sleeps
100 ms (time.sleep(0.1)) and returns a small dict. All callers are started
up front, prepare (connect, attach), wait on one barrier, and are measured
from the moment the barrier releases them. Per contender and caller count:

- computations: how many times the compute function ran (a shared counter,
  a multiprocessing.Value); 1 is the goal.
- time to last: from the first caller leaving the barrier until the last
  caller has the value; 100 ms is the floor.
- wake-up latency, median and p99: for the callers that did not compute,
  from the moment the compute function returned its value (it stamps the
  value with that time; the cache stores it right after) until the caller
  has it in hand.
- after waking, median and p99 (herdcache get_or_compute and the wake
  floor): of the wake-up latency above, the part from the moment the
  caller's sleep returned (the futex wait, the floor's select(); each
  process stamps it) until it has the value. The rest, compute end to
  the sleep's return, is the owner's publication and the kernel waking
  and scheduling the sleeper. herdcache's is stamped by wrapping the
  cache's own wait call (Cache._flight_wait) in each caller.
- woken per publication (herdcache get_or_compute only): sleepers the
  kernel woke (FUTEX_WAKE's count, ``stats()["flight_woken"]``) per
  computation, and FUTEX_WAKE calls per computation (``flight_wakes``).
  Also the lock-free read retries per sleeper woken
  (``stats()["read_retries"]``): a woken caller reads the value without
  the stripe lock, retrying while a writer holds the stripe's epoch open;
  after 8 failed tries (HC_READ_ATTEMPTS) it reads under the stripe lock,
  behind the other woken callers. With ``--keys K`` the callers ask K keys
  (caller i asks key i mod K), so flights of several keys run at once: a
  publication should wake only the callers of its own key, about
  callers/K, not every sleeper of its stripe. It does not depend on the
  core count.

Contenders:
- herdcache get_or_compute: cache.get_or_compute(key, fn, ttl=60) on an
  anonymous segment (shared by fork).
- herdcache naive: v = cache.get(k); if v is None: v = fn(); cache.set(k, v).
- diskcache memoize_stampede: the diskcache.recipes.memoize_stampede recipe
  on a diskcache.Cache in /dev/shm. Its protection is early probabilistic
  recomputation of a key that is about to expire; a key that is missing is
  computed by every caller that misses it.
- dogpile.cache redis: a dogpile.cache region on the dogpile.cache.redis
  backend with distributed_lock=True, against a local redis-server on a
  unix socket. Callers that find the lock taken poll it every lock_sleep
  (dogpile's default, 0.1 s), then take it one at a time to read the value.
- wake floor (no cache): what waking the herd costs the machine itself,
  the peer that tells herdcache's wake path from the scheduler's. The
  first caller (a shared counter decides) computes, stores the value's
  stamp in shared memory and writes one byte to a pipe; every other
  caller sleeps in select() on that pipe, so one write wakes them all at
  once, as one FUTEX_WAKE does herdcache's sleepers, and each returns the
  stamp. Wake-up p99 of herdcache / p99 of the floor near 1 means the
  time goes to scheduling that many woken processes on the machine's
  cores, not to herdcache. One key only: with --keys it is left out.

The herdcache contenders are skipped, with the reason printed, until
herdcache.Cache and Cache.get_or_compute exist.

Run (from the repository root, after benchmarks/install-peers.sh and
`pip install .`):

    python benchmarks/herd.py                   # 16, 64, 256 callers, 3 repeats
    python benchmarks/herd.py --quick           # 16 and 64 callers, 1 repeat
    python benchmarks/herd.py --sizes 8,512 --repeat 5 --only herdcache,dogpile
    python benchmarks/herd.py --keys 8 --only herdcache   # 8 keys at once
    python benchmarks/herd.py --sizes 64 --repeat 10 --only herdcache,floor
                                                # scenario 9: wake-up p99 at 64

256 processes on 2 cores take a while to start; they are started before the
barrier, so start-up is not measured, but being released takes them time
too, and that is part of "time to last". Numbers on a shared 2-core machine
are noisy: compare ratios from one run.
"""

from __future__ import annotations

import argparse
import itertools
import os
import select
import shutil
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

from _common import PeerUnavailable, load_herdcache, machine_header, markdown_table, run_each
from _parallel import FORK, WorkerFailed, run_workers
from _timing import median, now_ns, percentile
from servers import RedisServer, ServerUnavailable

COMPUTE_SECONDS = 0.1
TTL_SECONDS = 60
TRIAL_TIMEOUT_S = 300.0
MODES = {"process": "processes", "thread": "threads"}  # mode -> plural
_trial_ids = itertools.count()


def compute(counter, caller: int) -> dict:
    """The expensive function: counts itself, sleeps 100 ms, stamps its result."""
    with counter.get_lock():
        counter.value += 1
    time.sleep(COMPUTE_SECONDS)
    return {"computed_at_ns": now_ns(), "by": caller}


class Contender:
    """One way of getting a value computed once for many callers."""

    name = ""
    option = ""  # as given to --only

    def setup(self) -> None:
        """In the parent, before callers start."""

    def before_trial(self) -> None:
        """In the parent, before each trial's callers start."""

    def after_fork_child(self) -> None:
        """In each caller process (not thread), before the barrier."""

    def fetch(self, key: str, fn):
        """The value of key, computed with fn() if it is missing."""
        raise NotImplementedError

    def wake_counts(self) -> tuple[int, int, int] | None:
        """(wake calls, sleepers woken, lock-free read retries) so far,
        where the contender counts them."""
        return None

    def woken_at_ns(self) -> int | None:
        """When this caller's last sleep returned (now_ns), where stamped."""
        return getattr(self._stamps, "woken_ns", None)

    @property
    def _stamps(self) -> threading.local:
        """Per caller thread: its stamps (a fork child starts with none)."""
        if "_local" not in self.__dict__:
            self._local = threading.local()
        return self._local

    def teardown(self) -> None:
        pass


class _Herdcache(Contender):
    option = "herdcache"
    needs = ("get", "set")

    def setup(self):
        herdcache = load_herdcache(*self.needs)
        self.cache = herdcache.Cache(size="64MiB")

    def teardown(self):
        self.cache.close()


class HerdcacheGetOrCompute(_Herdcache):
    name = "herdcache get_or_compute"
    needs = ("get_or_compute",)

    def setup(self):
        super().setup()
        wait, stamps = self.cache._flight_wait, self._stamps

        def stamped_wait(*args):
            try:
                return wait(*args)
            finally:
                stamps.woken_ns = now_ns()

        self.cache._flight_wait = stamped_wait  # shadows the method, for this instance

    def fetch(self, key, fn):
        self._stamps.woken_ns = None
        return self.cache.get_or_compute(key, fn, ttl=TTL_SECONDS)

    def wake_counts(self):
        stats = self.cache.stats()
        if "flight_woken" not in stats:  # a herdcache before per-key wake words
            return None
        return stats["flight_wakes"], stats["flight_woken"], stats["read_retries"]


class HerdcacheNaive(_Herdcache):
    name = "herdcache naive get+set"

    def fetch(self, key, fn):
        value = self.cache.get(key)
        if value is None:
            value = fn()
            self.cache.set(key, value, ttl=TTL_SECONDS)
        return value


class DiskcacheStampede(Contender):
    name = "diskcache memoize_stampede"
    option = "diskcache"

    def setup(self):
        try:
            import diskcache
            import diskcache.recipes
        except ImportError:
            raise PeerUnavailable("diskcache is not installed (pip install diskcache)") from None
        self.diskcache = diskcache
        self.directory = tempfile.mkdtemp(prefix="herdcache-bench-herd-", dir="/dev/shm")
        self._open()

    def _open(self):
        self.cache = self.diskcache.Cache(self.directory)
        # The cache key is ("herd", key): fn (argument 1) is left out of it.
        memoize = self.diskcache.recipes.memoize_stampede(
            self.cache, expire=TTL_SECONDS, name="herd", ignore={1}
        )
        self.memoized = memoize(lambda key, fn: fn())

    def after_fork_child(self):
        self._open()  # SQLite connections must not cross fork()

    def fetch(self, key, fn):
        return self.memoized(key, fn)

    def teardown(self):
        self.cache.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class DogpileRedis(Contender):
    name = "dogpile.cache redis lock"
    option = "dogpile"

    def setup(self):
        try:
            import dogpile.cache
            import redis  # noqa: F401 - the backend imports it lazily
        except ImportError:
            raise PeerUnavailable(
                "dogpile.cache or redis is not installed (pip install dogpile.cache redis)"
            ) from None
        self.make_region = dogpile.cache.make_region
        self._stack = ExitStack()
        try:
            self.server = self._stack.enter_context(RedisServer())
        except ServerUnavailable as exc:
            raise PeerUnavailable(str(exc)) from None
        self._configure()

    def _configure(self):
        self.region = self.make_region().configure(
            "dogpile.cache.redis",
            expiration_time=TTL_SECONDS,
            arguments={
                "url": self.server.url(),
                "distributed_lock": True,
                "thread_local_lock": False,  # dogpile asks for this with distributed_lock
                "lock_timeout": 30,  # a dead owner's lock expires
                # redis-py's pool holds 100 connections by default: one per
                # caller thread is needed.
                "connection_kwargs": {"max_connections": 4096},
            },
        )
        self.region.backend.writer_client.ping()  # connect before the barrier

    def after_fork_child(self):
        self._configure()

    def fetch(self, key, fn):
        return self.region.get_or_create(key, fn)

    def teardown(self):
        self._stack.close()


class WakeFloor(Contender):
    """No cache: the first caller computes, one pipe write wakes the rest
    (see the module docstring)."""

    name = "wake floor: select() on one pipe"
    option = "floor"

    def setup(self):
        self.claimed = FORK.Value("i", 0)  # with its lock: who computes
        self.computed_at_ns = FORK.Value("q", 0, lock=False)
        self.pipe: tuple[int, int] | None = None

    def before_trial(self):
        self.teardown()
        self.pipe = os.pipe()  # a fresh one: the last trial's byte is unread
        self.claimed.value = 0

    def fetch(self, key, fn):
        assert self.pipe is not None, "before_trial() makes the pipe"
        with self.claimed.get_lock():
            first, self.claimed.value = self.claimed.value == 0, 1
        if first:
            value = fn()
            self.computed_at_ns.value = value["computed_at_ns"]
            os.write(self.pipe[1], b"!")  # never read: every select() returns
            return value
        select.select([self.pipe[0]], [], [])
        self._stamps.woken_ns = now_ns()
        return {"computed_at_ns": self.computed_at_ns.value, "by": None}

    def teardown(self):
        if self.pipe is not None:
            for fd in self.pipe:
                os.close(fd)
            self.pipe = None


ALL_CONTENDERS = [HerdcacheGetOrCompute, HerdcacheNaive, DiskcacheStampede, DogpileRedis, WakeFloor]


@dataclass
class Outcome:
    """What the trials of one contender, mode and caller count gave."""

    computations: list[int] = field(default_factory=list)
    time_to_last_ns: list[int] = field(default_factory=list)
    wakeups_ns: list[int] = field(default_factory=list)
    after_waking_ns: list[int] = field(default_factory=list)
    publications: int = 0
    wakes: int | None = None  # FUTEX_WAKE calls, where counted
    woken: int = 0
    read_retries: int = 0


def _count_wakes(contender: Contender, outcome: Outcome, before, publications: int) -> None:
    after = contender.wake_counts()
    if before is None or after is None:
        return
    outcome.publications += publications
    outcome.wakes = (outcome.wakes or 0) + after[0] - before[0]
    outcome.woken += after[1] - before[1]
    outcome.read_retries += after[2] - before[2]


def run_trial(contender: Contender, callers: int, mode: str, keys: int, outcome: Outcome) -> None:
    counter = FORK.Value("i", 0)
    trial = f"herd:{contender.option}:{mode}:{callers}:{next(_trial_ids)}:{time.time_ns()}"

    def caller(index: int, barrier):
        if mode == "process":
            contender.after_fork_child()
        fn = lambda: compute(counter, index)  # noqa: E731
        barrier.wait()
        start = now_ns()
        value = contender.fetch(f"{trial}:{index % keys}", fn)
        got = now_ns()
        return start, got, value["computed_at_ns"], value["by"] == index, contender.woken_at_ns()

    contender.before_trial()
    before = contender.wake_counts()
    results = run_workers(caller, callers, mode, TRIAL_TIMEOUT_S)
    _count_wakes(contender, outcome, before, counter.value)
    outcome.computations.append(counter.value)
    outcome.time_to_last_ns.append(max(r[1] for r in results) - min(r[0] for r in results))
    outcome.wakeups_ns += [got - stored for _, got, stored, computed, _ in results if not computed]
    outcome.after_waking_ns += [got - woken for _, got, _, computed, woken in results if not computed and woken]


def run_cell(contender: Contender, callers: int, mode: str, repeat: int, keys: int) -> list[str]:
    """The table row of ``repeat`` trials of one contender, caller count and mode."""
    print(f"- running {contender.name}: {callers} {MODES[mode]}", flush=True)
    outcome = Outcome()
    try:
        for _ in range(repeat):
            run_trial(contender, callers, mode, keys, outcome)
    except WorkerFailed as exc:
        print(f"  failed: {exc}", flush=True)
        return [contender.name, str(callers), "failed", "—", "—", "—", "—", "—", "—"]
    return outcome_row(contender.name, callers, outcome)


def ms(ns: float) -> str:
    return f"{ns / 1e6:,.1f}"


def median_p99(ns: list[int]) -> list[str]:
    return [ms(median(ns)), ms(percentile(ns, 0.99))] if ns else ["—", "—"]


def outcome_row(name: str, callers: int, o: Outcome) -> list[str]:
    low, high = min(o.computations), max(o.computations)
    computations = str(low) if low == high else f"{low}–{high}"
    wake = [*median_p99(o.wakeups_ns), *median_p99(o.after_waking_ns)]
    woken = (
        f"{o.woken / o.publications:,.1f} ({o.wakes / o.publications:,.1f} calls, "
        f"{o.read_retries / max(o.woken, 1):,.1f} retries per woken)"
        if o.wakes is not None and o.publications
        else "—"
    )
    return [name, str(callers), computations, ms(median(o.time_to_last_ns)), *wake, woken]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="16,64,256", help="caller counts (16,64,256)")
    parser.add_argument("--repeat", type=int, default=3, help="trials per cell (3)")
    parser.add_argument("--quick", action="store_true", help="16 and 64 callers, 1 trial")
    parser.add_argument("--keys", type=int, default=1, help="keys asked at once (1)")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated contenders: " + ",".join(sorted({c.option for c in ALL_CONTENDERS})),
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeat = "16,64", 1
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    wanted = {o.strip() for o in args.only.split(",") if o.strip()}
    unknown = wanted - {c.option for c in ALL_CONTENDERS}
    if unknown:
        sys.exit(f"unknown contender(s): {', '.join(sorted(unknown))}")
    args.contenders = [
        c for c in ALL_CONTENDERS if (not wanted or c.option in wanted) and (args.keys == 1 or c is not WakeFloor)
    ]
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    print(machine_header("herdcache stampede benchmark"))
    print(
        f"- one missing key, compute = {COMPUTE_SECONDS * 1000:.0f} ms sleep, "
        f"callers {args.sizes} over {args.keys} key(s), {args.repeat} trial(s) per cell\n"
    )

    def run(contender: Contender) -> dict[str, list]:
        return {
            mode: [run_cell(contender, callers, mode, args.repeat, args.keys) for callers in args.sizes]
            for mode in MODES
        }

    measured = run_each(args.contenders, run)
    headers = ["contender", "callers", "computations", "time to last ms",
               "wake-up median ms", "wake-up p99 ms", "after waking median ms", "after waking p99 ms",
               "woken per publication"]  # fmt: skip
    for mode, plural in MODES.items():
        print(f"\n## Callers are {plural}\n")
        rows = [row for by_mode in measured.values() for row in by_mode[mode]]
        print(markdown_table(headers, sorted(rows, key=lambda row: int(row[1]))))
    print(
        f"\nIdeal: {args.keys} computation(s), time to last just over {COMPUTE_SECONDS * 1000:.0f} ms, "
        "wake-ups well under 1 ms, each publication waking only its key's sleepers. "
        "Wake-ups count only the callers that did not compute."
    )


if __name__ == "__main__":
    main()
