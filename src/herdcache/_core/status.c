/*-------------------------------------------------------------------------
 *
 * status.c
 *	  Text for status codes and the per-thread failure detail.
 *
 * The detail buffer is thread-local so that two threads failing at once
 * never mix their messages; it lives in the process, never in a segment.
 *
 *-------------------------------------------------------------------------
 */
#include "status.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char detail[512];

static const char *const messages[HC_STATUS_COUNT] = {
    [HC_OK] = "success",
    [HC_OWNER_DIED] = "the previous owner died holding the lock",
    [HC_WOULD_BLOCK] = "the operation would block",
    [HC_TIMEOUT] = "timed out",
    [HC_INTERRUPTED] = "interrupted by a signal",
    [HC_NOT_FOUND] = "not found",
    [HC_EXISTS] = "already exists",
    [HC_BAD_NAME] = "invalid name",
    [HC_BAD_ARGUMENT] = "invalid argument",
    [HC_NO_SPACE] = "not enough space",
    [HC_REGISTRY_FULL] = "the segment's name registry is full",
    [HC_SLOTS_FULL] = "every process slot of the segment is in use",
    [HC_TOO_LARGE] = "too large",
    [HC_KIND_MISMATCH] = "the name is used by another kind of structure",
    [HC_SIZE_MISMATCH] = "the name exists with another size",
    [HC_BAD_MAGIC] = "not a herdcache segment",
    [HC_OTHER_ENDIAN] = "a herdcache segment of the other byte order",
    [HC_VERSION_MISMATCH] = "the segment has another layout version",
    [HC_TRUNCATED] = "the segment file is truncated",
    [HC_NOT_READY] = "the segment was never completely created",
    [HC_WRONG_OWNER] = "the segment belongs to another user",
    [HC_INSECURE_MODE] = "other users may write the segment",
    [HC_CORRUPT] = "the segment is corrupt",
    [HC_BUSY] = "the segment is in use",
    [HC_NOT_OWNER] = "the lock is not held by this thread",
    [HC_DEADLOCK] = "the lock is already held by this thread",
    [HC_CLOSED] = "closed",
    [HC_PEER_DIED] = "the process on the other side died",
    [HC_TOO_OLD] = "the snapshot is too old",
    [HC_CONFLICT] = "the value changed in between",
    [HC_NO_HUGE_PAGES] = "no huge pages for the segment",
    [HC_SYSTEM] = "system error",
    [HC_NOT_RETAKEN] = "the timeout passed before the lock could be taken "
                       "back: the lock is not held",
    [HC_LIVENESS_LOST] = "this process lost the descriptor that proves it "
                         "alive to other processes",
};

const char *
hc_strerror(hc_status status)
{
    if ((unsigned) status >= HC_STATUS_COUNT || messages[status] == NULL)
        return "unknown status";
    return messages[status];
}

void
hc_set_detail(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
}

const char *
hc_last_detail(void)
{
    return detail;
}

void
hc_clear_detail(void)
{
    detail[0] = '\0';
}
