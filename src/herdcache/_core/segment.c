/*-------------------------------------------------------------------------
 *
 * segment.c
 *	  Creating, attaching, validating and closing shared memory segments.
 *
 * NOTES:
 *
 * (a) Creation.  A named segment is created with O_CREAT|O_EXCL|O_NOFOLLOW
 * (never adopting a file or following a link someone planted), chmod'ed to
 * the requested mode whatever the umask, and reserved in full with
 * posix_fallocate, so that a too-small /dev/shm fails here with ENOSPC
 * rather than with SIGBUS at some later store.  The header is filled in
 * and sh_magic is stored last with release semantics.  While it works, the
 * creator holds an fcntl lock on the byte HC_INIT_LOCK_BYTE, taken before
 * the file has a name: it is made unnamed (O_TMPFILE, or under a unique
 * temporary name where the file system has no O_TMPFILE), locked, then
 * linked under its name, which fails with EEXIST if another creator got
 * there first.  So a file under the name without the magic and without
 * that lock is proof that its creator died before publishing: the next
 * attacher removes it under the lock and the name is free again
 * (remove_dead_creation()), and hc_segment_open() creates it anew.
 *
 * (b) Attach.  The file is opened with O_NOFOLLOW and checked with fstat
 * on the open descriptor (regular file, our uid, no group/other write
 * unless allowed).  The mapping covers st_size bytes, never a size read
 * from the header; the header must then agree with the file.
 *
 * (c) One handle per file per process: attaching a file this process
 * already has returns the same handle with one more reference, so the
 * process has one slot and one set of locks per segment, whatever the
 * number of Segment objects.
 *
 * (d) Locks on the file.  Three kinds of byte of the file are locked with
 * OFD locks (never classic POSIX record locks, which any close() of any
 * descriptor of the file in the process would drop):
 *	- byte i < HC_MAX_SLOTS: process slot i (slot.h), through the handle's
 *	  private description sg_lock_fd;
 *	- HC_INIT_LOCK_BYTE: held (write) by a creator while it works;
 *	- HC_ATTACHED_BYTE: held (read) through sg_fd, the description the
 *	  mapping itself references.  fork() children share that description,
 *	  so it stays locked while any process still maps the segment, even one
 *	  that never used it and so never claimed a slot: gc() never removes a
 *	  segment in use.
 *
 * (e) fork.  A child inherits the mapping and both descriptions.  A
 * pthread_atfork child handler closes the child's copy of sg_lock_fd (the
 * parent's slot lock lives on in the parent), bumps the fork epoch, so
 * each handle claims a fresh slot at its first use in the child, and
 * resets the process-local mutexes and counters the parent's other threads
 * may have held.  That handler sees only listed handles, so a handle is
 * listed before its slot is claimed, and every claim (opening the lock
 * description, taking the lock, recording it in sg_lock_fd) runs under
 * fork_guard, which the prepare handler takes: a fork() never happens in
 * the middle of a claim.  Otherwise a child forked by another thread then
 * would keep a copy of a description holding the parent's slot lock, and
 * the parent, once dead, would look alive for as long as the child lives.
 *
 *-------------------------------------------------------------------------
 */
#include "segment.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "inject.h"
#include "kernel.h"
#include "slot.h"

/* How long attach waits for a live creator (reserving GiBs takes time). */
#define ATTACH_WAIT_NS (UINT64_C(30) * HC_NS_PER_SEC)
#define PAGE_ALIGN UINT64_C(4096)

/* The process's open handles (notes (c) and (d)). */
static pthread_mutex_t open_mutex = PTHREAD_MUTEX_INITIALIZER;
static hc_segment *open_list;
static _Atomic uint64_t fork_epoch = 1;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
/* Held across every slot claim, and by fork() itself (note (e)). */
static pthread_mutex_t fork_guard = PTHREAD_MUTEX_INITIALIZER;

uint64_t
hc_fork_epoch(void)
{
    /* relaxed: only ever changed in a single-threaded child after fork */
    return atomic_load_explicit(&fork_epoch, memory_order_relaxed);
}

void
hc_fork_guard_enter(void)
{
    pthread_mutex_lock(&fork_guard);
}

void
hc_fork_guard_leave(void)
{
    pthread_mutex_unlock(&fork_guard);
}

bool
hc_segment_fd_is_ours(const hc_segment *seg, int fd)
{
    struct stat sb;

    return fd >= 0 && fcntl(fd, F_GETFD) >= 0 && fstat(fd, &sb) == 0
        && sb.st_dev == seg->sg_dev && sb.st_ino == seg->sg_ino;
}

