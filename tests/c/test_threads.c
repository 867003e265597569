/*
 * test_threads.c - threads of one process share a segment: the lock makes
 * a plain read-modify-write exact, counters lose no update, a condition
 * hands a token back and forth, and one publish wakes every waiter of a
 * flight.  Built with probes of an hour (Makefile): a lost wake-up hangs
 * until the test's deadline instead of hiding behind a probe step.  Meant for ThreadSanitizer
 * (`make tsan`) as much as for ASan: TSan checks that the lock's
 * acquire/release pairs order the plain accesses it protects.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "clock.h"
#include "condvar.h"
#include "counter.h"
#include "flight.h"
#include "harness.h"
#include "lock.h"
#include "registry.h"
#include "segment.h"

#define THREADS 4
#define ROUNDS 20000
#define PASSES 2000

typedef struct {
    hc_segment *seg;
    hc_lock *lock;
    hc_cond *cv;
    hc_counter *counter;
    uint64_t *plain;            /* protected by lock, never atomic */
    pthread_barrier_t start;
} shared;

/* A fresh anonymous segment with every structure of the tests. */
static void
setup(shared *s)
{
    CHECK_ST(hc_segment_anonymous(1 << 20, HC_HUGE_OFF, &s->seg), HC_OK);
    s->lock = test_alloc(s->seg, "lock", HC_KIND_LOCK);
    s->cv = test_alloc(s->seg, "cv", HC_KIND_CONDITION);
    s->counter = test_alloc(s->seg, "counter", HC_KIND_COUNTER);
    s->plain = test_alloc(s->seg, "plain", HC_KIND_RAW);
}

static void *
hammer(void *arg)
{
    shared *s = arg;

    pthread_barrier_wait(&s->start);
    for (int i = 0; i < ROUNDS; i++) {
        CHECK_ST(hc_lock_acquire(s->seg, s->lock, HC_FOREVER), HC_OK);
        (*s->plain)++;
        CHECK_ST(hc_lock_release(s->seg, s->lock), HC_OK);
        hc_counter_add(s->counter, 1);
    }
    return NULL;
}

static void
test_lock_and_counter_from_threads(void)
{
    pthread_t threads[THREADS];
    shared s;

    setup(&s);
    pthread_barrier_init(&s.start, NULL, THREADS);
    for (int i = 0; i < THREADS; i++)
        CHECK(pthread_create(&threads[i], NULL, hammer, &s) == 0);
    for (int i = 0; i < THREADS; i++)
        CHECK(pthread_join(threads[i], NULL) == 0);
    CHECK(*s.plain == (uint64_t) THREADS * ROUNDS);
    CHECK(hc_counter_load(s.counter) == (int64_t) THREADS * ROUNDS);
    CHECK(!hc_lock_is_locked(s.lock));
    pthread_barrier_destroy(&s.start);
    CHECK_ST(hc_segment_close(s.seg), HC_OK);
}

/* Wait under the lock until *plain has the parity we want, then bump it. */
static void
take_turns(shared *s, uint64_t parity)
{
    for (int i = 0; i < PASSES; i++) {
        CHECK_ST(hc_lock_acquire(s->seg, s->lock, HC_FOREVER), HC_OK);
        while (*s->plain % 2 != parity)
            CHECK_ST(hc_cond_wait(s->seg, s->cv, s->lock,
                                  hc_deadline_after(30 * HC_NS_PER_SEC)),
                     HC_OK);
        (*s->plain)++;
        hc_cond_notify(s->cv, -1);
        CHECK_ST(hc_lock_release(s->seg, s->lock), HC_OK);
    }
}

static void *
odd_turns(void *arg)
{
    take_turns(arg, 1);
    return NULL;
}

static void
test_condition_ping_pong_between_threads(void)
{
    pthread_t other;
    shared s;

    setup(&s);
    CHECK(pthread_create(&other, NULL, odd_turns, &s) == 0);
    take_turns(&s, 0);
    CHECK(pthread_join(other, NULL) == 0);
    CHECK(*s.plain == 2 * PASSES);
    CHECK_ST(hc_segment_close(s.seg), HC_OK);
}

typedef struct {
    hc_cache *cache;
    hc_flight_request rq;
    pthread_barrier_t waiting;  /* every waiter got WAIT once */
    _Atomic int joined;
    pid_t tids[THREADS];
} flight_shared;

