/*-------------------------------------------------------------------------
 *
 * table.c
 *	  The striped shared hash table described in table.h.
 *
 * Sections: geometry and access helpers; the free epoch; lock-free reads;
 * finding, linking and unlinking items under the stripe lock; eviction
 * (the policies are evict.c's); the writers; stripe rebuild after a
 * crash; opening; whole-table operations (clear, count, keys, check);
 * statistics.
 *
 *-------------------------------------------------------------------------
 */
#include "table.h"
#include "table_internal.h"
#include "flight.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "hash.h"
#include "inject.h"
#include "slot.h"

/* Longest bucket chain anyone walks: a longer one is a cycle (corruption). */
#define MAX_CHAIN 4096
/* How long a writer waits for a live holder of a stripe lock (a knob for
 * tests/c, which waits less). */
#ifndef HC_STRIPE_LOCK_WAIT_NS
#define HC_STRIPE_LOCK_WAIT_NS (UINT64_C(10) * HC_NS_PER_SEC)
#endif
#define STRIPE_LOCK_WAIT_NS HC_STRIPE_LOCK_WAIT_NS
/* Victims tried before evicting a whole region for a large block. */
#define SIEVE_TRIES 32
/* Expired items the write path removes from the queue tail per set. */
#define SWEEP_PER_WRITE 2
#define MIN_UNITS 1024

/* ---------------------------------------------------------------------- */
/* Geometry and access                                                    */
/* ---------------------------------------------------------------------- */

static uint64_t
round64(uint64_t n)
{
    return (n + 63) & ~(uint64_t) 63;
}

static uint32_t
pow2_floor(uint64_t n)
{
    uint32_t p = 1;

    while ((uint64_t) p * 2 <= n && p < (UINT32_C(1) << 30))
        p *= 2;
    return p;
}

/*
 * The geometry of a cache of size bytes.  Attachers recompute it rather
 * than trust the copy in shared memory; the copy is only compared.
 */
static bool
compute_layout(uint64_t size, hc_eviction eviction, hc_cache_layout *l)
{
    /* S3-FIFO's ghost: an 8-byte entry per bucket, a byte per unit. */
    uint64_t ghost = eviction == HC_EVICTION_S3FIFO ? 8 : 0;
    /* The statistics slots after it are 128-byte aligned. */
    uint64_t head = (sizeof(hc_cache_header) + 127) & ~(uint64_t) 127;
    uint64_t stats = (uint64_t) (HC_MAX_SLOTS + 1) * sizeof(hc_stats_slot);
    uint64_t avail, per, units;
    uint32_t n = HC_MAX_STRIPES, nb;


    memset(l, 0, sizeof(*l));
    if (size < head + stats)
        return false;
    avail = size - head - stats;
    while (n > 1 && avail / n < HC_STRIPE_TARGET)
        n /= 2;
    per = avail / n;
    if (per < sizeof(hc_stripe) + 256)
        return false;
    per -= sizeof(hc_stripe) + 256;         /* 256: alignment slack */
    /*
     * Per stripe: a 4-byte bucket per 8 units (one per 128 bytes of
     * arena), three bitmaps of a bit per unit (the allocator's two and
     * the visited map), 16 bytes per unit, and the ghost's share.
     */
    units = per * 8 / (8 * HC_UNIT + 4 + 3 + ghost);
    nb = pow2_floor(units / 8 < 16 ? 16 : units / 8);
    if (units < MIN_UNITS)
        return false;
    if (units > UINT32_MAX - 64)
        units = UINT32_MAX - 64;
    units &= ~(uint64_t) 63;                /* whole bitmap words */
    l->cl_size = size;
    l->cl_nstripes = n;
    l->cl_nbuckets = nb;
    l->cl_units = (uint32_t) units;
    l->cl_eviction = eviction;
    l->cl_nghost = ghost ? nb : 0;
    l->cl_stats_off = head;
    l->cl_stripes_off = head + stats;
    l->cl_buckets_off = l->cl_stripes_off + (uint64_t) n * sizeof(hc_stripe);
    l->cl_maps_off = round64(l->cl_buckets_off + (uint64_t) n * nb * 4);
    l->cl_ghost_off = round64(l->cl_maps_off
                              + (uint64_t) n * 3 * (units / 64) * 8);
    l->cl_arenas_off = round64(l->cl_ghost_off
                               + (uint64_t) n * l->cl_nghost
                               * sizeof(hc_ghost));
    return l->cl_arenas_off + (uint64_t) n * units * HC_UNIT <= size;
}

uint64_t
hc_cache_min_size(hc_eviction e)
{
    hc_cache_layout l;
    uint64_t size = 1 << 16;

    while (!compute_layout(size, e, &l))
        size += 1 << 16;
    return size;
}

static hc_stripe *
stripe_at(const hc_cache *c, uint32_t i)
{
    return (hc_stripe *) (c->ca_base + c->ca_layout.cl_stripes_off) + i;
}

static _Atomic uint32_t *
buckets_of(const hc_cache *c, uint32_t i)
{
    return (_Atomic uint32_t *) (c->ca_base + c->ca_layout.cl_buckets_off)
        + (uint64_t) i * c->ca_layout.cl_nbuckets;
}

static hc_arena_view
view_of(const hc_cache *c, uint32_t i)
{
    const hc_cache_layout *l = &c->ca_layout;
    hc_arena_view av;

    uint64_t words = hc_alloc_words(l->cl_units);

    av.av_arena = &stripe_at(c, i)->sp_arena;
    av.av_base = c->ca_base + l->cl_arenas_off
        + (uint64_t) i * l->cl_units * HC_UNIT;
    av.av_used = (uint64_t *) (c->ca_base + l->cl_maps_off) + i * 3 * words;
    av.av_start = av.av_used + words;
    av.av_units = l->cl_units;
    return av;
}

/* The stripe's visited map (evict.h): the third bitmap, after the
 * allocator's. */
static _Atomic uint64_t *
visited_of(const hc_cache *c, uint32_t i)
{
    uint64_t words = hc_alloc_words(c->ca_layout.cl_units);

    return (_Atomic uint64_t *) (c->ca_base + c->ca_layout.cl_maps_off)
        + (uint64_t) i * 3 * words + 2 * words;
}

/* The stripe's S3-FIFO ghost (no entries under SIEVE). */
static hc_ghost *
ghost_of(const hc_cache *c, uint32_t i)
{
    return (hc_ghost *) (c->ca_base + c->ca_layout.cl_ghost_off)
        + (uint64_t) i * c->ca_layout.cl_nghost;
}

static uint32_t
stripe_of(const hc_cache *c, uint64_t hash)
{
    return (uint32_t) (hash & (c->ca_layout.cl_nstripes - 1));
}

static uint32_t
bucket_of(const hc_cache *c, uint64_t hash)
{
    return (uint32_t) ((hash >> 32) & (c->ca_layout.cl_nbuckets - 1));
}

/*
 * The item at a unit read from shared memory, or NULL if its header does
 * not describe a block inside the arena.  Readers call this on racy data,
 * so it checks everything a later access depends on.
 */
static hc_item *
item_at_len(const hc_arena_view *av, uint32_t unit, uint32_t *key_len)
{
    hc_item *it;
    uint32_t value_len;

    if (unit >= av->av_units
        || av->av_units - unit < hc_alloc_units_for(sizeof(hc_item)))
        return NULL;
    it = hc_alloc_ptr(av, unit);
    /*
     * Each length read exactly once (volatile: at any optimisation level),
     * and the lengths checked are the lengths used: a block reused under
     * a lock-free reader cannot make a later re-read exceed the bounds
     * checked here (key_matches() takes *key_len, never re-reads it).
     */
    *key_len = *(volatile const uint8_t *) &it->it_key_len;
    value_len = *(volatile const uint32_t *) &it->it_value_len;
    if (*key_len > HC_KEY_MAX
        || hc_alloc_units_for(sizeof(hc_item) + (uint64_t) *key_len
                              + value_len) > av->av_units - unit)
        return NULL;
    return it;
}

static hc_item *
item_at(const hc_arena_view *av, uint32_t unit)
{
    uint32_t key_len;

    return item_at_len(av, unit, &key_len);
}

static bool
is_expired(const hc_item *it, uint64_t now, bool with_stale)
{
    uint64_t exp = atomic_load_explicit(&((hc_item *) it)->it_expires,
                                        memory_order_relaxed);

    if (exp == HC_FOREVER)
        return false;
    if (with_stale)
        exp += (uint64_t) it->it_stale_s * HC_NS_PER_SEC;
    return now >= exp;
}

/*
 * Does a user see this item as present?  An unexpired value, or a flight
 * that still serves a fresh old value (an early refresh, flight.h); other
 * flights and errors (internal formats) are absent to every user-visible
 * operation.
 */
static bool
user_visible(const hc_item *it, uint64_t now)
{
    uint64_t expires;

    if (it->it_format == HC_FORMAT_FLIGHT)
        return hc_flight_item_serves_value(it, now, &expires);
    return it->it_format < HC_FORMAT_INTERNAL && !is_expired(it, now, false);
}

/* it_key_len is the key length item_at_len() read and checked. */
static bool
key_matches(const hc_item *it, uint32_t it_key_len, uint64_t hash,
            const void *key, uint32_t len)
{
    return it->it_hash == hash && it_key_len == len
        && memcmp(it + 1, key, len) == 0;
}

/* ---------------------------------------------------------------------- */
/* The free epoch (the stripe-wide seqlock of table.h)                    */
/* ---------------------------------------------------------------------- */

static void
epoch_enter(hc_stripe *s)
{
    uint32_t e = atomic_load_explicit(&s->sp_epoch, memory_order_relaxed);

    if (e & 1)
        return;                 /* already open (a rebuild after a crash) */
    atomic_store_explicit(&s->sp_epoch, e + 1, memory_order_relaxed);
    HC_INJECT("table.epoch.odd");
    /*
     * Order the odd value before every store of the unlink/free that
     * follows: a reader that sees any of those stores and then runs the
     * acquire fence in hc_cache_read_valid() sees the epoch moved.
     */
    atomic_thread_fence(memory_order_release);
}

static void
epoch_exit(hc_stripe *s)
{
    uint32_t e = atomic_load_explicit(&s->sp_epoch, memory_order_relaxed);

    if (!(e & 1))
        return;
    /* Pairs with the acquire load in hc_cache_read_begin(). */
    atomic_store_explicit(&s->sp_epoch, e + 1, memory_order_release);
}

/* ---------------------------------------------------------------------- */
/* Lock-free reads                                                        */
/* ---------------------------------------------------------------------- */

uint64_t
hc_cache_hash(const hc_cache *c, const void *key, size_t len)
{
    return hc_hash_key(c->ca_seed, key, len);
}

/*
 * Describe the item at unit for the caller's copy; false if its lengths
 * do not fit the arena.  item_at() checked the lengths, but a writer may
 * have freed and reused the block since: read each length once more,
 * through volatile so that the compiler cannot load it yet again after
 * the check, and hand the caller only the values checked here.
 */
