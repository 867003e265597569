/*-------------------------------------------------------------------------
 *
 * slot.c
 *	  Process slots and owner liveness, by fcntl record locks.
 *
 * See slot.h for the model.  The locks are open file description (OFD)
 * locks taken through a description private to the handle (sg_lock_fd):
 * the kernel releases them when the last descriptor of that description
 * closes, which happens when the process dies, however it dies.  Unlike
 * classic POSIX record locks they are not dropped when some other code in
 * the process opens and closes the same file (a backup tool, a health
 * check reading the header).  A forked child inherits the description, so
 * segment.c's fork handler closes the child's copy at once; the child
 * claims a slot of its own through a new description at its first use.
 *
 * Probes (F_OFD_GETLK) go through sg_fd, another description, so they
 * see every slot lock, this process's own included.
 *
 *-------------------------------------------------------------------------
 */
#include "slot.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <unistd.h>

/*
 * Lock (F_WRLCK/F_RDLCK), unlock (F_UNLCK) or probe (cmd F_OFD_GETLK,
 * returning 1 if another description holds a conflicting lock) a range.
 */
int
hc_ofd_lock(int fd, int cmd, short type, off_t start, off_t len)
{
    struct flock fl;

    memset(&fl, 0, sizeof(fl));
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = start;
    fl.l_len = len;
    if (fcntl(fd, cmd, &fl) < 0)
        return -1;
    return cmd == F_OFD_GETLK ? fl.l_type != F_UNLCK : 0;
}

/* The handle's private description for slot locks, opened on demand. */
static int
lock_fd(hc_segment *seg)
{
    char path[64];

    if (seg->sg_lock_fd < 0) {
        snprintf(path, sizeof(path), "/proc/self/fd/%d", seg->sg_fd);
        seg->sg_lock_fd = open(path, O_RDWR | O_CLOEXEC);
    }
    return seg->sg_lock_fd;
}

/*
 * From a /proc/PID/stat file: field 3, the state (*state, '?' if
 * unknown), and field 22, the start time in clock ticks since boot (the
 * result, 0 if unknown).
 */
static uint64_t
read_stat(const char *path, char *state)
{
    char buf[1024];
    unsigned long long start = 0;
    FILE *f = fopen(path, "re");
    char *p;
    int field;

    *state = '?';
    if (f == NULL)
        return 0;
    if (fgets(buf, sizeof(buf), f) == NULL) {
        fclose(f);
        return 0;
    }
    fclose(f);
    /* the command name may hold spaces and ')': skip to the last ')' */
    p = strrchr(buf, ')');
    if (p != NULL && p[1] == ' ')
        *state = p[2];
    for (field = 2; p != NULL && field < 22; field++)
        p = strchr(p + 1, ' ');
    if (p != NULL)
        start = strtoull(p + 1, NULL, 10);
    return start;
}

static uint64_t
process_start_time(void)
{
    char state;

    return read_stat("/proc/self/stat", &state);
}

/* Does /proc/PID/maps show a mapping of the segment's file? */
static bool
maps_segment(uint32_t pid, const hc_segment *seg)
{
    char path[64], *line = NULL;
    size_t cap = 0;
    bool found = false;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%u/maps", (unsigned) pid);
    if ((f = fopen(path, "re")) == NULL)
        return false;
    while (!found && getline(&line, &cap, f) > 0) {
        unsigned major, minor;
        unsigned long long ino;

        /* start-end perms offset major:minor inode [path] */
        found = sscanf(line, "%*s %*s %*s %x:%x %llu", &major, &minor, &ino)
                == 3
            && makedev(major, minor) == seg->sg_dev
            && (ino_t) ino == seg->sg_ino;
    }
    free(line);
    fclose(f);
    return found;
}

/*
 * The veto of slot.h, "Closed descriptors": is the process recorded in
 * slot still running, with the segment mapped?  Then its unlocked byte
 * means it lost its descriptor, not that it died.
 */
static bool
holder_running(const hc_segment *seg, hc_slot *slot)
{
    uint32_t pid = atomic_load_explicit(&slot->sl_pid, memory_order_relaxed);
    uint64_t start = atomic_load_explicit(&slot->sl_start_time,
                                          memory_order_relaxed);
    char path[64], state;

    if (pid == 0 || start == 0)
        return false;           /* released cleanly, or nothing to go by */
    snprintf(path, sizeof(path), "/proc/%u/stat", (unsigned) pid);
    if (read_stat(path, &state) != start || state == 'Z' || state == 'X'
        || state == 'x')
        return false;           /* gone, reused, or dead and not reaped */
    return maps_segment(pid, seg);
}

