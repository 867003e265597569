/*
 * test_commit.c - snapshots and atomic batches without Python (commit.h):
 * repeatable reads, tombstones, retained versions freed when no snapshot
 * needs them, SnapshotTooOld by age and by memory, a dead process's
 * horizon that stops pinning, batches all-or-nothing (a failed one undone
 * without costing open snapshots), batches counted in the memory share,
 * and a bank of accounts moved by batch-writing threads while reader
 * threads check the sum through snapshots (the TSan build runs it with
 * real threads).
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "commit.h"
#include "harness.h"
#include "segment.h"
#include "table.h"

#define WAIT_NS (UINT64_C(10) * HC_NS_PER_SEC)

static hc_segment *seg;

static hc_write
write_of(hc_cache *c, const char *key, const void *value, uint32_t len)
{
    return test_write(c, key, value, len, HC_FOREVER);
}

static hc_write
delete_of(hc_cache *c, const char *key)
{
    hc_write wr = write_of(c, key, "", 0);

    wr.wr_format = HC_FORMAT_TOMBSTONE;
    return wr;
}

static uint64_t
put(hc_cache *c, const char *key, int64_t v)
{
    hc_write wr = write_of(c, key, &v, sizeof(v));
    uint64_t csn;

    CHECK_ST(hc_cache_set(c, &wr, &csn), HC_OK);
    return csn;
}

/*
 * The value of key as of horizon, under the stripe lock (TSan-clean);
 * false if absent there (a tombstone, an internal format, nothing).
 */
static bool
get_at(hc_cache *c, const char *key, uint64_t horizon, int64_t *v)
{
    uint8_t *copy = NULL;
    hc_read rd;
    hc_status st = hc_cache_read_locked_at(c, key, (uint32_t) strlen(key),
                                           hc_cache_hash(c, key, strlen(key)),
                                           hc_expiry_now_ns(), horizon, &rd,
                                           &copy);
    bool found = st == HC_OK && rd.rd_format < HC_FORMAT_INTERNAL
        && !rd.rd_expired && rd.rd_value_len == sizeof(*v);

    CHECK(st == HC_OK || st == HC_NOT_FOUND);
    if (found)
        memcpy(v, copy, sizeof(*v));
    free(copy);
    return found;
}

/* The lock-free read of key at horizon (validated, retried). */
static bool
get_lockfree_at(hc_cache *c, const char *key, uint64_t horizon, int64_t *v)
{
    uint64_t hash = hc_cache_hash(c, key, strlen(key));
    int attempt;

    for (attempt = 0; attempt < HC_READ_ATTEMPTS; attempt++) {
        hc_read rd;
        int64_t got = 0;
        hc_status st = hc_cache_read_begin_at(c, key, (uint32_t) strlen(key),
                                              hash, hc_expiry_now_ns(),
                                              horizon, &rd);

        if (st == HC_OK && rd.rd_value_len == sizeof(got))
            memcpy(&got, rd.rd_value, sizeof(got));
        if (hc_cache_read_valid(&rd) && st != HC_CORRUPT) {
            *v = got;
            return st == HC_OK && rd.rd_format < HC_FORMAT_INTERNAL;
        }
    }
    return get_at(c, key, horizon, v);
}

static void
test_repeatable_reads(void)
{
    hc_cache *c = test_cache(&seg, 4 << 20, true);
    uint64_t s, deadline, before;
    int64_t v;

    put(c, "a", 1);
    put(c, "b", 10);
    CHECK_ST(hc_snapshot_open(c, 0, &s, &deadline), HC_OK);
    CHECK(s == hc_cache_csn(c));
    put(c, "a", 2);
    CHECK(hc_cache_delete(c, "b", 1, hc_cache_hash(c, "b", 1)) == HC_OK);
    put(c, "c", 5);
    /* The snapshot reads the old world, plain reads the new one. */
    CHECK(get_lockfree_at(c, "a", s, &v) && v == 1);
    CHECK(get_lockfree_at(c, "b", s, &v) && v == 10);
    CHECK(!get_lockfree_at(c, "c", s, &v));
    CHECK(get_lockfree_at(c, "a", UINT64_MAX, &v) && v == 2);
    CHECK(!get_lockfree_at(c, "b", UINT64_MAX, &v));
    CHECK(get_at(c, "a", s, &v) && v == 1);
    CHECK_ST(hc_snapshot_check(c, s, deadline), HC_OK);
    CHECK(hc_cache_retained_bytes(c) > 0);
    CHECK_ST(hc_cache_check(c), HC_OK);
    /* Closed: the next writes of those keys free what was kept. */
    hc_snapshot_close(c, s);
    before = hc_cache_retained_bytes(c);
    put(c, "a", 3);
    put(c, "b", 11);
    CHECK(hc_cache_retained_bytes(c) < before);
    CHECK(hc_cache_retained_bytes(c) == 0);
    CHECK(get_at(c, "b", UINT64_MAX, &v) && v == 11);
    CHECK_ST(hc_cache_check(c), HC_OK);
    hc_cache_close(c);
    CHECK_ST(hc_segment_close(seg), HC_OK);
}