static bool
fill_read(hc_read *rd, const hc_arena_view *av, hc_item *it, uint64_t now,
          const hc_cache *c, _Atomic uint64_t *visited, uint32_t unit)
{
    uint8_t key_len = *(volatile uint8_t *) &it->it_key_len;
    uint32_t value_len = *(volatile uint32_t *) &it->it_value_len;

    if (hc_alloc_units_for(sizeof(hc_item) + (uint64_t) key_len + value_len)
        > av->av_units - unit)
        return false;
    rd->rd_value = (const uint8_t *) (it + 1) + key_len;
    rd->rd_value_len = value_len;
    rd->rd_format = it->it_format;
    rd->rd_expires = atomic_load_explicit(&it->it_expires,
                                          memory_order_relaxed);
    rd->rd_csn = it->it_csn;
    rd->rd_stale_s = it->it_stale_s;
    rd->rd_delta_ms = it->it_delta_ms;
    rd->rd_expired = is_expired(it, now, false);
    /*
     * The one bit a hit writes, and only when it is clear (evict.h).  The
     * block may have been freed and reused since item_at() looked; the
     * map is outside the arena, so the bit can mislead eviction, not tear.
     */
    if (!rd->rd_expired)
        hc_evict_hit(c->ca_eviction, visited, unit);
    return true;
}

/*
 * Is this version of the key the one a reader at horizon sees?  Not if
 * it is newer than the horizon or dead (commit.h).  Read racily, like
 * the rest of the item: the caller's epoch check validates it.
 */
static bool
version_visible(const hc_item *it, uint64_t horizon)
{
    return *(volatile const uint64_t *) &it->it_csn <= horizon
        && !(hc_version_flags(&it->it_version) & HC_VERSION_DEAD);
}

hc_status
hc_cache_read_begin(hc_cache *c, const void *key, uint32_t key_len,
                    uint64_t hash, uint64_t now, hc_read *rd)
{
    return hc_cache_read_begin_at(c, key, key_len, hash, now, UINT64_MAX, rd);
}

hc_status
hc_cache_read_begin_at(hc_cache *c, const void *key, uint32_t key_len,
                       uint64_t hash, uint64_t now, uint64_t horizon,
                       hc_read *rd)
{
    uint32_t si = stripe_of(c, hash), link, steps;
    hc_arena_view av = view_of(c, si);

    rd->rd_stripe = stripe_at(c, si);
    /* Pairs with the release store in epoch_exit(). */
    rd->rd_epoch = atomic_load_explicit(&rd->rd_stripe->sp_epoch,
                                        memory_order_acquire);
    if (rd->rd_epoch & 1)
        return HC_NOT_FOUND;    /* a writer is freeing: invalid, retry */
    /* Pairs with the release stores that link items (link_item()). */
    link = atomic_load_explicit(&buckets_of(c, si)[bucket_of(c, hash)],
                                memory_order_acquire);
    for (steps = 0; link != 0; steps++) {
        uint32_t it_key_len;
        hc_item *it = item_at_len(&av, link - 1, &it_key_len);

        if (it == NULL || steps >= MAX_CHAIN)
            return HC_CORRUPT;  /* or a torn read: the caller validates */
        if (key_matches(it, it_key_len, hash, key, key_len)
            && version_visible(it, horizon))
            return fill_read(rd, &av, it, now, c, visited_of(c, si),
                             link - 1)
                ? HC_OK : HC_CORRUPT;   /* torn: the caller validates */
        link = atomic_load_explicit(&it->it_next, memory_order_acquire);
    }
    return HC_NOT_FOUND;
}

bool
hc_cache_read_valid(const hc_read *rd)
{
    /* Order the reads of the item (and the caller's copy) before the
     * re-read of the epoch; pairs with the release fence in epoch_enter(). */
    atomic_thread_fence(memory_order_acquire);
    return !(rd->rd_epoch & 1)
        && atomic_load_explicit(&rd->rd_stripe->sp_epoch,
                                memory_order_relaxed) == rd->rd_epoch;
}

hc_status
hc_cache_read_locked(hc_cache *c, const void *key, uint32_t key_len,
                     uint64_t hash, uint64_t now, hc_read *rd, uint8_t **copy)
{
    return hc_cache_read_locked_at(c, key, key_len, hash, now, UINT64_MAX, rd,
                                   copy);
}

hc_status
hc_cache_read_locked_at(hc_cache *c, const void *key, uint32_t key_len,
                        uint64_t hash, uint64_t now, uint64_t horizon,
                        hc_read *rd, uint8_t **copy)
{
    hc_status st = hc_cache_lock_stripe(c, hash);

    if (st != HC_OK)
        return st;
    st = hc_cache_read_begin_at(c, key, key_len, hash, now, horizon, rd);
    if (st == HC_CORRUPT) {
        hc_cache_rebuild_locked(c, hash);
        st = hc_cache_read_begin_at(c, key, key_len, hash, now, horizon, rd);
    }
    if (st == HC_CORRUPT)
        st = HC_NOT_FOUND;      /* the rebuild dropped what was torn */
    if (st == HC_OK && copy != NULL) {
        *copy = malloc(rd->rd_value_len ? rd->rd_value_len : 1);
        if (*copy == NULL)
            st = HC_SYSTEM;
        else
            memcpy(*copy, rd->rd_value, rd->rd_value_len);
    }
    hc_cache_unlock_stripe(c, hash);
    return st;
}

hc_status
hc_cache_identify(hc_cache *c, const void *key, uint32_t key_len,
                  uint64_t hash, uint64_t now, hc_read *rd)
{
    int attempt;

    for (attempt = 0; attempt < HC_READ_ATTEMPTS; attempt++) {
        hc_status st = hc_cache_read_begin(c, key, key_len, hash, now, rd);

        /* The csn and lengths were read inside the epoch: valid means
         * they are the item's as published (pair 8 of barriers.md). */
        if (hc_cache_read_valid(rd) && st != HC_CORRUPT)
            return st;
        hc_cache_count_stat(c, HC_STAT_READ_RETRIES, 1);
    }
    return HC_WOULD_BLOCK;
}

/* ---------------------------------------------------------------------- */
/* Items under the stripe lock                                            */
/* ---------------------------------------------------------------------- */

typedef hc_writer writer;

static writer
writer_for(hc_cache *c, uint32_t si)
{
    writer w = {c, si, stripe_at(c, si), view_of(c, si), visited_of(c, si),
                ghost_of(c, si), hc_expiry_now_ns(), UINT32_MAX, 0, 0, false,
                false, 0};

    return w;
}

/*
 * Find the item of key: its unit and the link word that points to it.
 * HC_NOT_FOUND, or HC_CORRUPT for a broken chain (the caller rebuilds).
 */
static hc_status
find_item(writer *w, uint64_t hash, const void *key, uint32_t key_len,
          _Atomic uint32_t **linkp, uint32_t *unit)
{
    _Atomic uint32_t *link = &buckets_of(w->w_cache, w->w_si)
        [bucket_of(w->w_cache, hash)];
    uint32_t steps = 0;

    for (;;) {
        uint32_t next = atomic_load_explicit(link, memory_order_relaxed);
        uint32_t it_key_len;
        hc_item *it;

        if (next == 0)
            return HC_NOT_FOUND;
        it = item_at_len(&w->w_av, next - 1, &it_key_len);
        if (it == NULL || ++steps > MAX_CHAIN)
            return HC_CORRUPT;
        if (key_matches(it, it_key_len, hash, key, key_len)
            && version_visible(it, UINT64_MAX)) {
            *linkp = link;
            *unit = next - 1;
            return HC_OK;
        }
        link = &it->it_next;
    }
}

/* The link word that points to unit, found through its bucket. */
static _Atomic uint32_t *
link_to(writer *w, uint32_t unit)
{
    hc_item *it = item_at(&w->w_av, unit);     /* a header checked first */
    _Atomic uint32_t *link;
    uint32_t steps;

    if (it == NULL)
        return NULL;
    link = &buckets_of(w->w_cache, w->w_si)[bucket_of(w->w_cache, it->it_hash)];

    for (steps = 0; steps < MAX_CHAIN; steps++) {
        uint32_t next = atomic_load_explicit(link, memory_order_relaxed);
        hc_item *cur;

        if (next == 0)
            return NULL;
        if (next - 1 == unit)
            return link;
        cur = item_at(&w->w_av, next - 1);
        if (cur == NULL)
            return NULL;
        link = &cur->it_next;
    }
    return NULL;
}

/*
 * The item a queue link (unit + 1) names, or NULL if it names no
 * well-formed item at the start of an allocated block.  Only writers
 * follow queue links, under the lock, but the links come from shared
 * memory like everything else: a damaged one must make the caller report
 * HC_CORRUPT (and the stripe be rebuilt), never be written through.
 */
static hc_item *
queue_item(const writer *w, uint32_t link)
{
    if (link == 0 || !hc_alloc_is_block(&w->w_av, link - 1, 1))
        return NULL;
    return item_at(&w->w_av, link - 1);
}

static void
count_item(hc_stripe *s, const hc_item *it, int sign)
{
    uint64_t bytes = (uint64_t) it->it_key_len + it->it_value_len;

    /* relaxed: only statistics read these without the lock */
    if (sign > 0) {
        atomic_fetch_add_explicit(&s->sp_items, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&s->sp_bytes, bytes, memory_order_relaxed);
    }
    else {
        atomic_fetch_sub_explicit(&s->sp_items, 1, memory_order_relaxed);
        atomic_fetch_sub_explicit(&s->sp_bytes, bytes, memory_order_relaxed);
    }
}

/*
 * Publish a complete item at the head of its bucket, and queue it for
 * eviction (old: the key's item it replaces, or NULL); HC_CORRUPT, before
 * anything is changed, if the queue is damaged.
 */
static hc_status
link_item(writer *w, uint32_t unit, const hc_item *old)
{
    hc_item *it = hc_alloc_ptr(&w->w_av, unit);
    _Atomic uint32_t *head = &buckets_of(w->w_cache, w->w_si)
        [bucket_of(w->w_cache, it->it_hash)];

    /* Queued first (and unvisited) while no reader can see it: if the
     * queue is damaged, nothing is published. */
    if (hc_evict_admit(w, unit, old) != HC_OK)
        return HC_CORRUPT;
    atomic_store_explicit(&it->it_next,
                          atomic_load_explicit(head, memory_order_relaxed),
                          memory_order_relaxed);
    /* Publish: pairs with the acquire loads of links by readers. */
    atomic_store_explicit(head, unit + 1, memory_order_release);
    HC_INJECT("table.link.published");
    count_item(w->w_stripe, it, 1);
    return HC_OK;
}

/*
 * Unlink the item at unit (whose link word is linkp) and free its block.
 * The caller has opened the epoch: readers of the block will retry.
 */
static hc_status
unlink_free(writer *w, _Atomic uint32_t *linkp, uint32_t unit)
{
    hc_item *it = hc_alloc_ptr(&w->w_av, unit);

    /* The queue first: if its links are damaged, nothing has changed. */
    if (hc_evict_forget(w, unit) != HC_OK)
        return HC_CORRUPT;
    HC_INJECT("table.remove.dequeued");
    atomic_store_explicit(linkp,
                          atomic_load_explicit(&it->it_next,
                                               memory_order_relaxed),
                          memory_order_release);
    HC_INJECT("table.remove.unlinked");
    count_item(w->w_stripe, it, -1);
    /* However a flight ends (publish, abort, a write, eviction), its
     * waiters must look again: the one place that wakes them. */
    if (it->it_format == HC_FORMAT_FLIGHT)
        hc_flight_wake(w->w_stripe, it->it_hash);
    w->w_freed = unit;          /* where the next allocation may fit */
    w->w_frees++;
    return hc_alloc_free(&w->w_av, unit, hc_item_units(it));
}

/*
 * The version hooks (commit.h) have nothing to do: no batch open here, no
 * version kept in the stripe (so no item of it is counted as one), no
 * snapshot open anywhere.  The plain set and remove then skip their calls,
 * which cost the bare set path a few percent (benchmarks/regression.py
 * --core).  seq_cst: after a set's draw this is the writer's side of pair
 * 17, as in xmin().
 */
