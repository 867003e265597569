/*-------------------------------------------------------------------------
 *
 * flight.c
 *	  Single-flight state machine (see flight.h).
 *
 * Layering.  This file builds on the table's internals (table_internal.h:
 * stripes, items, the stripe lock) and owns what FLIGHT and ERROR items
 * mean, the binding included: it asks hc_flight_refreshing_value() rather
 * than decoding a flight record.  The table knows flights only as items
 * of an internal format that it must not evict (their waiters would
 * compute again) and whose replacement by a write ends them
 * (hc_flight_wake); that is why table.c includes flight.h.
 *
 *-------------------------------------------------------------------------
 */
#include "flight.h"

#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "futex.h"
#include "inject.h"
#include "slot.h"
#include "table_internal.h"

typedef hc_flight_record flight_record;

/* The value of an ERROR item: the round it ended, then the error bytes. */
typedef struct error_record {
    uint64_t er_round;
} error_record;

static const uint8_t *
item_value(const hc_item *it)
{
    return (const uint8_t *) (it + 1) + it->it_key_len;
}

/* Until when the old value a record carries is fresh: its own expiry,
 * capped by its item's (hc_cache_expire_all() moves that one; flight.h). */
static uint64_t
carried_value_expires(const flight_record *rec, uint64_t item_expires)
{
    return rec->fl_value_expires < item_expires ? rec->fl_value_expires
                                                : item_expires;
}

bool
hc_flight_refreshing_value(const void *data, size_t len, uint64_t now,
                           uint64_t item_expires, const void **value,
                           size_t *value_len, uint8_t *format,
                           uint64_t *expires)
{
    flight_record rec;
    uint64_t until;

    if (len < sizeof(rec))
        return false;
    memcpy(&rec, data, sizeof(rec));   /* data need not be aligned */
    until = carried_value_expires(&rec, item_expires);
    if (rec.fl_stale_until == 0 || now >= until
        || rec.fl_stale_format >= HC_FORMAT_INTERNAL)
        return false;
    *value = (const uint8_t *) data + sizeof(rec);
    *value_len = len - sizeof(rec);
    *format = rec.fl_stale_format;
    *expires = until;
    return true;
}

bool
hc_flight_item_serves_value(const hc_item *it, uint64_t now,
                            uint64_t *expires)
{
    const void *value;
    size_t len;
    uint8_t format;
    uint64_t item_expires;

    /* relaxed: hc_cache_expire_all() stores it under the stripe lock,
     * which the caller holds (flight.h) */
    item_expires = atomic_load_explicit(&((hc_item *) it)->it_expires,
                                        memory_order_relaxed);
    return it->it_format == HC_FORMAT_FLIGHT
        && hc_flight_refreshing_value(item_value(it), it->it_value_len, now,
                                      item_expires, &value, &len, &format,
                                      expires);
}

/* Which of its stripe's futex words the waiters of the key of hash
 * sleep on (table.h). */
static uint32_t
wake_word_index(uint64_t hash)
{
    return (uint32_t) (hash >> 28) & (HC_FLIGHT_WORDS - 1);
}

static _Atomic uint32_t *
wake_word(hc_stripe *s, uint64_t hash)
{
    return &s->sp_flight_words[wake_word_index(hash)];
}

/*
 * Bump one word and mark it for waking; under the stripe lock.  The
 * FUTEX_WAKE itself waits for hc_flight_wake_pending(), after the unlock:
 * a sleeper woken inside the writer's open epoch would only fail its
 * lock-free read and queue on the lock the writer still holds.
 */
static void
bump_word(hc_stripe *s, uint32_t i)
{
    /* Pairs with the acquire load in begin_locked() (via fr_wait_seq). */
    atomic_fetch_add_explicit(&s->sp_flight_words[i], 1,
                              memory_order_release);
    /* Under the lock, as is every access but the exchange that takes
     * the set (also under it): relaxed. */
    atomic_fetch_or_explicit(&s->sp_flight_wake_pending, UINT32_C(1) << i,
                             memory_order_relaxed);
}

void
hc_flight_wake(hc_stripe *s, uint64_t hash)
{
    bump_word(s, wake_word_index(hash));
}

void
hc_flight_wake_all(hc_stripe *s)
{
    uint32_t i;

    for (i = 0; i < HC_FLIGHT_WORDS; i++)
        bump_word(s, i);
}

