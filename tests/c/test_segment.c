/*
 * test_segment.c - segments: create/attach, refusing corrupt headers, the
 * registry under a race of forked processes, slots of killed processes,
 * and the condition variable across fork with a killed waiter.
 *
 * Named segments live in a fresh directory under /dev/shm (opts.dir).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "condvar.h"
#include "counter.h"
#include "harness.h"
#include "lock.h"
#include "registry.h"
#include "segment.h"
#include "slot.h"

#define SEG_SIZE (UINT64_C(1) << 20)

static char dir[64];
static hc_segment_options opts;
static pid_t main_pid;

static int
remove_entry(const char *path, const struct stat *sb, int flag,
             struct FTW *ftw)
{
    (void) sb;
    (void) flag;
    (void) ftw;
    return remove(path);
}

/* At exit, even after a failed CHECK: leave nothing in /dev/shm. */
static void
remove_dir(void)
{
    if (getpid() == main_pid)
        nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void
path_of(const char *name, char *buf, size_t len)
{
    CHECK_ST(hc_segment_path(name, &opts, buf, len), HC_OK);
}

/* Create name, close it, and return its path in buf. */
static void
make_closed(const char *name, char *buf, size_t len)
{
    hc_segment *seg;

    CHECK_ST(hc_segment_create(name, SEG_SIZE, &opts, &seg), HC_OK);
    test_alloc(seg, "c", HC_KIND_COUNTER);
    CHECK_ST(hc_segment_close(seg), HC_OK);
    path_of(name, buf, len);
}

static void
overwrite(const char *path, off_t offset, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY);

    CHECK(fd >= 0);
    CHECK(pwrite(fd, data, len, offset) == (ssize_t) len);
    close(fd);
}

/* Attach must fail with expected, then the file is removed. */
static void
expect_attach(const char *name, hc_status expected)
{
    hc_segment *seg = NULL;

    CHECK_ST(hc_segment_attach(name, &opts, &seg), expected);
    CHECK(seg == NULL);
    CHECK_ST(hc_segment_unlink_name(name, &opts), HC_OK);
}

/* Make name, write data at offset of its file: attach fails as expected. */
static void
patched_attach_fails(const char *name, off_t offset, const void *data,
                     size_t len, hc_status expected)
{
    char path[4096];

    make_closed(name, path, sizeof(path));
    overwrite(path, offset, data, len);
    expect_attach(name, expected);
}

