/*-------------------------------------------------------------------------
 *
 * queue.c
 *	  The shared-memory message queue described in queue.h.
 *
 * The protocol in one paragraph, with the barriers README.barrier asks
 * for.  A producer that owns its side copies whole records into the free
 * part of the ring and then stores bytes_written with release; a consumer
 * loads bytes_written with acquire before it reads a record.  The consumer
 * copies records out and then stores bytes_read with release; a producer
 * loads bytes_read with acquire before it overwrites the bytes that store
 * freed.  That is the whole data path: two release/acquire pairs, one per
 * counter, and no lock between the two sides.  Waking needs one more
 * ordering, a store-then-load on each side (Dekker), so that a sleeper
 * and a publisher can never both miss each other: see wake_side() and
 * sleep_step().
 *
 * Endpoints.  Each process that puts or gets records itself in the
 * endpoint word of its process slot: its slot token, its roles, and how
 * many of its threads sleep on each side.  Sleepers use the table to ask
 * "does any producer (consumer) still live?"; the counts let a scan take
 * back what a killed sleeper added to qs_waiters.
 *
 *-------------------------------------------------------------------------
 */
#include "queue.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "futex.h"
#include "inject.h"
#include "slot.h"

/* q_init once initialised; tokens are below 2^30, so never a token */
#define QUEUE_READY (UINT32_C(0x80000000) | 1)
#define INIT_WAIT_NS HC_NS_PER_SEC
#define INIT_POLL_NS (UINT64_C(100) * 1000)
#define SPIN_LIMIT 200          /* a few microseconds before sleeping */
#define RECORD_CHECK UINT32_C(0x51554555)   /* "QUEU", xor'ed with len */
/* In qs_single_token, beside the owner's token: a batch of it is running. */
#define SINGLE_BUSY UINT32_C(0x80000000)

/*
 * An endpoint word: the slot token in the high 32 bits; below it, per
 * side, a 12-bit count of the process's threads asleep on that side, and
 * the role bits (this process has put / has got).
 */
#define EP_ROLE(side) (UINT64_C(1) << (side))
#define EP_ROLES (EP_ROLE(HC_QUEUE_PUT) | EP_ROLE(HC_QUEUE_GET))
#define EP_WAIT_SHIFT(side) (8 + 12 * (side))
#define EP_WAIT_ONE(side) (UINT64_C(1) << EP_WAIT_SHIFT(side))
#define EP_WAIT_MASK(side) (UINT64_C(0xFFF) << EP_WAIT_SHIFT(side))
#define EP_WAITS (EP_WAIT_MASK(HC_QUEUE_PUT) | EP_WAIT_MASK(HC_QUEUE_GET))
#define EP_TOKEN(word) ((uint32_t) ((word) >> 32))

typedef struct record_header {
    uint32_t rh_len;
    uint32_t rh_check;          /* rh_len ^ RECORD_CHECK */
} record_header;

_Static_assert(sizeof(record_header) == HC_QUEUE_RECORD_HEADER,
               "record header size");
_Static_assert(offsetof(hc_queue, q_ring) % HC_CACHE_LINE == 0,
               "the ring starts on a cache line");

/* ---------------------------------------------------------------------- */
/* Sizes and the ring                                                     */
/* ---------------------------------------------------------------------- */

static uint64_t
record_size(uint64_t len)
{
    return HC_QUEUE_RECORD_HEADER + ((len + 7) & ~(uint64_t) 7);
}

uint64_t
hc_queue_struct_size(uint64_t ring_size)
{
    if (ring_size < HC_QUEUE_MIN_RING)
        ring_size = HC_QUEUE_MIN_RING;
    return offsetof(hc_queue, q_ring) + (ring_size & ~(uint64_t) 7);
}

uint64_t
hc_queue_max_message(uint64_t ring_size)
{
    uint64_t max = ring_size - HC_QUEUE_RECORD_HEADER;

    /* The header holds 32 bits of length. */
    return max > UINT32_C(0xFFFFFFF8) ? UINT32_C(0xFFFFFFF8) : max;
}

static inline uint64_t
ring_offset(const hc_queue_handle *qh, uint64_t pos)
{
    return qh->qh_ring_mask ? pos & qh->qh_ring_mask
                            : pos % qh->qh_ring_size;
}

/* Copy len bytes into the ring at pos, wrapping at its end. */
static void
ring_write(hc_queue_handle *qh, uint64_t pos, const void *src, size_t len)
{
    uint8_t *ring = qh->qh_queue->q_ring;
    uint64_t off = ring_offset(qh, pos);
    size_t first = len < qh->qh_ring_size - off ? len
                                                : (size_t) (qh->qh_ring_size - off);

    memcpy(ring + off, src, first);
    if (first < len)
        memcpy(ring, (const uint8_t *) src + first, len - first);
}

/* Copy len bytes out of the ring at pos, wrapping at its end. */
static void
ring_read(const hc_queue_handle *qh, uint64_t pos, void *dst, size_t len)
{
    const uint8_t *ring = qh->qh_queue->q_ring;
    uint64_t off = ring_offset(qh, pos);
    size_t first = len < qh->qh_ring_size - off ? len
                                                : (size_t) (qh->qh_ring_size - off);

    memcpy(dst, ring + off, first);
    if (first < len)
        memcpy((uint8_t *) dst + first, ring, len - first);
}