static bool
versions_idle(const writer *w)
{
    const hc_commit_area *a = &w->w_cache->ca_header->ch_commit;

    return w->w_batch_csn == 0
        && atomic_load_explicit(&a->cm_retained[w->w_si],
                                memory_order_relaxed) == 0
        && atomic_load_explicit(&a->cm_horizon_slots,
                                memory_order_seq_cst) == 0;
}

/* unlink_free(), after the versions behind it are seen to (commit.h). */
static hc_status
remove_item(writer *w, _Atomic uint32_t *linkp, uint32_t unit)
{
    if (!versions_idle(w))
        hc_versions_removing(w, hc_alloc_ptr(&w->w_av, unit));
    return unlink_free(w, linkp, unit);
}

static hc_status
remove_unit(writer *w, uint32_t unit)
{
    _Atomic uint32_t *linkp = link_to(w, unit);

    if (linkp == NULL)
        return HC_CORRUPT;
    epoch_enter(w->w_stripe);
    return remove_item(w, linkp, unit);
}

/* ---------------------------------------------------------------------- */
/* Eviction (the policies: evict.c)                                       */
/* ---------------------------------------------------------------------- */

/* The unit starting the block that covers unit u, if any. */
static bool
covering_block(writer *w, uint32_t u, uint32_t *start)
{
    uint32_t v = u, steps;

    for (steps = 0; steps < (1u << 17) && v < w->w_av.av_units; steps++, v--) {
        hc_item *it;

        if (!((w->w_av.av_start[v >> 6] >> (v & 63)) & 1)) {
            if (v == 0)
                return false;
            continue;
        }
        it = item_at(&w->w_av, v);
        if (it == NULL || v + hc_item_units(it) <= u)
            return false;
        *start = v;
        return true;
    }
    return false;
}

/*
 * The first unit from which n units hold no pinned flight, looking from
 * unit from on and wrapping once.  HC_NO_SPACE if the live flights leave
 * no such window; HC_CORRUPT for a header that describes no block.
 */
static hc_status
flight_free_window(writer *w, uint32_t n, uint32_t from, uint32_t *start)
{
    uint32_t units = w->w_av.av_units, s = from, u, block;
    uint64_t scanned = 0;

    while (scanned <= (uint64_t) units + n) {
        hc_item *it = NULL;

        if (s > units - n) {            /* wrap to the arena's start */
            scanned += units - (s < units ? s : units);
            s = 0;
        }
        if (covering_block(w, s, &block) && block < s) {
            it = item_at(&w->w_av, block);
            if (it == NULL)
                return HC_CORRUPT;
            if (hc_evict_pinned(w, it)) {
                scanned += block + hc_item_units(it) - s;
                s = block + hc_item_units(it);
                continue;
            }
        }
        for (u = s; u < s + n; u++) {
            if (!((w->w_av.av_start[u >> 6] >> (u & 63)) & 1))
                continue;
            it = item_at(&w->w_av, u);
            if (it == NULL)
                return HC_CORRUPT;
            if (hc_evict_pinned(w, it))
                break;
        }
        if (u == s + n) {
            *start = s;
            return HC_OK;
        }
        scanned += u + hc_item_units(it) - s;
        s = u + hc_item_units(it);
    }
    return HC_NO_SPACE;
}

static hc_status
evict_unit(writer *w, uint32_t unit)
{
    HC_INJECT("table.evict_region.victim");
    w->w_evicted_live = true;       /* see fill_item() */
    hc_cache_count_stat(w->w_cache, HC_STAT_EVICTIONS, 1);
    return remove_unit(w, unit);
}

/*
 * Make room for n units when the policy's victims are scattered: from the
 * hand's item on, find n units that hold no live key in flight (those
 * must stay: their waiters would compute again) and evict every item
 * overlapping them, after which they form one free run (the writer's hint
 * points at it).  HC_NO_SPACE only if live flights leave no such run.
 */
static hc_status
evict_region(writer *w, uint32_t n)
{
    uint32_t from = (w->w_stripe->sp_hand ? w->w_stripe->sp_hand
                                          : w->w_stripe->sp_qtail) - 1;
    uint32_t start, u, block;
    hc_status st;

    if (n > w->w_av.av_units)
        return HC_NO_SPACE;
    st = flight_free_window(w, n, from, &start);
    if (st != HC_OK)
        return st;
    if (covering_block(w, start, &block) && block < start
        && (st = evict_unit(w, block)) != HC_OK)
        return st;
    for (u = start; u < start + n; u++) {
        if (((w->w_av.av_start[u >> 6] >> (u & 63)) & 1)
            && (st = evict_unit(w, u)) != HC_OK)
            return st;
    }
    w->w_freed = start;
    return HC_OK;
}

/*
 * May a sweep (or a get() that found it expired) remove the item?  A value
 * past its expiry and stale window, yes; a flight whose owner died or
 * overran its lease, yes (its waiters would take it over anyway).  An ERROR item, never by its
 * expiry alone: the late waiters of its round must still find it (flight.h);
 * a new round, a write or eviction in a full stripe removes it.
 */
static bool
sweepable(writer *w, const hc_item *it)
{
    if (it->it_format == HC_FORMAT_ERROR)
        return false;
    if (it->it_format == HC_FORMAT_FLIGHT)
        return hc_flight_abandoned(w->w_cache, it, w->w_now);
    return is_expired(it, w->w_now, true) || hc_versions_sweepable(w, it);
}

/*
 * Remove up to SWEEP_PER_WRITE expired items from the queue's old end,
 * stepping over the items a sweep must leave (an ERROR item).
 */
static hc_status
sweep_expired(writer *w)
{
    uint32_t cur = w->w_stripe->sp_qtail;
    int i;

    for (i = 0; i < SWEEP_PER_WRITE && cur != 0; i++) {
        hc_item *it = queue_item(w, cur);
        uint32_t next;

        if (it == NULL)
            return HC_CORRUPT;
        next = it->it_qprev;
        if (it->it_format == HC_FORMAT_ERROR) {
            cur = next;
            continue;
        }
        if (!sweepable(w, it))
            break;
        HC_INJECT("table.sweep.victim");
        hc_cache_count_stat(w->w_cache, HC_STAT_EXPIRATIONS, 1);
        if (remove_unit(w, cur - 1) != HC_OK)
            return HC_CORRUPT;
        cur = next;
    }
    return HC_OK;
}

/* Remove every expired item of the stripe (a full stripe, no eviction). */
static hc_status
reap_all_expired(writer *w)
{
    uint32_t cur = w->w_stripe->sp_qtail;
    uint64_t steps = 0;

    while (cur != 0 && ++steps <= w->w_av.av_units) {
        hc_item *it = queue_item(w, cur);
        uint32_t next;

        if (it == NULL)
            return HC_CORRUPT;
        next = it->it_qprev;
        /* A flight goes only when abandoned, whatever its it_expires says
         * (hc_cache_expire_all() may have moved it: flight.h). */
        if (it->it_format == HC_FORMAT_FLIGHT
                ? hc_flight_abandoned(w->w_cache, it, w->w_now)
                : is_expired(it, w->w_now, true)) {
            hc_cache_count_stat(w->w_cache, HC_STAT_EXPIRATIONS, 1);
            if (remove_unit(w, cur - 1) != HC_OK)
                return HC_CORRUPT;
        }
        cur = next;
    }
    return HC_OK;
}

/*
 * One allocation attempt.  A flight's block is taken as high as it fits:
 * live flights cannot be evicted, and gathered at the arena's end they
 * leave the long runs below to the values (see evict_region()).
 *
 * near_only: the last attempt found no room anywhere and exactly one
 * block was freed since (at w_freed), so the free run around it is the
 * only place n units can now fit, and where a full scan would find them.
 * Looking there alone keeps a set that evicts from scanning the whole
 * arena again after every victim (the scan and the victims would
 * multiply).
 */
static hc_status
alloc_once(writer *w, uint32_t n, bool flight, bool near_only,
           uint32_t *others, uint32_t *unit)
{
    hc_status st;

    if (near_only)
        return hc_alloc_block_freed(&w->w_av, n, w->w_freed, flight, others,
                                    unit);
    st = flight ? hc_alloc_block_high(&w->w_av, n, unit)
                : hc_alloc_block(&w->w_av, n, w->w_freed, unit);
    if (st == HC_NO_SPACE)
        *others = hc_alloc_longest_after_miss(&w->w_av, n);
    return st;
}

/*
 * others: no free run but the one at w_freed is longer (what the failed
 * attempts learned); placing the block in that run then tells the
 * allocator's run bound (alloc.h) how long a run can still be, so the
 * next set that cannot fit skips its search.
 */
static hc_status
alloc_evicting(writer *w, uint32_t n, bool flight, uint32_t *unit)
{
    uint32_t frees = w->w_frees, others = UINT32_MAX;
    bool near_only = false;
    int tries;

    for (tries = 0; tries <= SIEVE_TRIES + 1; tries++) {
        hc_status st = alloc_once(w, n, flight, near_only, &others, unit);

        if (st != HC_NO_SPACE)
            return st;
        if (w->w_stripe->sp_qtail == 0)
            break;                      /* empty, and still no room */
        if (!w->w_cache->ca_evict) {
            /* Expired items may still go; live ones may not. */
            if (tries > 0)
                break;
            st = reap_all_expired(w);
            if (st != HC_OK)
                return st;      /* a damaged queue: rebuild, not CacheFull */
            continue;
        }
        frees = w->w_frees;
        st = tries < SIEVE_TRIES ? hc_evict_one(w) : evict_region(w, n);
        if (st != HC_OK)
            return st;
        near_only = w->w_frees - frees == 1;
    }
    /* Before CacheFull, one search that does not trust the run bound: a
     * damaged one would refuse a stripe with room, and no rebuild comes. */
    hc_alloc_forget_bound(&w->w_av);
    return alloc_once(w, n, flight, false, &others, unit);
}

/* HC_NO_SPACE, with a detail that says truthfully why. */
static hc_status
no_room(writer *w, uint32_t n)
{
    if (!w->w_cache->ca_evict)
        hc_set_detail("no room for %u bytes in the stripe and eviction is "
                      "off", n * HC_UNIT);
    else
        hc_set_detail("no run of %u bytes in the stripe is free of keys "
                      "being computed (each computation keeps its key's "
                      "place until it ends)", n * HC_UNIT);
    return HC_NO_SPACE;
}

/*
 * A free block of n units, evicting as needed: the policy's victims, then,
 * if they never coalesce into a block that large, one region.
 */
static hc_status
alloc_with_eviction(writer *w, uint32_t n, bool flight, uint32_t *unit)
{
    hc_status st = alloc_evicting(w, n, flight, unit);

    return st == HC_NO_SPACE ? no_room(w, n) : st;
}

/* ---------------------------------------------------------------------- */
/* Stripe locking and rebuild                                             */
/* ---------------------------------------------------------------------- */

static void stripe_rebuild(hc_cache *c, uint32_t si);

static hc_status
stripe_lock_at(hc_cache *c, uint32_t si, bool probe_now)
{
    hc_stripe *s = stripe_at(c, si);
    uint64_t deadline = hc_deadline_after(STRIPE_LOCK_WAIT_NS);
    hc_status st = probe_now ? hc_lock_try_acquire(c->ca_seg, &s->sp_lock)
                             : hc_lock_acquire_nowait(c->ca_seg, &s->sp_lock);

    while (st == HC_WOULD_BLOCK || st == HC_INTERRUPTED)
        st = hc_lock_acquire(c->ca_seg, &s->sp_lock, deadline);
    if (st == HC_OWNER_DIED) {
        /* The dead writer may have left anything half done: rebuild. */
        stripe_rebuild(c, si);
        hc_cache_count_stat(c, HC_STAT_RECOVERIES, 1);
        st = HC_OK;
    }
    if (st == HC_TIMEOUT)
        hc_set_detail("a stripe lock stayed held by a live process for "
                      "%llu s", (unsigned long long) (STRIPE_LOCK_WAIT_NS
                                                      / HC_NS_PER_SEC));
    return st;
}

