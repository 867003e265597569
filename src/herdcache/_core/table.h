/*-------------------------------------------------------------------------
 *
 * table.h
 *	  The shared cache: a striped hash table of items in shared memory,
 *	  read without locks, written under one lock per stripe.
 *
 * The table is split into stripes by the low bits of the key's keyed
 * hash.  A stripe owns everything its keys need: a lock, a bucket array,
 * an arena of 16-byte units holding the items (a next-fit bitmap
 * allocator, alloc.h), an eviction queue with its visited map (evict.h:
 * SIEVE or S3-FIFO), and a
 * free epoch.  No operation touches two stripes, so writers
 * of different stripes never meet, and a writer that dies can damage only
 * its own stripe, which the next lock holder rebuilds (see "Crashes").
 *
 * Items.  An item is one block of the arena: a 48-byte header (hc_item),
 * the key, the value.  A block is written completely while it is still
 * private, then published by one release store of a chain link (a bucket
 * head or a predecessor's it_next).  Replacing a value links a fresh block
 * in place of the old one; the old block is freed only afterwards, so a
 * writer that dies mid-copy leaves the old value intact.
 *
 * Readers.  A lookup writes nothing shared except, on a hit, the item's
 * bit in the stripe's visited map, and only if it was clear.  The
 * bit lives in a bitmap beside the allocator's, not in the item: a reader
 * may set it after the block was freed and reused (its read then fails
 * validation, but the store is done), and a stray bit in the map costs
 * one eviction decision, where a stray byte in the arena would tear
 * another item.  A reader reads the stripe's free epoch (acquire), walks
 * the chain, compares the key, and
 * the caller copies the value out; then hc_cache_read_valid() re-reads the
 * epoch behind an acquire fence.  Every writer that unlinks or frees a
 * block makes the epoch odd first and even again after, so an unchanged
 * even epoch proves no block the reader looked at was freed or reused
 * while it looked: the copy is exactly what was published.  This is a
 * seqlock whose "data" is the whole stripe's memory; the pattern is
 * Boehm's "Can Seqlocks Get Along With Programming Language Memory
 * Models?" (2012).  A reader retries a bounded number of times and then
 * reads under the stripe lock, which guarantees progress and is also how
 * a dead writer's odd epoch gets noticed and repaired.
 *
 * Crashes.  Everything a writer changes in shared memory is changed under
 * the stripe lock, and the lock records its owner (lock.h).  When the next
 * acquirer learns that the owner died (HC_OWNER_DIED), it rebuilds the
 * stripe from the items still reachable from its buckets, validating each
 * one (bounds, alignment, block map, hash-to-bucket, key length, value
 * fits the block), then rebuilds the allocator's bitmaps, the visited map
 * and the eviction queue from them.  An item that was being written or
 * replaced is either the old one or absent, never torn.  The same
 * rebuild runs if a writer ever finds the stripe inconsistent (HC_CORRUPT
 * from alloc.c).
 * The rebuild is itself restartable: it cuts dropped items out of their
 * chains in place (never empties a bucket), builds the new bitmaps in
 * private memory and copies them over, and only then rebuilds the queue,
 * so a rebuilder killed at any instruction leaves a stripe from which the
 * next rebuild keeps the same items (table.c, stripe_rebuild()).
 *
 * Notes on synchronization
 *
 * sp_epoch: written only under sp_lock, odd between the start and the end
 * of any unlink/free; readers load it with acquire before and (after an
 * acquire fence) again after their reads; pairs with the release fence
 * after the odd store and the release store of the even value.
 * bucket heads and it_next: written only under sp_lock with release
 * stores after the item they point to is complete; readers load them
 * with acquire (pairs with those stores) before reading the item.
 * it_expires: written under sp_lock (set) or in place by touch, relaxed:
 * a reader sees the old or the new deadline, both valid.
 * visited map (a bit per unit, read with the block-start unit of an
 * item): set by readers with a relaxed fetch-or, only if clear; cleared
 * with a relaxed fetch-and under sp_lock by admission and by eviction
 * (evict.h, which also says how S3-FIFO counts with three bits).
 * Relaxed: it orders nothing, and a lost, late or stale bit costs
 * one eviction decision.
 * Everything else in a stripe (the allocator's bitmaps, queue links,
 * counters) is written under sp_lock; the counters are also read without
 * it, relaxed, for statistics.
 *
 *-------------------------------------------------------------------------
 */