/* A child that ends with status code; waitpid's verdict is returned. */
static int
exit_code(pid_t pid)
{
    int status;

    CHECK(waitpid(pid, &status, 0) == pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void
test_create_attach_close(void)
{
    hc_segment *seg, *again, *opened;
    struct stat sb;
    bool created;
    char path[4096];

    CHECK_ST(hc_segment_create("a", SEG_SIZE, &opts, &seg), HC_OK);
    CHECK(seg->sg_creator && seg->sg_size == SEG_SIZE);
    CHECK_ST(hc_segment_create("a", SEG_SIZE, &opts, &again), HC_EXISTS);
    CHECK_ST(hc_segment_attach("a", &opts, &again), HC_OK);
    CHECK(again == seg);            /* one handle per file per process */
    CHECK_ST(hc_segment_open("a", SEG_SIZE, &opts, &opened, &created), HC_OK);
    CHECK(opened == seg && !created);
    path_of("a", path, sizeof(path));
    CHECK(stat(path, &sb) == 0 && (sb.st_mode & 07777) == 0600);
    CHECK_ST(hc_segment_close(opened), HC_OK);
    CHECK_ST(hc_segment_close(again), HC_OK);
    CHECK_ST(hc_segment_close(seg), HC_OK);
    CHECK_ST(hc_segment_attach("a", &opts, &seg), HC_OK);
    CHECK(!seg->sg_creator);
    CHECK_ST(hc_segment_close(seg), HC_OK);
    CHECK_ST(hc_segment_unlink_name("a", &opts), HC_OK);
    CHECK_ST(hc_segment_unlink_name("a", &opts), HC_NOT_FOUND);
    CHECK_ST(hc_segment_validate_name(".."), HC_BAD_NAME);
    CHECK_ST(hc_segment_validate_name("a/b"), HC_BAD_NAME);
    CHECK_ST(hc_segment_validate_name(""), HC_BAD_NAME);
}

static void
kill_and_reap(pid_t pid)
{
    kill(pid, SIGKILL);
    CHECK(exit_code(pid) == 128 + SIGKILL);
}

static void
test_corrupt_headers_are_refused(void)
{
    uint64_t magic = __builtin_bswap64(HC_SEGMENT_MAGIC), big = SEG_SIZE * 2;
    uint32_t version = HC_LAYOUT_VERSION + 1;
    char path[4096], junk[4096];
    int fd;

    patched_attach_fails("m", 0, "garbage!", 8, HC_BAD_MAGIC);
    patched_attach_fails("e", 0, &magic, sizeof(magic), HC_OTHER_ENDIAN);
    patched_attach_fails("v", offsetof(hc_segment_header, sh_layout_version),
                         &version, sizeof(version), HC_VERSION_MISMATCH);
    patched_attach_fails("top", offsetof(hc_segment_header, sh_alloc_top),
                         &big, sizeof(big), HC_CORRUPT);

    make_closed("t", path, sizeof(path));
    CHECK(truncate(path, SEG_SIZE / 2) == 0);
    expect_attach("t", HC_TRUNCATED);

    make_closed("mode", path, sizeof(path));
    CHECK(chmod(path, 0666) == 0);
    CHECK_ST(hc_segment_attach("mode", &opts, &(hc_segment *) {NULL}),
             HC_INSECURE_MODE);
    opts.allow_shared = true;
    {
        hc_segment *seg;

        CHECK_ST(hc_segment_attach("mode", &opts, &seg), HC_OK);
        CHECK_ST(hc_segment_close(seg), HC_OK);
    }
    opts.allow_shared = false;
    CHECK_ST(hc_segment_unlink_name("mode", &opts), HC_OK);

    make_closed("target", path, sizeof(path));
    snprintf(junk, sizeof(junk), "%s/%slink", dir, HC_FILE_PREFIX);
    CHECK(symlink(path, junk) == 0);
    expect_attach("link", HC_INSECURE_MODE);
    CHECK_ST(hc_segment_create("target", SEG_SIZE, &opts,
                               &(hc_segment *) {NULL}), HC_EXISTS);
    CHECK_ST(hc_segment_unlink_name("target", &opts), HC_OK);

    /* All zeros and nobody holding the creation lock: the creator died,
     * and attach removes its file (test_killed_creator_is_recovered). */
    path_of("z", path, sizeof(path));
    fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0600);
    CHECK(fd >= 0 && ftruncate(fd, SEG_SIZE) == 0);
    close(fd);
    CHECK_ST(hc_segment_attach("z", &opts, &(hc_segment *) {NULL}),
             HC_NOT_FOUND);
    CHECK(access(path, F_OK) < 0 && errno == ENOENT);
}

/* A child that makes name's file and holds its creation byte, as a creator
 * does before its magic, then waits to be killed; returns when it holds. */
static pid_t
stuck_creator(const char *name)
{
    char path[4096];
    int ready[2];
    pid_t pid;

    path_of(name, path, sizeof(path));
    CHECK(pipe(ready) == 0);
    if ((pid = test_fork()) == 0) {
        int fd = open(path, O_CREAT | O_EXCL | O_RDWR, 0600);

        if (fd < 0 || hc_ofd_lock(fd, F_OFD_SETLK, F_WRLCK, HC_MAX_SLOTS, 1)
            < 0 || ftruncate(fd, SEG_SIZE) < 0 || write(ready[1], "r", 1) != 1)
            _exit(2);
        pause();
        _exit(3);
    }
    close(ready[1]);
    CHECK(read(ready[0], &(char) {0}, 1) == 1);
    close(ready[0]);
    return pid;
}

/*
 * A creator killed before its magic: while it lives, attachers wait for
 * it (and time out saying it is alive); once it is dead, the next open
 * removes its file and creates the segment anew, at once.
 */
static void
test_killed_creator_is_recovered(void)
{
    hc_segment_options quick = opts;
    hc_segment *seg, *other;
    uint64_t start;
    bool created;
    pid_t pid = stuck_creator("dead");

    quick.attach_wait_ns = 50 * HC_NS_PER_MS;
    CHECK_ST(hc_segment_attach("dead", &quick, &(hc_segment *) {NULL}),
             HC_NOT_READY);
    CHECK(strstr(hc_last_detail(), "creator is alive") != NULL);
    kill_and_reap(pid);
    start = hc_now_ns();
    CHECK_ST(hc_segment_open("dead", SEG_SIZE, &opts, &seg, &created), HC_OK);
    CHECK(created);
    printf("    open after a killed creator: %.2f ms\n",
           (double) (hc_now_ns() - start) / 1e6);
    CHECK_ST(hc_segment_attach("dead", &opts, &other), HC_OK);
    CHECK(other == seg);
    CHECK_ST(hc_segment_close(other), HC_OK);
    CHECK_ST(hc_segment_close(seg), HC_OK);
    CHECK_ST(hc_segment_unlink_name("dead", &opts), HC_OK);
}

/* Two creators of one name at once: one creates, the other attaches. */
static void
test_racing_creators_share_one_file(void)
{
    hc_segment *seg;
    bool created;
    int i;

    for (i = 0; i < 20; i++) {
        pid_t pid = test_fork();

        if (pid == 0) {
            hc_segment *mine;
            bool made;

            _exit(hc_segment_open("race2", SEG_SIZE, &opts, &mine, &made)
                  == HC_OK ? (made ? 10 : 11) : 1);
        }
        CHECK_ST(hc_segment_open("race2", SEG_SIZE, &opts, &seg, &created),
                 HC_OK);
        CHECK(exit_code(pid) == (created ? 11 : 10));
        CHECK_ST(hc_segment_close(seg), HC_OK);
        CHECK_ST(hc_segment_unlink_name("race2", &opts), HC_OK);
    }
}

/*
 * A segment file of another user is refused before its mode is looked
 * at, with or without allow_shared.  A file of another owner needs root
 * to make, so the check gets the fstat of a real segment with st_uid
 * changed: every test run, privileged or not, covers the refusal.
 */
static void
test_file_of_another_user_is_refused(void)
{
    hc_segment_options shared = opts;
    char path[4096];
    struct stat sb;

    make_closed("u", path, sizeof(path));
    CHECK(stat(path, &sb) == 0);
    CHECK_ST(hc_segment_check_stat(&sb, path, &opts), HC_OK);
    sb.st_uid = geteuid() + 1;
    CHECK_ST(hc_segment_check_stat(&sb, path, &opts), HC_WRONG_OWNER);
    CHECK(strstr(hc_last_detail(), "belongs to uid") != NULL);
    shared.allow_shared = true;
    sb.st_mode |= 022;
    CHECK_ST(hc_segment_check_stat(&sb, path, &shared), HC_WRONG_OWNER);
    sb.st_uid = geteuid();
    CHECK_ST(hc_segment_check_stat(&sb, path, &opts), HC_INSECURE_MODE);
    CHECK_ST(hc_segment_check_stat(&sb, path, &shared), HC_OK);
    CHECK_ST(hc_segment_unlink_name("u", &opts), HC_OK);
}

static void
test_bad_registry_entry_is_corrupt(void)
{
    hc_segment *seg;
    hc_struct_info infos[4];
    size_t count;
    uint64_t offset = SEG_SIZE;     /* past the end */
    char path[4096];

    make_closed("r", path, sizeof(path));
    overwrite(path, offsetof(hc_segment_header, sh_registry[0].re_offset),
              &offset, sizeof(offset));
    CHECK_ST(hc_segment_attach("r", &opts, &seg), HC_OK);
    CHECK_ST(hc_registry_list(seg, infos, 4, &count), HC_CORRUPT);
    CHECK_ST(hc_registry_find_or_alloc(seg, "x", 1, 8, HC_KIND_RAW, infos,
                                       &(bool) {false}), HC_CORRUPT);
    CHECK_ST(hc_segment_close(seg), HC_OK);
    CHECK_ST(hc_segment_unlink_name("r", &opts), HC_OK);
}

#define RACERS 8

static void
test_registry_race_across_fork(void)
{
    hc_segment *seg;
    pid_t pids[RACERS];
    int go[2], i, allocated = 0;
    hc_struct_info info;
    bool found;

    CHECK_ST(hc_segment_create("race", SEG_SIZE, &opts, &seg), HC_OK);
    CHECK(pipe(go) == 0);
    for (i = 0; i < RACERS; i++) {
        if ((pids[i] = test_fork()) == 0) {
            char c;

            close(go[1]);
            if (read(go[0], &c, 1) != 0)    /* EOF: everybody starts */
                _exit(2);
            if (hc_registry_find_or_alloc(seg, "x", 1, RACERS, HC_KIND_RAW,
                                          &info, &found) != HC_OK)
                _exit(3);
            seg->sg_base[info.offset + i] = (uint8_t) (i + 1);
            _exit(found ? 0 : 1);
        }
    }
    close(go[0]);
    close(go[1]);
    for (i = 0; i < RACERS; i++) {
        int code = exit_code(pids[i]);

        CHECK(code == 0 || code == 1);
        allocated += code;
    }
    CHECK(allocated == 1);
    CHECK_ST(hc_registry_find_or_alloc(seg, "x", 1, RACERS, HC_KIND_RAW,
                                       &info, &found), HC_OK);
    CHECK(found);
    for (i = 0; i < RACERS; i++)
        CHECK(seg->sg_base[info.offset + i] == i + 1);
    CHECK_ST(hc_segment_close(seg), HC_OK);
    CHECK_ST(hc_segment_unlink_name("race", &opts), HC_OK);
}

/* Fork a child that claims a slot, reports its index, then pauses. */
static pid_t
attached_child(hc_segment *seg, uint32_t *index)
{
    int p[2];
    pid_t pid;

    CHECK(pipe(p) == 0);
    if ((pid = test_fork()) == 0) {
        uint32_t mine;

        if (hc_slot_self_index(seg, &mine) != HC_OK)
            _exit(2);
        (void) !write(p[1], &mine, sizeof(mine));
        pause();
        _exit(0);
    }
    CHECK(read(p[0], index, sizeof(*index)) == (ssize_t) sizeof(*index));
    close(p[0]);
    close(p[1]);
    return pid;
}

/*
 * Fork a child that holds the fcntl lock of every slot byte except those
 * locked already and the one called spare (-1: none): all other slots
 * then look taken by a live process.
 */
static pid_t
blocker(hc_segment *seg, int spare)
{
    int p[2];
    pid_t pid;
    char c;

    CHECK(pipe(p) == 0);
    if ((pid = test_fork()) == 0) {
        for (int i = 0; i < HC_MAX_SLOTS; i++) {
            struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET,
                               .l_start = i, .l_len = 1};

            if (i != spare)
                (void) fcntl(seg->sg_fd, F_SETLK, &fl);
        }
        (void) !write(p[1], "x", 1);
        pause();
        _exit(0);
    }
    CHECK(read(p[0], &c, 1) == 1);
    close(p[0]);
    close(p[1]);
    return pid;
}