/* Close fd unless someone closed it and its number now leads elsewhere. */
static void
close_if_ours(const hc_segment *seg, int fd)
{
    if (hc_segment_fd_is_ours(seg, fd))
        close(fd);
}

static void
atfork_child(void)
{
    hc_segment *seg;

    /*
     * The prepare handler took fork_guard in this very thread: give it
     * back (re-initialising a held mutex is undefined, and TSan sees it
     * as held for good).  The parent's other threads are gone; so are the
     * locks they held.
     */
    pthread_mutex_unlock(&fork_guard);
    pthread_mutex_init(&open_mutex, NULL);
    for (seg = open_list; seg != NULL; seg = seg->sg_next) {
        pthread_mutex_init(&seg->sg_mutex, NULL);
        atomic_store_explicit(&seg->sg_busy, 0, memory_order_relaxed);
        close_if_ours(seg, seg->sg_lock_fd);    /* the parent's slot stays */
        seg->sg_lock_fd = -1;
    }
    atomic_fetch_add_explicit(&fork_epoch, 1, memory_order_relaxed);
}

static void
register_atfork(void)
{
    pthread_atfork(hc_fork_guard_enter, hc_fork_guard_leave, atfork_child);
}

static uint64_t
round_up(uint64_t n, uint64_t align)
{
    return (n + align - 1) / align * align;
}

static uint64_t
data_offset(void)
{
    return round_up(sizeof(hc_segment_header), PAGE_ALIGN);
}

uint64_t
hc_segment_min_size(void)
{
    return data_offset() + PAGE_ALIGN;
}

hc_status
hc_segment_validate_name(const char *name)
{
    size_t i, len = strlen(name);

    if (len == 0 || len > HC_SEGMENT_NAME_MAX) {
        hc_set_detail("a segment name has 1 to %d bytes, got %zu",
                      HC_SEGMENT_NAME_MAX, len);
        return HC_BAD_NAME;
    }
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
        hc_set_detail("\"%s\" is not a file name", name);
        return HC_BAD_NAME;
    }
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char) name[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || strchr("._-:@+", c) != NULL)) {
            hc_set_detail("byte %zu (0x%02x) is not allowed; use letters, "
                          "digits and . _ - : @ +", i, c);
            return HC_BAD_NAME;
        }
    }
    return HC_OK;
}

hc_status
hc_segment_path(const char *name, const hc_segment_options *opts, char *buf,
                size_t buflen)
{
    const char *dir = opts && opts->dir ? opts->dir : HC_DEFAULT_DIR;
    hc_status st = hc_segment_validate_name(name);
    int n;

    if (st != HC_OK)
        return st;
    n = snprintf(buf, buflen, "%s/%s%s", dir, HC_FILE_PREFIX, name);
    if (n < 0 || (size_t) n >= buflen) {
        hc_set_detail("the path of segment \"%s\" is too long", name);
        return HC_BAD_NAME;
    }
    return HC_OK;
}

void
hc_read_boot_id(char out[40])
{
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");

    memset(out, 0, 40);
    if (f != NULL) {
        if (fgets(out, 40, f) != NULL)
            out[strcspn(out, "\n")] = '\0';
        fclose(f);
    }
}

static int
init_byte_lock(int fd, short type, int cmd)
{
    return hc_ofd_lock(fd, cmd, type, HC_INIT_LOCK_BYTE, 1);
}

/* Mark the description as one that maps the segment (note (d)). */
static int
attached_lock(int fd)
{
    return hc_ofd_lock(fd, F_OFD_SETLK, F_RDLCK, HC_ATTACHED_BYTE, 1);
}

/* Reserve the whole size now so that a full /dev/shm fails here. */
static hc_status
reserve(int fd, uint64_t size, const char *where)
{
    int rc = posix_fallocate(fd, 0, (off_t) size);

    if (rc == EOPNOTSUPP || rc == EINVAL)
        rc = ftruncate(fd, (off_t) size) == 0 ? 0 : errno;
    if (rc == 0)
        return HC_OK;
    if (rc == ENOSPC || rc == EFBIG) {
        struct statvfs vfs;
        unsigned long long avail = 0;

        if (fstatvfs(fd, &vfs) == 0)
            avail = (unsigned long long) vfs.f_bavail * vfs.f_frsize;
        hc_set_detail("%s has %llu bytes free, the segment needs %llu",
                      where, avail, (unsigned long long) size);
        return HC_NO_SPACE;
    }
    errno = rc;
    return HC_SYSTEM;
}