static hc_queue_side *
side_of(hc_queue_handle *qh, hc_queue_side_id side)
{
    return side == HC_QUEUE_PUT ? &qh->qh_queue->q_put : &qh->qh_queue->q_get;
}

static uint32_t
single_flag(hc_queue_side_id side)
{
    return side == HC_QUEUE_PUT ? HC_QUEUE_SINGLE_PRODUCER
                                : HC_QUEUE_SINGLE_CONSUMER;
}

static const char *
side_name(hc_queue_side_id side)
{
    return side == HC_QUEUE_PUT ? "producer" : "consumer";
}

/*
 * Check a pair of positions loaded from shared memory: bytes_read never
 * passes bytes_written, they are never more than a ring apart, and both
 * are multiples of 8 (so a record header never straddles the ring's end).
 */
static bool
positions_ok(const hc_queue_handle *qh, uint64_t written, uint64_t read)
{
    return read <= written && written - read <= qh->qh_ring_size
           && written % 8 == 0 && read % 8 == 0;
}

static hc_status
check_positions(const hc_queue_handle *qh, uint64_t written, uint64_t read)
{
    if (positions_ok(qh, written, read))
        return HC_OK;
    hc_set_detail("the queue's positions are inconsistent: %llu bytes "
                  "written, %llu read, ring of %llu bytes",
                  (unsigned long long) written, (unsigned long long) read,
                  (unsigned long long) qh->qh_ring_size);
    return HC_CORRUPT;
}

/* ---------------------------------------------------------------------- */
/* Endpoints                                                              */
/* ---------------------------------------------------------------------- */

/* Subtract n from a side's waiter count, never below zero. */
static void
sub_waiters(hc_queue_side *s, uint32_t n)
{
    uint32_t v = atomic_load_explicit(&s->qs_waiters, memory_order_relaxed);

    /* relaxed: a count of sleepers, ordered by the Dekker pair elsewhere */
    while (n > 0 && !atomic_compare_exchange_weak_explicit(
               &s->qs_waiters, &v, v - (v < n ? v : n),
               memory_order_relaxed, memory_order_relaxed))
        ;
}

/* Take back the sleepers a gone endpoint word still counts. */
static void
drop_waits(hc_queue *q, uint64_t word)
{
    sub_waiters(&q->q_put, (uint32_t) ((word & EP_WAIT_MASK(HC_QUEUE_PUT))
                                       >> EP_WAIT_SHIFT(HC_QUEUE_PUT)));
    sub_waiters(&q->q_get, (uint32_t) ((word & EP_WAIT_MASK(HC_QUEUE_GET))
                                       >> EP_WAIT_SHIFT(HC_QUEUE_GET)));
}

/*
 * Clean the word of a dead endpoint: drop its sleepers (and, if asked,
 * its roles).  The CAS fails harmlessly if the slot's new owner wrote
 * the word meanwhile: we never overwrite a live process's word.
 */
static void
forget_endpoint(hc_queue *q, _Atomic uint64_t *ep, uint64_t word,
                uint64_t roles)
{
    uint64_t clean = word & ~(EP_WAITS | roles);

    if ((clean & EP_ROLES) == 0)
        clean = 0;
    if (clean != word
        && atomic_compare_exchange_strong_explicit(
               ep, &word, clean, memory_order_relaxed, memory_order_relaxed))
        drop_waits(q, word);
}

/* How far scan_endpoints() goes, and what it cleans. */
typedef enum scan_mode {
    SCAN_PROBE,                 /* stop at the first live holder of the role */
    SCAN_REPAIR,                /* all of them; take back dead sleepers */
    SCAN_FORGET                 /* and forget the role's dead holders */
} scan_mode;

/*
 * Look at the endpoints of role `side`: *live if one lives, *dead if one
 * died (or exited without detaching).  Dead sleepers are taken back on
 * the way.  A sleeper's probe (SCAN_PROBE) needs no more than one live
 * peer, and each endpoint looked at costs an fcntl probe.
 */
static void
scan_endpoints(hc_queue_handle *qh, hc_queue_side_id side, scan_mode mode,
               bool *live, bool *dead)
{
    hc_queue *q = qh->qh_queue;
    uint64_t role = EP_ROLE(side);
    size_t i;

    *live = *dead = false;
    for (i = 0; i < HC_MAX_SLOTS; i++) {
        /*
         * acquire: the token read here is then judged by the slot's
         * generation (an acquire load in hc_slot_token_alive()); ordering
         * the two by acquire, not by the address dependency that orders
         * them on x86, ARMv8 and POWER, keeps the argument in C11 terms.
         */
        uint64_t word = atomic_load_explicit(&q->q_endpoints[i],
                                             memory_order_acquire);

        if ((word & (role | EP_WAITS)) == 0)
            continue;
        if (hc_slot_token_alive(qh->qh_seg, EP_TOKEN(word))) {
            *live = *live || (word & role) != 0;
            if (*live && mode == SCAN_PROBE)
                return;
            continue;
        }
        *dead = *dead || (word & role) != 0;
        forget_endpoint(q, &q->q_endpoints[i], word,
                        mode == SCAN_FORGET ? role : 0);
    }
}

