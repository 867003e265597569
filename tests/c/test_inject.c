/*
 * test_inject.c - the injection walk (RELIABILITY.md, scenarios 1, 2, 4
 * and 10): for every fault-injection point compiled into the core (the
 * Makefile greps them out of the sources into inject_points.h), a forked
 * child arms the point, runs a workload that passes through every locked
 * section of the core (cache set/delete/touch/evict/sweep/rebuild, flight
 * begin/publish/abort/takeover, queue put/get, registry allocation, lock
 * and condition) and is SIGKILLed there.  The parent, as the next process
 * to come, then proves:
 *
 *   - the child really died at the point (a point no workload reaches
 *     fails the walk: every point stays covered);
 *   - every lock the child could hold is taken back (lock, registry,
 *     the cache's init lock and every stripe through an open, which
 *     resets a header the child left damaged, and check(), both queues),
 *     and how long that took;
 *   - check() finds every invariant of the table;
 *   - every key reads as absent or as a whole value (self-checksummed):
 *     never torn;
 *   - the flight key never makes the parent wait for the dead owner;
 *   - the queues deliver whole messages in order, without duplicates,
 *     and keep working.
 *
 * `make inject` builds it with -DHC_INJECTION=1 under ASan and UBSan.
 * INJECT_NTH=a,b,... kills at those hits of each point (default 1,3;
 * a hit the workload never reaches for n > 1 is skipped); the long form
 * is INJECT_NTH=1,2,3,5,8,13,21,34 or more.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "condvar.h"
#include "flight.h"
#include "futex.h"
#include "harness.h"
#include "inject.h"
#include "kernel.h"
#include "lock.h"
#include "queue.h"
#include "registry.h"
#include "segment.h"
#include "table.h"
#include "commit.h"

static const char *const points[] = {
#include "inject_points.h"
};
#define NPOINTS (sizeof(points) / sizeof(points[0]))

#define CACHE_SIZE (UINT64_C(2) << 20)
#define BATCH_CACHE_SIZE (UINT64_C(16) << 20)   /* 4 stripes */
#define NPAIRS 4                /* keys every batch writes together */
#define RING_SIZE 4096
#define NKEYS 64
#define WALK_DEADLINE_NS (UINT64_C(5) * HC_NS_PER_SEC)
#define PARENT_SEQ UINT32_C(4000000000)
#define NOT_REACHED 3           /* the child's exit code: point never hit */

/* The policy of the walk's cache: S3-FIFO for evict.c's own points and,
 * beside SIEVE, for the points its queue operations pass (walk_twice). */
static hc_eviction walk_eviction = HC_EVICTION_SIEVE;

typedef struct world {
    hc_segment *seg;
    hc_cache *cache;
    hc_cache *batches;          /* atomic batches under snapshots */
    hc_queue_handle *queue;     /* many producers and consumers */
    hc_queue_handle *single;    /* single producer, single consumer */
    hc_lock *lock;
    hc_cond *cond;
    uint64_t cache_offset;
    uint32_t next_seq;          /* of the message the parent sent */
} world;

/* ---------------------------------------------------------------------- */
/* Self-checking values and messages                                      */
/* ---------------------------------------------------------------------- */

static uint64_t
fnv(const void *data, size_t len, uint64_t h)
{
    const uint8_t *p = data;

    while (len--)
        h = (h ^ *p++) * UINT64_C(0x100000001b3);
    return h;
}

/* A value for key: version, filler of a length that varies, checksum. */
static uint32_t
make_value(const char *key, uint32_t version, uint8_t *buf)
{
    uint32_t len = 24 + (version * 97 + (uint32_t) strlen(key) * 31) % 1500;
    uint64_t sum;

    memcpy(buf, &version, 4);
    memset(buf + 4, (int) (version & 0xFF), len - 12);
    sum = fnv(key, strlen(key), fnv(buf, len - 8, UINT64_C(0xcbf29ce484222325)));
    memcpy(buf + len - 8, &sum, 8);
    return len;
}

static bool
value_whole(const char *key, const uint8_t *buf, uint32_t len)
{
    uint64_t sum;

    if (len < 12)
        return false;
    memcpy(&sum, buf + len - 8, 8);
    return sum == fnv(key, strlen(key),
                      fnv(buf, len - 8, UINT64_C(0xcbf29ce484222325)));
}

static void
key_name(char *buf, int i)
{
    snprintf(buf, 32, "key-%d", i);
}

static hc_write
write_of(world *wd, const char *key, const void *value, uint32_t len,
         uint64_t expires)
{
    return test_write(wd->cache, key, value, len, expires);
}

static hc_status
put(world *wd, const char *key, uint32_t version, uint64_t expires)
{
    static uint8_t value[2048];
    uint32_t len = make_value(key, version, value);
    hc_write wr = write_of(wd, key, value, len, expires);
    uint64_t csn;

    return hc_cache_set(wd->cache, &wr, &csn);
}

/* A message: its sequence number, then its checksum. */
static hc_status
send_seq(hc_queue_handle *q, uint32_t seq)
{
    uint64_t msg[2] = {seq, fnv(&seq, 4, UINT64_C(0xcbf29ce484222325))};

    return hc_queue_send(q, msg, sizeof(msg),
                         hc_deadline_after(WALK_DEADLINE_NS));
}

/* ---------------------------------------------------------------------- */
/* The world and the child's workload                                     */
/* ---------------------------------------------------------------------- */