/* Wait (bounded) until thread tid sleeps in a futex, as /proc shows it. */
static void
until_asleep(pid_t tid)
{
    char path[64], wchan[64] = "";
    uint64_t deadline = hc_deadline_after(10 * HC_NS_PER_SEC);
    FILE *f;

    snprintf(path, sizeof(path), "/proc/self/task/%d/wchan", (int) tid);
    while (strstr(wchan, "futex") == NULL) {
        CHECK(hc_now_ns() < deadline);  /* never fell asleep */
        if ((f = fopen(path, "r")) != NULL) {
            if (fgets(wchan, sizeof(wchan), f) == NULL)
                wchan[0] = '\0';
            fclose(f);
        }
        usleep(1000);
    }
}

/* Ask for the key until it is a hit, sleeping while another computes. */
static void *
wait_for_flight(void *arg)
{
    flight_shared *f = arg;
    hc_flight_result res;
    bool told = false;

    for (;;) {
        CHECK_ST(hc_flight_begin(f->cache, &f->rq, &res), HC_OK);
        if (res.fr_outcome == HC_FLIGHT_HIT)
            break;
        CHECK(res.fr_outcome == HC_FLIGHT_WAIT);
        if (!told) {
            f->tids[atomic_fetch_add(&f->joined, 1)] = gettid();
            pthread_barrier_wait(&f->waiting);
        }
        told = true;
        /* HC_TIMEOUT here: the publish did not wake this waiter. */
        CHECK_ST(hc_flight_wait(f->cache, f->rq.fq_hash, res.fr_wait_seq,
                                hc_deadline_after(20 * HC_NS_PER_SEC)),
                 HC_OK);
    }
    CHECK(res.fr_len == 1 && res.fr_data[0] == 'v');
    free(res.fr_data);
    return NULL;
}

/* Publish v as key's round; return how many sleepers that woke. */
static uint64_t
publish_v(hc_cache *c, const char *key, uint64_t hash, uint64_t round)
{
    hc_write wr = {0};
    uint64_t wakes, woken, wakes_after, woken_after;

    wr.wr_key = key;
    wr.wr_key_len = (uint32_t) strlen(key);
    wr.wr_hash = hash;
    wr.wr_value = "v";
    wr.wr_value_len = 1;
    wr.wr_format = 1;
    wr.wr_expires = HC_FOREVER;
    hc_flight_wake_counts(c, &wakes, &woken);
    CHECK_ST(hc_flight_publish(c, &wr, round), HC_OK);
    hc_flight_wake_counts(c, &wakes_after, &woken_after);
    CHECK(wakes_after == wakes + 1);    /* one FUTEX_WAKE per publish */
    return woken_after - woken;
}

static void
test_publish_wakes_every_waiter_of_the_flight(void)
{
    pthread_t threads[THREADS];
    hc_segment *seg;
    flight_shared f = {.cache = test_cache(&seg, 1 << 20, true),
                       .rq = {"f", 1, 0, 3600 * HC_NS_PER_SEC, 0, false}};
    hc_flight_result res;

    f.rq.fq_hash = hc_cache_hash(f.cache, "f", 1);
    CHECK_ST(hc_flight_begin(f.cache, &f.rq, &res), HC_OK);
    CHECK(res.fr_outcome == HC_FLIGHT_COMPUTE);
    pthread_barrier_init(&f.waiting, NULL, THREADS + 1);
    for (int i = 0; i < THREADS; i++)
        CHECK(pthread_create(&threads[i], NULL, wait_for_flight, &f) == 0);
    pthread_barrier_wait(&f.waiting);
    /* Publish only once every waiter sleeps: else it needs no wake-up. */
    for (int i = 0; i < THREADS; i++)
        until_asleep(f.tids[i]);
    CHECK(publish_v(f.cache, "f", f.rq.fq_hash, res.fr_round) == THREADS);
    for (int i = 0; i < THREADS; i++)
        CHECK(pthread_join(threads[i], NULL) == 0);
    pthread_barrier_destroy(&f.waiting);
    hc_cache_close(f.cache);
    CHECK_ST(hc_segment_close(seg), HC_OK);
}

/* Wait once for the flight: HC_TIMEOUT means no wake-up came. */
static void *
wait_once(void *arg)
{
    flight_shared *f = arg;
    hc_flight_result res;

    CHECK_ST(hc_flight_begin(f->cache, &f->rq, &res), HC_OK);
    CHECK(res.fr_outcome == HC_FLIGHT_WAIT);
    f->tids[atomic_fetch_add(&f->joined, 1)] = gettid();
    pthread_barrier_wait(&f->waiting);
    CHECK_ST(hc_flight_wait(f->cache, f->rq.fq_hash, res.fr_wait_seq,
                            hc_deadline_after(20 * HC_NS_PER_SEC)),
             HC_OK);
    return NULL;
}

/* clear() ends every flight (the tier's epoch flush relies on it): like
 * every other removal of a FLIGHT item, it wakes the flight's waiters. */
