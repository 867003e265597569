/*-------------------------------------------------------------------------
 *
 * py_binding.h
 *	  herdcache._core: what the binding's files (py_*.c) share.
 *
 * The binding turns the C core into Python, one file per Python type as
 * CPython's Modules/_sqlite does: py_module.c (module init, constants),
 * py_errors.c (hc_status -> exception), py_args.c (keys, seconds,
 * vectorcall arguments), py_segment.c (Segment and the functions by
 * segment name), py_sync.c (Lock, Condition, Counter), py_cache.c (with
 * single flight) and py_queue.c.  Every type is subclassable, and the
 * herdcache class of the same name subclasses it (docs/design.md).  Only files named py_* include Python.h: the core stays
 * Python-free, and tests/c builds it without them.
 *
 * Conventions, the same in every file:
 *   - a failure returns NULL (or -1) with the Python exception set; core
 *     statuses become exceptions only through hcpy_raise_in();
 *   - every call into the core that may sleep or copy a lot runs with the
 *     GIL released, and every such call on segment memory goes through
 *     PINNED_UNLOCKED, so close() from another thread cannot unmap it;
 *   - the core never calls back into Python; a wait that a signal
 *     interrupts comes back as HC_INTERRUPTED and the binding runs the
 *     Python signal handlers (PyErr_CheckSignals) before it waits again.
 *
 * Lifetimes.  Every object made from a segment (a Lock, a Condition, a
 * Counter, a Cache, a Queue, a memoryview) holds a reference to its
 * Segment object.  close() refuses while a lock is held, a view is
 * exported or a GIL-free call is in flight, so no object ever touches
 * unmapped memory; after close() their methods raise SegmentClosed.
 *
 *-------------------------------------------------------------------------
 */
#ifndef HC_PY_BINDING_H
#define HC_PY_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "clock.h"
#include "segment.h"
#include "status.h"

/*
 * UNLOCKED: run a core call with the GIL released (no segment memory).
 * The thread's failure detail is cleared first, so a failure reports only
 * what this call said, never what an earlier, handled failure left.
 */
#define UNLOCKED(out, call) \
    Py_BEGIN_ALLOW_THREADS \
    hc_clear_detail(); \
    (out) = (call); \
    Py_END_ALLOW_THREADS

/*
 * PINNED_UNLOCKED: the same for a call that uses segment seg: close()
 * from another thread refuses while the call is in flight (sg_busy), so
 * the mapping cannot vanish under it.  Every GIL-free call on a segment
 * goes through here.
 */
#define PINNED_UNLOCKED(seg, out, call) \
    do { \
        hc_segment_enter(seg); \
        UNLOCKED(out, call); \
        hc_segment_leave(seg); \
    } while (0)

/* ---------------------------------------------------------------------- */
/* Segment (py_segment.c)                                                 */
/* ---------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    hc_segment *seg;            /* NULL once closed */
    Py_ssize_t exports;         /* buffers handed out */
    Py_ssize_t locks_held;      /* locks taken through this object... */
    uint64_t locks_epoch;       /* ...in this process (hc_fork_epoch()) */
} SegmentObject;

extern PyTypeObject hcpy_Segment_Type;

/* The live segment, or NULL with SegmentClosed. */
hc_segment *hcpy_segment_get(SegmentObject *self);
/* A new object of type (Segment or a subclass) owning seg (closed again
 * on failure). */
PyObject *hcpy_segment_wrap(PyTypeObject *type, hc_segment *seg);

/*
 * A wait on seg's memory without the GIL: wait(arg, until) runs pinned in
 * slices of at most HCPY_SIGNAL_SLICE_NS, and Python's signal handlers run
 * between slices and whenever the wait is interrupted.  A signal that
 * lands after the handlers last ran but before the wait's system call
 * would otherwise sleep with it, for good if there is no deadline.
 * Returns the wait's status (HC_TIMEOUT only at deadline), or
 * HC_INTERRUPTED with the handler's exception set.
 */
#define HCPY_SIGNAL_SLICE_NS (50 * HC_NS_PER_MS)
typedef hc_status (*hcpy_wait_fn)(void *arg, uint64_t until);
hc_status hcpy_wait(hc_segment *seg, hcpy_wait_fn wait, void *arg,
                    uint64_t deadline);

/* unlink, is_orphan, validate_name: module functions by segment name. */
extern PyMethodDef hcpy_segment_functions[];
/*
 * Count a lock taken (+1) or released (-1) through self.  A forked child
 * inherits the parent's count but none of its locks: the count restarts
 * at 0 in each process, so a child's close() is not refused forever.
 */
