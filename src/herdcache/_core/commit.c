/*-------------------------------------------------------------------------
 *
 * commit.c
 *	  Snapshots, retained versions and atomic batches (see commit.h).
 *
 * Sections: the counter and the watermark; horizons (shared, and this
 * process's list of open snapshots); versions under the stripe lock;
 * rebuild hooks; batches.
 *
 * Notes on synchronization (docs/barriers.md, pairs 16 to 19)
 *
 * ch_csn: drawn with a seq_cst fetch_add while the writer's stripe epoch
 * is open (after epoch_enter()'s release fence); a snapshot loads it
 * seq_cst.  A snapshot that counts a csn therefore sees that stripe's
 * epoch odd, or the item linked (pair 16).
 * Horizons against retention: the reader stores hz_deadline, hz_csn, the
 * slot count (first snapshot only) and
 * its bit (seq_cst), then reloads ch_csn (seq_cst) and retries if it
 * moved; the writer draws (seq_cst), then loads the bits and horizons
 * (seq_cst).  One of them sees the other: the writer keeps the version,
 * or the snapshot starts after the writer's csn and never needs it
 * (pair 17, a Dekker pair).
 * cm_too_old: raised (release CAS) inside an odd epoch, before the free
 * it announces; a reader loads it (acquire) after its read validated, so
 * a read that could have missed a freed version sees the raise (pair 18).
 * Batch records: written under all the batch's stripe locks; read by a
 * rebuild under one of them, which it took from the dead writer (the
 * kernel's release of the robust lock orders the dead writer's stores) or
 * holds itself (pair 19).  Version flags (it_version): written relaxed
 * inside an odd epoch; lock-free readers load them relaxed and are
 * validated by the epoch like every other field of the item.
 *
 *-------------------------------------------------------------------------
 */
#include "commit.h"
#include "table.h"
#include "table_internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "flight.h"
#include "inject.h"
#include "slot.h"

_Static_assert(HC_COMMIT_STRIPES == HC_MAX_STRIPES,
               "one retained count per stripe");

/* How long a thread trusts that a horizon's process was alive. */
#define LIVENESS_RECHECK_NS (UINT64_C(100) * 1000 * 1000)
#define MAX_CHAIN 4096
#define BIT_WORDS (HC_MAX_SLOTS / 64)

static hc_commit_area *
area(hc_cache *c)
{
    return &c->ca_header->ch_commit;
}

/* ---------------------------------------------------------------------- */
/* The counter and the watermark                                          */
/* ---------------------------------------------------------------------- */

uint64_t
hc_cache_csn(hc_cache *c)
{
    /* seq_cst: the snapshot's side of pairs 16 and 17 */
    return atomic_load_explicit(&c->ca_header->ch_csn, memory_order_seq_cst);
}

uint64_t
hc_commit_draw(hc_cache *c)
{
    /* seq_cst: after epoch_enter()'s release fence (pair 16), and before
     * the horizon scan that decides retention (pair 17). */
    return atomic_fetch_add_explicit(&c->ca_header->ch_csn, 1,
                                     memory_order_seq_cst) + 1;
}

/* Snapshots below csn below may have lost a version: they are too old. */
static void
raise_too_old(hc_cache *c, uint64_t below, hc_too_old_why why)
{
    hc_commit_area *a = area(c);
    uint64_t cur = atomic_load_explicit(&a->cm_too_old, memory_order_relaxed);

    /* release: pair 18 (the epoch also orders it before the free) */
    while (cur < below
           && !atomic_compare_exchange_weak_explicit(&a->cm_too_old, &cur,
                                                     below,
                                                     memory_order_release,
                                                     memory_order_relaxed))
        ;
    if (cur < below)
        atomic_store_explicit(&a->cm_too_old_why, why, memory_order_relaxed);
}

static const char *
too_old_cause(uint32_t why)
{
    switch (why) {
    case HC_TOO_OLD_MEMORY:
        return "the versions kept for open snapshots reached 1/4 of the "
               "cache's memory";
    case HC_TOO_OLD_EVICTED:
        return "eviction took a version it needed";
    case HC_TOO_OLD_REBUILT:
        return "a crashed writer's stripe was rebuilt without its old "
               "versions";
    default:
        return "a version it needed is gone";
    }
}

hc_status
hc_snapshot_check(hc_cache *c, uint64_t csn, uint64_t deadline)
{
    hc_commit_area *a = area(c);

    /* acquire: pair 18 */
    if (csn < atomic_load_explicit(&a->cm_too_old, memory_order_acquire)) {
        hc_set_detail("snapshot at csn %llu: %s",
                      (unsigned long long) csn,
                      too_old_cause(atomic_load_explicit(
                          &a->cm_too_old_why, memory_order_relaxed)));
        return HC_TOO_OLD;
    }
    if (deadline != HC_FOREVER && hc_now_ns() > deadline) {
        hc_set_detail("snapshot at csn %llu is older than max_snapshot_age",
                      (unsigned long long) csn);
        return HC_TOO_OLD;
    }
    return HC_OK;
}

/* ---------------------------------------------------------------------- */
/* Horizons                                                               */
/* ---------------------------------------------------------------------- */