static uint32_t
make_token(uint32_t generation, uint32_t index)
{
    return ((generation & HC_TOKEN_GEN_MASK) << HC_SLOT_INDEX_BITS) | index;
}

static hc_status
take_slot(hc_segment *seg, uint32_t index)
{
    hc_slot *slot = &seg->sg_header->sh_slots[index];
    uint32_t gen;

    gen = atomic_load_explicit(&slot->sl_generation, memory_order_relaxed) + 1;
    if ((gen & HC_TOKEN_GEN_MASK) == 0)
        gen++;                  /* tokens are never 0 */
    atomic_store_explicit(&slot->sl_pid, (uint32_t) getpid(),
                          memory_order_relaxed);
    atomic_store_explicit(&slot->sl_start_time, process_start_time(),
                          memory_order_relaxed);
    /* Pairs with the acquire loads in hc_slot_token_alive(). */
    atomic_store_explicit(&slot->sl_generation, gen, memory_order_release);

    seg->sg_slot_index = index;
    seg->sg_token = make_token(gen, index);
    /* Pairs with the acquire load in hc_slot_self(): token before epoch. */
    atomic_store_explicit(&seg->sg_fork_epoch, hc_fork_epoch(),
                          memory_order_release);
    return HC_OK;
}

static hc_status
claim_guarded(hc_segment *seg)
{
    /* Start at a per-process place, so generations wear evenly. */
    uint32_t first = ((uint32_t) getpid() * UINT32_C(2654435761)) % HC_MAX_SLOTS;
    int pass, fd = lock_fd(seg);
    uint32_t n;

    if (fd < 0)
        return HC_SYSTEM;
    /*
     * First pass: slots released cleanly (pid 0), so that a live process
     * is never probed; second pass: any slot whose holder is dead.  The
     * kernel arbitrates every race through F_OFD_SETLK.
     */
    for (pass = 0; pass < 2; pass++) {
        for (n = 0; n < HC_MAX_SLOTS; n++) {
            uint32_t i = (first + n) % HC_MAX_SLOTS;
            hc_slot *slot = &seg->sg_header->sh_slots[i];
            uint32_t pid = atomic_load_explicit(&slot->sl_pid,
                                                memory_order_relaxed);

            if (pass == 0 && pid != 0)
                continue;
            if (hc_ofd_lock(fd, F_OFD_SETLK, F_WRLCK, i, 1) == 0) {
                if (pass == 0 || !holder_running(seg, slot))
                    return take_slot(seg, i);
                /* Its process lives, without its descriptor: not free. */
                hc_ofd_lock(fd, F_OFD_SETLK, F_UNLCK, i, 1);
                continue;
            }
            if (errno != EACCES && errno != EAGAIN)
                return HC_SYSTEM;
        }
    }
    hc_set_detail("all %d process slots are held by live processes",
                  HC_MAX_SLOTS);
    return HC_SLOTS_FULL;
}

hc_status
hc_slot_claim(hc_segment *seg)
{
    hc_status st;

    /*
     * No fork() while the lock description is opened, locked and recorded
     * in sg_lock_fd: a child forked in between would keep a copy of it,
     * and with it our slot "alive" after we die (segment.c, note (e)).
     */
    hc_fork_guard_enter();
    st = claim_guarded(seg);
    hc_fork_guard_leave();
    return st;
}

void
hc_slot_release(hc_segment *seg)
{
    hc_slot *slot;

    if (atomic_load_explicit(&seg->sg_fork_epoch, memory_order_acquire)
        != hc_fork_epoch())
        return;                 /* a forked child that never claimed */
    slot = &seg->sg_header->sh_slots[seg->sg_slot_index];
    atomic_store_explicit(&slot->sl_pid, 0, memory_order_relaxed);
    hc_ofd_lock(seg->sg_lock_fd, F_OFD_SETLK, F_UNLCK, seg->sg_slot_index, 1);
    atomic_store_explicit(&seg->sg_fork_epoch, 0, memory_order_relaxed);
}

