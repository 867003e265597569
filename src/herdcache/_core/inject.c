/*-------------------------------------------------------------------------
 *
 * inject.c
 *	  The fault-injection points of inject.h (test builds only).
 *
 *-------------------------------------------------------------------------
 */
#include "inject.h"

#ifdef HC_INJECTION

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "segment.h"

#define POINT_MAX 96

typedef struct armed_point {
    char ap_name[POINT_MAX];
    hc_inject_action ap_action;
    uint32_t ap_nth;
    uint32_t ap_arg;
    void (*ap_fn)(void *);      /* HC_INJECT_CALL */
    void *ap_fn_arg;
} armed_point;

static armed_point armed;
static _Atomic uint32_t hits;
/* The fork epoch whose environment was read; 0: never.  A forked child
 * reads it again, so a Python test can set it between fork and use. */
static _Atomic uint64_t env_epoch;

static void
arm_from(const char *point, size_t len, hc_inject_action action,
         uint32_t nth, uint32_t arg)
{
    memset(&armed, 0, sizeof(armed));
    if (point != NULL && len < POINT_MAX) {
        memcpy(armed.ap_name, point, len);
        armed.ap_action = action;
        armed.ap_nth = nth ? nth : 1;
        armed.ap_arg = arg;
    }
    /* relaxed: arming happens before the points it concerns run */
    atomic_store_explicit(&hits, 0, memory_order_relaxed);
}

void
hc_inject_arm(const char *point, hc_inject_action action, uint32_t nth,
              uint32_t arg)
{
    atomic_store_explicit(&env_epoch, hc_fork_epoch(), memory_order_relaxed);
    arm_from(point, point ? strlen(point) : 0, action, nth, arg);
}

void
hc_inject_arm_call(const char *point, uint32_t nth, void (*fn)(void *),
                   void *arg)
{
    hc_inject_arm(point, HC_INJECT_CALL, nth, 0);
    armed.ap_fn = fn;
    armed.ap_fn_arg = arg;
}

uint32_t
hc_inject_hits(void)
{
    return atomic_load_explicit(&hits, memory_order_relaxed);
}

/* Parse "point:action[:arg][@nth]"; an unreadable spec is a test bug. */
static void
arm_from_env(const char *spec)
{
    const char *colon = strchr(spec, ':');
    const char *at = strchr(spec, '@');
    hc_inject_action action = HC_INJECT_NONE;
    const char *act;

    if (colon == NULL) {
        fprintf(stderr, "HERDCACHE_INJECT=%s: expected point:action\n", spec);
        abort();
    }
    act = colon + 1;
    if (strncmp(act, "kill", 4) == 0)
        action = HC_INJECT_KILL;
    else if (strncmp(act, "stall", 5) == 0)
        action = HC_INJECT_STALL;
    else if (strncmp(act, "fail", 4) == 0)
        action = HC_INJECT_FAIL;
    else {
        fprintf(stderr, "HERDCACHE_INJECT=%s: action is kill, stall or "
                "fail\n", spec);
        abort();
    }
    act = strchr(act, ':');
    arm_from(spec, (size_t) (colon - spec), action,
             at ? (uint32_t) strtoul(at + 1, NULL, 10) : 1,
             act ? (uint32_t) strtoul(act + 1, NULL, 10) : 0);
}

static void
read_env_once(void)
{
    uint64_t epoch = hc_fork_epoch();
    const char *spec;

    if (atomic_load_explicit(&env_epoch, memory_order_relaxed) == epoch)
        return;
    atomic_store_explicit(&env_epoch, epoch, memory_order_relaxed);
    spec = getenv("HERDCACHE_INJECT");
    if (spec != NULL && *spec != '\0')
        arm_from_env(spec);
}

static void
stall(uint32_t ms)
{
    struct timespec ts = {(time_t) (ms / 1000), (long) (ms % 1000) * 1000000};

    if (ms == 0)
        for (;;)
            pause();            /* until the test kills us */
    while (nanosleep(&ts, &ts) != 0)
        ;
}

hc_status
hc_inject_hit(const char *point)
{
    read_env_once();
    if (armed.ap_action == HC_INJECT_NONE
        || strcmp(point, armed.ap_name) != 0
        || atomic_fetch_add_explicit(&hits, 1, memory_order_relaxed) + 1
           != armed.ap_nth)
        return HC_OK;
    switch (armed.ap_action) {
    case HC_INJECT_KILL:
        kill(getpid(), SIGKILL);
        for (;;)
            pause();            /* SIGKILL is on its way */
    case HC_INJECT_STALL:
        stall(armed.ap_arg);
        return HC_OK;
    case HC_INJECT_FAIL:
        return armed.ap_arg > HC_OK && armed.ap_arg < HC_STATUS_COUNT
            ? (hc_status) armed.ap_arg : HC_SYSTEM;
    case HC_INJECT_CALL:
        armed.ap_fn(armed.ap_fn_arg);
        return HC_OK;
    default:
        return HC_OK;
    }
}

#else

/* ISO C wants a translation unit to declare something. */
typedef int hc_inject_unused;

#endif /* HC_INJECTION */