/* What this thread last learned of a horizon's process. */
typedef struct liveness_memo {
    const hc_segment *lm_seg;
    uint32_t lm_slot, lm_token;
    uint64_t lm_checked;
    bool lm_alive;
} liveness_memo;

static _Thread_local liveness_memo memo[8];

/*
 * Is the process that registered a horizon alive?  A probe of its slot
 * lock (a system call), remembered per thread: a dead one for good, a
 * live one for LIVENESS_RECHECK_NS.
 */
static bool
horizon_alive(hc_cache *c, uint32_t slot, uint32_t token, uint64_t now)
{
    liveness_memo *m, *oldest = &memo[0];
    int i;

    for (i = 0; i < 8; i++) {
        m = &memo[i];
        if (m->lm_seg == c->ca_seg && m->lm_slot == slot
            && m->lm_token == token && m->lm_checked) {
            if (!m->lm_alive || now - m->lm_checked < LIVENESS_RECHECK_NS)
                return m->lm_alive;
            oldest = m;
            break;
        }
        if (m->lm_checked < oldest->lm_checked)
            oldest = m;
    }
    oldest->lm_seg = c->ca_seg;
    oldest->lm_slot = slot;
    oldest->lm_token = token;
    oldest->lm_checked = now ? now : 1;
    oldest->lm_alive = hc_slot_token_alive(c->ca_seg, token);
    return oldest->lm_alive;
}

/*
 * The oldest csn a live snapshot may read at (UINT64_MAX: none).  Skips
 * horizons past their deadline, below the watermark, or of dead processes.
 */
static uint64_t
xmin(hc_cache *c, uint64_t expiry_now)
{
    hc_commit_area *a = area(c);
    uint64_t too_old = atomic_load_explicit(&a->cm_too_old,
                                            memory_order_relaxed);
    uint64_t min = UINT64_MAX;
    uint32_t wi;

    uint64_t now;

    (void) expiry_now;  /* deadlines are real time: clock.advance() is local */
    /* seq_cst: pair 17; the common case, no snapshot anywhere, in one load */
    if (atomic_load_explicit(&a->cm_horizon_slots, memory_order_seq_cst) == 0)
        return UINT64_MAX;
    now = hc_now_ns();
    for (wi = 0; wi < BIT_WORDS; wi++) {
        /* seq_cst: the writer's side of pair 17 */
        uint64_t bits = atomic_load_explicit(&a->cm_horizon_bits[wi],
                                             memory_order_seq_cst);

        while (bits != 0) {
            uint32_t i = wi * 64 + (uint32_t) __builtin_ctzll(bits);
            hc_horizon *hz = &a->cm_horizons[i];
            uint64_t h = atomic_load_explicit(&hz->hz_csn,
                                              memory_order_seq_cst);

            bits &= bits - 1;
            if (h-- == 0 || h >= min || h < too_old
                || now > atomic_load_explicit(&hz->hz_deadline,
                                              memory_order_seq_cst))
                continue;
            if (horizon_alive(c, i, atomic_load_explicit(
                                  &hz->hz_token, memory_order_relaxed), now))
                min = h;
        }
    }
    return min;
}

/* This process's open snapshots of one segment handle. */
typedef struct local_snapshots {
    hc_segment *ls_seg;
    uint32_t ls_token;          /* a fork changes it: the list restarts */
    uint64_t *ls_csns;
    size_t ls_n, ls_cap;
    uint64_t ls_deadline;       /* the latest of the open ones */
    bool ls_counted;            /* this slot is in cm_horizon_slots */
} local_snapshots;

#define MAX_HANDLES 16
static pthread_mutex_t local_mutex = PTHREAD_MUTEX_INITIALIZER;
static local_snapshots locals[MAX_HANDLES];
/* One batch at a time per process: the record is the process slot's. */
static pthread_mutex_t batch_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/*
 * fork() while another thread holds one of these leaves it held in the
 * child, whose copy no thread would unlock: the child starts them afresh.
 * (What they guard is this process's slot's, and a child takes a new
 * slot, so nothing it guarded carries over.  Holding them across the
 * fork instead would order them against segment.c's fork guard.)
 */
static void
fork_child(void)
{
    pthread_mutex_init(&batch_mutex, NULL);
    pthread_mutex_init(&local_mutex, NULL);
}

static void
register_atfork(void)
{
    (void) pthread_atfork(NULL, NULL, fork_child);
}

static local_snapshots *
local_for(hc_segment *seg, uint32_t token)
{
    local_snapshots *free_one = NULL;
    int i;

    for (i = 0; i < MAX_HANDLES; i++) {
        if (locals[i].ls_seg == seg) {
            if (locals[i].ls_token != token) {  /* forked: a new slot */
                locals[i].ls_n = 0;
                locals[i].ls_token = token;
                locals[i].ls_deadline = 0;
                locals[i].ls_counted = false;
            }
            return &locals[i];
        }
        if (free_one == NULL && (locals[i].ls_seg == NULL
                                 || locals[i].ls_n == 0))
            free_one = &locals[i];
    }
    if (free_one != NULL) {
        free_one->ls_seg = seg;
        free_one->ls_token = token;
        free_one->ls_n = 0;
        free_one->ls_deadline = 0;
        free_one->ls_counted = false;
    }
    return free_one;
}

