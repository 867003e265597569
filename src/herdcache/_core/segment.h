/*-------------------------------------------------------------------------
 *
 * segment.h
 *	  A shared memory segment: its header in shared memory and the
 *	  process-local handle that maps it.
 *
 * A segment is one MAP_SHARED mapping of a file: a named file under
 * /dev/shm (or a directory the caller names), which unrelated processes
 * attach by name, or an anonymous memfd, which only fork() children share.
 * It starts with a fixed header (hc_segment_header): identity and
 * validation fields, the name registry (registry.h), the process slots
 * (slot.h) and the lock that guards the registry.  Everything after the
 * header is handed out by the registry in 64-byte aligned pieces that are
 * never freed, as PostgreSQL's ShmemAlloc does.
 *
 * Shared structures hold offsets from the segment base, never pointers: a
 * named segment maps at a different address in every process.
 *
 * Notes on synchronization
 *
 * sh_magic is written last by the creator, with a release store after the
 * rest of the header; an attacher reads it with an acquire load before
 * reading anything else (pairs with the store in segment_publish()).  The
 * other identity fields (version, sizes, creator, seed, boot id) are
 * written once before sh_magic and never again, so they need no lock.
 * sh_alloc_top only grows, under sh_registry_lock; it is read without the
 * lock for statistics only.
 *
 * Every offset and length read from a segment is validated against the
 * size this process mapped (sg_size, from fstat or its own creation), never
 * against a size stored in the segment: the segment may be corrupt or
 * written by a hostile process of the same user.
 *
 *-------------------------------------------------------------------------
 */
#ifndef HC_SEGMENT_H
#define HC_SEGMENT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "hugepage.h"
#include "lock.h"
#include "status.h"

#define HC_SEGMENT_MAGIC UINT64_C(0x4843484552444331)   /* "HCHERDC1" */
#define HC_LAYOUT_VERSION 1
#define HC_MAX_SLOTS 1024           /* processes attached at once */
#define HC_SLOT_INDEX_BITS 10       /* log2(HC_MAX_SLOTS) */
#define HC_REGISTRY_CAPACITY 256    /* named structures per segment */
#define HC_STRUCT_NAME_MAX 63       /* bytes, without the NUL */
#define HC_SEGMENT_NAME_MAX 200     /* bytes; the file is "herdcache.NAME" */
#define HC_ALIGN 64                 /* every allocation, a cache line */
#define HC_CACHE_LINE 64

#define HC_FILE_PREFIX "herdcache."
/* Bytes of the file that carry OFD locks (segment.c, note (d)). */
#define HC_INIT_LOCK_BYTE HC_MAX_SLOTS
#define HC_ATTACHED_BYTE (HC_MAX_SLOTS + 1)
#define HC_DEFAULT_DIR "/dev/shm"

/* One entry of the name registry (see registry.h for the protocol). */
typedef struct hc_registry_entry {
    _Atomic uint32_t re_state;      /* HC_ENTRY_FREE or HC_ENTRY_READY */
    uint32_t re_kind;               /* hc_struct_kind */
    uint64_t re_offset;             /* from the segment base, aligned */
    uint64_t re_size;               /* bytes the caller asked for */
    char re_name[HC_STRUCT_NAME_MAX + 1];
    uint8_t re_pad[24];
} hc_registry_entry;

/*
 * One process slot (see slot.h).  Padded to a cache line so that the
 * per-process fields of different processes never share one.
 */
typedef struct hc_slot {
    _Atomic uint32_t sl_generation; /* bumped by every claim; never 0 */
    _Atomic uint32_t sl_pid;        /* 0 when released cleanly */
    _Atomic uint64_t sl_start_time; /* the process start time, clock ticks */
    uint8_t sl_pad[HC_CACHE_LINE - 16];
} hc_slot;

typedef struct hc_segment_header {
    _Atomic uint64_t sh_magic;      /* HC_SEGMENT_MAGIC, written last */
    uint32_t sh_layout_version;     /* HC_LAYOUT_VERSION */
    uint32_t sh_header_size;        /* sizeof(hc_segment_header) */
    uint64_t sh_total_size;         /* bytes of the whole segment */
    uint64_t sh_data_offset;        /* first byte the registry hands out */
    uint32_t sh_creator_pid;
    uint32_t sh_creator_uid;
    uint64_t sh_created_unix_ns;    /* wall clock, for humans only */
    uint64_t sh_hash_seed[2];       /* random key of the keyed hashes */
    char sh_boot_id[40];            /* /proc/sys/kernel/random/boot_id */
    uint32_t sh_max_slots;          /* HC_MAX_SLOTS */
    uint32_t sh_registry_capacity;  /* HC_REGISTRY_CAPACITY */
    _Atomic uint64_t sh_alloc_top;  /* next free offset; only grows */
    uint8_t sh_pad0[HC_CACHE_LINE];

    _Alignas(HC_CACHE_LINE) hc_lock sh_registry_lock;
    _Alignas(HC_CACHE_LINE) hc_registry_entry sh_registry[HC_REGISTRY_CAPACITY];
    _Alignas(HC_CACHE_LINE) hc_slot sh_slots[HC_MAX_SLOTS];
} hc_segment_header;

/* Options of create and attach; zero-initialise, then set what you need. */
typedef struct hc_segment_options {
    const char *dir;                /* NULL: HC_DEFAULT_DIR */
    unsigned mode;                  /* create: file mode; 0 means 0600 */
    bool allow_shared;              /* attach: accept group/other write */
    uint64_t attach_wait_ns;        /* attach: wait for a creator; 0: 30 s */
    hc_huge_mode huge_pages;        /* hugepage.h; "on" fails a create only */
} hc_segment_options;

