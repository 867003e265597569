/*-------------------------------------------------------------------------
 *
 * futex.c
 *	  Linux futex system calls with absolute monotonic deadlines.
 *
 * FUTEX_WAIT_BITSET is used rather than FUTEX_WAIT because it takes an
 * absolute CLOCK_MONOTONIC deadline: a wait interrupted and restarted
 * never stretches its total time, and no caller converts back and forth
 * between relative and absolute times.
 *
 *-------------------------------------------------------------------------
 */
#include "futex.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

hc_status
hc_futex_wait(_Atomic uint32_t *word, uint32_t expected, uint64_t deadline_ns)
{
    struct timespec ts, *tsp = NULL;
    long rc;

    if (deadline_ns != HC_FOREVER) {
        ts.tv_sec = (time_t) (deadline_ns / HC_NS_PER_SEC);
        ts.tv_nsec = (long) (deadline_ns % HC_NS_PER_SEC);
        tsp = &ts;
    }
    rc = syscall(SYS_futex, (uint32_t *) word, FUTEX_WAIT_BITSET, expected,
                 tsp, NULL, FUTEX_BITSET_MATCH_ANY);
    if (rc == 0)
        return HC_OK;
    switch (errno) {
    case EAGAIN:                /* *word != expected: nothing to wait for */
        return HC_OK;
    case ETIMEDOUT:
        return HC_TIMEOUT;
    case EINTR:
        return HC_INTERRUPTED;
    default:
        return HC_SYSTEM;
    }
}

int
hc_futex_wake(_Atomic uint32_t *word, int count)
{
    /*
     * The system call is a full barrier, so a waker's stores before this
     * call are visible to the woken thread once it returns from its wait.
     */
    long woken = syscall(SYS_futex, (uint32_t *) word, FUTEX_WAKE,
                         count < 0 ? INT_MAX : count, NULL, NULL, 0);

    return woken > 0 ? (int) woken : 0;
}
