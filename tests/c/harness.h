/*
 * harness.h - a tiny test harness for the C core (no Python, no framework).
 *
 * CHECK(cond) prints the failing expression with its line and exits 1;
 * CHECK_ST(call, status) does the same for an hc_status that is not the
 * expected one, naming both.
 */
#ifndef HC_TEST_HARNESS_H
#define HC_TEST_HARNESS_H

#include <stdio.h>
#include <stdlib.h>

#include "status.h"

#define CHECK(cond)                                                       \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__,        \
                    __LINE__, #cond);                                     \
            exit(1);                                                      \
        }                                                                 \
    } while (0)

#define CHECK_ST(call, expected)                                          \
    do {                                                                  \
        hc_status st_ = (call);                                           \
        if (st_ != (expected)) {                                          \
            fprintf(stderr, "%s:%d: %s returned %s (%s), expected %s\n",  \
                    __FILE__, __LINE__, #call, hc_strerror(st_),          \
                    hc_last_detail(), hc_strerror(expected));             \
            exit(1);                                                      \
        }                                                                 \
    } while (0)

#define TEST(fn)                                                          \
    do {                                                                  \
        printf("    %s\n", #fn);                                          \
        fn();                                                             \
    } while (0)

#endif
