/*
 * harness.h - a tiny test harness for the C core (no Python, no framework).
 *
 * CHECK(cond) prints the failing expression with its line and exits 1;
 * CHECK_ST(call, status) does the same for an hc_status that is not the
 * expected one, naming both.  test_fork() is fork() for tests: its child
 * dies with the test, so a failed CHECK never leaves paused children
 * behind (holding the output pipe of `make check` open).  test_alloc()
 * finds or allocates a 64-byte structure and returns its address.
 *
 * Every TEST() runs under a watchdog: a test still running after
 * TEST_DEADLINE_S seconds (an alarm) fails with its name, so a lost
 * wake-up is a failure with a message, never a hung `make check`.
 */
#ifndef HC_TEST_HARNESS_H
#define HC_TEST_HARNESS_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "registry.h"
#include "segment.h"
#include "status.h"
#include "table.h"
#include "table_internal.h"

#define CHECK(cond)                                                       \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__,        \
                    __LINE__, #cond);                                     \
            exit(1);                                                      \
        }                                                                 \
    } while (0)

#define CHECK_ST(call, expected)                                          \
    do {                                                                  \
        hc_status st_ = (call);                                           \
        if (st_ != (expected)) {                                          \
            fprintf(stderr, "%s:%d: %s returned %s (%s), expected %s\n",  \
                    __FILE__, __LINE__, #call, hc_strerror(st_),          \
                    hc_last_detail(), hc_strerror(expected));             \
            exit(1);                                                      \
        }                                                                 \
    } while (0)

/* Generous by default: under TSan on a busy machine test_table alone has
 * taken over ten minutes.  The thread tests set 30 s (Makefile). */
#ifndef TEST_DEADLINE_S
#define TEST_DEADLINE_S 1800
#endif
#define TEST_STR_(x) #x
#define TEST_STR(x) TEST_STR_(x)

static const char *test_running;

static void
test_hung(int sig)
{
    static const char what[] = ": still running after "
        TEST_STR(TEST_DEADLINE_S) " s (a lost wake-up or a hang)\n";

    (void) sig;
    /* write(), not stdio: the only output safe in a signal handler */
    if (write(2, test_running, strlen(test_running)) < 0
        || write(2, what, sizeof(what) - 1) < 0)
        _exit(2);
    _exit(1);
}

#define TEST(fn)                                                          \
    do {                                                                  \
        printf("    %s\n", #fn);                                          \
        fflush(stdout); /* or forked children print it again */          \
        test_running = #fn;                                               \
        signal(SIGALRM, test_hung);                                       \
        alarm(TEST_DEADLINE_S);                                           \
        fn();                                                             \
        alarm(0);                                                         \
    } while (0)

static inline void *
test_alloc(hc_segment *seg, const char *name, hc_struct_kind kind)
{
    hc_struct_info info;
    bool found;

    CHECK_ST(hc_registry_find_or_alloc(seg, name, strlen(name), 64, kind,
                                       &info, &found), HC_OK);
    return seg->sg_base + info.offset;
}

/* The policy test_cache() gives a new cache (tests may change it). */
static hc_eviction test_eviction = HC_EVICTION_SIEVE;

/* A cache of size bytes in a fresh anonymous segment (returned in *seg). */
static inline hc_cache *
test_cache(hc_segment **seg, uint64_t size, bool evict)
{
    hc_struct_info info;
    hc_cache *c;
    bool found;

    CHECK_ST(hc_segment_anonymous(size + (1 << 20), HC_HUGE_OFF, seg), HC_OK);
    CHECK_ST(hc_registry_find_or_alloc(*seg, "cache", 5, size, HC_KIND_CACHE,
                                       &info, &found), HC_OK);
    CHECK_ST(hc_cache_open(*seg, info.offset, size, HC_DEFAULT_MAX_VALUE,
                           evict, test_eviction, &c), HC_OK);
    return c;
}

/* The stripes of c, where table.c's stripe_at() finds them. */
static inline hc_stripe *
test_stripes(hc_cache *c)
{
    return (hc_stripe *) (c->ca_base + c->ca_layout.cl_stripes_off);
}

/* The stripe that holds the key of hash. */
static inline hc_stripe *
test_stripe_of(hc_cache *c, uint64_t hash)
{
    return test_stripes(c) + (hash & (c->ca_layout.cl_nstripes - 1));
}

/* A plain write of value under key (format 1), expiring at expires. */
static inline hc_write
test_write(hc_cache *c, const char *key, const void *value, uint32_t len,
           uint64_t expires)
{
    hc_write wr;

    memset(&wr, 0, sizeof(wr));
    wr.wr_key = key;
    wr.wr_key_len = (uint32_t) strlen(key);
    wr.wr_hash = hc_cache_hash(c, key, strlen(key));
    wr.wr_value = value;
    wr.wr_value_len = len;
    wr.wr_format = 1;
    wr.wr_expires = expires;
    return wr;
}

/* Set key to vlen bytes of value until expires (HC_FOREVER: never). */
static inline hc_status
test_put(hc_cache *c, const char *key, const void *value, size_t vlen,
         uint64_t expires)
{
    hc_write wr = test_write(c, key, value, (uint32_t) vlen, expires);
    uint64_t csn;

    return hc_cache_set(c, &wr, &csn);
}

/* The first key "kNNNNN" from i on in stripe si (into key): its i. */
static inline int
test_key_in_stripe(hc_cache *c, uint32_t si, int i, char *key, size_t size)
{
    for (;; i++) {
        snprintf(key, size, "k%05d", i);
        if (hc_table_stripe_of(c, hc_cache_hash(c, key, strlen(key))) == si)
            return i;
    }
}

static inline pid_t
test_fork(void)
{
    pid_t parent = getpid();
    pid_t pid = fork();

    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)    /* the parent died before prctl */
            _exit(1);
    }
    return pid;
}

#endif