/*
 * Record this process as a producer or consumer.  The fast path is one
 * relaxed load of our own word.  A newcomer first forgets the side's dead,
 * so peers that gave up on them (HC_PEER_DIED) wait for it instead.
 */
static void
endpoint_join(hc_queue_handle *qh, hc_queue_side_id side, uint32_t me)
{
    _Atomic uint64_t *ep = &qh->qh_queue->q_endpoints[me & HC_TOKEN_INDEX_MASK];
    uint64_t old = atomic_load_explicit(ep, memory_order_relaxed);
    uint64_t want;
    bool live, dead;

    if (EP_TOKEN(old) == me && (old & EP_ROLE(side)))
        return;
    scan_endpoints(qh, side, SCAN_FORGET, &live, &dead);
    old = atomic_load_explicit(ep, memory_order_relaxed);
    do
        want = (EP_TOKEN(old) == me ? old : (uint64_t) me << 32)
               | EP_ROLE(side);
    while (!atomic_compare_exchange_weak_explicit(
               ep, &old, want, memory_order_relaxed, memory_order_relaxed));
    /* The slot's previous process is gone; so are its sleepers. */
    if (EP_TOKEN(old) != me)
        drop_waits(qh->qh_queue, old);
}

/*
 * Give up the single sides this process holds: CAS our token to 0, which
 * fails while a batch of ours runs there (SINGLE_BUSY; side_enter() sets
 * it by a CAS from our bare token, so the two exclude each other).  False
 * if a side was busy: it stays ours, and its batch goes on alone.
 */
static bool
leave_single_sides(hc_queue_handle *qh, uint32_t me)
{
    bool idle = true;
    int side;

    for (side = HC_QUEUE_PUT; side <= HC_QUEUE_GET; side++) {
        hc_queue_side *s = side_of(qh, side);
        uint32_t owner = me;

        /*
         * acq_rel: acquire pairs with the release store in side_leave(),
         * release with the acquire load in single_join(), so that the
         * next owner reads our last batch's position (pair 20).
         */
        if (atomic_compare_exchange_strong_explicit(
                &s->qs_single_token, &owner, 0, memory_order_acq_rel,
                memory_order_relaxed)
            || owner != (me | SINGLE_BUSY))
            continue;
        hc_set_detail("thread %u of this process is in a %s batch on the "
                      "queue's single %s side",
                      (unsigned) atomic_load_explicit(&s->qs_single_tid,
                                                      memory_order_relaxed),
                      side == HC_QUEUE_PUT ? "put" : "get", side_name(side));
        idle = false;
    }
    return idle;
}

hc_status
hc_queue_detach(hc_queue_handle *qh)
{
    hc_queue *q = qh->qh_queue;
    _Atomic uint64_t *ep;
    uint64_t old, want;
    uint32_t me;
    int side;
    bool live, dead;

    /* A forked child that never used the segment joined nothing. */
    if (atomic_load_explicit(&qh->qh_seg->sg_fork_epoch,
                             memory_order_acquire) != hc_fork_epoch()
        || hc_slot_self(qh->qh_seg, &me) != HC_OK)
        return HC_OK;
    /* A batch in progress: this process is not leaving that side. */
    if (!leave_single_sides(qh, me))
        return HC_BUSY;
    ep = &q->q_endpoints[me & HC_TOKEN_INDEX_MASK];
    old = atomic_load_explicit(ep, memory_order_relaxed);
    /*
     * A clean leave is the side's newest news: it takes the side's dead
     * with it, so the other side waits (for a newcomer or a close) rather
     * than report a death that others already outlived.
     */
    for (side = HC_QUEUE_PUT; EP_TOKEN(old) == me && side <= HC_QUEUE_GET;
         side++)
        if (old & EP_ROLE(side))
            scan_endpoints(qh, side, SCAN_FORGET, &live, &dead);
    do {
        if (EP_TOKEN(old) != me)
            break;
        /* Keep the token while threads of ours still sleep (their counts). */
        want = (old & EP_WAITS) ? old & ~EP_ROLES : 0;
    } while (!atomic_compare_exchange_weak_explicit(
                 ep, &old, want, memory_order_relaxed, memory_order_relaxed));
    return HC_OK;
}

/* ---------------------------------------------------------------------- */
/* Opening                                                                */
/* ---------------------------------------------------------------------- */

/*
 * Initialise the queue unless someone has: CAS q_init from 0 (or from a
 * dead initialiser's token) to ours, write the constant fields, publish
 * them with READY.  A live initialiser is waited for, briefly.
 */
