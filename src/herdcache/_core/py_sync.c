/*-------------------------------------------------------------------------
 *
 * py_sync.c
 *	  herdcache._core.Lock, Condition and Counter: objects placed at an
 *	  offset of a segment.
 *
 * Each holds its Segment object and a pointer validated once, when it is
 * made (placed_init); every method first checks that the segment is still
 * mapped (placed_segment).
 *
 *-------------------------------------------------------------------------
 */
#include "py_binding.h"

#include "condvar.h"
#include "counter.h"
#include "lock.h"

typedef struct {
    PyObject_HEAD
    SegmentObject *segment;
    void *ptr;                  /* validated at construction */
} PlacedObject;

/* Common constructor: (segment, offset) checked against the mapping. */
static int
placed_init(PlacedObject *self, PyObject *args, uint64_t need)
{
    PyObject *segobj;
    unsigned long long offset;
    hc_segment *seg;

    if (!PyArg_ParseTuple(args, "O!K", &hcpy_Segment_Type, &segobj, &offset))
        return -1;
    if (self->segment != NULL) {
        PyErr_SetString(PyExc_TypeError, "the object is initialised already");
        return -1;
    }
    seg = hcpy_segment_get((SegmentObject *) segobj);
    if (seg == NULL)
        return -1;
    if (offset % 8 != 0 || offset < seg->sg_header->sh_data_offset
        || hc_segment_ptr(seg, offset, need) == NULL) {
        hc_set_detail("offset %llu is not inside the data area", offset);
        hcpy_raise_status("structure", HC_CORRUPT);
        return -1;
    }
    Py_INCREF(segobj);
    Py_XSETREF(self->segment, (SegmentObject *) segobj);
    self->ptr = hc_segment_ptr(seg, offset, need);
    return 0;
}

static void
placed_dealloc(PlacedObject *self)
{
    Py_XDECREF(self->segment);
    Py_TYPE(self)->tp_free((PyObject *) self);
}

/* The live segment behind a placed object, or NULL with SegmentClosed. */
static hc_segment *
placed_segment(PlacedObject *self)
{
    if (self->segment == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "object not initialised");
        return NULL;
    }
    return hcpy_segment_get(self->segment);
}

/* ---------------------------------------------------------------------- */
/* Lock                                                                   */
/* ---------------------------------------------------------------------- */

typedef struct {
    PlacedObject base;
    int owner_died;             /* the last acquire recovered a dead owner */
} LockObject;

static int
Lock_init(LockObject *self, PyObject *args, PyObject *Py_UNUSED(kw))
{
    self->owner_died = 0;
    return placed_init(&self->base, args, sizeof(hc_lock));
}

/* What a lock waiter waits for. */
typedef struct {
    hc_segment *seg;
    hc_lock *lock;
} lock_waiting;

/* hcpy_wait_fn: take the lock, waiting until until. */
static hc_status
acquire_until(void *arg, uint64_t until)
{
    lock_waiting *w = arg;

    return hc_lock_acquire(w->seg, w->lock, until);
}

/* Wait for the lock with the GIL released, running signal handlers. */
static hc_status
lock_wait(hc_segment *seg, hc_lock *lock, uint64_t deadline)
{
    lock_waiting w = {seg, lock};

    return hcpy_wait(seg, acquire_until, &w, deadline);
}

PyDoc_STRVAR(Lock_acquire_doc,
"acquire(blocking=True, timeout=-1) -> bool\n\n"
"Take the lock, as threading.Lock.acquire does.  If its previous owner\n"
"died holding it, the lock is taken and owner_died is set True.");

