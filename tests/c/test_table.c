/*
 * test_table.c - the cache table without Python: hashing, the allocator,
 * set/get/delete/evict, and recovery after a writer dies inside a stripe.
 */
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "flight.h"
#include "harness.h"
#include "hash.h"
#include "registry.h"
#include "segment.h"
#include "table.h"

static hc_segment *seg;

static hc_cache *
new_cache(uint64_t size, bool evict)
{
    return test_cache(&seg, size, evict);
}

static void
done(hc_cache *c)
{
    hc_cache_close(c);
    CHECK_ST(hc_segment_close(seg), HC_OK);
}

static hc_status
put_until(hc_cache *c, const char *key, const char *value, size_t vlen,
          uint64_t expires)
{
    return test_put(c, key, value, vlen, expires);
}

static hc_status
put(hc_cache *c, const char *key, const char *value, size_t vlen)
{
    return put_until(c, key, value, vlen, HC_FOREVER);
}

/* Begin a lock-free read of key as of now; it must find the key. */
static void
begin_read(hc_cache *c, const char *key, uint64_t now, hc_read *rd)
{
    CHECK_ST(hc_cache_read_begin(c, key, (uint32_t) strlen(key),
                                 hc_cache_hash(c, key, strlen(key)), now, rd),
             HC_OK);
    CHECK(hc_cache_read_valid(rd));
}

/* The value of key into buf (NUL-terminated); false if absent. */
static bool
get(hc_cache *c, const char *key, char *buf, size_t cap)
{
    uint64_t hash = hc_cache_hash(c, key, strlen(key));
    hc_read rd;
    int attempt;

    for (attempt = 0; attempt < 100; attempt++) {
        hc_status st = hc_cache_read_begin(c, key, (uint32_t) strlen(key),
                                           hash, hc_now_ns(), &rd);
        size_t n = 0;

        if (st == HC_OK) {
            n = rd.rd_value_len < cap - 1 ? rd.rd_value_len : cap - 1;
            memcpy(buf, rd.rd_value, n);
            buf[n] = '\0';
        }
        if (hc_cache_read_valid(&rd) && st != HC_CORRUPT)
            return st == HC_OK;
    }
    CHECK(!"lookup never validated");
    return false;
}

static void
test_siphash_vectors(void)
{
    /* SipHash-2-4 reference vectors: key 00..0f, message 00..len-1. */
    static const uint64_t expected[] = {
        UINT64_C(0x726fdb47dd0e0e31), UINT64_C(0x74f839c593dc67fd),
        UINT64_C(0x0d6c8009d9a94f5a), UINT64_C(0x85676696d7fb7e2d),
    };
    uint64_t key[2] = {UINT64_C(0x0706050403020100),
                       UINT64_C(0x0f0e0d0c0b0a0908)};
    uint8_t msg[4] = {0, 1, 2, 3};
    size_t len;

    for (len = 0; len < 4; len++)
        CHECK(hc_siphash(key, msg, len, 2, 4) == expected[len]);
}

static void
test_alloc_coalesces(void)
{
    uint64_t used[4] = {0}, start[4] = {0};
    hc_arena arena = {0};
    uint8_t base[256 * HC_UNIT];
    hc_arena_view av = {&arena, base, used, start, 256};
    uint32_t a, b, c, d;

    hc_alloc_reset(&av);
    CHECK_ST(hc_alloc_block(&av, 100, UINT32_MAX, &a), HC_OK);
    CHECK_ST(hc_alloc_block(&av, 100, UINT32_MAX, &b), HC_OK);
    CHECK_ST(hc_alloc_block(&av, 100, UINT32_MAX, &c), HC_NO_SPACE);
    CHECK_ST(hc_alloc_free(&av, a, 100), HC_OK);
    CHECK_ST(hc_alloc_free(&av, a, 100), HC_CORRUPT);   /* double free */
    CHECK_ST(hc_alloc_free(&av, b, 100), HC_OK);
    /* the two frees coalesced: 200 contiguous units fit again */
    CHECK_ST(hc_alloc_block(&av, 200, 0, &c), HC_OK);
    CHECK(c == 0);
    /* a free run exactly as long as asked for fits */
    CHECK_ST(hc_alloc_block(&av, 56, 0, &d), HC_OK);
    CHECK(d == 200);
    CHECK_ST(hc_alloc_check(&av), HC_OK);
}