static void
init_header(hc_segment_header *h, uint64_t size)
{
    struct timespec now;

    h->sh_layout_version = HC_LAYOUT_VERSION;
    h->sh_header_size = (uint32_t) sizeof(hc_segment_header);
    h->sh_total_size = size;
    h->sh_data_offset = data_offset();
    h->sh_creator_pid = (uint32_t) getpid();
    h->sh_creator_uid = (uint32_t) geteuid();
    clock_gettime(CLOCK_REALTIME, &now);
    h->sh_created_unix_ns = (uint64_t) now.tv_sec * HC_NS_PER_SEC
        + (uint64_t) now.tv_nsec;
    if (getrandom(h->sh_hash_seed, sizeof(h->sh_hash_seed), 0)
        != (ssize_t) sizeof(h->sh_hash_seed)) {
        /* no entropy source: still distinct per segment and per boot */
        h->sh_hash_seed[0] = h->sh_created_unix_ns ^ hc_now_ns();
        h->sh_hash_seed[1] = ((uint64_t) getpid() << 32) ^ (uintptr_t) h;
    }
    hc_read_boot_id(h->sh_boot_id);
    h->sh_max_slots = HC_MAX_SLOTS;
    h->sh_registry_capacity = HC_REGISTRY_CAPACITY;
    atomic_store_explicit(&h->sh_alloc_top, h->sh_data_offset,
                          memory_order_relaxed);
}

/*
 * A handle for the mapping of fd.  Its file's identity is recorded here,
 * before the handle is listed: the fork handler closes a child's copy of
 * the slot lock description only if it is a descriptor of that file.
 */
static hc_segment *
new_handle(int fd, uint8_t *base, uint64_t size)
{
    hc_segment *seg;
    struct stat sb;

    if (fstat(fd, &sb) < 0 || (seg = calloc(1, sizeof(*seg))) == NULL)
        return NULL;
    seg->sg_dev = sb.st_dev;
    seg->sg_ino = sb.st_ino;
    seg->sg_header = (hc_segment_header *) base;
    seg->sg_base = base;
    seg->sg_size = size;
    seg->sg_fd = fd;
    seg->sg_lock_fd = -1;
    seg->sg_spare_fd = -1;
    seg->sg_refs = 1;
    pthread_mutex_init(&seg->sg_mutex, NULL);
    return seg;
}

static void
list_add(hc_segment *seg)
{
    seg->sg_next = open_list;
    open_list = seg;
}

static void
list_remove(hc_segment *seg)
{
    hc_segment **p;

    for (p = &open_list; *p != NULL; p = &(*p)->sg_next) {
        if (*p == seg) {
            *p = seg->sg_next;
            return;
        }
    }
}

/*
 * Put seg on the open list, then claim its slot.  Listed first, so that
 * the fork child handler, which closes the child's copy of every listed
 * handle's lock description, sees it before it holds any lock (the claim
 * itself holds fork() off, see hc_slot_claim()).  The caller holds
 * open_mutex; on failure seg is off the list again.
 */
static hc_status
list_and_claim(hc_segment *seg)
{
    hc_status st;

    list_add(seg);
    st = hc_slot_claim(seg);
    if (st != HC_OK)
        list_remove(seg);
    return st;
}

static hc_segment *
list_find(dev_t dev, ino_t ino)
{
    hc_segment *seg;

    for (seg = open_list; seg != NULL; seg = seg->sg_next)
        if (!seg->sg_anonymous && seg->sg_dev == dev && seg->sg_ino == ino)
            return seg;
    return NULL;
}

/*
 * Map a freshly reserved file, write its header, claim our slot, then
 * publish the magic.  On failure the caller removes the file.
 */
static hc_status
initialise(int fd, uint64_t size, hc_huge_mode huge, hc_huge_got got,
           hc_segment **out)
{
    uint8_t *base;
    hc_segment *seg;
    hc_status st;

    if (attached_lock(fd) < 0)
        return HC_SYSTEM;
    base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED)
        return HC_SYSTEM;
    st = hc_huge_advise(base, size, huge, &got);
    if (st != HC_OK) {
        munmap(base, size);
        return st;
    }
    init_header((hc_segment_header *) base, size);
    seg = new_handle(fd, base, size);
    if (seg == NULL) {
        munmap(base, size);
        errno = ENOMEM;
        return HC_SYSTEM;
    }
    st = list_and_claim(seg);
    if (st != HC_OK) {
        munmap(base, size);
        free(seg);
        return st;
    }
    HC_INJECT("segment.create.before_magic");
    /*
     * Publish: every header field above happens-before an attacher's
     * acquire load of the magic in wait_for_header() / validate_header().
     */
    atomic_store_explicit(&seg->sg_header->sh_magic, HC_SEGMENT_MAGIC,
                          memory_order_release);
    seg->sg_creator = true;
    seg->sg_huge = got;
    *out = seg;
    return HC_OK;
}

