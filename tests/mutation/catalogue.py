"""The mutant catalogue: small, plausible bugs, and the tests that must catch each.

A mutant is (file, the exact original snippet, its replacement): it
survives code moving around its snippet, and the runner stops if the
snippet no longer occurs exactly once.  ``tests`` are the tests a reader
would name as the guard against that bug, most precise first: C test
programs as ``c:test_name`` (tests/c/test_name.c, run under ASan+UBSan)
and pytest node ids or files.  The first five are the survivors of issue
13; the rest cover every C file of the core, the binding and the Python
layer.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    id: str
    path: str
    original: str
    replacement: str
    tests: tuple[str, ...]
    why: str


CORE = "src/herdcache/_core/"
PY = "src/herdcache/"
T = "tests/"

MUTANTS = [
    # -- the five survivors of issue 13 -------------------------------------------------
    Mutant(
        "table-expiry-exclusive",
        CORE + "table.c",
        "    return now >= exp;\n",
        "    return now > exp;\n",
        ("c:test_table",),
        "an entry is still served at the very nanosecond it expires",
    ),
    Mutant(
        "table-no-epoch-bump-on-free",
        CORE + "table.c",
        "    epoch_enter(w->w_stripe);\n    return remove_item(w, linkp, unit);\n",
        "    return remove_item(w, linkp, unit);\n",
        ("c:test_table", T + "multiprocess/test_cache_torn_reads.py::test_readers_never_see_a_torn_value_without_deletes"),
        "overwrite and eviction free a block without moving the readers' epoch",
    ),
    Mutant(
        "lock-release-wakes-nobody",
        CORE + "lock.c",
        "    if (old & HC_LOCK_WAITERS)\n        hc_futex_wake(&lock->lk_word, 1);",
        "    if (old == HC_LOCK_WAITERS)\n        hc_futex_wake(&lock->lk_word, 1);",
        ("c:test_threads",),
        "release tests the whole word, not the waiters bit: no waiter is ever woken",
    ),
    Mutant(
        "binding-notify-all-wakes-one",
        CORE + "py_sync.c",
        "    hc_cond_notify(self->base.ptr, -1);",
        "    hc_cond_notify(self->base.ptr, 1);",
        (T + "multiprocess/test_condition_mp.py::test_notify_all_ends_every_raw_wait",),
        "Condition.notify_all() wakes one waiter",
    ),
    Mutant(
        "registry-entry-unbounded",
        CORE + "registry.c",
        "        || out->offset % HC_ALIGN != 0 || out->offset < data\n"
        "        || hc_segment_ptr(seg, out->offset, out->size) == NULL) {",
        "        || out->offset % HC_ALIGN != 0 || out->offset < data) {",
        (T + "unit/test_corrupt_segment.py::test_registry_entry_outside_the_segment_is_corrupt",),
        "a registry entry may point past the end of the segment",
    ),
    # -- table.c ------------------------------------------------------------------------
    Mutant(
        "table-read-ignores-epoch",
        CORE + "table.c",
        "    return !(rd->rd_epoch & 1)\n        && atomic_load_explicit(&rd->rd_stripe->sp_epoch,\n"
        "                                memory_order_relaxed) == rd->rd_epoch;",
        "    return !(rd->rd_epoch & 1);",
        ("c:test_table", T + "multiprocess/test_cache_torn_reads.py"),
        "a lock-free read validates without re-reading the epoch",
    ),
    Mutant(
        "table-stale-window-ignored",
        CORE + "table.c",
        "    if (with_stale)\n        exp += (uint64_t) it->it_stale_s * HC_NS_PER_SEC;\n",
        "",
        (T + "multiprocess/test_compute_freshness.py",),
        "stale_ttl keeps nothing past expiry",
    ),
    Mutant(
        "table-sieve-evicts-visited",
        CORE + "evict.c",
        "        if (expired || !hc_evict_bit(w->w_visited, cur - 1)) {",
        "        if (expired || hc_evict_bit(w->w_visited, cur - 1)) {",
        (T + "unit/test_cache_eviction.py",),
        "SIEVE evicts the items that were read and spares the others",
    ),
    Mutant(
        "evict-s3fifo-ghost-ignored",
        CORE + "evict.c",
        "    if (ghost_take(w, it->it_hash))",
        "    if (0 && ghost_take(w, it->it_hash))",
        (T + "unit/test_eviction_policy.py::test_a_key_back_from_the_ghost_outlives_a_fresh_one",),
        "S3-FIFO admits a key back from the ghost to small, not main",
    ),
    Mutant(
        "evict-s3fifo-never-promotes",
        CORE + "evict.c",
        "    if (freq_of(w, link - 1) >= HC_S3FIFO_MAIN_FROM) {",
        "    if (freq_of(w, link - 1) > HC_FREQ_BITS) {",
        (T + "unit/test_eviction_policy.py::test_s3fifo_keeps_keys_read_twice_through_a_scan",),
        "S3-FIFO evicts from small the keys read twice instead of moving them to main",
    ),
    Mutant(
        "table-flight-evictable",
        CORE + "evict.c",
        "    return it->it_format == HC_FORMAT_FLIGHT\n"
        "        && !hc_flight_abandoned(w->w_cache, it, w->w_now);",
        "    return it->it_format == HC_FORMAT_FLIGHT && false\n"
        "        && !hc_flight_abandoned(w->w_cache, it, w->w_now);",
        (T + "unit/test_compute_one_process.py::test_a_full_cache_does_not_evict_a_key_being_computed",),
        "eviction may take a key that is being computed",
    ),
    Mutant(
        "table-delete-of-expired-found",
        CORE + "table.c",
        "    if (st == HC_OK && !live)\n        st = HC_NOT_FOUND;",
        "",
        (T + "unit/test_cache_contract.py",),
        "delete() of an expired key reports that it was there",
    ),
    # The paths that copy re-check (fill_read() against the arena, flight
    # begin against the block), so what tells it apart is touch, listing and
    # counting, which use the item as item_at_len() judged it.
    Mutant(
        "table-item-length-unchecked",
        CORE + "table.c",
        "    if (*key_len > HC_KEY_MAX\n"
        "        || hc_alloc_units_for(sizeof(hc_item) + (uint64_t) *key_len\n"
        "                              + value_len) > av->av_units - unit)\n        return NULL;",
        "    (void) value_len;\n    if (*key_len > HC_KEY_MAX)\n        return NULL;",
        (T + "unit/test_damaged_item.py", T + "unit/test_cache_corrupt.py"),
        "an item whose length runs past its arena is trusted",
    ),
    # -- flight.c -----------------------------------------------------------------------
    Mutant(
        "flight-publish-unfenced",
        CORE + "flight.c",
        "    if (it != NULL && (it->it_format != HC_FORMAT_FLIGHT\n                       || it->it_csn != round))",
        "    if (it != NULL && (it->it_format != HC_FORMAT_FLIGHT))",
        (T + "multiprocess/test_compute_fencing.py",),
        "a late owner's publish is accepted over a newer round",
    ),
    Mutant(
        "flight-dead-owner-waited-for",
        CORE + "flight.c",
        "    if (w->w_now < rec.fl_lease_end\n        && hc_slot_token_alive(w->w_cache->ca_seg, rec.fl_owner)) {",
        "    if (w->w_now < rec.fl_lease_end) {",
        (T + "multiprocess/test_compute_owner_death.py",),
        "waiters wait out the lease of a dead owner",
    ),
    Mutant(
        "flight-error-not-shared-with-its-round",
        CORE + "flight.c",
        "    if (rec.er_round == rq->fq_waited_round\n        || !hc_table_expired(it, w->w_now, false))\n"
        "        return report_failure(",
        "    if (!hc_table_expired(it, w->w_now, false))\n        return report_failure(",
        (T + "multiprocess/test_compute_errors.py",),
        "the waiters of a failed round compute again instead of getting the error",
    ),
    Mutant(
        "flight-stale-inverted",
        CORE + "flight.c",
        "        if (rec.fl_stale_until > w->w_now) {\n            res->fr_outcome = HC_FLIGHT_STALE;",
        "        if (rec.fl_stale_until < w->w_now) {\n            res->fr_outcome = HC_FLIGHT_STALE;",
        (T + "multiprocess/test_compute_freshness.py",),
        "the stale value is served outside its window, not inside",
    ),
    Mutant(
        "flight-end-wakes-one",
        CORE + "flight.c",
        "    woken = hc_futex_wake(word, -1);",
        "    woken = hc_futex_wake(word, 1);",
        ("c:test_threads", T + "multiprocess/test_compute_herd.py"),
        "a publish wakes one waiter; the others wake at their 50 ms probe",
    ),
    Mutant(
        "flight-end-wakes-another-word",
        CORE + "flight.c",
        "    wake_word_sleepers(s, wake_word(s, hash));",
        "    wake_word_sleepers(s, wake_word(s, hash + (UINT64_C(1) << 28)));",
        ("c:test_threads", T + "multiprocess/test_compute_herd.py"),
        "the end of a flight wakes the sleepers of another word, not its key's",
    ),
    # -- lock.c -------------------------------------------------------------------------
    Mutant(
        "lock-taken-from-live-owner",
        CORE + "lock.c",
        "    if (owner != me)\n        return hc_slot_token_alive(seg, owner);",
        "    if (owner != me)\n        return !hc_slot_token_alive(seg, owner);",
        ("c:test_lock", T + "multiprocess/test_lock_mp.py"),
        "a waiter takes the lock from a live owner and never from a dead one",
    ),
    Mutant(
        "lock-reentry-sleeps",
        CORE + "lock.c",
        "               == hc_thread_id())\n            return HC_DEADLOCK;\n        if (!(word & HC_LOCK_WAITERS)) {",
        "               == hc_thread_id() && false)\n            return HC_DEADLOCK;\n        if (!(word & HC_LOCK_WAITERS)) {",
        (T + "unit/test_lock.py",),
        "a thread re-acquiring its own lock waits for itself instead of raising",
    ),
    # -- condvar.c ----------------------------------------------------------------------
    Mutant(
        "condvar-wait-never-sleeps",
        CORE + "condvar.c",
        "    wait_st = hc_futex_wait(&cv->cv_seq, seq, deadline);",
        "    wait_st = hc_futex_wait(&cv->cv_seq, seq + 1, deadline);",
        (T + "multiprocess/test_condition_mp.py", T + "unit/test_condition.py"),
        "wait() compares the futex with the wrong sequence and returns at once",
    ),
    Mutant(
        "condvar-seq-not-bumped",
        CORE + "condvar.c",
        "    atomic_fetch_add_explicit(&cv->cv_seq, 1, memory_order_release);\n"
        '    HC_INJECT("cond.notify.before_wake");\n    hc_futex_wake(&cv->cv_seq, count);',
        '    HC_INJECT("cond.notify.before_wake");\n    hc_futex_wake(&cv->cv_seq, count);',
        ("c:test_threads", T + "multiprocess/test_condition_mp.py"),
        "notify wakes sleepers but a waiter about to sleep misses it",
    ),
    # -- queue.c ------------------------------------------------------------------------
    Mutant(
        "queue-ring-mask-off-by-one",
        CORE + "queue.c",
        "    qh->qh_ring_mask = (ring & (ring - 1)) == 0 ? ring - 1 : 0;",
        "    qh->qh_ring_mask = (ring & (ring - 1)) == 0 ? ring : 0;",
        ("c:test_queue", T + "unit/test_queue.py"),
        "positions wrap with the ring size instead of size - 1",
    ),
    Mutant(
        "queue-dead-peer-waited-for",
        CORE + "queue.c",
        "            if (!side_alive(qh, peer)) {",
        "            if (side_alive(qh, peer)) {",
        ("c:test_queue", T + "multiprocess/test_queue_kill.py"),
        "a blocked get or put reports PeerDied while the peer lives, and waits on a dead one",
    ),
    # -- segment.c / segment.h ----------------------------------------------------------
    Mutant(
        "segment-owner-by-group",
        CORE + "segment.c",
        "    if (sb->st_uid != geteuid()) {",
        "    if (sb->st_gid != getegid()) {",
        ("c:test_segment", T + "unit/test_attach_checks.py"),
        "attach checks the file's group, not its owner",
    ),
    Mutant(
        "segment-group-writable-accepted",
        CORE + "segment.c",
        "    if ((sb->st_mode & 022) && !(opts && opts->allow_shared)) {",
        "    if ((sb->st_mode & 002) && !(opts && opts->allow_shared)) {",
        (T + "unit/test_attach_checks.py", "c:test_segment"),
        "a group-writable segment is attached without allow_shared",
    ),
    Mutant(
        "segment-older-layout-accepted",
        CORE + "segment.c",
        "    if (h->sh_layout_version != HC_LAYOUT_VERSION) {",
        "    if (h->sh_layout_version > HC_LAYOUT_VERSION) {",
        (T + "unit/test_corrupt_segment.py::test_each_kind_of_damage_raises_its_own_error", T + "unit/test_attach_checks.py"),
        "a segment of an older layout version is read as this one",
    ),
    Mutant(
        "segment-ptr-length-unchecked",
        CORE + "segment.h",
        "    if (offset > seg->sg_size || len > seg->sg_size - offset)\n        return NULL;",
        "    if (offset > seg->sg_size || len > seg->sg_size)\n        return NULL;",
        (T + "unit/test_corrupt_segment.py::test_registry_entry_outside_the_segment_is_corrupt", "c:test_segment"),
        "a block that starts inside the segment but ends past it is accepted",
    ),
    # -- registry.c ---------------------------------------------------------------------
    Mutant(
        "registry-name-prefix-matches",
        CORE + "registry.c",
        "        if (strlen(out->name) == name_len\n            && memcmp(out->name, name, name_len) == 0) {",
        "        if (memcmp(out->name, name, name_len) == 0) {",
        (T + "unit/test_registry.py",),
        "a name finds the structure of a longer name it is a prefix of",
    ),
    Mutant(
        "registry-smaller-size-accepted",
        CORE + "registry.c",
        "    if (info->size != size) {",
        "    if (info->size < size) {",
        (T + "unit/test_registry.py",),
        "asking for an existing name with a smaller size succeeds",
    ),
    Mutant(
        "registry-unaligned",
        CORE + "registry.c",
        "    uint64_t start = (top + HC_ALIGN - 1) & ~(uint64_t) (HC_ALIGN - 1);",
        "    uint64_t start = top;",
        (T + "unit/test_registry.py",),
        "allocations are not rounded up to 64 bytes",
    ),
    # -- slot.c -------------------------------------------------------------------------
    Mutant(
        "slot-liveness-inverted",
        CORE + "slot.c",
        "    if (held)\n        return true;\n    /* Unlocked: dead",
        "    if (!held)\n        return true;\n    /* Unlocked: dead",
        ("c:test_lock", T + "multiprocess/test_lock_mp.py"),
        "a process whose slot lock is held counts as dead, a released one as alive",
    ),
    Mutant(
        "slot-closed-descriptor-owner-dead",
        CORE + "slot.c",
        "    return holder_running(seg, slot)\n        &&",
        "    return false && holder_running(seg, slot)\n        &&",
        (T + "multiprocess/test_closed_descriptors.py",),
        "a live process that closed its descriptors is judged dead: its locks get a second owner",
    ),
    # Survives, and is equivalent in every supported use.  The OFD probe goes
    # through sg_fd, a description other than sg_lock_fd, which holds the
    # slot lock (a fork child opens its own), so it sees this process's own
    # lock as held; the shortcut only saves a call.  The two differ only if
    # the process closes sg_lock_fd and keeps sg_fd (issue 9, defect 2: a
    # descriptor the user must not close), and then the process's next probe
    # finds the descriptor gone and re-opens it (slot.c) either way.
    Mutant(
        "slot-own-token-dead",
        CORE + "slot.c",
        "    if (hc_slot_self(seg, &mine) == HC_OK && mine == token)\n        return true;",
        "",
        (T + "multiprocess/test_compute_herd.py::test_threads_of_one_process_compute_a_missing_key_once",
         T + "unit/test_threads.py"),
        "a process's own slot lock, which its OFD probe cannot see, makes it look dead to itself",
    ),
    # -- alloc.c ------------------------------------------------------------------------
    Mutant(
        "alloc-exact-fit-missed",
        CORE + "alloc.c",
        "        if (run >= n) {\n            *unit = start;",
        "        if (run > n) {\n            *unit = start;",
        ("c:test_table", T + "unit/test_cache_eviction.py"),
        "a free run exactly as long as the request is passed over",
    ),
    Mutant(
        "alloc-free-keeps-count",
        CORE + "alloc.c",
        "    av->av_arena->ar_used_units -= n;\n",
        "",
        ("c:test_table", T + "unit/test_cache_eviction.py"),
        "a free leaves the arena's used count as it was",
    ),
    # -- the binding (py_*.c) -----------------------------------------------------------
    Mutant(
        "binding-version-as-corrupt",
        CORE + "py_errors.c",
        '    [HC_VERSION_MISMATCH] = {"LayoutMismatch",',
        '    [HC_VERSION_MISMATCH] = {"CorruptSegment",',
        (T + "unit/test_corrupt_segment.py::test_each_kind_of_damage_raises_its_own_error", T + "unit/test_attach_checks.py"),
        "another layout version raises CorruptSegment, whose fix (rm) loses a good segment",
    ),
    Mutant(
        "binding-expiry-overflows",
        CORE + "py_args.c",
        "    *expires = ns > HC_FOREVER - now ? HC_FOREVER : now + ns;",
        "    *expires = now + ns;",
        (T + "unit/test_cache_contract.py",),
        "a ttl near 'forever' wraps round to an expiry in the past",
    ),
    Mutant(
        "binding-delete-absent-true",
        CORE + "py_cache.c",
        "    if (st == HC_NOT_FOUND)\n        Py_RETURN_FALSE;\n    if (st != HC_OK)\n        return hcpy_raise_status(\"delete\", st);",
        "    if (st == HC_NOT_FOUND)\n        Py_RETURN_TRUE;\n    if (st != HC_OK)\n        return hcpy_raise_status(\"delete\", st);",
        (T + "unit/test_cache_contract.py",),
        "delete() of an absent key says it was there",
    ),
    Mutant(
        "binding-queue-timeout-not-empty",
        CORE + "py_queue.c",
        "    case HC_WOULD_BLOCK:\n    case HC_TIMEOUT:\n",
        "    case HC_WOULD_BLOCK:\n",
        (T + "unit/test_queue.py",),
        "get(timeout=) raises HerdcacheTimeout instead of queue.Empty",
    ),
    # -- compute.py ---------------------------------------------------------------------
    Mutant(
        "compute-error-not-shared",
        PY + "compute.py",
        "            self.cache._flight_abort(self.where, round_, _encode_error(exc), self.options.negative_ttl)",
        "            self.cache._flight_abort(self.where, round_)",
        (T + "multiprocess/test_compute_errors.py",),
        "a computation's exception reaches only its caller; the waiters compute again",
    ),
    Mutant(
        "compute-never-disowned",
        PY + "compute.py",
        "    finally:\n        flight.disown(round_)\n    return value\n\n\nasync def",
        "    finally:\n        pass\n    return value\n\n\nasync def",
        (T + "unit/test_compute_one_process.py",),
        "a finished computation still counts as running in its thread",
    ),
    Mutant(
        "compute-wait-timeout-ignored",
        PY + "compute.py",
        "        if self.deadline is not None and time.monotonic() >= self.deadline:",
        "        if self.deadline is not None and time.monotonic() >= self.deadline + 3600:",
        (T + "multiprocess/test_compute_owner_death.py",),
        "wait_timeout= is never enforced",
    ),
    Mutant(
        "compute-xfetch-inverted",
        PY + "compute.py",
        "        return delta * self.options.early_refresh * -math.log(1.0 - random.random()) >= ttl_left",
        "        return delta * self.options.early_refresh * -math.log(1.0 - random.random()) < ttl_left",
        (T + "multiprocess/test_compute_freshness.py",),
        "early refresh fires far from expiry and not near it",
    ),
    Mutant(
        "compute-waiter-takes-expired",
        PY + "compute.py",
        "        found = self.cache._stored(self.where, self.raw)\n"
        "        if found is None or found[1] != self.cache._tag:\n            return None\n"
        "        data, _fmt, ttl_left, _csn, delta_ms = found\n",
        "        found = self.cache._lookup(self.where)\n"
        "        if found is None or found[1] != self.cache._tag:\n            return None\n"
        "        data, _fmt, ttl_left, _stale, _csn, delta_ms = found\n",
        (T + "multiprocess/test_compute_herd.py", T + "multiprocess/test_compute_freshness.py"),
        "_Flight._lookup reads the raw lookup and checks the format only: a caller or woken waiter returns an expired value",
    ),
    Mutant(
        "compute-flights-kept-at-exit",
        PY + "compute.py",
        "atexit.register(_release_owned_flights)\n",
        "",
        (T + "multiprocess/test_compute_owner_death.py",),
        "a process that exits mid-computation leaves its waiters to the lease",
    ),
    # -- cache.py -----------------------------------------------------------------------
    Mutant(
        "cache-keys-as-bytes",
        PY + "cache.py",
        '                result.append(raw.decode("utf-8"))',
        "                result.append(raw)",
        (T + "unit/test_cache_contract.py",),
        "keys() and iteration give str keys back as bytes",
    ),
    Mutant(
        "cache-incr-bool",
        PY + "cache.py",
        "            if isinstance(value, bool) or not isinstance(value, (int, float)):",
        "            if not isinstance(value, (int, float)):",
        (T + "unit/test_cache_contract.py",),
        "incr() of True gives 2",
    ),
    Mutant(
        "cache-incr-drops-ttl",
        PY + "cache.py",
        "            if self._encode_and_store(key, new, FOREVER, _core.SET_SWAP, csn):",
        "            if self._encode_and_store(key, new, None, _core.SET_CAS, csn):",
        (T + "unit/test_cache_contract.py",),
        "incr() stores by compare-and-set, not swap: the key's ttl resets to the default",
    ),
    Mutant(
        "cache-ttl-of-expired",
        PY + "cache.py",
        "        if found is None or (found[2] is not None and found[2] <= 0):\n            return None\n"
        "        data, fmt, remaining, _stale, csn, delta_ms = found",
        "        if found is None:\n            return None\n"
        "        data, fmt, remaining, _stale, csn, delta_ms = found",
        (T + "unit/test_cache_contract.py",),
        "ttl() of an expired key returns a negative number instead of raising KeyError "
        "(the one absent-or-expired test, Cache._stored: gets and incr see it too)",
    ),
    # -- memoize.py ---------------------------------------------------------------------
    Mutant(
        "memoize-defaults-not-applied",
        PY + "memoize.py",
        "        bound.apply_defaults()\n",
        "",
        (T + "unit/test_memoize.py",),
        "f(1) and f(1, b=<its default>) are two cache keys",
    ),
    Mutant(
        "memoize-self-in-key",
        PY + "memoize.py",
        "        if self.skips_first:\n            items[0] = (items[0][0], _instance_part(items[0][1]))",
        "        if False:\n            items[0] = (items[0][0], _instance_part(items[0][1]))",
        (T + "unit/test_memoize.py",),
        "a method's key includes self",
    ),
    Mutant(
        "memoize-hits-counted-as-misses",
        PY + "memoize.py",
        '                counts["misses" if computed else "hits"] += 1',
        '                counts["hits" if computed else "misses"] += 1',
        (T + "unit/test_memoize.py",),
        "cache_info() swaps hits and misses",
    ),
    # -- serializers.py -----------------------------------------------------------------
    Mutant(
        "serializers-msgpack-raw-strings",
        PY + "serializers.py",
        "            return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=self._ext_hook)",
        "            return msgpack.unpackb(data, raw=True, strict_map_key=False, ext_hook=self._ext_hook)",
        (T + "unit/test_cache_values.py",),
        "strings come back as bytes",
    ),
    Mutant(
        "serializers-raw-accepts-str",
        PY + "serializers.py",
        "        if isinstance(obj, (bytes, bytearray, memoryview)):\n            return bytes(obj)",
        "        if isinstance(obj, (bytes, bytearray, memoryview, str)):\n            return bytes(obj)",
        (T + "unit/test_cache_values.py",),
        "the raw serializer takes a str and fails with a bare TypeError",
    ),
    Mutant(
        "serializers-custom-unchecked",
        PY + "serializers.py",
        "        if not isinstance(data, (bytes, bytearray, memoryview)):\n            raise SerializationError(",
        "        if False:\n            raise SerializationError(",
        (T + "unit/test_cache_values.py",),
        "a custom serializer's dumps() may return something that is not bytes",
    ),
    # -- queue.py -----------------------------------------------------------------------
    Mutant(
        "queue-anonymous-pickles",
        PY + "queue.py",
        "        if self._segment.name is None:\n            raise TypeError(",
        "        if False:\n            raise TypeError(",
        (T + "unit/test_queue.py",),
        "an anonymous queue pickles to a name that nothing can attach",
    ),
]