static void
open_queue(world *wd, const char *name, uint32_t flags, hc_queue_handle **q)
{
    uint64_t size = hc_queue_struct_size(RING_SIZE);
    hc_struct_info info;
    bool found;

    CHECK_ST(hc_registry_find_or_alloc(wd->seg, name, strlen(name), size,
                                       HC_KIND_QUEUE, &info, &found), HC_OK);
    CHECK_ST(hc_queue_open(wd->seg, info.offset, size, flags, q), HC_OK);
}

static void
world_open(world *wd)
{
    hc_struct_info info;
    uint8_t *sync;
    bool found;
    int i;

    memset(wd, 0, sizeof(*wd));
    CHECK_ST(hc_segment_anonymous(CACHE_SIZE + BATCH_CACHE_SIZE + (2 << 20),
                                  HC_HUGE_OFF,
                                  &wd->seg), HC_OK);
    CHECK_ST(hc_registry_find_or_alloc(wd->seg, "cache", 5, CACHE_SIZE,
                                       HC_KIND_CACHE, &info, &found), HC_OK);
    CHECK_ST(hc_cache_open(wd->seg, info.offset, CACHE_SIZE,
                           HC_DEFAULT_MAX_VALUE, true, walk_eviction,
                           &wd->cache), HC_OK);
    wd->cache_offset = info.offset;
    CHECK_ST(hc_registry_find_or_alloc(wd->seg, "batches", 7,
                                       BATCH_CACHE_SIZE, HC_KIND_CACHE,
                                       &info, &found), HC_OK);
    CHECK_ST(hc_cache_open(wd->seg, info.offset, BATCH_CACHE_SIZE,
                           HC_DEFAULT_MAX_VALUE, true, walk_eviction,
                           &wd->batches), HC_OK);
    open_queue(wd, "queue", 0, &wd->queue);
    open_queue(wd, "single", HC_QUEUE_SINGLE_PRODUCER
               | HC_QUEUE_SINGLE_CONSUMER, &wd->single);
    sync = test_alloc(wd->seg, "sync", HC_KIND_RAW);
    wd->lock = (hc_lock *) sync;
    wd->cond = (hc_cond *) (sync + sizeof(hc_lock));
    for (i = 0; i < NKEYS; i++) {
        char key[32];

        key_name(key, i);
        CHECK_ST(put(wd, key, 1, HC_FOREVER), HC_OK);
    }
}

static void
world_close(world *wd)
{
    hc_queue_detach(wd->queue);
    hc_queue_detach(wd->single);
    hc_queue_free(wd->queue);
    hc_queue_free(wd->single);
    hc_cache_close(wd->cache);
    hc_cache_close(wd->batches);
    CHECK_ST(hc_segment_close(wd->seg), HC_OK);
}

static hc_flight_request
flight_request(world *wd, const char *key, uint64_t lease_ns)
{
    hc_flight_request rq;

    memset(&rq, 0, sizeof(rq));
    rq.fq_key = key;
    rq.fq_key_len = (uint32_t) strlen(key);
    rq.fq_hash = hc_cache_hash(wd->cache, key, strlen(key));
    rq.fq_lease_ns = lease_ns;
    return rq;
}

/* Begin a flight; if ours, end it by publish (how 0), abort with an
 * error (1), abort without one (2), or leave it running (3). */
static void
fly(world *wd, const char *key, uint64_t lease_ns, int how)
{
    hc_flight_request rq = flight_request(wd, key, lease_ns);
    static uint8_t value[2048];
    hc_flight_result res;

    if (hc_flight_begin(wd->cache, &rq, &res) != HC_OK)
        return;
    free(res.fr_data);
    if (res.fr_outcome != HC_FLIGHT_COMPUTE || how == 3)
        return;
    if (how == 0) {
        uint32_t len = make_value(key, 7, value);
        hc_write wr = write_of(wd, key, value, len, HC_FOREVER);

        (void) hc_flight_publish(wd->cache, &wr, res.fr_round);
    }
    else
        (void) hc_flight_abort(wd->cache, key, rq.fq_key_len, rq.fq_hash,
                               res.fr_round, how == 1 ? "boom" : NULL,
                               how == 1 ? 4 : 0, hc_now_ns());
}

/* Open the cache as a newcomer does (which resets a damaged header). */
static void
open_again(world *wd)
{
    hc_cache *again;

    CHECK_ST(hc_cache_open(wd->seg, wd->cache_offset, CACHE_SIZE,
                           HC_DEFAULT_MAX_VALUE, true, walk_eviction,
                           &again), HC_OK);
    hc_cache_close(again);
}

/*
 * A lock-free hit, as a get makes (it counts toward eviction), for S3-FIFO
 * walks only: it reaches promotion and reinsertion there, and SIEVE's
 * walks keep the workload whose queue tail the sweep points need.
 */
static void
hit(world *wd, const char *key)
{
    hc_read rd;

    if (walk_eviction != HC_EVICTION_S3FIFO)
        return;
    (void) hc_cache_read_begin(wd->cache, key, (uint32_t) strlen(key),
                               hc_cache_hash(wd->cache, key, strlen(key)),
                               hc_now_ns(), &rd);
}