static PyObject *
Lock_acquire(LockObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"blocking", "timeout", NULL};
    int blocking = 1;
    PyObject *timeout = NULL;
    hc_segment *seg = placed_segment(&self->base);
    hc_lock *lock = self->base.ptr;
    uint64_t deadline;
    hc_status st;

    if (seg == NULL)
        return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|pO", kwlist, &blocking,
                                     &timeout))
        return NULL;
    if (!blocking && timeout != NULL && timeout != Py_None
        && PyFloat_AsDouble(timeout) != -1.0) {
        PyErr_SetString(PyExc_ValueError,
                        "can't specify a timeout for a non-blocking call");
        return NULL;
    }
    if (hcpy_deadline(timeout, HCPY_WAIT, &deadline) < 0)
        return NULL;
    st = hc_lock_acquire_nowait(seg, lock);
    if (st == HC_WOULD_BLOCK) {
        if (blocking)
            st = lock_wait(seg, lock, deadline);
        else
            st = hc_lock_try_acquire(seg, lock);
    }
    switch (st) {
    case HC_OK:
    case HC_OWNER_DIED:
        self->owner_died = st == HC_OWNER_DIED;
        hcpy_count_lock(self->base.segment, 1);
        Py_RETURN_TRUE;
    case HC_TIMEOUT:
    case HC_WOULD_BLOCK:
        Py_RETURN_FALSE;
    case HC_INTERRUPTED:
        return NULL;            /* the signal handler's exception */
    default:
        return hcpy_raise_status("acquire", st);
    }
}

PyDoc_STRVAR(Lock_release_doc,
"release() -> None\n\nRelease the lock (from the thread that took it).");

static PyObject *
Lock_release(LockObject *self, PyObject *Py_UNUSED(ignored))
{
    hc_segment *seg = placed_segment(&self->base);
    hc_status st;

    if (seg == NULL)
        return NULL;
    st = hc_lock_release(seg, self->base.ptr);
    if (st != HC_OK)
        return hcpy_raise_status("release", st);
    hcpy_count_lock(self->base.segment, -1);
    Py_RETURN_NONE;
}

static PyObject *
Lock_enter(LockObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *empty = PyTuple_New(0), *res;

    if (empty == NULL)
        return NULL;
    res = Lock_acquire(self, empty, NULL);
    Py_DECREF(empty);
    return res;
}

/*
 * Release, except after a Condition.wait that could not take the lock
 * back (LockNotRetaken): the lock is not ours then, and releasing it
 * would raise LockNotOwned over the real error.
 */
static PyObject *
Lock_exit(LockObject *self, PyObject *args)
{
    PyObject *exc = PyTuple_GET_SIZE(args) >= 2 ? PyTuple_GET_ITEM(args, 1)
                                                 : Py_None;
    hc_segment *seg = placed_segment(&self->base);

    if (seg == NULL)
        return NULL;
    if (exc != Py_None
        && PyObject_IsInstance(exc, hcpy_exception(HC_NOT_RETAKEN)) == 1
        && !hc_lock_held_by_me(seg, self->base.ptr))
        Py_RETURN_NONE;
    return Lock_release(self, NULL);
}

PyDoc_STRVAR(Lock_locked_doc,
"locked() -> bool\n\nTrue if some process holds the lock.");

static PyObject *
Lock_locked(LockObject *self, PyObject *Py_UNUSED(ignored))
{
    if (placed_segment(&self->base) == NULL)
        return NULL;
    return PyBool_FromLong(hc_lock_is_locked(self->base.ptr));
}

PyDoc_STRVAR(Lock_is_owned_doc,
"_is_owned() -> bool\n\nTrue if the calling thread holds the lock.");

static PyObject *
Lock_is_owned(LockObject *self, PyObject *Py_UNUSED(ignored))
{
    hc_segment *seg = placed_segment(&self->base);

    if (seg == NULL)
        return NULL;
    return PyBool_FromLong(hc_lock_held_by_me(seg, self->base.ptr));
}

static PyObject *
Lock_get_owner_died(LockObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->owner_died);
}

