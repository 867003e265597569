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

/* Field 22 of /proc/self/stat: start time in clock ticks since boot. */
static uint64_t
process_start_time(void)
{
    char buf[1024];
    unsigned long long start = 0;
    FILE *f = fopen("/proc/self/stat", "re");
    char *p;
    int field;

    if (f == NULL)
        return 0;
    if (fgets(buf, sizeof(buf), f) == NULL) {
        fclose(f);
        return 0;
    }
    fclose(f);
    /* the command name may hold spaces and ')': skip to the last ')' */
    p = strrchr(buf, ')');
    for (field = 2; p != NULL && field < 22; field++)
        p = strchr(p + 1, ' ');
    if (p != NULL)
        start = strtoull(p + 1, NULL, 10);
    return start;
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
            if (hc_ofd_lock(fd, F_OFD_SETLK, F_WRLCK, i, 1) == 0)
                return take_slot(seg, i);
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
    if (held < 0)
        return true;            /* cannot tell: never judge a live owner dead */
    /* A claim between the two loads means the old holder is gone. */
    if ((atomic_load_explicit(&slot->sl_generation, memory_order_acquire)
         & HC_TOKEN_GEN_MASK) != gen)
        return false;
    return held != 0;
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