static void
cache_workload(world *wd, uint32_t round)
{
    char key[32];
    uint64_t hash;
    int i;

    for (i = 0; i < NKEYS; i++) {
        key_name(key, i);
        (void) put(wd, key, 2 + round, i % 5 == 0 ? hc_now_ns() : HC_FOREVER);
    }
    /* Hits, twice: S3-FIFO promotes these keys to main (SIEVE spares
     * them). */
    for (i = 0; i < 2 * NKEYS; i++) {
        key_name(key, i % NKEYS);
        hit(wd, key);
    }
    for (i = 0; i < NKEYS; i += 3) {
        key_name(key, i);
        hash = hc_cache_hash(wd->cache, key, strlen(key));
        (void) hc_cache_touch(wd->cache, key, (uint32_t) strlen(key), hash,
                              HC_FOREVER);
        (void) hc_cache_delete(wd->cache, key, (uint32_t) strlen(key), hash);
    }
    /* Fill it past capacity: SIEVE victims, then a region for a big one. */
    for (i = 0; i < 3000; i++) {
        snprintf(key, sizeof(key), "fill-%u-%d", round, i);
        (void) put(wd, key, (uint32_t) i, HC_FOREVER);
        if (i % 3 == 0)
            hit(wd, key);       /* S3-FIFO reinserts these in main */
    }
    {
        static uint8_t big[200000];
        hc_write wr = write_of(wd, "big", big, sizeof(big), HC_FOREVER);
        uint64_t csn;

        (void) hc_cache_set(wd->cache, &wr, &csn);
    }
    fly(wd, "flight", HC_NS_PER_SEC, 0);
    fly(wd, "failing", HC_NS_PER_SEC, 1);
    fly(wd, "aborted", HC_NS_PER_SEC, 2);
    fly(wd, "overrun", 0, 3);       /* a lease that is over at once ... */
    fly(wd, "overrun", 0, 0);       /* ... is taken over by the next */
    hash = hc_cache_hash(wd->cache, "key-1", 5);
    if (hc_cache_lock_stripe(wd->cache, hash) == HC_OK) {
        hc_cache_rebuild_locked(wd->cache, hash);
        hc_cache_unlock_stripe(wd->cache, hash);
    }
    /* The poison/reset path: a damaged header, reset by the next open. */
    atomic_store(&wd->cache->ca_header->ch_magic, 0);
    open_again(wd);
}

/*
 * A batch that fails midway: the NPAIRS keys, then values of max_value
 * in pair-0's stripe until it has no room (the pairs' versions are the
 * batch's, which eviction spares).  The undo must leave the pairs whole.
 */
static void
failing_batch(hc_cache *c, hc_write *ops, uint64_t v)
{
    static char big[HC_DEFAULT_MAX_VALUE];
    char keys[8][16];
    uint32_t si = hc_table_stripe_of(c, ops[0].wr_hash);
    uint64_t csn;
    int k, i = 0;

    for (k = 0; k < NPAIRS; k++)
        ops[k] = test_write(c, ops[k].wr_key, &v, sizeof(v), HC_FOREVER);
    for (k = 0; k < 8; k++) {
        i = test_key_in_stripe(c, si, i, keys[k], sizeof(keys[k])) + 1;
        ops[NPAIRS + k] = test_write(c, keys[k], big, sizeof(big),
                                     HC_FOREVER);
    }
    CHECK_ST(hc_cache_batch(c, ops, NPAIRS + 8, NULL, &csn), HC_NO_SPACE);
}

/*
 * Batches that write (or delete) NPAIRS keys together, each under an
 * open snapshot so that the versions they supersede are kept: the parent
 * must find all of the keys with one version, or all absent.  One of
 * them fails midway for want of room and is undone.
 */
static void
batch_workload(world *wd, uint32_t round)
{
    hc_cache *c = wd->batches;
    char keys[NPAIRS][24];
    hc_write ops[NPAIRS + 8];
    uint64_t v, s, deadline, csn;
    int i, k;

    for (i = 0; i < 12; i++) {
        v = (uint64_t) round * 100 + (uint64_t) i + 1;
        for (k = 0; k < NPAIRS; k++) {
            snprintf(keys[k], sizeof(keys[k]), "pair-%d", k);
            ops[k] = test_write(c, keys[k], &v, sizeof(v), HC_FOREVER);
            if (i % 4 == 3)
                ops[k].wr_format = HC_FORMAT_TOMBSTONE;
        }
        (void) hc_snapshot_open(c, 0, &s, &deadline);
        if (i == 5)
            failing_batch(c, ops, v);
        (void) hc_cache_batch(c, ops, NPAIRS, NULL, &csn);
        hc_snapshot_close(c, s);
    }
}

static void
queue_workload(world *wd, uint32_t round)
{
    uint64_t msg[2];
    size_t len;
    int i;

    for (i = 0; i < 4; i++) {
        (void) send_seq(wd->queue, 1000000 * (round + 1) + (uint32_t) i);
        (void) send_seq(wd->single, 1000000 * (round + 1) + (uint32_t) i);
    }
    for (i = 0; i < 2; i++) {
        (void) hc_queue_recv(wd->queue, msg, sizeof(msg), &len,
                             hc_deadline_after(WALK_DEADLINE_NS));
        (void) hc_queue_recv(wd->single, msg, sizeof(msg), &len,
                             hc_deadline_after(WALK_DEADLINE_NS));
    }
    /* Leave the single sides to the parent: it takes them over if we die
     * (it must), and joins them anew if we detach here. */
    hc_queue_detach(wd->single);
}

/*
 * A named segment, made and removed by the child in each round, so that
 * it can die while creating one (segment.create.*); the parent must then
 * open the name at once (recover()).
 */
static char named_dir[64];
static hc_segment_options named_opts;
static pid_t named_owner;

static void
remove_named_dir(void)
{
    if (getpid() == named_owner) {
        (void) hc_segment_unlink_name("walk", &named_opts);
        rmdir(named_dir);
    }
}

static void
create_named(void)
{
    hc_segment *seg;
    bool created;

    if (hc_segment_open("walk", hc_segment_min_size(), &named_opts, &seg,
                        &created) == HC_OK) {
        (void) hc_segment_close(seg);
        (void) hc_segment_unlink_name("walk", &named_opts);
    }
}

