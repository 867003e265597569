/*-------------------------------------------------------------------------
 *
 * lock.c
 *	  The owner-recording futex mutex described in lock.h.
 *
 * The word moves through these states:
 *
 *	0                      free
 *	token|LOCKED           held, nobody asleep on it
 *	token|LOCKED|WAITERS   held, someone may be asleep: release must wake
 *
 * This is Drepper's "mutex 3" from "Futexes Are Tricky", with the owner's
 * token in place of the constant 1, plus the dead-owner takeover.  A woken
 * waiter that wins the lock takes it with WAITERS set, since it cannot
 * know whether others still sleep; at worst one release makes a needless
 * wake-up system call.
 *
 * Loads of the word.  A load whose token may next be judged dead (by
 * hc_slot_token_alive(), which reads the slot's generation with acquire)
 * is itself an acquire load: the token and the generation are then
 * ordered in C11 terms, not only by the address dependency that orders
 * them on x86, ARMv8 and POWER.  The spin loop's load, which only looks
 * for 0 before a CAS, stays relaxed.
 *
 *-------------------------------------------------------------------------
 */
#include "lock.h"

#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "clock.h"
#include "futex.h"
#include "inject.h"
#include "segment.h"
#include "slot.h"

#define SPIN_LIMIT 100          /* a few microseconds at most */

uint32_t
hc_thread_id(void)
{
    static _Thread_local uint32_t tid;
    static _Thread_local uint64_t tid_epoch;

    /* A forked child inherits the cached value of the forking thread. */
    if (tid == 0 || tid_epoch != hc_fork_epoch()) {
        tid = (uint32_t) syscall(SYS_gettid);
        tid_epoch = hc_fork_epoch();
    }
    return tid;
}

static hc_status
acquired(hc_segment *seg, hc_lock *lock, hc_status st)
{
    atomic_store_explicit(&lock->lk_owner_tid, hc_thread_id(),
                          memory_order_relaxed);
    HC_INJECT("lock.acquired");
    hc_segment_enter(seg);      /* close() must wait for our release */
    return st;
}

/* Try to swap expected for ours; the acquire pairs with release's exchange. */
static bool
try_swap(hc_lock *lock, uint32_t expected, uint32_t desired)
{
    return atomic_compare_exchange_strong_explicit(
        &lock->lk_word, &expected, desired,
        memory_order_acquire, memory_order_relaxed);
}

/*
 * Can the lock's owner still release it?  Another process: while its slot
 * lives (slot.h).  This process (the word names our own token): while the
 * thread that took it lives, since only that thread may release it; a
 * thread that exited holding it left a lock nobody will ever release, and
 * we must not wait for ourselves.  A tid of 0 is an owner between its CAS
 * and its store of the tid (or releasing): alive.
 */
static bool
owner_alive(hc_segment *seg, hc_lock *lock, uint32_t owner, uint32_t me)
{
    uint32_t tid;

    if (owner != me)
        return hc_slot_token_alive(seg, owner);
    tid = atomic_load_explicit(&lock->lk_owner_tid, memory_order_relaxed);
    return tid == 0 || syscall(SYS_tgkill, getpid(), tid, 0) == 0
        || errno != ESRCH;
}

/* Take over from a dead owner, if the word still names that owner. */
static bool
take_from_dead(hc_segment *seg, hc_lock *lock, uint32_t word, uint32_t me)
{
    if (owner_alive(seg, lock, word & HC_LOCK_TOKEN, me))
        return false;
    return try_swap(lock, word, me | HC_LOCK_LOCKED | HC_LOCK_WAITERS);
}