static void
stripe_unlock_at(hc_cache *c, uint32_t si)
{
    hc_stripe *s = stripe_at(c, si);
    uint32_t wake = hc_flight_take_pending(s);

    epoch_exit(s);
    hc_lock_release(c->ca_seg, &s->sp_lock);
    /* The ends of flights wake their sleepers only now, when what they
     * come back for is readable without the lock (flight.h). */
    hc_flight_wake_pending(s, wake);
}

hc_status
hc_cache_lock_stripe(hc_cache *c, uint64_t hash)
{
    /* Readers come here after an odd epoch lasted: probe the owner now. */
    return stripe_lock_at(c, stripe_of(c, hash), true);
}

void
hc_cache_rebuild_locked(hc_cache *c, uint64_t hash)
{
    stripe_rebuild(c, stripe_of(c, hash));
    hc_cache_count_stat(c, HC_STAT_RECOVERIES, 1);
}

void
hc_cache_unlock_stripe(hc_cache *c, uint64_t hash)
{
    stripe_unlock_at(c, stripe_of(c, hash));
}

/* Is unit the start of a used block holding a well-formed item of (si, b)? */
static hc_item *
rebuild_candidate(writer *w, uint32_t unit, uint32_t bucket)
{
    hc_item *it = item_at(&w->w_av, unit);

    if (it == NULL || !hc_alloc_is_block(&w->w_av, unit, hc_item_units(it))
        || stripe_of(w->w_cache, it->it_hash) != w->w_si
        || bucket_of(w->w_cache, it->it_hash) != bucket)
        return NULL;
    return it;
}

/* Does an item kept earlier in the same chain have it's key (a newer one)? */
static bool
shadowed(writer *w, const uint32_t *chain, uint32_t n, const hc_item *it)
{
    uint32_t i;

    for (i = 0; i < n; i++)
        if (key_matches(hc_alloc_ptr(&w->w_av, chain[i]),
                        ((hc_item *) hc_alloc_ptr(&w->w_av, chain[i]))
                            ->it_key_len,   /* validated, and we hold the lock */
                        it->it_hash, it + 1, it->it_key_len))
            return true;
    return false;
}

/*
 * Make the link word at link point to unit + 1 (0: end the chain), if it
 * does not already.  Relaxed: the rebuild runs inside an odd epoch, so a
 * lock-free reader that follows either the old or the new link fails its
 * validation (pair 8 of barriers.md), and the next rebuilder reads the
 * links under the stripe lock, whose acquire orders them.
 */
static void
rebuild_link(_Atomic uint32_t *link, uint32_t to)
{
    if (atomic_load_explicit(link, memory_order_relaxed) != to)
        atomic_store_explicit(link, to, memory_order_relaxed);
}

/*
 * Collect the well-formed items reachable from the buckets, once each,
 * marking their blocks in the private maps fresh; cut every other item
 * out of its chain, in chain order, by one store to the link of the item
 * kept before it (or to the bucket).  Each store leaves the chain
 * reaching every item kept so far and the unread rest: what a restarted
 * rebuild keeps is what this one keeps (stripe_rebuild()).
 */
static uint32_t
rebuild_collect(writer *w, const hc_arena_view *fresh, uint32_t *kept,
                uint8_t *seen)
{
    _Atomic uint32_t *buckets = buckets_of(w->w_cache, w->w_si);
    uint32_t b, n = 0;

    for (b = 0; b < w->w_cache->ca_layout.cl_nbuckets; b++) {
        _Atomic uint32_t *tail = &buckets[b];   /* after the last kept */
        uint32_t link = atomic_load_explicit(tail, memory_order_relaxed);
        uint32_t first = n;

        if (link == 0)
            continue;
        while (link != 0 && n < w->w_av.av_units) {
            hc_item *it = rebuild_candidate(w, link - 1, b);
            uint32_t next;

            if (it == NULL || seen[link - 1])
                break;          /* drop the rest of a broken chain */
            seen[link - 1] = 1;
            next = atomic_load_explicit(&it->it_next, memory_order_relaxed);
            /* An item of a batch that never committed goes (commit.h);
             * the version it superseded is then the first of its key. */
            if (hc_commit_aborted(w->w_cache, it))
                ;
            else if (shadowed(w, kept + first, n - first, it))
                hc_versions_dropped(w);
            else if (hc_alloc_mark_used(fresh, link - 1, hc_item_units(it))) {
                rebuild_link(tail, link);
                kept[n++] = link - 1;
                tail = &it->it_next;
            }
            link = next;
        }
        rebuild_link(tail, 0);
        HC_INJECT("table.rebuild.chain");
    }
    return n;
}

/*
 * Copy the private maps over the stripe's.  Every kept item is a block in
 * the old maps (rebuild_candidate() checked it) and in the new ones, and
 * no kept block overlaps another, so the two agree bit for bit on its
 * units: whatever mix of old and new bytes a death here leaves, a
 * restarted rebuild still finds each kept item a block.
 */
static void
rebuild_maps(writer *w, const hc_arena_view *fresh)
{
    size_t bytes = (size_t) hc_alloc_words(w->w_av.av_units)
        * sizeof(uint64_t);

    memcpy(w->w_av.av_used, fresh->av_used, bytes);
    HC_INJECT("table.rebuild.half_mapped");
    memcpy(w->w_av.av_start, fresh->av_start, bytes);
    *w->w_av.av_arena = *fresh->av_arena;
}

/* The SIEVE queue and the counts, from the kept items, from scratch. */
static void
rebuild_queue(writer *w, const uint32_t *kept, uint32_t n)
{
    hc_stripe *s = w->w_stripe;
    uint32_t i;

    hc_evict_reset(w, false);       /* the ghost's hints stay */
    atomic_store_explicit(&s->sp_items, 0, memory_order_relaxed);
    atomic_store_explicit(&s->sp_bytes, 0, memory_order_relaxed);
    for (i = 0; i < n; i++) {
        hc_item *it = hc_alloc_ptr(&w->w_av, kept[i]);

        /* cannot fail: the queue holds only items admitted here */
        (void) hc_evict_admit(w, kept[i], NULL);
        count_item(s, it, 1);
        hc_versions_relinked(w, it);
        HC_INJECT("table.rebuild.relinked");
    }
}

static void
stripe_reset(writer *w)
{
    hc_stripe *s = w->w_stripe;
    _Atomic uint32_t *buckets = buckets_of(w->w_cache, w->w_si);
    uint32_t b;

    for (b = 0; b < w->w_cache->ca_layout.cl_nbuckets; b++)
        atomic_store_explicit(&buckets[b], 0, memory_order_relaxed);
    hc_alloc_reset(&w->w_av);
    hc_evict_reset(w, true);
    atomic_store_explicit(&s->sp_items, 0, memory_order_relaxed);
    atomic_store_explicit(&s->sp_bytes, 0, memory_order_relaxed);
}

/* A rebuild's private memory: the kept units, a seen byte per unit, and
 * the allocator's maps being rebuilt. */
typedef struct rebuild_scratch {
    uint32_t *rs_kept;
    uint8_t *rs_seen;
    hc_arena rs_arena;
    hc_arena_view rs_fresh;         /* the new maps, over the same arena */
} rebuild_scratch;

static bool
scratch_alloc(rebuild_scratch *rs, const hc_arena_view *av)
{
    size_t words = hc_alloc_words(av->av_units);

    memset(rs, 0, sizeof(*rs));
    rs->rs_kept = malloc((size_t) av->av_units * sizeof(uint32_t));
    rs->rs_seen = calloc(av->av_units, 1);
    rs->rs_fresh = *av;
    rs->rs_fresh.av_arena = &rs->rs_arena;
    rs->rs_fresh.av_used = malloc(words * sizeof(uint64_t));
    rs->rs_fresh.av_start = malloc(words * sizeof(uint64_t));
    if (rs->rs_kept == NULL || rs->rs_seen == NULL
        || rs->rs_fresh.av_used == NULL || rs->rs_fresh.av_start == NULL)
        return false;
    hc_alloc_reset(&rs->rs_fresh);
    return true;
}

static void
scratch_free(rebuild_scratch *rs)
{
    free(rs->rs_kept);
    free(rs->rs_seen);
    free(rs->rs_fresh.av_used);
    free(rs->rs_fresh.av_start);
}

/*
 * Rebuild a stripe whose last writer died or which was found
 * inconsistent: keep every well-formed item its buckets reach, rebuild
 * the maps and queue from them.  If memory for the scan is not to be had,
 * empty the stripe instead (a cache may lose data).
 *
 * The rebuilder may die too, at any instruction; the next acquirer then
 * learns of it as of any dead owner and rebuilds again.  So the stages
 * run in an order in which every shared store leaves the stripe where a
 * rebuild from scratch keeps the same items: the chains first (cut in
 * place, never emptied; rebuild_collect()), then the maps (rebuilt in
 * private memory, copied over; rebuild_maps()), then the queue and
 * counts, which nothing validates against.  A second dead rebuilder, or
 * a third, loses nothing the first would have kept.
 */
static void
stripe_rebuild(hc_cache *c, uint32_t si)
{
    writer w = writer_for(c, si);
    rebuild_scratch rs;
    uint32_t n;

    epoch_enter(w.w_stripe);
    if (!scratch_alloc(&rs, &w.w_av)) {
        stripe_reset(&w);
        goto done;
    }
    HC_INJECT("table.rebuild.opened");
    hc_versions_rebuild_begin(&w);
    n = rebuild_collect(&w, &rs.rs_fresh, rs.rs_kept, rs.rs_seen);
    HC_INJECT("table.rebuild.collected");
    rebuild_maps(&w, &rs.rs_fresh);
    HC_INJECT("table.rebuild.mapped");
    rebuild_queue(&w, rs.rs_kept, n);
done:
    epoch_exit(w.w_stripe);
    /*
     * A rebuild may drop a FLIGHT (a broken chain, or one a dead writer
     * unlinked before its wake-up): its waiters must look again, as after
     * any removal of one (pair 10 of barriers.md).  A spurious wake-up
     * costs a waiter one look.
     */
    hc_flight_wake_all(w.w_stripe);
    scratch_free(&rs);
}

/* ---------------------------------------------------------------------- */
/* Writers                                                                */
/* ---------------------------------------------------------------------- */

static hc_status
check_write_size(const hc_cache *c, const hc_write *wr, uint32_t *units)
{
    if (wr->wr_key_len == 0 || wr->wr_key_len > HC_KEY_MAX) {
        hc_set_detail("a key has 1 to %d bytes, got %u", HC_KEY_MAX,
                      wr->wr_key_len);
        return HC_TOO_LARGE;
    }
    if (wr->wr_value_len > c->ca_max_value) {
        hc_set_detail("the value has %u bytes, this cache's limit is %u "
                      "(max_value_size)", wr->wr_value_len, c->ca_max_value);
        return HC_TOO_LARGE;
    }
    *units = hc_alloc_units_for(sizeof(hc_item) + (uint64_t) wr->wr_key_len
                                + wr->wr_value_len);
    return HC_OK;
}

