/*-------------------------------------------------------------------------
 *
 * queue.h
 *	  A message queue in shared memory: a ring of bytes after PostgreSQL's
 *	  shm_mq, for one or many producers and one or many consumers.
 *
 * The model.  A queue is one structure of a segment: a header, a table of
 * endpoints (which processes put and get), and a ring of bytes.  Messages
 * are records in the ring: an 8-byte header (length and a check word) and
 * the payload, padded to 8 bytes; a record may wrap around the end of the
 * ring.  Two 64-bit counters that only ever grow say where the records
 * are: bytes_written (q_put.qs_bytes) ends the last published record and
 * bytes_read (q_get.qs_bytes) starts the first unread one.  Their
 * difference is the unread data; it is never more than the ring's size.
 *
 * A producer copies its records into the free part of the ring and then
 * publishes them all at once by storing the new bytes_written; a consumer
 * copies records out and then frees them by storing the new bytes_read.
 * So a producer killed mid-copy leaves nothing visible (its records were
 * never published) and a consumer killed mid-copy leaves its message in
 * place for the next consumer.  A batch (put_many, get_many) publishes
 * once, not once per message, as shm_mq's writer does.
 *
 * Sides.  Producers form one side and consumers the other.  By default
 * either side may have many processes and threads: they take the side's
 * lock (an owner-recording hc_lock, so a holder that dies is taken over)
 * around each batch, as README.barrier says concurrent writers must.  A
 * queue made with HC_QUEUE_SINGLE_PRODUCER (or _CONSUMER) has, on that
 * side, exactly one thread of one process (until that process detaches or
 * dies), and takes no lock on the hot path; the lock then only arbitrates
 * who that one is.
 *
 * Waiting.  A side with nothing to do (no data, no room) spins briefly,
 * then sleeps on its futex word (qs_wake_seq) in steps of
 * HC_QUEUE_PROBE_NS.  Before it sleeps it counts itself in qs_waiters, and
 * the other side makes the wake-up system call only when that count is
 * not zero: no system call per message while nobody sleeps.  After each
 * step a sleeper checks, through the endpoint table and the process slots
 * (slot.h), whether any process of the other side still lives; if every
 * one that joined is dead, it stops with HC_PEER_DIED instead of hanging.
 * A process that leaves cleanly (hc_queue_detach, done at exit by the
 * Python layer) is not a death, and takes its side's dead with it, as
 * does a newcomer to that side: only deaths nobody outlived are reported.
 *
 * Sizes.  A message is at most hc_queue_max_message() bytes: the ring less
 * one header.  Larger ones are refused with HC_TOO_LARGE, not streamed: a
 * streamed message would be visible in part before it is whole, which a
 * producer killed in the middle would leave torn.
 *
 *-------------------------------------------------------------------------
 */
#ifndef HC_QUEUE_H
#define HC_QUEUE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lock.h"
#include "segment.h"
#include "status.h"

/* q_flags, chosen by whoever initialises the queue */
#define HC_QUEUE_SINGLE_PRODUCER UINT32_C(1)
#define HC_QUEUE_SINGLE_CONSUMER UINT32_C(2)
#define HC_QUEUE_FLAGS_MASK UINT32_C(3)

#define HC_QUEUE_RECORD_HEADER 8    /* bytes before each payload */
#define HC_QUEUE_MIN_RING 64        /* bytes */
#define HC_QUEUE_PROBE_NS (UINT64_C(10) * 1000 * 1000)

/* A deadline that means "do not wait at all" (HC_FOREVER: no deadline). */
#define HC_QUEUE_NOWAIT UINT64_C(0)

/* The sides, as indexes of the handle's cursors and of role bits. */
typedef enum hc_queue_side_id {
    HC_QUEUE_PUT = 0,
    HC_QUEUE_GET = 1
} hc_queue_side_id;