/* Room for one more snapshot in the list (false: out of memory). */
static bool
local_room(local_snapshots *ls)
{
    size_t cap = ls->ls_cap ? 2 * ls->ls_cap : 8;
    uint64_t *grown;

    if (ls->ls_n < ls->ls_cap)
        return true;
    grown = realloc(ls->ls_csns, cap * sizeof(uint64_t));
    if (grown == NULL)
        return false;           /* the list as it was stays */
    ls->ls_csns = grown;
    ls->ls_cap = cap;
    return true;
}

static uint64_t
local_min(const local_snapshots *ls)
{
    uint64_t min = UINT64_MAX;
    size_t i;

    for (i = 0; i < ls->ls_n; i++)
        if (ls->ls_csns[i] < min)
            min = ls->ls_csns[i];
    return min;
}

/* Register csn in the slot's horizon; the counter's value once stable. */
static uint64_t
register_horizon(hc_cache *c, hc_horizon *hz, uint64_t *bits, uint64_t bit,
                 uint32_t token, local_snapshots *ls, uint64_t deadline)
{
    _Atomic uint32_t *slots = &area(c)->cm_horizon_slots;
    uint64_t csn = hc_cache_csn(c), again;

    for (;; csn = again) {
        uint64_t h = ls->ls_n ? local_min(ls) : csn;

        /* seq_cst: pair 17, the snapshot's side (store, then reload) */
        atomic_store_explicit(&hz->hz_token, token, memory_order_seq_cst);
        atomic_store_explicit(&hz->hz_deadline, deadline,
                              memory_order_seq_cst);
        atomic_store_explicit(&hz->hz_csn, (h < csn ? h : csn) + 1,
                              memory_order_seq_cst);
        /* Counted on this process's first snapshot, before its bit: a
         * crash can only leave the count too high (a slower scan). */
        if (ls->ls_n == 0 && !ls->ls_counted) {
            atomic_fetch_add_explicit(slots, 1, memory_order_seq_cst);
            ls->ls_counted = true;
        }
        atomic_fetch_or_explicit((_Atomic uint64_t *) bits, bit,
                                 memory_order_seq_cst);
        again = hc_cache_csn(c);
        if (again == csn)
            return csn;
    }
}

hc_status
hc_snapshot_open(hc_cache *c, uint64_t max_age_ns, uint64_t *csn,
                 uint64_t *deadline)
{
    hc_commit_area *a = area(c);
    uint32_t token, slot;
    local_snapshots *ls;
    hc_status st = hc_slot_self(c->ca_seg, &token);

    if (st != HC_OK)
        return st;
    slot = token & HC_TOKEN_INDEX_MASK;
    pthread_once(&atfork_once, register_atfork);
    /* Real time, as xmin() judges it (the test clock's skew is local). */
    *deadline = max_age_ns ? hc_now_ns() + max_age_ns : HC_FOREVER;
    pthread_mutex_lock(&local_mutex);
    ls = local_for(c->ca_seg, token);
    if (ls == NULL || !local_room(ls)) {
        pthread_mutex_unlock(&local_mutex);
        hc_set_detail(ls == NULL ? "snapshots are open on more than %d "
                                   "cache handles in this process"
                                 : "no memory for one more snapshot (of %d)",
                      ls == NULL ? MAX_HANDLES : (int) ls->ls_n);
        return HC_SYSTEM;
    }
    if (*deadline > ls->ls_deadline)
        ls->ls_deadline = *deadline;
    *csn = register_horizon(c, &a->cm_horizons[slot],
                            (uint64_t *) &a->cm_horizon_bits[slot / 64],
                            UINT64_C(1) << (slot % 64), token, ls,
                            ls->ls_deadline);
    ls->ls_csns[ls->ls_n++] = *csn;
    pthread_mutex_unlock(&local_mutex);
    return HC_OK;
}

void
hc_snapshot_close(hc_cache *c, uint64_t csn)
{
    hc_commit_area *a = area(c);
    uint32_t token, slot;
    local_snapshots *ls;
    size_t i;

    if (hc_slot_self(c->ca_seg, &token) != HC_OK)
        return;
    slot = token & HC_TOKEN_INDEX_MASK;
    pthread_mutex_lock(&local_mutex);
    ls = local_for(c->ca_seg, token);
    for (i = 0; ls != NULL && i < ls->ls_n; i++)
        if (ls->ls_csns[i] == csn) {
            ls->ls_csns[i] = ls->ls_csns[--ls->ls_n];
            break;
        }
    /* release: raising or clearing a horizon only frees versions that
     * no snapshot of this process needs any more */
    if (ls == NULL || ls->ls_n == 0) {
        atomic_store_explicit(&a->cm_horizons[slot].hz_csn, 0,
                              memory_order_release);
        atomic_fetch_and_explicit(&a->cm_horizon_bits[slot / 64],
                                  ~(UINT64_C(1) << (slot % 64)),
                                  memory_order_release);
        if (ls != NULL && ls->ls_counted) {     /* after the bit: see open */
            atomic_fetch_sub_explicit(&a->cm_horizon_slots, 1,
                                      memory_order_release);
            ls->ls_counted = false;
        }
        if (ls != NULL)
            ls->ls_deadline = 0;
    }
    else
        atomic_store_explicit(&a->cm_horizons[slot].hz_csn,
                              local_min(ls) + 1, memory_order_release);
    pthread_mutex_unlock(&local_mutex);
}