#ifndef HC_TABLE_H
#define HC_TABLE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "alloc.h"
#include "commit.h"
#include "evict.h"
#include "lock.h"
#include "segment.h"
#include "status.h"

#define HC_CACHE_MAGIC UINT32_C(0x48434341)     /* "HCCA" */
#define HC_CACHE_VERSION 5          /* 4: eviction policy and S3-FIFO state;
                                     * a flight wake word per key hash;
                                     * snapshots and batches (commit.h);
                                     * 5: each arena's bound on its longest
                                     * free run (ar_run_bound, alloc.h),
                                     * which a build without it would not
                                     * keep up to date */
#define HC_KEY_MAX 250              /* bytes of a key (memcached's limit) */
#define HC_MAX_STRIPES 64
#define HC_STRIPE_TARGET (UINT64_C(4) << 20)    /* arena bytes per stripe */
#define HC_DEFAULT_MAX_VALUE (UINT32_C(1) << 20)

/* Statistics counters kept per process (see hc_stats_slot). */
typedef enum hc_stat {
    HC_STAT_HITS,
    HC_STAT_MISSES,
    HC_STAT_SETS,
    HC_STAT_DELETES,
    HC_STAT_EVICTIONS,
    HC_STAT_EXPIRATIONS,
    HC_STAT_READ_RETRIES,
    HC_STAT_RECOVERIES,
    HC_STAT_COMPUTES,
    HC_STAT_WAITS,
    HC_STAT_COALESCED,
    HC_STAT_TAKEOVERS,
    HC_STAT_STALE_SERVED,
    HC_STAT_EARLY_REFRESHES,
    HC_STAT_COMPUTE_ERRORS,
    HC_STAT_COUNT
} hc_stat;

/*
 * The header at the start of every used block (48 bytes).  The block is
 * exactly hc_item_units(it) units long: header, key and value, rounded up
 * to the 16-byte unit.
 */
typedef struct hc_item {
    uint64_t it_hash;               /* keyed hash of the key */
    _Atomic uint64_t it_expires;    /* monotonic ns; HC_FOREVER: never */
    uint64_t it_csn;                /* commit sequence number of the write */
    _Atomic uint32_t it_next;       /* bucket chain: unit + 1, 0 = end */
    uint32_t it_value_len;
    uint32_t it_qprev;              /* eviction queue, toward the head */
    uint32_t it_qnext;              /* eviction queue, toward the tail */
    uint16_t it_stale_s;            /* seconds past expiry it may be served */
    uint16_t it_delta_ms;           /* how long computing it took (XFetch) */
    uint8_t it_key_len;
    uint8_t it_format;              /* the serializer's tag, for the caller */
    uint8_t it_queue;               /* S3-FIFO: small or main (evict.h) */
    uint8_t it_version;             /* version flags (commit.h); the
                                     * visited flag is in a map */
} hc_item;

_Static_assert(sizeof(hc_item) == 48, "hc_item is the 48-byte header");

/* Formats from here up are the table's own (flight.h), never a value's. */
#define HC_FORMAT_INTERNAL 0xF0

static inline uint32_t
hc_item_units(const hc_item *it)
{
    return hc_alloc_units_for(sizeof(hc_item) + (uint64_t) it->it_key_len
                              + it->it_value_len);
}

/*
 * Flight wake words per stripe (a power of two).  A key's waiters sleep
 * on the word its hash picks (hash bits 28-31: above the stripe's, below
 * the bucket's), so the end of one key's flight wakes the waiters of the
 * keys sharing its word, 1 in 16 of the stripe's, not all of them.
 */
#define HC_FLIGHT_WORDS 16