/*
 * One side of the queue in shared memory: its position, its lock and its
 * sleepers, each on a cache line of its own, so that the other side's hot
 * reads (the position when its cached copy runs out, the waiter count
 * after each publish) never share a line with this side's hot writes.
 *
 * Notes on synchronization
 *
 * qs_bytes: the side's position (bytes_written for producers, bytes_read
 * for consumers).  Written only by the side's current owner: the holder
 * of qs_lock, or the single thread of a single-side queue.  It is stored
 * with release after the ring bytes it covers were written (producers) or
 * read (consumers), and the other side loads it with acquire before it
 * touches those bytes (the pairs are named in queue.c).  The owner reads
 * its own side's value relaxed: it wrote it, or the lock's acquire orders
 * it after the last owner's store.
 * qs_messages: messages moved by the side.  Written like qs_bytes (just
 * before it, relaxed); read relaxed, for the approximate qsize only.
 * qs_lock: see lock.h; taken around every batch of a many-process side,
 * and only to join a single-process side.
 * qs_single_token, qs_single_tid: who the one thread of a single-process
 * side is, and (the token's top bit, SINGLE_BUSY in queue.c) whether it
 * is in a batch.  The tid and a new owner's token are written under
 * qs_lock; the owner sets and clears the bit outside it (a CAS from its
 * bare token, a release store), and a clean detach CASes the bare token
 * to 0, so a detach never takes a side from a running batch.  Pair 16 of
 * barriers.md orders the last owner's publish before the next one's join.
 * qs_waiters: threads of this side that are asleep or about to sleep, plus
 * any a killed sleeper left behind until a scan repairs it.  Changed by
 * seq_cst RMWs; the other side reads it after a seq_cst fence (the Dekker
 * pair in queue.c that makes a lost wake-up impossible).
 * qs_wake_seq: the futex word this side sleeps on.  The other side
 * increments it (release) before each wake-up; a sleeper reads it
 * (acquire) before its last check of the predicate.
 */
typedef struct hc_queue_side {
    _Alignas(HC_CACHE_LINE) _Atomic uint64_t qs_bytes;
    _Atomic uint64_t qs_messages;

    _Alignas(HC_CACHE_LINE) hc_lock qs_lock;
    _Atomic uint32_t qs_single_token;
    _Atomic uint32_t qs_single_tid;

    _Alignas(HC_CACHE_LINE) _Atomic uint32_t qs_waiters;
    _Atomic uint32_t qs_wake_seq;
} hc_queue_side;

/*
 * The queue in shared memory.  All zero bytes (what the registry hands
 * out) is "not initialised yet"; see hc_queue_open().
 *
 * Notes on synchronization
 *
 * q_init: 0, then the token of the process initialising it (CAS), then
 * HC_QUEUE_READY (release store, after q_flags and q_ring_size).  Readers
 * load it with acquire before they read those two fields, which never
 * change again.  An initialiser that dies is replaced (its token is dead).
 * q_ring_size is a check only: every process computes the ring's size
 * from the registry's size of the structure, never trusts this copy.
 * q_closed: 0 until someone closes the queue, then 1 for good; seq_cst,
 * read by every operation and wait.
 * q_endpoints: one 64-bit word per process slot (see ENDPOINT_* in
 * queue.c): the slot token of the process using that slot, its roles
 * (producer, consumer) and how many of its threads sleep on each side.
 * Written by that process (CAS or RMW), and by anyone only to clean up
 * after a dead token (CAS, so a new owner of the slot is never
 * overwritten).  Read without a lock by sleepers that look for live peers.
 * q_ring: written only in the free part by the producers' owner, read
 * only in the published part by the consumers' owner; the counters above
 * say which part is which, so the ring itself needs no lock.
 */
typedef struct hc_queue {
    _Atomic uint32_t q_init;
    uint32_t q_flags;
    uint64_t q_ring_size;
    _Atomic uint32_t q_closed;

    hc_queue_side q_put;
    hc_queue_side q_get;

    _Alignas(HC_CACHE_LINE) _Atomic uint64_t q_endpoints[HC_MAX_SLOTS];
    _Alignas(HC_CACHE_LINE) uint8_t q_ring[];
} hc_queue;

/*
 * A process-local cursor on one side, valid between *_begin and *_end
 * (while the side is owned): the position reached so far, where the batch
 * started, and a cached lower bound of the other side's position, so that
 * the other side's cache line is read only when the cache runs out.
 */
typedef struct hc_queue_cursor {
    uint64_t qc_pos;
    uint64_t qc_start;
    uint64_t qc_messages;
    uint64_t qc_other;          /* <= the other side's position */
    uint64_t qc_peek;           /* GET: length of the message found by next */
    bool qc_open;
    bool qc_owner_died;         /* this batch took the lock from a dead owner */
} hc_queue_cursor;

/* The process-local handle (qh_ prefix).  Threads share it; see above. */
typedef struct hc_queue_handle {
    hc_segment *qh_seg;
    hc_queue *qh_queue;
    uint64_t qh_ring_size;      /* trusted: from the registry's size */
    uint64_t qh_ring_mask;      /* ring size - 1 if a power of two, else 0 */
    uint32_t qh_flags;
    hc_queue_cursor qh_cursor[2];   /* [HC_QUEUE_PUT], [HC_QUEUE_GET] */
} hc_queue_handle;

