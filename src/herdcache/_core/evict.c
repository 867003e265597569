/*-------------------------------------------------------------------------
 *
 * evict.c
 *	  SIEVE and S3-FIFO over a stripe's queue (see evict.h).
 *
 * Layering: built on table_internal.h as flight.c is.  Every function
 * here runs under the stripe lock; the lock-free half of the policies is
 * hc_evict_hit() in evict.h.  A queue link read from shared memory is
 * followed only through hc_table_queue_item(), which checks it names an
 * item, and a damaged one makes the caller rebuild the stripe.
 *
 *-------------------------------------------------------------------------
 */
#include "evict.h"

#include "flight.h"
#include "inject.h"
#include "table_internal.h"

/* The frequency bits of an item are its own: it spans at least 4 units. */
_Static_assert(sizeof(hc_item) + 1 > (HC_FREQ_BITS - 1) * HC_UNIT,
               "an item's frequency bits lie inside its own block");

typedef hc_writer writer;

const char *
hc_eviction_name(hc_eviction e)
{
    switch (e) {
    case HC_EVICTION_SIEVE:
        return "sieve";
    case HC_EVICTION_S3FIFO:
        return "s3fifo";
    default:
        return NULL;
    }
}

static bool
s3fifo(const writer *w)
{
    return w->w_cache->ca_eviction == HC_EVICTION_S3FIFO;
}

static hc_item *
item_of(const writer *w, uint32_t unit)
{
    return hc_alloc_ptr(&w->w_av, unit);
}

/* ---------------------------------------------------------------------- */
/* Frequency bits (relaxed throughout: see "visited map" in evict.h)      */
/* ---------------------------------------------------------------------- */

static void
bit_clear(_Atomic uint64_t *map, uint32_t unit)
{
    atomic_fetch_and_explicit(&map[unit >> 6], ~(UINT64_C(1) << (unit & 63)),
                              memory_order_relaxed);
}

static uint32_t
freq_of(const writer *w, uint32_t unit)
{
    uint32_t k, n = 0;

    for (k = 0; k < HC_FREQ_BITS; k++)
        n += hc_evict_bit(w->w_visited, unit + k);
    return n;
}

/* Lower the frequency to n (<= its value): clear its highest bits. */
static void
freq_lower_to(const writer *w, uint32_t unit, uint32_t n)
{
    uint32_t k, have = 0;

    for (k = 0; k < HC_FREQ_BITS; k++)
        if (hc_evict_bit(w->w_visited, unit + k) && ++have > n)
            bit_clear(w->w_visited, unit + k);
}

/* ---------------------------------------------------------------------- */
/* The queue                                                              */
/* ---------------------------------------------------------------------- */

static uint32_t
units_of(const writer *w, uint32_t unit)
{
    return hc_item_units(item_of(w, unit));
}

static void
push_head(writer *w, uint32_t unit, hc_item *head)
{
    hc_stripe *s = w->w_stripe;
    hc_item *it = item_of(w, unit);

    it->it_qprev = 0;
    it->it_qnext = s->sp_qhead;
    if (head != NULL)
        head->it_qprev = unit + 1;
    else
        s->sp_qtail = unit + 1;
    s->sp_qhead = unit + 1;
}

/* Link before the item of link `at` (toward the head), or last if 0. */
static hc_status
push_before(writer *w, uint32_t unit, uint32_t at)
{
    hc_stripe *s = w->w_stripe;
    hc_item *it = item_of(w, unit);
    hc_item *next = hc_table_queue_item(w, at);
    uint32_t prev_link = next != NULL ? next->it_qprev : s->sp_qtail;
    hc_item *prev = hc_table_queue_item(w, prev_link);

    if ((next == NULL && at != 0) || (prev == NULL && prev_link != 0))
        return HC_CORRUPT;
    it->it_qprev = prev_link;
    it->it_qnext = at;
    if (next != NULL)
        next->it_qprev = unit + 1;
    else
        s->sp_qtail = unit + 1;
    if (prev != NULL)
        prev->it_qnext = unit + 1;
    else
        s->sp_qhead = unit + 1;
    return HC_OK;
}

