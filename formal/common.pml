/*
 * common.pml - what every herdcache model shares: N processes, the
 * kernel's futex (a word and a set of sleepers), process death, and the
 * owner-recording lock of lock.c.  Included by lock_cond.pml and
 * flight.pml (spin runs the C preprocessor over them).
 *
 * Workers are the first N processes declared (active proctypes, pids
 * 0 .. N-1); the Reaper (reaper.pml) comes after them.  Process p has
 * the slot token p + 1 (token 0 is "nobody").
 * Tokens are never reused here: the slot generation makes that so in the
 * real code (slot.c, make_token()).
 *
 * Death.  The proctype Reaper kills up to MAXDEAD processes, at any step
 * of theirs: every worker's body runs under `unless { !ALIVE(_pid) }`, and
 * the Reaper may run between any two of its statements.  What the kernel
 * does at death is done in the same atomic step: the process's OFD slot
 * lock goes (ALIVE(p) is what hc_slot_token_alive() sees from then on) and it leaves every futex wait queue.  Its shared-memory stores stay.
 *
 * Futex waits.  hc_futex_wait(word, val) puts the caller to sleep only if
 * the word still equals val, atomically (the kernel's check); a wake takes
 * sleepers off.  Every wait in the core has a deadline (a probe step of
 * the lock, a slice of a flight or of wait_for).  Here a sleeper may time
 * out only once some process is dead (or a lease ran out, flight.pml): so
 * in every run without a death, a wake-up that could be lost leaves a
 * process asleep for good, which spin reports as an invalid end state.
 * That is the "no lost wake-up" check; with a death, the timeouts are
 * what lets the others notice it.
 */
#ifndef N
#define N 3
#endif
#ifndef MAXDEAD
#define MAXDEAD 1
#endif

#define ME (_pid + 1)
#define BIT(p) (1 << (p))

byte dead;              /* one bit per dead process */
byte ndead;
#define ALIVE(p) ((dead & BIT(p)) == 0)

/* The futexes: one sleeper bit per process each. */
#define FX_LOCK 0
#define FX_COND 1
#define FX_FLIGHT 2
byte sleepers[3];

/* May a timed wait end by its deadline?  (See above.) */
#ifndef EXTRA_TIMEOUT
#define EXTRA_TIMEOUT false
#endif
#define MAY_TIME_OUT (ndead > 0 || EXTRA_TIMEOUT)

/* futex.c hc_futex_wait(): sleep while word == val; sets timed_out. */
inline futex_wait(word, val, fx, timed_out)
{
    futex_wait_until(word, val, fx, timed_out, MAY_TIME_OUT)
}

/* The same, where the caller says when a timeout may matter (flight.pml). */
inline futex_wait_until(word, val, fx, timed_out, may_time_out)
{
    timed_out = false;
    atomic {
        if
        :: word == val -> sleepers[fx] = sleepers[fx] | BIT(_pid)
        :: else -> skip         /* EAGAIN: return at once */
        fi
    }
    if
    :: (sleepers[fx] & BIT(_pid)) == 0 -> skip     /* woken */
    :: atomic { (may_time_out) && (sleepers[fx] & BIT(_pid)) != 0 ->
           sleepers[fx] = sleepers[fx] & ~BIT(_pid); timed_out = true }
    fi
}

/* futex.c hc_futex_wake(): wake one sleeper (any), or all. */
inline futex_wake_one(fx)
{
    atomic {
        if
        :: (sleepers[fx] & BIT(0)) -> sleepers[fx] = sleepers[fx] & ~BIT(0)
        :: (sleepers[fx] & BIT(1)) -> sleepers[fx] = sleepers[fx] & ~BIT(1)
        :: (sleepers[fx] & BIT(2)) -> sleepers[fx] = sleepers[fx] & ~BIT(2)
        :: sleepers[fx] == 0 -> skip
        fi
    }
}

inline futex_wake_all(fx)
{
    sleepers[fx] = 0
}

/* ------------------------------------------------------------------ */
/* The lock (lock.c): one word, owner token | LOCKED | WAITERS          */
/* ------------------------------------------------------------------ */

#define LOCKED 16
#define WAITERS 32
#define TOKEN(w) ((w) & 15)

byte lk;                /* lk_word */
byte in_cs;             /* processes inside the critical section */