/* One stripe: its lock, epoch, queue and arena bookkeeping. */
typedef struct hc_stripe {
    hc_lock sp_lock;
    _Atomic uint32_t sp_epoch;      /* odd while blocks are being freed */
    uint32_t sp_qhead;              /* queue: newest item, unit + 1 */
    uint32_t sp_qtail;              /* queue: oldest item */
    uint32_t sp_hand;               /* SIEVE: next eviction candidate */
    _Atomic uint64_t sp_items;      /* items linked, expired ones included */
    _Atomic uint64_t sp_bytes;      /* key + value bytes of those items */
    hc_arena sp_arena;
    hc_evict_state sp_evict;        /* S3-FIFO's halves and ghost clock */
    /* Flight wake-ups (flight.h), on a line of their own: one futex word
     * per class of key hashes, and what the wakes did (under sp_lock). */
    _Alignas(HC_CACHE_LINE) _Atomic uint32_t sp_flight_words[HC_FLIGHT_WORDS];
    _Atomic uint64_t sp_flight_wakes;   /* FUTEX_WAKE calls */
    _Atomic uint64_t sp_flight_woken;   /* waiters they woke */
    _Atomic uint32_t sp_flight_wake_pending; /* words to wake at unlock */
} __attribute__((aligned(HC_CACHE_LINE))) hc_stripe;

/* Per-process statistics, one cache line pair per process slot. */
typedef struct hc_stats_slot {
    _Atomic uint32_t ss_owner;      /* slot token the counts belong to */
    uint32_t ss_pid;
    _Atomic uint64_t ss_count[HC_STAT_COUNT];
} __attribute__((aligned(128))) hc_stats_slot;

/* Geometry of a cache, a pure function of its size (see compute_layout). */
typedef struct hc_cache_layout {
    uint64_t cl_size;               /* bytes of the whole cache structure */
    uint32_t cl_nstripes;           /* power of two */
    uint32_t cl_nbuckets;           /* per stripe, power of two */
    uint32_t cl_units;              /* arena units per stripe */
    uint32_t cl_eviction;           /* hc_eviction: the geometry needs it */
    uint64_t cl_stripes_off;        /* offsets from the cache base */
    uint64_t cl_stats_off;
    uint64_t cl_buckets_off;        /* stripe s: + s * nbuckets * 4 */
    uint64_t cl_maps_off;           /* stripe s: + s * 3 * words * 8 */
    uint64_t cl_arenas_off;         /* stripe s: + s * units * 16 */
    uint64_t cl_ghost_off;          /* stripe s: + s * nghost * 8 */
    uint32_t cl_nghost;             /* S3-FIFO ghost entries per stripe */
    uint32_t cl_pad;
} hc_cache_layout;

typedef struct hc_cache_header {
    _Atomic uint32_t ch_magic;      /* HC_CACHE_MAGIC once initialised */
    uint32_t ch_version;
    hc_lock ch_init_lock;           /* held while initialising */
    hc_cache_layout ch_layout;      /* must equal compute_layout(size) */
    char ch_boot_id[40];            /* the boot whose clock stamped items */
    _Atomic uint64_t ch_csn;        /* commit sequence number: last issued */
    hc_commit_area ch_commit;       /* snapshots and batches (commit.h) */
} hc_cache_header;

/* The process-local handle. */
typedef struct hc_cache {
    hc_segment *ca_seg;
    uint8_t *ca_base;
    hc_cache_header *ca_header;
    hc_cache_layout ca_layout;      /* computed here, never read from shm */
    uint64_t ca_seed[2];
    uint32_t ca_max_value;          /* bytes of a value, at most */
    bool ca_evict;                  /* false: a full cache refuses sets */
    hc_eviction ca_eviction;        /* the header's, checked at open */
} hc_cache;

/* What a lock-free lookup found; valid only if hc_cache_read_valid(). */
typedef struct hc_read {
    const uint8_t *rd_value;        /* in shared memory: copy it out */
    uint32_t rd_value_len;
    uint8_t rd_format;
    bool rd_expired;                /* found, but past its expiry */
    uint64_t rd_expires;
    uint64_t rd_csn;
    uint32_t rd_stale_s;
    uint32_t rd_delta_ms;
    uint32_t rd_epoch;              /* internal: the epoch read at start */
    hc_stripe *rd_stripe;           /* internal */
} hc_read;

