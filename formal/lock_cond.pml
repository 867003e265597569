/*
 * lock_cond.pml - the lock (lock.c) and the condition variable
 * (condvar.c) used as sync.py's Condition.wait_for() uses them, by N = 3
 * processes any one of which may be SIGKILLed at any step (common.pml).
 *
 * Processes 0 and 1 each wait for an item and take it; process 2 puts two
 * items and notifies everyone.  A consumer's predicate also accepts "the
 * producer is dead", as herdcache's own waiters re-test liveness (a user's
 * predicate that a dead process was to make true would wait forever, as
 * it would in any language).
 *
 * spin checks: mutual exclusion among live processes; a lock taken over
 * only from a dead owner (assertions in common.pml); no invalid end state
 * (with no death, no timeout exists, so a lost wake-up would leave a
 * sleeper for good); and with -l under weak fairness, no cycle in which
 * nobody ever takes the lock or finishes (run.sh): waiters of a lock
 * whose owner died cannot sleep and probe for ever.  (Starvation of one
 * process by another that keeps re-taking the lock is not excluded: the
 * lock, like Drepper's, lets a running process barge in ahead of a woken
 * one.  Its waiters' bounded sleeps make that a matter of milliseconds.)
 */
#include "common.pml"

byte items;
byte cv;                /* cv_seq */

/* condvar.c hc_cond_wait(): read seq under the lock, release, sleep on
 * cv_seq (the slice of wait_for: timed), take the lock again whatever
 * happened. */
inline cond_wait(seq, w, got, died, timed_out)
{
    seq = cv;                           /* hc_cond_prepare(): acquire */
    lock_release(w);
    futex_wait(cv, seq, FX_COND, timed_out);
    lock_acquire(w, got, died, timed_out)
}

/* condvar.c hc_cond_notify(): fetch_add(cv_seq) release, wake all. */
inline cond_notify_all()
{
    cv++;
    futex_wake_all(FX_COND)
}

active [2] proctype Consumer()
{
    byte w, seq;
    bool got, died, timed_out;

    {
        lock_acquire(w, got, died, timed_out);
        do                              /* sync.py Condition.wait_for() */
        :: items > 0 || !ALIVE(2) -> break
        :: else ->
            cond_wait(seq, w, got, died, timed_out);
progress_relocked:                      /* the lock came back */
            skip
        od;
        if
        :: items > 0 -> items--
        :: else -> skip
        fi;
        lock_release(w);
progress_consumed:
        skip
    } unless { !ALIVE(_pid) }
}

active proctype Producer()
{
    byte w;
    bool got, died, timed_out;

    {
        lock_acquire(w, got, died, timed_out);
        items = items + 2;
        cond_notify_all();
        lock_release(w);
progress_produced:
        skip
    } unless { !ALIVE(_pid) }
}

#include "reaper.pml"
