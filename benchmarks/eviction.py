"""Eviction benchmark: hit ratios of LRU, CLOCK and SIEVE on a Zipf key stream.

What it measures: a stream of --requests requests over --keys keys drawn
from a Zipf distribution (exponent --alpha, 0.99 by default: key of rank r
is asked for with probability proportional to 1/r^0.99), replayed against
a cache that holds --cache-fraction (10 %) of the keys. It prints the hit
ratio of three pure-Python simulations, side by side, and each one's misses
relative to LRU's:

- LRU: exact least-recently-used (an OrderedDict).
- CLOCK: a ring of slots with a reference bit, set on a hit; on a miss the
  hand clears set bits until it finds a clear one and replaces that entry.
  New entries start with the bit clear.
- SIEVE ("SIEVE is Simpler than LRU", NSDI '24): a FIFO queue with a
  visited bit per entry, set on a hit; new entries go in at the head; to
  evict, a hand moving from the tail towards the head clears visited bits
  as it passes and evicts the first entry it finds unvisited, and stays
  there for the next eviction.

Every request counts, cold misses included, the same for every policy.

herdcache: measure_herdcache() replays the same stream against a real
herdcache.Cache sized so that about 10 % of the keys (fixed-size values)
fit, counting a hit whenever get returns a value; it is skipped, with the
reason printed, until herdcache.Cache exists.

Run (from the repository root; numpy makes drawing the stream faster, it is
not needed):

    python benchmarks/eviction.py                  # 100k keys, 1M requests
    python benchmarks/eviction.py --quick          # 10k keys, 100k requests
    python benchmarks/eviction.py --alpha 0.8 --cache-fraction 0.01

Hit ratios depend only on the stream and the seed, not on the machine; the
herdcache row's sizing is approximate (see measure_herdcache). Timed numbers
on a shared 2-core machine are noisy (this script prints none): as with every
benchmark here, compare ratios from one run.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import random
from collections import OrderedDict

from _common import PeerUnavailable, load_herdcache, machine_header, markdown_table, skip
from _timing import now_ns

HERDCACHE_VALUE = b"v" * 100  # every entry the same size, so capacity is a count


def zipf_stream(keys: int, requests: int, alpha: float, seed: int) -> list[int]:
    """``requests`` key ids in 0..keys-1; the id of rank r has weight 1/r^alpha.

    Ids are a random permutation of the ranks, so popular keys are not
    neighbours (which matters to a real cache's hashing, not to the
    simulations).
    """
    rng = random.Random(seed)
    key_of_rank = list(range(keys))
    rng.shuffle(key_of_rank)
    try:
        import numpy
    except ImportError:
        return _zipf_ranks_python(keys, requests, alpha, rng, key_of_rank)
    weights = numpy.arange(1, keys + 1, dtype=numpy.float64) ** -alpha
    cdf = numpy.cumsum(weights)
    cdf /= cdf[-1]
    draws = numpy.random.default_rng(seed).random(requests)
    ranks = numpy.minimum(numpy.searchsorted(cdf, draws, side="right"), keys - 1)
    return numpy.asarray(key_of_rank)[ranks].tolist()


def _zipf_ranks_python(keys, requests, alpha, rng, key_of_rank) -> list[int]:
    cdf = list(itertools.accumulate(r**-alpha for r in range(1, keys + 1)))
    total = cdf[-1]
    last = keys - 1
    return [
        key_of_rank[min(bisect.bisect_right(cdf, rng.random() * total), last)]
        for _ in range(requests)
    ]


class LRU:
    name = "LRU (exact)"

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.entries: OrderedDict[int, None] = OrderedDict()

    def access(self, key: int) -> bool:
        """Look key up; on a miss, insert it (evicting if full). True on a hit."""
        entries = self.entries
        if key in entries:
            entries.move_to_end(key)
            return True
        if len(entries) >= self.capacity:
            entries.popitem(last=False)
        entries[key] = None
        return False


class Clock:
    name = "CLOCK"

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.keys: list[int | None] = [None] * capacity
        self.referenced = bytearray(capacity)
        self.slot_of: dict[int, int] = {}
        self.hand = 0
        self.used = 0

    def access(self, key: int) -> bool:
        slot = self.slot_of.get(key)
        if slot is not None:
            self.referenced[slot] = 1
            return True
        if self.used < self.capacity:
            slot = self.used
            self.used += 1
        else:
            slot = self._evict()
        self.keys[slot] = key
        self.referenced[slot] = 0
        self.slot_of[key] = slot
        return False

    def _evict(self) -> int:
        """Free the slot of the first unreferenced entry at or after the hand."""
        referenced, capacity = self.referenced, self.capacity
        hand = self.hand
        while referenced[hand]:
            referenced[hand] = 0
            hand = (hand + 1) % capacity
        del self.slot_of[self.keys[hand]]
        self.hand = (hand + 1) % capacity
        return hand


class _SieveNode:
    __slots__ = ("key", "visited", "newer", "older")

    def __init__(self, key: int) -> None:
        self.key = key
        self.visited = False
        self.newer: _SieveNode | None = None
        self.older: _SieveNode | None = None


class Sieve:
    """SIEVE: FIFO order, visited bits, and a hand that sweeps from old to new."""

    name = "SIEVE"

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.nodes: dict[int, _SieveNode] = {}
        self.head: _SieveNode | None = None  # newest
        self.tail: _SieveNode | None = None  # oldest
        self.hand: _SieveNode | None = None

    def access(self, key: int) -> bool:
        node = self.nodes.get(key)
        if node is not None:
            node.visited = True
            return True
        if len(self.nodes) >= self.capacity:
            self._evict()
        self._insert_at_head(_SieveNode(key))
        return False

    def _insert_at_head(self, node: _SieveNode) -> None:
        node.older = self.head
        if self.head is not None:
            self.head.newer = node
        self.head = node
        if self.tail is None:
            self.tail = node
        self.nodes[node.key] = node

    def _evict(self) -> None:
        node = self.hand or self.tail
        while node.visited:
            node.visited = False
            node = node.newer or self.tail  # past the head, wrap to the tail
        self.hand = node.newer
        self._unlink(node)

    def _unlink(self, node: _SieveNode) -> None:
        if node.newer is not None:
            node.newer.older = node.older
        else:
            self.head = node.older
        if node.older is not None:
            node.older.newer = node.newer
        else:
            self.tail = node.newer
        del self.nodes[node.key]


POLICIES = [LRU, Clock, Sieve]


def simulate(policy_class, stream: list[int], capacity: int) -> float:
    """Hit ratio of policy_class with room for capacity entries on stream."""
    access = policy_class(capacity).access
    hits = sum(1 for key in stream if access(key))
    return hits / len(stream)


def resident_after_filling(herdcache, size: int, entries: int) -> int:
    """How many of ``entries`` distinct keys a cache of ``size`` bytes keeps."""
    cache = herdcache.Cache(size=size)
    try:
        for i in range(entries):
            cache.set(f"fill:{i}", HERDCACHE_VALUE)
        return cache.stats()["entries"]
    finally:
        cache.close()


def herdcache_capacity_bytes(entries: int) -> int:
    """The smallest segment size (within 1 %) that keeps ``entries`` entries
    of HERDCACHE_VALUE resident, found by filling real caches: the fixed
    costs (segment header, statistics slots, stripes, buckets) are measured,
    not guessed."""
    herdcache = load_herdcache("get", "set", "stats", "close")
    low, high = 1 << 20, 1 << 20
    while resident_after_filling(herdcache, high, entries) < entries:
        low, high = high, high * 2
    while high - low > high // 100:
        middle = (low + high) // 2
        if resident_after_filling(herdcache, middle, entries) < entries:
            low = middle
        else:
            high = middle
    return high


def measure_herdcache(stream: list[int], capacity_bytes: int) -> tuple[float, int]:
    """Replay stream against a real herdcache.Cache of capacity_bytes.

    A request is a hit when get returns a value; on a miss the key is set
    (HERDCACHE_VALUE), letting the cache evict. Returns the hit ratio and
    the number of entries resident at the end. Raises PeerUnavailable while
    herdcache.Cache does not exist.
    """
    herdcache = load_herdcache("get", "set", "stats", "close")
    cache = herdcache.Cache(size=capacity_bytes)
    try:
        hits = 0
        for key_id in stream:
            key = f"key:{key_id}"
            if cache.get(key) is not None:
                hits += 1
            else:
                cache.set(key, HERDCACHE_VALUE)
        resident = cache.stats()["entries"]
    finally:
        cache.close()
    return hits / len(stream), resident


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000, help="distinct keys (100000)")
    parser.add_argument("--requests", type=int, default=1_000_000, help="stream length (1000000)")
    parser.add_argument("--alpha", type=float, default=0.99, help="Zipf exponent (0.99)")
    parser.add_argument(
        "--cache-fraction", type=float, default=0.10, help="cache size / keys (0.10)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
    parser.add_argument("--quick", action="store_true", help="10k keys, 100k requests")
    args = parser.parse_args(argv)
    if args.quick:
        args.keys, args.requests = 10_000, 100_000
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    print(machine_header("herdcache eviction benchmark", timed=False))
    capacity = max(1, int(args.keys * args.cache_fraction))
    start = now_ns()
    stream = zipf_stream(args.keys, args.requests, args.alpha, args.seed)
    print(
        f"- Zipf({args.alpha}) over {args.keys:,} keys, {args.requests:,} requests "
        f"(drawn in {(now_ns() - start) / 1e9:.1f} s, seed {args.seed}), "
        f"cache of {capacity:,} entries ({args.cache_fraction:.0%} of the keys)\n"
    )

    ratios = {policy.name: simulate(policy, stream, capacity) for policy in POLICIES}
    herdcache_note = ""
    try:
        capacity_bytes = herdcache_capacity_bytes(capacity)
        hit_ratio, resident = measure_herdcache(stream, capacity_bytes)
        ratios["herdcache (measured)"] = hit_ratio
        herdcache_note = (
            f"\nherdcache: a {capacity_bytes:,}-byte segment, {resident:,} entries "
            f"resident at the end (target {capacity:,})."
        )
    except PeerUnavailable as exc:
        skip("herdcache", exc)

    lru_misses = 1 - ratios[LRU.name]
    rows = [[name, f"{hit:.4f}", f"{(1 - hit) / lru_misses:.3f}"] for name, hit in ratios.items()]
    print("\n" + markdown_table(["policy", "hit ratio", "misses ÷ LRU's"], rows))
    print(herdcache_note)
    print("misses ÷ LRU's below 1: fewer misses than exact LRU.")


if __name__ == "__main__":
    main()