static void
test_batch(void)
{
    hc_cache *c = test_cache(&seg, 4 << 20, true);
    char keys[40][16];
    hc_write ops[40];
    int64_t vals[40], v;
    uint8_t existed[40];
    uint64_t s, deadline, csn;
    int i;

    for (i = 0; i < 40; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k%d", i);
        vals[i] = i;
        ops[i] = write_of(c, keys[i], &vals[i], sizeof(vals[i]));
    }
    put(c, "k0", -1);
    CHECK_ST(hc_snapshot_open(c, 0, &s, &deadline), HC_OK);
    CHECK_ST(hc_cache_batch(c, ops, 40, NULL, &csn), HC_OK);
    CHECK(csn > s);
    for (i = 0; i < 40; i++) {
        CHECK(get_lockfree_at(c, keys[i], UINT64_MAX, &v) && v == i);
        CHECK(get_at(c, keys[i], csn, &v) && v == i);
        /* before the batch: only k0, with its old value */
        CHECK(get_lockfree_at(c, keys[i], s, &v) == (i == 0));
    }
    CHECK(get_at(c, "k0", s, &v) && v == -1);
    hc_snapshot_close(c, s);
    /* An atomic delete says which keys held a value. */
    ops[0] = delete_of(c, "k3");
    ops[1] = delete_of(c, "absent");
    ops[2] = delete_of(c, "k5");
    CHECK_ST(hc_cache_batch(c, ops, 3, existed, &csn), HC_OK);
    CHECK(existed[0] && !existed[1] && existed[2]);
    CHECK(!get_at(c, "k3", UINT64_MAX, &v) && !get_at(c, "k5", UINT64_MAX,
                                                      &v));
    CHECK(get_at(c, "k4", UINT64_MAX, &v) && v == 4);
    CHECK(hc_cache_retained_bytes(c) == 0);
    /* A bad op refuses the whole batch before anything is written. */
    ops[0] = write_of(c, "k4", &vals[9], sizeof(vals[9]));
    ops[1] = write_of(c, "", &vals[9], sizeof(vals[9]));
    CHECK_ST(hc_cache_batch(c, ops, 2, NULL, &csn), HC_TOO_LARGE);
    CHECK(get_at(c, "k4", UINT64_MAX, &v) && v == 4);
    CHECK_ST(hc_cache_check(c), HC_OK);
    hc_cache_close(c);
    CHECK_ST(hc_segment_close(seg), HC_OK);
}

/* Write the keys m0..m3 once: four sets, or one batch of them. */
static void
rewrite_m_keys(hc_cache *c, const char *value, uint32_t len, bool batch)
{
    char keys[4][16];
    hc_write ops[4];
    uint64_t csn;
    int k;

    for (k = 0; k < 4; k++) {
        snprintf(keys[k], sizeof(keys[k]), "m%d", k);
        ops[k] = write_of(c, keys[k], value, len);
        if (!batch)
            CHECK_ST(hc_cache_set(c, &ops[k], &csn), HC_OK);
    }
    if (batch)
        CHECK_ST(hc_cache_batch(c, ops, 4, NULL, &csn), HC_OK);
}

/*
 * By memory: rewriting keys under an open snapshot, by sets or by atomic
 * batches alike, keeps every version until they would pass their share
 * (never more than that and a batch); then the snapshot is too old for
 * memory (not by eviction), and writes no longer keep versions for it.
 */