static PyMethodDef Lock_methods[] = {
    {"acquire", (PyCFunction) (void (*)(void)) Lock_acquire,
     METH_VARARGS | METH_KEYWORDS, Lock_acquire_doc},
    {"release", (PyCFunction) Lock_release, METH_NOARGS, Lock_release_doc},
    {"locked", (PyCFunction) Lock_locked, METH_NOARGS, Lock_locked_doc},
    {"_is_owned", (PyCFunction) Lock_is_owned, METH_NOARGS,
     Lock_is_owned_doc},
    {"__enter__", (PyCFunction) Lock_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction) Lock_exit, METH_VARARGS, NULL},
    {NULL}
};

static PyGetSetDef Lock_getset[] = {
    {"owner_died", (getter) Lock_get_owner_died, NULL,
     "True if this process's last acquire took the lock from a dead owner",
     NULL},
    {NULL}
};

PyTypeObject hcpy_Lock_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "herdcache._core.Lock",
    .tp_basicsize = sizeof(LockObject),
    .tp_dealloc = (destructor) placed_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Lock(segment, offset): a cross-process mutex in a segment.",
    .tp_methods = Lock_methods,
    .tp_getset = Lock_getset,
    .tp_init = (initproc) Lock_init,
    .tp_new = PyType_GenericNew,
};

/* ---------------------------------------------------------------------- */
/* Condition                                                              */
/* ---------------------------------------------------------------------- */

typedef struct {
    PlacedObject base;
    LockObject *lock;
} ConditionObject;

static int
Condition_init(ConditionObject *self, PyObject *args, PyObject *Py_UNUSED(kw))
{
    PyObject *segobj, *lockobj;
    unsigned long long offset;
    PyObject *placed_args;
    int rc;

    if (!PyArg_ParseTuple(args, "O!KO!", &hcpy_Segment_Type, &segobj, &offset,
                          &hcpy_Lock_Type, &lockobj))
        return -1;
    if (self->lock != NULL) {
        PyErr_SetString(PyExc_TypeError, "the object is initialised already");
        return -1;
    }
    if (((LockObject *) lockobj)->base.segment != (SegmentObject *) segobj) {
        PyErr_SetString(PyExc_ValueError,
                        "the condition and its lock must be in one segment");
        return -1;
    }
    placed_args = Py_BuildValue("(OK)", segobj, offset);
    if (placed_args == NULL)
        return -1;
    rc = placed_init(&self->base, placed_args, sizeof(hc_cond));
    Py_DECREF(placed_args);
    if (rc < 0)
        return -1;
    Py_INCREF(lockobj);
    Py_XSETREF(self->lock, (LockObject *) lockobj);
    return 0;
}

static void
Condition_dealloc(ConditionObject *self)
{
    Py_XDECREF(self->lock);
    placed_dealloc(&self->base);
}

PyDoc_STRVAR(Condition_wait_doc,
"wait(timeout=None) -> bool\n\n"
"Release the lock, sleep until notified or timeout, take the lock again.\n"
"False if the timeout expired.  Spurious wake-ups are possible: test the\n"
"predicate in a loop, or use wait_for().  Taking the lock back is bounded\n"
"by the same timeout (plus one 10 ms probe step): if another holder keeps\n"
"the lock past it, LockNotRetaken is raised and the lock is NOT held.");

/* wait() and _wait(): sleep until timeout, take the lock back until
 * retake (a timeout too; None: however long it takes). */