/* Entering the critical section: no live process may be in it. */
inline enter_cs()
{
    atomic {
        assert((in_cs & ~dead & ~BIT(_pid)) == 0);
        in_cs = in_cs | BIT(_pid)
    }
}

inline leave_cs()
{
    in_cs = in_cs & ~BIT(_pid)
}

/*
 * hc_lock_acquire(seg, lock, HC_FOREVER); died = the HC_OWNER_DIED news.
 * Locals the caller declares: byte w; bool got, died, timed_out.
 */
inline lock_acquire(w, got, died, timed_out)
{
    died = false;
    /* lock.c hc_lock_acquire_nowait(): try_swap(lock, 0, me | LOCKED) */
    atomic { got = (lk == 0); if :: got -> lk = ME | LOCKED :: else fi }
    /* lock.c acquire_slow(): the spin phase is more of the same CAS */
    do
    :: got -> break
    :: else ->
        w = lk;                                 /* lk_word, relaxed */
        if
        :: w == 0 ->                            /* try_swap(0, mine|W) */
            atomic { got = (lk == 0);
                     if :: got -> lk = ME | LOCKED | WAITERS :: else fi }
        :: w != 0 && (w & WAITERS) == 0 ->      /* set WAITERS, or retry */
            atomic { if :: lk == w -> lk = w | WAITERS; w = lk
                         :: else -> w = 0 fi }
        :: else -> skip
        fi;
        if
        :: !got && w != 0 && (w & WAITERS) != 0 ->
            assert(TOKEN(w) != ME);             /* HC_DEADLOCK otherwise */
            futex_wait(lk, w, FX_LOCK, timed_out);
            if
            :: timed_out ->                     /* HC_TIMEOUT: probe */
                w = lk;
                if
                :: w == 0 ->
                    atomic { got = (lk == 0);
                             if :: got -> lk = ME | LOCKED | WAITERS
                             :: else fi }
                :: w != 0 && TOKEN(w) != ME && !ALIVE(TOKEN(w) - 1) ->
                    /* take_from_dead(): the probe said dead; then CAS */
                    atomic {
                        got = (lk == w);
                        if
                        :: got -> assert(!ALIVE(TOKEN(w) - 1));
                                  lk = ME | LOCKED | WAITERS; died = true
                        :: else
                        fi }
                :: else -> skip
                fi
            :: else -> skip                     /* woken: look again */
            fi
        :: else -> skip
        fi
    od;
    /* Forget the locals: fewer states, the same behaviour. */
    atomic { w = 0; got = false; timed_out = false; enter_cs() }
}

/* hc_lock_release(): exchange to 0 (release), wake one if WAITERS. */
inline lock_release(w)
{
    assert(TOKEN(lk) == ME);                    /* hc_lock_held_by_me() */
    leave_cs();
    atomic { w = lk; lk = 0 }
    if
    :: (w & WAITERS) != 0 -> futex_wake_one(FX_LOCK)
    :: else -> skip
    fi;
    w = 0
}


/*
 * The lock's contract, for models of what runs under it (flight.pml):
 * taken at once when free or when its owner is dead (then died says so),
 * else the caller blocks.  lock_cond.pml checks that lock_acquire() and
 * lock_release() above keep this contract; modelling the protocols above
 * with it keeps their state space small enough to search whole.
 */
inline lock_acquire_spec(died)
{
    atomic {
        lk == 0 || !ALIVE(TOKEN(lk) - 1) ->
        died = lk != 0;
        lk = ME | LOCKED;
        enter_cs()
    }
}

inline lock_release_spec()
{
    atomic {
        assert(TOKEN(lk) == ME);
        leave_cs();
        lk = 0
    }
}

/* A death: the kernel drops the slot lock and the futex waits. */
inline kill(p)
{
    ndead++;
    sleepers[FX_LOCK] = sleepers[FX_LOCK] & ~BIT(p);
    sleepers[FX_COND] = sleepers[FX_COND] & ~BIT(p);
    sleepers[FX_FLIGHT] = sleepers[FX_FLIGHT] & ~BIT(p);
    dead = dead | BIT(p)        /* last: from here the victim's unless */
}

/* Die here, inside an atomic step (a critical section), if deaths are
 * left: the rest of the step does not happen (the process's unless). */
inline crash_point()
{
    if
    :: ndead < MAXDEAD -> kill(_pid)
    :: skip
    fi
}