static hc_status
check_size(uint64_t size)
{
    if (size < hc_segment_min_size()) {
        hc_set_detail("a segment needs at least %llu bytes, asked for %llu",
                      (unsigned long long) hc_segment_min_size(),
                      (unsigned long long) size);
        return HC_BAD_ARGUMENT;
    }
    return HC_OK;
}

/* Does the name at path still lead to fd's file? */
static bool
still_named(int fd, const char *path)
{
    struct stat fsb, psb;

    return fstat(fd, &fsb) == 0 && stat(path, &psb) == 0
        && psb.st_dev == fsb.st_dev && psb.st_ino == fsb.st_ino;
}

/*
 * A new file in dir, with no name yet or a temporary one (tmp, "" for
 * none), and its creation byte already locked: note (a).
 */
static int
open_unnamed(const char *dir, const char *path, char *tmp, size_t tmplen)
{
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

    tmp[0] = '\0';
    if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR)) {
        /* No O_TMPFILE here: a unique name nobody attaches by. */
        snprintf(tmp, tmplen, "%s.creating.XXXXXX", path);
        fd = mkostemp(tmp, O_CLOEXEC);
    }
    if (fd < 0) {
        hc_set_detail("cannot create a file in %s: %s", dir, strerror(errno));
        return -1;
    }
    if (init_byte_lock(fd, F_WRLCK, F_OFD_SETLK) < 0) {
        int saved = errno;

        if (tmp[0] != '\0')
            unlink(tmp);
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

/* Give the locked new file its name; HC_EXISTS if the name is taken. */
static hc_status
link_into_place(int fd, const char *tmp, const char *path)
{
    char proc[64];
    int rc;

    if (tmp[0] != '\0') {
        rc = link(tmp, path);
        unlink(tmp);
    } else {
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
        rc = linkat(AT_FDCWD, proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW);
    }
    if (rc == 0)
        return HC_OK;
    if (errno == EEXIST) {
        hc_set_detail("%s exists (a segment, a stale file or a link)", path);
        return HC_EXISTS;
    }
    hc_set_detail("cannot create %s: %s", path, strerror(errno));
    return HC_SYSTEM;
}

static hc_status
create_locked(const char *name, uint64_t size, const hc_segment_options *opts,
              hc_segment **out)
{
    const char *dir = opts && opts->dir ? opts->dir : HC_DEFAULT_DIR;
    char path[4096], tmp[4096 + 32];
    bool linked = false;
    hc_status st;
    int fd;

    st = hc_segment_path(name, opts, path, sizeof(path));
    if (st == HC_OK)
        st = check_size(size);
    if (st != HC_OK)
        return st;
    size = round_up(size, PAGE_ALIGN);
    fd = open_unnamed(dir, path, tmp, sizeof(tmp));
    if (fd < 0)
        return HC_SYSTEM;
    if (fchmod(fd, opts && opts->mode ? opts->mode : 0600) < 0)
        st = HC_SYSTEM;
    if (st == HC_OK)
        st = link_into_place(fd, tmp, path);
    linked = st == HC_OK;
    if (st == HC_OK)
        st = reserve(fd, size, dir);
    if (st == HC_OK)
        st = initialise(fd, size, opts ? opts->huge_pages : HC_HUGE_OFF,
                        HC_HUGE_NOT_ASKED, out);
    if (st != HC_OK) {
        int saved = errno;

        if (linked && still_named(fd, path))
            unlink(path);       /* under the creation byte: still ours */
        close(fd);
        errno = saved;
        return st;
    }
    snprintf((*out)->sg_path, sizeof((*out)->sg_path), "%s", path);
    snprintf((*out)->sg_name, sizeof((*out)->sg_name), "%s", name);
    init_byte_lock(fd, F_UNLCK, F_OFD_SETLK);
    return HC_OK;
}

hc_status
hc_segment_create(const char *name, uint64_t size,
                  const hc_segment_options *opts, hc_segment **out)
{
    hc_status st;

    pthread_once(&atfork_once, register_atfork);
    st = hc_kernel_check();
    if (st != HC_OK)
        return st;
    pthread_mutex_lock(&open_mutex);
    st = create_locked(name, size, opts, out);
    pthread_mutex_unlock(&open_mutex);
    return st;
}

hc_status
hc_segment_check_stat(const struct stat *sb, const char *path,
                      const hc_segment_options *opts)
{
    if (!S_ISREG(sb->st_mode)) {
        hc_set_detail("%s is not a regular file", path);
        return HC_BAD_MAGIC;
    }
    if (sb->st_uid != geteuid()) {
        hc_set_detail("%s belongs to uid %u, this process runs as uid %u",
                      path, (unsigned) sb->st_uid, (unsigned) geteuid());
        return HC_WRONG_OWNER;
    }
    if ((sb->st_mode & 022) && !(opts && opts->allow_shared)) {
        hc_set_detail("%s has mode %04o", path,
                      (unsigned) (sb->st_mode & 07777));
        return HC_INSECURE_MODE;
    }
    return HC_OK;
}

static hc_status
check_file(int fd, const char *path, const hc_segment_options *opts,
           struct stat *sb)
{
    if (fstat(fd, sb) < 0)
        return HC_SYSTEM;
    return hc_segment_check_stat(sb, path, opts);
}

/*
 * A file with no magic whose creation byte nobody holds: its creator died
 * before publishing (note (a)).  Remove it, holding that byte, unless
 * something changed meanwhile: the magic appeared, the name leads to
 * another file, or processes hold slots (then it is a damaged segment in
 * use, not a dead creation).  HC_NOT_FOUND: the name is free again (open
 * it again); HC_OK: look at the file again.
 */
static hc_status
remove_dead_creation(int fd, const char *path)
{
    uint64_t magic = 0;
    struct stat sb;
    hc_status st;

    if (init_byte_lock(fd, F_WRLCK, F_OFD_SETLK) < 0)
        return HC_OK;           /* a creator or a gc at work after all */
    if (fstat(fd, &sb) < 0
        || (sb.st_size >= (off_t) sizeof(magic)
            && pread(fd, &magic, sizeof(magic), 0) != (ssize_t) sizeof(magic)))
        st = HC_SYSTEM;
    else if (magic != 0)
        st = HC_OK;             /* published (or garbage): look again */
    else if (hc_ofd_lock(fd, F_OFD_GETLK, F_WRLCK, 0, HC_MAX_SLOTS) != 0) {
        hc_set_detail("%s has no header, yet processes use it: it was "
                      "damaged", path);
        st = HC_CORRUPT;
    } else if (!still_named(fd, path) || unlink(path) == 0) {
        hc_set_detail("%s had no header and its creator had died before "
                      "writing one; it was removed", path);
        st = HC_NOT_FOUND;
    } else
        st = HC_SYSTEM;
    init_byte_lock(fd, F_UNLCK, F_OFD_SETLK);
    return st;
}

/*
 * Wait (bounded) until the creator has published the magic: returns HC_OK
 * with *size set to the file size, or why the file is not (yet) usable
 * (HC_NOT_FOUND: it was a dead creator's, and is gone).
 */
static hc_status
wait_for_header(int fd, const char *path, uint64_t wait_ns, uint64_t *size)
{
    uint64_t start = hc_now_ns();

    for (;;) {
        struct stat sb;
        uint64_t magic = 0;
        hc_status st;

        if (fstat(fd, &sb) < 0)
            return HC_SYSTEM;
        if (sb.st_size >= (off_t) sizeof(magic)
            && pread(fd, &magic, sizeof(magic), 0) != (ssize_t) sizeof(magic))
            return HC_SYSTEM;
        if (magic == HC_SEGMENT_MAGIC) {
            *size = (uint64_t) sb.st_size;
            return HC_OK;
        }
        if (magic == __builtin_bswap64(HC_SEGMENT_MAGIC)) {
            hc_set_detail("%s was made on a machine of the other byte order",
                          path);
            return HC_OTHER_ENDIAN;
        }
        if (magic != 0) {
            hc_set_detail("%s starts with 0x%016llx", path,
                          (unsigned long long) magic);
            return HC_BAD_MAGIC;
        }
        /* No magic yet: a live creator holds the init byte (note (a)). */
        if (init_byte_lock(fd, F_WRLCK, F_OFD_GETLK) == 0
            && (st = remove_dead_creation(fd, path)) != HC_OK)
            return st;
        if (hc_now_ns() - start > wait_ns) {
            hc_set_detail("%s was still being created after %.1f s (its "
                          "creator is alive: wait longer with timeout=)",
                          path, (double) wait_ns / HC_NS_PER_SEC);
            return HC_NOT_READY;
        }
        nanosleep(&(struct timespec) {0, 1000 * 1000}, NULL);
    }
}

/*
 * After taking the attached lock: wait until no gc (nor creator) holds the
 * creation byte, then check that the name still leads to the file we
 * opened.  A gc that found the file unattached before our attached lock
 * holds that byte until it has unlinked the file (hc_segment_remove_if_
 * orphan()), so we see the name gone; one that comes later sees our lock.
 * Either way no process keeps using a file whose name leads elsewhere.
 */
static hc_status
check_still_named(int fd, const char *path)
{
    if (init_byte_lock(fd, F_RDLCK, F_OFD_SETLKW) < 0)
        return HC_SYSTEM;
    init_byte_lock(fd, F_UNLCK, F_OFD_SETLK);
    if (!still_named(fd, path)) {
        hc_set_detail("%s was removed (by gc) while this process attached "
                      "it", path);
        return HC_NOT_FOUND;    /* attach opens the name again */
    }
    return HC_OK;
}

static hc_status
validate_header(hc_segment_header *h, uint64_t file_size, const char *path)
{
    /* Pairs with the release store of the magic in initialise(). */
    if (atomic_load_explicit(&h->sh_magic, memory_order_acquire)
        != HC_SEGMENT_MAGIC)
        return HC_BAD_MAGIC;
    if (h->sh_layout_version != HC_LAYOUT_VERSION) {
        hc_set_detail("%s has layout version %u, this herdcache reads "
                      "version %u", path, h->sh_layout_version,
                      HC_LAYOUT_VERSION);
        return HC_VERSION_MISMATCH;
    }
    if (h->sh_total_size > file_size) {
        hc_set_detail("%s says %llu bytes, the file has %llu", path,
                      (unsigned long long) h->sh_total_size,
                      (unsigned long long) file_size);
        return HC_TRUNCATED;
    }
    if (h->sh_header_size != sizeof(hc_segment_header)
        || h->sh_total_size != file_size
        || h->sh_data_offset != data_offset()
        || h->sh_max_slots != HC_MAX_SLOTS
        || h->sh_registry_capacity != HC_REGISTRY_CAPACITY
        || atomic_load_explicit(&h->sh_alloc_top, memory_order_relaxed)
           > file_size) {
        hc_set_detail("%s has an inconsistent header", path);
        return HC_CORRUPT;
    }
    return HC_OK;
}

static hc_status
map_and_validate(int fd, const char *path, uint64_t wait_ns,
                 hc_segment **out)
{
    uint64_t size = 0;
    uint8_t *base;
    hc_segment *seg;
    char boot_id[40];
    hc_status st;

    if (attached_lock(fd) < 0)
        return HC_SYSTEM;
    st = wait_for_header(fd, path, wait_ns, &size);
    if (st == HC_OK)
        st = check_still_named(fd, path);
    if (st != HC_OK)
        return st;
    if (size < hc_segment_min_size()) {
        hc_set_detail("%s has %llu bytes, less than a header", path,
                      (unsigned long long) size);
        return HC_TRUNCATED;
    }
    base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED)
        return HC_SYSTEM;
    st = validate_header((hc_segment_header *) base, size, path);
    seg = st == HC_OK ? new_handle(fd, base, size) : NULL;
    if (st == HC_OK && seg == NULL) {
        errno = ENOMEM;
        st = HC_SYSTEM;
    }
    if (st == HC_OK)
        st = list_and_claim(seg);
    if (st != HC_OK) {
        munmap(base, size);
        free(seg);
        return st;
    }
    hc_read_boot_id(boot_id);
    seg->sg_rebooted = strncmp(boot_id, seg->sg_header->sh_boot_id, 40) != 0;
    *out = seg;
    return HC_OK;
}