static void
test_set_get_delete_evict(void)
{
    hc_cache *c = new_cache(8 << 20, true);
    char key[32], value[512], out[512];
    int i;

    CHECK_ST(put(c, "a", "hello", 5), HC_OK);
    CHECK(get(c, "a", out, sizeof(out)) && strcmp(out, "hello") == 0);
    CHECK_ST(put(c, "a", "world", 5), HC_OK);
    CHECK(get(c, "a", out, sizeof(out)) && strcmp(out, "world") == 0);
    CHECK_ST(hc_cache_delete(c, "a", 1, hc_cache_hash(c, "a", 1)), HC_OK);
    CHECK(!get(c, "a", out, sizeof(out)));
    /* compare-and-delete: only the write whose csn it names */
    {
        uint64_t hash = hc_cache_hash(c, "a", 1), csn;
        hc_write wr;

        memset(&wr, 0, sizeof(wr));
        wr.wr_key = "a";
        wr.wr_key_len = 1;
        wr.wr_hash = hash;
        wr.wr_value = "x";
        wr.wr_value_len = 1;
        wr.wr_format = 1;
        wr.wr_expires = HC_FOREVER;
        CHECK_ST(hc_cache_set(c, &wr, &csn), HC_OK);
        CHECK_ST(hc_cache_delete_csn(c, "a", 1, hash, csn + 1), HC_CONFLICT);
        CHECK(get(c, "a", out, sizeof(out)));
        CHECK_ST(hc_cache_delete_csn(c, "a", 1, hash, csn), HC_OK);
        CHECK_ST(hc_cache_delete_csn(c, "a", 1, hash, csn), HC_NOT_FOUND);
        CHECK(!get(c, "a", out, sizeof(out)));
    }
    /* Far past capacity: sets keep succeeding by evicting. */
    memset(value, 'v', sizeof(value));
    for (i = 0; i < 100000; i++) {
        snprintf(key, sizeof(key), "key:%d", i);
        CHECK_ST(put(c, key, value, (size_t) (i % 500)), HC_OK);
    }
    CHECK_ST(hc_cache_check(c), HC_OK);
    done(c);
}

/* The csn of key's current item by hc_cache_identify(); 0 if absent. */
static uint64_t
identity(hc_cache *c, const char *key)
{
    uint64_t hash = hc_cache_hash(c, key, strlen(key));
    hc_read rd;
    hc_status st = hc_cache_identify(c, key, (uint32_t) strlen(key), hash,
                                     hc_now_ns(), &rd);

    if (st == HC_WOULD_BLOCK)
        st = hc_cache_read_locked(c, key, (uint32_t) strlen(key), hash,
                                  hc_now_ns(), &rd, NULL);
    CHECK(st == HC_OK || st == HC_NOT_FOUND);
    return st == HC_OK ? rd.rd_csn : 0;
}

static void
test_identify_names_the_current_item(void)
{
    hc_cache *c = new_cache(8 << 20, true);
    uint64_t first, second;

    CHECK(identity(c, "k") == 0);
    CHECK_ST(put(c, "k", "one", 3), HC_OK);
    first = identity(c, "k");
    CHECK(first != 0 && identity(c, "k") == first);
    /* touch changes the expiry in place: the same item, the same bytes */
    CHECK_ST(hc_cache_touch(c, "k", 1, hc_cache_hash(c, "k", 1), HC_FOREVER),
             HC_OK);
    CHECK(identity(c, "k") == first);
    /* the same bytes written again are a new item */
    CHECK_ST(put(c, "k", "one", 3), HC_OK);
    second = identity(c, "k");
    CHECK(second != 0 && second != first);
    CHECK_ST(hc_cache_delete(c, "k", 1, hc_cache_hash(c, "k", 1)), HC_OK);
    CHECK(identity(c, "k") == 0);
    CHECK_ST(put(c, "k", "two", 3), HC_OK);
    CHECK_ST(hc_cache_clear(c), HC_OK);
    CHECK(identity(c, "k") == 0);
    done(c);
}