static hc_status
acquire_slow(hc_segment *seg, hc_lock *lock, uint32_t me, uint64_t deadline)
{
    uint32_t mine = me | HC_LOCK_LOCKED;
    uint32_t word;
    uint64_t step = HC_LOCK_PROBE_FIRST_NS;
    hc_status verified;
    int spins;

    for (spins = 0; spins < SPIN_LIMIT; spins++) {
        hc_cpu_relax();
        if (atomic_load_explicit(&lock->lk_word, memory_order_relaxed) == 0
            && try_swap(lock, 0, mine))
            return acquired(seg, lock, HC_OK);
    }
    /*
     * About to sleep and probe the owner: first make sure our own slot
     * still proves us alive (slot.h, "Closed descriptors").  Not on the
     * fast path, which touches no descriptor.
     */
    if ((verified = hc_slot_verify(seg)) != HC_OK)
        return verified;
    for (;;) {
        hc_status st;

        /* acquire: see "Loads of the word" above */
        word = atomic_load_explicit(&lock->lk_word, memory_order_acquire);
        if (word == 0) {
            if (try_swap(lock, 0, mine | HC_LOCK_WAITERS))
                return acquired(seg, lock, HC_OK);
            continue;
        }
        if ((word & HC_LOCK_TOKEN) == me
            && atomic_load_explicit(&lock->lk_owner_tid, memory_order_relaxed)
               == hc_thread_id())
            return HC_DEADLOCK;
        if (!(word & HC_LOCK_WAITERS)) {
            if (!try_swap(lock, word, word | HC_LOCK_WAITERS))
                continue;
            word |= HC_LOCK_WAITERS;
        }
        /* Sleep at most one probe step, so a dead owner is noticed. */
        st = hc_futex_wait(&lock->lk_word, word,
                           hc_deadline_min_step(deadline, step));
        if (st == HC_INTERRUPTED || st == HC_SYSTEM)
            return st;
        if (st == HC_TIMEOUT) {
            step = step * 2 < HC_LOCK_PROBE_NS ? step * 2 : HC_LOCK_PROBE_NS;
            word = atomic_load_explicit(&lock->lk_word, memory_order_acquire);
            if (word == 0 && try_swap(lock, 0, mine | HC_LOCK_WAITERS))
                return acquired(seg, lock, HC_OK);
            if (word != 0 && take_from_dead(seg, lock, word, me))
                return acquired(seg, lock, HC_OWNER_DIED);
            if (hc_now_ns() >= deadline)
                return HC_TIMEOUT;
        }
    }
}

hc_status
hc_lock_acquire_nowait(hc_segment *seg, hc_lock *lock)
{
    uint32_t me;
    hc_status st = hc_slot_self(seg, &me);

    if (st != HC_OK)
        return st;
    if (try_swap(lock, 0, me | HC_LOCK_LOCKED))
        return acquired(seg, lock, HC_OK);
    return HC_WOULD_BLOCK;
}

hc_status
hc_lock_acquire(hc_segment *seg, hc_lock *lock, uint64_t deadline)
{
    uint32_t me;
    hc_status st = hc_lock_acquire_nowait(seg, lock);

    if (st != HC_WOULD_BLOCK)
        return st;
    st = hc_slot_self(seg, &me);
    return st == HC_OK ? acquire_slow(seg, lock, me, deadline) : st;
}

hc_status
hc_lock_try_acquire(hc_segment *seg, hc_lock *lock)
{
    uint32_t me, word;
    hc_status st = hc_slot_self(seg, &me);

    if (st != HC_OK)
        return st;
    if (try_swap(lock, 0, me | HC_LOCK_LOCKED))
        return acquired(seg, lock, HC_OK);
    word = atomic_load_explicit(&lock->lk_word, memory_order_acquire);
    if ((word & HC_LOCK_TOKEN) == me
        && atomic_load_explicit(&lock->lk_owner_tid, memory_order_relaxed)
           == hc_thread_id())
        return HC_DEADLOCK;
    if (word != 0 && take_from_dead(seg, lock, word, me))
        return acquired(seg, lock, HC_OWNER_DIED);
    return HC_WOULD_BLOCK;
}

bool
hc_lock_held_by_me(hc_segment *seg, const hc_lock *lock)
{
    uint32_t me;
    uint32_t word = atomic_load_explicit(&lock->lk_word, memory_order_relaxed);

    if (hc_slot_self(seg, &me) != HC_OK)
        return false;
    return (word & HC_LOCK_LOCKED) && (word & HC_LOCK_TOKEN) == me
        && atomic_load_explicit(&lock->lk_owner_tid, memory_order_relaxed)
           == hc_thread_id();
}

hc_status
hc_lock_release(hc_segment *seg, hc_lock *lock)
{
    uint32_t old;

    if (!hc_lock_held_by_me(seg, lock))
        return HC_NOT_OWNER;
    atomic_store_explicit(&lock->lk_owner_tid, 0, memory_order_relaxed);
    HC_INJECT("lock.release.before_exchange");
    /*
     * Release: everything written under the lock happens-before the next
     * owner's acquiring CAS (try_swap) that reads this 0.
     */
    old = atomic_exchange_explicit(&lock->lk_word, 0, memory_order_release);
    HC_INJECT("lock.release.before_wake");
    if (old & HC_LOCK_WAITERS)
        hc_futex_wake(&lock->lk_word, 1);
    hc_segment_leave(seg);
    return HC_OK;
}

bool
hc_lock_is_locked(const hc_lock *lock)
{
    return atomic_load_explicit(&((hc_lock *) lock)->lk_word,
                                memory_order_relaxed) != 0;
}
