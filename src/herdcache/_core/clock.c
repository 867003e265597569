/*-------------------------------------------------------------------------
 *
 * clock.c
 *	  The process-local skew of expiry time (see clock.h).
 *
 *-------------------------------------------------------------------------
 */
#include "clock.h"

/*
 * At most this much skew (about 146 years): a sum of skew and a monotonic
 * time then stays far below HC_FOREVER, which means "never expires".
 */
#define MAX_SKEW_NS (UINT64_C(1) << 62)

_Atomic uint64_t hc_clock_skew_ns = 0;

void
hc_clock_advance(uint64_t ns)
{
    uint64_t old = atomic_load_explicit(&hc_clock_skew_ns,
                                        memory_order_relaxed);
    uint64_t want;

    /* Relaxed, as every access to the skew (see hc_expiry_now_ns). */
    do
        want = ns > MAX_SKEW_NS - old ? MAX_SKEW_NS : old + ns;
    while (!atomic_compare_exchange_weak_explicit(&hc_clock_skew_ns, &old,
                                                  want,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed));
}