/* ---------------------------------------------------------------------- */
/* Versions (under the stripe lock)                                       */
/* ---------------------------------------------------------------------- */

static uint8_t
flags_of(const hc_item *it)
{
    return hc_version_flags(&it->it_version);
}

/* Does the stripe's retained count include it? */
static bool
counted(const hc_item *it)
{
    return it->it_format == HC_FORMAT_TOMBSTONE
        || (flags_of(it) & (HC_VERSION_RETAINED | HC_VERSION_DEAD));
}

static void
count_units(hc_writer *w, const hc_item *it, bool add)
{
    _Atomic uint64_t *n = &area(w->w_cache)->cm_retained[w->w_si];
    uint64_t cur = atomic_load_explicit(n, memory_order_relaxed);
    uint64_t units = hc_item_units(it);

    /* relaxed: written under the stripe lock, read for a share */
    atomic_store_explicit(n, add ? cur + units
                                 : cur > units ? cur - units : 0,
                          memory_order_relaxed);
}

static uint64_t
stripe_retained(hc_writer *w)
{
    return atomic_load_explicit(&area(w->w_cache)->cm_retained[w->w_si],
                                memory_order_relaxed);
}

static void
set_flag(hc_writer *w, hc_item *it, uint8_t flag)
{
    bool was = counted(it);

    /* relaxed, inside the odd epoch: readers validate (header notes) */
    __atomic_store_n(&it->it_version, (uint8_t) (flags_of(it) | flag),
                     __ATOMIC_RELAXED);
    if (!was)
        count_units(w, it, true);
}

/* Would keeping units more pass the share of memory versions may use? */
static bool
over_share(hc_cache *c, uint64_t units)
{
    uint64_t sum = units, total = (uint64_t) c->ca_layout.cl_nstripes
        * c->ca_layout.cl_units;
    uint32_t i;

    for (i = 0; i < c->ca_layout.cl_nstripes; i++)
        sum += atomic_load_explicit(&area(c)->cm_retained[i],
                                    memory_order_relaxed);
    return sum * HC_RETAIN_SHARE > total;
}

bool
hc_versions_published(hc_writer *w, hc_item *new_it, hc_item *old)
{
    if (new_it->it_format == HC_FORMAT_TOMBSTONE)
        count_units(w, new_it, true);
    /* A flight or error is never kept: its waiters wake when it goes,
     * and a snapshot reads what was there before it. */
    if (old == NULL || old->it_format == HC_FORMAT_FLIGHT
        || old->it_format == HC_FORMAT_ERROR
        || old->it_csn == new_it->it_csn)       /* a batch, twice a key */
        return false;
    /* A batch keeps every version it supersedes until it commits: an
     * abort (or its writer's death) must find them. */
    if (w->w_batch_csn == 0) {
        if (xmin(w->w_cache, w->w_now) >= new_it->it_csn)
            return false;
        if (over_share(w->w_cache, hc_item_units(old))) {
            raise_too_old(w->w_cache, new_it->it_csn, HC_TOO_OLD_MEMORY);
            return false;
        }
    }
    set_flag(w, old, HC_VERSION_RETAINED);
    return true;
}

/* The nearest newer live version of it's key, NULL if it is the newest. */
static hc_item *
newer_version(hc_writer *w, const hc_item *it)
{
    uint32_t link = atomic_load_explicit(hc_table_chain(w, it->it_hash),
                                         memory_order_relaxed);
    hc_item *newer = NULL;
    int steps;

    for (steps = 0; link != 0 && steps < MAX_CHAIN; steps++) {
        hc_item *v = hc_table_item_at(w, link);

        if (v == NULL || v == it)
            return newer;
        if (hc_table_same_key(v, it) && !(flags_of(v) & HC_VERSION_DEAD))
            newer = v;
        link = atomic_load_explicit(&v->it_next, memory_order_relaxed);
    }
    return newer;
}

/*
 * head (the newest version) goes: the versions behind it must never
 * come back, so they are flagged dead; the snapshots that needed one
 * are too old.
 */
/* The next live version of head's key behind v (NULL: none). */
static hc_item *
next_version(hc_writer *w, const hc_item *v, const hc_item *head)
{
    uint32_t link = atomic_load_explicit(&((hc_item *) v)->it_next,
                                         memory_order_relaxed);
    int steps;

    for (steps = 0; link != 0 && steps < MAX_CHAIN; steps++) {
        hc_item *next = hc_table_item_at(w, link);

        if (next == NULL)
            return NULL;
        if (hc_table_same_key(next, head)
            && !(flags_of(next) & HC_VERSION_DEAD))
            return next;
        link = atomic_load_explicit(&next->it_next, memory_order_relaxed);
    }
    return NULL;
}

