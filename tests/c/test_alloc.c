/*
 * test_alloc.c - the allocator's free-space search (alloc.c) against a
 * naive reference that tests one unit at a time: every run position and
 * length in small arenas (every alignment, runs across word boundaries
 * and at the bitmap's ends, arenas of 1 to 130 units), then random
 * bitmaps of up to 4,096 units.  Each search must return exactly the unit the reference
 * chooses, or no space when it finds none, and leave the maps consistent.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "alloc.h"
#include "harness.h"

#define NONE UINT32_MAX

/* An arena without bytes: the search reads only the maps. */
typedef struct test_arena {
    hc_arena ta_arena;
    hc_arena_view ta_av;
} test_arena;

static void
arena_open(test_arena *ta, uint32_t units)
{
    size_t words = hc_alloc_words(units);

    ta->ta_av.av_arena = &ta->ta_arena;
    ta->ta_av.av_base = NULL;
    ta->ta_av.av_used = calloc(words, sizeof(uint64_t));
    ta->ta_av.av_start = calloc(words, sizeof(uint64_t));
    ta->ta_av.av_units = units;
    CHECK(ta->ta_av.av_used != NULL && ta->ta_av.av_start != NULL);
    hc_alloc_reset(&ta->ta_av);
}

static void
arena_close(test_arena *ta)
{
    free(ta->ta_av.av_used);
    free(ta->ta_av.av_start);
}

/* ---------------------------------------------------------------------- */
/* The reference: one unit at a time                                      */
/* ---------------------------------------------------------------------- */

static bool
unit_free(const hc_arena_view *av, uint32_t u)
{
    return !((av->av_used[u >> 6] >> (u & 63)) & 1);
}

#define MAX_UNITS 4096
static uint32_t free_len[MAX_UNITS + 1];    /* free units from u on */

/* Count, unit by unit from the top, the free units from each unit on. */
static void
ref_prepare(const hc_arena_view *av)
{
    uint32_t u = av->av_units;

    CHECK(u <= MAX_UNITS);
    free_len[u] = 0;
    while (u-- > 0)
        free_len[u] = unit_free(av, u) ? free_len[u + 1] + 1 : 0;
}

/* Are units [s, s + n) free and below to? */
static bool
ref_fits(uint32_t s, uint32_t n, uint32_t to)
{
    return s + (uint64_t) n <= to && free_len[s] >= n;
}

/* The free run covering unit near: *start, *end; false if none. */
static bool
ref_run(const hc_arena_view *av, uint32_t near, uint32_t *start,
        uint32_t *end)
{
    if (near >= av->av_units || !unit_free(av, near))
        return false;
    for (*start = near; *start > 0 && unit_free(av, *start - 1); (*start)--)
        ;
    for (*end = near; *end < av->av_units && unit_free(av, *end); (*end)++)
        ;
    return true;
}

static uint32_t
ref_near(const hc_arena_view *av, uint32_t n, uint32_t near, bool high)
{
    uint32_t start, end;

    if (!ref_run(av, near, &start, &end) || end - start < n)
        return NONE;
    return high ? end - n : start;
}

/* Next fit as alloc.h states it: at the hint if its n units are free,
 * then from the cursor to the end, then from 0 to the cursor (and the
 * runs straddling it). */
static uint32_t
ref_block(const hc_arena_view *av, uint32_t n, uint32_t hint)
{
    uint32_t units = av->av_units, cursor = av->av_arena->ar_cursor, s, to;
    uint32_t u;

    for (u = 0; hint < units && n > 0 && n <= units - hint && u < n; u++)
        if (!unit_free(av, hint + u))
            break;
    if (hint < units && n > 0 && n <= units - hint && u == n)
        return hint;
    if (cursor >= units)
        cursor = 0;
    for (s = cursor; s < units; s++)
        if (ref_fits(s, n, units))
            return s;
    to = cursor + n - 1 < units ? cursor + n - 1 : units;
    for (s = 0; s < to; s++)
        if (ref_fits(s, n, to))
            return s;
    return NONE;
}

static uint32_t
ref_high(const hc_arena_view *av, uint32_t n)
{
    uint32_t s;

    for (s = av->av_units; s-- > 0;)
        if (ref_fits(s, n, av->av_units))
            return s;
    return NONE;
}

/* ---------------------------------------------------------------------- */
/* The comparison                                                         */
/* ---------------------------------------------------------------------- */

