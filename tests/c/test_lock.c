/*
 * test_lock.c - the lock survives its owner's death; counters add up.
 */
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "counter.h"
#include "harness.h"
#include "lock.h"
#include "registry.h"
#include "segment.h"
#include "slot.h"

static hc_segment *
new_segment(void)
{
    hc_segment *seg;

    CHECK_ST(hc_segment_anonymous(1 << 20, HC_HUGE_OFF, &seg), HC_OK);
    return seg;
}

static void
test_owner_death_is_recovered(void)
{
    hc_segment *seg = new_segment();
    hc_lock *lock = test_alloc(seg, "l", HC_KIND_LOCK);
    int pipefd[2], status;
    char c;
    pid_t pid;

    CHECK(pipe(pipefd) == 0);
    pid = test_fork();
    if (pid == 0) {
        if (hc_lock_acquire(seg, lock, HC_FOREVER) != HC_OK)
            _exit(2);
        (void) !write(pipefd[1], "x", 1);
        pause();
        _exit(0);
    }
    CHECK(read(pipefd[0], &c, 1) == 1);
    CHECK_ST(hc_lock_try_acquire(seg, lock), HC_WOULD_BLOCK);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    CHECK_ST(hc_lock_acquire(seg, lock, hc_deadline_after(HC_NS_PER_SEC)),
             HC_OWNER_DIED);
    CHECK(hc_lock_held_by_me(seg, lock));
    CHECK_ST(hc_lock_acquire(seg, lock, HC_FOREVER), HC_DEADLOCK);
    CHECK_ST(hc_lock_release(seg, lock), HC_OK);
    CHECK_ST(hc_lock_release(seg, lock), HC_NOT_OWNER);
    CHECK_ST(hc_segment_close(seg), HC_OK);
    close(pipefd[0]);
    close(pipefd[1]);
}

struct seg_lock {
    hc_segment *seg;
    hc_lock *lock;
};

static void *
take_and_exit(void *arg)
{
    struct seg_lock *sl = arg;

    return (void *) (intptr_t) hc_lock_acquire(sl->seg, sl->lock, HC_FOREVER);
}

/*
 * A lock whose word names this very process, taken by a thread that has
 * since exited, is not waited for until the deadline (nobody can ever
 * release it): it is taken over, owner died (issue 9, defect 11).
 */
static void
test_a_lock_left_by_an_exited_thread_of_ours_is_taken_over(void)
{
    hc_segment *seg = new_segment();
    hc_lock *lock = test_alloc(seg, "l", HC_KIND_LOCK);
    struct seg_lock sl = {seg, lock};
    pthread_t thread;
    void *st;

    CHECK(pthread_create(&thread, NULL, take_and_exit, &sl) == 0);
    CHECK(pthread_join(thread, &st) == 0);
    CHECK((hc_status) (intptr_t) st == HC_OK);
    CHECK_ST(hc_lock_acquire(seg, lock, hc_deadline_after(2 * HC_NS_PER_SEC)),
             HC_OWNER_DIED);
    CHECK_ST(hc_lock_release(seg, lock), HC_OK);
    /* the exited thread's acquire still counts as a call in flight */
    hc_segment_leave(seg);
    CHECK_ST(hc_segment_close(seg), HC_OK);
}

static void
test_counter_adds_across_processes(void)
{
    hc_segment *seg = new_segment();
    hc_counter *c = test_alloc(seg, "c", HC_KIND_COUNTER);
    int i, status;

    for (i = 0; i < 4; i++) {
        if (test_fork() == 0) {
            for (int j = 0; j < 100000; j++)
                hc_counter_add(c, 1);
            _exit(0);
        }
    }
    for (i = 0; i < 4; i++)
        wait(&status);
    CHECK(hc_counter_load(c) == 400000);
    CHECK_ST(hc_segment_close(seg), HC_OK);
}

