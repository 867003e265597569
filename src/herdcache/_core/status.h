/*-------------------------------------------------------------------------
 *
 * status.h
 *	  Status codes returned by every fallible function of the core.
 *
 * The core never raises and never prints: a function either succeeds
 * (HC_OK, or HC_OWNER_DIED, which is a success with news) or returns one of
 * the codes below.  The binding maps each code through one table onto a
 * Python exception in herdcache.errors.  HC_SYSTEM leaves errno as the
 * failing system call set it.
 *
 * A failure site may add a human detail (numbers, names) with
 * hc_set_detail(); it is kept per thread and read by the binding when it
 * builds the exception message, so the message can say "expected 4096
 * bytes, found 8192" in the manner of PostgreSQL's errmsg.
 *
 *-------------------------------------------------------------------------
 */
#ifndef HC_STATUS_H
#define HC_STATUS_H

typedef enum hc_status {
    HC_OK = 0,
    HC_OWNER_DIED,          /* lock taken; its previous owner died holding it */
    HC_WOULD_BLOCK,         /* a non-blocking call found no room or nothing */
    HC_TIMEOUT,             /* the deadline passed */
    HC_INTERRUPTED,         /* a signal arrived while sleeping; caller retries */
    HC_NOT_FOUND,           /* no segment, structure or entry by that name */
    HC_EXISTS,              /* a segment by that name exists already */
    HC_BAD_NAME,            /* empty, too long, '/', '..', NUL ... */
    HC_BAD_ARGUMENT,        /* an argument out of its documented range */
    HC_NO_SPACE,            /* the segment (or /dev/shm) has no room */
    HC_REGISTRY_FULL,       /* no free entry in the name registry */
    HC_SLOTS_FULL,          /* every process slot is held by a live process */
    HC_TOO_LARGE,           /* a key, value or message over its limit */
    HC_KIND_MISMATCH,       /* name exists as another kind of structure */
    HC_SIZE_MISMATCH,       /* name exists with another size */
    HC_BAD_MAGIC,           /* not a herdcache segment */
    HC_OTHER_ENDIAN,        /* a herdcache segment of the other byte order */
    HC_VERSION_MISMATCH,    /* a herdcache segment of another layout version */
    HC_TRUNCATED,           /* the file is shorter than its header says */
    HC_NOT_READY,           /* the creator has not finished (or died in) init */
    HC_WRONG_OWNER,         /* the file belongs to another user */
    HC_INSECURE_MODE,       /* group or others may write the file */
    HC_CORRUPT,             /* an offset or length in the segment is invalid */
    HC_BUSY,                /* close() while locks are held or views alive */
    HC_NOT_OWNER,           /* release of a lock this thread does not hold */
    HC_DEADLOCK,            /* this thread already holds the lock */
    HC_CLOSED,              /* the handle (or queue) was closed */
    HC_PEER_DIED,           /* the process on the other side died */
    HC_CONFLICT,            /* a compare-and-set found another version */
    HC_NO_HUGE_PAGES,       /* huge_pages="on" and the system has none */
    HC_SYSTEM,              /* a system call failed; errno tells which way */
    HC_NOT_RETAKEN,         /* a condition wait's deadline passed before it
                             * took its lock back: the lock is not held */
    HC_LIVENESS_LOST,       /* this process lost its slot's lock descriptor
                             * and the slot is no longer provably its own */
    HC_TOO_OLD,             /* a snapshot lost a version it needed */
    HC_STATUS_COUNT
} hc_status;

/* A one-line, constant description of a status (never NULL). */
const char *hc_strerror(hc_status status);

/* Record a detail for the current thread's last failure (printf style). */
void hc_set_detail(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* The current thread's last detail, "" if none; cleared by hc_clear_detail. */
const char *hc_last_detail(void);
void hc_clear_detail(void);

#endif /* HC_STATUS_H */