static void
kill_behind(hc_writer *w, hc_item *head)
{
    uint64_t succ = head->it_csn, xm = 0;
    hc_item *v = head;

    while ((v = next_version(w, v, head)) != NULL) {
        if (xm == 0)
            xm = xmin(w->w_cache, w->w_now);
        if (xm < succ)
            raise_too_old(w->w_cache, succ, HC_TOO_OLD_EVICTED);
        set_flag(w, v, HC_VERSION_DEAD);
        succ = v->it_csn;
    }
}

/* v is its key's newest version again: no longer a retained one. */
static void
unretain(hc_writer *w, hc_item *v)
{
    if (v != NULL && (flags_of(v) & HC_VERSION_RETAINED)) {
        count_units(w, v, false);
        __atomic_store_n(&v->it_version,
                         (uint8_t) (flags_of(v) & ~HC_VERSION_RETAINED),
                         __ATOMIC_RELAXED);
        if (counted(v))
            count_units(w, v, true);    /* a tombstone stays counted */
    }
}

/* The flight head goes: the version behind it is the newest again. */
static void
promote_behind(hc_writer *w, hc_item *head)
{
    unretain(w, next_version(w, head, head));
}

void
hc_versions_removing(hc_writer *w, hc_item *it)
{
    uint8_t f = flags_of(it);
    bool plain = stripe_retained(w) == 0 && !(f & HC_VERSION_RETAINED);
    bool evicted;
    hc_item *newer;

    if (counted(it))
        count_units(w, it, false);
    /* The plain path: no version in the stripe and no snapshot anywhere
     * (one relaxed load; a stale zero is pair 17's to settle, above). */
    if ((f & HC_VERSION_DEAD)
        || (plain && atomic_load_explicit(&area(w->w_cache)->cm_horizon_slots,
                                          memory_order_relaxed) == 0))
        return;
    /* A live value going, not by a delete: eviction (or a rebuild). */
    evicted = !w->w_deleting && !(f & HC_VERSION_RETAINED)
        && it->it_format < HC_FORMAT_INTERNAL
        && !hc_table_expired(it, w->w_now, false);
    if (plain && !evicted)
        return;                 /* nothing any live snapshot could read */
    newer = newer_version(w, it);
    /*
     * A flight (or error) is never kept and reads as what is behind it:
     * it starts only over an absent, expired or refreshing value, which
     * it carries.  Its going loses no snapshot anything.
     */
    if (it->it_format == HC_FORMAT_FLIGHT || it->it_format == HC_FORMAT_ERROR) {
        if (newer == NULL)
            promote_behind(w, it);
        return;
    }
    if (newer == NULL) {
        /* The newest value itself goes: every snapshot so far may read
         * it, so all of them are too old (they never read it as absent). */
        if (evicted && xmin(w->w_cache, w->w_now) != UINT64_MAX)
            raise_too_old(w->w_cache, hc_cache_csn(w->w_cache) + 1,
                          HC_TOO_OLD_EVICTED);
        kill_behind(w, it);
    }
    else if (newer->it_csn != it->it_csn      /* a batch, twice a key */
             && xmin(w->w_cache, w->w_now) < newer->it_csn)
        raise_too_old(w->w_cache, newer->it_csn, HC_TOO_OLD_EVICTED);
}

void
hc_versions_evicted_before(hc_writer *w, uint64_t csn)
{
    /* Pair 17 with the eviction's write as the writer: a snapshot the
     * scan misses started at or after csn, when the value was gone. */
    if (xmin(w->w_cache, w->w_now) < csn)
        raise_too_old(w->w_cache, csn, HC_TOO_OLD_EVICTED);
    w->w_evicted_live = false;
}

bool
hc_versions_pinned(hc_writer *w, const hc_item *it)
{
    /* Until a batch commits, its items and the versions they supersede
     * must stay: an abort (or its writer's death) restores those. */
    const hc_item *newer;

    if (w->w_batch_csn == 0)
        return false;
    if (it->it_csn == w->w_batch_csn)
        return true;
    if (!(flags_of(it) & HC_VERSION_RETAINED))
        return false;
    newer = newer_version(w, it);
    return newer != NULL && newer->it_csn == w->w_batch_csn;
}

bool
hc_versions_sweepable(hc_writer *w, const hc_item *it)
{
    hc_item *newer;

    if (flags_of(it) & HC_VERSION_DEAD)
        return true;
    if (!counted(it) || hc_versions_pinned(w, it))
        return false;
    /* A retained version, or a tombstone heading its versions: needed
     * while a live snapshot is older than the version above it. */
    newer = newer_version(w, it);
    return xmin(w->w_cache, w->w_now)
        >= (newer != NULL ? newer->it_csn : it->it_csn);
}

bool
hc_versions_delete_keeps(hc_writer *w, uint64_t csn)
{
    return xmin(w->w_cache, w->w_now) < csn;
}

/* The link word that names it, or NULL. */
static _Atomic uint32_t *
link_of(hc_writer *w, const hc_item *it)
{
    _Atomic uint32_t *lp = hc_table_chain(w, it->it_hash);
    int steps;

    for (steps = 0; steps < MAX_CHAIN; steps++) {
        hc_item *v = hc_table_item_at(w, atomic_load_explicit(
                                          lp, memory_order_relaxed));

        if (v == NULL || v == it)
            return v == NULL ? NULL : lp;
        lp = &v->it_next;
    }
    return NULL;
}