static hc_status
push_small(writer *w, uint32_t unit)
{
    hc_item *head = hc_table_queue_item(w, w->w_stripe->sp_qhead);

    if (head == NULL && w->w_stripe->sp_qhead != 0)
        return HC_CORRUPT;
    push_head(w, unit, head);
    item_of(w, unit)->it_queue = HC_QUEUE_SMALL;
    if (s3fifo(w))
        w->w_stripe->sp_evict.ev_small_units += units_of(w, unit);
    return HC_OK;
}

static hc_status
push_main(writer *w, uint32_t unit)
{
    hc_status st = push_before(w, unit, w->w_stripe->sp_evict.ev_main);

    if (st == HC_OK) {
        item_of(w, unit)->it_queue = HC_QUEUE_MAIN;
        w->w_stripe->sp_evict.ev_main = unit + 1;
    }
    return st;
}

hc_status
hc_evict_forget(writer *w, uint32_t unit)
{
    hc_stripe *s = w->w_stripe;
    hc_item *it = hc_table_queue_item(w, unit + 1);
    hc_item *prev, *next;

    if (it == NULL)
        return HC_CORRUPT;
    prev = hc_table_queue_item(w, it->it_qprev);
    next = hc_table_queue_item(w, it->it_qnext);
    if ((prev == NULL && it->it_qprev != 0)
        || (next == NULL && it->it_qnext != 0))
        return HC_CORRUPT;
    if (s->sp_hand == unit + 1)
        s->sp_hand = it->it_qprev;      /* the hand moves toward the head */
    if (s->sp_evict.ev_main == unit + 1)
        s->sp_evict.ev_main = it->it_qnext;     /* main's next newest */
    if (s3fifo(w) && it->it_queue == HC_QUEUE_SMALL)
        s->sp_evict.ev_small_units -= hc_item_units(it);
    if (prev != NULL)
        prev->it_qnext = it->it_qnext;
    else
        s->sp_qhead = it->it_qnext;
    if (next != NULL)
        next->it_qprev = it->it_qprev;
    else
        s->sp_qtail = it->it_qprev;
    return HC_OK;
}

/* Move a queued item to the head of small or of main. */
static hc_status
requeue(writer *w, uint32_t unit, int queue)
{
    hc_status st = hc_evict_forget(w, unit);

    if (st != HC_OK)
        return st;
    return queue == HC_QUEUE_MAIN ? push_main(w, unit) : push_small(w, unit);
}

void
hc_evict_reset(writer *w, bool forget_ghost)
{
    hc_stripe *s = w->w_stripe;
    uint32_t i;

    s->sp_qhead = s->sp_qtail = s->sp_hand = 0;
    s->sp_evict.ev_main = s->sp_evict.ev_small_units = 0;
    s->sp_evict.ev_evicted = 0;
    if (forget_ghost) {
        s->sp_evict.ev_ghost_clock = 0;
        for (i = 0; i < w->w_cache->ca_layout.cl_nghost; i++)
            w->w_ghost[i].gh_clock = 0;
    }
}

/* ---------------------------------------------------------------------- */
/* The ghost                                                              */
/* ---------------------------------------------------------------------- */

static hc_ghost *
ghost_entry(const writer *w, uint64_t hash)
{
    /* Not the bucket's bits: keys of one bucket would share an entry. */
    uint64_t mixed = (hash >> 32) * UINT64_C(0x9E3779B97F4A7C15);

    return &w->w_ghost[(mixed >> 32) & (w->w_cache->ca_layout.cl_nghost - 1)];
}