/* *replaced: the name was removed while we attached; open it again. */
static hc_status
attach_locked(const char *name, const hc_segment_options *opts,
              hc_segment **out, bool *replaced)
{
    char path[4096];
    struct stat sb;
    hc_segment *seg;
    hc_status st;
    int fd;

    st = hc_segment_path(name, opts, path, sizeof(path));
    if (st != HC_OK)
        return st;
    /* Note (c): look for our own handle before opening anything. */
    if (stat(path, &sb) == 0 && (seg = list_find(sb.st_dev, sb.st_ino))) {
        seg->sg_refs++;
        *out = seg;
        return HC_OK;
    }
    fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            hc_set_detail("no segment %s", path);
            return HC_NOT_FOUND;
        }
        if (errno == ELOOP) {
            hc_set_detail("%s is a symbolic link", path);
            return HC_INSECURE_MODE;
        }
        hc_set_detail("cannot open %s: %s", path, strerror(errno));
        return HC_SYSTEM;
    }
    st = check_file(fd, path, opts, &sb);
    if (st == HC_OK && (seg = list_find(sb.st_dev, sb.st_ino))) {
        /* Replaced by our own file between stat and open: see note (c). */
        if (seg->sg_spare_fd < 0)
            seg->sg_spare_fd = fd;
        seg->sg_refs++;
        *out = seg;
        return HC_OK;
    }
    if (st == HC_OK)
        st = map_and_validate(fd, path,
                              opts && opts->attach_wait_ns
                                  ? opts->attach_wait_ns : ATTACH_WAIT_NS,
                              out);
    /* Only check_still_named() and remove_dead_creation() say so. */
    *replaced = st == HC_NOT_FOUND;
    if (st != HC_OK) {
        int saved = errno;

        close(fd);
        errno = saved;
        return st;
    }
    snprintf((*out)->sg_path, sizeof((*out)->sg_path), "%s", path);
    snprintf((*out)->sg_name, sizeof((*out)->sg_name), "%s", name);
    /* Advise and report; only a creation fails for huge_pages="on". */
    (void) hc_huge_advise((*out)->sg_base, (*out)->sg_size,
                          opts && opts->huge_pages ? HC_HUGE_TRY
                                                   : HC_HUGE_OFF,
                          &(*out)->sg_huge);
    return HC_OK;               /* listed by map_and_validate() */
}

