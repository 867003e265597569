/*-------------------------------------------------------------------------
 *
 * commit.h
 *	  Snapshots and atomic multi-key writes over the table's commit
 *	  sequence number (csn): read many keys as of one moment, write many
 *	  keys all at once.
 *
 * The counter.  ch_csn (table.h) is the last csn issued.  Every write
 * draws its csn from it with one fetch_add, and only while the stripe it
 * writes has its free epoch open (odd), which it keeps open until it has
 * linked the item.  So a csn at or below the counter is, in every stripe,
 * either linked already or behind an odd epoch that every lock-free
 * reader retries on.  A snapshot is therefore one load of the counter:
 * S = ch_csn.  An item is visible to it iff its csn <= S.  (This is the
 * "stamp, then publish" of Haas's "cheaper snapshots" mail with the stripe
 * epoch as the fence; docs/barriers.md, pair 16.)
 *
 * Versions.  An item superseded (or deleted) while a live snapshot may
 * still read it stays linked behind its successor, flagged RETAINED; a
 * delete then links a TOMBSTONE (an internal format, absent to every user
 * operation).  A chain holds a key's versions newest first; a plain
 * read takes the first, a snapshot read the first whose csn <= S.  When
 * a key's newest version goes (eviction, expiry, delete with no snapshot
 * open) the versions behind it are flagged DEAD, which every read skips,
 * and are freed later.  A version is needed while some live horizon h
 * (the oldest snapshot of a process) is below the csn of its successor.
 *
 * Horizons.  One per process slot: the csn of the process's oldest open
 * snapshot and a deadline (max_snapshot_age).  Writers ignore a horizon
 * past its deadline, below the "too old" watermark, or whose process died
 * (the kernel-released slot lock, slot.h).  Registering stores the horizon,
 * then reloads the counter and retries if it moved (seq_cst, against the
 * writer's "draw, then scan").
 *
 * Too old.  cm_too_old is a watermark: a snapshot with S below it may have
 * lost a version it needed, and its next read raises SnapshotTooOld.  It
 * rises when eviction takes a needed version or a key's live newest value
 * (while any snapshot is open, or opening meanwhile: the evicting write's
 * draw, or one of its own if the write fails), when retained versions
 * would pass
 * 1/HC_RETAIN_SHARE of the arena, on clear(), and when a stripe rebuild
 * drops versions.  A snapshot past its own deadline (real monotonic time)
 * is too old as well.
 *
 * Batches.  hc_cache_batch() locks every stripe of its keys in ascending
 * order, opens their epochs, draws ONE csn for all its items, and closes
 * the epochs only after its commit point, so no reader (plain or
 * snapshot) sees part of it.  A per-slot batch record names the open csn:
 * a stripe rebuild drops the items of a record whose owner died (or that
 * aborted), which restores the versions they superseded (a batch always
 * retains those until it commits).  The commit point is one store: the
 * record's csn back to 0.  A batch that fails for want of room undoes
 * its items itself, under its locks, and no snapshot is too old for it;
 * only a stripe found damaged is rebuilt.  At its commit point the
 * versions it kept count toward the memory share.
 *
 *-------------------------------------------------------------------------
 */
#ifndef HC_COMMIT_H
#define HC_COMMIT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "segment.h"
#include "status.h"

#define HC_FORMAT_TOMBSTONE 0xFC    /* an internal format: a delete */
#define HC_RETAIN_SHARE 4           /* retained versions: 1/4 of the arena */
#define HC_COMMIT_STRIPES 64        /* == HC_MAX_STRIPES (static assert) */

/* Flags of a version, in hc_item.it_version. */
#define HC_VERSION_RETAINED 0x01    /* superseded, kept for snapshots */
#define HC_VERSION_DEAD 0x02        /* its newest version went: skip it */

/* Why snapshots below the watermark are too old (for the message). */
typedef enum hc_too_old_why {
    HC_TOO_OLD_NONE,
    HC_TOO_OLD_MEMORY,
    HC_TOO_OLD_EVICTED,
    HC_TOO_OLD_REBUILT,
    HC_TOO_OLD_AGE,
} hc_too_old_why;

typedef struct hc_horizon {
    _Atomic uint64_t hz_csn;        /* oldest open snapshot + 1; 0: none */
    _Atomic uint64_t hz_deadline;   /* monotonic ns after which ignored */
    _Atomic uint32_t hz_token;      /* the slot token that registered it */
    uint32_t hz_pad;
} hc_horizon;

typedef struct hc_batch_record {
    _Atomic uint64_t br_csn;        /* csn of the open batch; 0: none */
    _Atomic uint64_t br_stripes;    /* the stripes it holds locked */
    _Atomic uint32_t br_token;      /* its writer; 0: aborting */
    uint32_t br_pad;
} hc_batch_record;