static void
ghost_add(writer *w, uint64_t hash)
{
    hc_evict_state *ev = &w->w_stripe->sp_evict;
    hc_ghost *g = ghost_entry(w, hash);

    if (++ev->ev_ghost_clock == 0)
        ev->ev_ghost_clock = 1;         /* 0 marks an empty entry */
    g->gh_tag = (uint32_t) hash;
    g->gh_clock = ev->ev_ghost_clock;
}

/* Was hash evicted from small lately?  Forgets it if so. */
static bool
ghost_take(writer *w, uint64_t hash)
{
    hc_evict_state *ev = &w->w_stripe->sp_evict;
    hc_ghost *g = ghost_entry(w, hash);
    uint64_t items = atomic_load_explicit(&w->w_stripe->sp_items,
                                          memory_order_relaxed);

    if (g->gh_clock == 0 || g->gh_tag != (uint32_t) hash
        || ev->ev_ghost_clock - g->gh_clock >= items * 9 / 10 + 1)
        return false;
    g->gh_clock = 0;
    return true;
}

/* ---------------------------------------------------------------------- */
/* Admission                                                              */
/* ---------------------------------------------------------------------- */

static int
s3fifo_queue_for(writer *w, const hc_item *it, const hc_item *old)
{
    hc_evict_state *ev = &w->w_stripe->sp_evict;

    if (old != NULL)
        return old->it_queue == HC_QUEUE_MAIN ? HC_QUEUE_MAIN
                                              : HC_QUEUE_SMALL;
    if (ghost_take(w, it->it_hash))
        return HC_QUEUE_MAIN;
    /* Until the stripe first evicts, what small cannot hold goes to main
     * (libCacheSim's S3FIFO.c): the first items are not all young. */
    if (!ev->ev_evicted
        && (uint64_t) ev->ev_small_units * 10 >= w->w_av.av_units)
        return HC_QUEUE_MAIN;
    return HC_QUEUE_SMALL;
}

hc_status
hc_evict_admit(writer *w, uint32_t unit, const hc_item *old)
{
    hc_item *it = item_of(w, unit);
    uint32_t k, bits = s3fifo(w) ? HC_FREQ_BITS : 1;

    /* A new item starts unvisited, whatever a reader of the unit's last
     * block set. */
    for (k = 0; k < bits; k++)
        bit_clear(w->w_visited, unit + k);
    if (s3fifo(w) && s3fifo_queue_for(w, it, old) == HC_QUEUE_MAIN)
        return push_main(w, unit);
    return push_small(w, unit);
}

/* ---------------------------------------------------------------------- */
/* Victims                                                                */
/* ---------------------------------------------------------------------- */

bool
hc_evict_pinned(writer *w, const hc_item *it)
{
    return (it->it_format == HC_FORMAT_FLIGHT
            && !hc_flight_abandoned(w->w_cache, it, w->w_now))
        || hc_versions_pinned(w, it);   /* an open batch's (commit.h) */
}

/* Remove a victim; an abandoned flight goes as an expired item does. */
static hc_status
remove_victim(writer *w, hc_item *it, bool expired)
{
    if (expired)
        HC_INJECT("evict.expired");
    hc_cache_count_stat(w->w_cache, expired ? HC_STAT_EXPIRATIONS
                                            : HC_STAT_EVICTIONS, 1);
    /* a live value gone: a snapshot registering meanwhile may have needed
     * it (fill_item() settles that, commit.h) */
    w->w_evicted_live = w->w_evicted_live || !expired;
    return hc_table_remove(w, it);
}

static bool
expired_victim(const writer *w, const hc_item *it)
{
    return it->it_format == HC_FORMAT_FLIGHT    /* an abandoned one */
        || hc_table_expired(it, w->w_now, true);
}

/*
 * Steps an eviction takes before its next candidate goes whatever its
 * bit or frequency: more than every move a still queue needs, so only
 * readers setting bits as fast as the writer clears them reach it (a
 * reader may set any bit, even of a freed block: the walk must end).
 * Twice as many steps that find only live flights mean no victim.
 */
