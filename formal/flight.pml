/*
 * flight.pml - single flight (flight.c, compute.py's get_or_compute) over
 * the stripe lock (its contract, lock_acquire_spec(), which lock_cond.pml
 * checks the real lock against), by N = 3 processes any one of which may be SIGKILLed
 * at any step (common.pml).  Processes 0 and 1 call get_or_compute(key);
 * process 2 either does too, or sets the key, or deletes it.
 *
 * The key's item (table.c) is kstate/kowner/kround: EMPTY, a FLIGHT of
 * kowner for round kround, a VALUE written in round kround, or the ERROR
 * of round kround.  Rounds are the items' commit sequence numbers.
 *
 * spin checks (run.sh):
 *   - a process never waits for a flight of its own (defect 11: build
 *     with -DUNFIXED_11 to model the code before its fix, and spin finds
 *     the trace: a store that links the new FLIGHT and then reports the
 *     stripe corrupt, a rebuild that keeps it, a retry that waits on it);
 *   - one live computation at a time, unless a lease ran out, a set or
 *     delete ended the flight, or the rebuild after a death lost the
 *     FLIGHT item (a cache may lose an entry): then the old owner is
 *     fenced;
 *   - fencing: a value is published only for the key's current round, so
 *     values only move forward (a late owner's publish is refused);
 *   - every takeover is of a dead owner or an overrun lease;
 *   - no invalid end state: no death and no overrun lease means no
 *     timeout, so every waiter must be woken by the end of its round;
 *   - with -l under weak fairness, no cycle without progress.
 */
#define EXTRA_TIMEOUT (lease_round != 0)  /* waiters notice an overrun */
#include "common.pml"

#define EMPTY 0
#define FLIGHT 1
#define VALUE 2
#define ERROR 3

#define COMPUTE 1
#define WAIT 2
#define HIT 3
#define FAILED 4

byte kstate, kowner, kround;
byte rounds;            /* ch_csn: the last round (csn) issued */
byte last_value;        /* the round of the newest value stored */
byte fseq;              /* the key's word of sp_flight_words: other keys'
                         * flights (which may share it) only add wake-ups,
                         * which a waiter survives by beginning again */
byte computing;         /* processes inside fn() */
byte lease_round;       /* the round whose lease ran out (Clock), or 0 */
bool wrote;             /* a set or delete ended a flight */
bool corrupt_used;      /* one store may find the stripe corrupt */
bool lost;              /* a rebuild after a death lost a FLIGHT item */

/* table.c stripe_lock_at(): after a dead owner, the stripe is rebuilt;
 * the item the dead writer was replacing may be lost (a cache may lose
 * an entry), never torn. */
inline rebuild_if(died)
{
    if
    :: died ->
        if
        :: kstate == FLIGHT -> kstate = EMPTY; lost = true
        :: kstate != EMPTY && kstate != FLIGHT -> kstate = EMPTY
        :: skip
        fi;
        died = false
    :: else -> skip
    fi
}

/* flight.c start_flight(): a new round, ours. */
inline start_flight(outcome, myround)
{
    assert((computing & ~dead & ~BIT(_pid)) == 0 || lease_round != 0
           || wrote || lost);
    rounds++;                                /* fill_item(): the csn */
    kstate = FLIGHT; kowner = ME; kround = rounds;  /* link_item() */
    myround = rounds; outcome = COMPUTE;
    computing = computing | BIT(_pid)
}

/* flight.c begin_locked(), under the stripe lock. */
inline begin_locked(outcome, myround, waited)
{
    if
    :: kstate == EMPTY -> start_flight(outcome, myround)
    :: kstate == FLIGHT ->                  /* begin_on_flight() */
        if
#ifdef UNFIXED_11
        :: ALIVE(kowner - 1) && kround != lease_round ->
#else
        :: ALIVE(kowner - 1) && kround != lease_round && kowner != ME ->
#endif
            assert(kowner != ME);            /* never wait for oneself */
            outcome = WAIT; waited = kround
        :: else ->                           /* dead or overrun: take over */
            assert(!ALIVE(kowner - 1) || kround == lease_round
                   || kowner == ME);
            start_flight(outcome, myround)
        fi
    :: kstate == VALUE -> outcome = HIT
    :: kstate == ERROR ->                    /* begin_on_error() */
        if
        :: outcome = FAILED                  /* its round's, or not expired */
        :: kround != waited -> start_flight(outcome, myround)  /* expired */
        fi
    fi
}