hc_status
hc_slot_self(hc_segment *seg, uint32_t *token)
{
    hc_status st = HC_OK;

    /* relaxed: a flag set once; hc_slot_verify() said why (its detail) */
    if (atomic_load_explicit(&seg->sg_liveness_lost, memory_order_relaxed)) {
        hc_set_detail("this process closed the descriptor that kept its "
                      "slot of %s alive", seg->sg_path[0] ? seg->sg_path
                      : "the anonymous segment");
        return HC_LIVENESS_LOST;
    }
    /* Pairs with the release store of the epoch in take_slot(). */
    if (atomic_load_explicit(&seg->sg_fork_epoch, memory_order_acquire)
        == hc_fork_epoch()) {
        *token = seg->sg_token;
        return HC_OK;
    }
    /* First use in a forked child: the parent's lock did not come along. */
    pthread_mutex_lock(&seg->sg_mutex);
    if (atomic_load_explicit(&seg->sg_fork_epoch, memory_order_acquire)
        != hc_fork_epoch())
        st = hc_slot_claim(seg);
    pthread_mutex_unlock(&seg->sg_mutex);
    if (st == HC_OK)
        *token = seg->sg_token;
    return st;
}

hc_status
hc_slot_self_index(hc_segment *seg, uint32_t *index)
{
    uint32_t token;
    hc_status st = hc_slot_self(seg, &token);

    if (st == HC_OK)
        *index = token & HC_TOKEN_INDEX_MASK;
    return st;
}

bool
hc_slot_token_alive(hc_segment *seg, uint32_t token)
{
    uint32_t index = token & HC_TOKEN_INDEX_MASK;
    uint32_t gen = token >> HC_SLOT_INDEX_BITS;
    hc_slot *slot;
    uint32_t mine;
    int held;

    if (hc_slot_self(seg, &mine) == HC_OK && mine == token)
        return true;            /* our own lock never conflicts with us */
    if (index >= HC_MAX_SLOTS)
        return false;
    slot = &seg->sg_header->sh_slots[index];
    /* Pairs with the release store in take_slot(). */
    if ((atomic_load_explicit(&slot->sl_generation, memory_order_acquire)
         & HC_TOKEN_GEN_MASK) != gen)
        return false;           /* the slot passed to another process */
    held = hc_ofd_lock(seg->sg_fd, F_OFD_GETLK, F_WRLCK, index, 1);
    if (held != 1) {
        /*
         * Before believing "unlocked" (or an error), make sure we asked
         * through a description of our own file: code that closes
         * descriptors may have closed sg_fd, or given its number to
         * another file (slot.h, "Closed descriptors").
         */
        if (hc_slot_verify(seg) != HC_OK)
            return true;        /* cannot tell; our next call fails loudly */
        held = hc_ofd_lock(seg->sg_fd, F_OFD_GETLK, F_WRLCK, index, 1);
    }
    if (held < 0)
        return true;            /* cannot tell: never judge a live owner dead */
    /* A claim between the two loads means the old holder is gone. */
    if ((atomic_load_explicit(&slot->sl_generation, memory_order_acquire)
         & HC_TOKEN_GEN_MASK) != gen)
        return false;
    if (held)
        return true;
    /* Unlocked: dead, unless it only lost its descriptor (slot.h). */
    return holder_running(seg, slot)
        && (atomic_load_explicit(&slot->sl_generation, memory_order_acquire)
            & HC_TOKEN_GEN_MASK) == gen;
}

/* Give up on our slot for good (hc_slot_verify()); detail says why. */
static hc_status
liveness_lost(hc_segment *seg, const char *why)
{
    /* relaxed: a flag; the status returned here reports it to this caller */
    atomic_store_explicit(&seg->sg_liveness_lost, 1, memory_order_relaxed);
    hc_set_detail("a descriptor herdcache holds on %s was closed by other "
                  "code, and %s", seg->sg_path[0] ? seg->sg_path
                  : "the anonymous segment", why);
    return HC_LIVENESS_LOST;
}

