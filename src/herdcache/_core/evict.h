/*-------------------------------------------------------------------------
 *
 * evict.h
 *	  Which item of a full stripe goes: SIEVE or S3-FIFO, chosen when the
 *	  cache is created and kept in its header.
 *
 * Both policies keep a stripe's items on the one doubly linked queue of
 * table.h (sp_qhead newest, it_qnext toward sp_qtail, the oldest), so
 * whatever walks "every item of the stripe" (sweeps, count, keys, the
 * region eviction for large blocks, check()) walks it as it always did.
 *
 * SIEVE (Zhang et al., NSDI 2024): one FIFO queue and a hand moving from
 * its old end to its new end.  A hit sets the item's bit in the stripe's
 * visited map; the hand spares a visited item (clearing its bit) and
 * evicts the first unvisited one.
 *
 * S3-FIFO (Yang et al., SOSP 2023), as libCacheSim's S3FIFO.c runs it:
 * a small FIFO holding about 10 % of the stripe's occupied units, a main
 * FIFO holding the rest, a ghost set of the hashes lately evicted from
 * small, and a frequency 0..3 per item.  A new key enters small (main if
 * its hash is in the ghost, or while the stripe never evicted and small is
 * full); a write replacing a key enters the old item's queue.  Small's
 * oldest item moves to main if it was read twice, otherwise it is evicted
 * and its hash enters the ghost; main's oldest goes back to main's head
 * with its frequency less one while that is above 0, otherwise it goes.
 * Small is evicted from while it holds at least a tenth of the occupied
 * units, main otherwise.  Small and main are the two halves of the one
 * queue:
 *
 *	sp_qhead -> small newest ... small oldest -> ev_main ... main oldest
 *	                                             (main newest)  = sp_qtail
 *
 * so a promotion from small to main moves ev_main by one item and links
 * nothing.  Each item records its half in it_queue, which only the stripe
 * lock's holder reads or writes.  The ghost is a direct-mapped array of
 * (hash tag, ghost clock) entries, one per bucket; an entry counts while
 * fewer than nine tenths of the stripe's item count were added after it
 * (libCacheSim's ghost is 0.9 of the cache), and a later key of the same
 * slot overwrites it: the ghost is a hint, and a wrong hint costs one
 * admission decision.
 *
 * The frequency lives in the visited map, as SIEVE's bit does: an item
 * spans at least 4 units (a 48-byte header and a key), so the map's bits
 * of its first three units are its own, and the frequency is how many of
 * them are set.  A hit sets the lowest clear one, only if one is clear;
 * the lock's holder lowers it by clearing bits.  Any pattern of the
 * three bits is a valid count, so a reader's racing fetch-or and a
 * writer's fetch-and can lose or add one count and never make a value
 * out of range.
 *
 * Notes on synchronization
 *
 * visited map (hc_evict_hit): set by lock-free readers with a relaxed
 * fetch-or, only if the bit is clear; cleared by the lock's holder with a
 * relaxed fetch-and.  Relaxed: the bits order nothing.  A reader may set
 * a bit after the block was freed and reused (its read then fails the
 * epoch check, but the store is done): the map is outside the arena, so
 * a stray bit costs one eviction decision and tears nothing.  Admission
 * clears the three bits of the new item's first units.
 * Everything else here (queue links, it_queue, ev_*, the ghost) is read
 * and written only under the stripe lock.
 *
 *-------------------------------------------------------------------------
 */
#ifndef HC_EVICT_H
#define HC_EVICT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "status.h"

typedef enum hc_eviction {
    HC_EVICTION_SIEVE = 0,
    HC_EVICTION_S3FIFO = 1,
    HC_EVICTION_COUNT,
    HC_EVICTION_STORED = 255    /* open: the policy the cache was made with */
} hc_eviction;

/* it_queue of an item under S3-FIFO (SIEVE leaves every item in SMALL). */
#define HC_QUEUE_SMALL 0
#define HC_QUEUE_MAIN 1

/* Bits of the visited map an item's frequency uses (from its first unit). */
#define HC_FREQ_BITS 3
#define HC_S3FIFO_MAIN_FROM 2   /* small's reads that earn a move to main */

/* A stripe's S3-FIFO state (zero under SIEVE); under the stripe lock. */
typedef struct hc_evict_state {
    uint32_t ev_main;           /* main's newest item, unit + 1; 0: empty */
    uint32_t ev_small_units;    /* units of the items in small */
    uint32_t ev_ghost_clock;    /* hashes added to the ghost, mod 2^32 */
    uint32_t ev_evicted;        /* 1 once the stripe evicted an item */
} hc_evict_state;

/* One ghost entry: a hash tag and the ghost clock when it was added. */
typedef struct hc_ghost {
    uint32_t gh_tag;
    uint32_t gh_clock;          /* 0: empty */
} hc_ghost;

/* The policy's name ("sieve", "s3fifo"), NULL for none. */
const char *hc_eviction_name(hc_eviction e);

static inline bool
hc_evict_bit(_Atomic uint64_t *map, uint32_t unit)
{
    /* relaxed: see "visited map" above */
    return (atomic_load_explicit(&map[unit >> 6], memory_order_relaxed)
            >> (unit & 63)) & 1;
}

/*
 * A lock-free hit on the item whose block starts at unit: SIEVE's visited
 * bit, or S3-FIFO's frequency plus one (up to 3).  Writes nothing when
 * the bit is set already or the frequency is 3, the common case of a hot
 * key, so hot keys' cache lines stay shared.
 */
static inline void
hc_evict_hit(hc_eviction e, _Atomic uint64_t *map, uint32_t unit)
{
    uint32_t k, bits = e == HC_EVICTION_S3FIFO ? HC_FREQ_BITS : 1;

    for (k = unit; k < unit + bits; k++)
        if (!hc_evict_bit(map, k)) {
            /* relaxed: see "visited map" above */
            atomic_fetch_or_explicit(&map[k >> 6], UINT64_C(1) << (k & 63),
                                     memory_order_relaxed);
            return;
        }
}

/*
 * Under the stripe lock of w (table_internal.h's hc_writer).  Those that
 * return hc_status return HC_CORRUPT, having changed nothing, when a
 * queue link they would follow is damaged; the caller rebuilds.
 */
struct hc_writer;
struct hc_item;

/* Queue a freshly linked item; old is the item of the same key it
 * replaces (still linked), or NULL. */
hc_status hc_evict_admit(struct hc_writer *w, uint32_t unit,
                         const struct hc_item *old);
/* Take an item out of its queue before it is unlinked and freed. */
hc_status hc_evict_forget(struct hc_writer *w, uint32_t unit);
/* Remove one item: a victim of the policy, or one past its expiry.
 * HC_NO_SPACE if only live flights are left. */
hc_status hc_evict_one(struct hc_writer *w);
/* A key being computed whose owner lives and holds its lease (its
 * waiters would compute it again), or an open batch's item or a version
 * it supersedes (commit.h): no eviction may take it. */
bool hc_evict_pinned(struct hc_writer *w, const struct hc_item *it);
/* Empty the queues (and the ghost, if forget_ghost). */
void hc_evict_reset(struct hc_writer *w, bool forget_ghost);
/* The queue holds exactly the items seen[] marks (items of them), with
 * consistent links, halves and counts. */
hc_status hc_evict_check(struct hc_writer *w, const uint8_t *seen,
                         uint64_t items);

#endif /* HC_EVICT_H */