static void
test_slot_of_killed_process_is_reclaimed(void)
{
    hc_segment *seg;
    uint32_t dead, again, mine;
    pid_t victim, block, late;

    CHECK_ST(hc_segment_anonymous(SEG_SIZE, HC_HUGE_OFF, &seg), HC_OK);
    CHECK_ST(hc_slot_self_index(seg, &mine), HC_OK);
    victim = attached_child(seg, &dead);
    CHECK(dead != mine && hc_slot_count_live(seg) == 2);
    kill_and_reap(victim);
    CHECK(hc_slot_count_live(seg) == 1);
    /* Every other slot is held: the only way in is the dead one's slot. */
    block = blocker(seg, (int) dead);
    late = attached_child(seg, &again);
    CHECK(again == dead);
    kill_and_reap(late);
    kill_and_reap(block);
    /* And with no slot to spare at all, attach says so. */
    block = blocker(seg, -1);
    if ((late = test_fork()) == 0)
        _exit(hc_slot_self_index(seg, &again) == HC_SLOTS_FULL ? 0 : 1);
    CHECK(exit_code(late) == 0);
    kill_and_reap(block);
    CHECK(hc_slot_count_live(seg) == 1);
    CHECK_ST(hc_segment_close(seg), HC_OK);
}

typedef struct {
    hc_lock *lock;
    hc_cond *cv;
    hc_counter *waiting, *flag;
} scene;