static void
sync_workload(world *wd, uint32_t round)
{
    char name[32];
    hc_struct_info info;
    bool found;

    (void) hc_kernel_selftest();
    create_named();
    snprintf(name, sizeof(name), "child-%u-%u", (unsigned) getpid(), round);
    (void) hc_registry_find_or_alloc(wd->seg, name, strlen(name), 64,
                                     HC_KIND_RAW, &info, &found);
    if (hc_lock_acquire(wd->seg, wd->lock, hc_deadline_after(WALK_DEADLINE_NS))
        == HC_OK) {
        (void) hc_cond_wait(wd->seg, wd->cond, wd->lock,
                            hc_deadline_after(HC_NS_PER_MS));
        hc_cond_notify(wd->cond, -1);
        (void) hc_lock_release(wd->seg, wd->lock);
    }
}

/* Run the workload until the armed point kills us; else say so. */
static void
child(world *wd, const char *point, uint32_t nth)
{
    uint32_t round;

    hc_inject_arm(point, HC_INJECT_KILL, nth, 0);
    for (round = 0; round < 3; round++) {
        sync_workload(wd, round);
        queue_workload(wd, round);
        batch_workload(wd, round);
        cache_workload(wd, round);
    }
    _exit(NOT_REACHED);
}

/* ---------------------------------------------------------------------- */
/* The parent: recover, then check                                        */
/* ---------------------------------------------------------------------- */

/* Take every lock the dead child may have held; how long it took. */
static uint64_t
recover(world *wd)
{
    uint64_t start = hc_now_ns();
    uint64_t deadline = hc_deadline_after(WALK_DEADLINE_NS);
    hc_struct_info info;
    hc_status st;
    bool found;

    st = hc_lock_acquire(wd->seg, wd->lock, deadline);
    CHECK(st == HC_OK || st == HC_OWNER_DIED);
    CHECK_ST(hc_lock_release(wd->seg, wd->lock), HC_OK);
    CHECK_ST(hc_registry_find_or_alloc(wd->seg, "sync", 4, 64, HC_KIND_RAW,
                                       &info, &found), HC_OK);
    open_again(wd);     /* the next process to come opens the cache */
    CHECK_ST(hc_cache_check(wd->cache), HC_OK);
    /* The name of a segment the child was creating is free or whole. */
    {
        hc_segment *seg;
        bool created;

        CHECK_ST(hc_segment_open("walk", hc_segment_min_size(), &named_opts,
                                 &seg, &created), HC_OK);
        CHECK_ST(hc_segment_close(seg), HC_OK);
        CHECK_ST(hc_segment_unlink_name("walk", &named_opts), HC_OK);
    }
    /* Above every sequence number the child sends. */
    wd->next_seq = PARENT_SEQ;
    CHECK_ST(send_seq(wd->queue, wd->next_seq), HC_OK);
    CHECK_ST(send_seq(wd->single, wd->next_seq), HC_OK);
    return hc_now_ns() - start;
}

/*
 * Read key as the binding does (cache_lookup() in the binding): a few
 * lock-free attempts validated by the epoch, then under the stripe lock,
 * which takes the stripe over from a dead writer.  The value must be
 * whole.
 */
static void
read_key(world *wd, const char *key)
{
    static uint8_t copy[HC_DEFAULT_MAX_VALUE];
    uint32_t klen = (uint32_t) strlen(key), len = 0;
    uint64_t hash = hc_cache_hash(wd->cache, key, klen);
    hc_status st = HC_NOT_FOUND;
    hc_read rd;
    int attempt;

    for (attempt = 0; attempt < 8; attempt++) {
        st = hc_cache_read_begin(wd->cache, key, klen, hash, hc_now_ns(), &rd);
        if (st == HC_OK) {
            len = rd.rd_value_len < sizeof(copy) ? rd.rd_value_len : 0;
            memcpy(copy, rd.rd_value, len);
        }
        if (hc_cache_read_valid(&rd) && st != HC_CORRUPT)
            break;
    }
    if (attempt == 8) {
        CHECK_ST(hc_cache_lock_stripe(wd->cache, hash), HC_OK);
        st = hc_cache_read_begin(wd->cache, key, klen, hash, hc_now_ns(), &rd);
        if (st == HC_CORRUPT) {
            hc_cache_rebuild_locked(wd->cache, hash);
            st = hc_cache_read_begin(wd->cache, key, klen, hash, hc_now_ns(),
                                     &rd);
        }
        if (st == HC_OK) {
            len = rd.rd_value_len < sizeof(copy) ? rd.rd_value_len : 0;
            memcpy(copy, rd.rd_value, len);
        }
        hc_cache_unlock_stripe(wd->cache, hash);
    }
    CHECK(st == HC_OK || st == HC_NOT_FOUND);
    if (st == HC_OK && !value_whole(key, copy, len)) {
        fprintf(stderr, "torn value of %s (%u bytes)\n", key, len);
        exit(1);
    }
}

/* Read every key (whole or absent); the longest a read took. */
static uint64_t
read_all(world *wd)
{
    uint64_t worst = 0;
    char key[32];
    int i;

    for (i = 0; i < NKEYS; i++) {
        uint64_t start = hc_now_ns(), took;

        key_name(key, i);
        read_key(wd, key);
        took = hc_now_ns() - start;
        worst = took > worst ? took : worst;
    }
    return worst;
}

