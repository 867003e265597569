/*
 * test_evict.c - the eviction policies without Python: S3-FIFO's stored
 * policy, its invariants in check(), its repair after a writer dies in
 * the middle of a move, and readers' frequency bits racing its
 * evictions (run under TSan by `make tsan`).
 */
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "harness.h"
#include "table.h"

#define SIZE (UINT64_C(4) << 20)        /* one stripe */
#define HOT 64
#define READERS 2
#ifdef __SANITIZE_THREAD__
#define UNDER_TSAN 1
#else
#define UNDER_TSAN 0
#endif

static hc_segment *seg;

static hc_cache *
new_cache(hc_eviction e)
{
    test_eviction = e;
    return test_cache(&seg, SIZE, true);
}

static void
done(hc_cache *c)
{
    hc_cache_close(c);
    CHECK_ST(hc_segment_close(seg), HC_OK);
}

static hc_status
put(hc_cache *c, const char *key, size_t vlen)
{
    static const char value[2048];

    return test_put(c, key, value, vlen, HC_FOREVER);
}

/* A lock-free hit, as a get makes; true if key is there. */
static bool
hit(hc_cache *c, const char *key)
{
    hc_read rd;
    hc_status st = hc_cache_read_begin(c, key, (uint32_t) strlen(key),
                                       hc_cache_hash(c, key, strlen(key)),
                                       hc_now_ns(), &rd);

    return st == HC_OK && hc_cache_read_valid(&rd);
}

static hc_stripe *
only_stripe(hc_cache *c)
{
    CHECK(c->ca_layout.cl_nstripes == 1);
    return test_stripes(c);
}

/* Sets of fresh keys, far past capacity, with every 4th read once. */
static void
churn(hc_cache *c, const char *prefix, int n)
{
    char key[48];
    int i;

    for (i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "%s-%d", prefix, i);
        CHECK_ST(put(c, key, (size_t) (100 + i % 900)), HC_OK);
        if (i % 4 == 0)
            (void) hit(c, key);
    }
}

static void
test_the_policy_is_kept_in_the_cache(void)
{
    hc_cache *c = new_cache(HC_EVICTION_S3FIFO), *again;
    hc_struct_info info;
    bool found;

    CHECK(c->ca_eviction == HC_EVICTION_S3FIFO);
    CHECK(c->ca_layout.cl_nghost > 0);
    CHECK_ST(hc_registry_find_or_alloc(seg, "cache", 5, SIZE, HC_KIND_CACHE,
                                       &info, &found), HC_OK);
    CHECK(found);
    CHECK_ST(hc_cache_open(seg, info.offset, SIZE, HC_DEFAULT_MAX_VALUE,
                           true, HC_EVICTION_SIEVE, &again),
             HC_KIND_MISMATCH);
    CHECK(strstr(hc_last_detail(), "evicts by s3fifo") != NULL);
    CHECK_ST(hc_cache_open(seg, info.offset, SIZE, HC_DEFAULT_MAX_VALUE,
                           true, HC_EVICTION_STORED, &again), HC_OK);
    CHECK(again->ca_eviction == HC_EVICTION_S3FIFO);
    CHECK(memcmp(&again->ca_layout, &c->ca_layout, sizeof(c->ca_layout))
          == 0);
    hc_cache_close(again);
    done(c);
    /* A SIEVE cache has no ghost: its arena is larger. */
    c = new_cache(HC_EVICTION_SIEVE);
    CHECK(c->ca_layout.cl_nghost == 0);
    done(c);
}

/* check() sees S3-FIFO's own invariants; a rebuild restores them. */
static void
test_check_covers_the_two_queues(void)
{
    hc_cache *c = new_cache(HC_EVICTION_S3FIFO);
    hc_stripe *s = only_stripe(c);
    uint64_t hash = hc_cache_hash(c, "k", 1);

    churn(c, "fill", 20000);
    CHECK(s->sp_evict.ev_main != 0 && s->sp_evict.ev_small_units > 0);
    CHECK_ST(hc_cache_check(c), HC_OK);
    CHECK_ST(hc_cache_lock_stripe(c, hash), HC_OK);
    s->sp_evict.ev_small_units += 1;
    hc_cache_unlock_stripe(c, hash);
    CHECK_ST(hc_cache_check(c), HC_CORRUPT);
    CHECK(strstr(hc_last_detail(), "small queue's size") != NULL);
    CHECK_ST(hc_cache_lock_stripe(c, hash), HC_OK);
    s->sp_evict.ev_small_units -= 1;
    /* main's head moved one item toward the head without that item's
     * it_queue changing: a promotion half done */
    s->sp_evict.ev_main = ((hc_item *) (c->ca_base
                                        + c->ca_layout.cl_arenas_off
                                        + (uint64_t) (s->sp_evict.ev_main - 1)
                                        * HC_UNIT))->it_qprev;
    hc_cache_unlock_stripe(c, hash);
    CHECK_ST(hc_cache_check(c), HC_CORRUPT);
    CHECK(strstr(hc_last_detail(), "wrong half") != NULL);
    CHECK_ST(hc_cache_lock_stripe(c, hash), HC_OK);
    hc_cache_rebuild_locked(c, hash);
    hc_cache_unlock_stripe(c, hash);
    CHECK_ST(hc_cache_check(c), HC_OK);
    churn(c, "after", 20000);
    CHECK_ST(hc_cache_check(c), HC_OK);
    done(c);
}

