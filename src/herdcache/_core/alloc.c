/*-------------------------------------------------------------------------
 *
 * alloc.c
 *	  The bitmap allocator described in alloc.h.
 *
 *-------------------------------------------------------------------------
 */
#include "alloc.h"

#include <string.h>

#include "inject.h"

static bool
bit(const uint64_t *map, uint32_t u)
{
    return (map[u >> 6] >> (u & 63)) & 1;
}

/* The bits of [from, from + n) that lie in from's word; *take of them. */
static uint64_t
word_mask(uint32_t from, uint32_t n, uint32_t *take)
{
    uint32_t off = from & 63;

    *take = 64 - off < n ? 64 - off : n;
    return (*take == 64 ? ~UINT64_C(0) : ((UINT64_C(1) << *take) - 1)) << off;
}

static void
set_bits(uint64_t *map, uint32_t from, uint32_t n, bool on)
{
    while (n > 0) {
        uint32_t take;
        uint64_t mask = word_mask(from, n, &take);

        if (on)
            map[from >> 6] |= mask;
        else
            map[from >> 6] &= ~mask;
        from += take;
        n -= take;
    }
}

/* Are the bits [from, from + n) of map all on (or all off)?  A word at a
 * time: a block's check costs a 64th of its length. */
static bool
bits_all(const uint64_t *map, uint32_t from, uint32_t n, bool on)
{
    while (n > 0) {
        uint32_t take;
        uint64_t mask = word_mask(from, n, &take);

        if ((map[from >> 6] & mask) != (on ? mask : 0))
            return false;
        from += take;
        n -= take;
    }
    return true;
}

/* Are units [from, from + n) all free (and inside the arena)? */
static bool
run_free(const hc_arena_view *av, uint32_t from, uint32_t n)
{
    if (n == 0 || from >= av->av_units || n > av->av_units - from)
        return false;
    return bits_all(av->av_used, from, n, false);
}

/* First run of n free units in [from, to); to <= av_units. */
static bool
scan(const hc_arena_view *av, uint32_t from, uint32_t to, uint32_t n,
     uint32_t *unit)
{
    uint32_t u = from, run = 0, start = from;

    while (u < to) {
        uint64_t word = av->av_used[u >> 6];

        if ((u & 63) == 0 && word == 0 && u + 64 <= to) {
            if (run == 0)
                start = u;
            run += 64;
            u += 64;
        }
        else if ((u & 63) == 0 && word == ~UINT64_C(0)) {
            run = 0;
            u += 64;
        }
        else {
            if (bit(av->av_used, u))
                run = 0;
            else if (run++ == 0)
                start = u;
            u++;
        }
        if (run >= n) {
            *unit = start;
            return true;
        }
    }
    return false;
}

static void
mark(const hc_arena_view *av, uint32_t unit, uint32_t n)
{
    set_bits(av->av_used, unit, n, true);
    HC_INJECT("alloc.take.marked");
    set_bits(av->av_start, unit, 1, true);
    av->av_arena->ar_used_units += n;
}

static void
take(const hc_arena_view *av, uint32_t unit, uint32_t n)
{
    mark(av, unit, n);
    av->av_arena->ar_cursor = unit + n < av->av_units ? unit + n : 0;
}

/* The highest run of n free units, scanning down from the arena's end. */
static bool
scan_down(const hc_arena_view *av, uint32_t n, uint32_t *unit)
{
    uint32_t u = av->av_units, run = 0;

    while (u > 0) {
        if ((u & 63) == 0 && u >= 64 && av->av_used[(u - 1) >> 6] == 0) {
            run += 64;
            u -= 64;
        }
        else if ((u & 63) == 0 && u >= 64
                 && av->av_used[(u - 1) >> 6] == ~UINT64_C(0)) {
            run = 0;
            u -= 64;
        }
        else if (bit(av->av_used, --u))
            run = 0;
        else
            run++;
        if (run >= n) {
            *unit = u + (run - n);      /* the top n units of the run */
            return true;
        }
    }
    return false;
}

hc_status
hc_alloc_block_high(const hc_arena_view *av, uint32_t n, uint32_t *unit)
{
    if (n == 0 || n > av->av_units || !scan_down(av, n, unit))
        return HC_NO_SPACE;
    mark(av, *unit, n);
    return HC_OK;
}

void
hc_alloc_reset(const hc_arena_view *av)
{
    size_t bytes = (size_t) hc_alloc_words(av->av_units) * sizeof(uint64_t);

    memset(av->av_used, 0, bytes);
    memset(av->av_start, 0, bytes);
    av->av_arena->ar_used_units = 0;
    av->av_arena->ar_cursor = 0;
}

hc_status
hc_alloc_block(const hc_arena_view *av, uint32_t n, uint32_t hint,
               uint32_t *unit)
{
    uint32_t cursor = av->av_arena->ar_cursor;

    if (cursor >= av->av_units)
        cursor = 0;
    if (run_free(av, hint, n))
        *unit = hint;
    else if (!scan(av, cursor, av->av_units, n, unit)
             && !scan(av, 0, cursor + n - 1 < av->av_units
                                 ? cursor + n - 1 : av->av_units,
                      n, unit))
        return HC_NO_SPACE;
    take(av, *unit, n);
    return HC_OK;
}

bool
hc_alloc_is_block(const hc_arena_view *av, uint32_t unit, uint32_t n)
{
    if (n == 0 || unit >= av->av_units || n > av->av_units - unit
        || !bit(av->av_start, unit))
        return false;
    return bits_all(av->av_used, unit, n, true)
        && bits_all(av->av_start, unit + 1, n - 1, false);
}

hc_status
hc_alloc_free(const hc_arena_view *av, uint32_t unit, uint32_t n)
{
    if (!hc_alloc_is_block(av, unit, n) || av->av_arena->ar_used_units < n)
        return HC_CORRUPT;
    set_bits(av->av_used, unit, n, false);
    HC_INJECT("alloc.free.cleared");
    set_bits(av->av_start, unit, 1, false);
    av->av_arena->ar_used_units -= n;
    return HC_OK;
}

bool
hc_alloc_mark_used(const hc_arena_view *av, uint32_t unit, uint32_t n)
{
    if (!run_free(av, unit, n))
        return false;
    take(av, unit, n);
    return true;
}

hc_status
hc_alloc_check(const hc_arena_view *av)
{
    uint32_t w, words = hc_alloc_words(av->av_units);
    uint64_t used = 0;

    for (w = 0; w < words; w++) {
        if (av->av_start[w] & ~av->av_used[w])
            return HC_CORRUPT;  /* a block starts on a free unit */
        used += (uint64_t) __builtin_popcountll(av->av_used[w]);
    }
    return used == av->av_arena->ar_used_units ? HC_OK : HC_CORRUPT;
}