/* A new description of the segment's file, or -1 (see reestablish()). */
static int
reopen_file(hc_segment *seg)
{
    char proc[64];
    int fd;

    if (hc_segment_fd_is_ours(seg, seg->sg_fd)) {
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d", seg->sg_fd);
        fd = open(proc, O_RDWR | O_CLOEXEC);
    } else if (!seg->sg_anonymous)
        fd = open(seg->sg_path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    else
        return -1;              /* a memfd has no name to open again */
    if (fd >= 0 && !hc_segment_fd_is_ours(seg, fd)) {
        close(fd);              /* the name leads to another file now */
        fd = -1;
    }
    return fd;
}

/*
 * Re-open whichever of sg_fd and sg_lock_fd was closed, and take their
 * locks again: the attached byte, and our slot's byte, which must still
 * be free and our slot's generation unchanged (else another process took
 * the slot, and with it may have taken our locks: we must not go on).
 * The old numbers are left alone: they may be another file's now.
 * Caller holds seg->sg_mutex and the fork guard.
 */
static hc_status
reestablish(hc_segment *seg)
{
    hc_slot *slot = &seg->sg_header->sh_slots[seg->sg_slot_index];
    uint32_t gen = seg->sg_token >> HC_SLOT_INDEX_BITS;
    int fd;

    if (!hc_segment_fd_is_ours(seg, seg->sg_fd)) {
        fd = reopen_file(seg);
        if (fd < 0 || hc_ofd_lock(fd, F_OFD_SETLK, F_RDLCK, HC_ATTACHED_BYTE,
                                  1) < 0) {
            if (fd >= 0)
                close(fd);
            return liveness_lost(seg, "it cannot be opened again");
        }
        seg->sg_fd = fd;
    }
    if (hc_segment_fd_is_ours(seg, seg->sg_lock_fd))
        return HC_OK;
    seg->sg_lock_fd = -1;
    fd = lock_fd(seg);
    if (fd < 0 || !hc_segment_fd_is_ours(seg, fd))
        return liveness_lost(seg, "it cannot be opened again");
    if (hc_ofd_lock(fd, F_OFD_SETLK, F_WRLCK, seg->sg_slot_index, 1) < 0)
        return liveness_lost(seg, "another process holds its slot now");
    /* Pairs with the release store in take_slot(). */
    if ((atomic_load_explicit(&slot->sl_generation, memory_order_acquire)
         & HC_TOKEN_GEN_MASK) != gen) {
        hc_ofd_lock(fd, F_OFD_SETLK, F_UNLCK, seg->sg_slot_index, 1);
        return liveness_lost(seg, "another process took its slot meanwhile");
    }
    return HC_OK;
}

hc_status
hc_slot_verify(hc_segment *seg)
{
    hc_status st = HC_OK;

    if (atomic_load_explicit(&seg->sg_liveness_lost, memory_order_relaxed))
        return HC_LIVENESS_LOST;
    /* acquire: pairs with take_slot(); an unclaimed child has nothing yet */
    if (atomic_load_explicit(&seg->sg_fork_epoch, memory_order_acquire)
        != hc_fork_epoch())
        return HC_OK;
    if (hc_segment_fd_is_ours(seg, seg->sg_fd)
        && hc_segment_fd_is_ours(seg, seg->sg_lock_fd))
        return HC_OK;
    pthread_mutex_lock(&seg->sg_mutex);
    hc_fork_guard_enter();      /* no child may copy a half-made claim */
    st = reestablish(seg);
    hc_fork_guard_leave();
    pthread_mutex_unlock(&seg->sg_mutex);
    return st;
}

uint32_t
hc_slot_count_live(hc_segment *seg)
{
    uint32_t i, live = 0, mine;
    bool have_mine = hc_slot_self(seg, &mine) == HC_OK;

    for (i = 0; i < HC_MAX_SLOTS; i++) {
        hc_slot *slot = &seg->sg_header->sh_slots[i];

        if (have_mine && (mine & HC_TOKEN_INDEX_MASK) == i)
            live++;
        else if (atomic_load_explicit(&slot->sl_pid, memory_order_relaxed)
                 != 0
                 && hc_ofd_lock(seg->sg_fd, F_OFD_GETLK, F_WRLCK, i, 1) == 1)
            live++;
    }
    return live;
}

bool
hc_slot_none_attached(int fd)
{
    /* Slots, the creation byte and the attached byte (segment.c). */
    return hc_ofd_lock(fd, F_OFD_GETLK, F_WRLCK, 0, HC_MAX_SLOTS + 2) == 0;
}
