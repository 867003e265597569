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

/* Do the eight words at map all equal fill?  One branch for eight: a
 * failed search of a full stripe spends its time here. */
static bool
eight_words_are(const uint64_t *map, uint64_t fill)
{
    uint64_t differ = 0;
    int i;

    for (i = 0; i < 8; i++)
        differ |= map[i] ^ fill;
    return differ == 0;
}

/*
 * The first unit from u on (below to) whose bit in map is not on; to if
 * there is none.  A word at a time, eight while they all match: ctz finds
 * the first differing bit, so a run costs a step per word it spans, not
 * per unit.
 */
static uint32_t
run_end(const uint64_t *map, uint32_t u, uint32_t to, bool on)
{
    uint64_t fill = on ? ~UINT64_C(0) : 0;
    uint64_t v = u;             /* 64 bits: v | 63 cannot wrap */

    while (v < to) {
        uint64_t differ;

        if ((v & 63) == 0) {
            uint64_t w = v >> 6, whole = to >> 6;   /* words below to */

            while (w + 8 <= whole && eight_words_are(map + w, fill))
                w += 8;
            v = w << 6;
            if (v >= to)
                break;
        }
        differ = (map[v >> 6] ^ fill) >> (v & 63);
        if (differ != 0) {
            v += (uint64_t) __builtin_ctzll(differ);
            return v < to ? (uint32_t) v : to;
        }
        v = (v | 63) + 1;
    }
    return to;
}

/* The lowest unit v, floor <= v <= u, such that the bits [v, u) of map
 * are all on; run_end()'s mirror, with clz. */
static uint32_t
run_begin(const uint64_t *map, uint32_t u, uint32_t floor, bool on)
{
    while (u > floor) {
        uint32_t top = u - 1;
        uint64_t word = map[top >> 6];
        uint64_t differ = (on ? ~word : word) << (63 - (top & 63));

        if (differ != 0) {
            u = top - (uint32_t) __builtin_clzll(differ) + 1;
            return u > floor ? u : floor;
        }
        u = top & ~UINT32_C(63);
    }
    return floor;
}

/*
 * First run of n free units in [from, to); to <= av_units.  A step per
 * free run and per word: a full stripe of fragments is a few thousand.
 * *longest: raised to the longest run passed (cut at from and to).
 */
static bool
scan(const hc_arena_view *av, uint32_t from, uint32_t to, uint32_t n,
     uint32_t *unit, uint32_t *longest)
{
    uint32_t u = from;

    while (u < to) {
        uint32_t start = run_end(av->av_used, u, to, true);
        /* Measured no further than n units: a run that long is taken, and
         * a shorter one ends on its own (walking a stripe's whole free
         * tail on each set made a set 2.4 times as slow). */
        uint32_t end = run_end(av->av_used, start,
                               to - start > n ? start + n : to, false);

        if (end - start >= n) {
            *unit = start;
            return true;
        }
        if (end - start > *longest)
            *longest = end - start;
        u = end;                /* > start unless start == to: progress */
    }
    return false;
}

/* ---------------------------------------------------------------------- */
/* The run bound (alloc.h)                                                */
/* ---------------------------------------------------------------------- */

/* Record that no free run is longer than longest. */
static void
bound_set(const hc_arena_view *av, uint32_t longest)
{
    /* an arena of 2^32 - 1 units could not record it: no bound then */
    av->av_arena->ar_run_bound = longest < UINT32_MAX ? longest + 1 : 0;
}

void
hc_alloc_forget_bound(const hc_arena_view *av)
{
    av->av_arena->ar_run_bound = 0;
}

/*
 * The block [unit, unit + n) is about to be freed: lift the bound to the
 * run it will join.  Walks at most BOUND_REACH units each way, so a free
 * beside the long free tail of a stripe that is not full costs a few
 * steps, not a step per eight words of the tail; a run that reaches that
 * far drops the bound (0), and with no bound a free walks nothing.  A
 * stripe without such runs, where searches fail, keeps it.
 */
#define BOUND_REACH 4096

static void
bound_lift(const hc_arena_view *av, uint32_t unit, uint32_t n)
{
    uint32_t b = av->av_arena->ar_run_bound, units = av->av_units;
    uint32_t end = unit + n, floor, to, lo, hi;

    if (b == 0)
        return;
    floor = unit > BOUND_REACH ? unit - BOUND_REACH : 0;
    to = units - end > BOUND_REACH ? end + BOUND_REACH : units;
    lo = run_begin(av->av_used, unit, floor, false);
    hi = run_end(av->av_used, end, to, false);
    if ((lo == floor && floor > 0) || (hi == to && to < units))
        av->av_arena->ar_run_bound = 0;         /* too long to measure */
    else if (hi - lo >= b)
        bound_set(av, hi - lo);
}

