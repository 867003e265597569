/*-------------------------------------------------------------------------
 *
 * table_internal.h
 *	  What table.c lends to the modules built on it (flight.c): the locked
 *	  view of one stripe and the item operations that run under its lock.
 *
 * Not part of the core's interface: the binding never includes it.
 * Every function here except hc_table_lock() expects the stripe lock of
 * the writer to be held.
 *
 *-------------------------------------------------------------------------
 */
#ifndef HC_TABLE_INTERNAL_H
#define HC_TABLE_INTERNAL_H

#include "table.h"

/* What a locked operation on one stripe works with. */
typedef struct hc_writer {
    hc_cache *w_cache;
    uint32_t w_si;
    hc_stripe *w_stripe;
    hc_arena_view w_av;
    _Atomic uint64_t *w_visited;    /* the stripe's visited map (evict.h) */
    hc_ghost *w_ghost;              /* the stripe's S3-FIFO ghost */
    uint64_t w_now;
    uint32_t w_freed;           /* unit of the last block freed: a hint */
    uint64_t w_batch_csn;       /* an atomic batch's csn (commit.h), or 0 */
    uint64_t w_drawn_csn;       /* a csn drawn ahead for the next fill, or 0 */
    bool w_deleting;            /* removing a newest version on purpose */
    bool w_evicted_live;        /* evicted a key's live newest value */
    uint32_t w_frees;           /* blocks freed under this writer */
} hc_writer;

/* Lock the stripe of hash (rebuilding it after a dead owner). */
hc_status hc_table_lock(hc_cache *c, uint64_t hash, hc_writer *w);
void hc_table_unlock(hc_writer *w);

/* Rebuild the locked stripe (after HC_CORRUPT) and refresh w. */
void hc_table_rebuild(hc_writer *w);

/* The item of key or NULL; *st is HC_OK, HC_NOT_FOUND or HC_CORRUPT. */
hc_item *hc_table_find(hc_writer *w, uint64_t hash, const void *key,
                       uint32_t key_len, hc_status *st);

/* hc_cache_set() without the locking: store (mode and all) under w. */
hc_status hc_table_store(hc_writer *w, const hc_write *wr, uint64_t *csn);

/* Unlink and free an item of the locked stripe. */
hc_status hc_table_remove(hc_writer *w, hc_item *it);

bool hc_table_expired(const hc_item *it, uint64_t now, bool with_stale);

/* The item a queue link (unit + 1) names, or NULL if it names no
 * well-formed item at the start of an allocated block. */
hc_item *hc_table_queue_item(const hc_writer *w, uint32_t link);
/* For commit.c: the chain, items and raw removal of the locked stripe. */
hc_status hc_table_lock_index(hc_cache *c, uint32_t si, hc_writer *w);
uint32_t hc_table_stripe_of(const hc_cache *c, uint64_t hash);
hc_status hc_table_check_write(const hc_cache *c, const hc_write *wr);
_Atomic uint32_t *hc_table_chain(hc_writer *w, uint64_t hash);
/* The item a chain link (unit + 1) names, or NULL if it is malformed. */
hc_item *hc_table_item_at(hc_writer *w, uint32_t link);
bool hc_table_same_key(const hc_item *a, const hc_item *b);
bool hc_table_user_visible(const hc_item *it, uint64_t now);
/* Open the stripe's free epoch (it closes when the stripe is unlocked). */
void hc_table_open_epoch(hc_writer *w);
/* Unlink and free the item *linkp names, without version bookkeeping. */
hc_status hc_table_unlink_free(hc_writer *w, _Atomic uint32_t *linkp);

#endif /* HC_TABLE_INTERNAL_H */
