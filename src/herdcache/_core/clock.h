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