/* Undo a successful allocation: the maps, the count and the cursor. */
static void
undo(const hc_arena_view *av, uint32_t unit, uint32_t n, uint32_t cursor)
{
    CHECK_ST(hc_alloc_free(av, unit, n), HC_OK);
    av->av_arena->ar_cursor = cursor;
    CHECK_ST(hc_alloc_check(av), HC_OK);
}

/* The search's answer (a status and a unit) against the reference's. */
static void
expect(const hc_arena_view *av, hc_status st, uint32_t got, uint32_t want,
       uint32_t n, uint32_t cursor, const char *what)
{
    if ((want == NONE && st == HC_NO_SPACE) || (st == HC_OK && got == want)) {
        if (st == HC_OK) {
            CHECK(hc_alloc_is_block(av, got, n));
            undo(av, got, n, cursor);
        }
        return;
    }
    fprintf(stderr, "%s of %u units (arena %u units, cursor %u): got %s "
            "at %u, the reference says %d\n", what, n, av->av_units, cursor,
            hc_strerror(st), got, want == NONE ? -1 : (int) want);
    exit(1);
}

/* Every search for n units, with this hint, against the reference (asked
 * first: the search takes what it finds). */
static void
compare(const hc_arena_view *av, uint32_t n, uint32_t hint)
{
    uint32_t cursor = av->av_arena->ar_cursor, got = NONE, want;
    hc_status st;

    ref_prepare(av);
    want = ref_block(av, n, hint);
    st = hc_alloc_block(av, n, hint, &got);
    expect(av, st, got, want, n, cursor, "block");
    want = ref_high(av, n);
    st = hc_alloc_block_high(av, n, &got);
    expect(av, st, got, want, n, cursor, "block_high");
    want = ref_near(av, n, hint, false);
    st = hc_alloc_block_near(av, n, hint, false, &got);
    expect(av, st, got, want, n, cursor, "near low");
    want = ref_near(av, n, hint, true);
    st = hc_alloc_block_near(av, n, hint, true, &got);
    expect(av, st, got, want, n, cursor, "near high");
}

/* Mark [from, to) used as one block (nothing if empty). */
static void
used_block(const hc_arena_view *av, uint32_t from, uint32_t to)
{
    if (to > from)
        CHECK(hc_alloc_mark_used(av, from, to - from));
}

/*
 * One free run [p, p + len) in an otherwise full arena, for every arena
 * size around a word, every p and every len: sizes 1, 2, len - 1, len,
 * len + 1 and past a word, hints inside, beside and outside the run,
 * cursors before, inside and after it.
 */
static void
test_every_run_of_small_arenas(void)
{
    static const uint32_t sizes[] = {1, 2, 63, 64, 65, 130};
    size_t i;

    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint32_t units = sizes[i], p, len;

        for (p = 0; p < units; p++) {
            for (len = 1; p + len <= units; len++) {
                const uint32_t ns[] = {1, 2, len - 1, len, len + 1, 64, 65};
                const uint32_t hints[] = {p, p + len - 1, p + len / 2,
                                          p - 1, p + len, NONE};
                const uint32_t cursors[] = {0, p + len / 2, p + len};
                test_arena ta;
                size_t a, b, c;

                arena_open(&ta, units);
                used_block(&ta.ta_av, 0, p);
                used_block(&ta.ta_av, p + len, units);
                for (a = 0; a < sizeof(ns) / sizeof(ns[0]); a++)
                    for (b = 0; b < sizeof(hints) / sizeof(hints[0]); b++)
                        for (c = 0; c < 3; c++) {
                            ta.ta_arena.ar_cursor = cursors[c];
                            if (ns[a] > 0)
                                compare(&ta.ta_av, ns[a], hints[b]);
                        }
                arena_close(&ta);
            }
        }
    }
}

/* Random blocks and gaps, of lengths up to max, over the whole arena. */
static void
fill_random(const hc_arena_view *av, uint32_t max_block, uint32_t max_gap)
{
    uint32_t u = (uint32_t) rand() % (max_gap + 1);

    while (u < av->av_units) {
        uint32_t n = 1 + (uint32_t) rand() % max_block;

        if (n > av->av_units - u)
            n = av->av_units - u;
        CHECK(hc_alloc_mark_used(av, u, n));
        u += n + (uint32_t) rand() % (max_gap + 1);
    }
    CHECK_ST(hc_alloc_check(av), HC_OK);
}

/*
 * Random arenas (sizes that end inside a word or on one), blocks and gaps
 * from a unit to a few words, and in every fourth arena gaps of up to 19
 * words (the searches skip whole words eight at a time): sizes from one
 * unit to past the longest gap, from random hints and cursors.
 */