static hc_status
queue_init(hc_segment *seg, hc_queue *q, uint64_t ring, uint32_t flags)
{
    uint64_t give_up = hc_deadline_after(INIT_WAIT_NS);
    struct timespec pause = {0, (long) INIT_POLL_NS};
    uint32_t me, seen;
    hc_status st = hc_slot_self(seg, &me);

    if (st != HC_OK)
        return st;
    for (;;) {
        /* Pairs with the release store of QUEUE_READY below. */
        seen = atomic_load_explicit(&q->q_init, memory_order_acquire);
        if (seen == QUEUE_READY)
            break;
        if ((seen == 0 || !hc_slot_token_alive(seg, seen))
            && atomic_compare_exchange_strong_explicit(
                   &q->q_init, &seen, me, memory_order_acquire,
                   memory_order_relaxed)) {
            q->q_flags = flags & HC_QUEUE_FLAGS_MASK;
            q->q_ring_size = ring;
            atomic_store_explicit(&q->q_init, QUEUE_READY,
                                  memory_order_release);
            return HC_OK;
        }
        if (hc_now_ns() >= give_up) {
            hc_set_detail("the process making the queue (slot token %u) "
                          "has not finished in 1 s", (unsigned) seen);
            return HC_NOT_READY;
        }
        nanosleep(&pause, NULL);
    }
    if (q->q_ring_size != ring || (q->q_flags & ~HC_QUEUE_FLAGS_MASK)) {
        hc_set_detail("the queue header says a ring of %llu bytes and "
                      "flags %#x; its structure holds %llu",
                      (unsigned long long) q->q_ring_size, q->q_flags,
                      (unsigned long long) ring);
        return HC_CORRUPT;
    }
    return HC_OK;
}

hc_status
hc_queue_open(hc_segment *seg, uint64_t offset, uint64_t size,
              uint32_t flags, hc_queue_handle **out)
{
    hc_queue *q = hc_segment_ptr(seg, offset, size);
    hc_queue_handle *qh;
    uint64_t ring;
    hc_status st;
    bool live, dead;

    if (size < hc_queue_struct_size(HC_QUEUE_MIN_RING)) {
        hc_set_detail("a queue needs at least %llu bytes, got %llu",
                      (unsigned long long) hc_queue_struct_size(0),
                      (unsigned long long) size);
        return HC_BAD_ARGUMENT;
    }
    if (q == NULL || offset % HC_CACHE_LINE != 0) {
        hc_set_detail("a queue at offset %llu of %llu bytes is not inside "
                      "the segment", (unsigned long long) offset,
                      (unsigned long long) size);
        return HC_CORRUPT;
    }
    ring = (size - offsetof(hc_queue, q_ring)) & ~(uint64_t) 7;
    st = queue_init(seg, q, ring, flags);
    if (st != HC_OK)
        return st;
    qh = calloc(1, sizeof(*qh));
    if (qh == NULL)
        return HC_SYSTEM;
    qh->qh_seg = seg;
    qh->qh_queue = q;
    qh->qh_ring_size = ring;
    qh->qh_ring_mask = (ring & (ring - 1)) == 0 ? ring - 1 : 0;
    qh->qh_flags = q->q_flags & HC_QUEUE_FLAGS_MASK;
    /* Take back what sleepers killed since the last scan left counted. */
    scan_endpoints(qh, HC_QUEUE_PUT, SCAN_REPAIR, &live, &dead);
    *out = qh;
    return HC_OK;
}

void
hc_queue_free(hc_queue_handle *qh)
{
    free(qh);
}

/* ---------------------------------------------------------------------- */
/* Owning a side                                                          */
/* ---------------------------------------------------------------------- */

/*
 * Take a side's lock.  Without waiting, too, a dead owner's lock is taken
 * over (one probe of its slot when the lock is held): else a side whose
 * holder was killed would refuse every NOWAIT caller for good.
 */
static hc_status
lock_side(hc_queue_handle *qh, hc_queue_side *s, uint64_t deadline)
{
    if (deadline == HC_QUEUE_NOWAIT)
        return hc_lock_try_acquire(qh->qh_seg, &s->qs_lock);
    return hc_lock_acquire(qh->qh_seg, &s->qs_lock, deadline);
}

/*
 * Become the one thread of a single-process side, under the side's lock:
 * allowed if nobody is, or the one who was is dead (or is us already).
 */
static hc_status
single_join(hc_queue_handle *qh, hc_queue_side_id side, uint32_t me,
            uint32_t tid, uint64_t deadline)
{
    hc_queue_side *s = side_of(qh, side);
    hc_status st = lock_side(qh, s, deadline);
    uint32_t owner, owner_tid;
    bool mine;

    if (st != HC_OK && st != HC_OWNER_DIED)
        return st;
    /*
     * Acquire: pairs with the release of the token's last change outside
     * this lock (side_leave(), leave_single_sides()), after the previous
     * owner's last publish (pair 20).  The tid is written under the lock.
     */
    owner = atomic_load_explicit(&s->qs_single_token, memory_order_acquire);
    owner_tid = atomic_load_explicit(&s->qs_single_tid, memory_order_relaxed);
    mine = (owner & ~SINGLE_BUSY) == me && owner_tid == tid;
    if (mine && (owner & SINGLE_BUSY)) {
        hc_set_detail("this thread is already in a batch on the queue's "
                      "single %s side", side_name(side));
        st = HC_BUSY;           /* a batch inside a batch */
    }
    else if (owner != 0 && !mine
             && ((owner & ~SINGLE_BUSY) == me
                 || hc_slot_token_alive(qh->qh_seg, owner & ~SINGLE_BUSY))) {
        hc_slot *slot = &qh->qh_seg->sg_header->sh_slots[owner
                                                         & HC_TOKEN_INDEX_MASK];

        hc_set_detail("the queue was made for a single %s, and thread %u "
                      "of process %u is it", side_name(side),
                      (unsigned) owner_tid,
                      (unsigned) atomic_load_explicit(&slot->sl_pid,
                                                      memory_order_relaxed));
        st = HC_BUSY;
    }
    else {
        HC_INJECT("queue.single_join.locked");
        atomic_store_explicit(&s->qs_single_tid, tid, memory_order_relaxed);
        /* Joined and in a batch at once (side_leave() clears the bit). */
        atomic_store_explicit(&s->qs_single_token, me | SINGLE_BUSY,
                              memory_order_relaxed);
        st = HC_OK;
    }
    hc_lock_release(qh->qh_seg, &s->qs_lock);
    return st;
}