/* Child: announce under the lock, wait until flag == value, exit 0. */
static pid_t
waiter(hc_segment *seg, const scene *s, int64_t value)
{
    pid_t pid = test_fork();

    if (pid == 0) {
        uint64_t deadline = hc_deadline_after(30 * HC_NS_PER_SEC);

        if (hc_lock_acquire(seg, s->lock, deadline) != HC_OK)
            _exit(2);
        hc_counter_add(s->waiting, 1);
        hc_cond_notify(s->cv, -1);
        while (hc_counter_load(s->flag) != value)
            if (hc_cond_wait(seg, s->cv, s->lock, deadline) == HC_TIMEOUT)
                _exit(3);
        hc_lock_release(seg, s->lock);
        _exit(0);
    }
    return pid;
}

/* Take the lock once count waiters announced (all are inside wait). */
static void
until_waiting(hc_segment *seg, const scene *s, int64_t count)
{
    uint64_t deadline = hc_deadline_after(30 * HC_NS_PER_SEC);

    CHECK_ST(hc_lock_acquire(seg, s->lock, deadline), HC_OK);
    while (hc_counter_load(s->waiting) < count)
        CHECK_ST(hc_cond_wait(seg, s->cv, s->lock, deadline), HC_OK);
}

static void
release_flag(hc_segment *seg, const scene *s, int64_t value)
{
    hc_counter_store(s->flag, value);
    hc_cond_notify(s->cv, -1);
    CHECK_ST(hc_lock_release(seg, s->lock), HC_OK);
}