static void
test_full_cache_without_eviction_refuses(void)
{
    hc_cache *c = new_cache(2 << 20, false);
    char key[32], value[1024] = {0};
    hc_status st = HC_OK;
    int i;

    for (i = 0; i < 100000 && st == HC_OK; i++) {
        snprintf(key, sizeof(key), "key:%d", i);
        st = put(c, key, value, sizeof(value));
    }
    CHECK(st == HC_NO_SPACE);
    CHECK_ST(hc_cache_check(c), HC_OK);
    done(c);
}

/* An entry stored with expiry E is expired at E, not at E - 1. */
static void
test_expiry_is_inclusive(void)
{
    hc_cache *c = new_cache(1 << 20, true);
    uint64_t expires = hc_now_ns() + 3600 * HC_NS_PER_SEC;
    hc_read rd;

    CHECK_ST(put_until(c, "k", "v", 1, expires), HC_OK);
    begin_read(c, "k", expires - 1, &rd);
    CHECK(!rd.rd_expired);
    begin_read(c, "k", expires, &rd);
    CHECK(rd.rd_expired);
    done(c);
}

/*
 * expire_all (the tier's flush): every live value expires at that instant
 * and keeps its stale window; one that had expired keeps its own expiry.
 */
static void
test_expire_all_keeps_stale_windows(void)
{
    hc_cache *c = new_cache(1 << 20, true);
    uint64_t now = hc_now_ns(), earlier = now - HC_NS_PER_SEC, csn;
    hc_write wr;
    hc_read rd;

    memset(&wr, 0, sizeof(wr));
    wr.wr_key = "windowed";
    wr.wr_key_len = 8;
    wr.wr_hash = hc_cache_hash(c, "windowed", 8);
    wr.wr_value = "v";
    wr.wr_value_len = 1;
    wr.wr_format = 1;
    wr.wr_expires = now + 3600 * HC_NS_PER_SEC;
    wr.wr_stale_s = 10;
    CHECK_ST(hc_cache_set(c, &wr, &csn), HC_OK);
    CHECK_ST(put(c, "forever", "v", 1), HC_OK);
    CHECK_ST(put_until(c, "gone", "v", 1, earlier), HC_OK);
    CHECK_ST(hc_cache_expire_all(c, now), HC_OK);
    begin_read(c, "windowed", now, &rd);
    CHECK(rd.rd_expired && rd.rd_expires == now && rd.rd_stale_s == 10);
    begin_read(c, "forever", now, &rd);
    CHECK(rd.rd_expired && rd.rd_expires == now);
    begin_read(c, "gone", now, &rd);
    CHECK(rd.rd_expired && rd.rd_expires == earlier);
    CHECK_ST(hc_cache_check(c), HC_OK);
    done(c);
}

/*
 * The seqlock itself: a read begun before a writer frees the block it is
 * copying must not validate, whether the block goes by an overwrite of
 * the key or by eviction (neither is a delete, which bumps the epoch by a
 * path of its own).
 */