/*
 * The single side's fast path: mark our batch by a CAS from our bare
 * token.  It fails if the side is not ours, or if leave_single_sides()
 * took it from us first; single_join() then decides under the lock.
 * Relaxed: only this thread and our own detach write a token naming us.
 */
static bool
single_busy(hc_queue_side *s, uint32_t me)
{
    uint32_t owner = me;

    return atomic_compare_exchange_strong_explicit(
        &s->qs_single_token, &owner, me | SINGLE_BUSY, memory_order_relaxed,
        memory_order_relaxed);
}

/* Own a side for one batch: its lock, or the single-thread check. */
static hc_status
side_enter(hc_queue_handle *qh, hc_queue_side_id side, uint64_t deadline)
{
    hc_queue_cursor *c = &qh->qh_cursor[side];
    hc_queue_side *s = side_of(qh, side);
    uint32_t me, tid;
    hc_status st = hc_slot_self(qh->qh_seg, &me);

    if (st != HC_OK)
        return st;
    if (!(qh->qh_flags & single_flag(side)))
        st = lock_side(qh, s, deadline);
    else if ((tid = hc_thread_id()) != atomic_load_explicit(
                 &s->qs_single_tid, memory_order_relaxed)
             || !single_busy(s, me))
        st = single_join(qh, side, me, tid, deadline);
    c->qc_owner_died = st == HC_OWNER_DIED;
    if (st != HC_OK && st != HC_OWNER_DIED)
        return st;
    HC_INJECT("queue.enter.owned");
    /* Only once we own the side: a refused single side joins nothing. */
    endpoint_join(qh, side, me);
    /*
     * Our side's position.  acquire: pairs with the release store of the
     * previous owner (lock.c's release also orders it when there is a
     * lock; a single side's earlier owner may have died without one).
     */
    c->qc_pos = c->qc_start = atomic_load_explicit(&s->qs_bytes,
                                                   memory_order_acquire);
    c->qc_messages = 0;
    c->qc_open = true;
    return HC_OK;
}

static void
side_leave(hc_queue_handle *qh, hc_queue_side_id side)
{
    hc_queue_side *s = side_of(qh, side);

    qh->qh_cursor[side].qc_open = false;
    if (!(qh->qh_flags & single_flag(side)))
        hc_lock_release(qh->qh_seg, &s->qs_lock);
    else
        /* Release: pairs with the acquire of leave_single_sides()'s CAS,
         * after this batch's publish (pair 20). */
        atomic_store_explicit(&s->qs_single_token,
                              atomic_load_explicit(&s->qs_single_token,
                                                   memory_order_relaxed)
                                  & ~SINGLE_BUSY,
                              memory_order_release);
}

/*
 * Wake the sleepers of `side` after the other side moved its position
 * (wake at most n, or all if n is 0).
 *
 * The seq_cst fence is one half of a Dekker pair with announce_wait() and
 * side_state(): we store the position, fence, then load qs_waiters; a
 * sleeper increments qs_waiters (seq_cst), then loads the positions
 * (seq_cst).  One of the two loads sees the other's store, so either we
 * see the sleeper and wake it, or it sees our data and does not sleep.
 */
static void
wake_side(hc_queue_handle *qh, hc_queue_side_id side, uint64_t n)
{
    hc_queue_side *s = side_of(qh, side);

    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&s->qs_waiters, memory_order_relaxed) == 0)
        return;
    /* Pairs with the acquire load of qs_wake_seq in sleep_step(). */
    atomic_fetch_add_explicit(&s->qs_wake_seq, 1, memory_order_release);
    hc_futex_wake(&s->qs_wake_seq, n == 0 || n > INT_MAX ? -1 : (int) n);
}

/* Publish the batch's position and count, wake the other side, leave. */
static void
side_publish(hc_queue_handle *qh, hc_queue_side_id side)
{
    hc_queue_cursor *c = &qh->qh_cursor[side];
    hc_queue_side *s = side_of(qh, side);

    if (c->qc_pos != c->qc_start) {
        /* relaxed: a statistic, ordered before the release store below */
        atomic_store_explicit(
            &s->qs_messages,
            atomic_load_explicit(&s->qs_messages, memory_order_relaxed)
                + c->qc_messages,
            memory_order_relaxed);
        HC_INJECT("queue.publish.counted");
        /*
         * Publish.  Producers: every record written in this batch
         * happens-before a consumer's acquire load of bytes_written that
         * reads this value (get_refresh()).  Consumers: every read of the
         * records we free happens-before a producer's acquire load of
         * bytes_read that reads it (put_room()), so it never overwrites
         * bytes we were still copying.
         */
        atomic_store_explicit(&s->qs_bytes, c->qc_pos, memory_order_release);
        HC_INJECT("queue.publish.stored");
        if (side == HC_QUEUE_PUT)
            wake_side(qh, HC_QUEUE_GET, c->qc_messages);
        else
            wake_side(qh, HC_QUEUE_PUT, 0);
    }
    side_leave(qh, side);
}