static void
test_random_bitmaps(void)
{
    int round;

    srand(11);
    for (round = 0; round < 300; round++) {
        uint32_t units = 1 + (uint32_t) rand() % MAX_UNITS;
        uint32_t max_block = 1 + (uint32_t) rand() % 150;
        uint32_t max_gap = (uint32_t) rand() % (round % 4 ? 150 : 1200);
        test_arena ta;
        uint32_t n;

        arena_open(&ta, units);
        fill_random(&ta.ta_av, max_block, max_gap);
        for (n = 1; n <= max_gap + 2; n += n < 70 ? 1 : 1 + n % 37) {
            int k;

            for (k = 0; k < 3; k++) {
                ta.ta_arena.ar_cursor = (uint32_t) rand() % units;
                compare(&ta.ta_av, n, (uint32_t) rand() % (units + 1));
            }
        }
        arena_close(&ta);
    }
}

/* A count that says the arena is full answers without a scan, and a
 * damaged count (past the arena) does not stop the scan. */
static void
test_the_count_short_cuts_only_when_it_can(void)
{
    test_arena ta;
    uint32_t got;

    arena_open(&ta, 200);
    used_block(&ta.ta_av, 0, 100);
    used_block(&ta.ta_av, 150, 200);
    CHECK_ST(hc_alloc_block(&ta.ta_av, 50, NONE, &got), HC_OK);
    CHECK(got == 100);
    CHECK_ST(hc_alloc_free(&ta.ta_av, got, 50), HC_OK);
    ta.ta_arena.ar_used_units = 190;      /* says: 10 free units */
    CHECK_ST(hc_alloc_block(&ta.ta_av, 50, NONE, &got), HC_NO_SPACE);
    CHECK_ST(hc_alloc_block_high(&ta.ta_av, 50, &got), HC_NO_SPACE);
    ta.ta_arena.ar_used_units = UINT64_MAX;     /* damaged: scan anyway */
    CHECK_ST(hc_alloc_block_high(&ta.ta_av, 50, &got), HC_OK);
    CHECK(got == 100);
    CHECK_ST(hc_alloc_block(&ta.ta_av, 0, NONE, &got), HC_NO_SPACE);
    CHECK_ST(hc_alloc_block_near(&ta.ta_av, 0, 120, false, &got),
             HC_NO_SPACE);
    arena_close(&ta);
}

/*
 * The run bound against the reference, through the churn of a full stripe
 * that evicts: a search for n units, on failure blocks freed one at a time
 * (oldest first, as a queue evicts) each followed by
 * hc_alloc_block_freed() at the freed unit, until the block is placed.
 * Every answer is the reference's (a bound too low would make a search
 * miss room that is there), and hc_alloc_check() finds the bound at or
 * above every free run after every step.
 */
static void
test_the_run_bound_never_hides_room(void)
{
    enum { UNITS = 3000, MAX_LIVE = 2048 };
    static uint32_t live_unit[MAX_LIVE], live_n[MAX_LIVE];
    uint32_t head = 0, count = 0, i, skips = 0;
    test_arena ta;

    srand(7);
    arena_open(&ta, UNITS);
    for (i = 0; i < 20000; i++) {
        uint32_t n = 7 + (uint32_t) rand() % 58, got = NONE, others, want;
        bool high = rand() % 8 == 0;
        hc_status st;

        ref_prepare(&ta.ta_av);
        want = high ? ref_high(&ta.ta_av, n) : ref_block(&ta.ta_av, n, NONE);
        skips += ta.ta_arena.ar_run_bound != 0
            && n >= ta.ta_arena.ar_run_bound;
        st = high ? hc_alloc_block_high(&ta.ta_av, n, &got)
                  : hc_alloc_block(&ta.ta_av, n, NONE, &got);
        CHECK((st == HC_OK) == (want != NONE) && (st != HC_OK || got == want));
        others = st == HC_OK ? 0 : hc_alloc_longest_after_miss(&ta.ta_av, n);
        while (st != HC_OK) {
            uint32_t freed = live_unit[head];

            CHECK(count > 0);
            CHECK_ST(hc_alloc_free(&ta.ta_av, freed, live_n[head]), HC_OK);
            head = (head + 1) % MAX_LIVE;
            count--;
            CHECK_ST(hc_alloc_check(&ta.ta_av), HC_OK);
            ref_prepare(&ta.ta_av);
            want = ref_near(&ta.ta_av, n, freed, high);
            st = hc_alloc_block_freed(&ta.ta_av, n, freed, high, &others,
                                      &got);
            CHECK((st == HC_OK) == (want != NONE)
                  && (st != HC_OK || got == want));
            CHECK(st == HC_OK || others < n);
        }
        CHECK_ST(hc_alloc_check(&ta.ta_av), HC_OK);
        CHECK(count < MAX_LIVE);
        live_unit[(head + count) % MAX_LIVE] = got;
        live_n[(head + count) % MAX_LIVE] = n;
        count++;
    }
    CHECK(skips > 1000);        /* the bound answered searches */
    arena_close(&ta);
}