hc_status
hc_segment_attach(const char *name, const hc_segment_options *opts,
                  hc_segment **out)
{
    hc_status st = HC_NOT_FOUND;
    int attempt;

    pthread_once(&atfork_once, register_atfork);
    st = hc_kernel_check();
    if (st != HC_OK)
        return st;
    pthread_mutex_lock(&open_mutex);
    for (attempt = 0; attempt < 8; attempt++) {
        bool replaced = false;

        st = attach_locked(name, opts, out, &replaced);
        if (!replaced)
            break;              /* else the name leads to a new file now */
    }
    pthread_mutex_unlock(&open_mutex);
    return st;
}

hc_status
hc_segment_open(const char *name, uint64_t size,
                const hc_segment_options *opts, hc_segment **out,
                bool *created)
{
    int attempt;

    /*
     * Attach, else create, else (someone created it in between) attach
     * again.  Each step fails only because another process won a race,
     * so a few rounds always settle it.
     */
    for (attempt = 0; attempt < 8; attempt++) {
        hc_status st = hc_segment_attach(name, opts, out);

        if (st != HC_NOT_FOUND) {
            *created = false;
            return st;
        }
        st = hc_segment_create(name, size, opts, out);
        if (st != HC_EXISTS) {
            *created = st == HC_OK;
            return st;
        }
    }
    hc_set_detail("segment \"%s\" kept appearing and disappearing", name);
    return HC_BUSY;
}

