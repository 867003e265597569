/*-------------------------------------------------------------------------
 *
 * kernel.h
 *	  A self-test of the kernel features the core relies on, run once per
 *	  process before its first segment (RELIABILITY.md scenario 12).
 *
 * Everything herdcache promises about dead processes rests on two Linux
 * features: open file description locks (F_OFD_SETLK, Linux 3.15), which
 * tell a live process from a dead one and conflict between two
 * descriptions of one process, and futexes with FUTEX_WAIT_BITSET (an
 * absolute CLOCK_MONOTONIC deadline).  A kernel or a sandbox (seccomp,
 * gVisor, an emulator) that lacks or fakes them would let locks be stolen
 * from live processes or waits never end, so the first segment a process
 * opens checks both, as tdb checks its locks at open, and refuses with a
 * clear error if either is missing.
 *
 *-------------------------------------------------------------------------
 */
#ifndef HC_KERNEL_H
#define HC_KERNEL_H

#include "status.h"

/* Run the checks now: HC_OK, or HC_SYSTEM with a detail naming what is
 * missing (errno as the failing call left it). */
hc_status hc_kernel_selftest(void);

/* hc_kernel_selftest() once per process; later calls return its result. */
hc_status hc_kernel_check(void);

#endif /* HC_KERNEL_H */