static void
too_old_by_memory(bool batch)
{
    uint64_t cap = (uint64_t) 2 * hc_cache_min_size(HC_EVICTION_SIEVE);
    hc_cache *c = test_cache(&seg, cap, true);
    static char big[8192];
    uint64_t s, deadline, s2, d2;
    int i;

    CHECK_ST(hc_snapshot_open(c, 0, &s, &deadline), HC_OK);
    for (i = 0; i < 500 && hc_snapshot_check(c, s, deadline) == HC_OK;
         i++) {
        rewrite_m_keys(c, big, sizeof(big), batch);
        CHECK(hc_cache_retained_bytes(c) <= cap / HC_RETAIN_SHARE
              + (batch ? 4 : 2) * (sizeof(big) + 256));
    }
    CHECK_ST(hc_snapshot_check(c, s, deadline), HC_TOO_OLD);
    CHECK(strstr(hc_last_detail(), "1/4 of the cache's memory") != NULL);
    /* A snapshot taken now is fine. */
    CHECK_ST(hc_snapshot_open(c, 0, &s2, &d2), HC_OK);
    CHECK_ST(hc_snapshot_check(c, s2, d2), HC_OK);
    hc_snapshot_close(c, s2);
    hc_snapshot_close(c, s);
    rewrite_m_keys(c, big, sizeof(big), batch);
    rewrite_m_keys(c, big, sizeof(big), batch);
    CHECK(hc_cache_retained_bytes(c) == 0);
    CHECK_ST(hc_cache_check(c), HC_OK);
    hc_cache_close(c);
    CHECK_ST(hc_segment_close(seg), HC_OK);
}

static void
test_too_old(void)
{
    hc_cache *c = test_cache(&seg, 4 << 20, true);
    uint64_t s, deadline;

    /* By age: a deadline already past. */
    CHECK_ST(hc_snapshot_open(c, 1, &s, &deadline), HC_OK);
    while (hc_now_ns() <= deadline)
        ;
    CHECK_ST(hc_snapshot_check(c, s, deadline), HC_TOO_OLD);
    CHECK(strstr(hc_last_detail(), "max_snapshot_age") != NULL);
    hc_snapshot_close(c, s);
    hc_cache_close(c);
    CHECK_ST(hc_segment_close(seg), HC_OK);
    too_old_by_memory(false);
    too_old_by_memory(true);
}

/*
 * A batch that fails midway (no room, eviction off) changes nothing, and
 * costs no open snapshot anything: one that kept an old version in the
 * very stripe the batch wrote still reads it, and is not too old.
 */
static void
test_failed_batch_spares_snapshots(void)
{
    hc_cache *c = test_cache(&seg, 4 << 20, false);
    static char big[64 << 10];
    char keys[200][16], x[16];
    hc_write ops[200];
    uint64_t s, deadline, csn;
    int64_t v;
    int i, k;

    k = test_key_in_stripe(c, 0, 0, x, sizeof(x));
    put(c, x, 1);
    for (i = 0; i < 200; i++) {
        k = test_key_in_stripe(c, 0, k + 1, keys[i], sizeof(keys[i]));
        ops[i] = write_of(c, keys[i], big, sizeof(big));
    }
    put(c, keys[0], -1);                 /* a value the batch replaces */
    CHECK_ST(hc_snapshot_open(c, 0, &s, &deadline), HC_OK);
    put(c, x, 2);                        /* x = 1 stays for the snapshot */
    CHECK_ST(hc_cache_batch(c, ops, 200, NULL, &csn), HC_NO_SPACE);
    CHECK_ST(hc_snapshot_check(c, s, deadline), HC_OK);
    CHECK(get_lockfree_at(c, x, s, &v) && v == 1);
    CHECK(get_lockfree_at(c, keys[0], s, &v) && v == -1);
    CHECK(get_lockfree_at(c, x, UINT64_MAX, &v) && v == 2);
    CHECK(get_lockfree_at(c, keys[0], UINT64_MAX, &v) && v == -1);
    for (i = 1; i < 200; i++)
        CHECK(!get_at(c, keys[i], UINT64_MAX, &v));
    CHECK_ST(hc_cache_check(c), HC_OK);
    hc_snapshot_close(c, s);
    /* The next write of x frees its old version: the books balance. */
    put(c, x, 3);
    CHECK(hc_cache_retained_bytes(c) == 0);
    CHECK_ST(hc_cache_check(c), HC_OK);
    hc_cache_close(c);
    CHECK_ST(hc_segment_close(seg), HC_OK);
}