/* The batch keys: all with one version, or all absent (never a part). */
static void
check_pairs(world *wd)
{
    uint64_t first = 0;
    int k;

    for (k = 0; k < NPAIRS; k++) {
        char key[24];
        uint8_t *copy = NULL;
        uint64_t v = 0;
        hc_read rd;
        hc_status st;

        snprintf(key, sizeof(key), "pair-%d", k);
        st = hc_cache_read_locked(wd->batches, key, (uint32_t) strlen(key),
                                  hc_cache_hash(wd->batches, key,
                                                strlen(key)),
                                  hc_now_ns(), &rd, &copy);
        CHECK(st == HC_OK || st == HC_NOT_FOUND);
        if (st == HC_OK && rd.rd_format < HC_FORMAT_INTERNAL) {
            CHECK(rd.rd_value_len == sizeof(v));
            memcpy(&v, copy, sizeof(v));
        }
        free(copy);
        if (k == 0)
            first = v;
        if (v != first) {
            fprintf(stderr, "batch keys disagree: pair-0 %llu, %s %llu\n",
                    (unsigned long long) first, key, (unsigned long long) v);
            exit(1);
        }
    }
    CHECK_ST(hc_cache_check(wd->batches), HC_OK);
}

/* The dead child's flight must not make us wait out its lease. */
static void
check_flight(world *wd)
{
    hc_flight_request rq = flight_request(wd, "flight", HC_NS_PER_SEC);
    hc_flight_result res;

    CHECK_ST(hc_flight_begin(wd->cache, &rq, &res), HC_OK);
    free(res.fr_data);
    CHECK(res.fr_outcome != HC_FLIGHT_WAIT);
    if (res.fr_outcome == HC_FLIGHT_COMPUTE)
        CHECK_ST(hc_flight_abort(wd->cache, "flight", 6, rq.fq_hash,
                                 res.fr_round, NULL, 0, 0), HC_OK);
}

/* Drain q: whole messages, each sequence number above the last. */
static void
check_queue(hc_queue_handle *q, uint32_t last_sent)
{
    uint64_t msg[2];
    uint32_t last = 0;
    size_t len;

    for (;;) {
        uint32_t seq;
        /* A deadline already past: the side's owner may be the dead
         * child, and the wait returns HC_PEER_DIED or HC_TIMEOUT. */
        hc_status st = hc_queue_recv(q, msg, sizeof(msg), &len, hc_now_ns());

        if (st == HC_TIMEOUT || st == HC_PEER_DIED)
            break;
        CHECK_ST(st, HC_OK);
        CHECK(len == sizeof(msg));
        seq = (uint32_t) msg[0];
        CHECK(msg[1] == fnv(&seq, 4, UINT64_C(0xcbf29ce484222325)));
        CHECK(seq > last);
        last = seq;
    }
    /* Our own last message is always the last one there. */
    if (last != last_sent) {
        fprintf(stderr, "the queue's last message is %u, not ours (%u)\n",
                (unsigned) last, (unsigned) last_sent);
        exit(1);
    }
}

/* Is point walked under both policies (S3-FIFO's moves pass it)? */
static bool
walk_twice(const char *point)
{
    static const char *const prefixes[] = {
        "table.link.", "table.remove.", "table.rebuild.",
        "table.evict_region.",
    };
    size_t i;

    for (i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
        if (strncmp(point, prefixes[i], strlen(prefixes[i])) == 0)
            return true;
    return false;
}

/* Kill a child at the nth hit of point; false if it never got there. */
static bool
walk_one(const char *point, uint32_t nth, uint64_t *read_ns,
         uint64_t *recovery_ns)
{
    world wd;
    pid_t pid;
    int status;

    world_open(&wd);
    pid = test_fork();
    CHECK(pid >= 0);
    if (pid == 0)
        child(&wd, point, nth);
    CHECK(waitpid(pid, &status, 0) == pid);
    if (WIFEXITED(status) && WEXITSTATUS(status) == NOT_REACHED) {
        world_close(&wd);
        return false;
    }
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
        fprintf(stderr, "%s@%u: the child ended with status %#x, not by the "
                "injected SIGKILL\n", point, nth, (unsigned) status);
        exit(1);
    }
    /* Readers come first: they must neither wait long nor see a torn
     * value, even before any writer repaired the stripe. */
    *read_ns = read_all(&wd);
    *recovery_ns = recover(&wd);
    (void) read_all(&wd);
    check_flight(&wd);
    check_pairs(&wd);
    check_queue(wd.queue, wd.next_seq);
    check_queue(wd.single, wd.next_seq);
    CHECK_ST(hc_cache_check(wd.cache), HC_OK);
    world_close(&wd);
    return true;
}

/* "fail": the point returns the status; here a path the code has anyway
 * (a stripe found corrupt is rebuilt and the write retried). */
static void
test_fail_action(void)
{
    world wd;

    world_open(&wd);
    hc_inject_arm("table.set.swept", HC_INJECT_FAIL, 1, HC_CORRUPT);
    CHECK_ST(put(&wd, "key-1", 9, HC_FOREVER), HC_OK);
    CHECK(hc_inject_hits() == 2);   /* the failed try and the retry */
    hc_inject_arm(NULL, HC_INJECT_NONE, 0, 0);
    read_key(&wd, "key-1");
    CHECK_ST(hc_cache_check(wd.cache), HC_OK);
    world_close(&wd);
}

