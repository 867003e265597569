/*-------------------------------------------------------------------------
 *
 * futex.h
 *	  Sleeping on and waking a 32-bit word in shared memory.
 *
 * These are the only blocking primitives of the core.  The futexes are
 * shared (not FUTEX_PRIVATE_FLAG) because the word lives in a segment
 * mapped by several processes, possibly at different addresses; the
 * kernel keys a shared futex on the page and offset, not the address.
 *
 * hc_futex_wait sleeps only while *word == expected, until the absolute
 * monotonic deadline; it returns HC_OK on a wake-up or a changed word,
 * HC_TIMEOUT at the deadline, HC_INTERRUPTED on a signal.  Every caller
 * re-checks its condition afterwards: spurious returns are allowed.
 *
 *-------------------------------------------------------------------------
 */
#ifndef HC_FUTEX_H
#define HC_FUTEX_H

#include <stdatomic.h>
#include <stdint.h>

#include "status.h"

hc_status hc_futex_wait(_Atomic uint32_t *word, uint32_t expected,
                        uint64_t deadline_ns);
/* Wake up to count sleepers on word (all if count < 0); returns how many
 * the kernel woke (0 if the call failed). */
int hc_futex_wake(_Atomic uint32_t *word, int count);

/* A hint to the CPU inside a short spin loop (PAUSE on x86, YIELD on ARM). */
static inline void
hc_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

#endif /* HC_FUTEX_H */