typedef enum hc_set_mode {
    HC_SET_ALWAYS,                  /* insert or replace */
    HC_SET_ADD,                     /* only if absent (or expired) */
    HC_SET_REPLACE,                 /* only if present */
    HC_SET_CAS,                     /* only if present with csn == expect */
    HC_SET_SWAP,                    /* HC_SET_CAS that keeps the item's
                                     * expiry, stale window and compute
                                     * time (incr: a new value, the same
                                     * entry) */
} hc_set_mode;

typedef struct hc_write {
    const void *wr_key;
    uint32_t wr_key_len;
    uint64_t wr_hash;
    const void *wr_value;
    uint32_t wr_value_len;
    uint8_t wr_format;
    uint64_t wr_expires;            /* absolute monotonic ns, HC_FOREVER */
    uint16_t wr_stale_s;            /* seconds it may be served past expiry */
    uint16_t wr_delta_ms;           /* compute time, for early refresh */
    hc_set_mode wr_mode;
    uint64_t wr_expect_csn;         /* HC_SET_CAS and HC_SET_SWAP only */
} hc_write;

/* The bytes a cache evicting by e needs at least. */
uint64_t hc_cache_min_size(hc_eviction e);

/*
 * Open the cache structure at [offset, offset + size) of the segment,
 * initialising it if nobody has (or its initialiser died).  eviction is
 * the policy a new cache gets; opening an existing cache with another
 * policy than its own is HC_KIND_MISMATCH, and HC_EVICTION_STORED takes
 * whichever it has (SIEVE for a new one).
 */
hc_status hc_cache_open(hc_segment *seg, uint64_t offset, uint64_t size,
                        uint32_t max_value, bool evict, hc_eviction eviction,
                        hc_cache **out);
void hc_cache_close(hc_cache *c);

uint64_t hc_cache_hash(const hc_cache *c, const void *key, size_t len);

/* Lock-free lookup: HC_OK (found, maybe expired) or HC_NOT_FOUND. */
hc_status hc_cache_read_begin(hc_cache *c, const void *key, uint32_t key_len,
                              uint64_t hash, uint64_t now, hc_read *rd);
/*
 * The same lookup as of a snapshot at csn horizon (commit.h): the newest
 * version of key whose csn <= horizon.  hc_cache_read_begin() is this
 * with horizon UINT64_MAX (the newest version).
 */
hc_status hc_cache_read_begin_at(hc_cache *c, const void *key,
                                 uint32_t key_len, uint64_t hash,
                                 uint64_t now, uint64_t horizon,
                                 hc_read *rd);
/* True if nothing the lookup looked at moved since it began. */
bool hc_cache_read_valid(const hc_read *rd);

/* Lock-free read attempts before a reader takes the stripe lock. */
#define HC_READ_ATTEMPTS 8

/*
 * Which item key holds now, without copying its value: on HC_OK, rd says
 * the item's csn, format, expiry and whether it expired (rd_value is not
 * to be read: the block may be reused at once).  The csn identifies the
 * item: every write takes a fresh one and a published item never changes
 * (only its expiry, by touch), so an unchanged csn means unchanged bytes.
 * A per-process copy of a decoded value is validated this way in O(1).
 * Lock-free: HC_OK, HC_NOT_FOUND, or HC_WOULD_BLOCK after HC_READ_ATTEMPTS
 * invalid tries (then hc_cache_read_locked(), which also repairs a stripe
 * a dead writer left).
 */
hc_status hc_cache_identify(hc_cache *c, const void *key, uint32_t key_len,
                            uint64_t hash, uint64_t now, hc_read *rd);

/*
 * A reader's last resort: the lookup under the stripe lock (which may
 * wait: call it without holding up others), rebuilding a stripe found
 * inconsistent.  HC_OK, HC_NOT_FOUND or the lock's error.  With copy, a
 * hit's value is also copied into *copy (malloc'ed; the caller frees).
 */