/* Scenario 12: a kernel without OFD locks or futexes is refused clearly. */
static void
test_kernel_selftest(void)
{
    CHECK_ST(hc_kernel_selftest(), HC_OK);
    hc_inject_arm("kernel.selftest.ofd", HC_INJECT_FAIL, 1, HC_SYSTEM);
    CHECK_ST(hc_kernel_selftest(), HC_SYSTEM);
    CHECK(strstr(hc_last_detail(), "open file description locks") != NULL);
    hc_inject_arm("kernel.selftest.futex", HC_INJECT_FAIL, 1, HC_SYSTEM);
    CHECK_ST(hc_kernel_selftest(), HC_SYSTEM);
    CHECK(strstr(hc_last_detail(), "futex") != NULL);
    hc_inject_arm(NULL, HC_INJECT_NONE, 0, 0);
    CHECK_ST(hc_kernel_selftest(), HC_OK);
}

/*
 * "stall" and the environment: a child told by HERDCACHE_INJECT to stop
 * for good after linking a new value (the old one still linked, the lock
 * held) is seen by readers to hold either whole value; killed there, its
 * stripe is taken over.
 */
static void
test_stall_action(void)
{
    uint64_t deadline = hc_deadline_after(WALK_DEADLINE_NS);
    world wd;
    pid_t pid;
    int status;

    world_open(&wd);
    pid = test_fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        setenv("HERDCACHE_INJECT", "table.set.linked:stall:0", 1);
        (void) put(&wd, "key-2", 5, HC_FOREVER);
        _exit(NOT_REACHED);
    }
    /* Wait for the child's value to show: then it is stalled, locked. */
    for (;;) {
        hc_read rd;
        uint64_t hash = hc_cache_hash(wd.cache, "key-2", 5);
        hc_status st = hc_cache_read_begin(wd.cache, "key-2", 5, hash,
                                           hc_now_ns(), &rd);
        uint32_t version = 0;

        if (st == HC_OK && rd.rd_value_len >= 4)
            memcpy(&version, rd.rd_value, 4);
        if (hc_cache_read_valid(&rd) && version == 5)
            break;
        if (hc_now_ns() > deadline) {
            fprintf(stderr, "the stalled child's value never showed (last "
                    "version seen %u)\n", version);
            exit(1);
        }
        hc_cpu_relax();
    }
    CHECK(hc_lock_is_locked(&test_stripe_of(wd.cache,
                                            hc_cache_hash(wd.cache, "key-2",
                                                          5))->sp_lock));
    (void) read_all(&wd);
    CHECK(kill(pid, SIGKILL) == 0);
    CHECK(waitpid(pid, &status, 0) == pid && WIFSIGNALED(status));
    CHECK_ST(put(&wd, "key-2", 6, HC_FOREVER), HC_OK);
    CHECK_ST(hc_cache_check(wd.cache), HC_OK);
    (void) read_all(&wd);
    world_close(&wd);
}

/*
 * The rebuild is itself restartable.  A writer dies with its new value of
 * key-5 linked in front of the old one (the stripe lock names it); then
 * two more processes in turn take the stripe over and die inside its
 * rebuild, at the nth hit of a point of it.  The next process's rebuild
 * must keep every item the first would have kept: each key reads whole,
 * at the version it had just after the writer died (key-5 the new one),
 * and check() passes.
 */
static const char *const rebuild_points[] = {
    "table.rebuild.opened", "table.rebuild.chain", "table.rebuild.collected",
    "table.rebuild.half_mapped", "table.rebuild.mapped",
    "table.rebuild.relinked",
};

/* The version of key read lock-free (0: absent); the value must be whole. */
static uint32_t
version_of(world *wd, const char *key)
{
    static uint8_t copy[HC_DEFAULT_MAX_VALUE];
    uint32_t klen = (uint32_t) strlen(key), len = 0, version = 0;
    uint64_t hash = hc_cache_hash(wd->cache, key, klen);
    hc_read rd;
    hc_status st = hc_cache_read_begin(wd->cache, key, klen, hash,
                                       hc_now_ns(), &rd);

    if (st == HC_OK && rd.rd_value_len <= sizeof(copy)) {
        len = rd.rd_value_len;
        memcpy(copy, rd.rd_value, len);
    }
    /* Nobody frees anything while we read: one attempt must do. */
    CHECK(hc_cache_read_valid(&rd) && (st == HC_OK || st == HC_NOT_FOUND));
    if (st == HC_OK) {
        CHECK(value_whole(key, copy, len));
        memcpy(&version, copy, 4);
    }
    return version;
}

/* Fork a child that takes key-5's stripe with point armed to kill at its
 * nth hit; false if it got the stripe without reaching the point. */
static bool
die_rebuilding(world *wd, const char *point, uint32_t nth)
{
    uint64_t hash = hc_cache_hash(wd->cache, "key-5", 5);
    pid_t pid = test_fork();
    int status;

    CHECK(pid >= 0);
    if (pid == 0) {
        hc_inject_arm(point, HC_INJECT_KILL, nth, 0);
        if (hc_cache_lock_stripe(wd->cache, hash) == HC_OK)
            hc_cache_unlock_stripe(wd->cache, hash);
        _exit(NOT_REACHED);
    }
    CHECK(waitpid(pid, &status, 0) == pid);
    if (WIFEXITED(status) && WEXITSTATUS(status) == NOT_REACHED)
        return false;
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    return true;
}

