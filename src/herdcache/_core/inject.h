/*-------------------------------------------------------------------------
 *
 * inject.h
 *	  Named fault-injection points, compiled in only for test builds.
 *
 * A point is a statement in the core, HC_INJECT("table.set.after_link"),
 * placed where a process could be killed, paused or fail and a test wants
 * to prove what the others see afterwards (RELIABILITY.md, rule 7).  In a
 * normal build (HC_INJECTION undefined) every point compiles to nothing.
 * In a test build (-DHC_INJECTION=1: `make -C tests/c inject`, or
 * HERDCACHE_INJECTION=1 when building the extension) a process can arm
 * one point at a time:
 *
 *	kill        SIGKILL the process at the nth hit of the point
 *	stall       sleep there for ms milliseconds (0: until killed)
 *	fail        make the point return a status (HC_INJECT_RETURN only)
 *	call        run a test's function there (hc_inject_arm_call, from C
 *	            only): what another process could do at that instant,
 *	            done by this thread, so a race is one fixed interleaving
 *
 * either from C (hc_inject_arm) or, so that no binding change is needed,
 * from the environment variable HERDCACHE_INJECT, read at the first point
 * a process reaches (and again in a forked child):
 *
 *	HERDCACHE_INJECT=point:kill[@nth]
 *	HERDCACHE_INJECT=point:stall:ms[@nth]
 *	HERDCACHE_INJECT=point:fail:status_number[@nth]
 *
 * HC_INJECT() only kills or stalls; HC_INJECT_RETURN() may also make the
 * enclosing function (which returns hc_status) fail, and sits only where
 * a failure is a real outcome of that function, so that a test of "fail"
 * tests a path the code has anyway.
 *
 * The points are listed where they are: `grep -o 'HC_INJECT[_A-Z]*("[^"]*"'`
 * over the core.  tests/c/test_inject.c kills a process at every one of
 * them (the Makefile makes the list with that grep) and checks that the
 * others recover, so a new point is walked as soon as it is written.
 *
 * Notes on synchronization: the armed point is per process (a forked
 * child inherits it); the hit counter is an atomic, so with several
 * threads exactly one of them takes the nth hit.
 *
 *-------------------------------------------------------------------------
 */
#ifndef HC_INJECT_H
#define HC_INJECT_H

#include <stdint.h>

#include "status.h"

typedef enum hc_inject_action {
    HC_INJECT_NONE = 0,
    HC_INJECT_KILL,
    HC_INJECT_STALL,
    HC_INJECT_FAIL,
    HC_INJECT_CALL,
} hc_inject_action;

#ifdef HC_INJECTION

/* Reach the point: act if it is armed and this is its nth hit. */
hc_status hc_inject_hit(const char *point);

/*
 * Arm point (a copy is kept) for its nth hit from now (nth >= 1); arg is
 * the stall in ms or the status to fail with.  point NULL disarms.
 * Arming replaces what HERDCACHE_INJECT said.
 */
void hc_inject_arm(const char *point, hc_inject_action action, uint32_t nth,
                   uint32_t arg);

/* Arm point to run fn(arg) at its nth hit from now (action "call"). */
void hc_inject_arm_call(const char *point, uint32_t nth, void (*fn)(void *),
                        void *arg);

/* How many times the armed point was reached since it was armed. */
uint32_t hc_inject_hits(void);

#define HC_INJECT(point) ((void) hc_inject_hit(point))
#define HC_INJECT_RETURN(point)                                           \
    do {                                                                  \
        hc_status inject_st_ = hc_inject_hit(point);                      \
        if (inject_st_ != HC_OK)                                          \
            return inject_st_;                                            \
    } while (0)

#else

#define HC_INJECT(point) ((void) 0)
#define HC_INJECT_RETURN(point) ((void) 0)

#endif /* HC_INJECTION */

#endif /* HC_INJECT_H */