/* A search the bound rules out does not look: room made behind the
 * allocator's back stays unseen, hc_alloc_check() reports it, and no
 * bound (0, a segment made before it) searches again. */
static void
test_the_run_bound_answers_without_a_search(void)
{
    test_arena ta;
    uint32_t got;

    arena_open(&ta, 300);
    used_block(&ta.ta_av, 0, 100);
    used_block(&ta.ta_av, 130, 150);
    used_block(&ta.ta_av, 170, 300);            /* 50 free, in 30 + 20 */
    CHECK_ST(hc_alloc_block(&ta.ta_av, 50, NONE, &got), HC_NO_SPACE);
    CHECK(ta.ta_arena.ar_run_bound == 31);      /* the 30-unit run */
    CHECK(hc_alloc_longest_after_miss(&ta.ta_av, 50) == 30);
    CHECK_ST(hc_alloc_check(&ta.ta_av), HC_OK);
    ta.ta_av.av_used[3] = 0;                    /* units 192-255 freed */
    ta.ta_arena.ar_used_units -= 64;
    CHECK_ST(hc_alloc_block(&ta.ta_av, 50, NONE, &got), HC_NO_SPACE);
    CHECK_ST(hc_alloc_block_high(&ta.ta_av, 50, &got), HC_NO_SPACE);
    CHECK_ST(hc_alloc_block(&ta.ta_av, 31, NONE, &got), HC_NO_SPACE);
    CHECK_ST(hc_alloc_check(&ta.ta_av), HC_CORRUPT);
    ta.ta_arena.ar_run_bound = 0;
    CHECK_ST(hc_alloc_check(&ta.ta_av), HC_OK);
    CHECK_ST(hc_alloc_block_high(&ta.ta_av, 50, &got), HC_OK);
    CHECK(got == 206);
    arena_close(&ta);
}

/* A search for n fails and sets the bound (1 + longest); freeing the
 * block [unit, unit + len) beside a long run then drops it. */
static void
free_drops_the_bound(test_arena *ta, uint32_t n, uint32_t longest,
                     uint32_t unit, uint32_t len)
{
    uint32_t got;

    CHECK_ST(hc_alloc_block(&ta->ta_av, n, NONE, &got), HC_NO_SPACE);
    CHECK(ta->ta_arena.ar_run_bound == longest + 1);
    CHECK_ST(hc_alloc_free(&ta->ta_av, unit, len), HC_OK);
    CHECK(ta->ta_arena.ar_run_bound == 0);
    CHECK_ST(hc_alloc_check(&ta->ta_av), HC_OK);
    arena_close(ta);
}

/* A free beside a run longer than a free measures (4,096 units each way)
 * drops the bound: either side, and never leaves it below the run. */
static void
test_a_free_beside_a_long_run_drops_the_bound(void)
{
    test_arena ta;

    arena_open(&ta, 10000);                     /* the long run above */
    used_block(&ta.ta_av, 1000, 4950);
    used_block(&ta.ta_av, 4950, 5000);          /* free: 1000 + 5000 */
    free_drops_the_bound(&ta, 5500, 5000, 4950, 50);
    arena_open(&ta, 10000);                     /* the long run below */
    used_block(&ta.ta_av, 0, 500);
    used_block(&ta.ta_av, 5000, 5050);
    used_block(&ta.ta_av, 5050, 9000);          /* free: 4500 + 1000 */
    free_drops_the_bound(&ta, 5000, 4500, 5000, 50);
}

int
main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("test_alloc\n");
    TEST(test_every_run_of_small_arenas);
    TEST(test_random_bitmaps);
    TEST(test_the_count_short_cuts_only_when_it_can);
    TEST(test_the_run_bound_never_hides_room);
    TEST(test_the_run_bound_answers_without_a_search);
    TEST(test_a_free_beside_a_long_run_drops_the_bound);
    return 0;
}