static uint64_t
step_limit(const writer *w)
{
    uint64_t items = atomic_load_explicit(&w->w_stripe->sp_items,
                                          memory_order_relaxed);

    /* the arena bounds a damaged count */
    return (HC_FREQ_BITS + 1) * (items < w->w_av.av_units
                                 ? items : w->w_av.av_units) + 2;
}

/*
 * SIEVE: the hand walks from the oldest item toward the newest; a visited
 * item is spared (its bit cleared) and stays in place, the first
 * unvisited one goes, and so does one past its expiry (and stale window).
 */
static hc_status
sieve_evict(writer *w)
{
    hc_stripe *s = w->w_stripe;
    uint32_t cur = s->sp_hand ? s->sp_hand : s->sp_qtail;
    uint64_t steps, limit = step_limit(w);
    bool flights = false;

    for (steps = 0; cur != 0 && steps < 2 * limit; steps++) {
        hc_item *it = hc_table_queue_item(w, cur);
        bool expired;

        if (it == NULL)
            return HC_CORRUPT;
        if (hc_evict_pinned(w, it)) {
            flights = true;
            cur = it->it_qprev ? it->it_qprev : s->sp_qtail;
            continue;
        }
        expired = expired_victim(w, it);
        if (expired || steps >= limit
            || !hc_evict_bit(w->w_visited, cur - 1)) {
            s->sp_hand = it->it_qprev;
            HC_INJECT("table.evict.victim");
            return remove_victim(w, it, expired);
        }
        bit_clear(w->w_visited, cur - 1);
        cur = it->it_qprev ? it->it_qprev : s->sp_qtail;
    }
    /* Round the queue without a victim: only keys in flight are left. */
    return cur == 0 || flights ? HC_NO_SPACE : HC_CORRUPT;
}

/* Small's oldest item, unit + 1 (0: small is empty). */
static uint32_t
small_oldest(const writer *w)
{
    const hc_stripe *s = w->w_stripe;
    hc_item *m;

    if (s->sp_qhead == s->sp_evict.ev_main)
        return 0;
    if (s->sp_evict.ev_main == 0)
        return s->sp_qtail;
    m = hc_table_queue_item(w, s->sp_evict.ev_main);
    return m != NULL ? m->it_qprev : UINT32_MAX;
}

/* Evict from small?  While it holds a tenth of the occupied units. */
static bool
from_small(const writer *w, bool small_stuck, bool main_stuck)
{
    const hc_stripe *s = w->w_stripe;
    bool small = s->sp_qhead != s->sp_evict.ev_main;
    bool main = s->sp_evict.ev_main != 0;

    if (!small || !main)
        return small;
    if (small_stuck != main_stuck)
        return main_stuck;
    return (uint64_t) s->sp_evict.ev_small_units * 10
        >= s->sp_arena.ar_used_units;
}

/* One step at small's oldest item: promote it, or evict it (*done). */
static hc_status
small_step(writer *w, uint32_t link, hc_item *it, bool force, bool *done)
{
    hc_evict_state *ev = &w->w_stripe->sp_evict;

    if (!force && freq_of(w, link - 1) >= HC_S3FIFO_MAIN_FROM) {
        /* It sits just before main's newest: moving ev_main takes it in. */
        ev->ev_main = link;
        ev->ev_small_units -= hc_item_units(it);
        it->it_queue = HC_QUEUE_MAIN;
        freq_lower_to(w, link - 1, 0);
        HC_INJECT("evict.s3fifo.promoted");
        return HC_OK;
    }
    ghost_add(w, it->it_hash);
    HC_INJECT("evict.s3fifo.small_victim");
    *done = true;
    return remove_victim(w, it, false);
}

