/*-------------------------------------------------------------------------
 *
 * flight.h
 *	  Single flight: one process computes a missing key, the others wait
 *	  for its result (or serve the old value meanwhile).
 *
 * A key being computed holds a FLIGHT item in the table, in the place of
 * its value: owner (the computing process's slot token), lease deadline
 * and, when the caller allows stale values, a copy of the old value with
 * the time until which it may still be served.  The FLIGHT item's commit
 * sequence number is the round: a fencing token that publish and abort
 * must present.  Every transition happens under the key's stripe lock:
 *
 *	absent / expired --begin--> FLIGHT(owner = me)       you compute
 *	FLIGHT, owner alive and in lease --begin--> wait (or the stale value)
 *	FLIGHT, owner dead or lease over --begin--> FLIGHT(owner = me), a new
 *	                                            round: you take over
 *	FLIGHT(round r) --publish(r)--> the value           waiters wake
 *	FLIGHT(round r) --abort(r, error)--> ERROR(r)       waiters of r fail
 *	anything --set / delete by anyone--> as they say    a late publish(r)
 *	                                                    is refused
 *
 * So a paused owner (SIGSTOP) that wakes after its lease was taken over,
 * or after a user set or deleted the key, cannot overwrite the newer
 * state: publish finds another round and returns HC_CONFLICT.
 *
 * Waiting.  Waiters sleep on their key's wake word: one of the stripe's
 * HC_FLIGHT_WORDS futex words, picked by hash bits (table.h).  The end of
 * a key's flight increments that word and wakes its sleepers, the key's
 * own waiters and those of the keys that share the word (a collision
 * wakes a few extra, never misses one); a clear or a rebuild of the
 * stripe, which may drop any flight, does it to every word.  Waiters
 * sleep in slices of HC_FLIGHT_PROBE_NS: after each slice they call begin again,
 * which probes the owner's process slot (a lock the kernel releases when
 * the owner dies) and its lease.  A dead owner is thus noticed within one
 * slice; no waiter ever sleeps unboundedly, and a lost wake-up (an owner
 * killed between publishing and waking) costs one slice.
 *
 * Notes on synchronization
 *
 * Early refresh.  A FLIGHT that carries an old value still fresh (an
 * early refresh is under way) is the key's value to every user
 * operation until the refresh publishes or that value expires: get,
 * gets, ttl, `in`, len and keys see it; add fails; replace, set, delete,
 * compare-and-set and incr write over it (a write wins: the refresh's late
 * publish is refused); touch reports it present but gives the flight no
 * expiry (the refresh sets the key's next lifetime).  Past the old
 * value's expiry it is served only to get_or_compute callers, as a stale
 * value, and is absent to everything else, as an expired value is.
 *
 * FLIGHT and ERROR items are ordinary items (table.h) with internal
 * formats; all reads and writes of them happen under the stripe lock.
 * Every other user-visible operation treats them as absent.  An ERROR item is
 * never reaped by its expiry alone (a get() or a sweep): only a new round
 * (which carries the error for the late waiters of the failed one), a
 * write, or eviction when the stripe is full removes it.
 * sp_flight_words: a key's word is incremented with a release RMW after
 * the end of its flight is stored, and read with acquire by its waiters
 * before they sleep.  Both happen under the stripe lock (begin reads it
 * there), so an end after the read changes the word and the futex wait
 * returns at once.
 * The FUTEX_WAKE waits until the writer has closed its epoch and released
 * the lock (sp_flight_wake_pending marks the words to wake): a sleeper
 * woken earlier would fail its lock-free read and queue on that lock.  A
 * writer that dies under the lock leaves its words marked, and the next
 * unlock of the stripe wakes them; one that dies between its unlock and
 * its wake (it took the marks under the lock: clearing them later would
 * race the next holder's) leaves its sleepers to look again after their
 * probe slice (HC_FLIGHT_PROBE_NS), as any lost wake-up does.
 * sp_flight_wakes, sp_flight_woken: counts of FUTEX_WAKE calls and of the
 * sleepers they woke, added to after the unlock, read relaxed.
 *
 *-------------------------------------------------------------------------
 */
#ifndef HC_FLIGHT_H
#define HC_FLIGHT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "table.h"

#define HC_FORMAT_FLIGHT 0xFE
#define HC_FORMAT_ERROR 0xFD
/* A build-time knob, as HC_LOCK_PROBE_NS (lock.h) is, for the same tests. */
#ifndef HC_FLIGHT_PROBE_NS
#define HC_FLIGHT_PROBE_NS (UINT64_C(50) * HC_NS_PER_MS)
#endif

/*
 * The value of a FLIGHT item: this record, then either the old value's
 * bytes, if the flight may serve them (fl_stale_until > 0), or the error
 * of the round that failed before it (fl_failed_round > 0), never both.
 * Until fl_value_expires the old value's bytes are still fresh (an early
 * refresh is under way), and a plain get() returns them too.
 *
 * The failed round's error rides along because a new round may start
 * (negative_ttl=0 makes an ERROR item expired at birth) before every
 * waiter of the failed round has looked again: a waiter of that round
 * still gets its exception, never the next round's outcome.
 */
typedef struct hc_flight_record {
    uint32_t fl_owner;          /* slot token of the computing process */
    uint8_t fl_stale_format;
    uint8_t fl_pad[3];
    uint64_t fl_lease_end;      /* monotonic ns */
    uint64_t fl_stale_until;    /* monotonic ns; 0: no old value */
    uint64_t fl_value_expires;  /* monotonic ns: the old value's own expiry */
    uint64_t fl_failed_round;   /* the round whose error follows, or 0 */
} hc_flight_record;