/* Write header, key and value into a block nobody else can see yet. */
static void
fill_item(writer *w, uint32_t unit, const hc_write *wr)
{
    hc_item *it = hc_alloc_ptr(&w->w_av, unit);

    /*
     * The block may have been freed by an earlier writer, inside its odd
     * epoch; this writer learned of that free only through the stripe
     * lock's acquire, which is no release on our side.  This fence makes
     * "a reader that saw any byte written below also sees that writer's
     * epoch moves" hold in C11 terms (pairs with the acquire fence in
     * hc_cache_read_valid(); docs/barriers.md, pair 8), not only on
     * multi-copy-atomic machines.  On x86 it costs nothing.  (GCC refuses
     * this fence under -fsanitize=thread, which does not model fences.)
     */
#ifndef __SANITIZE_THREAD__
    atomic_thread_fence(memory_order_release);
#endif
    memset(it, 0, sizeof(*it));
    it->it_hash = wr->wr_hash;
    atomic_store_explicit(&it->it_expires, wr->wr_expires,
                          memory_order_relaxed);
    it->it_value_len = wr->wr_value_len;
    it->it_stale_s = wr->wr_stale_s;
    it->it_delta_ms = wr->wr_delta_ms;
    it->it_key_len = (uint8_t) wr->wr_key_len;
    it->it_format = wr->wr_format;
    memcpy(it + 1, wr->wr_key, wr->wr_key_len);
    memcpy((uint8_t *) (it + 1) + wr->wr_key_len, wr->wr_value,
           wr->wr_value_len);
    /*
     * The csn last, drawn with the stripe's epoch open; it stays open
     * until set_locked() has linked the item.  A snapshot that counted this
     * csn (commit.h) so finds the item linked, or the epoch odd and
     * retries: never the item missing, then present (barriers.md, 16).
     * A batch's items all carry its one csn.
     */
    epoch_enter(w->w_stripe);
    it->it_csn = w->w_batch_csn ? w->w_batch_csn
        : w->w_drawn_csn ? w->w_drawn_csn : hc_commit_draw(w->w_cache);
    w->w_drawn_csn = 0;
    if (w->w_evicted_live)          /* this write's eviction: commit.h */
        hc_versions_evicted_before(w, it->it_csn);
}

/* Does the mode allow writing, given what is stored now? */
static hc_status
check_mode(const hc_write *wr, const hc_item *old, uint64_t now)
{
    bool live = old != NULL && user_visible(old, now);

    switch (wr->wr_mode) {
    case HC_SET_ADD:
        return live ? HC_EXISTS : HC_OK;
    case HC_SET_REPLACE:
        return live ? HC_OK : HC_NOT_FOUND;
    case HC_SET_CAS:
    case HC_SET_SWAP:
        if (!live)
            return HC_NOT_FOUND;
        return old->it_csn == wr->wr_expect_csn ? HC_OK : HC_CONFLICT;
    default:
        return HC_OK;
    }
}

/*
 * A swap (HC_SET_SWAP) changes the value of the very item it compared, so
 * the new item keeps the old one's absolute expiry, stale window and
 * compute time: recomputing them from "now" would move the expiry back by
 * each swap's latency (incr() under load would keep a key forever).
 */
static const hc_write *
keep_lifetime(const hc_write *wr, const hc_item *old, uint64_t now,
              hc_write *kept)
{
    *kept = *wr;
    kept->wr_expires = atomic_load_explicit(&((hc_item *) old)->it_expires,
                                            memory_order_relaxed);
    kept->wr_stale_s = old->it_stale_s;
    kept->wr_delta_ms = old->it_delta_ms;
    /* A key under early refresh: the old value's own expiry, not the
     * flight's (which never expires); its stale window is not kept. */
    if (hc_flight_item_serves_value(old, now, &kept->wr_expires))
        kept->wr_stale_s = kept->wr_delta_ms = 0;
    return kept;
}

static hc_status set_locked(writer *w, const hc_write *wr, uint32_t units,
                            uint64_t *csn);

/*
 * Delete by linking a tombstone, so that the item stays readable to the
 * snapshots that need it (commit.h); HC_NO_SPACE if there is no room.
 */
static hc_status
link_tombstone(writer *w, uint64_t hash, const void *key, uint32_t key_len)
{
    hc_write tomb = {.wr_key = key, .wr_key_len = key_len, .wr_hash = hash,
                     .wr_value = "", .wr_format = HC_FORMAT_TOMBSTONE,
                     .wr_expires = HC_FOREVER, .wr_mode = HC_SET_ALWAYS};
    uint64_t csn;

    return set_locked(w, &tomb, hc_alloc_units_for(sizeof(hc_item)
                                                   + (uint64_t) key_len),
                      &csn);
}

/*
 * Remove the newest version of a key (unit, which *linkp names): a delete,
 * or a set that failed.  The delete's csn is drawn first, with the epoch
 * open, and only then are the horizons read (barriers.md, pairs 16 and
 * 17): if a live snapshot may still read the item, a tombstone carrying
 * that csn supersedes it instead.  The delete advances cache.csn either way.
 */
static hc_status
remove_newest(writer *w, uint64_t hash, const void *key, uint32_t key_len,
              _Atomic uint32_t *linkp, uint32_t unit)
{
    hc_status st;

    epoch_enter(w->w_stripe);
    w->w_drawn_csn = hc_commit_draw(w->w_cache);
    HC_INJECT("table.delete.drawn");
    if (hc_versions_delete_keeps(w, w->w_drawn_csn)) {
        st = link_tombstone(w, hash, key, key_len);
        w->w_drawn_csn = 0;
        if (st != HC_NO_SPACE)
            return st;
        /* No room even for a tombstone: it goes, and the snapshots that
         * could read it are too old (commit.h). */
        hc_versions_lost(w);
        st = find_item(w, hash, key, key_len, &linkp, &unit);
        if (st != HC_OK)
            return st == HC_NOT_FOUND ? HC_OK : st;
        epoch_enter(w->w_stripe);
    }
    w->w_drawn_csn = 0;
    w->w_deleting = true;
    st = remove_item(w, linkp, unit);
    w->w_deleting = false;
    return st;
}

/*
 * A set that cannot store its value leaves no old value behind either
 * (memcached's rule, which Django's tests check): a reader must not take
 * the old value for the one the failed set meant to write.  Only plain
 * sets of values do this; a key being computed keeps its flight, which
 * its owner ends.  Called under the key's stripe lock; returns why the
 * set failed, or HC_CORRUPT (the stripe is rebuilt and the step rerun).
 */
static hc_status
drop_failed_set(writer *w, const hc_write *wr, hc_status why)
{
    _Atomic uint32_t *linkp;
    uint32_t unit;
    hc_status st;

    /* (A batch that fails changes nothing: commit.c aborts it whole.) */
    if (wr->wr_mode != HC_SET_ALWAYS || wr->wr_format >= HC_FORMAT_INTERNAL
        || w->w_batch_csn != 0)
        return why;
    st = find_item(w, wr->wr_hash, wr->wr_key, wr->wr_key_len, &linkp,
                   &unit);
    if (st == HC_CORRUPT)
        return st;
    if (st != HC_OK || ((hc_item *) hc_alloc_ptr(&w->w_av, unit))->it_format
                       == HC_FORMAT_FLIGHT)
        return why;
    st = remove_newest(w, wr->wr_hash, wr->wr_key, wr->wr_key_len, linkp,
                       unit);
    return st == HC_OK ? why : st;
}

/*
 * A write that evicted a live value and then stored nothing (it failed)
 * drew no csn, so no snapshot that registered after the eviction judged
 * "no snapshot open" would hear of it: the eviction commits on its own
 * csn, drawn inside the epoch it opened (barriers.md, pair 17).
 */
static void
eviction_commits(writer *w)
{
    if (!w->w_evicted_live || w->w_batch_csn != 0)
        return;                 /* a batch's abort reports it (commit.c) */
    epoch_enter(w->w_stripe);   /* open already: the eviction's */
    hc_versions_evicted_before(w, hc_commit_draw(w->w_cache));
}

static hc_status
set_locked(writer *w, const hc_write *wr, uint32_t units, uint64_t *csn)
{
    hc_write kept;
    _Atomic uint32_t *linkp = NULL;
    uint32_t unit, old = 0;
    hc_status st, found;

    st = sweep_expired(w);
    if (st != HC_OK)
        return st;
    HC_INJECT_RETURN("table.set.swept");
    /*
     * Decide before allocating: a write the mode refuses stores nothing,
     * so it must neither fail for want of room (CacheFull) nor evict an
     * entry to make room it will not use.
     */
    found = find_item(w, wr->wr_hash, wr->wr_key, wr->wr_key_len, &linkp,
                      &old);
    if (found == HC_CORRUPT)
        return HC_CORRUPT;
    st = check_mode(wr, found == HC_OK ? hc_alloc_ptr(&w->w_av, old) : NULL,
                    w->w_now);
    if (st == HC_OK && wr->wr_mode == HC_SET_SWAP)
        wr = keep_lifetime(wr, hc_alloc_ptr(&w->w_av, old), w->w_now,
                           &kept);
    if (st == HC_OK)
        st = alloc_with_eviction(w, units,
                                 wr->wr_format == HC_FORMAT_FLIGHT, &unit);
    if (st == HC_NO_SPACE)
        st = drop_failed_set(w, wr, st);
    if (st != HC_OK) {
        eviction_commits(w);
        return st;
    }
    /*
     * Find again: eviction may have removed the old item.  The write goes
     * ahead all the same, as if it had come just before that eviction.
     */
    found = find_item(w, wr->wr_hash, wr->wr_key, wr->wr_key_len, &linkp,
                      &old);
    if (found == HC_CORRUPT) {
        eviction_commits(w);    /* the rerun after the rebuild may not */
        return HC_CORRUPT;
    }
    HC_INJECT("table.set.allocated");
    fill_item(w, unit, wr);
    HC_INJECT("table.set.filled");
    *csn = ((hc_item *) hc_alloc_ptr(&w->w_av, unit))->it_csn;
    /*
     * Publish the new item at the head of its chain: from here on every
     * lookup finds it before the old one.  Only then unlink and free the
     * old one, inside the epoch.  A crash in between leaves both linked;
     * the rebuild keeps the first of a key (the new one).
     */
    st = link_item(w, unit, found == HC_OK ? hc_alloc_ptr(&w->w_av, old)
                                           : NULL);
    /* Linked: close the epoch fill_item() opened (a batch keeps its own
     * open until it commits), so readers see the new item at once. */
    if (w->w_batch_csn == 0)
        epoch_exit(w->w_stripe);
    HC_INJECT("table.set.linked");
    /* A live snapshot may still read the old item: then it stays, as a
     * version behind the new one (commit.h). */
    if (st == HC_OK
        && (!versions_idle(w) || wr->wr_format == HC_FORMAT_TOMBSTONE)
        && hc_versions_published(w, hc_alloc_ptr(&w->w_av, unit),
                                 found == HC_OK ? hc_alloc_ptr(&w->w_av, old)
                                                : NULL))
        found = HC_NOT_FOUND;
    if (st == HC_OK && found == HC_OK) {
        st = remove_unit(w, old);       /* a flight's waiters wake there */
        if (st == HC_CORRUPT) {
            /*
             * The write is published: the new item heads its chain, so a
             * rebuild keeps it and drops the old one.  Rebuild here and
             * report the write done; the caller's rerun (WITH_STRIPE)
             * would test the mode against this very item (a CAS or swap
             * then fails with HC_CONFLICT after storing) or store twice.
             */
            stripe_rebuild(w->w_cache, w->w_si);
            hc_cache_count_stat(w->w_cache, HC_STAT_RECOVERIES, 1);
            *w = writer_for(w->w_cache, w->w_si);  /* (it woke flights) */
            return HC_OK;
        }
    }
    if (st == HC_OK && !versions_idle(w))
        hc_versions_prune(w, hc_alloc_ptr(&w->w_av, unit));
    return st;
}