/* ---------------------------------------------------------------------- */
/* Producing                                                              */
/* ---------------------------------------------------------------------- */

hc_status
hc_queue_put_begin(hc_queue_handle *qh, uint64_t deadline)
{
    /* seq_cst: pairs with the store in hc_queue_close() */
    if (atomic_load_explicit(&qh->qh_queue->q_closed, memory_order_seq_cst))
        return HC_CLOSED;
    return side_enter(qh, HC_QUEUE_PUT, deadline);
}

static hc_status
too_large(const hc_queue_handle *qh, uint64_t len)
{
    hc_set_detail("a message of %llu bytes does not fit: the queue's ring "
                  "has %llu bytes, so a message may have at most %llu",
                  (unsigned long long) len,
                  (unsigned long long) qh->qh_ring_size,
                  (unsigned long long) hc_queue_max_message(qh->qh_ring_size));
    return HC_TOO_LARGE;
}

/*
 * Is there room for rec more bytes?  Uses the cached bytes_read (a lower
 * bound, so never too optimistic) and loads the real one only when the
 * cache says no.
 */
static hc_status
put_room(hc_queue_handle *qh, hc_queue_cursor *c, uint64_t rec)
{
    uint64_t ring = qh->qh_ring_size;
    uint64_t read;
    hc_status st;

    if (c->qc_pos - c->qc_other <= ring - rec)
        return HC_OK;
    /*
     * Pairs with the release store of bytes_read in side_publish(): the
     * consumer's copies out of the bytes it freed happen-before our writes.
     */
    read = atomic_load_explicit(&qh->qh_queue->q_get.qs_bytes,
                                memory_order_acquire);
    st = check_positions(qh, c->qc_pos, read);
    if (st != HC_OK)
        return st;
    c->qc_other = read;
    return c->qc_pos - read <= ring - rec ? HC_OK : HC_WOULD_BLOCK;
}

hc_status
hc_queue_put_next(hc_queue_handle *qh, const void *data, size_t len)
{
    hc_queue_cursor *c = &qh->qh_cursor[HC_QUEUE_PUT];
    record_header h;
    uint64_t rec;
    hc_status st;

    if (len > hc_queue_max_message(qh->qh_ring_size))
        return too_large(qh, len);
    rec = record_size(len);
    st = put_room(qh, c, rec);
    if (st != HC_OK)
        return st;
    h.rh_len = (uint32_t) len;
    h.rh_check = (uint32_t) len ^ RECORD_CHECK;
    ring_write(qh, c->qc_pos, &h, sizeof(h));
    HC_INJECT("queue.put.header_written");
    ring_write(qh, c->qc_pos + sizeof(h), data, len);
    c->qc_pos += rec;
    c->qc_messages++;
    return HC_OK;
}

void
hc_queue_put_end(hc_queue_handle *qh)
{
    side_publish(qh, HC_QUEUE_PUT);
}

/* ---------------------------------------------------------------------- */
/* Consuming                                                              */
/* ---------------------------------------------------------------------- */

hc_status
hc_queue_get_begin(hc_queue_handle *qh, uint64_t deadline)
{
    return side_enter(qh, HC_QUEUE_GET, deadline);
}

/*
 * Load bytes_written into the cursor's cache.  acquire: pairs with the
 * release store in side_publish(), so the records it covers are visible.
 */
static hc_status
get_refresh(hc_queue_handle *qh, hc_queue_cursor *c)
{
    uint64_t written = atomic_load_explicit(&qh->qh_queue->q_put.qs_bytes,
                                            memory_order_acquire);
    hc_status st = check_positions(qh, written, c->qc_pos);

    if (st == HC_OK)
        c->qc_other = written;
    return st;
}

/* The queue is empty: closed (for good) or just empty for now? */
static hc_status
get_empty(hc_queue_handle *qh, hc_queue_cursor *c)
{
    hc_status st;

    /* seq_cst: pairs with the store in hc_queue_close() */
    if (!atomic_load_explicit(&qh->qh_queue->q_closed, memory_order_seq_cst))
        return HC_WOULD_BLOCK;
    /* Closed: anything published before the close is visible now. */
    st = get_refresh(qh, c);
    if (st != HC_OK)
        return st;
    return c->qc_other == c->qc_pos ? HC_CLOSED : HC_OK;
}

hc_status
hc_queue_get_next(hc_queue_handle *qh, size_t *len)
{
    hc_queue_cursor *c = &qh->qh_cursor[HC_QUEUE_GET];
    uint64_t avail;
    record_header h;
    hc_status st;

    /* The cache is a lower bound of bytes_written; reload when used up. */
    if (c->qc_other <= c->qc_pos) {
        st = get_refresh(qh, c);
        if (st == HC_OK && c->qc_other == c->qc_pos)
            st = get_empty(qh, c);
        if (st != HC_OK)
            return st;
    }
    avail = c->qc_other - c->qc_pos;
    /* A local copy: the checks below and the use of rh_len see one value. */
    ring_read(qh, c->qc_pos, &h, sizeof(h));
    if (avail < sizeof(h) || h.rh_check != (h.rh_len ^ RECORD_CHECK)
        || h.rh_len > hc_queue_max_message(qh->qh_ring_size)
        || record_size(h.rh_len) > avail) {
        hc_set_detail("the message header at byte %llu of the ring says "
                      "%u bytes (check word %#x); %llu bytes are published",
                      (unsigned long long) ring_offset(qh, c->qc_pos),
                      (unsigned) h.rh_len, (unsigned) h.rh_check,
                      (unsigned long long) avail);
        return HC_CORRUPT;
    }
    c->qc_peek = h.rh_len;
    *len = h.rh_len;
    return HC_OK;
}