/* Unlink and free a version (lp names it); false if the stripe is bad. */
static bool
free_version(hc_writer *w, _Atomic uint32_t *lp, hc_item *v)
{
    if (counted(v))
        count_units(w, v, false);
    return hc_table_unlink_free(w, lp) == HC_OK;
}

void
hc_versions_prune(hc_writer *w, hc_item *key)
{
    _Atomic uint32_t *lp = hc_table_chain(w, key->it_hash);
    hc_item *head = NULL;
    uint64_t succ = 0, xm = 0;
    bool behind = false, complete = false;
    int steps;

    if (w->w_batch_csn != 0 || stripe_retained(w) == 0)
        return;
    for (steps = 0; steps < MAX_CHAIN; steps++) {
        uint32_t link = atomic_load_explicit(lp, memory_order_relaxed);
        hc_item *v = hc_table_item_at(w, link);
        bool dead;

        if (v == NULL) {
            complete = link == 0;
            break;
        }
        dead = flags_of(v) & HC_VERSION_DEAD;
        if (!hc_table_same_key(v, key) || v->it_format == HC_FORMAT_FLIGHT
            || (head == NULL && !dead)) {
            if (head == NULL && !dead && hc_table_same_key(v, key))
                head = v;       /* the newest version: stays */
            succ = v == head ? v->it_csn : succ;
            lp = &v->it_next;
            continue;
        }
        if (!dead && xm == 0)
            xm = xmin(w->w_cache, w->w_now);
        if (!dead && xm < succ) {
            behind = true;      /* a live snapshot may read it */
            succ = v->it_csn;
            lp = &v->it_next;
            continue;
        }
        if (!free_version(w, lp, v))
            return;             /* lp now names the next item */
    }
    /* A tombstone with nothing behind it says nothing any more. */
    if (complete && head != NULL && !behind
        && head->it_format == HC_FORMAT_TOMBSTONE
        && (lp = link_of(w, head)) != NULL)
        (void) free_version(w, lp, head);
}

uint64_t
hc_cache_retained_bytes(hc_cache *c)
{
    uint64_t sum = 0;
    uint32_t i;

    for (i = 0; i < c->ca_layout.cl_nstripes; i++)
        sum += atomic_load_explicit(&area(c)->cm_retained[i],
                                    memory_order_relaxed);
    return sum * HC_UNIT;
}

/* ---------------------------------------------------------------------- */
/* Rebuild hooks                                                          */
/* ---------------------------------------------------------------------- */

bool
hc_commit_aborted(hc_cache *c, const hc_item *it)
{
    hc_commit_area *a = area(c);
    uint32_t wi;

    for (wi = 0; wi < BIT_WORDS; wi++) {
        /* relaxed: pair 19 (the stripe lock orders the record) */
        uint64_t bits = atomic_load_explicit(&a->cm_batch_bits[wi],
                                             memory_order_relaxed);

        while (bits != 0) {
            hc_batch_record *br = &a->cm_batches[wi * 64
                                                 + __builtin_ctzll(bits)];
            uint32_t token;

            bits &= bits - 1;
            if (atomic_load_explicit(&br->br_csn, memory_order_relaxed)
                != it->it_csn)
                continue;
            token = atomic_load_explicit(&br->br_token, memory_order_relaxed);
            return token == 0 || !hc_slot_token_alive(c->ca_seg, token);
        }
    }
    return false;
}

void
hc_versions_rebuild_begin(hc_writer *w)
{
    atomic_store_explicit(&area(w->w_cache)->cm_retained[w->w_si], 0,
                          memory_order_relaxed);
}

void
hc_versions_dropped(hc_writer *w)
{
    /* What a rebuild drops is shadowed by a newer item, whose csn is
     * drawn already: a snapshot at the counter's value needs none of it. */
    raise_too_old(w->w_cache, hc_cache_csn(w->w_cache), HC_TOO_OLD_REBUILT);
}

void
hc_versions_lost(hc_writer *w)
{
    /* The newest version itself went: every snapshot so far could read
     * it, including one at the counter's value. */
    raise_too_old(w->w_cache, hc_cache_csn(w->w_cache) + 1,
                  HC_TOO_OLD_MEMORY);
}

void
hc_versions_cleared(hc_writer *w)
{
    hc_versions_rebuild_begin(w);
    hc_versions_lost(w);
}

void
hc_versions_relinked(hc_writer *w, hc_item *it)
{
    /* Every item a rebuild keeps is the first of its key. */
    __atomic_store_n(&it->it_version,
                     (uint8_t) (flags_of(it) & ~HC_VERSION_RETAINED),
                     __ATOMIC_RELAXED);
    if (counted(it))
        count_units(w, it, true);
}

/* ---------------------------------------------------------------------- */
/* Batches                                                                */
/* ---------------------------------------------------------------------- */


static void
unlock_all(hc_writer *ws, uint64_t mask)
{
    uint32_t si;

    for (si = 0; si < HC_MAX_STRIPES; si++)
        if (mask & (UINT64_C(1) << si))
            hc_table_unlock(&ws[si]);
}

