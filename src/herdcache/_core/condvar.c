/*-------------------------------------------------------------------------
 *
 * condvar.c
 *	  The futex sequence condition variable described in condvar.h.
 *
 *-------------------------------------------------------------------------
 */
#include "condvar.h"

#include "clock.h"
#include "futex.h"
#include "inject.h"
#include "segment.h"

uint32_t
hc_cond_prepare(hc_cond *cv)
{
    /* Pairs with the release increment in hc_cond_notify(). */
    return atomic_load_explicit(&cv->cv_seq, memory_order_acquire);
}

hc_status
hc_cond_wait_seq(hc_cond *cv, uint32_t seq, uint64_t deadline)
{
    if (hc_cond_prepare(cv) != seq)
        return HC_OK;
    return hc_futex_wait(&cv->cv_seq, seq, deadline);
}

hc_status
hc_cond_wait(hc_segment *seg, hc_cond *cv, hc_lock *lock, uint64_t deadline)
{
    /*
     * Read the sequence while we still hold the lock: a notifier changes
     * the predicate under the lock, so its increment comes after our
     * release below, and the futex then sees a value other than seq.
     */
    uint32_t seq = hc_cond_prepare(cv);
    hc_status wait_st, lock_st;

    lock_st = hc_lock_release(seg, lock);
    if (lock_st != HC_OK)
        return lock_st;
    HC_INJECT("cond.wait.released");
    wait_st = hc_futex_wait(&cv->cv_seq, seq, deadline);

    /*
     * Re-take the lock whatever happened: the caller's predicate loop
     * assumes it.  A signal during this short wait is not reported; the
     * caller sees it at its next blocking call.
     */
    do
        lock_st = hc_lock_acquire(seg, lock, HC_FOREVER);
    while (lock_st == HC_INTERRUPTED);
    if (lock_st == HC_OWNER_DIED)
        return HC_OWNER_DIED;
    if (lock_st != HC_OK)
        return lock_st;
    return wait_st == HC_SYSTEM ? HC_OK : wait_st;
}

void
hc_cond_notify(hc_cond *cv, int count)
{
    /* Pairs with the acquire load in hc_cond_prepare(). */
    atomic_fetch_add_explicit(&cv->cv_seq, 1, memory_order_release);
    HC_INJECT("cond.notify.before_wake");
    hc_futex_wake(&cv->cv_seq, count);
}
