/*-------------------------------------------------------------------------
 *
 * flight.c
 *	  Single-flight state machine on top of the table (see flight.h).
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

void
hc_flight_wake(hc_stripe *s)
{
    /* Pairs with the acquire load in begin() (via fr_wait_seq). */
    atomic_fetch_add_explicit(&s->sp_flight_seq, 1, memory_order_release);
    HC_INJECT("flight.wake.before_wake");
    hc_futex_wake(&s->sp_flight_seq, -1);
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
 * Make the key a FLIGHT owned by this process, carrying stale bytes (if
 * any) until stale_until.  The caller computes; its round is the item's
 * csn.
 */
static hc_status
start_flight(hc_writer *w, const hc_flight_request *rq, const uint8_t *stale,
             uint32_t stale_len, uint8_t stale_format, uint64_t stale_until,
             uint64_t value_expires, hc_flight_result *res)
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
    rec.fl_stale_until = stale != NULL ? stale_until : 0;
    rec.fl_value_expires = stale != NULL ? value_expires : 0;
    rec.fl_stale_format = stale_format;
    /* A private copy: storing may evict the item the stale bytes are in. */
    value = malloc(sizeof(rec) + stale_len);
    if (value == NULL)
        return HC_SYSTEM;
    memcpy(value, &rec, sizeof(rec));
    if (stale != NULL)
        memcpy(value + sizeof(rec), stale, stale_len);
    memset(&wr, 0, sizeof(wr));
    wr.wr_key = rq->fq_key;
    wr.wr_key_len = rq->fq_key_len;
    wr.wr_hash = rq->fq_hash;
    wr.wr_value = value;
    wr.wr_value_len = (uint32_t) sizeof(rec) + (stale ? stale_len : 0);
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

/* A FLIGHT exists: wait for it, serve its stale value, or take it over. */
static hc_status
begin_on_flight(hc_writer *w, const hc_flight_request *rq, hc_item *it,
                hc_flight_result *res)
{
    flight_record rec;
    uint32_t stale_len;

    if (it->it_value_len < sizeof(rec))
        return HC_CORRUPT;
    memcpy(&rec, item_value(it), sizeof(rec));
    stale_len = it->it_value_len - (uint32_t) sizeof(rec);
    if (w->w_now < rec.fl_lease_end
        && hc_slot_token_alive(w->w_cache->ca_seg, rec.fl_owner)) {
        if (rec.fl_stale_until > w->w_now) {
            res->fr_outcome = HC_FLIGHT_STALE;
            return copy_out(res, item_value(it) + sizeof(rec), stale_len,
                            rec.fl_stale_format);
        }
        res->fr_outcome = HC_FLIGHT_WAIT;
        res->fr_round = it->it_csn;
        return HC_OK;
    }
    /* The owner died or overran its lease: a new round, ours. */
    HC_INJECT("flight.takeover");
    res->fr_took_over = true;
    if (rec.fl_stale_until > w->w_now) {
        uint8_t *copy = malloc(stale_len ? stale_len : 1);
        hc_status st;

        if (copy == NULL)
            return HC_SYSTEM;
        memcpy(copy, item_value(it) + sizeof(rec), stale_len);
        st = start_flight(w, rq, copy, stale_len, rec.fl_stale_format,
                          rec.fl_stale_until, rec.fl_value_expires, res);
        free(copy);
        return st;
    }
    return start_flight(w, rq, NULL, 0, 0, 0, 0, res);
}

/* An ERROR exists: report it to its round's waiters, else compute anew. */
static hc_status
begin_on_error(hc_writer *w, const hc_flight_request *rq, hc_item *it,
               hc_flight_result *res)
{
    error_record rec;

    if (it->it_value_len < sizeof(rec))
        return HC_CORRUPT;
    memcpy(&rec, item_value(it), sizeof(rec));
    if (rec.er_round == rq->fq_waited_round
        || !hc_table_expired(it, w->w_now, false)) {
        res->fr_outcome = HC_FLIGHT_FAILED;
        res->fr_round = rec.er_round;
        return copy_out(res, item_value(it) + sizeof(rec),
                        it->it_value_len - (uint32_t) sizeof(rec),
                        it->it_format);
    }
    return start_flight(w, rq, NULL, 0, 0, 0, 0, res);
}

/* A value exists: a hit, or a round that may serve it stale meanwhile. */
static hc_status
begin_on_value(hc_writer *w, const hc_flight_request *rq, hc_item *it,
               hc_flight_result *res)
{
    uint64_t expires = atomic_load_explicit(&it->it_expires,
                                            memory_order_relaxed);
    uint64_t stale_until;
    uint8_t *copy;
    hc_status st;

    if (!hc_table_expired(it, w->w_now, false) && !rq->fq_refresh) {
        res->fr_outcome = HC_FLIGHT_HIT;
        res->fr_expires = expires;
        res->fr_delta_ms = it->it_delta_ms;
        return copy_out(res, item_value(it), it->it_value_len, it->it_format);
    }
    if (hc_table_expired(it, w->w_now, true))
        return start_flight(w, rq, NULL, 0, 0, 0, 0, res);
    /* Fresh (early refresh) or within its stale window: serve it meanwhile. */
    stale_until = expires == HC_FOREVER ? HC_FOREVER
        : expires + (uint64_t) it->it_stale_s * HC_NS_PER_SEC;
    copy = malloc(it->it_value_len ? it->it_value_len : 1);
    if (copy == NULL)
        return HC_SYSTEM;
    memcpy(copy, item_value(it), it->it_value_len);
    st = start_flight(w, rq, copy, it->it_value_len, it->it_format,
                      stale_until, expires, res);
    free(copy);
    return st;
}

static hc_status
begin_locked(hc_writer *w, const hc_flight_request *rq, hc_flight_result *res)
{
    hc_status st;
    hc_item *it = hc_table_find(w, rq->fq_hash, rq->fq_key, rq->fq_key_len,
                                &st);

    /* Under the lock: any end of a flight after this read changes it. */
    res->fr_wait_seq = atomic_load_explicit(&w->w_stripe->sp_flight_seq,
                                            memory_order_acquire);
    if (st == HC_CORRUPT)
        return st;
    if (it == NULL)
        return start_flight(w, rq, NULL, 0, 0, 0, 0, res);
    if (it->it_format == HC_FORMAT_FLIGHT)
        return begin_on_flight(w, rq, it, res);
    if (it->it_format == HC_FORMAT_ERROR)
        return begin_on_error(w, rq, it, res);
    return begin_on_value(w, rq, it, res);
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
        free(res->fr_data);
        memset(res, 0, sizeof(*res));
        hc_table_rebuild(&w);
        st = begin_locked(&w, rq, res);
    }
    hc_table_unlock(&w);
    return st;
}

hc_status
hc_flight_wait(hc_cache *c, uint64_t hash, uint32_t seq, uint64_t deadline)
{
    hc_stripe *s = (hc_stripe *) (c->ca_base + c->ca_layout.cl_stripes_off)
        + (hash & (c->ca_layout.cl_nstripes - 1));

    return hc_futex_wait(&s->sp_flight_seq, seq,
                         hc_deadline_min_step(deadline, HC_FLIGHT_PROBE_NS));
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
        st = hc_table_store(&w, wr, &csn);
    HC_INJECT("flight.publish.stored");
    if (st == HC_OK)
        hc_flight_wake(w.w_stripe);
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
    HC_INJECT("flight.abort.stored");
    if (st == HC_OK)
        hc_flight_wake(w.w_stripe);
    hc_table_unlock(&w);
    return st;
}