/* Lock the stripes of mask in ascending order (no deadlock). */
static hc_status
lock_all(hc_cache *c, uint64_t mask, hc_writer *ws)
{
    uint64_t held = 0;
    uint32_t si;

    for (si = 0; si < HC_MAX_STRIPES; si++) {
        hc_status st;

        if (!(mask & (UINT64_C(1) << si)))
            continue;
        st = hc_table_lock_index(c, si, &ws[si]);
        if (st != HC_OK) {
            unlock_all(ws, held);
            return st;
        }
        held |= UINT64_C(1) << si;
    }
    return HC_OK;
}

static void
record_close(hc_commit_area *a, hc_batch_record *br, uint32_t slot)
{
    atomic_store_explicit(&br->br_csn, 0, memory_order_release);
    atomic_fetch_and_explicit(&a->cm_batch_bits[slot / 64],
                              ~(UINT64_C(1) << (slot % 64)),
                              memory_order_relaxed);
}

/*
 * The slot's previous owner died inside a batch: take every stripe it
 * held (each is rebuilt on the way, dropping the batch's items) before
 * the record is used again.
 */
static hc_status
resolve_stale(hc_cache *c, hc_batch_record *br, uint32_t slot)
{
    hc_writer ws[HC_MAX_STRIPES];
    uint64_t mask;
    hc_status st;

    if (atomic_load_explicit(&br->br_csn, memory_order_relaxed) == 0)
        return HC_OK;
    /* From shared memory: only stripes that exist (a damaged mask would
     * name others). */
    mask = atomic_load_explicit(&br->br_stripes, memory_order_relaxed)
        & (c->ca_layout.cl_nstripes >= 64 ? UINT64_MAX
           : (UINT64_C(1) << c->ca_layout.cl_nstripes) - 1);
    st = lock_all(c, mask, ws);
    if (st != HC_OK)
        return st;
    record_close(area(c), br, slot);
    unlock_all(ws, mask);
    return HC_OK;
}

/* One op of a batch under its stripe's lock, rerun once after a rebuild. */
static hc_status
batch_op(hc_writer *w, const hc_write *op, uint64_t csn, uint8_t *existed)
{
    hc_write tomb;
    hc_status st = HC_OK;

    if (op->wr_format == HC_FORMAT_TOMBSTONE) {
        tomb = *op;             /* a tombstone lives until pruned */
        tomb.wr_value_len = 0;
        tomb.wr_expires = HC_FOREVER;
        tomb.wr_mode = HC_SET_ALWAYS;
        op = &tomb;
    }
    uint64_t ignored;

    /*
     * A stripe found inconsistent is not rebuilt here: a rebuild closes
     * its epoch and drops superseded versions.  The caller aborts the
     * batch instead, whose rebuilds drop the batch's items first.
     */
    w->w_batch_csn = csn;
    if (op->wr_format == HC_FORMAT_TOMBSTONE) {
        hc_item *it = hc_table_find(w, op->wr_hash, op->wr_key,
                                    op->wr_key_len, &st);

        *existed = it != NULL && hc_table_user_visible(it, w->w_now);
        if (it == NULL)
            return st == HC_CORRUPT ? st : HC_OK;   /* nothing to delete */
    }
    return hc_table_store(w, op, &ignored);
}

/*
 * Undo one op of a batch its live writer gives up: unlink the items of
 * the op's key that carry the batch's csn, and the version they
 * superseded is the newest again.  No reader saw them (the epochs stayed
 * odd), so no snapshot is too old for it.  false: a damaged chain.
 */
static bool
undo_op(hc_writer *w, const hc_write *op, uint64_t csn)
{
    hc_status st;
    hc_item *it;
    int steps;

    for (steps = 0; steps < MAX_CHAIN; steps++) {
        _Atomic uint32_t *lp;

        it = hc_table_find(w, op->wr_hash, op->wr_key, op->wr_key_len, &st);
        if (it == NULL || it->it_csn != csn)
            break;
        if ((lp = link_of(w, it)) == NULL || !free_version(w, lp, it))
            return false;
    }
    if (st == HC_CORRUPT || steps == MAX_CHAIN)
        return false;
    unretain(w, it);
    return true;
}

/*
 * Undo a batch its writer gives up: its items go, the old ones stay.  A
 * stripe whose chains the undo finds damaged (or that the batch found
 * damaged) is rebuilt instead, which drops the batch's items too (pair
 * 19) but also every retained version there, so snapshots below the
 * counter are too old.  A death during the undo leaves the same to the
 * next locker's rebuild: the record stays open until record_close().
 */
static void
abort_batch(hc_cache *c, hc_batch_record *br, const hc_write *ops, size_t n,
            hc_writer *ws, uint64_t csn, hc_status why)
{
    uint64_t mask, bad = 0;
    size_t i;
    uint32_t si;

    atomic_store_explicit(&br->br_token, 0, memory_order_relaxed);
    mask = atomic_load_explicit(&br->br_stripes, memory_order_relaxed);
    for (i = 0; i < n; i++) {
        si = hc_table_stripe_of(c, ops[i].wr_hash);
        if (why == HC_CORRUPT || ((bad >> si) & 1)
            || !undo_op(&ws[si], &ops[i], csn))
            bad |= UINT64_C(1) << si;
        HC_INJECT("commit.batch.undone");
    }
    for (si = 0; si < HC_MAX_STRIPES; si++)
        if (mask & bad & (UINT64_C(1) << si))
            hc_table_rebuild(&ws[si]);
}

