/*-------------------------------------------------------------------------
 *
 * clock.h
 *	  Monotonic time and deadlines, as integer nanoseconds.
 *
 * Every time the core stores or compares is CLOCK_MONOTONIC in
 * nanoseconds: it never jumps with the wall clock, and it is the same
 * clock in every process of one boot (a segment that outlives a reboot is
 * told apart by its boot id, see segment.c).  A deadline is an absolute
 * monotonic time; HC_FOREVER means "no deadline".
 *
 *-------------------------------------------------------------------------
 */
#ifndef HC_CLOCK_H
#define HC_CLOCK_H

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#define HC_FOREVER UINT64_MAX
#define HC_NS_PER_SEC UINT64_C(1000000000)
#define HC_NS_PER_MS UINT64_C(1000000)

static inline uint64_t
hc_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * HC_NS_PER_SEC + (uint64_t) ts.tv_nsec;
}

/*
 * Expiry time: what entries' expiries, leases and stale windows are
 * stamped with and compared against.  It is CLOCK_MONOTONIC plus this
 * process's skew, which is zero unless a test moves it forward with
 * hc_clock_advance() (freezegun-style tests that must see entries
 * expire).  The skew only grows, so expiry time stays monotonic.  It is
 * process-local: other processes keep the real clock, and see this
 * process's stamps as lying that far in the future.
 *
 * Why not skew hc_now_ns() itself: it also times waits, and a futex or
 * lock deadline must stay real time whatever a test pretends.
 */
extern _Atomic uint64_t hc_clock_skew_ns;

/* Move expiry time forward by ns for this process, saturating. */
void hc_clock_advance(uint64_t ns);

static inline uint64_t
hc_expiry_now_ns(void)
{
    /*
     * Relaxed: the skew is a number of this process alone that only
     * grows; nothing is published through it, so no ordering is needed.
     */
    return hc_now_ns()
        + atomic_load_explicit(&hc_clock_skew_ns, memory_order_relaxed);
}

/* The deadline that lies timeout_ns from now, saturating at HC_FOREVER. */
static inline uint64_t
hc_deadline_after(uint64_t timeout_ns)
{
    uint64_t now;

    if (timeout_ns == HC_FOREVER)
        return HC_FOREVER;
    now = hc_now_ns();
    return timeout_ns > HC_FOREVER - now ? HC_FOREVER : now + timeout_ns;
}

/* The earlier of a deadline and "step_ns from now". */
static inline uint64_t
hc_deadline_min_step(uint64_t deadline, uint64_t step_ns)
{
    uint64_t step = hc_deadline_after(step_ns);

    return step < deadline ? step : deadline;
}

#endif /* HC_CLOCK_H */
