/*-------------------------------------------------------------------------
 *
 * slot.h
 *	  Process slots: who is attached to a segment, and is it still alive.
 *
 * Every process that uses a segment holds one slot of the header's slot
 * table.  Holding it means holding an open file description (OFD) write
 * lock on the byte whose offset is the slot's index, through a description
 * private to the process.  The kernel drops such a lock when the process
 * dies, however it dies: so "is the byte locked?" answers "is the slot's
 * process alive?" without ever looking at a pid, which the kernel reuses.
 * The pid and start time kept in the slot serve humans and tools, and one
 * veto: see "Closed descriptors" below.
 *
 * A slot's identity over time is its token: the index in the low
 * HC_SLOT_INDEX_BITS bits and the slot's generation above them.  Each
 * claim bumps the generation, so a token recorded in a lock word or a
 * single-flight owner field stops matching the moment the slot passes to
 * another process, even if that happens between two looks.
 *
 * Closed descriptors.  Code that closes descriptors it does not own
 * (os.closerange, daemonizers) drops a live process's slot lock, so the
 * lock alone would let others take its locks while it runs (two owners).
 * So a slot whose byte is unlocked is judged dead only if its recorded
 * process is not still running with the segment mapped: the pid's
 * /proc/PID/stat start time must match the slot's (else the pid was
 * reused), the process must not be a zombie, and /proc/PID/maps must not
 * map the segment's file (exec() unmaps it; closing descriptors does
 * not).  This veto only ever keeps a slot alive, and costs a /proc read
 * only when the lock already says "dead".  The process itself notices at
 * its next probe or contended lock (hc_slot_verify()): it re-opens its
 * descriptions and re-locks its slot, or fails with HC_LIVENESS_LOST.
 *
 * Notes on synchronization
 *
 * Claiming is arbitrated by the kernel: F_SETLK on the slot's byte
 * succeeds for exactly one process, and only while no live process holds
 * it.  The winner alone then writes the slot's fields; the generation is
 * stored with release after pid and start time, and hc_slot_token_alive()
 * reads it with acquire before and after its fcntl probe (a change in
 * between means the slot moved on, i.e. the old owner is gone).
 *
 *-------------------------------------------------------------------------
 */
#ifndef HC_SLOT_H
#define HC_SLOT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "segment.h"

#define HC_TOKEN_INDEX_MASK ((UINT32_C(1) << HC_SLOT_INDEX_BITS) - 1)
#define HC_TOKEN_GEN_MASK (HC_LOCK_TOKEN >> HC_SLOT_INDEX_BITS)

/* Claim a free or dead slot for the calling process. */
hc_status hc_slot_claim(hc_segment *seg);

/* Release this process's slot (its fcntl lock and its fields). */
void hc_slot_release(hc_segment *seg);

/*
 * This process's token, claiming a fresh slot first if the process forked
 * since the last claim (the child inherited the parent's token but not its
 * lock).  *token is never 0.
 */
hc_status hc_slot_self(hc_segment *seg, uint32_t *token);

/* Index of this process's slot (claiming as hc_slot_self does). */
hc_status hc_slot_self_index(hc_segment *seg, uint32_t *index);

/* True unless the process that held token is certainly gone. */
bool hc_slot_token_alive(hc_segment *seg, uint32_t token);

/*
 * Check that this process's descriptions of the segment (sg_fd, the
 * mapping's, and sg_lock_fd, the slot lock's) are still open on its file,
 * and re-open and re-lock them if not.  HC_LIVENESS_LOST (for good: every
 * later hc_slot_self() fails too) when the slot cannot be proved ours
 * again: another process took it, or an anonymous segment lost both.
 */
hc_status hc_slot_verify(hc_segment *seg);

/* Number of slots held by live processes (one fcntl probe per used slot). */
uint32_t hc_slot_count_live(hc_segment *seg);

/* True if no process holds any slot of the file (orphan test). */
bool hc_slot_none_attached(int fd);

/* fcntl OFD lock (F_OFD_SETLK) or probe (F_OFD_GETLK: 1 if held). */
int hc_ofd_lock(int fd, int cmd, short type, off_t start, off_t len);

#endif /* HC_SLOT_H */