void
hc_queue_get_copy(hc_queue_handle *qh, void *dst)
{
    hc_queue_cursor *c = &qh->qh_cursor[HC_QUEUE_GET];

    ring_read(qh, c->qc_pos + HC_QUEUE_RECORD_HEADER, dst, c->qc_peek);
    HC_INJECT("queue.get.copied");
    c->qc_pos += record_size(c->qc_peek);
    c->qc_messages++;
}

void
hc_queue_get_end(hc_queue_handle *qh)
{
    side_publish(qh, HC_QUEUE_GET);
}

/* ---------------------------------------------------------------------- */
/* Waiting                                                                */
/* ---------------------------------------------------------------------- */

/*
 * Can `side` go on?  HC_OK: a message is there (get) or rec bytes are
 * free (put); HC_CLOSED; else HC_WOULD_BLOCK.  Inconsistent positions
 * count as "go on", so that the caller's next call reports HC_CORRUPT.
 * The seq_cst loads are the second half of the Dekker pair (wake_side()).
 */
static hc_status
side_state(hc_queue_handle *qh, hc_queue_side_id side, uint64_t rec)
{
    hc_queue *q = qh->qh_queue;
    bool closed = atomic_load_explicit(&q->q_closed, memory_order_seq_cst);
    uint64_t read = atomic_load_explicit(&q->q_get.qs_bytes,
                                         memory_order_seq_cst);
    uint64_t written = atomic_load_explicit(&q->q_put.qs_bytes,
                                            memory_order_seq_cst);

    if (side == HC_QUEUE_PUT && closed)
        return HC_CLOSED;
    if (!positions_ok(qh, written, read))
        return HC_OK;
    if (side == HC_QUEUE_GET ? written != read
                             : written - read <= qh->qh_ring_size - rec)
        return HC_OK;
    return closed ? HC_CLOSED : HC_WOULD_BLOCK;
}

/* Count ourselves as a sleeper of `side`; true if our endpoint counts us. */
static bool
announce_wait(hc_queue_handle *qh, hc_queue_side_id side)
{
    _Atomic uint64_t *ep;
    uint64_t word;
    uint32_t me;

    /* First half of the Dekker pair with wake_side(); see there. */
    atomic_fetch_add_explicit(&side_of(qh, side)->qs_waiters, 1,
                              memory_order_seq_cst);
    /*
     * Then our endpoint's count, after the waiter count: a scan that finds
     * us dead takes back only what the endpoint says, never more than we
     * added (at worst one stale waiter, which costs a needless wake-up).
     */
    if (hc_slot_self(qh->qh_seg, &me) != HC_OK)
        return false;
    ep = &qh->qh_queue->q_endpoints[me & HC_TOKEN_INDEX_MASK];
    word = atomic_load_explicit(ep, memory_order_relaxed);
    if (EP_TOKEN(word) != me
        || (word & EP_WAIT_MASK(side)) == EP_WAIT_MASK(side))
        return false;
    atomic_fetch_add_explicit(ep, EP_WAIT_ONE(side), memory_order_relaxed);
    return true;
}

static void
cancel_wait(hc_queue_handle *qh, hc_queue_side_id side, bool counted)
{
    uint32_t me;

    /* The reverse order of announce_wait(), for the same reason. */
    if (counted && hc_slot_self(qh->qh_seg, &me) == HC_OK)
        atomic_fetch_sub_explicit(
            &qh->qh_queue->q_endpoints[me & HC_TOKEN_INDEX_MASK],
            EP_WAIT_ONE(side), memory_order_relaxed);
    sub_waiters(side_of(qh, side), 1);
}

/*
 * Sleep until woken or one probe step passes.  HC_OK when woken or when
 * the state changed before we slept; HC_TIMEOUT at the end of the step.
 */
static hc_status
sleep_step(hc_queue_handle *qh, hc_queue_side_id side, uint64_t rec,
           uint64_t deadline)
{
    hc_queue_side *s = side_of(qh, side);
    bool counted = announce_wait(qh, side);
    uint32_t seq;
    hc_status st;

    /*
     * Pairs with the release increment in wake_side() (and close): read
     * before our last look at the state, so a wake-up after that look
     * changes the word and the futex wait returns at once.
     */
    seq = atomic_load_explicit(&s->qs_wake_seq, memory_order_acquire);
    st = side_state(qh, side, rec);
    if (st == HC_WOULD_BLOCK)
        st = hc_futex_wait(&s->qs_wake_seq, seq,
                           hc_deadline_min_step(deadline, HC_QUEUE_PROBE_NS));
    else
        st = HC_OK;
    cancel_wait(qh, side, counted);
    return st;
}