/* Field 22 of /proc/PID/stat, the process's start time (0 if unknown). */
static uint64_t
start_time_of(pid_t pid)
{
    char path[64], buf[1024], *p;
    unsigned long long start = 0;
    FILE *f;
    int field;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
    if ((f = fopen(path, "re")) == NULL)
        return 0;
    p = fgets(buf, sizeof(buf), f) ? strrchr(buf, ')') : NULL;
    fclose(f);
    for (field = 2; p != NULL && field < 22; field++)
        p = strchr(p + 1, ' ');
    if (p != NULL)
        start = strtoull(p + 1, NULL, 10);
    return start;
}

/* Make slot index (unlocked, unused) look held by pid since start, and
 * the lock's word name it; returns the forged token. */
static uint32_t
forge_owner(hc_segment *seg, hc_lock *lock, uint32_t index, pid_t pid,
            uint64_t start)
{
    hc_slot *slot = &seg->sg_header->sh_slots[index];
    uint32_t gen = atomic_load(&slot->sl_generation) + 1;
    uint32_t token = ((gen & HC_TOKEN_GEN_MASK) << HC_SLOT_INDEX_BITS) | index;

    atomic_store(&slot->sl_pid, (uint32_t) pid);
    atomic_store(&slot->sl_start_time, start);
    atomic_store(&slot->sl_generation, gen);
    atomic_store(&lock->lk_word, token | HC_LOCK_LOCKED);
    return token;
}

/*
 * Scenario 13 and issue 9, defect 2: a slot whose byte nobody locks is
 * dead unless its recorded process still runs with the segment mapped.
 * Live unrelated processes (an exec'd `sleep`, which maps nothing; the
 * same with a wrong start time, as after pid reuse) are judged dead at
 * once; a live process that maps the segment but lost its lock
 * descriptor (here this very process, in a slot not its own) never is,
 * over many probes.
 */
static void
test_pid_liveness_veto(void)
{
    hc_segment *seg = new_segment();
    hc_lock *lock = test_alloc(seg, "l", HC_KIND_LOCK);
    char *argv[] = {"sleep", "60", NULL};
    uint32_t mine, other, token;
    pid_t sleeper;
    int i, status;

    CHECK_ST(hc_slot_self_index(seg, &mine), HC_OK);
    other = (mine + 1) % HC_MAX_SLOTS;
    CHECK(posix_spawnp(&sleeper, "sleep", NULL, NULL, argv, NULL) == 0);
    while (start_time_of(sleeper) == 0)
        ;
    forge_owner(seg, lock, other, sleeper, start_time_of(sleeper) + 1);
    CHECK_ST(hc_lock_try_acquire(seg, lock), HC_OWNER_DIED);
    CHECK_ST(hc_lock_release(seg, lock), HC_OK);
    forge_owner(seg, lock, other, sleeper, start_time_of(sleeper));
    CHECK_ST(hc_lock_try_acquire(seg, lock), HC_OWNER_DIED);
    CHECK_ST(hc_lock_release(seg, lock), HC_OK);
    token = forge_owner(seg, lock, other, getpid(), start_time_of(getpid()));
    for (i = 0; i < 10000; i++)
        CHECK(hc_slot_token_alive(seg, token));
    CHECK_ST(hc_lock_try_acquire(seg, lock), HC_WOULD_BLOCK);
    atomic_store(&seg->sg_header->sh_slots[other].sl_pid, 0);
    CHECK_ST(hc_lock_try_acquire(seg, lock), HC_OWNER_DIED);
    CHECK_ST(hc_lock_release(seg, lock), HC_OK);
    kill(sleeper, SIGKILL);
    waitpid(sleeper, &status, 0);
    CHECK_ST(hc_segment_close(seg), HC_OK);
}

int
main(void)
{
    TEST(test_owner_death_is_recovered);
    TEST(test_pid_liveness_veto);
    TEST(test_counter_adds_across_processes);
    TEST(test_a_lock_left_by_an_exited_thread_of_ours_is_taken_over);
    return 0;
}
