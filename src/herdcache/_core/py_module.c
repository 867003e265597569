/*-------------------------------------------------------------------------
 *
 * py_module.c
 *	  herdcache._core: module init and the constants Python reads.
 *
 * Each type lives in its own py_*.c (see py_binding.h); the functions by
 * segment name (unlink, is_orphan, validate_name) live with Segment in
 * py_segment.c.  Every number Python needs about the layout comes from
 * here, never from a copy in Python.
 *
 *-------------------------------------------------------------------------
 */
#include "py_binding.h"

#include "condvar.h"
#include "counter.h"
#include "lock.h"
#include "queue.h"
#include "registry.h"
#include "table.h"

/*
 * A Lock, Counter or Condition takes one cache line of its own; a
 * Condition made without a lock keeps its lock in the second half.
 */
#define PLACED_SIZE 64
#define CONDITION_LOCK_OFFSET 32

_Static_assert(sizeof(hc_cond) <= CONDITION_LOCK_OFFSET,
               "a condition overlaps the lock beside it");
_Static_assert(CONDITION_LOCK_OFFSET + sizeof(hc_lock) <= PLACED_SIZE,
               "a condition and its lock do not fit one line");
_Static_assert(sizeof(hc_counter) <= PLACED_SIZE
               && sizeof(hc_lock) <= PLACED_SIZE,
               "a placed object does not fit one line");

static const struct {
    const char *name;
    long value;
} int_constants[] = {
    {"KIND_RAW", HC_KIND_RAW},
    {"KIND_COUNTER", HC_KIND_COUNTER},
    {"KIND_LOCK", HC_KIND_LOCK},
    {"KIND_CONDITION", HC_KIND_CONDITION},
    {"KIND_QUEUE", HC_KIND_QUEUE},
    {"KIND_CACHE", HC_KIND_CACHE},
    {"PLACED_SIZE", PLACED_SIZE},
    {"CONDITION_LOCK_OFFSET", CONDITION_LOCK_OFFSET},
    {"SET_ALWAYS", HC_SET_ALWAYS},
    {"SET_ADD", HC_SET_ADD},
    {"SET_REPLACE", HC_SET_REPLACE},
    {"SET_CAS", HC_SET_CAS},
    {"SET_SWAP", HC_SET_SWAP},
    {"QUEUE_SINGLE_PRODUCER", HC_QUEUE_SINGLE_PRODUCER},
    {"QUEUE_SINGLE_CONSUMER", HC_QUEUE_SINGLE_CONSUMER},
    {"SEGMENT_NAME_MAX", HC_SEGMENT_NAME_MAX},
    {"KEY_MAX", HC_KEY_MAX},
    {"EVICTION_SIEVE", HC_EVICTION_SIEVE},
    {"EVICTION_S3FIFO", HC_EVICTION_S3FIFO},
    {"EVICTION_STORED", HC_EVICTION_STORED},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "herdcache._core",
    .m_doc = "The C core of herdcache (use the herdcache package instead).",
    .m_size = -1,
};

static int
add_type(PyObject *m, PyTypeObject *type, const char *name)
{
    if (PyType_Ready(type) < 0)
        return -1;
    Py_INCREF(type);
    if (PyModule_AddObject(m, name, (PyObject *) type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

static int
add_constants(PyObject *m)
{
    size_t i;

    for (i = 0; i < sizeof(int_constants) / sizeof(int_constants[0]); i++)
        if (PyModule_AddIntConstant(m, int_constants[i].name,
                                    int_constants[i].value) < 0)
            return -1;
    if (PyModule_AddIntConstant(m, "MIN_SEGMENT_SIZE",
                                (long) hc_segment_min_size()) < 0
        || PyModule_AddStringConstant(m, "DEFAULT_DIR", HC_DEFAULT_DIR) < 0
        || PyModule_AddStringConstant(m, "FILE_PREFIX", HC_FILE_PREFIX) < 0)
        return -1;
    return 0;
}

/* The test clock (herdcache.clock): this process's expiry time. */

PyDoc_STRVAR(clock_advance_doc,
"clock_advance(ns) -> None\n\n"
"Move this process's expiry time forward by ns nanoseconds (tests only;\n"
"see herdcache.clock).");

static PyObject *
core_clock_advance(PyObject *Py_UNUSED(m), PyObject *arg)
{
    unsigned long long ns = PyLong_AsUnsignedLongLong(arg);

    if (ns == (unsigned long long) -1 && PyErr_Occurred())
        return NULL;
    hc_clock_advance(ns);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(clock_skew_doc,
"clock_skew() -> int\n\n"
"Nanoseconds this process's expiry time is ahead of CLOCK_MONOTONIC.");

static PyObject *
core_clock_skew(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored))
{
    /* Relaxed: see hc_expiry_now_ns in clock.h. */
    return PyLong_FromUnsignedLongLong(
        atomic_load_explicit(&hc_clock_skew_ns, memory_order_relaxed));
}

static PyMethodDef clock_functions[] = {
    {"clock_advance", (PyCFunction) core_clock_advance, METH_O,
     clock_advance_doc},
    {"clock_skew", (PyCFunction) core_clock_skew, METH_NOARGS,
     clock_skew_doc},
    {NULL}
};

PyMODINIT_FUNC
PyInit__core(void)
{
    PyObject *m;

    if (hcpy_load_exceptions() < 0)
        return NULL;
    m = PyModule_Create(&core_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddFunctions(m, hcpy_segment_functions) < 0
        || PyModule_AddFunctions(m, clock_functions) < 0
        || add_type(m, &hcpy_Segment_Type, "Segment") < 0
        || add_type(m, &hcpy_Lock_Type, "Lock") < 0
        || add_type(m, &hcpy_Condition_Type, "Condition") < 0
        || add_type(m, &hcpy_Counter_Type, "Counter") < 0
        || add_type(m, &hcpy_Cache_Type, "Cache") < 0
        || add_type(m, &hcpy_Queue_Type, "Queue") < 0
        || add_constants(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
