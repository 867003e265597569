/*-------------------------------------------------------------------------
 *
 * py_errors.c
 *	  hc_status -> herdcache.errors: one table, one raiser.
 *
 * Every exception the binding raises for a core status comes from
 * status_table through hcpy_raise_in(), as "what: cause: detail. fix.":
 * the cause is hc_strerror() (or the entry's own head), the detail what
 * the core said with hc_set_detail(), the fix what the user can do.  A
 * context picks the few entries that mean something else to a cache write
 * or a queue; a status without an entry there falls back to HCPY_IN_ANY.
 *
 *-------------------------------------------------------------------------
 */
#include "py_binding.h"

#include <errno.h>
#include <string.h>

/* One entry: the class name in herdcache.errors, the fix, the cause. */
typedef struct {
    const char *exc;
    const char *fix;
    const char *head;           /* NULL: hc_strerror(status) */
} status_entry;

static const status_entry status_table[HCPY_CONTEXT_COUNT][HC_STATUS_COUNT] = {
[HCPY_IN_ANY] = {
    [HC_WOULD_BLOCK] = {"HerdcacheTimeout", "Retry, or block with a timeout"},
    [HC_TIMEOUT] = {"HerdcacheTimeout",
                    "Wait longer (timeout=), or find the process that holds "
                    "it up (python -m herdcache info NAME)"},
    [HC_NOT_FOUND] = {"SegmentNotFound",
                      "Create it first (Segment.create or Segment.open), or "
                      "check the name and the directory"},
    [HC_EXISTS] = {"SegmentExists",
                   "Attach to it (Segment.attach or Segment.open), or remove "
                   "a stale one with `python -m herdcache rm NAME`"},
    [HC_BAD_NAME] = {"InvalidName", "Choose a valid name"},
    [HC_BAD_ARGUMENT] = {"InvalidArgument", "Pass a value in range"},
    [HC_NO_SPACE] = {"SegmentFull",
                     "Create the segment with a larger size, or put fewer "
                     "or smaller structures in it"},
    [HC_REGISTRY_FULL] = {"SegmentFull",
                          "Use fewer named structures in one segment"},
    [HC_SLOTS_FULL] = {"SegmentFull",
                       "Attach fewer processes to one segment at once"},
    [HC_TOO_LARGE] = {"ValueTooLarge",
                      "Store something smaller, or open the cache with a "
                      "larger max_value_size"},
    [HC_KIND_MISMATCH] = {"StructMismatch",
                          "Use another name for this structure"},
    [HC_SIZE_MISMATCH] = {"StructMismatch",
                          "Ask for the size it was created with, or use "
                          "another name"},
    [HC_BAD_MAGIC] = {"NotASegment",
                      "The file is not a herdcache segment: choose another "
                      "name or remove the file"},
    [HC_OTHER_ENDIAN] = {"NotASegment",
                         "Segments cannot be shared between byte orders"},
    [HC_VERSION_MISMATCH] = {"LayoutMismatch",
                             "Use the herdcache version that created it, or "
                             "remove it (python -m herdcache rm NAME) and "
                             "create it again"},
    [HC_TRUNCATED] = {"CorruptSegment",
                      "Remove it (python -m herdcache rm NAME) and create "
                      "it again"},
    [HC_NOT_READY] = {"CorruptSegment",
                      "Remove it (python -m herdcache rm NAME) and create "
                      "it again"},
    [HC_WRONG_OWNER] = {"UnsafeSegment",
                        "Run as the user who created it, or choose another "
                        "name"},
    [HC_INSECURE_MODE] = {"UnsafeSegment",
                          "Remove the link or `chmod 600` the file, or pass "
                          "allow_shared=True if every user who can write it "
                          "is trusted"},
    [HC_CORRUPT] = {"CorruptSegment",
                    "Remove it (python -m herdcache rm NAME) and create it "
                    "again"},
    [HC_BUSY] = {"SegmentBusy",
                 "Release its locks, drop memoryviews of it and let calls "
                 "on it in other threads return before close()"},
    [HC_NOT_OWNER] = {"LockNotOwned",
                      "Release a lock from the thread that acquired it"},
    [HC_DEADLOCK] = {"LockNotOwned",
                     "This thread holds the lock already; it is not "
                     "reentrant"},
    [HC_CLOSED] = {"SegmentClosed", "Attach to the segment again"},
    [HC_PEER_DIED] = {"PeerDied", "Start a new peer"},
    [HC_CONFLICT] = {"HerdcacheError", "Retry the operation"},
    [HC_NO_HUGE_PAGES] = {"SegmentFull",
                          "Reserve huge pages or allow transparent ones as "
                          "the message says, or pass huge_pages='try'"},
    [HC_SYSTEM] = {"HerdcacheOSError", "See the system error above"},
    [HC_NOT_RETAKEN] = {"LockNotRetaken",
                        "The lock is not held now: acquire it again before "
                        "touching the state it guards, or wait with a longer "
                        "timeout"},
    [HC_LIVENESS_LOST] = {"LivenessLost",
                          "Do not close herdcache's descriptors (daemonize "
                          "before attaching, or keep them with "
                          "files_preserve=); close() the segment and attach "
                          "again"},
    [HC_TOO_OLD] = {"SnapshotTooOld",
                    "Take a new snapshot and read again; keep snapshots "
                    "short (max_snapshot_age), or give the cache more "
                    "memory"},
},
[HCPY_IN_SEGMENT_CREATE] = {
    [HC_NO_SPACE] = {"SegmentFull",
                     "Ask for a smaller size, or give /dev/shm more room "
                     "(Docker: --shm-size; see `df -h /dev/shm`)"},
},
[HCPY_IN_CACHE_WRITE] = {
    [HC_NO_SPACE] = {"CacheFull",
                     "Give the cache a larger size, delete keys, set "
                     "shorter ttls, or open it with evict=True"},
},
[HCPY_IN_QUEUE] = {
    [HC_CLOSED] = {"QueueClosed",
                   "A closed queue stays closed: make a new one (another "
                   "name, or remove this one's segment first)",
                   "the queue is closed"},
    [HC_PEER_DIED] = {"PeerDied",
                      "Start a new process for that side (its first put or "
                      "get clears this), or close() the queue when a side is "
                      "done"},
    [HC_TOO_LARGE] = {"ValueTooLarge",
                      "Make the queue larger (size=), or send smaller "
                      "messages",
                      "message too large"},
    [HC_BUSY] = {"InvalidArgument",
                 "Make the queue with single_producer=False and "
                 "single_consumer=False to share a side between threads or "
                 "processes",
                 "this side of the queue is taken"},
},
[HCPY_IN_QUEUE_DETACH] = {
    [HC_BUSY] = {"SegmentBusy",
                 "Let the put or get running in that thread return, then "
                 "detach()",
                 "a batch of this process is running on a single side"},
},
};