static PyObject *
condition_wait(ConditionObject *self, PyObject *timeout, PyObject *retake)
{
    hc_segment *seg = placed_segment(&self->base);
    hc_cond *cv = self->base.ptr;
    hc_lock *lock = self->lock->base.ptr;
    uint64_t deadline, retake_deadline;
    hc_status st;

    if (seg == NULL)
        return NULL;
    if (self->lock->base.segment != self->base.segment) {
        PyErr_SetString(PyExc_ValueError,
                        "the condition and its lock must be in one segment");
        return NULL;
    }
    if (hcpy_deadline(timeout, HCPY_WAIT, &deadline) < 0
        || hcpy_deadline(retake, HCPY_WAIT, &retake_deadline) < 0)
        return NULL;
    PINNED_UNLOCKED(seg, st, hc_cond_wait_until(seg, cv, lock, deadline,
                                                retake_deadline));
    switch (st) {
    case HC_OWNER_DIED:
        self->lock->owner_died = 1;
        Py_RETURN_TRUE;
    case HC_OK:
        Py_RETURN_TRUE;
    case HC_TIMEOUT:
        Py_RETURN_FALSE;
    case HC_INTERRUPTED:
        /* The lock is held again; report a wake-up unless a handler raised. */
        if (PyErr_CheckSignals() < 0)
            return NULL;
        Py_RETURN_TRUE;
    case HC_NOT_RETAKEN:
        hcpy_count_lock(self->base.segment, -1);
        return hcpy_raise_status("wait", st);
    default:
        return hcpy_raise_status("wait", st);
    }
}

static PyObject *
Condition_wait(ConditionObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"timeout", NULL};
    PyObject *timeout = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O", kwlist, &timeout))
        return NULL;
    return condition_wait(self, timeout, timeout);
}

PyDoc_STRVAR(Condition__wait_doc,
"_wait(timeout, retake_timeout) -> bool\n\n"
"wait(timeout), taking the lock back within retake_timeout (None:\n"
"however long it takes) rather than within timeout; for wait_for().");

static PyObject *
Condition__wait(ConditionObject *self, PyObject *args)
{
    PyObject *timeout, *retake;

    if (!PyArg_ParseTuple(args, "OO", &timeout, &retake))
        return NULL;
    return condition_wait(self, timeout, retake);
}

PyDoc_STRVAR(Condition_notify_doc,
"notify(n=1) -> None\n\n"
"Wake up to n waiters, in any process.  The caller holds the lock.");

/* As threading.Condition: notify only with the lock held, or a waiter
 * that tested its predicate just before may miss the wake-up. */
static int
require_lock(ConditionObject *self)
{
    hc_segment *seg = placed_segment(&self->base);

    if (seg == NULL)
        return -1;
    if (!hc_lock_held_by_me(seg, self->lock->base.ptr)) {
        hc_set_detail("notify() needs the condition's lock");
        hcpy_raise_status("notify", HC_NOT_OWNER);
        return -1;
    }
    return 0;
}

static PyObject *
Condition_notify(ConditionObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"n", NULL};
    int n = 1;

    if (require_lock(self) < 0)
        return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|i", kwlist, &n))
        return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "n must be >= 0");
        return NULL;
    }
    if (n > 0)
        hc_cond_notify(self->base.ptr, n);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(Condition_notify_all_doc,
"notify_all() -> None\n\n"
"Wake every waiter, in every process.  The caller holds the lock.");

static PyObject *
Condition_notify_all(ConditionObject *self, PyObject *Py_UNUSED(ignored))
{
    if (require_lock(self) < 0)
        return NULL;
    hc_cond_notify(self->base.ptr, -1);
    Py_RETURN_NONE;
}

static PyObject *
Condition_get_lock(ConditionObject *self, void *Py_UNUSED(closure))
{
    if (self->lock == NULL)
        Py_RETURN_NONE;
    return Py_NewRef(self->lock);
}

static PyGetSetDef Condition_getset[] = {
    {"lock", (getter) Condition_get_lock, NULL, "the condition's Lock", NULL},
    {NULL}
};

static PyMethodDef Condition_methods[] = {
    {"wait", (PyCFunction) (void (*)(void)) Condition_wait,
     METH_VARARGS | METH_KEYWORDS, Condition_wait_doc},
    {"_wait", (PyCFunction) Condition__wait, METH_VARARGS,
     Condition__wait_doc},
    {"notify", (PyCFunction) (void (*)(void)) Condition_notify,
     METH_VARARGS | METH_KEYWORDS, Condition_notify_doc},
    {"notify_all", (PyCFunction) Condition_notify_all, METH_NOARGS,
     Condition_notify_all_doc},
    {NULL}
};