/*
 * Run op under the stripe lock of hash; if it finds the stripe
 * inconsistent, rebuild the stripe and run it once more.
 */
#define WITH_STRIPE(c, hash, w, call)                                       \
    do {                                                                    \
        uint32_t si_ = stripe_of((c), (hash));                             \
        hc_status lst_ = stripe_lock_at((c), si_, false);                  \
        if (lst_ != HC_OK)                                                  \
            return lst_;                                                    \
        (w) = writer_for((c), si_);                                         \
        st = (call);                                                        \
        if (st == HC_CORRUPT) {                                             \
            stripe_rebuild((c), si_);                                       \
            hc_cache_count_stat((c), HC_STAT_RECOVERIES, 1);                \
            (w) = writer_for((c), si_);                                     \
            st = (call);                                                    \
        }                                                                   \
        stripe_unlock_at((c), si_);                                         \
    } while (0)

hc_status
hc_cache_set(hc_cache *c, const hc_write *wr, uint64_t *csn)
{
    uint32_t units;
    writer w;
    hc_status st = check_write_size(c, wr, &units);

    if (st == HC_TOO_LARGE && wr->wr_key_len > 0
        && wr->wr_key_len <= HC_KEY_MAX) {
        /* The value is too large: the old one goes all the same. */
        /* HC_TOO_LARGE, not st: after a rebuild the macro reruns the
         * call with st already HC_CORRUPT. */
        WITH_STRIPE(c, wr->wr_hash, w,
                    drop_failed_set(&w, wr, HC_TOO_LARGE));
        return st;
    }
    if (st != HC_OK)
        return st;
    WITH_STRIPE(c, wr->wr_hash, w, set_locked(&w, wr, units, csn));
    if (st == HC_OK)
        hc_cache_count_stat(c, HC_STAT_SETS, 1);
    return st;
}

/* Remove the key's item; only if its csn is expect_csn, unless that is 0. */
static hc_status
delete_locked(writer *w, uint64_t hash, const void *key, uint32_t key_len,
              uint64_t expect_csn)
{
    _Atomic uint32_t *linkp;
    uint32_t unit;
    hc_status st = find_item(w, hash, key, key_len, &linkp, &unit);
    bool live;

    if (st != HC_OK)
        return st;
    /* A write wins over a computation: the flight goes (and its waiters
     * wake); the key was absent unless it served an early refresh's old
     * value. */
    live = user_visible(hc_alloc_ptr(&w->w_av, unit), w->w_now);
    if (expect_csn != 0) {
        if (!live)
            return HC_NOT_FOUND;
        if (((hc_item *) hc_alloc_ptr(&w->w_av, unit))->it_csn != expect_csn)
            return HC_CONFLICT;
    }
    HC_INJECT("table.delete.found");
    st = remove_newest(w, hash, key, key_len, linkp, unit);
    if (st == HC_OK && !live)
        st = HC_NOT_FOUND;      /* it was gone already, by its expiry */
    return st;
}

hc_status
hc_cache_delete(hc_cache *c, const void *key, uint32_t key_len,
                uint64_t hash)
{
    return hc_cache_delete_csn(c, key, key_len, hash, 0);
}

hc_status
hc_cache_delete_csn(hc_cache *c, const void *key, uint32_t key_len,
                    uint64_t hash, uint64_t expect_csn)
{
    writer w;
    hc_status st;

    WITH_STRIPE(c, hash, w, delete_locked(&w, hash, key, key_len,
                                          expect_csn));
    if (st == HC_OK)
        hc_cache_count_stat(c, HC_STAT_DELETES, 1);
    return st;
}

static hc_status
touch_locked(writer *w, uint64_t hash, const void *key, uint32_t key_len,
             uint64_t expires)
{
    _Atomic uint32_t *linkp;
    uint32_t unit;
    hc_status st = find_item(w, hash, key, key_len, &linkp, &unit);
    hc_item *it;

    if (st != HC_OK)
        return st;
    it = hc_alloc_ptr(&w->w_av, unit);
    /* Never give a flight (or an error) an expiry: absent to users, or
     * (an early refresh) present, but the refresh sets the next lifetime. */
    if (!user_visible(it, w->w_now))
        return HC_NOT_FOUND;
    if (it->it_format == HC_FORMAT_FLIGHT)
        return HC_OK;
    HC_INJECT("table.touch.found");
    /* relaxed: readers see the old or the new deadline, both whole */
    atomic_store_explicit(&it->it_expires, expires, memory_order_relaxed);
    return HC_OK;
}

hc_status
hc_cache_touch(hc_cache *c, const void *key, uint32_t key_len, uint64_t hash,
               uint64_t expires)
{
    writer w;
    hc_status st;

    WITH_STRIPE(c, hash, w, touch_locked(&w, hash, key, key_len, expires));
    return st;
}

void
hc_cache_reap_nowait(hc_cache *c, const void *key, uint32_t key_len,
                     uint64_t hash)
{
    uint32_t si = stripe_of(c, hash), unit;
    _Atomic uint32_t *linkp;
    writer w;

    if (hc_lock_acquire_nowait(c->ca_seg, &stripe_at(c, si)->sp_lock)
        != HC_OK)
        return;                 /* busy: a writer will sweep it later */
    w = writer_for(c, si);
    if (find_item(&w, hash, key, key_len, &linkp, &unit) == HC_OK
        && sweepable(&w, hc_alloc_ptr(&w.w_av, unit))) {
        epoch_enter(w.w_stripe);
        if (remove_item(&w, linkp, unit) == HC_OK)
            hc_cache_count_stat(c, HC_STAT_EXPIRATIONS, 1);
    }
    stripe_unlock_at(c, si);
}

/* ---------------------------------------------------------------------- */
/* Opening                                                                */
/* ---------------------------------------------------------------------- */

/* Make every stripe empty; the caller holds ch_init_lock. */
/*
 * The poison/reset path (RELIABILITY.md, scenario 3).  A stripe's rebuild
 * repairs what its lock's dead owner left; it trusts the geometry, which
 * every process computes from the size.  What no rebuild can vouch for is
 * the cache's header: a magic, boot id or geometry record that is not
 * what this size and boot make.  The next opener then resets the cache in
 * place, under the init lock: it takes every stripe lock in order
 * (waiting for live holders, taking dead ones over), empties every stripe
 * inside a moved epoch, rewrites the header, and moves the commit
 * sequence to the next generation.  Processes already attached keep their
 * mapping and geometry and go on with the empty table: a read that
 * overlapped the reset fails its epoch check, a writer waits for its
 * stripe lock, and no item of the new generation has a csn of the old
 * one (the per-process decoded layer names items by csn).
 */

/* A csn's generation: the resets the cache went through before it. */
#define CSN_GENERATION_SHIFT 48
#define CSN_GENERATION_MAX UINT64_C(0xFFFE)

uint64_t
hc_cache_generation(const hc_cache *c)
{
    return atomic_load_explicit(&c->ca_header->ch_csn, memory_order_relaxed)
        >> CSN_GENERATION_SHIFT;
}

/* Lock stripes [0, n) and open their epochs; on failure none stays locked. */
static hc_status
lock_every_stripe(hc_cache *c, uint32_t *n)
{
    uint64_t deadline = hc_deadline_after(STRIPE_LOCK_WAIT_NS);

    for (*n = 0; *n < c->ca_layout.cl_nstripes; ++*n) {
        hc_stripe *s = stripe_at(c, *n);
        hc_status st;

        do
            st = hc_lock_acquire(c->ca_seg, &s->sp_lock, deadline);
        while (st == HC_INTERRUPTED);
        if (st != HC_OK && st != HC_OWNER_DIED) {
            while (*n > 0)
                stripe_unlock_at(c, --*n);
            return st;
        }
        /* A dead owner's half-done work goes with the rest: no rebuild. */
        epoch_enter(s);
        HC_INJECT("table.reset.locked");
    }
    return HC_OK;
}

/*
 * Has this cache never held anything?  The registry hands out zeroed
 * memory: no magic, no csn issued, no stripe ever linked an item or
 * opened its epoch.  (A damaged header over a used table is not fresh: a
 * stripe shows it; one that never held an item issued no csn to reuse.)
 */
static bool
fresh_cache(hc_cache *c, uint32_t fresh_epoch)
{
    uint32_t i;

    if (atomic_load_explicit(&c->ca_header->ch_magic, memory_order_relaxed)
        != 0
        || atomic_load_explicit(&c->ca_header->ch_csn, memory_order_relaxed)
           != 0)
        return false;
    for (i = 0; i < c->ca_layout.cl_nstripes; i++) {
        hc_stripe *s = stripe_at(c, i);

        if (atomic_load_explicit(&s->sp_items, memory_order_relaxed) != 0
            || atomic_load_explicit(&s->sp_epoch, memory_order_relaxed)
               != fresh_epoch)
            return false;
    }
    return true;
}

static void
reset_header(hc_cache *c, bool fresh)
{
    hc_cache_header *h = c->ca_header;
    uint64_t gen = atomic_load_explicit(&h->ch_csn, memory_order_relaxed)
        >> CSN_GENERATION_SHIFT;

    h->ch_version = HC_CACHE_VERSION;
    h->ch_layout = c->ca_layout;
    hc_read_boot_id(h->ch_boot_id);
    /* Every csn of the new generation is above those of the old ones. */
    if (!fresh)
        atomic_store_explicit(&h->ch_csn, (gen < CSN_GENERATION_MAX ? gen + 1
                                                                    : gen)
                                              << CSN_GENERATION_SHIFT,
                              memory_order_relaxed);
    /* Publish: pairs with the acquire load of ch_magic in header_sound(). */
    atomic_store_explicit(&h->ch_magic, HC_CACHE_MAGIC, memory_order_release);
}

/* Reset the whole cache in place (see above); the init lock is held. */
static hc_status
reset_cache(hc_cache *c, bool wipe_stats)
{
    uint32_t n, i;
    hc_status st = lock_every_stripe(c, &n);
    bool fresh;

    if (st != HC_OK)
        return st;
    fresh = fresh_cache(c, 1);      /* 1: the odd epoch we just opened */
    if (wipe_stats)
        memset(c->ca_base + c->ca_layout.cl_stats_off, 0,
               c->ca_layout.cl_stripes_off - c->ca_layout.cl_stats_off);
    for (i = 0; i < n; i++) {
        writer w = writer_for(c, i);

        stripe_reset(&w);
        HC_INJECT("table.reset.emptied");
    }
    reset_header(c, fresh);
    for (i = 0; i < n; i++) {
        hc_flight_wake_all(stripe_at(c, i));    /* every flight went */
        stripe_unlock_at(c, i);
    }
    return HC_OK;
}

/*
 * Is the recorded geometry what this size makes under the eviction policy
 * it records?  (The policy is the cache's own, whatever this open asked
 * for: adopt_eviction() judges that later.)
 */
static bool
layout_sound(const hc_cache *c, const hc_cache_layout *recorded)
{
    hc_cache_layout seen = *recorded, expect;   /* read shared memory once */

    return hc_eviction_name((hc_eviction) seen.cl_eviction) != NULL
        && compute_layout(c->ca_layout.cl_size,
                          (hc_eviction) seen.cl_eviction, &expect)
        && memcmp(&seen, &expect, sizeof(expect)) == 0;
}

