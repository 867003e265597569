/*
 * core_loop.c - the core's own plain get and set, without Python: what a
 * change to table.c or commit.c costs the paths every user takes.
 *
 * Built against one checkout's core (benchmarks/regression.py --core
 * compiles it with -O2 for each tree and alternates the runs).  It sets
 * --keys keys of 100-byte values, then times, in the thread's CPU time,
 * passes of hc_cache_read_begin/hc_cache_read_valid over every key (a
 * hit) and of hc_cache_set overwriting every key, and prints the median
 * ns per operation of each as one JSON line.  It compiles against cores
 * older and newer than the eviction policies and huge pages (their
 * arguments differ; __has_include picks).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "registry.h"
#include "segment.h"
#include "table.h"

#if __has_include("evict.h")
#define OPEN_CACHE(seg, off, size, out) \
    hc_cache_open(seg, off, size, HC_DEFAULT_MAX_VALUE, true, \
                  HC_EVICTION_SIEVE, out)
#else
#define OPEN_CACHE(seg, off, size, out) \
    hc_cache_open(seg, off, size, HC_DEFAULT_MAX_VALUE, true, out)
#endif
#if __has_include("hugepage.h")
#define ANONYMOUS(size, out) hc_segment_anonymous(size, HC_HUGE_OFF, out)
#else
#define ANONYMOUS(size, out) hc_segment_anonymous(size, out)
#endif

#define CACHE_SIZE (UINT64_C(64) << 20)
#define PASSES 7

static uint64_t
cpu_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

static int
by_value(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;

    return (x > y) - (x < y);
}

static void
fail(const char *what, hc_status st)
{
    fprintf(stderr, "core_loop: %s: status %d\n", what, (int) st);
    exit(1);
}

int
main(int argc, char **argv)
{
    int nkeys = argc > 1 ? atoi(argv[1]) : 10000;
    char (*keys)[24] = calloc((size_t) nkeys, sizeof(*keys));
    uint64_t *hashes = calloc((size_t) nkeys, sizeof(uint64_t));
    double get_ns[PASSES], set_ns[PASSES];
    char value[100];
    hc_struct_info info;
    hc_segment *seg;
    hc_cache *c;
    hc_status st;
    bool found;
    int p, i;

    if (keys == NULL || hashes == NULL || nkeys <= 0)
        fail("arguments or memory", HC_SYSTEM);
    memset(value, 'v', sizeof(value));
    if ((st = ANONYMOUS(CACHE_SIZE + (2 << 20), &seg)) != HC_OK)
        fail("segment", st);
    if ((st = hc_registry_find_or_alloc(seg, "cache", 5, CACHE_SIZE,
                                        HC_KIND_CACHE, &info, &found))
        != HC_OK)
        fail("registry", st);
    if ((st = OPEN_CACHE(seg, info.offset, CACHE_SIZE, &c)) != HC_OK)
        fail("open", st);
    for (i = 0; i < nkeys; i++) {
        snprintf(keys[i], sizeof(keys[i]), "key:%08d", i);
        hashes[i] = hc_cache_hash(c, keys[i], strlen(keys[i]));
    }
    for (p = -1; p < PASSES; p++) {     /* pass -1: the warm-up */
        uint64_t t0 = cpu_ns(), t1, t2;

        for (i = 0; i < nkeys; i++) {
            hc_write wr;
            uint64_t csn;

            memset(&wr, 0, sizeof(wr));
            wr.wr_key = keys[i];
            wr.wr_key_len = (uint32_t) strlen(keys[i]);
            wr.wr_hash = hashes[i];
            wr.wr_value = value;
            wr.wr_value_len = sizeof(value);
            wr.wr_format = 1;
            wr.wr_expires = HC_FOREVER;
            if ((st = hc_cache_set(c, &wr, &csn)) != HC_OK)
                fail("set", st);
        }
        t1 = cpu_ns();
        for (i = 0; i < nkeys; i++) {
            hc_read rd;

            st = hc_cache_read_begin(c, keys[i], (uint32_t) strlen(keys[i]),
                                     hashes[i], 0, &rd);
            if (st != HC_OK || !hc_cache_read_valid(&rd))
                fail("get", st);
        }
        t2 = cpu_ns();
        if (p >= 0) {
            set_ns[p] = (double) (t1 - t0) / nkeys;
            get_ns[p] = (double) (t2 - t1) / nkeys;
        }
    }
    qsort(get_ns, PASSES, sizeof(double), by_value);
    qsort(set_ns, PASSES, sizeof(double), by_value);
    printf("{\"core_get_hit\": %.1f, \"core_set\": %.1f}\n",
           get_ns[PASSES / 2], set_ns[PASSES / 2]);
    hc_cache_close(c);
    (void) hc_segment_close(seg);
    free(keys);
    free(hashes);
    return 0;
}