hc_status hc_cache_read_locked(hc_cache *c, const void *key, uint32_t key_len,
                               uint64_t hash, uint64_t now, hc_read *rd,
                               uint8_t **copy);
/* hc_cache_read_locked() as of a snapshot at csn horizon. */
hc_status hc_cache_read_locked_at(hc_cache *c, const void *key,
                                  uint32_t key_len, uint64_t hash,
                                  uint64_t now, uint64_t horizon,
                                  hc_read *rd, uint8_t **copy);

/* Lock the stripe of hash (recovering it if its last owner died). */
hc_status hc_cache_lock_stripe(hc_cache *c, uint64_t hash);
void hc_cache_unlock_stripe(hc_cache *c, uint64_t hash);

/* Rebuild the stripe of hash; the caller holds its lock (HC_CORRUPT). */
void hc_cache_rebuild_locked(hc_cache *c, uint64_t hash);

/* Writers: each takes and releases the stripe lock itself. */
hc_status hc_cache_set(hc_cache *c, const hc_write *w, uint64_t *csn);
hc_status hc_cache_delete(hc_cache *c, const void *key, uint32_t key_len,
                          uint64_t hash);
/*
 * Delete only the write whose csn is expect_csn (compare-and-delete):
 * HC_CONFLICT if the key holds another, HC_NOT_FOUND if it is absent.
 */
hc_status hc_cache_delete_csn(hc_cache *c, const void *key, uint32_t key_len,
                              uint64_t hash, uint64_t expect_csn);
hc_status hc_cache_touch(hc_cache *c, const void *key, uint32_t key_len,
                         uint64_t hash, uint64_t expires);
/* Remove the item if it is still expired, only if the lock is free. */
void hc_cache_reap_nowait(hc_cache *c, const void *key, uint32_t key_len,
                          uint64_t hash);
hc_status hc_cache_clear(hc_cache *c);
/*
 * Expire every value at now, keeping each one's stale window: it is no
 * longer served as fresh, but a caller that opted in may still fall back
 * to it (the tier, once it may have missed invalidations).  Flights are
 * left to run.
 */
hc_status hc_cache_expire_all(hc_cache *c, uint64_t now);

/* Unexpired items, counted under each stripe lock in turn. */
hc_status hc_cache_count(hc_cache *c, uint64_t now, uint64_t *count);

/*
 * The unexpired keys of one stripe, packed as (uint16 length, bytes)...
 * into a malloc'ed buffer the caller frees.
 */
hc_status hc_cache_stripe_keys(hc_cache *c, uint32_t stripe, uint64_t now,
                               uint8_t **buf, size_t *len, size_t *count);

/* Check every invariant of every stripe; HC_CORRUPT names the first. */
hc_status hc_cache_check(hc_cache *c);

/* Statistics: add to this process's slot; sum all slots. */
void hc_cache_count_stat(hc_cache *c, hc_stat stat, uint64_t n);
void hc_cache_stats(hc_cache *c, uint64_t totals[HC_STAT_COUNT]);

/*
 * How many times the cache was reset in place (the poison/reset path of
 * table.c: a damaged header found by an opener): the top 16 bits of the
 * commit sequence, which every reset moves to its next generation.
 */
uint64_t hc_cache_generation(const hc_cache *c);
/*
 * Slot i's counts and pid, and whether the process that counted them is
 * still attached (a read-only probe of its process slot); false if the
 * slot never counted anything.  Slot HC_MAX_SLOTS holds the counts of
 * processes gone (pid 0, never alive).
 */
bool hc_cache_stats_slot(hc_cache *c, uint32_t i,
                         uint64_t counts[HC_STAT_COUNT], uint32_t *pid,
                         bool *alive);
/* Bytes of arena in use, items and key+value bytes over all stripes. */
void hc_cache_usage(hc_cache *c, uint64_t *used, uint64_t *capacity,
                    uint64_t *items, uint64_t *payload);

#endif /* HC_TABLE_H */