/* Does the header say what this size and this boot make? */
static bool
header_sound(const hc_cache *c, const char *boot_id)
{
    const hc_cache_header *h = c->ca_header;

    /* Pairs with the release store in reset_header(). */
    return atomic_load_explicit(&h->ch_magic, memory_order_acquire)
        == HC_CACHE_MAGIC
        && strncmp(h->ch_boot_id, boot_id, sizeof(h->ch_boot_id)) == 0
        && (h->ch_version != HC_CACHE_VERSION
            || layout_sound(c, &h->ch_layout));
}

/* Reset the cache unless its header is sound (checked again, locked). */
static hc_status
reset_if_unsound(hc_cache *c)
{
    hc_cache_header *h = c->ca_header;
    char boot_id[40];
    hc_status st;

    hc_read_boot_id(boot_id);
    if (header_sound(c, boot_id))
        return HC_OK;
    do
        st = hc_lock_acquire(c->ca_seg, &h->ch_init_lock,
                             hc_deadline_after(30 * HC_NS_PER_SEC));
    while (st == HC_INTERRUPTED);
    if (st != HC_OK && st != HC_OWNER_DIED)
        return st;
    /*
     * Not initialised (or the initialiser died, or the header is
     * damaged), or made in another boot, whose monotonic clock stamped
     * every expiry: start empty.  A header of another version is another
     * herdcache's, not damage: validate_header() refuses it.
     */
    if (!header_sound(c, boot_id))
        st = reset_cache(c, atomic_load_explicit(&h->ch_magic,
                                                 memory_order_relaxed)
                                != HC_CACHE_MAGIC
                            || strncmp(h->ch_boot_id, boot_id,
                                       sizeof(h->ch_boot_id)) != 0);
    else
        st = HC_OK;
    hc_lock_release(c->ca_seg, &h->ch_init_lock);
    return st;
}

/*
 * Take the policy the cache was made with (its geometry depends on it),
 * unless the caller asked for another one.
 */
static hc_status
adopt_eviction(hc_cache *c, hc_eviction asked)
{
    uint32_t stored = c->ca_header->ch_layout.cl_eviction;

    if (hc_eviction_name((hc_eviction) stored) == NULL) {
        hc_set_detail("the cache's eviction policy %u is unknown", stored);
        return HC_CORRUPT;
    }
    if (asked != HC_EVICTION_STORED && asked != stored) {
        hc_set_detail("the cache evicts by %s, this open asked for %s: pass "
                      "eviction=None to use the cache's own, or another "
                      "name for a new cache",
                      hc_eviction_name((hc_eviction) stored),
                      hc_eviction_name(asked));
        return HC_KIND_MISMATCH;
    }
    c->ca_eviction = (hc_eviction) stored;
    if (stored != c->ca_layout.cl_eviction
        && !compute_layout(c->ca_layout.cl_size, c->ca_eviction,
                           &c->ca_layout)) {
        hc_set_detail("a cache evicting by %s needs at least %llu bytes",
                      hc_eviction_name(c->ca_eviction),
                      (unsigned long long) hc_cache_min_size(c->ca_eviction));
        return HC_CORRUPT;
    }
    return HC_OK;
}

static hc_status
validate_header(hc_cache *c, hc_eviction asked)
{
    const hc_cache_header *h = c->ca_header;
    hc_status st;

    if (h->ch_version != HC_CACHE_VERSION) {
        hc_set_detail("the cache has version %u, this herdcache reads %u",
                      h->ch_version, HC_CACHE_VERSION);
        return HC_VERSION_MISMATCH;
    }
    st = adopt_eviction(c, asked);
    if (st != HC_OK)
        return st;
    if (memcmp(&h->ch_layout, &c->ca_layout, sizeof(c->ca_layout)) != 0) {
        hc_set_detail("the cache's recorded geometry does not match its "
                      "size");
        return HC_CORRUPT;
    }
    return HC_OK;
}