/*
 * Every critical section below is one atomic step from the lock to the
 * last store before the wake-up (a Lipton reduction: nobody else can see
 * the shared state while the lock is held), with a crash_point() where
 * dying inside it leaves something different from dying just before or
 * after it: the lock held by a dead process, nothing stored.  The Reaper
 * kills between steps: after the stores, before the wake-up and the
 * release (the lost wake-up of RELIABILITY scenario 10).
 */

/* flight.c hc_flight_begin(): a store that finds the stripe corrupt
 * after linking the new item makes the caller rebuild and look again. */
inline flight_begin(outcome, myround, waited, died)
{
    atomic {
        lock_acquire_spec(died);
        rebuild_if(died);
        seq = fseq;                          /* fr_wait_seq, under the lock */
        crash_point();
        begin_locked(outcome, myround, waited);
        if
        :: outcome == COMPUTE && !corrupt_used ->
            corrupt_used = true;             /* HC_CORRUPT, then rebuild */
            computing = computing & ~BIT(_pid);
            if :: kstate = EMPTY :: skip fi; /* the rebuild keeps it, or not */
            seq = fseq;
            begin_locked(outcome, myround, waited)
        :: else -> skip
        fi
    }
    lock_release_spec()
}

/* compute.py get_or_compute(): begin; wait and begin again; compute and
 * publish (or abort with the error fn raised). */
inline get_or_compute()
{
    waited = 0;
    do
    :: flight_begin(outcome, myround, waited, died);
        if
        :: outcome == WAIT ->                /* hc_flight_wait(), a slice */
            /*
             * The slice ends (the waiter begins again) once it can make a
             * difference: the owner died, a lease ran out, or the key moved
             * on without a wake-up reaching us.  A slice that ends while
             * the owner lives within its lease only begins, finds the same
             * flight and sleeps again; leaving those out keeps the search
             * from taking a waiter that keeps re-taking the lock for a
             * livelock.  Not in runs without a death or an overrun lease,
             * where every wake-up must come from the round's end.
             */
            futex_wait_until(fseq, seq, FX_FLIGHT, timed_out,
                             MAY_TIME_OUT && (kstate != FLIGHT
                                              || kround != waited
                                              || !ALIVE(kowner - 1)
                                              || kround == lease_round));
            atomic { seq = 0; timed_out = false }   /* forget: fewer states */
        :: else -> break
        fi
    od;
    if
    :: outcome == COMPUTE ->
        atomic {
            lock_acquire_spec(died);
            rebuild_if(died);
            computing = computing & ~BIT(_pid);
            crash_point();
            if
            :: kstate == FLIGHT && kround == myround ->     /* own_flight() */
                if
                :: rounds++;                 /* hc_flight_publish() */
                    assert(rounds > last_value);
                    kstate = VALUE; kround = rounds; last_value = rounds
                :: kstate = ERROR            /* hc_flight_abort(err) */
                fi;
                fseq++; ended = true         /* hc_flight_wake(): the add */
            :: else -> skip                  /* HC_CONFLICT: fenced */
            fi
        }
        if
        :: ended -> futex_wake_all(FX_FLIGHT); ended = false   /* FUTEX_WAKE */
        :: else -> skip
        fi;
        lock_release_spec()
    :: else -> skip
    fi
}

/* table.c set_locked() / delete_locked() over whatever the key holds. */
inline write_key(deleting)
{
    atomic {
        lock_acquire_spec(died);
        rebuild_if(died);
        crash_point();
        if
        :: kstate == FLIGHT ->               /* a write ends a flight */
            wrote = true; fseq++; ended = true
        :: else -> skip
        fi;
        if
        :: deleting -> kstate = EMPTY
        :: else ->
            rounds++;
            kstate = VALUE; kround = rounds; last_value = rounds
        fi
    }
    if
    :: ended -> futex_wake_all(FX_FLIGHT); ended = false
    :: else -> skip
    fi;
    lock_release_spec()
}

active [N] proctype Worker()
{
    byte seq, outcome, myround, waited;
    bool died, timed_out, ended;

    {
        if
        :: get_or_compute()
        :: _pid == 2 -> write_key(false)
        :: _pid == 2 -> write_key(true)
        fi;
progress_done:
        skip
    } unless { !ALIVE(_pid) }
}

/* Time: the lease of one flight may run out, at any moment. */
active proctype Clock()
{
end_clock:
    atomic { kstate == FLIGHT && lease_round == 0 -> lease_round = kround }
}

#include "reaper.pml"