/* Bytes to allocate for a queue whose ring holds ring_size bytes. */
uint64_t hc_queue_struct_size(uint64_t ring_size);

/* The largest message a ring of ring_size bytes takes. */
uint64_t hc_queue_max_message(uint64_t ring_size);

/*
 * Attach the queue at offset (a structure of size bytes), initialising it
 * with flags if nobody has.  Free *out with hc_queue_free() (after
 * hc_queue_detach(), unless the segment is gone).
 * Errors: HC_BAD_ARGUMENT (too small), HC_CORRUPT, HC_NOT_READY, HC_SYSTEM.
 */
hc_status hc_queue_open(hc_segment *seg, uint64_t offset, uint64_t size,
                        uint32_t flags, hc_queue_handle **out);

/*
 * Forget this process's roles, so that its clean exit is not taken for a
 * death by the other side; the next put or get joins again.  HC_BUSY,
 * with nothing of that side given up, while a batch of this process runs
 * on a single side (another thread's): a newcomer would otherwise join
 * that side and write beside it.
 */
hc_status hc_queue_detach(hc_queue_handle *qh);
void hc_queue_free(hc_queue_handle *qh);

/*
 * Producing, in batches:
 *
 *	hc_queue_put_begin(qh, deadline);      // own the producer side
 *	while (more && hc_queue_put_next(qh, data, len) == HC_OK)
 *		...;
 *	hc_queue_put_end(qh);                  // publish, wake, release
 *
 * put_begin returns HC_OK, HC_WOULD_BLOCK (deadline HC_QUEUE_NOWAIT and
 * another live thread owns the side; a dead owner's side is taken over,
 * as with a deadline), HC_TIMEOUT, HC_INTERRUPTED, HC_CLOSED,
 * HC_BUSY (a single-producer queue whose producer is another live thread)
 * or a slot error.  put_next returns HC_OK, HC_WOULD_BLOCK (no room: end
 * the batch, hc_queue_wait_put(), begin again), HC_TOO_LARGE or
 * HC_CORRUPT.  put_end must follow every successful put_begin.
 */
hc_status hc_queue_put_begin(hc_queue_handle *qh, uint64_t deadline);
hc_status hc_queue_put_next(hc_queue_handle *qh, const void *data,
                            size_t len);
void hc_queue_put_end(hc_queue_handle *qh);

/*
 * Consuming, in batches: get_begin as put_begin; get_next finds the next
 * message and tells its length (HC_WOULD_BLOCK: none; HC_CORRUPT: its
 * header is invalid), get_copy copies it out and moves past it, get_end
 * frees what was read and releases the side.
 */
hc_status hc_queue_get_begin(hc_queue_handle *qh, uint64_t deadline);
hc_status hc_queue_get_next(hc_queue_handle *qh, size_t *len);
void hc_queue_get_copy(hc_queue_handle *qh, void *dst);
void hc_queue_get_end(hc_queue_handle *qh);

/*
 * Wait, owning nothing, until a record of len bytes fits (put) or a
 * message is there (get).  HC_OK (look again: another thread may be
 * first), HC_TIMEOUT, HC_INTERRUPTED (a signal: call again), HC_CLOSED
 * (put: closed; get: closed and empty), HC_PEER_DIED (every process of
 * the other side that joined is dead), HC_TOO_LARGE.
 */
hc_status hc_queue_wait_put(hc_queue_handle *qh, size_t len,
                            uint64_t deadline);
hc_status hc_queue_wait_get(hc_queue_handle *qh, uint64_t deadline);

/* One message, blocking until the deadline (for C users and tests). */
hc_status hc_queue_send(hc_queue_handle *qh, const void *data, size_t len,
                        uint64_t deadline);
hc_status hc_queue_recv(hc_queue_handle *qh, void *buf, size_t cap,
                        size_t *len, uint64_t deadline);

/* Close the queue for every process and wake every sleeper. */
void hc_queue_close(hc_queue_handle *qh);
bool hc_queue_is_closed(const hc_queue_handle *qh);

/* Approximate counts of unread messages and bytes, for qsize(). */
void hc_queue_counts(const hc_queue_handle *qh, uint64_t *messages,
                     uint64_t *bytes);

#endif /* HC_QUEUE_H */