/* A reserved memfd for an anonymous segment: of huge pages if asked and
 * to be had (*got says), else of ordinary ones. */
static hc_status
anonymous_memfd(uint64_t *size, hc_huge_mode huge, hc_huge_got *got,
                int *fd)
{
    *got = HC_HUGE_NOT_ASKED;
    if (huge != HC_HUGE_OFF && (*fd = hc_huge_memfd(size)) >= 0) {
        *got = HC_HUGE_HUGETLB;
        return HC_OK;
    }
    *fd = memfd_create("herdcache", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (*fd < 0)
        return HC_SYSTEM;
    return reserve(*fd, *size, "memory (memfd)");
}

hc_status
hc_segment_anonymous(uint64_t size, hc_huge_mode huge, hc_segment **out)
{
    hc_huge_got got;
    hc_status st;
    int fd = -1;

    pthread_once(&atfork_once, register_atfork);
    st = hc_kernel_check();
    if (st == HC_OK)
        st = check_size(size);
    if (st != HC_OK)
        return st;
    size = round_up(size, PAGE_ALIGN);
    st = anonymous_memfd(&size, huge, &got, &fd);
    /* Nobody can shrink it under a mapping, so no access can SIGBUS. */
    if (st == HC_OK
        && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0)
        st = HC_SYSTEM;
    if (st == HC_OK) {
        pthread_mutex_lock(&open_mutex);
        st = initialise(fd, size, huge, got, out);  /* lists the handle */
        if (st == HC_OK) {
            (*out)->sg_anonymous = true;
            snprintf((*out)->sg_name, sizeof((*out)->sg_name),
                     "(anonymous)");
        }
        pthread_mutex_unlock(&open_mutex);
    }
    if (st != HC_OK) {
        int saved = errno;

        close(fd);
        errno = saved;
        return st;
    }
    return HC_OK;
}

hc_status
hc_segment_close(hc_segment *seg)
{
    int busy;

    pthread_mutex_lock(&open_mutex);
    busy = atomic_load_explicit(&seg->sg_busy, memory_order_acquire);
    if (busy > 0 && seg->sg_refs == 1) {
        pthread_mutex_unlock(&open_mutex);
        hc_set_detail("%d locks are held or calls are in flight", busy);
        return HC_BUSY;
    }
    if (--seg->sg_refs > 0) {
        pthread_mutex_unlock(&open_mutex);
        return HC_OK;
    }
    list_remove(seg);
    pthread_mutex_unlock(&open_mutex);

    hc_slot_release(seg);
    munmap(seg->sg_base, seg->sg_size);
    close_if_ours(seg, seg->sg_lock_fd);
    close_if_ours(seg, seg->sg_fd);     /* mapping gone: the attached lock */
    close_if_ours(seg, seg->sg_spare_fd);
    pthread_mutex_destroy(&seg->sg_mutex);
    free(seg);
    return HC_OK;
}

hc_status
hc_segment_unlink_name(const char *name, const hc_segment_options *opts)
{
    char path[4096];
    hc_status st = hc_segment_path(name, opts, path, sizeof(path));

    if (st != HC_OK)
        return st;
    if (unlink(path) < 0) {
        if (errno == ENOENT) {
            hc_set_detail("no segment %s", path);
            return HC_NOT_FOUND;
        }
        return HC_SYSTEM;
    }
    return HC_OK;
}

/*
 * Unlink the file if no live process maps it, deciding and unlinking while
 * holding its creation byte: an attacher that opened it meanwhile waits
 * for that byte and then finds the name gone (check_still_named()), so it
 * never keeps using a file whose name leads to a new one.
 */
static bool
unlink_if_orphan(int fd, const char *path)
{
    bool removed = false;

    if (init_byte_lock(fd, F_WRLCK, F_OFD_SETLK) < 0)
        return false;           /* a creator or another gc is at work */
    if (hc_slot_none_attached(fd) && still_named(fd, path))
        removed = unlink(path) == 0;
    init_byte_lock(fd, F_UNLCK, F_OFD_SETLK);
    return removed;
}

/*
 * The orphan test of the named file, and (remove) its removal if it is an
 * orphan: *result says whether it is one (or was removed).
 */
static hc_status
orphan_probe(const char *name, const hc_segment_options *opts, bool remove,
             bool *result)
{
    char path[4096];
    struct stat sb;
    hc_status st = hc_segment_path(name, opts, path, sizeof(path));
    int fd;

    *result = false;
    if (st != HC_OK)
        return st;
    pthread_mutex_lock(&open_mutex);
    if (stat(path, &sb) == 0 && list_find(sb.st_dev, sb.st_ino) != NULL) {
        pthread_mutex_unlock(&open_mutex);
        return HC_OK;           /* we are attached ourselves */
    }
    fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
        /* Slots, creation, attached: any lock there is a live process. */
        *result = remove ? unlink_if_orphan(fd, path)
                         : hc_slot_none_attached(fd);
        close(fd);
    }
    pthread_mutex_unlock(&open_mutex);
    if (fd < 0)
        return errno == ENOENT ? HC_NOT_FOUND : HC_SYSTEM;
    return HC_OK;
}

hc_status
hc_segment_remove_if_orphan(const char *name, const hc_segment_options *opts,
                            bool *removed)
{
    return orphan_probe(name, opts, true, removed);
}

hc_status
hc_segment_is_orphan(const char *name, const hc_segment_options *opts,
                     bool *orphan)
{
    return orphan_probe(name, opts, false, orphan);
}
