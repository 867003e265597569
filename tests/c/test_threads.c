/*
 * test_threads.c - threads of one process share a segment: the lock makes
 * a plain read-modify-write exact, counters lose no update, and a
 * condition hands a token back and forth.  Meant for ThreadSanitizer
 * (`make tsan`) as much as for ASan: TSan checks that the lock's
 * acquire/release pairs order the plain accesses it protects.
 */
#include <pthread.h>

#include "clock.h"
#include "condvar.h"
#include "counter.h"
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
    CHECK_ST(hc_segment_anonymous(1 << 20, &s->seg), HC_OK);
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

int
main(void)
{
    TEST(test_lock_and_counter_from_threads);
    TEST(test_condition_ping_pong_between_threads);
    return 0;
}