static void
test_condvar_across_fork_with_killed_waiter(void)
{
    hc_segment *seg;
    scene s;
    pid_t doomed, survivor, later;

    CHECK_ST(hc_segment_anonymous(SEG_SIZE, HC_HUGE_OFF, &seg), HC_OK);
    s.lock = test_alloc(seg, "lock", HC_KIND_LOCK);
    s.cv = test_alloc(seg, "cv", HC_KIND_CONDITION);
    s.waiting = test_alloc(seg, "waiting", HC_KIND_COUNTER);
    s.flag = test_alloc(seg, "flag", HC_KIND_COUNTER);

    doomed = waiter(seg, &s, 1);
    survivor = waiter(seg, &s, 1);
    until_waiting(seg, &s, 2);
    kill_and_reap(doomed);
    release_flag(seg, &s, 1);
    CHECK(exit_code(survivor) == 0);

    later = waiter(seg, &s, 2);
    until_waiting(seg, &s, 3);
    release_flag(seg, &s, 2);
    CHECK(exit_code(later) == 0);
    CHECK(!hc_lock_is_locked(s.lock));
    CHECK_ST(hc_segment_close(seg), HC_OK);
}

static void
test_orphan_only_when_nobody_is_attached(void)
{
    hc_segment *seg;
    uint32_t index;
    bool orphan = false;
    pid_t child;

    CHECK_ST(hc_segment_create("o", SEG_SIZE, &opts, &seg), HC_OK);
    child = attached_child(seg, &index);
    CHECK_ST(hc_segment_close(seg), HC_OK);
    CHECK_ST(hc_segment_is_orphan("o", &opts, &orphan), HC_OK);
    CHECK(!orphan);
    kill_and_reap(child);
    CHECK_ST(hc_segment_is_orphan("o", &opts, &orphan), HC_OK);
    CHECK(orphan);
    CHECK_ST(hc_segment_unlink_name("o", &opts), HC_OK);
    CHECK_ST(hc_segment_is_orphan("o", &opts, &orphan), HC_NOT_FOUND);
}

int
main(void)
{
    snprintf(dir, sizeof(dir), "/dev/shm/hc-ctest-XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    main_pid = getpid();
    atexit(remove_dir);
    opts.dir = dir;
    TEST(test_create_attach_close);
    TEST(test_corrupt_headers_are_refused);
    TEST(test_killed_creator_is_recovered);
    TEST(test_racing_creators_share_one_file);
    TEST(test_file_of_another_user_is_refused);
    TEST(test_bad_registry_entry_is_corrupt);
    TEST(test_registry_race_across_fork);
    TEST(test_slot_of_killed_process_is_reclaimed);
    TEST(test_condvar_across_fork_with_killed_waiter);
    TEST(test_orphan_only_when_nobody_is_attached);
    return 0;
}