uint32_t
hc_flight_take_pending(hc_stripe *s)
{
    /* Every unlock comes here: a load, and a write only when a flight
     * ended, keeps the line its waiters read from bouncing on each set. */
    if (atomic_load_explicit(&s->sp_flight_wake_pending,
                             memory_order_relaxed) == 0)
        return 0;
    return atomic_exchange_explicit(&s->sp_flight_wake_pending, 0,
                                    memory_order_relaxed);
}

void
hc_flight_wake_pending(hc_stripe *s, uint32_t words)
{
    uint64_t woken = 0;
    uint32_t i;

    if (words == 0)
        return;
    HC_INJECT("flight.wake.before_wake");
    for (i = 0; i < HC_FLIGHT_WORDS; i++)
        if (words & (UINT32_C(1) << i))
            woken += (uint64_t) hc_futex_wake(&s->sp_flight_words[i], -1);
    /* Statistics, read without the lock; after the unlock two processes
     * may count at once, hence the RMW.  Relaxed: they order nothing. */
    atomic_fetch_add_explicit(&s->sp_flight_wakes,
                              (uint64_t) __builtin_popcount(words),
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&s->sp_flight_woken, woken,
                              memory_order_relaxed);
}

void
hc_flight_wake_counts(hc_cache *c, uint64_t *wakes, uint64_t *woken)
{
    const hc_stripe *s = (const hc_stripe *) (c->ca_base
                                              + c->ca_layout.cl_stripes_off);
    uint32_t i;

    *wakes = *woken = 0;
    for (i = 0; i < c->ca_layout.cl_nstripes; i++) {
        *wakes += atomic_load_explicit(&s[i].sp_flight_wakes,
                                       memory_order_relaxed);
        *woken += atomic_load_explicit(&s[i].sp_flight_woken,
                                       memory_order_relaxed);
    }
}

bool
hc_flight_abandoned(hc_cache *c, const hc_item *it, uint64_t now)
{
    flight_record rec;

    if (it->it_format != HC_FORMAT_FLIGHT || it->it_value_len < sizeof(rec))
        return it->it_format == HC_FORMAT_FLIGHT;  /* damaged: not worth keeping */
    memcpy(&rec, item_value(it), sizeof(rec));
    return now >= rec.fl_lease_end
        || !hc_slot_token_alive(c->ca_seg, rec.fl_owner);
}

static hc_status
copy_out(hc_flight_result *res, const uint8_t *data, uint32_t len,
         uint8_t format)
{
    res->fr_data = malloc(len ? len : 1);
    if (res->fr_data == NULL)
        return HC_SYSTEM;
    memcpy(res->fr_data, data, len);
    res->fr_len = len;
    res->fr_format = format;
    return HC_OK;
}

/*
 * What a new FLIGHT item carries after its record: the old value (served
 * stale meanwhile) or the error of the round that failed before it.
 */
typedef struct carried {
    const uint8_t *cr_bytes;    /* NULL: nothing */
    uint32_t cr_len;
    uint8_t cr_stale_format;
    uint64_t cr_stale_until;
    uint64_t cr_value_expires;
    uint64_t cr_failed_round;
} carried;

static const carried nothing_carried = {NULL, 0, 0, 0, 0, 0};

/*
 * Make the key a FLIGHT owned by this process, carrying cr.  The caller
 * computes; its round is the item's csn.
 */