/* True unless every process that joined `side` is dead and none lives. */
static bool
side_alive(hc_queue_handle *qh, hc_queue_side_id side)
{
    bool live, dead;

    scan_endpoints(qh, side, SCAN_PROBE, &live, &dead);
    return live || !dead;
}

static hc_status
wait_side(hc_queue_handle *qh, hc_queue_side_id side, uint64_t rec,
          uint64_t deadline)
{
    hc_queue_side_id peer = side == HC_QUEUE_PUT ? HC_QUEUE_GET
                                                 : HC_QUEUE_PUT;
    hc_status st;
    int spins;

    for (spins = 0; spins < SPIN_LIMIT; spins++) {
        st = side_state(qh, side, rec);
        if (st != HC_WOULD_BLOCK)
            return st;
        hc_cpu_relax();
    }
    for (;;) {
        st = side_state(qh, side, rec);
        if (st != HC_WOULD_BLOCK)
            return st;
        st = sleep_step(qh, side, rec, deadline);
        if (st == HC_TIMEOUT) {
            if (!side_alive(qh, peer)) {
                hc_set_detail("every %s that used the queue died, and no "
                              "other is attached", side_name(peer));
                return HC_PEER_DIED;
            }
            if (hc_now_ns() >= deadline)
                return HC_TIMEOUT;
        }
        else if (st != HC_OK)
            return st;
    }
}

hc_status
hc_queue_wait_put(hc_queue_handle *qh, size_t len, uint64_t deadline)
{
    if (len > hc_queue_max_message(qh->qh_ring_size))
        return too_large(qh, len);
    return wait_side(qh, HC_QUEUE_PUT, record_size(len), deadline);
}

hc_status
hc_queue_wait_get(hc_queue_handle *qh, uint64_t deadline)
{
    return wait_side(qh, HC_QUEUE_GET, 0, deadline);
}

/* ---------------------------------------------------------------------- */
/* One message at a time, closing, counting                               */
/* ---------------------------------------------------------------------- */

hc_status
hc_queue_send(hc_queue_handle *qh, const void *data, size_t len,
              uint64_t deadline)
{
    hc_status st;

    for (;;) {
        st = hc_queue_put_begin(qh, deadline);
        if (st != HC_OK)
            return st;
        st = hc_queue_put_next(qh, data, len);
        hc_queue_put_end(qh);
        if (st != HC_WOULD_BLOCK)
            return st;
        st = hc_queue_wait_put(qh, len, deadline);
        if (st != HC_OK)
            return st;
    }
}

hc_status
hc_queue_recv(hc_queue_handle *qh, void *buf, size_t cap, size_t *len,
              uint64_t deadline)
{
    hc_status st;

    for (;;) {
        st = hc_queue_get_begin(qh, deadline);
        if (st != HC_OK)
            return st;
        st = hc_queue_get_next(qh, len);
        if (st == HC_OK && *len > cap)
            st = HC_TOO_LARGE;  /* left in the queue */
        else if (st == HC_OK)
            hc_queue_get_copy(qh, buf);
        hc_queue_get_end(qh);
        if (st != HC_WOULD_BLOCK)
            return st;
        st = hc_queue_wait_get(qh, deadline);
        if (st != HC_OK)
            return st;
    }
}

void
hc_queue_close(hc_queue_handle *qh)
{
    hc_queue *q = qh->qh_queue;
    int side;

    /* seq_cst: pairs with the loads in put_begin, get_empty, side_state */
    atomic_store_explicit(&q->q_closed, 1, memory_order_seq_cst);
    for (side = HC_QUEUE_PUT; side <= HC_QUEUE_GET; side++) {
        hc_queue_side *s = side_of(qh, side);

        /* Pairs with the acquire load of qs_wake_seq in sleep_step(). */
        atomic_fetch_add_explicit(&s->qs_wake_seq, 1, memory_order_release);
        hc_futex_wake(&s->qs_wake_seq, -1);
    }
}

bool
hc_queue_is_closed(const hc_queue_handle *qh)
{
    return atomic_load_explicit(&qh->qh_queue->q_closed,
                                memory_order_seq_cst) != 0;
}

void
hc_queue_counts(const hc_queue_handle *qh, uint64_t *messages,
                uint64_t *bytes)
{
    hc_queue *q = qh->qh_queue;
    /* relaxed, consumers first: both only grow, so written >= read */
    uint64_t msgs_read = atomic_load_explicit(&q->q_get.qs_messages,
                                              memory_order_relaxed);
    uint64_t read = atomic_load_explicit(&q->q_get.qs_bytes,
                                         memory_order_relaxed);
    uint64_t written = atomic_load_explicit(&q->q_put.qs_bytes,
                                            memory_order_relaxed);
    int64_t msgs = (int64_t) (atomic_load_explicit(&q->q_put.qs_messages,
                                                   memory_order_relaxed)
                              - msgs_read);
    int64_t most;

    if (!positions_ok(qh, written, read) || written == read) {
        *messages = *bytes = 0;
        return;
    }
    *bytes = written - read;
    /*
     * A process killed between its two stores (count, then position)
     * skews the count for good: clamp it to what the bytes allow.
     */
    most = (int64_t) (*bytes / HC_QUEUE_RECORD_HEADER);
    *messages = (uint64_t) (msgs < 1 ? 1 : msgs > most ? most : msgs);
}