static void
test_clear_wakes_the_waiters_of_a_flight(void)
{
    pthread_t thread;
    hc_segment *seg;
    flight_shared f = {.cache = test_cache(&seg, 1 << 20, true),
                       .rq = {"f", 1, 0, 3600 * HC_NS_PER_SEC, 0, false}};
    hc_flight_result res;

    f.rq.fq_hash = hc_cache_hash(f.cache, "f", 1);
    CHECK_ST(hc_flight_begin(f.cache, &f.rq, &res), HC_OK);
    CHECK(res.fr_outcome == HC_FLIGHT_COMPUTE);
    pthread_barrier_init(&f.waiting, NULL, 2);
    CHECK(pthread_create(&thread, NULL, wait_once, &f) == 0);
    pthread_barrier_wait(&f.waiting);
    until_asleep(f.tids[0]);
    CHECK_ST(hc_cache_clear(f.cache), HC_OK);
    CHECK(pthread_join(thread, NULL) == 0);
    pthread_barrier_destroy(&f.waiting);
    free(res.fr_data);
    hc_cache_close(f.cache);
    CHECK_ST(hc_segment_close(seg), HC_OK);
}

/* A key other than "f" in f's stripe (the tests' caches have one) whose
 * wake word is another: "f"'s waiters must sleep through its flight. */
static void
other_word_key(hc_cache *c, char key[16], uint64_t *hash)
{
    uint64_t fh = hc_cache_hash(c, "f", 1);

    for (int i = 0; i < 1000; i++) {
        snprintf(key, 16, "k%d", i);
        *hash = hc_cache_hash(c, key, strlen(key));
        if (((*hash ^ fh) & (c->ca_layout.cl_nstripes - 1)) == 0
            && ((*hash ^ fh) >> 28) % HC_FLIGHT_WORDS != 0)
            return;
    }
    CHECK(false);               /* 1000 keys, none in another word */
}

/* Compute key (of hash) and publish v; return the sleepers it woke. */
static uint64_t
compute_and_publish(hc_cache *c, const char *key, uint64_t hash)
{
    hc_flight_request rq = {key, (uint32_t) strlen(key), hash,
                            3600 * HC_NS_PER_SEC, 0, false};
    hc_flight_result res;

    CHECK_ST(hc_flight_begin(c, &rq, &res), HC_OK);
    CHECK(res.fr_outcome == HC_FLIGHT_COMPUTE);
    return publish_v(c, key, hash, res.fr_round);
}

/*
 * Waiters sleep on their key's wake word: another key's publish in the
 * same stripe wakes none of them (the kernel says it woke nobody, and
 * they still sleep), and their own key's publish wakes every one.
 */
static void
test_a_publish_wakes_only_its_keys_waiters(void)
{
    pthread_t threads[THREADS];
    hc_segment *seg;
    flight_shared f = {.cache = test_cache(&seg, 1 << 20, true),
                       .rq = {"f", 1, 0, 3600 * HC_NS_PER_SEC, 0, false}};
    hc_flight_result res;
    char other[16];
    uint64_t other_hash;

    f.rq.fq_hash = hc_cache_hash(f.cache, "f", 1);
    other_word_key(f.cache, other, &other_hash);
    CHECK_ST(hc_flight_begin(f.cache, &f.rq, &res), HC_OK);
    CHECK(res.fr_outcome == HC_FLIGHT_COMPUTE);
    pthread_barrier_init(&f.waiting, NULL, THREADS + 1);
    for (int i = 0; i < THREADS; i++)
        CHECK(pthread_create(&threads[i], NULL, wait_once, &f) == 0);
    pthread_barrier_wait(&f.waiting);
    for (int i = 0; i < THREADS; i++)
        until_asleep(f.tids[i]);
    CHECK(compute_and_publish(f.cache, other, other_hash) == 0);
    for (int i = 0; i < THREADS; i++)
        until_asleep(f.tids[i]);        /* still (it woke nobody) */
    CHECK(publish_v(f.cache, "f", f.rq.fq_hash, res.fr_round) == THREADS);
    for (int i = 0; i < THREADS; i++)
        CHECK(pthread_join(threads[i], NULL) == 0);
    pthread_barrier_destroy(&f.waiting);
    hc_cache_close(f.cache);
    CHECK_ST(hc_segment_close(seg), HC_OK);
}

int
main(void)
{
    TEST(test_lock_and_counter_from_threads);
    TEST(test_condition_ping_pong_between_threads);
    TEST(test_publish_wakes_every_waiter_of_the_flight);
    TEST(test_clear_wakes_the_waiters_of_a_flight);
    TEST(test_a_publish_wakes_only_its_keys_waiters);
    return 0;
}
