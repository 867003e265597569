/*-------------------------------------------------------------------------
 *
 * hugepage.c
 *	  Huge pages for segments (see hugepage.h).
 *
 *-------------------------------------------------------------------------
 */
#include "hugepage.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SHMEM_ENABLED "/sys/kernel/mm/transparent_hugepage/shmem_enabled"

const char *
hc_huge_got_name(hc_huge_got got)
{
    static const char *const names[] = {"off", "none", "thp", "hugetlb"};

    return got <= HC_HUGE_HUGETLB ? names[got] : "none";
}

/* A field of /proc/meminfo (its number as printed), 0 if absent. */
static unsigned long long
meminfo(const char *field)
{
    char line[256];
    unsigned long long value = 0;
    size_t len = strlen(field);
    FILE *f = fopen("/proc/meminfo", "re");

    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, field, len) == 0 && line[len] == ':') {
            sscanf(line + len + 1, "%llu", &value);
            break;
        }
    fclose(f);
    return value;
}

int
hc_huge_memfd(uint64_t *size)
{
    unsigned long long page = meminfo("Hugepagesize") * 1024;
    uint64_t rounded;
    int fd, rc;

    if (page == 0)
        page = UINT64_C(2) << 20;
    rounded = (*size + page - 1) / page * page;
    fd = memfd_create("herdcache", MFD_CLOEXEC | MFD_ALLOW_SEALING
                      | MFD_HUGETLB);
    if (fd < 0) {
        hc_set_detail("this kernel gives no hugetlb memfd (%s)",
                      strerror(errno));
        return -1;
    }
    /* Reserve now: a page missing later would be a SIGBUS. */
    rc = posix_fallocate(fd, 0, (off_t) rounded);
    if (rc != 0) {
        hc_set_detail("the kernel has %llu free huge pages of %llu kB "
                      "(HugePages_Free in /proc/meminfo), the segment needs "
                      "%llu", meminfo("HugePages_Free"), page / 1024,
                      (unsigned long long) (rounded / page));
        close(fd);
        errno = rc;
        return -1;
    }
    *size = rounded;
    return fd;
}

/* Does /proc/self/smaps say the mapping at base may get THP? */
static bool
thp_eligible(const void *base)
{
    char line[512], start[32];
    bool ours = false, eligible = false;
    FILE *f = fopen("/proc/self/smaps", "re");

    if (f == NULL)
        return false;
    snprintf(start, sizeof(start), "%lx-", (unsigned long) (uintptr_t) base);
    while (fgets(line, sizeof(line), f) != NULL) {
        if (!ours) {
            ours = strncmp(line, start, strlen(start)) == 0;
            continue;
        }
        if (strncmp(line, "THPeligible:", 12) == 0) {
            eligible = strtol(line + 12, NULL, 10) == 1;
            break;
        }
    }
    fclose(f);
    return eligible;
}

/* The bracketed choice of shmem_enabled, "" if unreadable. */
static void
shmem_enabled(char *out, size_t cap)
{
    char line[256], *open_, *close_;
    FILE *f = fopen(SHMEM_ENABLED, "re");

    out[0] = '\0';
    if (f == NULL)
        return;
    if (fgets(line, sizeof(line), f) != NULL
        && (open_ = strchr(line, '[')) != NULL
        && (close_ = strchr(open_, ']')) != NULL) {
        *close_ = '\0';
        snprintf(out, cap, "%s", open_ + 1);
    }
    fclose(f);
}

hc_status
hc_huge_advise(void *base, uint64_t size, hc_huge_mode mode,
               hc_huge_got *got)
{
    char shmem[32];

    if (*got == HC_HUGE_HUGETLB)
        return HC_OK;
    if (mode == HC_HUGE_OFF) {
        *got = HC_HUGE_NOT_ASKED;
        return HC_OK;
    }
    /* EINVAL: a kernel without THP; the report below says "none". */
    (void) madvise(base, size, MADV_HUGEPAGE);
    *got = thp_eligible(base) ? HC_HUGE_THP : HC_HUGE_NONE;
    if (*got == HC_HUGE_THP || mode != HC_HUGE_ON)
        return HC_OK;
    shmem_enabled(shmem, sizeof(shmem));
    hc_set_detail("huge_pages='on' found none for this segment: "
                  "HugePages_Free is %llu (an anonymous segment takes those: "
                  "sysctl vm.nr_hugepages=N), and transparent huge pages "
                  "are not allowed for it (shmem_enabled is '%s'; a tmpfs "
                  "such as /dev/shm needs the mount option huge=within_size "
                  "or huge=advise)", meminfo("HugePages_Free"), shmem);
    return HC_NO_HUGE_PAGES;
}