hc_status
hc_cache_open(hc_segment *seg, uint64_t offset, uint64_t size,
              uint32_t max_value, bool evict, hc_eviction eviction,
              hc_cache **out)
{
    /* What a new cache gets: asked for, or SIEVE. */
    hc_eviction fresh = eviction == HC_EVICTION_STORED ? HC_EVICTION_SIEVE
                                                       : eviction;
    hc_cache *c;
    uint64_t largest;
    hc_status st;

    if (hc_segment_ptr(seg, offset, size) == NULL || offset % 64 != 0)
        return HC_CORRUPT;
    if (hc_eviction_name(fresh) == NULL) {
        hc_set_detail("no eviction policy %u", (unsigned) eviction);
        return HC_BAD_ARGUMENT;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return HC_SYSTEM;
    c->ca_seg = seg;
    c->ca_base = hc_segment_ptr(seg, offset, size);
    c->ca_header = (hc_cache_header *) c->ca_base;
    memcpy(c->ca_seed, seg->sg_header->sh_hash_seed, sizeof(c->ca_seed));
    c->ca_eviction = fresh;
    if (!compute_layout(size, fresh, &c->ca_layout)) {
        hc_set_detail("a cache needs at least %llu bytes, got %llu",
                      (unsigned long long) hc_cache_min_size(fresh),
                      (unsigned long long) size);
        free(c);
        return HC_BAD_ARGUMENT;
    }
    st = reset_if_unsound(c);
    if (st == HC_OK)
        st = validate_header(c, eviction);
    if (st != HC_OK) {
        free(c);
        return st;
    }
    /* A value must fit a block no larger than a quarter of a stripe. */
    largest = (uint64_t) c->ca_layout.cl_units * HC_UNIT / 4
        - sizeof(hc_item) - HC_KEY_MAX;
    c->ca_max_value = max_value < largest ? max_value : (uint32_t) largest;
    c->ca_evict = evict;
    *out = c;
    return HC_OK;
}

void
hc_cache_close(hc_cache *c)
{
    free(c);
}

/* ---------------------------------------------------------------------- */
/* Whole-table operations                                                 */
/* ---------------------------------------------------------------------- */

hc_status
hc_cache_clear(hc_cache *c)
{
    uint32_t i;
    hc_status st = reset_if_unsound(c);     /* a damaged header: a reset */

    if (st != HC_OK)
        return st;

    for (i = 0; i < c->ca_layout.cl_nstripes; i++) {
        writer w;

        st = stripe_lock_at(c, i, false);
        if (st != HC_OK)
            return st;
        w = writer_for(c, i);
        epoch_enter(w.w_stripe);
        stripe_reset(&w);
        hc_versions_cleared(&w);    /* old versions went too (commit.h) */
        /* Every flight of the stripe went: its waiters must look again. */
        hc_flight_wake_all(w.w_stripe);
        stripe_unlock_at(c, i);
    }
    return HC_OK;
}

/* Visit the stripe's items oldest first; stop early if visit says so. */
static hc_status
walk_queue(writer *w, bool (*visit)(writer *, hc_item *, void *), void *arg)
{
    uint32_t cur = w->w_stripe->sp_qtail;
    uint64_t steps = 0;

    while (cur != 0) {
        hc_item *it = item_at(&w->w_av, cur - 1);

        if (it == NULL || ++steps > w->w_av.av_units)
            return HC_CORRUPT;
        if (!visit(w, it, arg))
            break;
        cur = it->it_qprev;
    }
    return HC_OK;
}

/*
 * Walk stripe si's items under its lock.  A stripe found inconsistent is
 * rebuilt and walked again from the start, after restart(arg) has undone
 * what the broken walk gathered: a listing or a count is of what the
 * repaired stripe holds, not of the items before the damage.
 */
static hc_status
walk_stripe(hc_cache *c, uint32_t si, uint64_t now,
            bool (*visit)(writer *, hc_item *, void *),
            void (*restart)(void *), void *arg)
{
    hc_status st = stripe_lock_at(c, si, false);
    writer w;

    if (st != HC_OK)
        return st;
    w = writer_for(c, si);
    w.w_now = now;
    if (walk_queue(&w, visit, arg) == HC_CORRUPT) {
        stripe_rebuild(c, si);
        hc_cache_count_stat(c, HC_STAT_RECOVERIES, 1);
        restart(arg);
        /* A rebuilt queue holds only validated items: this walk ends. */
        (void) walk_queue(&w, visit, arg);
    }
    stripe_unlock_at(c, si);
    return HC_OK;
}

/* Is it a key's live value, to count and list (not a kept old version)? */
static bool
listed(const hc_item *it, uint64_t now)
{
    return user_visible(it, now)
        && !(hc_version_flags(&it->it_version)
             & (HC_VERSION_RETAINED | HC_VERSION_DEAD));
}

static bool
count_live(writer *w, hc_item *it, void *arg)
{
    if (listed(it, w->w_now))
        ++*(uint64_t *) arg;
    return true;
}

static void
count_restart(void *arg)
{
    *(uint64_t *) arg = 0;
}

hc_status
hc_cache_count(hc_cache *c, uint64_t now, uint64_t *count)
{
    uint32_t i;

    *count = 0;
    for (i = 0; i < c->ca_layout.cl_nstripes; i++) {
        uint64_t here = 0;
        hc_status st = walk_stripe(c, i, now, count_live, count_restart,
                                   &here);

        if (st != HC_OK)
            return st;
        *count += here;
    }
    return HC_OK;
}

/* Expire a value now, keeping its stale window (hc_cache_expire_all). */
static bool
expire_now(writer *w, hc_item *it, void *arg)
{
    (void) arg;
    if (listed(it, w->w_now))       /* kept old versions keep their expiry */
        /* relaxed, as touch: readers see the old or the new deadline, both
         * whole, and the stripe lock orders this against every writer */
        atomic_store_explicit(&it->it_expires, w->w_now, memory_order_relaxed);
    return true;
}

/* Expiring is idempotent: a walk restarted after a repair just goes again. */
static void
expire_restart(void *arg)
{
    (void) arg;
}

hc_status
hc_cache_expire_all(hc_cache *c, uint64_t now)
{
    uint32_t i;

    for (i = 0; i < c->ca_layout.cl_nstripes; i++) {
        hc_status st = walk_stripe(c, i, now, expire_now, expire_restart,
                                   NULL);

        if (st != HC_OK)
            return st;
    }
    return HC_OK;
}

typedef struct key_buffer {
    uint8_t *kb_data;
    size_t kb_len, kb_cap, kb_count;
    bool kb_failed;
} key_buffer;

static bool
collect_key(writer *w, hc_item *it, void *arg)
{
    key_buffer *kb = arg;
    size_t need = kb->kb_len + 2 + it->it_key_len;

    if (!listed(it, w->w_now))
        return true;
    if (need > kb->kb_cap) {
        size_t cap = kb->kb_cap ? kb->kb_cap * 2 : 4096;
        uint8_t *p;

        while (cap < need)
            cap *= 2;
        p = realloc(kb->kb_data, cap);
        if (p == NULL) {
            kb->kb_failed = true;
            return false;
        }
        kb->kb_data = p;
        kb->kb_cap = cap;
    }
    {
        uint16_t klen = it->it_key_len;

        memcpy(kb->kb_data + kb->kb_len, &klen, 2);
    }
    memcpy(kb->kb_data + kb->kb_len + 2, it + 1, it->it_key_len);
    kb->kb_len = need;
    kb->kb_count++;
    return true;
}

static void
keys_restart(void *arg)
{
    key_buffer *kb = arg;

    kb->kb_len = kb->kb_count = 0;
}

hc_status
hc_cache_stripe_keys(hc_cache *c, uint32_t stripe, uint64_t now,
                     uint8_t **buf, size_t *len, size_t *count)
{
    key_buffer kb = {0};
    hc_status st;

    if (stripe >= c->ca_layout.cl_nstripes)
        return HC_BAD_ARGUMENT;
    st = walk_stripe(c, stripe, now, collect_key, keys_restart, &kb);
    if (st == HC_OK && kb.kb_failed)
        st = HC_SYSTEM;
    if (st != HC_OK) {
        free(kb.kb_data);
        return st;
    }
    *buf = kb.kb_data;
    *len = kb.kb_len;
    *count = kb.kb_count;
    return HC_OK;
}

/* ---------------------------------------------------------------------- */
/* Invariants                                                             */
/* ---------------------------------------------------------------------- */

static hc_status
corrupt(uint32_t si, const char *what)
{
    hc_set_detail("stripe %u: %s", si, what);
    return HC_CORRUPT;
}

/* Every chain: well-formed items of the right bucket, each seen once. */
static hc_status
check_chains(writer *w, uint8_t *seen, uint64_t *items, uint64_t *units)
{
    _Atomic uint32_t *buckets = buckets_of(w->w_cache, w->w_si);
    uint32_t b;

    for (b = 0; b < w->w_cache->ca_layout.cl_nbuckets; b++) {
        uint32_t link = atomic_load_explicit(&buckets[b],
                                             memory_order_relaxed);

        while (link != 0) {
            hc_item *it = rebuild_candidate(w, link - 1, b);

            if (it == NULL)
                return corrupt(w->w_si, "a chain reaches a malformed item");
            if (seen[link - 1]++)
                return corrupt(w->w_si, "an item is linked twice");
            ++*items;
            *units += hc_item_units(it);
            link = atomic_load_explicit(&it->it_next, memory_order_relaxed);
        }
    }
    return HC_OK;
}

static hc_status
check_stripe(writer *w, uint8_t *seen)
{
    uint64_t items = 0, units = 0;
    hc_status st;

    if (atomic_load_explicit(&w->w_stripe->sp_epoch, memory_order_relaxed)
        & 1)
        return corrupt(w->w_si, "the epoch is odd");
    st = check_chains(w, seen, &items, &units);
    if (st == HC_OK)
        st = hc_evict_check(w, seen, items);
    if (st != HC_OK)
        return st;
    if (items != atomic_load_explicit(&w->w_stripe->sp_items,
                                      memory_order_relaxed))
        return corrupt(w->w_si, "the item count is wrong");
    if (hc_alloc_check(&w->w_av) != HC_OK
        || units != w->w_av.av_arena->ar_used_units)
        return corrupt(w->w_si, "the allocator disagrees with the items");
    return HC_OK;
}

hc_status
hc_cache_check(hc_cache *c)
{
    uint8_t *seen = malloc(c->ca_layout.cl_units);
    hc_status st = seen ? HC_OK : HC_SYSTEM;
    char boot_id[40];
    uint32_t i;

    hc_read_boot_id(boot_id);
    if (st == HC_OK && !header_sound(c, boot_id)) {
        hc_set_detail("the cache's header is damaged (the next process "
                      "to open the cache resets it)");
        st = HC_CORRUPT;
    }

    for (i = 0; st == HC_OK && i < c->ca_layout.cl_nstripes; i++) {
        writer w;

        st = stripe_lock_at(c, i, false);
        if (st != HC_OK)
            break;
        w = writer_for(c, i);
        memset(seen, 0, c->ca_layout.cl_units);
        st = check_stripe(&w, seen);
        stripe_unlock_at(c, i);     /* wakes what a rebuild at the lock ended */
    }
    free(seen);
    return st;
}

/* ---------------------------------------------------------------------- */
/* Statistics                                                             */
/* ---------------------------------------------------------------------- */

static hc_stats_slot *
stats_slot(const hc_cache *c, uint32_t i)
{
    return (hc_stats_slot *) (c->ca_base + c->ca_layout.cl_stats_off) + i;
}

/*
 * This process's statistics slot.  A slot last used by a process that
 * has died (another token) first has its counts moved to the retired slot
 * (index HC_MAX_SLOTS), so totals never go backwards.
 */
static hc_stats_slot *
my_stats(hc_cache *c)
{
    uint32_t token, k;
    hc_stats_slot *ss, *retired;
    uint32_t owner;

    if (hc_slot_self(c->ca_seg, &token) != HC_OK)
        return NULL;
    ss = stats_slot(c, token & HC_TOKEN_INDEX_MASK);
    owner = atomic_load_explicit(&ss->ss_owner, memory_order_relaxed);
    if (owner == token)
        return ss;
    /* Only one thread of this process may adopt the slot. */
    if (!atomic_compare_exchange_strong_explicit(&ss->ss_owner, &owner, token,
                                                 memory_order_relaxed,
                                                 memory_order_relaxed))
        return owner == token ? ss : NULL;
    retired = stats_slot(c, HC_MAX_SLOTS);
    for (k = 0; k < HC_STAT_COUNT; k++) {
        uint64_t n = atomic_exchange_explicit(&ss->ss_count[k], 0,
                                              memory_order_relaxed);

        atomic_fetch_add_explicit(&retired->ss_count[k], n,
                                  memory_order_relaxed);
    }
    ss->ss_pid = atomic_load_explicit(
        &c->ca_seg->sg_header->sh_slots[token & HC_TOKEN_INDEX_MASK].sl_pid,
        memory_order_relaxed);
    return ss;
}

void
hc_cache_count_stat(hc_cache *c, hc_stat stat, uint64_t n)
{
    hc_stats_slot *ss = my_stats(c);

    /* relaxed: a counter on this process's own line, summed on demand */
    if (ss != NULL)
        atomic_fetch_add_explicit(&ss->ss_count[stat], n,
                                  memory_order_relaxed);
}

void
hc_cache_stats(hc_cache *c, uint64_t totals[HC_STAT_COUNT])
{
    uint32_t i, k;

    memset(totals, 0, sizeof(uint64_t) * HC_STAT_COUNT);
    for (i = 0; i <= HC_MAX_SLOTS; i++)
        for (k = 0; k < HC_STAT_COUNT; k++)
            totals[k] += atomic_load_explicit(&stats_slot(c, i)->ss_count[k],
                                              memory_order_relaxed);
}

bool
hc_cache_stats_slot(hc_cache *c, uint32_t i, uint64_t counts[HC_STAT_COUNT],
                    uint32_t *pid, bool *alive)
{
    hc_stats_slot *ss;
    uint32_t k, owner = 0;

    if (i > HC_MAX_SLOTS)
        return false;
    ss = stats_slot(c, i);
    /* relaxed: figures for humans, as every statistic (barriers.md) */
    if (i < HC_MAX_SLOTS
        && (owner = atomic_load_explicit(&ss->ss_owner,
                                         memory_order_relaxed)) == 0)
        return false;
    for (k = 0; k < HC_STAT_COUNT; k++)
        counts[k] = atomic_load_explicit(&ss->ss_count[k],
                                         memory_order_relaxed);
    *pid = i < HC_MAX_SLOTS ? ss->ss_pid : 0;
    *alive = owner != 0 && hc_slot_token_alive(c->ca_seg, owner);
    return true;
}

void
hc_cache_usage(hc_cache *c, uint64_t *used, uint64_t *capacity,
               uint64_t *items, uint64_t *payload)
{
    uint32_t i;

    *used = *items = *payload = 0;
    *capacity = (uint64_t) c->ca_layout.cl_nstripes * c->ca_layout.cl_units
        * HC_UNIT;
    for (i = 0; i < c->ca_layout.cl_nstripes; i++) {
        hc_stripe *s = stripe_at(c, i);

        /* a racy figure for humans: no lock, relaxed loads */
        *used += stripe_at(c, i)->sp_arena.ar_used_units * HC_UNIT;
        *items += atomic_load_explicit(&s->sp_items, memory_order_relaxed);
        *payload += atomic_load_explicit(&s->sp_bytes, memory_order_relaxed);
    }
}

/* ---------------------------------------------------------------------- */
/* The interface of table_internal.h (for flight.c)                       */
/* ---------------------------------------------------------------------- */

hc_status
hc_table_lock(hc_cache *c, uint64_t hash, hc_writer *w)
{
    uint32_t si = stripe_of(c, hash);
    hc_status st = stripe_lock_at(c, si, false);

    if (st == HC_OK)
        *w = writer_for(c, si);
    return st;
}

void
hc_table_unlock(hc_writer *w)
{
    stripe_unlock_at(w->w_cache, w->w_si);
}

void
hc_table_rebuild(hc_writer *w)
{
    stripe_rebuild(w->w_cache, w->w_si);
    hc_cache_count_stat(w->w_cache, HC_STAT_RECOVERIES, 1);
    *w = writer_for(w->w_cache, w->w_si);
}

hc_item *
hc_table_find(hc_writer *w, uint64_t hash, const void *key, uint32_t key_len,
              hc_status *st)
{
    _Atomic uint32_t *linkp;
    uint32_t unit;
    hc_item *it;

    *st = find_item(w, hash, key, key_len, &linkp, &unit);
    if (*st != HC_OK)
        return NULL;
    /*
     * The caller (flight.c) copies the value: its lengths must fit the
     * item's own block, not merely the arena, or a damaged length would
     * hand it a neighbour's bytes.  Under the lock the bitmaps can say.
     */
    it = hc_alloc_ptr(&w->w_av, unit);
    if (!hc_alloc_is_block(&w->w_av, unit, hc_item_units(it))) {
        *st = HC_CORRUPT;
        return NULL;
    }
    return it;
}

hc_status
hc_table_store(hc_writer *w, const hc_write *wr, uint64_t *csn)
{
    uint32_t units;
    hc_status st = check_write_size(w->w_cache, wr, &units);

    return st == HC_OK ? set_locked(w, wr, units, csn) : st;
}

hc_status
hc_table_remove(hc_writer *w, hc_item *it)
{
    return remove_unit(w, (uint32_t) (((uint8_t *) it - w->w_av.av_base)
                                      >> HC_UNIT_SHIFT));
}

bool
hc_table_expired(const hc_item *it, uint64_t now, bool with_stale)
{
    return is_expired(it, now, with_stale);
}

hc_item *
hc_table_queue_item(const hc_writer *w, uint32_t link)
{
    return queue_item(w, link);
}

hc_status
hc_table_lock_index(hc_cache *c, uint32_t si, hc_writer *w)
{
    hc_status st = stripe_lock_at(c, si, false);

    if (st == HC_OK)
        *w = writer_for(c, si);
    return st;
}

uint32_t
hc_table_stripe_of(const hc_cache *c, uint64_t hash)
{
    return stripe_of(c, hash);
}

hc_status
hc_table_check_write(const hc_cache *c, const hc_write *wr)
{
    uint32_t units;

    return check_write_size(c, wr, &units);
}

_Atomic uint32_t *
hc_table_chain(hc_writer *w, uint64_t hash)
{
    return &buckets_of(w->w_cache, w->w_si)[bucket_of(w->w_cache, hash)];
}

hc_item *
hc_table_item_at(hc_writer *w, uint32_t link)
{
    return link == 0 ? NULL : item_at(&w->w_av, link - 1);
}

bool
hc_table_same_key(const hc_item *a, const hc_item *b)
{
    return key_matches(a, a->it_key_len, b->it_hash, b + 1, b->it_key_len);
}

bool
hc_table_user_visible(const hc_item *it, uint64_t now)
{
    return user_visible(it, now);
}

void
hc_table_open_epoch(hc_writer *w)
{
    epoch_enter(w->w_stripe);
}

hc_status
hc_table_unlink_free(hc_writer *w, _Atomic uint32_t *linkp)
{
    uint32_t link = atomic_load_explicit(linkp, memory_order_relaxed);

    if (link == 0 || item_at(&w->w_av, link - 1) == NULL)
        return HC_CORRUPT;
    epoch_enter(w->w_stripe);
    return unlink_free(w, linkp, link - 1);
}
