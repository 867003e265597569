/*-------------------------------------------------------------------------
 *
 * py_args.c
 *	  Arguments every type takes: keys, seconds, vectorcall arguments.
 *
 * Seconds are the one place where a Python float meets a uint64_t, so they
 * all pass through hcpy_seconds(): NaN is refused and every value out of
 * range saturates before the cast (casting inf or 1e300 to uint64_t is
 * undefined behaviour).  A policy says what None, negative and huge mean
 * for each kind of argument, as the API it mirrors does.
 *
 *-------------------------------------------------------------------------
 */
#include "py_binding.h"

#include <math.h>

#include "clock.h"
#include "table.h"

/* The longest wait: a timeout beyond it waits this long (31 years). */
#define MAX_WAIT_SECS 1e9
/* A ttl beyond this (317 years) never expires. */
#define MAX_TTL_SECS 1e10

int
hcpy_key_bytes(PyObject *key, const char **data, Py_ssize_t *len)
{
    if (PyUnicode_Check(key))
        *data = PyUnicode_AsUTF8AndSize(key, len);
    else if (PyBytes_Check(key)) {
        *data = PyBytes_AS_STRING(key);
        *len = PyBytes_GET_SIZE(key);
    }
    else {
        PyErr_Format(PyExc_TypeError,
                     "cache keys are str or bytes, not %.100s",
                     Py_TYPE(key)->tp_name);
        return -1;
    }
    if (*data == NULL)
        return -1;
    if (*len == 0 || *len > HC_KEY_MAX) {
        PyErr_Format(hcpy_exception(HC_TOO_LARGE),
                     "a key has 1 to %d bytes (UTF-8 for str), got %zd. "
                     "Hash longer keys first, e.g. with hashlib",
                     HC_KEY_MAX, *len);
        return -1;
    }
    return 0;
}

/* secs (finite, in [0, max]) as nanoseconds. */
static uint64_t
ns_of(double secs, double max)
{
    return (uint64_t) (fmin(secs, max) * 1e9);
}

/* A ValueError for obj, an argument out of range; returns -1. */
static int
out_of_range(const char *name, const char *range, PyObject *obj)
{
    PyErr_Format(PyExc_ValueError, "%s out of range: expected seconds in "
                 "%s, got %R", name, range, obj);
    return -1;
}

int
hcpy_seconds(PyObject *obj, const char *name, hcpy_seconds_policy policy,
             uint64_t *out)
{
    double secs;

    if (obj == NULL || obj == Py_None) {
        if (policy == HCPY_LEASE)
            return out_of_range(name, "(0, 1e9]", Py_None);
        *out = policy == HCPY_GRACE || policy == HCPY_STALE ? 0 : HC_FOREVER;
        return 0;
    }
    secs = PyFloat_AsDouble(obj);
    if (secs == -1.0 && PyErr_Occurred())
        return -1;
    if (isnan(secs)) {
        PyErr_Format(PyExc_ValueError, "%s must be a number, not NaN", name);
        return -1;
    }
    switch (policy) {
    case HCPY_QUEUE_WAIT:
        if (secs < 0) {
            PyErr_Format(PyExc_ValueError,
                         "'%s' must be a non-negative number", name);
            return -1;
        }
        /* fall through */
    case HCPY_WAIT:
        *out = secs < 0 ? HC_FOREVER : ns_of(secs, MAX_WAIT_SECS);
        return 0;
    case HCPY_TTL:
        *out = secs > MAX_TTL_SECS ? HC_FOREVER
             : secs <= 0 ? 0 : ns_of(secs, MAX_TTL_SECS);
        return 0;
    case HCPY_LEASE:
        if (secs <= 0 || secs > MAX_WAIT_SECS)
            return out_of_range(name, "(0, 1e9]", obj);
        *out = ns_of(secs, MAX_WAIT_SECS);
        return 0;
    case HCPY_GRACE:
        *out = secs <= 0 ? 0 : ns_of(secs, MAX_WAIT_SECS);
        return 0;
    case HCPY_STALE:
        if (secs < 0 || secs > UINT16_MAX)
            return out_of_range(name, "[0, 65535]", obj);
        *out = ns_of(secs, UINT16_MAX);
        return 0;
    }
    PyErr_SetString(PyExc_SystemError, "unknown seconds policy");
    return -1;
}

int
hcpy_deadline(PyObject *timeout, hcpy_seconds_policy policy,
              uint64_t *deadline)
{
    uint64_t ns;

    if (hcpy_seconds(timeout, "timeout", policy, &ns) < 0)
        return -1;
    *deadline = hc_deadline_after(ns);  /* HC_FOREVER stays */
    return 0;
}

int
hcpy_expiry(PyObject *ttl, uint64_t now, uint64_t *expires)
{
    uint64_t ns;

    if (hcpy_seconds(ttl, "ttl", HCPY_TTL, &ns) < 0)
        return -1;
    *expires = ns > HC_FOREVER - now ? HC_FOREVER : now + ns;
    return 0;
}

int
hcpy_parse(const char *fname, PyObject *const *args, Py_ssize_t nargs,
           PyObject *kwnames, const char *const *names, Py_ssize_t n,
           Py_ssize_t required, PyObject **out)
{
    Py_ssize_t i, k, nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;

    if (nargs > n) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %zd arguments "
                     "(%zd given)", fname, n, nargs);
        return -1;
    }
    for (i = 0; i < n; i++)
        out[i] = i < nargs ? args[i] : NULL;
    for (k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);

        for (i = 0; i < n; i++)
            if (PyUnicode_CompareWithASCIIString(key, names[i]) == 0)
                break;
        if (i == n || out[i] != NULL) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected or "
                         "repeated argument '%U'", fname, key);
            return -1;
        }
        out[i] = args[nargs + k];
    }
    for (i = 0; i < required; i++)
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument "
                         "'%s'", fname, names[i]);
            return -1;
        }
    return 0;
}