/* One round: the writer's death, two dead rebuilders, the check. */
static bool
rebuild_killed_twice(const char *point, uint32_t nth)
{
    uint32_t before[NKEYS];
    bool reached;
    world wd;
    pid_t pid;
    int status, i;

    world_open(&wd);
    pid = test_fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        hc_inject_arm("table.set.linked", HC_INJECT_KILL, 1, 0);
        (void) put(&wd, "key-5", 9, HC_FOREVER);
        _exit(NOT_REACHED);
    }
    CHECK(waitpid(pid, &status, 0) == pid && WIFSIGNALED(status));
    for (i = 0; i < NKEYS; i++) {
        char key[32];

        key_name(key, i);
        before[i] = version_of(&wd, key);
    }
    CHECK(before[5] == 9);
    reached = die_rebuilding(&wd, point, nth);
    if (reached)
        CHECK(die_rebuilding(&wd, point, nth));     /* a third dies too */
    (void) read_all(&wd);       /* takes the stripe over: rebuilds */
    for (i = 0; i < NKEYS; i++) {
        char key[32];

        key_name(key, i);
        if (version_of(&wd, key) != before[i]) {
            fprintf(stderr, "%s@%u: after two dead rebuilders %s reads as "
                    "version %u, not %u\n", point, nth, key,
                    (unsigned) version_of(&wd, key), (unsigned) before[i]);
            exit(1);
        }
    }
    CHECK_ST(hc_cache_check(wd.cache), HC_OK);
    world_close(&wd);
    return reached;
}

static void
test_a_rebuild_killed_twice_loses_nothing(void)
{
    size_t i;

    for (i = 0; i < sizeof(rebuild_points) / sizeof(rebuild_points[0]); i++) {
        CHECK(rebuild_killed_twice(rebuild_points[i], 1));
        (void) rebuild_killed_twice(rebuild_points[i], 3);
    }
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

    return x < y ? -1 : x > y;
}

static void
report(const char *what, uint64_t *t, size_t n)
{
    qsort(t, n, sizeof(t[0]), cmp_u64);
    printf("    %s: median %.1f ms, p95 %.1f ms, max %.1f ms\n", what,
           (double) t[n / 2] / 1e6, (double) t[n * 95 / 100] / 1e6,
           (double) t[n - 1] / 1e6);
}

/* Walk point at each hit count of the list nths ("1,3"); false if the
 * first hit is never reached. */
static bool
walk_point(const char *point, const char *nths, uint64_t *reads,
           uint64_t *recoveries, size_t *kills, size_t cap)
{
    uint64_t worst_read = 0, worst = 0;

    while (*nths) {
        uint32_t nth = (uint32_t) strtoul(nths, (char **) &nths, 10);

        if (*nths == ',')
            nths++;
        if (nth == 0 || *kills >= cap)
            continue;
        if (!walk_one(point, nth, &reads[*kills], &recoveries[*kills])) {
            if (nth == 1) {
                fprintf(stderr, "point %s: no workload reaches it\n", point);
                return false;
            }
            continue;
        }
        worst_read = reads[*kills] > worst_read ? reads[*kills] : worst_read;
        worst = recoveries[*kills] > worst ? recoveries[*kills] : worst;
        ++*kills;
    }
    printf("      %-30s %-6s read <= %5.1f ms, recovered <= %5.1f ms\n",
           point, hc_eviction_name(walk_eviction), (double) worst_read / 1e6,
           (double) worst / 1e6);
    return true;
}

/* ---- action "call": a race as one fixed interleaving ---- */

static hc_segment *seg_call;

typedef struct late_snapshot {
    hc_cache *ls_cache;
    uint64_t ls_csn, ls_deadline;
    bool ls_opened;
} late_snapshot;

/* What another process does meanwhile: it opens a snapshot. */
static void
open_late_snapshot(void *arg)
{
    late_snapshot *ls = arg;

    CHECK_ST(hc_snapshot_open(ls->ls_cache, 0, &ls->ls_csn,
                              &ls->ls_deadline), HC_OK);
    ls->ls_opened = true;
}

/*
 * Issue 10: a set evicts a key's newest value, a snapshot registers at
 * that instant (after the eviction judged that no snapshot was open), and
 * the set then fails (no room: the rest of the stripe is keys being
 * computed).  The snapshot must never read the key as absent: it is too
 * old, or it sees the value.
 */
static void
test_failed_set_reports_its_eviction(void)
{
    hc_cache *c = test_cache(&seg_call, hc_cache_min_size(HC_EVICTION_SIEVE),
                             true);
    static char big[16384];
    late_snapshot late = {c, 0, 0, false};
    hc_flight_request rq = {NULL, 0, 0, 3600 * HC_NS_PER_SEC, 0, false};
    hc_flight_result res;
    char key[16], flights[4][16];
    uint64_t rounds[4], s, d;
    int i = 0, n = 0;
    uint8_t *copy = NULL;
    hc_read rd;
    hc_status st;

    CHECK_ST(hc_snapshot_open(c, 0, &s, &d), HC_OK);   /* takes the slot */
    hc_snapshot_close(c, s);
    /* Stripe 0 full of keys being computed; then the last 4 end. */
    for (st = HC_OK; st == HC_OK; i++) {
        i = test_key_in_stripe(c, 0, i, key, sizeof(key));
        rq.fq_key = key;
        rq.fq_key_len = (uint32_t) strlen(key);
        rq.fq_hash = hc_cache_hash(c, key, strlen(key));
        st = hc_flight_begin(c, &rq, &res);
        CHECK(st == HC_NO_SPACE
              || (st == HC_OK && res.fr_outcome == HC_FLIGHT_COMPUTE));
        if (st == HC_OK) {
            memcpy(flights[n % 4], key, sizeof(key));
            rounds[n++ % 4] = res.fr_round;
        }
    }
    CHECK(n > 4);
    for (i = 0; i < 4; i++)
        CHECK_ST(hc_flight_abort(c, flights[i], (uint32_t) strlen(flights[i]),
                                 hc_cache_hash(c, flights[i],
                                               strlen(flights[i])),
                                 rounds[i], NULL, 0, 0), HC_OK);
    test_key_in_stripe(c, 0, 90000, key, sizeof(key));
    CHECK_ST(test_put(c, key, "v", 1, HC_FOREVER), HC_OK);
    /* The failing set: its eviction of key is the first removal. */
    {
        char other[16];

        test_key_in_stripe(c, 0, 95000, other, sizeof(other));
        hc_inject_arm_call("table.remove.unlinked", 1, open_late_snapshot,
                           &late);
        CHECK_ST(test_put(c, other, big, sizeof(big), HC_FOREVER),
                 HC_NO_SPACE);
        hc_inject_arm(NULL, HC_INJECT_NONE, 0, 0);
    }
    CHECK(late.ls_opened);
    st = hc_cache_read_locked_at(c, key, (uint32_t) strlen(key),
                                 hc_cache_hash(c, key, strlen(key)),
                                 hc_expiry_now_ns(), late.ls_csn, &rd, &copy);
    if (!(st == HC_OK && rd.rd_value_len == 1))
        CHECK_ST(hc_snapshot_check(c, late.ls_csn, late.ls_deadline),
                 HC_TOO_OLD);
    free(copy);
    hc_snapshot_close(c, late.ls_csn);
    CHECK_ST(hc_cache_check(c), HC_OK);
    hc_cache_close(c);
    CHECK_ST(hc_segment_close(seg_call), HC_OK);
}

