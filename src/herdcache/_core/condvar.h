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
 * (always, even on timeout or signal, as pthread_cond_timedwait does).
 * Returns HC_OK (woken: re-test the predicate), HC_TIMEOUT, HC_INTERRUPTED,
 * HC_OWNER_DIED (woken, and the lock came back from a dead owner) or
 * HC_NOT_OWNER (the caller did not hold the lock; nothing was done).
 */
hc_status hc_cond_wait(struct hc_segment *seg, hc_cond *cv, hc_lock *lock,
                       uint64_t deadline);

/* Wake up to count waiters (count < 0: all of them). */
void hc_cond_notify(hc_cond *cv, int count);

#endif /* HC_CONDVAR_H */