static hc_status
start_flight(hc_writer *w, const hc_flight_request *rq, const carried *cr,
             hc_flight_result *res)
{
    flight_record rec;
    uint8_t *value;
    hc_write wr;
    hc_status st;

    memset(&rec, 0, sizeof(rec));
    st = hc_slot_self(w->w_cache->ca_seg, &rec.fl_owner);
    if (st != HC_OK)
        return st;
    rec.fl_lease_end = w->w_now + rq->fq_lease_ns;
    rec.fl_stale_until = cr->cr_bytes != NULL ? cr->cr_stale_until : 0;
    rec.fl_value_expires = cr->cr_bytes != NULL ? cr->cr_value_expires : 0;
    rec.fl_stale_format = cr->cr_stale_format;
    rec.fl_failed_round = cr->cr_bytes != NULL ? cr->cr_failed_round : 0;
    /* A private copy: storing may evict the item the bytes are in. */
    value = malloc(sizeof(rec) + cr->cr_len);
    if (value == NULL)
        return HC_SYSTEM;
    memcpy(value, &rec, sizeof(rec));
    if (cr->cr_bytes != NULL)
        memcpy(value + sizeof(rec), cr->cr_bytes, cr->cr_len);
    memset(&wr, 0, sizeof(wr));
    wr.wr_key = rq->fq_key;
    wr.wr_key_len = rq->fq_key_len;
    wr.wr_hash = rq->fq_hash;
    wr.wr_value = value;
    wr.wr_value_len = (uint32_t) sizeof(rec)
        + (cr->cr_bytes != NULL ? cr->cr_len : 0);
    wr.wr_format = HC_FORMAT_FLIGHT;
    wr.wr_expires = HC_FOREVER;     /* the lease governs, not a ttl */
    wr.wr_mode = HC_SET_ALWAYS;
    HC_INJECT("flight.begin.before_store");
    st = hc_table_store(w, &wr, &res->fr_round);
    free(value);
    HC_INJECT("flight.begin.stored");
    if (st == HC_OK)
        res->fr_outcome = HC_FLIGHT_COMPUTE;
    return st;
}

/* Start a flight carrying a copy of bytes that live in the item it replaces. */
static hc_status
start_flight_copying(hc_writer *w, const hc_flight_request *rq, carried cr,
                     hc_flight_result *res)
{
    uint8_t *copy = malloc(cr.cr_len ? cr.cr_len : 1);
    hc_status st;

    if (copy == NULL)
        return HC_SYSTEM;
    memcpy(copy, cr.cr_bytes, cr.cr_len);
    cr.cr_bytes = copy;
    st = start_flight(w, rq, &cr, res);
    free(copy);
    return st;
}

/* The round this caller waited for failed: hand it that round's error. */
static hc_status
report_failure(hc_flight_result *res, uint64_t round, const uint8_t *err,
               uint32_t err_len)
{
    res->fr_outcome = HC_FLIGHT_FAILED;
    res->fr_round = round;
    return copy_out(res, err, err_len, HC_FORMAT_ERROR);
}

/* A FLIGHT exists: wait for it, serve its stale value, or take it over. */
static hc_status
begin_on_flight(hc_writer *w, const hc_flight_request *rq, hc_item *it,
                hc_flight_result *res)
{
    flight_record rec;
    carried cr = nothing_carried;

    if (it->it_value_len < sizeof(rec))
        return HC_CORRUPT;
    memcpy(&rec, item_value(it), sizeof(rec));
    cr.cr_len = it->it_value_len - (uint32_t) sizeof(rec);
    if (rec.fl_failed_round != 0 && rec.fl_failed_round == rq->fq_waited_round)
        return report_failure(res, rec.fl_failed_round,
                              item_value(it) + sizeof(rec), cr.cr_len);
    if (w->w_now < rec.fl_lease_end
        && hc_slot_token_alive(w->w_cache->ca_seg, rec.fl_owner)) {
        /* WAIT's round, and STALE's: a caller that would rather wait
         * than serve the old value waits for this round (the tier's). */
        res->fr_round = it->it_csn;
        if (rec.fl_stale_until > w->w_now) {
            res->fr_outcome = HC_FLIGHT_STALE;
            return copy_out(res, item_value(it) + sizeof(rec), cr.cr_len,
                            rec.fl_stale_format);
        }
        res->fr_outcome = HC_FLIGHT_WAIT;
        return HC_OK;
    }
    /* The owner died or overran its lease: a new round, ours. */
    HC_INJECT("flight.takeover");
    res->fr_took_over = true;
    if (rec.fl_stale_until > w->w_now || rec.fl_failed_round != 0) {
        cr.cr_bytes = item_value(it) + sizeof(rec);
        cr.cr_stale_format = rec.fl_stale_format;
        cr.cr_stale_until = rec.fl_stale_until;
        /* The new item's expiry is HC_FOREVER: the cap an expire_all put
         * on the old one must ride in the record, or the value it expired
         * would be fresh again for the new round. relaxed: under the
         * stripe lock, which orders it against expire_now's store. */
        cr.cr_value_expires = carried_value_expires(
            &rec, atomic_load_explicit(&it->it_expires, memory_order_relaxed));
        cr.cr_failed_round = rec.fl_failed_round;
        return start_flight_copying(w, rq, cr, res);
    }
    return start_flight(w, rq, &nothing_carried, res);
}