static void
test_read_of_a_freed_block_does_not_validate(void)
{
    hc_cache *c = new_cache(1 << 20, true);
    uint64_t expires = hc_now_ns() + 3600 * HC_NS_PER_SEC;
    char key[32], value[256] = {0}, out[8];
    hc_read rd;
    int i;

    CHECK_ST(put(c, "k", "old", 3), HC_OK);
    begin_read(c, "k", hc_now_ns(), &rd);
    CHECK_ST(put(c, "k", "new", 3), HC_OK);
    CHECK(!hc_cache_read_valid(&rd));

    /*
     * Read it as of its expiry: a read of a live entry marks it visited,
     * and SIEVE's hand, chasing the fillers, would never come back to it.
     */
    CHECK_ST(put_until(c, "k", "new", 3, expires), HC_OK);
    begin_read(c, "k", expires, &rd);
    for (i = 0; i < 40000; i++) {      /* ten times the capacity */
        snprintf(key, sizeof(key), "filler:%d", i);
        CHECK_ST(put(c, key, value, sizeof(value)), HC_OK);
    }
    CHECK(!get(c, "k", out, sizeof(out)));     /* "k" was evicted */
    CHECK(!hc_cache_read_valid(&rd));
    done(c);
}

/*
 * A set that fails (value over max_value, or no room and no eviction)
 * removes the old value: a reader must not take it for the new one.
 */
static void
test_failed_set_drops_old_value(void)
{
    hc_cache *c = new_cache(2 << 20, false);
    size_t big_len = HC_DEFAULT_MAX_VALUE + 1;
    char *big = calloc(1, big_len), key[32], out[64], value[1024] = {0};
    hc_status st = HC_OK;
    int i;

    CHECK(big != NULL);
    CHECK_ST(put(c, "a", "old", 3), HC_OK);
    CHECK_ST(put(c, "a", big, big_len), HC_TOO_LARGE);
    CHECK(!get(c, "a", out, sizeof(out)));
    /* Fill the cache, then grow a value that no longer fits. */
    CHECK_ST(put(c, "b", "old", 3), HC_OK);
    for (i = 0; i < 100000 && st == HC_OK; i++) {
        snprintf(key, sizeof(key), "key:%d", i);
        st = put(c, key, value, sizeof(value));
    }
    CHECK(st == HC_NO_SPACE);
    CHECK(get(c, "b", out, sizeof(out)) && strcmp(out, "old") == 0);
    CHECK_ST(put(c, "b", big, 200000), HC_NO_SPACE);
    CHECK(!get(c, "b", out, sizeof(out)));
    CHECK_ST(hc_cache_check(c), HC_OK);
    free(big);
    done(c);
}

/*
 * A writer dies inside a stripe with the epoch odd and a chain half
 * updated: the next writer rebuilds the stripe, readers never return
 * garbage, and every invariant holds afterwards.
 */
static void
test_dead_writer_is_repaired(void)
{
    hc_cache *c = new_cache(4 << 20, true);
    uint64_t hash = hc_cache_hash(c, "k", 1), before;
    char out[64];
    int status;
    pid_t pid;

    CHECK_ST(put(c, "k", "before", 6), HC_OK);
    before = identity(c, "k");
    pid = fork();
    if (pid == 0) {
        hc_stripe *s;

        if (hc_cache_lock_stripe(c, hash) != HC_OK)
            _exit(2);
        s = test_stripe_of(c, hash);
        atomic_fetch_add(&s->sp_epoch, 1);      /* odd, as mid-free */
        s->sp_qtail = 0;                        /* a queue half relinked */
        kill(getpid(), SIGKILL);
    }
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status));
    /* A lock-free reader sees an odd epoch and retries, never garbage;
     * the locked read, its last resort, rebuilds the stripe. */
    CHECK(identity(c, "k") == before);
    CHECK_ST(hc_cache_lock_stripe(c, hash), HC_OK);
    hc_cache_unlock_stripe(c, hash);
    CHECK(get(c, "k", out, sizeof(out)) && strcmp(out, "before") == 0);
    CHECK_ST(put(c, "k", "after", 5), HC_OK);
    CHECK(get(c, "k", out, sizeof(out)) && strcmp(out, "after") == 0);
    CHECK_ST(hc_cache_check(c), HC_OK);
    done(c);
}

