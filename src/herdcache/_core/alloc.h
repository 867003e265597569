/*-------------------------------------------------------------------------
 *
 * alloc.h
 *	  A buddy allocator over one stripe's arena of 64-byte units.
 *
 * A block of order k is 2^k units, aligned to 2^k units from the arena
 * start.  The arena need not be a power of two in size: a buddy that
 * would reach past its end simply never exists, so the tail is a run of
 * smaller blocks.  Each free order keeps a doubly linked list threaded
 * through the first 8 bytes of its free blocks; a block map (one byte per
 * unit) tells, for every block start, its order and whether it is free, so
 * that freeing finds a free buddy in O(1) and coalesces.
 *
 * Nothing here is trusted: every unit index read from a free-list link
 * is checked against the arena size and the block map before it is used.
 * An inconsistency returns HC_CORRUPT, and the caller rebuilds the whole
 * stripe with hc_alloc_rebuild() (table.c), the answer to any doubt.
 *
 * Notes on synchronization
 *
 * Everything here is changed only under the owning stripe's lock.  Lock-
 * free readers of items never look at free lists or the block map; they
 * may read a block while it is freed and reused, and tell by the stripe's
 * free epoch (table.c) that what they read is void.
 *
 *-------------------------------------------------------------------------
 */
#ifndef HC_ALLOC_H
#define HC_ALLOC_H

#include <stdbool.h>
#include <stdint.h>

#include "status.h"

#define HC_UNIT 64                  /* bytes per unit; blocks are >= 1 unit */
#define HC_UNIT_SHIFT 6
#define HC_MAX_ORDER 15             /* the largest block: 2^15 units, 2 MiB */
#define HC_ORDERS (HC_MAX_ORDER + 1)

#define HC_MAP_FREE 0x80            /* block map: this block start is free */
#define HC_MAP_ORDER 0x1f           /* block map: order + 1 (0: no block) */

/* The allocator's shared state, inside each stripe. */
typedef struct hc_arena {
    uint32_t ar_free[HC_ORDERS];    /* free list heads: unit index + 1 */
    uint64_t ar_used_units;         /* units in allocated blocks */
} hc_arena;

/* The process-local view of one arena: validated pointers and sizes. */
typedef struct hc_arena_view {
    hc_arena *av_arena;
    uint8_t *av_base;               /* unit 0 */
    uint8_t *av_map;                /* av_units bytes */
    uint32_t av_units;
} hc_arena_view;

/* The order of the smallest block that holds bytes; -1 if too large. */
int hc_alloc_order_for(uint64_t bytes);

/* Make the whole arena free (creation, clear, rebuild). */
void hc_alloc_reset(const hc_arena_view *av);

/* Allocate a block of the order; HC_NO_SPACE if none is free. */
hc_status hc_alloc_block(const hc_arena_view *av, unsigned order,
                         uint32_t *unit);

/* Free a block the caller owns; HC_CORRUPT if the map disagrees. */
hc_status hc_alloc_free(const hc_arena_view *av, uint32_t unit,
                        unsigned order);

/*
 * Rebuild the free lists from the block map after the caller has reset
 * the map and marked every block it keeps with hc_alloc_mark_used().
 */
bool hc_alloc_mark_used(const hc_arena_view *av, uint32_t unit,
                        unsigned order);
void hc_alloc_rebuild_free(const hc_arena_view *av);

/* Check every free list against the map (for check()): HC_OK or CORRUPT. */
hc_status hc_alloc_check(const hc_arena_view *av, uint64_t *free_units);

static inline void *
hc_alloc_ptr(const hc_arena_view *av, uint32_t unit)
{
    return av->av_base + ((uint64_t) unit << HC_UNIT_SHIFT);
}

#endif /* HC_ALLOC_H */
