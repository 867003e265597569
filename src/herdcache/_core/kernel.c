/*-------------------------------------------------------------------------
 *
 * kernel.c
 *	  The kernel self-test described in kernel.h.
 *
 *-------------------------------------------------------------------------
 */
#include "kernel.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "clock.h"
#include "futex.h"
#include "inject.h"
#include "slot.h"

/*
 * A lock through one description of a memfd must be seen, as a conflict,
 * through a second description of the same file opened by this very
 * process: that is what OFD locks do and classic POSIX locks do not.
 */
static hc_status
ofd_locks_work(void)
{
    char path[64];
    int fd, other = -1, saved;
    hc_status st = HC_SYSTEM;

    HC_INJECT_RETURN("kernel.selftest.ofd");
    fd = memfd_create("herdcache-selftest", MFD_CLOEXEC);
    if (fd < 0)
        return HC_SYSTEM;
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    if (ftruncate(fd, 1) == 0
        && (other = open(path, O_RDWR | O_CLOEXEC)) >= 0
        && hc_ofd_lock(fd, F_OFD_SETLK, F_WRLCK, 0, 1) == 0
        && hc_ofd_lock(other, F_OFD_GETLK, F_WRLCK, 0, 1) == 1)
        st = HC_OK;
    saved = errno;
    if (other >= 0)
        close(other);
    close(fd);
    errno = saved;
    return st;
}

/* FUTEX_WAIT_BITSET on a word that differs from the expected value must
 * return at once (EAGAIN), which also proves the call is known. */
static hc_status
futex_works(void)
{
    _Atomic uint32_t word = 1;

    HC_INJECT_RETURN("kernel.selftest.futex");
    return hc_futex_wait(&word, 0, hc_deadline_after(HC_NS_PER_MS));
}

hc_status
hc_kernel_selftest(void)
{
    if (futex_works() != HC_OK) {
        hc_set_detail("this kernel has no working futex(FUTEX_WAIT_BITSET) "
                      "(Linux 2.6.25 and later), which herdcache's locks "
                      "and waits use");
        return HC_SYSTEM;
    }
    if (ofd_locks_work() != HC_OK) {
        hc_set_detail("this kernel has no working open file description "
                      "locks (F_OFD_SETLK, Linux 3.15 and later), which "
                      "herdcache needs to tell live processes from dead "
                      "ones; run it where fcntl locks are not blocked (a "
                      "seccomp sandbox, some emulators)");
        return HC_SYSTEM;
    }
    return HC_OK;
}

static hc_status once_result;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void
run_once(void)
{
    once_result = hc_kernel_selftest();
}

hc_status
hc_kernel_check(void)
{
    pthread_once(&once, run_once);
    /* The detail was set in whichever thread ran the test: say it again. */
    if (once_result != HC_OK)
        hc_set_detail("the kernel self-test failed: open file description "
                      "locks (Linux 3.15+) and futex(FUTEX_WAIT_BITSET) are "
                      "required");
    return once_result;
}
