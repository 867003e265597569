/*-------------------------------------------------------------------------
 *
 * condvar.h
 *	  A condition variable in shared memory, on a futex sequence word.
 *
 * Not a process-shared pthread_cond_t: glibc keeps waiter counts and
 * group state inside it, which a waiter killed at the wrong instruction
 * leaves wrong for good.  Here the whole shared state is one counter that
 * notify increments; a waiter registers nothing, so a waiter that dies
 * leaves nothing behind, and a notifier always makes the wake-up system
 * call (cheap next to the work a cross-process notify announces).
 *
 * Use it as PostgreSQL's condition_variable.c says, as a predicate loop:
 *
 *	hc_lock_acquire(seg, lock, deadline);
 *	while (!predicate())
 *		hc_cond_wait(seg, cv, lock, deadline);    // re-takes the lock
 *	...
 *	hc_lock_release(seg, lock);
 *
 * Notes on synchronization
 *
 * cv_seq: incremented by notifiers with a release RMW after they changed
 * the predicate; read with acquire by hc_cond_wait() while it still holds
 * the lock, before it releases it and sleeps.  The futex system calls
 * order the sleep against the increment.
 *
 *-------------------------------------------------------------------------
 */
#ifndef HC_CONDVAR_H
#define HC_CONDVAR_H

#include <stdatomic.h>
#include <stdint.h>

#include "lock.h"
#include "status.h"

struct hc_segment;

typedef struct hc_cond {
    _Atomic uint32_t cv_seq;
    uint32_t cv_pad;
} hc_cond;

/*
 * Release lock, sleep until notified or the deadline, take lock again
 * (even on timeout or signal, as pthread_cond_timedwait does), waiting
 * for it until the same deadline.  Returns HC_OK (woken: re-test the
 * predicate), HC_TIMEOUT, HC_INTERRUPTED, HC_OWNER_DIED (woken, and the
 * lock came back from a dead owner), HC_NOT_OWNER (the caller did not
 * hold the lock; nothing was done) or HC_NOT_RETAKEN (see below).
 */
hc_status hc_cond_wait(struct hc_segment *seg, hc_cond *cv, hc_lock *lock,
                       uint64_t deadline);

/*
 * hc_cond_wait() with a deadline of its own for taking the lock back
 * (HC_FOREVER: however long it takes).  The re-take always gets at least
 * one probe step (HC_LOCK_PROBE_NS) past the moment it starts, so that a
 * lock held for an instant by a live process, or left by a dead one, is
 * still taken back after a sleep that timed out.  If retake_deadline
 * passes first, the result is HC_NOT_RETAKEN and the lock is NOT held:
 * another process kept it (stopped, or in a long critical section).
 */
hc_status hc_cond_wait_until(struct hc_segment *seg, hc_cond *cv,
                             hc_lock *lock, uint64_t deadline,
                             uint64_t retake_deadline);

/* Wake up to count waiters (count < 0: all of them). */
void hc_cond_notify(hc_cond *cv, int count);

#endif /* HC_CONDVAR_H */