/*
 * An ERROR exists: report it to its round's waiters and, while it lasts
 * (negative_ttl), to everyone; else compute anew, carrying the error for
 * the failed round's waiters that have not looked yet.
 */
static hc_status
begin_on_error(hc_writer *w, const hc_flight_request *rq, hc_item *it,
               hc_flight_result *res)
{
    error_record rec;
    carried cr = nothing_carried;

    if (it->it_value_len < sizeof(rec))
        return HC_CORRUPT;
    memcpy(&rec, item_value(it), sizeof(rec));
    cr.cr_bytes = item_value(it) + sizeof(rec);
    cr.cr_len = it->it_value_len - (uint32_t) sizeof(rec);
    if (rec.er_round == rq->fq_waited_round
        || !hc_table_expired(it, w->w_now, false))
        return report_failure(res, rec.er_round, cr.cr_bytes, cr.cr_len);
    cr.cr_failed_round = rec.er_round;
    return start_flight_copying(w, rq, cr, res);
}

/* A value exists: a hit, or a round that may serve it stale meanwhile. */
static hc_status
begin_on_value(hc_writer *w, const hc_flight_request *rq, hc_item *it,
               hc_flight_result *res)
{
    uint64_t expires = atomic_load_explicit(&it->it_expires,
                                            memory_order_relaxed);
    carried cr = nothing_carried;

    if (!hc_table_expired(it, w->w_now, false) && !rq->fq_refresh) {
        res->fr_outcome = HC_FLIGHT_HIT;
        res->fr_expires = expires;
        res->fr_delta_ms = it->it_delta_ms;
        return copy_out(res, item_value(it), it->it_value_len, it->it_format);
    }
    if (hc_table_expired(it, w->w_now, true))
        return start_flight(w, rq, &nothing_carried, res);
    /* Fresh (early refresh) or within its stale window: serve it meanwhile. */
    cr.cr_bytes = item_value(it);
    cr.cr_len = it->it_value_len;
    cr.cr_stale_format = it->it_format;
    cr.cr_stale_until = expires == HC_FOREVER ? HC_FOREVER
        : expires + (uint64_t) it->it_stale_s * HC_NS_PER_SEC;
    cr.cr_value_expires = expires;
    return start_flight_copying(w, rq, cr, res);
}

static hc_status
begin_locked(hc_writer *w, const hc_flight_request *rq, hc_flight_result *res)
{
    hc_status st;
    hc_item *it = hc_table_find(w, rq->fq_hash, rq->fq_key, rq->fq_key_len,
                                &st);

    /* Under the lock: any end of this key's flight after this read (or a
     * clear or rebuild of the stripe) changes the key's word. */
    res->fr_wait_seq = atomic_load_explicit(wake_word(w->w_stripe,
                                                      rq->fq_hash),
                                            memory_order_acquire);
    if (st == HC_CORRUPT)
        return st;
    /* A tombstone (commit.h) is a delete kept for snapshots: absent. */
    if (it == NULL || it->it_format == HC_FORMAT_TOMBSTONE)
        return start_flight(w, rq, &nothing_carried, res);
    if (it->it_format == HC_FORMAT_FLIGHT)
        return begin_on_flight(w, rq, it, res);
    if (it->it_format == HC_FORMAT_ERROR)
        return begin_on_error(w, rq, it, res);
    return begin_on_value(w, rq, it, res);
}

/* The key's item if it is the FLIGHT of round; else NULL. */
static hc_item *
own_flight(hc_writer *w, const void *key, uint32_t key_len, uint64_t hash,
           uint64_t round, hc_status *st)
{
    hc_item *it = hc_table_find(w, hash, key, key_len, st);

    if (it != NULL && (it->it_format != HC_FORMAT_FLIGHT
                       || it->it_csn != round))
        it = NULL;
    return it;
}

/*
 * Begin again after rebuilding the stripe.  If the failed attempt had
 * linked a FLIGHT of its own (round made) and the rebuild kept it, that
 * round is this caller's to compute: it names us, alive and in lease, so
 * begin would otherwise wait (or serve stale) a whole lease for itself.
 */