/* A process killed inside a snapshot stops pinning versions. */
static void
test_dead_horizon(void)
{
    hc_cache *c = test_cache(&seg, 4 << 20, true);
    int ready[2];
    uint64_t deadline;
    pid_t pid;
    char byte;

    put(c, "x", 1);
    CHECK(pipe(ready) == 0);
    pid = test_fork();
    if (pid == 0) {
        uint64_t s, d;

        if (hc_snapshot_open(c, 0, &s, &d) != HC_OK)
            _exit(1);
        if (write(ready[1], "r", 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    CHECK(read(ready[0], &byte, 1) == 1);
    put(c, "x", 2);
    CHECK(hc_cache_retained_bytes(c) > 0);      /* the child pins it */
    CHECK(kill(pid, SIGKILL) == 0);
    CHECK(waitpid(pid, NULL, 0) == pid);
    /* The next writes see the horizon's process gone (a thread trusts a
     * live answer for 100 ms, so this may take a few writes). */
    deadline = hc_deadline_after(WAIT_NS);
    while (hc_cache_retained_bytes(c) != 0 && hc_now_ns() < deadline)
        put(c, "x", 3);
    CHECK(hc_cache_retained_bytes(c) == 0);
    close(ready[0]);
    close(ready[1]);
    hc_cache_close(c);
    CHECK_ST(hc_segment_close(seg), HC_OK);
}

/* ---------------------------------------------------------------------- */
/* The bank: batch writers against snapshot readers, in threads           */
/* ---------------------------------------------------------------------- */

#define ACCOUNTS 16
#define START 100
#define ROUNDS 400

typedef struct bank {
    hc_cache *c;
    char names[ACCOUNTS][16];
    unsigned seed;
    _Atomic int too_old, sums;
} bank;

static void *
bank_writer(void *arg)
{
    bank *b = arg;
    unsigned seed = (unsigned) (uintptr_t) pthread_self();
    int r;

    for (r = 0; r < ROUNDS; r++) {
        int from = (int) (rand_r(&seed) % ACCOUNTS);
        int to = (int) ((from + 1 + rand_r(&seed) % (ACCOUNTS - 1))
                        % ACCOUNTS);
        int64_t a, bal_to, amount = rand_r(&seed) % 7;
        hc_write ops[2];
        uint64_t csn, s, d;

        /* read both in a snapshot, write both at once: the sum holds
         * only if the batch is atomic (a lost update changes no sum
         * either: each writer thread moves between its own reads) */
        CHECK_ST(hc_snapshot_open(b->c, 0, &s, &d), HC_OK);
        CHECK(get_at(b->c, b->names[from], s, &a));
        CHECK(get_at(b->c, b->names[to], s, &bal_to));
        hc_snapshot_close(b->c, s);
        a -= amount;
        bal_to += amount;
        ops[0] = write_of(b->c, b->names[from], &a, sizeof(a));
        ops[1] = write_of(b->c, b->names[to], &bal_to, sizeof(bal_to));
        CHECK_ST(hc_cache_batch(b->c, ops, 2, NULL, &csn), HC_OK);
    }
    return NULL;
}

static void *
bank_reader(void *arg)
{
    bank *b = arg;
    int r, i;

    for (r = 0; r < ROUNDS; r++) {
        uint64_t s, d;
        int64_t sum = 0, v;

        CHECK_ST(hc_snapshot_open(b->c, 0, &s, &d), HC_OK);
        for (i = 0; i < ACCOUNTS; i++) {
            CHECK(get_at(b->c, b->names[i], s, &v));
            sum += v;
        }
        if (hc_snapshot_check(b->c, s, d) == HC_TOO_OLD)
            b->too_old++;
        else {
            b->sums++;
            /* With one writer the sum is exact (see the writer). */
            CHECK(sum == ACCOUNTS * START);
        }
        hc_snapshot_close(b->c, s);
    }
    return NULL;
}

static void
test_bank_threads(void)
{
    static bank b;
    pthread_t w, r[2];
    int i;
    int64_t v;

    b.c = test_cache(&seg, 4 << 20, true);
    for (i = 0; i < ACCOUNTS; i++) {
        snprintf(b.names[i], sizeof(b.names[i]), "acct%d", i);
        put(b.c, b.names[i], START);
    }
    CHECK(pthread_create(&w, NULL, bank_writer, &b) == 0);
    for (i = 0; i < 2; i++)
        CHECK(pthread_create(&r[i], NULL, bank_reader, &b) == 0);
    CHECK(pthread_join(w, NULL) == 0);
    for (i = 0; i < 2; i++)
        CHECK(pthread_join(r[i], NULL) == 0);
    CHECK(b.sums > 0);
    {
        int64_t sum = 0;

        for (i = 0; i < ACCOUNTS; i++) {
            CHECK(get_at(b.c, b.names[i], UINT64_MAX, &v));
            sum += v;
        }
        CHECK(sum == ACCOUNTS * START);
    }
    CHECK_ST(hc_cache_check(b.c), HC_OK);
    hc_cache_close(b.c);
    CHECK_ST(hc_segment_close(seg), HC_OK);
}

int
main(void)
{
    TEST(test_repeatable_reads);
    TEST(test_batch);
    TEST(test_too_old);
    TEST(test_failed_batch_spares_snapshots);
    TEST(test_dead_horizon);
    TEST(test_bank_threads);
    printf("test_commit: all passed\n");
    return 0;
}