typedef enum hc_flight_outcome {
    HC_FLIGHT_HIT,          /* a fresh value (copied into the result) */
    HC_FLIGHT_STALE,        /* another computes; here is the old value */
    HC_FLIGHT_COMPUTE,      /* you compute, for round `round` */
    HC_FLIGHT_WAIT,         /* another computes round `round`: wait, retry */
    HC_FLIGHT_FAILED,       /* the round failed: the error bytes are copied */
} hc_flight_outcome;

typedef struct hc_flight_request {
    const void *fq_key;
    uint32_t fq_key_len;
    uint64_t fq_hash;
    uint64_t fq_lease_ns;       /* how long the owner may take */
    uint64_t fq_waited_round;   /* the round this caller waited for, or 0 */
    bool fq_refresh;            /* start a round although the value is fresh
                                 * (early refresh), serving it meanwhile */
} hc_flight_request;

typedef struct hc_flight_result {
    hc_flight_outcome fr_outcome;
    uint8_t *fr_data;           /* malloc'ed copy (HIT, STALE, FAILED) */
    uint32_t fr_len;
    uint8_t fr_format;
    uint64_t fr_round;          /* COMPUTE: yours; WAIT, STALE, FAILED:
                                 * theirs */
    uint32_t fr_wait_seq;       /* WAIT: sleep while the key's wake word
                                 * is this */
    uint64_t fr_expires;        /* HIT: the value's expiry (monotonic ns) */
    uint32_t fr_delta_ms;       /* HIT: how long computing it took */
    bool fr_took_over;          /* COMPUTE: the last owner died or overran */
} hc_flight_result;

hc_status hc_flight_begin(hc_cache *c, const hc_flight_request *rq,
                          hc_flight_result *res);

/* Sleep while the wake word of the key of hash is seq, until the
 * deadline or one probe slice, whichever is first. */
hc_status hc_flight_wait(hc_cache *c, uint64_t hash, uint32_t seq,
                         uint64_t deadline);

/* Store the value if round is still the key's flight; else HC_CONFLICT. */
hc_status hc_flight_publish(hc_cache *c, const hc_write *wr, uint64_t round);

/*
 * End round without a value: with error bytes, leave an ERROR item (its
 * waiters fail with it; it counts as absent once err_expires passes);
 * without, remove the flight.  HC_CONFLICT if round is no longer the
 * key's flight.
 */
hc_status hc_flight_abort(hc_cache *c, const void *key, uint32_t key_len,
                          uint64_t hash, uint64_t round, const void *err,
                          uint32_t err_len, uint64_t err_expires);

/* Bump the word of the key of hash (shared with the keys of its class)
 * and mark it for waking at the unlock: table.c does it whenever a FLIGHT
 * item is removed, which is how every flight ends.  The caller holds the
 * stripe lock. */
void hc_flight_wake(hc_stripe *s, uint64_t hash);

/* hc_flight_wake() for every word of the stripe (a clear or a rebuild,
 * which may drop any flight).  The caller holds the stripe lock. */
void hc_flight_wake_all(hc_stripe *s);

/* The words marked for waking, now unmarked; the caller holds the stripe
 * lock and passes them to hc_flight_wake_pending() once it released it. */
uint32_t hc_flight_take_pending(hc_stripe *s);

/* FUTEX_WAKE the sleepers of words (a set from hc_flight_take_pending()),
 * after the stripe lock is released. */
void hc_flight_wake_pending(hc_stripe *s, uint32_t words);

/* FUTEX_WAKE calls issued at the ends of flights, and the sleepers they
 * woke, summed over the stripes (statistics: read without the locks). */
void hc_flight_wake_counts(hc_cache *c, uint64_t *wakes, uint64_t *woken);

/*
 * The old value a FLIGHT item's bytes (data, len: as a read copied them)
 * still carry during an early refresh: true, with *value and *value_len
 * pointing into data, *format its format and *expires its expiry, if
 * there is one still fresh at now.  Until that expiry the key is present
 * to every user operation, with that value (see "Early refresh" above).
 *
 * item_expires is the FLIGHT item's own it_expires (as the same read
 * copied it): HC_FOREVER as stored, since the lease governs the flight,
 * but hc_cache_expire_all() moves it to the moment it ran.  The carried
 * value is fresh until the earlier of the two: expiring a cache (a
 * TieredCache host that may have missed invalidations) expires the
 * values its refreshing flights carry, as it does every other value,
 * without rewriting their records under lock-free readers.  The flight
 * itself goes on; its stale window is the record's, kept.
 */
bool hc_flight_refreshing_value(const void *data, size_t len, uint64_t now,
                                uint64_t item_expires, const void **value,
                                size_t *value_len, uint8_t *format,
                                uint64_t *expires);

/*
 * hc_flight_refreshing_value() of an item in the table (the caller holds
 * its stripe lock): does it serve an old value at now, and until when.
 */
bool hc_flight_item_serves_value(const hc_item *it, uint64_t now,
                                 uint64_t *expires);

/*
 * True if it is a FLIGHT nobody will finish: its lease ended or its owner
 * is dead.  Eviction and sweeps remove such a flight like an expired item
 * (a waiter would take it over anyway).  The caller holds the stripe lock.
 */
bool hc_flight_abandoned(hc_cache *c, const hc_item *it, uint64_t now);

#endif /* HC_FLIGHT_H */