/*
 * The process-local handle.  One handle exists per mapped file per process
 * (attaching a file twice returns the same handle with a higher count):
 * a second descriptor on the file, once closed, would drop this process's
 * fcntl locks on it, which are the liveness handles of slot.h.
 */
typedef struct hc_segment {
    hc_segment_header *sg_header;   /* == sg_base */
    uint8_t *sg_base;
    uint64_t sg_size;               /* bytes mapped: the trusted bound */
    int sg_fd;                      /* the mapping's description */
    int sg_lock_fd;                 /* private description for slot locks */
    bool sg_anonymous;
    bool sg_creator;                /* this handle created the file */
    bool sg_rebooted;               /* the boot id differs: times are void */
    hc_huge_got sg_huge;            /* the pages this mapping got */
    dev_t sg_dev;                   /* the file's identity, which sg_fd and */
    ino_t sg_ino;                   /* sg_lock_fd are checked against */
    char sg_path[4096];
    char sg_name[HC_SEGMENT_NAME_MAX + 1];

    /* Our process slot; re-claimed lazily in a forked child. */
    pthread_mutex_t sg_mutex;       /* guards the slot fields and refs */
    uint32_t sg_slot_index;
    uint32_t sg_token;              /* slot index + generation, see slot.h */
    _Atomic uint64_t sg_fork_epoch; /* hc_fork_epoch() when the slot was taken */
    int sg_spare_fd;                /* see hc_segment_attach(); -1 if none */
    _Atomic int sg_liveness_lost;   /* see hc_slot_verify(); never cleared */

    int sg_refs;                    /* attaches of this file by this process */
    _Atomic int sg_busy;            /* locks held + calls in flight */
    struct hc_segment *sg_next;     /* the process's list of open handles */
} hc_segment;

hc_status hc_segment_create(const char *name, uint64_t size,
                            const hc_segment_options *opts,
                            hc_segment **out);
hc_status hc_segment_attach(const char *name,
                            const hc_segment_options *opts,
                            hc_segment **out);
hc_status hc_segment_open(const char *name, uint64_t size,
                          const hc_segment_options *opts,
                          hc_segment **out, bool *created);
hc_status hc_segment_anonymous(uint64_t size, hc_huge_mode huge_pages,
                               hc_segment **out);

/*
 * Attach's checks of the open file (fstat'ed into sb): a regular file,
 * owned by this process's effective uid, writable by nobody else unless
 * opts->allow_shared.  Public so that a test can give it a file of another
 * owner without root.
 */
hc_status hc_segment_check_stat(const struct stat *sb, const char *path,
                                const hc_segment_options *opts);

/* Drop one reference; HC_BUSY (and nothing done) if locks are held. */
hc_status hc_segment_close(hc_segment *seg);
hc_status hc_segment_unlink_name(const char *name,
                                 const hc_segment_options *opts);
hc_status hc_segment_validate_name(const char *name);

/* True if no live process is attached (slot and creation locks all free). */
hc_status hc_segment_is_orphan(const char *name,
                               const hc_segment_options *opts, bool *orphan);
/*
 * Unlink the named segment if no live process is attached, atomically with
 * respect to attachers (*removed tells whether it was).  What gc() uses.
 */
hc_status hc_segment_remove_if_orphan(const char *name,
                                      const hc_segment_options *opts,
                                      bool *removed);
hc_status hc_segment_path(const char *name, const hc_segment_options *opts,
                          char *buf, size_t buflen);

/* The smallest size a segment may have (its header). */
uint64_t hc_segment_min_size(void);

/*
 * A pointer to [offset, offset + len) of the segment, or NULL when that
 * range is not wholly inside the mapping.  Every offset read from shared
 * memory goes through here (or a check like it) before it is used.
 */
static inline void *
hc_segment_ptr(const hc_segment *seg, uint64_t offset, uint64_t len)
{
    if (offset > seg->sg_size || len > seg->sg_size - offset)
        return NULL;
    return seg->sg_base + offset;
}

/* Mark a call that must not race with close(); see sg_busy. */
static inline void
hc_segment_enter(hc_segment *seg)
{
    /* relaxed: only the count matters; close() reads it under the GIL */
    atomic_fetch_add_explicit(&seg->sg_busy, 1, memory_order_relaxed);
}

static inline void
hc_segment_leave(hc_segment *seg)
{
    atomic_fetch_sub_explicit(&seg->sg_busy, 1, memory_order_relaxed);
}

/*
 * Is fd (still) an open descriptor of seg's file?  Code that closes
 * descriptors it does not own (os.closerange, daemonizers) may have closed
 * one of ours, and its number may lead to another file since.
 */
bool hc_segment_fd_is_ours(const hc_segment *seg, int fd);

/* This boot's id (/proc/sys/kernel/random/boot_id), "" if unknown. */
void hc_read_boot_id(char out[40]);

/* Incremented in every forked child (pthread_atfork); see slot.h. */
uint64_t hc_fork_epoch(void);

/*
 * Hold fork() off (the pthread_atfork prepare handler waits) while a slot
 * lock is being taken: segment.c, note (e).  Short sections only.
 */
void hc_fork_guard_enter(void);
void hc_fork_guard_leave(void);

#endif /* HC_SEGMENT_H */
