/*
 * test_lock.c - the lock survives its owner's death; counters add up.
 */
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "counter.h"
#include "harness.h"
#include "lock.h"
#include "registry.h"
#include "segment.h"

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

int
main(void)
{
    TEST(test_owner_death_is_recovered);
    TEST(test_counter_adds_across_processes);
    TEST(test_a_lock_left_by_an_exited_thread_of_ours_is_taken_over);
    return 0;
}