static hc_status
begin_after_rebuild(hc_writer *w, const hc_flight_request *rq,
                    hc_flight_result *res, uint64_t made)
{
    hc_status st;

    if (made != 0
        && own_flight(w, rq->fq_key, rq->fq_key_len, rq->fq_hash, made, &st)
           != NULL) {
        res->fr_outcome = HC_FLIGHT_COMPUTE;
        res->fr_round = made;
        return HC_OK;
    }
    return begin_locked(w, rq, res);
}

hc_status
hc_flight_begin(hc_cache *c, const hc_flight_request *rq,
                hc_flight_result *res)
{
    hc_writer w;
    hc_status st;

    memset(res, 0, sizeof(*res));
    st = hc_table_lock(c, rq->fq_hash, &w);
    if (st != HC_OK)
        return st;
    st = begin_locked(&w, rq, res);
    if (st == HC_CORRUPT) {
        /* Set if the failed attempt filled a FLIGHT item of its own. */
        uint64_t made = res->fr_round;

        free(res->fr_data);
        memset(res, 0, sizeof(*res));
        hc_table_rebuild(&w);
        st = begin_after_rebuild(&w, rq, res, made);
    }
    hc_table_unlock(&w);
    return st;
}

hc_status
hc_flight_wait(hc_cache *c, uint64_t hash, uint32_t seq, uint64_t deadline)
{
    hc_stripe *s = (hc_stripe *) (c->ca_base + c->ca_layout.cl_stripes_off)
        + (hash & (c->ca_layout.cl_nstripes - 1));

    return hc_futex_wait(wake_word(s, hash), seq,
                         hc_deadline_min_step(deadline, HC_FLIGHT_PROBE_NS));
}

hc_status
hc_flight_publish(hc_cache *c, const hc_write *wr, uint64_t round)
{
    uint64_t csn;
    hc_writer w;
    hc_status st = hc_table_lock(c, wr->wr_hash, &w);

    if (st != HC_OK)
        return st;
    if (own_flight(&w, wr->wr_key, wr->wr_key_len, wr->wr_hash, round,
                   &st) == NULL)
        st = st == HC_CORRUPT ? HC_CORRUPT : HC_CONFLICT;
    else
        st = hc_table_store(&w, wr, &csn);     /* wakes the waiters */
    HC_INJECT("flight.publish.stored");
    hc_table_unlock(&w);
    return st;
}

static hc_status
store_error(hc_writer *w, const void *key, uint32_t key_len, uint64_t hash,
            uint64_t round, const void *err, uint32_t err_len,
            uint64_t err_expires)
{
    error_record rec = {round};
    uint8_t *value = malloc(sizeof(rec) + err_len);
    uint64_t csn;
    hc_write wr;
    hc_status st;

    if (value == NULL)
        return HC_SYSTEM;
    memcpy(value, &rec, sizeof(rec));
    memcpy(value + sizeof(rec), err, err_len);
    memset(&wr, 0, sizeof(wr));
    wr.wr_key = key;
    wr.wr_key_len = key_len;
    wr.wr_hash = hash;
    wr.wr_value = value;
    wr.wr_value_len = (uint32_t) sizeof(rec) + err_len;
    wr.wr_format = HC_FORMAT_ERROR;
    wr.wr_expires = err_expires;
    st = hc_table_store(w, &wr, &csn);
    free(value);
    return st;
}

hc_status
hc_flight_abort(hc_cache *c, const void *key, uint32_t key_len, uint64_t hash,
                uint64_t round, const void *err, uint32_t err_len,
                uint64_t err_expires)
{
    hc_writer w;
    hc_item *it;
    hc_status st = hc_table_lock(c, hash, &w);

    if (st != HC_OK)
        return st;
    it = own_flight(&w, key, key_len, hash, round, &st);
    if (it == NULL)
        st = st == HC_CORRUPT ? HC_CORRUPT : HC_CONFLICT;
    else if (err != NULL)
        st = store_error(&w, key, key_len, hash, round, err, err_len,
                         err_expires);
    else
        st = hc_table_remove(&w, it);
    /* Either way the FLIGHT item went, which woke its waiters. */
    HC_INJECT("flight.abort.stored");
    hc_table_unlock(&w);
    return st;
}