PyTypeObject hcpy_Condition_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "herdcache._core.Condition",
    .tp_basicsize = sizeof(ConditionObject),
    .tp_dealloc = (destructor) Condition_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Condition(segment, offset, lock): a cross-process condition.",
    .tp_methods = Condition_methods,
    .tp_getset = Condition_getset,
    .tp_init = (initproc) Condition_init,
    .tp_new = PyType_GenericNew,
};

/* ---------------------------------------------------------------------- */
/* Counter                                                                */
/* ---------------------------------------------------------------------- */

static int
Counter_init(PlacedObject *self, PyObject *args, PyObject *Py_UNUSED(kw))
{
    return placed_init(self, args, sizeof(hc_counter));
}

static hc_counter *
counter_of(PlacedObject *self)
{
    return placed_segment(self) ? self->ptr : NULL;
}

PyDoc_STRVAR(Counter_add_doc,
"add(n=1) -> int\n\nAdd n atomically and return the new value.");

static PyObject *
Counter_add(PlacedObject *self, PyObject *args)
{
    long long n = 1;
    hc_counter *c = counter_of(self);

    if (c == NULL || !PyArg_ParseTuple(args, "|L", &n))
        return NULL;
    return PyLong_FromLongLong(hc_counter_add(c, n));
}

PyDoc_STRVAR(Counter_load_doc, "load() -> int\n\nThe current value.");

static PyObject *
Counter_load(PlacedObject *self, PyObject *Py_UNUSED(ignored))
{
    hc_counter *c = counter_of(self);

    return c ? PyLong_FromLongLong(hc_counter_load(c)) : NULL;
}

PyDoc_STRVAR(Counter_store_doc, "store(value) -> None\n\nSet the value.");

static PyObject *
Counter_store(PlacedObject *self, PyObject *args)
{
    long long v;
    hc_counter *c = counter_of(self);

    if (c == NULL || !PyArg_ParseTuple(args, "L", &v))
        return NULL;
    hc_counter_store(c, v);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(Counter_exchange_doc,
"exchange(value) -> int\n\nSet the value and return the old one.");

static PyObject *
Counter_exchange(PlacedObject *self, PyObject *args)
{
    long long v;
    hc_counter *c = counter_of(self);

    if (c == NULL || !PyArg_ParseTuple(args, "L", &v))
        return NULL;
    return PyLong_FromLongLong(hc_counter_exchange(c, v));
}

PyDoc_STRVAR(Counter_compare_exchange_doc,
"compare_exchange(expected, desired) -> bool\n\n"
"Set desired if the value is expected; True if it was set.");

static PyObject *
Counter_compare_exchange(PlacedObject *self, PyObject *args)
{
    long long expected, desired;
    hc_counter *c = counter_of(self);
    int64_t exp;

    if (c == NULL || !PyArg_ParseTuple(args, "LL", &expected, &desired))
        return NULL;
    exp = expected;
    return PyBool_FromLong(hc_counter_compare_exchange(c, &exp, desired));
}

static PyMethodDef Counter_methods[] = {
    {"add", (PyCFunction) Counter_add, METH_VARARGS, Counter_add_doc},
    {"load", (PyCFunction) Counter_load, METH_NOARGS, Counter_load_doc},
    {"store", (PyCFunction) Counter_store, METH_VARARGS, Counter_store_doc},
    {"exchange", (PyCFunction) Counter_exchange, METH_VARARGS,
     Counter_exchange_doc},
    {"compare_exchange", (PyCFunction) Counter_compare_exchange,
     METH_VARARGS, Counter_compare_exchange_doc},
    {NULL}
};

PyTypeObject hcpy_Counter_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "herdcache._core.Counter",
    .tp_basicsize = sizeof(PlacedObject),
    .tp_dealloc = (destructor) placed_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Counter(segment, offset): an atomic int64 in a segment.",
    .tp_methods = Counter_methods,
    .tp_init = (initproc) Counter_init,
    .tp_new = PyType_GenericNew,
};
