/*-------------------------------------------------------------------------
 *
 * alloc.h
 *	  A bitmap allocator over one stripe's arena of 16-byte units.
 *
 * Two bitmaps describe the arena: a bit per unit that is in use, and a
 * bit per unit that starts a block.  A block is any run of units; its
 * length is not stored here but derived by the owner (table.c derives it
 * from the item's key and value lengths).  Freeing clears bits, so free
 * neighbours coalesce by themselves, and there are no free lists to be
 * torn by a crash: the bitmaps can always be rebuilt from the items.
 *
 * Allocation is next fit: try the caller's hint (where an eviction just
 * made room), then scan the used bitmap from a cursor for a run of free
 * units, measuring each no further than the units asked for.  Every search goes a word at a time:
 * ctz/clz find where a run of used or free units ends, so a search costs
 * a step per word plus a step per free run it passes, never a step per
 * unit.  The arena of a stripe is a few MiB, so even a full scan of a
 * fragmented one is a few thousand steps; a caller that knows where the
 * only new room can be (eviction, after one block was freed) asks for
 * that run alone and scans nothing.
 *
 * The run bound.  A failed search of a full stripe is the costly case: a
 * set that must evict searched the whole arena first.  ar_run_bound keeps
 * an upper bound on the longest free run (plus one; 0 says nothing): a
 * failed whole-arena search sets it to the longest run it passed, a free
 * raises it to the run the freed block joins (before its bits clear, so a
 * death in between leaves it high, never low; a run too long to measure
 * cheaply drops it to 0), an allocation leaves it (runs only shrink).
 * A search for more units than the bound finds nothing without looking.
 * It sits in what was the arena's padding; a build without it would not
 * lift it, hence HC_CACHE_VERSION 5.  hc_alloc_check() reports a bound
 * below a free run as damage, and a caller about to give up on room
 * searches once without it (hc_alloc_forget_bound()).
 *
 * Nothing here is trusted: every unit index is checked against the arena
 * size, and a free of something that is not an allocated block returns
 * HC_CORRUPT, after which the caller rebuilds the stripe.
 *
 * Notes on synchronization
 *
 * Everything here is changed only under the owning stripe's lock.  Lock-
 * free readers of items never look at the bitmaps; they may read a block
 * while it is freed and reused, and learn from the stripe's free epoch
 * (table.c) that what they read is void.
 *
 *-------------------------------------------------------------------------
 */
#ifndef HC_ALLOC_H
#define HC_ALLOC_H

#include <stdbool.h>
#include <stdint.h>

#include "status.h"

#define HC_UNIT 16                  /* bytes per unit */
#define HC_UNIT_SHIFT 4

/* The allocator's shared state, inside each stripe. */
typedef struct hc_arena {
    uint32_t ar_cursor;             /* where the next scan starts */
    uint32_t ar_run_bound;          /* 0, or 1 + a bound on the longest
                                     * free run (see "The run bound") */
    uint64_t ar_used_units;         /* units in allocated blocks */
} hc_arena;

/* The process-local view of one arena: validated pointers and sizes. */
typedef struct hc_arena_view {
    hc_arena *av_arena;
    uint8_t *av_base;               /* unit 0 */
    uint64_t *av_used;              /* bit u: unit u is in use */
    uint64_t *av_start;             /* bit u: a block starts at unit u */
    uint32_t av_units;
} hc_arena_view;

/* 64-bit words of one bitmap for an arena of units units. */
static inline uint32_t
hc_alloc_words(uint32_t units)
{
    return (units + 63) / 64;
}

/* Units that hold bytes. */
static inline uint32_t
hc_alloc_units_for(uint64_t bytes)
{
    return (uint32_t) ((bytes + HC_UNIT - 1) >> HC_UNIT_SHIFT);
}

static inline void *
hc_alloc_ptr(const hc_arena_view *av, uint32_t unit)
{
    return av->av_base + ((uint64_t) unit << HC_UNIT_SHIFT);
}

/* Make the whole arena free. */
void hc_alloc_reset(const hc_arena_view *av);

/* Allocate n units, at hint if it is free there; HC_NO_SPACE if none. */
hc_status hc_alloc_block(const hc_arena_view *av, uint32_t n, uint32_t hint,
                         uint32_t *unit);

/*
 * Allocate n units inside the free run that covers unit near: at its low
 * end (and move the cursor past them), or at its high end if high (as
 * hc_alloc_block_high() places them).  HC_NO_SPACE if near is in use or
 * its run is shorter than n.  No scan: a step per word the run spans.
 */
hc_status hc_alloc_block_near(const hc_arena_view *av, uint32_t n,
                              uint32_t near, bool high, uint32_t *unit);

/*
 * What a failed hc_alloc_block() or hc_alloc_block_high() for n units
 * leaves known: no free run is longer than the result.
 */
uint32_t hc_alloc_longest_after_miss(const hc_arena_view *av, uint32_t n);

/*
 * hc_alloc_block_near() for a caller that knows no free run other than
 * the one covering near is longer than *others units (eviction: the last
 * search failed, and near's block is the only one freed since).  Placed,
 * the run bound drops to what is then known: the longer of *others and
 * what is left of near's run.  HC_NO_SPACE: *others grows to near's run,
 * which is one of the others for the next attempt.
 */
hc_status hc_alloc_block_freed(const hc_arena_view *av, uint32_t n,
                               uint32_t near, bool high, uint32_t *others,
                               uint32_t *unit);

/*
 * Allocate n units as high in the arena as they fit (the cursor stays):
 * for small blocks that must not move while they live (a key in flight),
 * so that they gather at the arena's end instead of cutting the runs that
 * large values need.
 */
hc_status hc_alloc_block_high(const hc_arena_view *av, uint32_t n,
                              uint32_t *unit);

/*
 * Forget the run bound, so the next search looks whatever it said (and,
 * failing, sets it again): a caller about to give up on room calls it,
 * so that a damaged bound cannot refuse a stripe with room for ever.
 */
void hc_alloc_forget_bound(const hc_arena_view *av);

/* Free the n-unit block at unit; HC_CORRUPT if it is not one. */
hc_status hc_alloc_free(const hc_arena_view *av, uint32_t unit, uint32_t n);

/* True if unit starts an allocated block of (at least) n units. */
bool hc_alloc_is_block(const hc_arena_view *av, uint32_t unit, uint32_t n);

/* Rebuild: mark a block used; false (nothing marked) if it overlaps. */
bool hc_alloc_mark_used(const hc_arena_view *av, uint32_t unit, uint32_t n);

/* Check the bitmaps against the recorded count: HC_OK or HC_CORRUPT. */
hc_status hc_alloc_check(const hc_arena_view *av);

#endif /* HC_ALLOC_H */
