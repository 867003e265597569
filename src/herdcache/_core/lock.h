/*-------------------------------------------------------------------------
 *
 * lock.h
 *	  A mutex in shared memory that survives the death of its owner.
 *
 * The lock is one 32-bit futex word.  0 means free; otherwise it holds the
 * owner's process token (slot index + slot generation, see slot.h), the
 * LOCKED bit and, while anybody sleeps on it, the WAITERS bit.  Taking the
 * lock is a single compare-and-swap that also records who took it, so a
 * process killed at any instruction leaves either a free lock or a lock
 * that names it: there is no window in which the lock is held by nobody
 * anybody can find.
 *
 * A waiter sleeps on the futex in steps that start at an eighth of
 * HC_LOCK_PROBE_NS and double up to it; after each step it asks slot.h
 * whether the owner's process still lives (a probe of
 * the owner's fcntl lock, which the kernel drops when the process dies, and
 * a check that the slot was not handed to another process since).  If the
 * owner is dead, the waiter takes the lock over with one more CAS and is
 * told so (HC_OWNER_DIED), like EOWNERDEAD from a robust pthread mutex: the
 * data the lock protects may be half-updated and the new owner repairs it
 * or discards it.
 *
 * Why not a robust pthread mutex: its ownership belongs to a thread, so a
 * Python thread that exits makes it "owner died" while the process lives;
 * glibc reads the mutex kind from shared memory and may assert on a
 * corrupt one; and it says nothing about which process holds it.  This
 * lock belongs to a process (a Python thread's exit is no owner death for
 * other processes) and records the thread that took it, to catch misuse
 * and so that the process never waits for itself: a lock naming this
 * process whose thread has exited (only that thread could release it) is
 * taken over by another thread of the process, with HC_OWNER_DIED.
 *
 * Notes on synchronization
 *
 * lk_word: changed only by CAS or exchange.  Acquisition is an acquire
 * operation and release a release operation, so everything written under
 * the lock is visible to the next owner (the usual mutex contract).
 * lk_owner_tid: written relaxed by the owner right after it took the lock
 * and cleared before it releases; read only by the owner's own process,
 * to diagnose misuse (re-acquire by the same thread, release by another)
 * and to learn whether the owning thread still exists (tgkill signal 0).
 *
 *-------------------------------------------------------------------------
 */
#ifndef HC_LOCK_H
#define HC_LOCK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "status.h"

struct hc_segment;

#define HC_LOCK_LOCKED   UINT32_C(0x40000000)
#define HC_LOCK_WAITERS  UINT32_C(0x80000000)
#define HC_LOCK_TOKEN    UINT32_C(0x3FFFFFFF)

/*
 * How long a waiter sleeps before it checks whether the owner lives.  A
 * build-time knob: tests/c builds its thread tests with a probe far longer
 * than their deadline, so that a release that wakes nobody fails them
 * instead of costing each hand-off one probe step.
 */
#ifndef HC_LOCK_PROBE_NS
#define HC_LOCK_PROBE_NS (UINT64_C(10) * 1000 * 1000)
#endif

/*
 * The first step, short: a SIGKILLed owner still holds its slot's fcntl
 * lock until the kernel has torn the process down (its memory goes
 * first), so a waiter's first probe often finds it "alive"; a whole
 * 10 ms step then made every read that met a dying writer take 10 ms.
 */
#define HC_LOCK_PROBE_FIRST_NS (HC_LOCK_PROBE_NS / 8)

typedef struct hc_lock {
    _Atomic uint32_t lk_word;
    _Atomic uint32_t lk_owner_tid;
} hc_lock;

/*
 * Take the lock, waiting until the absolute monotonic deadline (HC_FOREVER
 * for none).  Returns HC_OK, HC_OWNER_DIED (taken; the last owner died in
 * it), HC_TIMEOUT, HC_INTERRUPTED (a signal: call again with the same
 * deadline), HC_DEADLOCK (this thread holds it) or a slot error.
 */
hc_status hc_lock_acquire(struct hc_segment *seg, hc_lock *lock,
                          uint64_t deadline);

/* Take the lock only if it is free right now: one CAS, no probe, no sleep. */
hc_status hc_lock_acquire_nowait(struct hc_segment *seg, hc_lock *lock);

/* Take the lock only if it is free (or its owner is dead). */
hc_status hc_lock_try_acquire(struct hc_segment *seg, hc_lock *lock);

/* Release; HC_NOT_OWNER if the calling thread does not hold it. */
hc_status hc_lock_release(struct hc_segment *seg, hc_lock *lock);

/* True if some process holds the lock (a snapshot, for diagnostics). */
bool hc_lock_is_locked(const hc_lock *lock);

/* True if the calling thread of this process holds the lock. */
bool hc_lock_held_by_me(struct hc_segment *seg, const hc_lock *lock);

/* The calling thread's kernel thread id (cached per thread). */
uint32_t hc_thread_id(void);

#endif /* HC_LOCK_H */