/* A flight whose owner dies is taken over by the next caller. */
static void
test_flight_takeover_after_owner_death(void)
{
    hc_cache *c = new_cache(4 << 20, true);
    hc_flight_request rq = {"f", 1, 0, 3600 * HC_NS_PER_SEC, 0, false};
    hc_flight_result res;
    hc_write wr;
    int status;
    pid_t pid;

    rq.fq_hash = hc_cache_hash(c, "f", 1);
    pid = fork();
    if (pid == 0) {
        if (hc_flight_begin(c, &rq, &res) != HC_OK
            || res.fr_outcome != HC_FLIGHT_COMPUTE)
            _exit(2);
        kill(getpid(), SIGKILL);
    }
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status));
    CHECK_ST(hc_flight_begin(c, &rq, &res), HC_OK);
    CHECK(res.fr_outcome == HC_FLIGHT_COMPUTE && res.fr_took_over);
    memset(&wr, 0, sizeof(wr));
    wr.wr_key = "f";
    wr.wr_key_len = 1;
    wr.wr_hash = rq.fq_hash;
    wr.wr_value = "v";
    wr.wr_value_len = 1;
    wr.wr_format = 1;
    wr.wr_expires = HC_FOREVER;
    CHECK_ST(hc_flight_publish(c, &wr, res.fr_round + 1), HC_CONFLICT);
    CHECK_ST(hc_flight_publish(c, &wr, res.fr_round), HC_OK);
    CHECK_ST(hc_flight_begin(c, &rq, &res), HC_OK);
    CHECK(res.fr_outcome == HC_FLIGHT_HIT && res.fr_len == 1);
    free(res.fr_data);
    CHECK_ST(hc_cache_check(c), HC_OK);
    done(c);
}

/*
 * A begin whose store meets a damaged stripe after linking its FLIGHT
 * (the replaced item's queue link is garbage) rebuilds the stripe and
 * tries again: it must compute the flight it made, never wait a whole
 * lease for itself (issue 9, defect 11).
 */
static void
test_flight_begin_never_waits_for_itself_after_a_rebuild(void)
{
    hc_cache *c = new_cache(4 << 20, true);
    hc_flight_request rq = {"g", 1, 0, 3600 * HC_NS_PER_SEC, 0, true};
    hc_flight_result res;
    hc_read rd;
    hc_item *it;

    rq.fq_hash = hc_cache_hash(c, "g", 1);
    CHECK_ST(put(c, "g", "fresh", 5), HC_OK);
    CHECK_ST(hc_cache_read_begin(c, "g", 1, rq.fq_hash, hc_now_ns(), &rd),
             HC_OK);
    it = (hc_item *) (rd.rd_value - 1 - sizeof(hc_item));
    it->it_qnext = UINT32_C(0xFFFFFF);      /* the tail's link, damaged */
    /* refresh: a round over the fresh value, which it must replace */
    CHECK_ST(hc_flight_begin(c, &rq, &res), HC_OK);
    CHECK(res.fr_outcome == HC_FLIGHT_COMPUTE);
    CHECK_ST(hc_flight_abort(c, "g", 1, rq.fq_hash, res.fr_round, NULL, 0, 0),
             HC_OK);
    free(res.fr_data);
    CHECK_ST(hc_cache_check(c), HC_OK);
    done(c);
}

/*
 * Flight begin copies the value of the item it finds (a hit, or the old
 * value a refresh serves meanwhile): a value length that runs past the
 * item's block, though not past the arena, must make it rebuild the
 * stripe (which drops the item) and compute, never hand out the
 * neighbours' bytes as the value.
 */