/* The classes of status_table, loaded once by hcpy_load_exceptions(). */
static PyObject *exc_classes[HCPY_CONTEXT_COUNT][HC_STATUS_COUNT];
static PyObject *exc_base;                /* herdcache.errors.HerdcacheError */
PyObject *hcpy_SerializationError;
PyObject *hcpy_QueueEmpty;
PyObject *hcpy_QueueFull;

/* Load module.name into *slot; -1 with an exception. */
static int
load_class(PyObject *module, const char *name, PyObject **slot)
{
    *slot = PyObject_GetAttrString(module, name);
    return *slot == NULL ? -1 : 0;
}

int
hcpy_load_exceptions(void)
{
    PyObject *errors = PyImport_ImportModule("herdcache.errors");
    PyObject *stdq = PyImport_ImportModule("queue");
    int rc = -1, ctx, st;

    if (errors == NULL || stdq == NULL
        || load_class(errors, "HerdcacheError", &exc_base) < 0
        || load_class(errors, "SerializationError",
                      &hcpy_SerializationError) < 0
        || load_class(stdq, "Empty", &hcpy_QueueEmpty) < 0
        || load_class(stdq, "Full", &hcpy_QueueFull) < 0)
        goto done;
    for (ctx = 0; ctx < HCPY_CONTEXT_COUNT; ctx++)
        for (st = 0; st < HC_STATUS_COUNT; st++)
            if (status_table[ctx][st].exc != NULL
                && load_class(errors, status_table[ctx][st].exc,
                              &exc_classes[ctx][st]) < 0)
                goto done;
    rc = 0;
done:
    Py_XDECREF(errors);
    Py_XDECREF(stdq);
    return rc;
}

/*
 * The entry for st where it arose, and its class: the context's own, else
 * the general one; NULL (and exc_base) for a status outside the table.
 */
static const status_entry *
entry_of(hcpy_context where, hc_status st, PyObject **klass)
{
    if ((unsigned) st >= HC_STATUS_COUNT) {
        *klass = exc_base;
        return NULL;
    }
    if ((unsigned) where < HCPY_CONTEXT_COUNT
        && exc_classes[where][st] != NULL) {
        *klass = exc_classes[where][st];
        return &status_table[where][st];
    }
    *klass = exc_classes[HCPY_IN_ANY][st] ? exc_classes[HCPY_IN_ANY][st]
                                          : exc_base;
    return &status_table[HCPY_IN_ANY][st];
}

PyObject *
hcpy_exception(hc_status st)
{
    PyObject *klass;

    entry_of(HCPY_IN_ANY, st, &klass);
    return klass;
}

PyObject *
hcpy_raise_in(hcpy_context where, const char *what, hc_status st)
{
    const char *detail = hc_last_detail();
    int saved_errno = errno;
    PyObject *klass;
    const status_entry *e = entry_of(where, st, &klass);
    const char *head = e && e->head ? e->head : hc_strerror(st);
    const char *fix = e && e->fix ? e->fix : "";

    if (st == HC_SYSTEM) {
        /* An OSError: (errno, text) as the builtin takes them. */
        PyObject *args = Py_BuildValue(
            "(is)", saved_errno, *detail ? detail : strerror(saved_errno));

        if (args != NULL) {
            PyErr_SetObject(klass, args);
            Py_DECREF(args);
        }
    }
    else
        PyErr_Format(klass, "%s: %s%s%s. %s%s", what, head,
                     *detail ? ": " : "", detail, fix, *fix ? "." : "");
    hc_clear_detail();
    return NULL;
}

void
hcpy_serializer_failed(const char *op, PyObject *serializer,
                       const char *verb, const char *what, const char *fix)
{
    PyObject *type, *cause, *tb, *etype, *exc, *etb;

    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return;                 /* KeyboardInterrupt, SystemExit: as is */
    PyErr_Fetch(&type, &cause, &tb);
    PyErr_NormalizeException(&type, &cause, &tb);
    if (tb != NULL)
        PyException_SetTraceback(cause, tb);
    PyErr_Format(hcpy_SerializationError, "%s: the serializer '%S' cannot "
                 "%s %s: %S. %s.", op, serializer, verb, what, cause, fix);
    PyErr_Fetch(&etype, &exc, &etb);
    PyErr_NormalizeException(&etype, &exc, &etb);
    PyException_SetCause(exc, cause);   /* steals cause */
    PyErr_Restore(etype, exc, etb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
}