/* May a run of n free units exist, by the bound? */
static bool
bound_allows(const hc_arena_view *av, uint32_t n)
{
    uint32_t b = av->av_arena->ar_run_bound;

    return b == 0 || n < b;
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

/*
 * Can n units be free at all?  A full stripe that must evict before every
 * set is the common case, and the count answers it without a scan.  The
 * count may only be high after a death inside hc_alloc_free() (bits
 * cleared, count not yet lowered), and a dead owner's stripe is rebuilt
 * before anyone allocates in it again (table.c); a count past the arena
 * (damage) says nothing, so the scan runs.
 */
static bool
may_fit(const hc_arena_view *av, uint32_t n)
{
    uint64_t used = av->av_arena->ar_used_units;

    return n > 0 && n <= av->av_units
        && (used > av->av_units || n <= av->av_units - used)
        && bound_allows(av, n);
}

/* The highest run of n free units, scanning down from the arena's end. */
static bool
scan_down(const hc_arena_view *av, uint32_t n, uint32_t *unit)
{
    uint32_t u = av->av_units, longest = 0;

    while (u > 0) {
        uint32_t end = run_begin(av->av_used, u, 0, true);
        /* No further than n units down, as in scan() */
        uint32_t start = run_begin(av->av_used, end, end > n ? end - n : 0,
                                   false);

        if (end - start >= n) {
            *unit = end - n;            /* the top n units of the run */
            return true;
        }
        if (end - start > longest)
            longest = end - start;
        u = start;              /* < u unless end == 0: then the loop ends */
    }
    bound_set(av, longest);     /* every run was passed whole */
    return false;
}

/* The free run that covers unit u, [*start, *end); false if u is in use
 * or outside the arena. */
static bool
free_run_at(const hc_arena_view *av, uint32_t u, uint32_t *start,
            uint32_t *end)
{
    if (u >= av->av_units || bit(av->av_used, u))
        return false;
    *start = run_begin(av->av_used, u, 0, false);
    *end = run_end(av->av_used, u, av->av_units, false);
    return true;
}

hc_status
hc_alloc_block_high(const hc_arena_view *av, uint32_t n, uint32_t *unit)
{
    if (!may_fit(av, n) || !scan_down(av, n, unit))
        return HC_NO_SPACE;
    mark(av, *unit, n);
    return HC_OK;
}

hc_status
hc_alloc_block_near(const hc_arena_view *av, uint32_t n, uint32_t near,
                    bool high, uint32_t *unit)
{
    uint32_t start, end;

    if (n == 0 || !free_run_at(av, near, &start, &end) || end - start < n)
        return HC_NO_SPACE;
    if (high) {
        *unit = end - n;
        mark(av, *unit, n);
    }
    else {
        *unit = start;
        take(av, *unit, n);
    }
    return HC_OK;
}

uint32_t
hc_alloc_longest_after_miss(const hc_arena_view *av, uint32_t n)
{
    uint32_t b = av->av_arena->ar_run_bound;

    /* n == 0 fails without a search: it says nothing of the runs */
    if (n == 0)
        return b != 0 ? b - 1 : UINT32_MAX;
    return b != 0 && b - 1 < n - 1 ? b - 1 : n - 1;
}

hc_status
hc_alloc_block_freed(const hc_arena_view *av, uint32_t n, uint32_t near,
                     bool high, uint32_t *others, uint32_t *unit)
{
    uint32_t start, end;

    if (!free_run_at(av, near, &start, &end))
        return HC_NO_SPACE;     /* near in use: its run is not new */
    if (n == 0 || end - start < n) {
        if (end - start > *others)
            *others = end - start;      /* one of the others from now on */
        return HC_NO_SPACE;
    }
    if (hc_alloc_block_near(av, n, near, high, unit) != HC_OK)
        return HC_NO_SPACE;     /* not reached: the run was measured */
    /* Lowered once the block is marked: a death before leaves it high. */
    bound_set(av, end - start - n > *others ? end - start - n : *others);
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
    av->av_arena->ar_run_bound = 0;     /* long runs: searches succeed */
}

/*
 * Next fit: the first run of n free units from cursor on, then from the
 * arena's start to where a run from before cursor would have n units.
 * Failed, the two passes saw every run whole (one that starts before
 * cursor is shorter than n, so it ends inside the second), and the
 * longest becomes the bound.
 */
static bool
scan_from(const hc_arena_view *av, uint32_t cursor, uint32_t n,
          uint32_t *unit)
{
    uint32_t longest = 0;

    if (scan(av, cursor, av->av_units, n, unit, &longest)
        || scan(av, 0, cursor + n - 1 < av->av_units ? cursor + n - 1
                                                     : av->av_units,
                n, unit, &longest))
        return true;
    bound_set(av, longest);
    return false;
}

hc_status
hc_alloc_block(const hc_arena_view *av, uint32_t n, uint32_t hint,
               uint32_t *unit)
{
    uint32_t cursor = av->av_arena->ar_cursor;

    if (cursor >= av->av_units)
        cursor = 0;
    /* At the hint itself, not at the low end of its run: measuring the
     * run walked a stripe's whole free tail on every overwrite of a cache
     * that is not full (a set took 2.4 times as long). */
    if (run_free(av, hint, n)) {
        *unit = hint;
        take(av, hint, n);
        return HC_OK;
    }
    if (!may_fit(av, n) || !scan_from(av, cursor, n, unit))
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
    /* Before the bits clear: a death in between leaves the bound high,
     * which is safe. */
    bound_lift(av, unit, n);
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
    uint32_t w, words = hc_alloc_words(av->av_units), longest = 0, unit;
    uint64_t used = 0;

    for (w = 0; w < words; w++) {
        if (av->av_start[w] & ~av->av_used[w])
            return HC_CORRUPT;  /* a block starts on a free unit */
        used += (uint64_t) __builtin_popcountll(av->av_used[w]);
    }
    /* a search for one unit more than any run passes them all */
    if (av->av_units < UINT32_MAX
        && scan(av, 0, av->av_units, av->av_units + 1, &unit, &longest))
        return HC_CORRUPT;      /* not reached: no run exceeds the arena */
    if (!bound_allows(av, longest))
        return HC_CORRUPT;      /* a free run longer than the bound */
    return used == av->av_arena->ar_used_units ? HC_OK : HC_CORRUPT;
}
