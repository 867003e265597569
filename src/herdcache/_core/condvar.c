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

static uint32_t
cond_prepare(hc_cond *cv)
{
    /* Pairs with the release increment in hc_cond_notify(). */
    return atomic_load_explicit(&cv->cv_seq, memory_order_acquire);
}

/* When the re-take of the lock gives up: see hc_cond_wait_until(). */
static uint64_t
retake_bound(uint64_t retake_deadline)
{
    uint64_t floor = hc_deadline_after(HC_LOCK_PROBE_NS);

    return retake_deadline > floor ? retake_deadline : floor;
}

hc_status
hc_cond_wait(hc_segment *seg, hc_cond *cv, hc_lock *lock, uint64_t deadline)
{
    return hc_cond_wait_until(seg, cv, lock, deadline, deadline);
}

hc_status
hc_cond_wait_until(hc_segment *seg, hc_cond *cv, hc_lock *lock,
                   uint64_t deadline, uint64_t retake_deadline)
{
    /*
     * Read the sequence while we still hold the lock: a notifier changes
     * the predicate under the lock, so its increment comes after our
     * release below, and the futex then sees a value other than seq.
     */
    uint32_t seq = cond_prepare(cv);
    hc_status wait_st, lock_st;

    lock_st = hc_lock_release(seg, lock);
    if (lock_st != HC_OK)
        return lock_st;
    HC_INJECT("cond.wait.released");
    wait_st = hc_futex_wait(&cv->cv_seq, seq, deadline);

    /*
     * Re-take the lock whatever happened: the caller's predicate loop
     * assumes it.  A signal during this wait is not reported; the caller
     * sees it at its next blocking call.  The bound is computed once, so
     * signals do not extend it.
     */
    retake_deadline = retake_bound(retake_deadline);
    do
        lock_st = hc_lock_acquire(seg, lock, retake_deadline);
    while (lock_st == HC_INTERRUPTED);
    if (lock_st == HC_TIMEOUT) {
        hc_set_detail("the wait ended (%s) but the lock's holder kept it "
                      "until the deadline", wait_st == HC_TIMEOUT
                      ? "timed out" : "woken");
        return HC_NOT_RETAKEN;
    }
    if (lock_st == HC_OWNER_DIED)
        return HC_OWNER_DIED;
    if (lock_st != HC_OK)
        return lock_st;
    return wait_st == HC_SYSTEM ? HC_OK : wait_st;
}

void
hc_cond_notify(hc_cond *cv, int count)
{
    /* Pairs with the acquire load in cond_prepare(). */
    atomic_fetch_add_explicit(&cv->cv_seq, 1, memory_order_release);
    HC_INJECT("cond.notify.before_wake");
    hc_futex_wake(&cv->cv_seq, count);
}