/* One step at main's oldest item: back to main's head, or evict it. */
static hc_status
main_step(writer *w, uint32_t link, hc_item *it, bool force, bool *done)
{
    uint32_t freq = freq_of(w, link - 1);

    if (!force && freq > 0) {
        freq_lower_to(w, link - 1, freq - 1);
        HC_INJECT("evict.s3fifo.reinserted");
        return requeue(w, link - 1, HC_QUEUE_MAIN);
    }
    HC_INJECT("evict.s3fifo.main_victim");
    *done = true;
    return remove_victim(w, it, false);
}

/*
 * S3-FIFO: evict from small or main (see evict.h).  A live flight is
 * never a victim: it goes to the head of its queue, and the other queue
 * is tried first for the rest of this eviction.
 */
static hc_status
s3fifo_evict(writer *w)
{
    uint64_t steps, limit = step_limit(w);
    bool small_stuck = false, main_stuck = false, done = false;

    w->w_stripe->sp_evict.ev_evicted = 1;
    for (steps = 0; steps < 2 * limit; steps++) {
        bool small = from_small(w, small_stuck, main_stuck);
        uint32_t link = small ? small_oldest(w) : w->w_stripe->sp_qtail;
        hc_item *it = hc_table_queue_item(w, link);
        hc_status st;

        if (link == 0)
            return HC_NO_SPACE;         /* empty */
        if (it == NULL || it->it_queue != (small ? HC_QUEUE_SMALL
                                                 : HC_QUEUE_MAIN))
            return HC_CORRUPT;
        if (hc_evict_pinned(w, it)) {
            *(small ? &small_stuck : &main_stuck) = true;
            st = requeue(w, link - 1, it->it_queue);
        }
        else if (expired_victim(w, it))
            return remove_victim(w, it, true);
        else
            st = small ? small_step(w, link, it, steps >= limit, &done)
                       : main_step(w, link, it, steps >= limit, &done);
        if (st != HC_OK || done)
            return st;
    }
    return small_stuck || main_stuck ? HC_NO_SPACE : HC_CORRUPT;
}

hc_status
hc_evict_one(writer *w)
{
    return s3fifo(w) ? s3fifo_evict(w) : sieve_evict(w);
}

/* ---------------------------------------------------------------------- */
/* Invariants                                                             */
/* ---------------------------------------------------------------------- */

static hc_status
corrupt(const writer *w, const char *what)
{
    hc_set_detail("stripe %u: %s", w->w_si, what);
    return HC_CORRUPT;
}

hc_status
hc_evict_check(writer *w, const uint8_t *seen, uint64_t items)
{
    const hc_stripe *s = w->w_stripe;
    uint32_t cur = s->sp_qhead, prev = 0, queue = HC_QUEUE_SMALL;
    uint64_t n = 0, small_units = 0;

    while (cur != 0) {
        hc_item *it;

        if (cur - 1 >= w->w_av.av_units || seen[cur - 1] != 1
            || ++n > items)
            return corrupt(w, "the queue holds an unlinked item");
        it = item_of(w, cur - 1);
        if (it->it_qprev != prev)
            return corrupt(w, "a queue back link is wrong");
        if (cur == s->sp_evict.ev_main)
            queue = HC_QUEUE_MAIN;
        if (it->it_queue != queue)
            return corrupt(w, "an item is in the wrong half of the queue");
        if (queue == HC_QUEUE_SMALL)
            small_units += hc_item_units(it);
        prev = cur;
        cur = it->it_qnext;
    }
    if (n != items || s->sp_qtail != prev)
        return corrupt(w, "the queue and the chains disagree");
    if (s->sp_evict.ev_main != 0 && queue != HC_QUEUE_MAIN)
        return corrupt(w, "main's head is not in the queue");
    if (!s3fifo(w) && queue != HC_QUEUE_SMALL)
        return corrupt(w, "a SIEVE queue has a main half");
    if (s3fifo(w) && small_units != s->sp_evict.ev_small_units)
        return corrupt(w, "the small queue's size is wrong");
    return HC_OK;
}