static hc_status
check_ops(hc_cache *c, const hc_write *ops, size_t n, uint64_t *mask)
{
    size_t i;

    *mask = 0;
    for (i = 0; i < n; i++) {
        hc_status st;

        if (ops[i].wr_format == HC_FORMAT_TOMBSTONE)
            st = ops[i].wr_key_len == 0 || ops[i].wr_key_len > HC_KEY_MAX
                ? HC_TOO_LARGE : HC_OK;
        else if (ops[i].wr_format >= HC_FORMAT_INTERNAL
                 || ops[i].wr_mode != HC_SET_ALWAYS)
            st = HC_BAD_ARGUMENT;
        else
            st = hc_table_check_write(c, &ops[i]);
        if (st != HC_OK)
            return st;
        *mask |= UINT64_C(1) << hc_table_stripe_of(c, ops[i].wr_hash);
    }
    return HC_OK;
}

/* The batch's ops under all its locks: HC_OK once committed. */
static hc_status
run_batch(hc_cache *c, const hc_write *ops, size_t n, uint8_t *existed,
          hc_writer *ws, uint64_t csn)
{
    hc_status st = HC_OK;
    size_t i;

    for (i = 0; i < n && st == HC_OK; i++) {
        uint8_t dummy;

        st = batch_op(&ws[hc_table_stripe_of(c, ops[i].wr_hash)], &ops[i],
                      csn, existed ? &existed[i] : &dummy);
        HC_INJECT("commit.batch.stored");
    }
    return st;
}

/*
 * After the commit point, while the epochs are still odd (pair 18): the
 * versions the batch kept count toward the memory share as a set's do.
 * Past it, the snapshots below the batch are too old, and the prune
 * frees what only they needed.  (Until its commit a batch keeps them
 * all, whatever the share: an abort must find them.  The excess is at
 * most the batch's own size.)
 */
static void
prune_batch(hc_cache *c, const hc_write *ops, size_t n, hc_writer *ws,
            uint64_t csn)
{
    size_t i;

    if (over_share(c, 0))
        raise_too_old(c, csn, HC_TOO_OLD_MEMORY);

    for (i = 0; i < n; i++) {
        hc_writer *w = &ws[hc_table_stripe_of(c, ops[i].wr_hash)];
        hc_status st;
        hc_item *it;

        w->w_batch_csn = 0;
        it = hc_table_find(w, ops[i].wr_hash, ops[i].wr_key,
                           ops[i].wr_key_len, &st);
        if (it != NULL)
            hc_versions_prune(w, it);
    }
}

hc_status
hc_cache_batch(hc_cache *c, const hc_write *ops, size_t n, uint8_t *existed,
               uint64_t *csn)
{
    hc_commit_area *a = area(c);
    hc_writer ws[HC_MAX_STRIPES];
    uint32_t token, slot;
    hc_batch_record *br;
    uint64_t mask;
    hc_status st = check_ops(c, ops, n, &mask);

    if (st == HC_OK)
        st = hc_slot_self(c->ca_seg, &token);
    if (st != HC_OK || n == 0) {
        *csn = hc_cache_csn(c);
        return st;
    }
    slot = token & HC_TOKEN_INDEX_MASK;
    br = &a->cm_batches[slot];
    pthread_once(&atfork_once, register_atfork);
    pthread_mutex_lock(&batch_mutex);
    st = resolve_stale(c, br, slot);
    if (st == HC_OK)
        st = lock_all(c, mask, ws);
    if (st != HC_OK) {
        pthread_mutex_unlock(&batch_mutex);
        return st;
    }
    /* Open the record (pair 19): from the draw on, a rebuild that finds
     * this writer dead drops the batch's items. */
    atomic_store_explicit(&br->br_token, token, memory_order_relaxed);
    atomic_store_explicit(&br->br_stripes, mask, memory_order_relaxed);
    atomic_fetch_or_explicit(&a->cm_batch_bits[slot / 64],
                             UINT64_C(1) << (slot % 64), memory_order_relaxed);
    for (uint32_t si = 0; si < HC_MAX_STRIPES; si++)
        if (mask & (UINT64_C(1) << si))
            hc_table_open_epoch(&ws[si]);
    *csn = hc_commit_draw(c);
    atomic_store_explicit(&br->br_csn, *csn, memory_order_relaxed);
    HC_INJECT("commit.batch.opened");
    st = run_batch(c, ops, n, existed, ws, *csn);
    if (st != HC_OK)
        abort_batch(c, br, ops, n, ws, *csn, st);
    record_close(a, br, slot);  /* the commit point (or the abort's end) */
    HC_INJECT("commit.batch.committed");
    if (st == HC_OK)
        prune_batch(c, ops, n, ws, *csn);
    unlock_all(ws, mask);       /* closes the epochs: all of it at once */
    pthread_mutex_unlock(&batch_mutex);
    if (st == HC_OK)
        hc_cache_count_stat(c, HC_STAT_SETS, n);
    return st;
}