static void
test_flight_begin_checks_the_length_against_the_block(void)
{
    hc_cache *c = new_cache(4 << 20, true);
    hc_flight_request rq = {"h", 1, 0, 3600 * HC_NS_PER_SEC, 0, false};
    hc_flight_result res;
    char key[32];
    hc_read rd;
    hc_item *it;
    int i;

    rq.fq_hash = hc_cache_hash(c, "h", 1);
    CHECK_ST(put(c, "h", "value", 5), HC_OK);
    for (i = 0; i < 20; i++) {
        snprintf(key, sizeof(key), "after-%d", i);
        CHECK_ST(put(c, key, "neighbour", 9), HC_OK);
    }
    CHECK_ST(hc_cache_read_begin(c, "h", 1, rq.fq_hash, hc_now_ns(), &rd),
             HC_OK);
    it = (hc_item *) (rd.rd_value - 1 - sizeof(hc_item));
    it->it_value_len = 5 + 200;     /* inside the arena, past its block */
    CHECK_ST(hc_flight_begin(c, &rq, &res), HC_OK);
    free(res.fr_data);
    CHECK(res.fr_outcome == HC_FLIGHT_COMPUTE);
    CHECK_ST(hc_flight_abort(c, "h", 1, rq.fq_hash, res.fr_round, NULL, 0, 0),
             HC_OK);
    CHECK_ST(hc_cache_check(c), HC_OK);
    done(c);
}

/*
 * A stripe found damaged while a set runs is rebuilt and the step rerun:
 * the result must still be the set's own.  A too-large value reports
 * HC_TOO_LARGE (not the HC_CORRUPT of the first attempt); a CAS whose
 * new item was already published when the damage was found reports
 * success, not a conflict with its own item.
 */
static void
test_set_result_survives_a_rebuild(void)
{
    hc_cache *c = new_cache(4 << 20, true);
    size_t big_len = HC_DEFAULT_MAX_VALUE + 1;
    char *big = calloc(1, big_len), out[64];
    uint64_t hash = hc_cache_hash(c, "a", 1), csn = 0;
    const hc_cache_layout *l = &c->ca_layout;
    _Atomic uint32_t *bucket = (_Atomic uint32_t *) (c->ca_base
        + l->cl_buckets_off) + (uint64_t) (hash & (l->cl_nstripes - 1))
        * l->cl_nbuckets + ((hash >> 32) & (l->cl_nbuckets - 1));
    hc_write wr;
    hc_read rd;
    hc_item *it;

    CHECK(big != NULL);
    CHECK_ST(put(c, "a", "old", 3), HC_OK);
    atomic_store(bucket, l->cl_units + 7);      /* a chain, damaged */
    CHECK_ST(put(c, "a", big, big_len), HC_TOO_LARGE);
    CHECK(!get(c, "a", out, sizeof(out)));
    CHECK_ST(hc_cache_check(c), HC_OK);

    CHECK_ST(put(c, "a", "one", 3), HC_OK);
    CHECK_ST(hc_cache_read_begin(c, "a", 1, hash, hc_now_ns(), &rd), HC_OK);
    it = (hc_item *) (rd.rd_value - 1 - sizeof(hc_item));
    it->it_qnext = UINT32_C(0xFFFFFF);      /* the tail's link, damaged */
    memset(&wr, 0, sizeof(wr));
    wr.wr_key = "a";
    wr.wr_key_len = 1;
    wr.wr_hash = hash;
    wr.wr_value = "two";
    wr.wr_value_len = 3;
    wr.wr_format = 1;
    wr.wr_expires = HC_FOREVER;
    wr.wr_mode = HC_SET_CAS;
    wr.wr_expect_csn = rd.rd_csn;
    CHECK_ST(hc_cache_set(c, &wr, &csn), HC_OK);
    CHECK(get(c, "a", out, sizeof(out)) && strcmp(out, "two") == 0);
    CHECK_ST(hc_cache_read_begin(c, "a", 1, hash, hc_now_ns(), &rd), HC_OK);
    CHECK(rd.rd_csn == csn);
    CHECK_ST(hc_cache_check(c), HC_OK);
    free(big);
    done(c);
}

/*
 * The poison/reset path (RELIABILITY.md scenario 3): an opener that finds
 * the cache header damaged resets the cache in place, but only with every
 * stripe lock in hand.  While a live process holds one, the open waits and
 * then fails (HC_TIMEOUT), the holder's lock untouched; once the holder is
 * dead, the open takes its lock over, empties the cache and bumps its
 * generation.
 */
