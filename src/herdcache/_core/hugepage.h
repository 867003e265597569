/*-------------------------------------------------------------------------
 *
 * hugepage.h
 *	  Huge pages for a segment's mapping: asked for at creation, reported
 *	  per mapping.
 *
 * A big cache read at random misses the TLB on most lookups; 2 MiB pages
 * cover 512 times the memory per TLB entry.  Linux offers two kinds:
 *
 *   hugetlb: pages reserved ahead (vm.nr_hugepages, HugePages_Free in
 *     /proc/meminfo).  An anonymous segment asks for them with
 *     memfd_create(MFD_HUGETLB); its reservation (fallocate) fails when
 *     too few are free.  A named segment gets them by living on a
 *     hugetlbfs mount (dir=).
 *   transparent huge pages (THP) of shmem/tmpfs: the kernel backs the
 *     file with 2 MiB pages when the mount allows it: tmpfs's huge=
 *     mount option (always, within_size, or advise with MADV_HUGEPAGE)
 *     for /dev/shm and other mounts, and
 *     /sys/kernel/mm/transparent_hugepage/shmem_enabled for memfds
 *     ("deny" and "force" override both).  herdcache advises every
 *     mapping it makes with huge pages asked for, and reports what the
 *     kernel says of it ("THPeligible" in /proc/self/smaps).
 *
 * Modes: off (ordinary pages, the default), try (hugetlb for an anonymous
 * segment if the kernel has enough free, else THP where allowed, else
 * ordinary pages, silently), on (as try, but creating a segment that gets
 * neither fails with HC_NO_HUGE_PAGES, whose detail names the setting to
 * change).  Attaching never fails for it: it advises and reports.
 *
 *-------------------------------------------------------------------------
 */
#ifndef HC_HUGEPAGE_H
#define HC_HUGEPAGE_H

#include <stdint.h>

#include "status.h"

typedef enum hc_huge_mode {
    HC_HUGE_OFF = 0,
    HC_HUGE_TRY,
    HC_HUGE_ON
} hc_huge_mode;

/* What a mapping got. */
typedef enum hc_huge_got {
    HC_HUGE_NOT_ASKED = 0,      /* mode off: ordinary pages */
    HC_HUGE_NONE,               /* asked, but ordinary pages */
    HC_HUGE_THP,                /* transparent huge pages are eligible */
    HC_HUGE_HUGETLB             /* reserved huge pages (hugetlbfs) */
} hc_huge_got;

/* "off", "none", "thp", "hugetlb". */
const char *hc_huge_got_name(hc_huge_got got);

/*
 * For an anonymous segment of *size bytes with mode try or on: a memfd of
 * reserved huge pages, its size rounded up to whole huge pages, or -1 if
 * the kernel has too few free (errno and the detail say why).
 */
int hc_huge_memfd(uint64_t *size);

/*
 * After mapping [base, base + size) of a segment: advise THP (mode try or
 * on) and find what the mapping gets.  HC_NO_HUGE_PAGES only for mode on
 * when it gets ordinary pages (and the caller is creating); else HC_OK.
 */
hc_status hc_huge_advise(void *base, uint64_t size, hc_huge_mode mode,
                         hc_huge_got *got);

#endif /* HC_HUGEPAGE_H */