/* The stripe a flight's sleepers wake to, as they find it. */
typedef struct wake_sight {
    hc_stripe *ws_stripe;
    bool ws_seen, ws_epoch_even, ws_unlocked;
} wake_sight;

static void
look_at_the_stripe(void *arg)
{
    wake_sight *ws = arg;

    ws->ws_seen = true;
    ws->ws_epoch_even = (atomic_load_explicit(&ws->ws_stripe->sp_epoch,
                                              memory_order_acquire) & 1) == 0;
    ws->ws_unlocked = (atomic_load_explicit(&ws->ws_stripe->sp_lock.lk_word,
                                            memory_order_acquire)
                       & HC_LOCK_LOCKED) == 0;
}

/*
 * Issue 9, scenario 9: when the end of a flight wakes its sleepers, what
 * they come back for is readable without the lock: the writer's epoch is
 * closed and the stripe unlocked.  Woken inside the open epoch (as they
 * were), they failed every lock-free read and queued on the lock.
 */
static void
test_sleepers_wake_to_an_unlocked_stripe(void)
{
    static hc_segment *seg;
    hc_cache *c = test_cache(&seg, hc_cache_min_size(HC_EVICTION_SIEVE),
                             true);
    const char *key = "woken";
    uint64_t hash = hc_cache_hash(c, key, strlen(key));
    hc_flight_request rq = {key, (uint32_t) strlen(key), hash,
                            3600 * HC_NS_PER_SEC, 0, false};
    hc_write wr = test_write(c, key, "v", 1, HC_FOREVER);
    wake_sight ws = {test_stripe_of(c, hash), false, false, false};
    hc_flight_result res;

    CHECK_ST(hc_flight_begin(c, &rq, &res), HC_OK);
    free(res.fr_data);
    CHECK(res.fr_outcome == HC_FLIGHT_COMPUTE);
    hc_inject_arm_call("flight.wake.before_wake", 1, look_at_the_stripe, &ws);
    CHECK_ST(hc_flight_publish(c, &wr, res.fr_round), HC_OK);
    hc_inject_arm(NULL, HC_INJECT_NONE, 0, 0);
    CHECK(ws.ws_seen);
    CHECK(ws.ws_epoch_even);
    CHECK(ws.ws_unlocked);
    hc_cache_close(c);
    CHECK_ST(hc_segment_close(seg), HC_OK);
}

int
main(void)
{
    const char *nths = getenv("INJECT_NTH");
    size_t cap = NPOINTS * 64, kills = 0, i;
    uint64_t *reads = calloc(cap, sizeof(uint64_t));
    uint64_t *recoveries = calloc(cap, sizeof(uint64_t));
    bool ok = reads != NULL && recoveries != NULL;

    setvbuf(stdout, NULL, _IOLBF, 0);
    snprintf(named_dir, sizeof(named_dir), "/dev/shm/hc-inject-XXXXXX");
    CHECK(mkdtemp(named_dir) != NULL);
    named_opts.dir = named_dir;
    named_owner = getpid();
    atexit(remove_named_dir);
    TEST(test_fail_action);
    TEST(test_kernel_selftest);
    TEST(test_stall_action);
    TEST(test_a_rebuild_killed_twice_loses_nothing);
    TEST(test_failed_set_reports_its_eviction);
    TEST(test_sleepers_wake_to_an_unlocked_stripe);
    printf("    walking %zu injection points\n", NPOINTS);
    for (i = 0; ok && i < NPOINTS; i++) {
        nths = nths && *nths ? nths : "1,3";
        walk_eviction = strncmp(points[i], "evict.", 6) == 0
            ? HC_EVICTION_S3FIFO : HC_EVICTION_SIEVE;
        ok = walk_point(points[i], nths, reads, recoveries, &kills, cap);
        if (ok && walk_twice(points[i])) {
            walk_eviction = HC_EVICTION_S3FIFO;
            ok = walk_point(points[i], nths, reads, recoveries, &kills, cap);
        }
    }
    if (ok && kills > 0) {
        printf("    %zu kills, each followed by reads of every key and the "
               "recovery of every lock (target < 100 ms):\n", kills);
        report("longest read of a key, before any repair", reads, kills);
        report("recovery of every lock", recoveries, kills);
    }
    free(reads);
    free(recoveries);
    return ok ? 0 : 1;
}