static void
test_a_damaged_header_is_reset_only_under_every_stripe_lock(void)
{
    hc_cache *c = new_cache(4 << 20, true), *again;
    uint64_t hash = hc_cache_hash(c, "k", 1);
    hc_stripe *s = test_stripe_of(c, hash);
    uint64_t offset = (uint64_t) (c->ca_base - seg->sg_base);
    int pipefd[2], status;
    char buf[16], byte;
    pid_t pid;

    CHECK_ST(put(c, "k", "v", 1), HC_OK);
    CHECK(hc_cache_generation(c) == 0);
    CHECK(pipe(pipefd) == 0);
    pid = test_fork();
    if (pid == 0) {
        if (hc_cache_lock_stripe(c, hash) != HC_OK)
            _exit(2);
        (void) !write(pipefd[1], "x", 1);
        pause();
        _exit(0);
    }
    CHECK(read(pipefd[0], &byte, 1) == 1);
    atomic_store(&c->ca_header->ch_magic, 0xdeadbeef);
    CHECK_ST(hc_cache_open(seg, offset, c->ca_layout.cl_size,
                           HC_DEFAULT_MAX_VALUE, true, HC_EVICTION_STORED,
                           &again), HC_TIMEOUT);
    CHECK(hc_lock_is_locked(&s->sp_lock));
    CHECK(get(c, "k", buf, sizeof(buf)));       /* nothing was reset */
    kill(pid, SIGKILL);
    CHECK(waitpid(pid, &status, 0) == pid && WIFSIGNALED(status));
    CHECK_ST(hc_cache_open(seg, offset, c->ca_layout.cl_size,
                           HC_DEFAULT_MAX_VALUE, true, HC_EVICTION_STORED,
                           &again), HC_OK);
    CHECK(hc_cache_generation(again) == 1 && hc_cache_generation(c) == 1);
    CHECK(!get(c, "k", buf, sizeof(buf)));
    CHECK_ST(hc_cache_check(c), HC_OK);
    hc_cache_close(again);
    close(pipefd[0]);
    close(pipefd[1]);
    done(c);
}

/*
 * A damaged run bound (alloc.h) that says no run is longer than one unit
 * must not refuse an empty stripe for ever: before CacheFull, a set
 * searches once whatever the bound says (with eviction on or off).
 */
static void
test_a_damaged_run_bound_does_not_refuse_room(void)
{
    static char value[4000];
    int evict;

    for (evict = 0; evict <= 1; evict++) {
        hc_segment *seg;
        hc_cache *c = test_cache(&seg, hc_cache_min_size(HC_EVICTION_SIEVE),
                                 evict);
        hc_stripe *s = test_stripes(c);
        uint32_t i;

        for (i = 0; i < c->ca_layout.cl_nstripes; i++)
            s[i].sp_arena.ar_run_bound = 2;     /* "no free run over 1" */
        CHECK_ST(test_put(c, "big", value, sizeof(value), HC_FOREVER), HC_OK);
        CHECK_ST(hc_cache_check(c), HC_OK);
        hc_cache_close(c);
        CHECK_ST(hc_segment_close(seg), HC_OK);
    }
}

int
main(void)
{
    TEST(test_siphash_vectors);
    TEST(test_alloc_coalesces);
    TEST(test_set_get_delete_evict);
    TEST(test_identify_names_the_current_item);
    TEST(test_full_cache_without_eviction_refuses);
    TEST(test_expiry_is_inclusive);
    TEST(test_expire_all_keeps_stale_windows);
    TEST(test_read_of_a_freed_block_does_not_validate);
    TEST(test_failed_set_drops_old_value);
    TEST(test_dead_writer_is_repaired);
    TEST(test_flight_takeover_after_owner_death);
    TEST(test_flight_begin_never_waits_for_itself_after_a_rebuild);
    TEST(test_set_result_survives_a_rebuild);
    TEST(test_flight_begin_checks_the_length_against_the_block);
    TEST(test_a_damaged_header_is_reset_only_under_every_stripe_lock);
    TEST(test_a_damaged_run_bound_does_not_refuse_room);
    return 0;
}