/* The shared state of this module, at the end of the cache header. */
typedef struct hc_commit_area {
    _Atomic uint64_t cm_too_old;    /* snapshots below: SnapshotTooOld */
    _Atomic uint32_t cm_too_old_why;
    uint32_t cm_pad;
    /* Units of retained, dead and tombstone items per stripe (under its
     * lock; read relaxed for the memory share). */
    _Atomic uint64_t cm_retained[HC_COMMIT_STRIPES];
    _Atomic uint32_t cm_horizon_slots;  /* bits set in cm_horizon_bits */
    uint32_t cm_pad2;
    _Atomic uint64_t cm_horizon_bits[HC_MAX_SLOTS / 64];
    _Atomic uint64_t cm_batch_bits[HC_MAX_SLOTS / 64];
    hc_horizon cm_horizons[HC_MAX_SLOTS];
    hc_batch_record cm_batches[HC_MAX_SLOTS];
} hc_commit_area;

struct hc_cache;
struct hc_writer;
struct hc_item;
struct hc_write;

/* ---- for users of the core ---- */

/* The last csn issued: "has anything changed since?" in one load. */
uint64_t hc_cache_csn(struct hc_cache *c);

/*
 * Open a snapshot: *csn is its point in the commit sequence, *deadline
 * (monotonic ns) when it becomes too old (max_age_ns 0: never).
 */
hc_status hc_snapshot_open(struct hc_cache *c, uint64_t max_age_ns,
                           uint64_t *csn, uint64_t *deadline);
void hc_snapshot_close(struct hc_cache *c, uint64_t csn);

/*
 * After a read at csn: HC_OK if what it read is what the snapshot sees,
 * HC_TOO_OLD (with a detail naming the cause) if the snapshot is too old.
 */
hc_status hc_snapshot_check(struct hc_cache *c, uint64_t csn,
                            uint64_t deadline);

/*
 * Write n keys atomically: every reader sees all of them or none.  An op
 * whose wr_format is HC_FORMAT_TOMBSTONE deletes its key; existed[i]
 * (if not NULL) says whether key i held a value.  *csn: the batch's.
 */
hc_status hc_cache_batch(struct hc_cache *c, const struct hc_write *ops,
                         size_t n, uint8_t *existed, uint64_t *csn);

/* Bytes of versions kept for snapshots (retained, dead, tombstones). */
uint64_t hc_cache_retained_bytes(struct hc_cache *c);

/* ---- for table.c (under the stripe lock of w) ---- */

/* Draw a fresh csn; the caller's stripe epoch is open. */
uint64_t hc_commit_draw(struct hc_cache *c);

/* Version flags of an item (relaxed: readers are validated by the epoch). */
static inline uint8_t
hc_version_flags(const uint8_t *flags)
{
    return __atomic_load_n(flags, __ATOMIC_RELAXED);
}

/*
 * new was just linked in front of old (NULL: a new key).  True if old
 * must stay (a live snapshot may read it); false: free it now.
 */
bool hc_versions_published(struct hc_writer *w, struct hc_item *new_it,
                           struct hc_item *old);

/* Free the versions of new_it's key that no live snapshot needs. */
void hc_versions_prune(struct hc_writer *w, struct hc_item *head);

/*
 * Must a delete whose csn (drawn, epoch open) is csn link a tombstone,
 * because a live snapshot may still read the item?
 */
bool hc_versions_delete_keeps(struct hc_writer *w, uint64_t csn);

/* Must eviction spare it (an open batch's item or kept version)? */
bool hc_versions_pinned(struct hc_writer *w, const struct hc_item *it);

/* it is about to be unlinked and freed (the epoch is open). */
void hc_versions_removing(struct hc_writer *w, struct hc_item *it);

/*
 * The write that evicted a live newest value drew csn (epoch open): any
 * live snapshot below it, even one that registered meanwhile, is too old.
 */
void hc_versions_evicted_before(struct hc_writer *w, uint64_t csn);

/* Is it garbage a sweep may take (a dead or unneeded version)? */
bool hc_versions_sweepable(struct hc_writer *w, const struct hc_item *it);

/* Rebuild: is it an item of a batch that never committed? */
bool hc_commit_aborted(struct hc_cache *c, const struct hc_item *it);
/* Rebuild: versions were dropped (the stripe's retained count restarts). */
void hc_versions_rebuild_begin(struct hc_writer *w);
void hc_versions_dropped(struct hc_writer *w);
/* clear() emptied the stripe: no versions left, snapshots too old. */
void hc_versions_cleared(struct hc_writer *w);
/* A delete found no room for its tombstone: the item went anyway. */
void hc_versions_lost(struct hc_writer *w);
void hc_versions_relinked(struct hc_writer *w, struct hc_item *it);

#endif /* HC_COMMIT_H */