/* How many of the hot keys are there (each found counts as a hit). */
static int
hot_present(hc_cache *c)
{
    char key[32];
    int i, n = 0;

    for (i = 0; i < HOT; i++) {
        snprintf(key, sizeof(key), "hot-%d", i);
        n += hit(c, key);
    }
    return n;
}

/*
 * A writer killed inside the stripe lock, its S3-FIFO state half moved
 * (main's head and small's size wrong, the epoch odd): the next writer
 * rebuilds both queues, every key there before is still readable, and
 * the stripe keeps evicting by S3-FIFO.
 */
static void
test_a_dead_writer_mid_move_is_repaired(void)
{
    hc_cache *c = new_cache(HC_EVICTION_S3FIFO);
    hc_stripe *s = only_stripe(c);
    uint64_t hash = hc_cache_hash(c, "k", 1);
    char key[32];
    int i, status, before;
    pid_t pid;

    for (i = 0; i < HOT; i++) {
        snprintf(key, sizeof(key), "hot-%d", i);
        CHECK_ST(put(c, key, 200), HC_OK);
        CHECK(hit(c, key) && hit(c, key));
    }
    churn(c, "fill", 20000);
    before = hot_present(c);
    CHECK(before > HOT / 2);    /* read twice: S3-FIFO kept most */
    pid = test_fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        if (hc_cache_lock_stripe(c, hash) != HC_OK)
            _exit(2);
        atomic_fetch_add(&s->sp_epoch, 1);      /* odd, as mid-free */
        s->sp_evict.ev_main = s->sp_qhead;      /* small "all promoted" */
        s->sp_evict.ev_small_units = 7;
        kill(getpid(), SIGKILL);
    }
    CHECK(waitpid(pid, &status, 0) == pid && WIFSIGNALED(status));
    /* The next locker takes the stripe over and rebuilds it. */
    CHECK_ST(hc_cache_lock_stripe(c, hash), HC_OK);
    hc_cache_unlock_stripe(c, hash);
    CHECK_ST(hc_cache_check(c), HC_OK);
    CHECK(s->sp_evict.ev_small_units > 0 && s->sp_evict.ev_main != 0);
    CHECK(hot_present(c) == before);    /* a rebuild loses nothing intact */
    CHECK_ST(put(c, "k", 10), HC_OK);
    churn(c, "after", 20000);
    CHECK_ST(hc_cache_check(c), HC_OK);
    done(c);
}

typedef struct race {
    _Atomic uint64_t *map;      /* the stripe's visited map */
    uint32_t units;
    atomic_bool stop;
    atomic_ulong hits;
} race;

/* Hits anywhere in the map, as readers of freed and reused blocks make
 * (reading items themselves would be the seqlock's race, which TSan does
 * not model): only frequency bits. */
static void *
reader(void *arg)
{
    race *r = arg;
    uint32_t x = 12345;

    while (!atomic_load(&r->stop)) {
        x = x * 1103515245u + 12345u;
        hc_evict_hit(HC_EVICTION_S3FIFO, r->map, (x >> 4) % (r->units - 2));
        /* on 2 cores, spinning readers would starve the writer */
        if (atomic_fetch_add(&r->hits, 1) % 64 == 0)
            sched_yield();
    }
    return NULL;
}

/* Readers set frequency bits anywhere while the writer clears them,
 * promotes, reinserts and evicts: TSan sees only atomics on the map, and
 * any pattern of bits leaves every invariant whole. */
static void
test_stray_hits_race_evictions(void)
{
    hc_cache *c = new_cache(HC_EVICTION_S3FIFO);
    uint64_t words = hc_alloc_words(c->ca_layout.cl_units);
    race r = {(_Atomic uint64_t *) (c->ca_base + c->ca_layout.cl_maps_off)
              + 2 * words, c->ca_layout.cl_units, false, 0};
    pthread_t threads[READERS];
    uint64_t totals[HC_STAT_COUNT];
    int i;

    (void) only_stripe(c);
    for (i = 0; i < READERS; i++)
        CHECK(pthread_create(&threads[i], NULL, reader, &r) == 0);
    /* Past capacity either way; fewer under TSan, where each set of a
     * fragmented arena costs milliseconds. */
    churn(c, "fill", UNDER_TSAN ? 9000 : 20000);
    atomic_store(&r.stop, true);
    for (i = 0; i < READERS; i++)
        CHECK(pthread_join(threads[i], NULL) == 0);
    CHECK(atomic_load(&r.hits) > 0);
    hc_cache_stats(c, totals);
    CHECK(totals[HC_STAT_EVICTIONS] > 0);
    CHECK_ST(hc_cache_check(c), HC_OK);
    done(c);
}

int
main(void)
{
    /* Under TSan only the test with threads: the others are single-threaded
     * (the ASan build runs them) and take minutes at TSan's speed. */
    if (!UNDER_TSAN) {
        TEST(test_the_policy_is_kept_in_the_cache);
        TEST(test_check_covers_the_two_queues);
        TEST(test_a_dead_writer_mid_move_is_repaired);
    }
    TEST(test_stray_hits_race_evictions);
    return 0;
}