void hcpy_count_lock(SegmentObject *self, int delta);

/* The other types, for module init. */
extern PyTypeObject hcpy_Lock_Type;
extern PyTypeObject hcpy_Condition_Type;
extern PyTypeObject hcpy_Counter_Type;
extern PyTypeObject hcpy_Cache_Type;
extern PyTypeObject hcpy_Queue_Type;

/* ---------------------------------------------------------------------- */
/* Errors (py_errors.c)                                                   */
/* ---------------------------------------------------------------------- */

/*
 * Where a status arose.  A few statuses mean something else to a cache
 * write, a queue or the making of a segment (no space is CacheFull for a
 * write that may not evict, a too small /dev/shm when a segment is made,
 * a full segment elsewhere; HC_CLOSED is a closed queue, not a closed
 * segment); the table in py_errors.c holds those entries beside the
 * general ones.
 */
typedef enum {
    HCPY_IN_ANY,
    HCPY_IN_SEGMENT_CREATE,
    HCPY_IN_CACHE_WRITE,
    HCPY_IN_QUEUE,
    HCPY_IN_QUEUE_DETACH,
    HCPY_CONTEXT_COUNT
} hcpy_context;

/* Import herdcache.errors and queue; -1 with an exception on failure. */
int hcpy_load_exceptions(void);

/* Raise the exception for st: "what: cause: detail. fix."  Returns NULL. */
PyObject *hcpy_raise_in(hcpy_context where, const char *what, hc_status st);

/* hcpy_raise_in() for a status with no special meaning where it arose. */
static inline PyObject *
hcpy_raise_status(const char *what, hc_status st)
{
    return hcpy_raise_in(HCPY_IN_ANY, what, st);
}

/* The class a status raises (for a message of the binding's own). */
PyObject *hcpy_exception(hc_status st);

/*
 * Replace the serializer's pending exception by a SerializationError
 * whose cause it is: "op: the serializer 'name' cannot verb what: cause.
 * fix."  An exception that is not an Exception (KeyboardInterrupt) stays.
 */
void hcpy_serializer_failed(const char *op, PyObject *serializer,
                            const char *verb, const char *what,
                            const char *fix);

extern PyObject *hcpy_SerializationError;  /* herdcache.errors */
extern PyObject *hcpy_QueueEmpty;          /* queue.Empty */
extern PyObject *hcpy_QueueFull;           /* queue.Full */

/* ---------------------------------------------------------------------- */
/* Arguments (py_args.c)                                                  */
/* ---------------------------------------------------------------------- */

/* A key as bytes: str is UTF-8, bytes as is; anything else is TypeError. */
int hcpy_key_bytes(PyObject *key, const char **data, Py_ssize_t *len);

/*
 * What a number of seconds means, per argument.  Every policy refuses NaN
 * and saturates instead of casting an out-of-range double (an inf or a
 * huge value to uint64_t is undefined behaviour).
 */
typedef enum {
    HCPY_WAIT,          /* threading: None or negative waits forever */
    HCPY_QUEUE_WAIT,    /* queue.Queue: None forever, negative an error */
    HCPY_TTL,           /* None, inf or > 1e10: forever; <= 0: at once */
    HCPY_LEASE,         /* must be in (0, 1e9] */
    HCPY_GRACE,         /* None or <= 0: none (0) */
    HCPY_STALE,         /* must be in [0, 65535] (a uint16 of seconds) */
} hcpy_seconds_policy;

/*
 * Seconds (a number or None) as nanoseconds under policy; HC_FOREVER for
 * "forever".  name is the argument's, for the message.  -1 with an
 * exception.
 */
int hcpy_seconds(PyObject *secs, const char *name,
                 hcpy_seconds_policy policy, uint64_t *out);

/* A wait's timeout under policy as an absolute deadline (HC_FOREVER). */
int hcpy_deadline(PyObject *timeout, hcpy_seconds_policy policy,
                  uint64_t *deadline);

/* A ttl as an absolute expiry measured from now (HC_FOREVER: never). */
int hcpy_expiry(PyObject *ttl, uint64_t now, uint64_t *expires);

/*
 * Vectorcall arguments: up to n given by position or keyword, the first
 * `required` of them mandatory; absent ones are NULL in out[].
 */
int hcpy_parse(const char *fname, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames, const char *const *names, Py_ssize_t n,
               Py_ssize_t required, PyObject **out);

#endif                          /* HC_PY_BINDING_H */
