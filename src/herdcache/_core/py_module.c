/*-------------------------------------------------------------------------
 *
 * py_module.c
 *	  herdcache._core: module init, constants, segment-level functions.
 *
 * The functions that make or find a segment by name (create, attach, open,
 * anonymous, unlink, is_orphan, validate_name) and the constants Python
 * reads; each type lives in its own py_*.c (see py_binding.h).
 *
 *-------------------------------------------------------------------------
 */
#include "py_binding.h"

#include <string.h>

#include "registry.h"
#include "slot.h"
#include "table.h"


/* Argument parsing shared by create / attach / open. */
typedef struct {
    const char *name;
    unsigned long long size;
    const char *dir;
    unsigned mode;
    int allow_shared;
    PyObject *timeout;          /* attach: seconds to wait for a creator */
} segment_args;

/* The core's options for a; -1 with an exception (a bad timeout). */
static int
options_of(const segment_args *a, hc_segment_options *o)
{
    memset(o, 0, sizeof(*o));
    o->dir = a->dir;
    o->mode = a->mode;
    o->allow_shared = a->allow_shared != 0;
    return hcpy_seconds(a->timeout, "timeout", HCPY_GRACE,
                        &o->attach_wait_ns);
}

PyDoc_STRVAR(create_doc,
"create(name, size, dir=None, mode=0o600) -> Segment\n\n"
"Create a named segment; fail if the name exists.");

static PyObject *
core_create(PyObject *Py_UNUSED(m), PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"name", "size", "dir", "mode", NULL};
    segment_args a = {.mode = 0600};
    hc_segment_options o;
    hc_segment *seg;
    hc_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "sK|zI", kwlist, &a.name,
                                     &a.size, &a.dir, &a.mode))
        return NULL;
    if (options_of(&a, &o) < 0)
        return NULL;
    UNLOCKED(st, hc_segment_create(a.name, a.size, &o, &seg));
    if (st != HC_OK)
        return hcpy_raise_status("create", st);
    return hcpy_segment_wrap(seg);
}

PyDoc_STRVAR(attach_doc,
"attach(name, dir=None, allow_shared=False, timeout=30.0) -> Segment\n\n"
"Attach an existing named segment.");

static PyObject *
core_attach(PyObject *Py_UNUSED(m), PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"name", "dir", "allow_shared", "timeout", NULL};
    segment_args a = {0};
    hc_segment_options o;
    hc_segment *seg;
    hc_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "s|zpO", kwlist, &a.name,
                                     &a.dir, &a.allow_shared, &a.timeout))
        return NULL;
    if (options_of(&a, &o) < 0)
        return NULL;
    UNLOCKED(st, hc_segment_attach(a.name, &o, &seg));
    if (st != HC_OK)
        return hcpy_raise_status("attach", st);
    return hcpy_segment_wrap(seg);
}

PyDoc_STRVAR(open_doc,
"open(name, size, dir=None, mode=0o600, allow_shared=False, timeout=30.0)"
" -> (Segment, created)\n\n"
"Attach the named segment, or create it if absent (race-free).");

static PyObject *
core_open(PyObject *Py_UNUSED(m), PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"name", "size", "dir", "mode", "allow_shared",
                             "timeout", NULL};
    segment_args a = {.mode = 0600};
    hc_segment_options o;
    hc_segment *seg;
    bool created = false;
    PyObject *obj;
    hc_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "sK|zIpO", kwlist, &a.name,
                                     &a.size, &a.dir, &a.mode,
                                     &a.allow_shared, &a.timeout))
        return NULL;
    if (options_of(&a, &o) < 0)
        return NULL;
    UNLOCKED(st, hc_segment_open(a.name, a.size, &o, &seg, &created));
    if (st != HC_OK)
        return hcpy_raise_status("open", st);
    obj = hcpy_segment_wrap(seg);
    if (obj == NULL)
        return NULL;
    return Py_BuildValue("(NO)", obj, created ? Py_True : Py_False);
}

PyDoc_STRVAR(anonymous_doc,
"anonymous(size) -> Segment\n\n"
"Create a segment shared with fork() children only.");

static PyObject *
core_anonymous(PyObject *Py_UNUSED(m), PyObject *args)
{
    unsigned long long size;
    hc_segment *seg;
    hc_status st;

    if (!PyArg_ParseTuple(args, "K", &size))
        return NULL;
    UNLOCKED(st, hc_segment_anonymous(size, &seg));
    if (st != HC_OK)
        return hcpy_raise_status("anonymous", st);
    return hcpy_segment_wrap(seg);
}

PyDoc_STRVAR(unlink_doc,
"unlink(name, dir=None) -> None\n\nRemove a named segment's file.");

static PyObject *
core_unlink(PyObject *Py_UNUSED(m), PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"name", "dir", NULL};
    segment_args a = {0};
    hc_segment_options o;
    hc_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "s|z", kwlist, &a.name,
                                     &a.dir))
        return NULL;
    if (options_of(&a, &o) < 0)
        return NULL;
    st = hc_segment_unlink_name(a.name, &o);
    if (st != HC_OK)
        return hcpy_raise_status("unlink", st);
    Py_RETURN_NONE;
}

/* is_orphan() and remove_if_orphan(): one probe, with or without unlink. */
static PyObject *
orphan_call(PyObject *args, PyObject *kw, bool remove)
{
    static char *kwlist[] = {"name", "dir", NULL};
    segment_args a = {0};
    hc_segment_options o;
    bool result = false;
    hc_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "s|z", kwlist, &a.name,
                                     &a.dir))
        return NULL;
    if (options_of(&a, &o) < 0)
        return NULL;
    UNLOCKED(st, remove ? hc_segment_remove_if_orphan(a.name, &o, &result)
                        : hc_segment_is_orphan(a.name, &o, &result));
    if (st != HC_OK)
        return hcpy_raise_status(remove ? "remove_if_orphan" : "is_orphan",
                                 st);
    return PyBool_FromLong(result);
}

PyDoc_STRVAR(is_orphan_doc,
"is_orphan(name, dir=None) -> bool\n\n"
"True if no live process is attached to the named segment.");

static PyObject *
core_is_orphan(PyObject *Py_UNUSED(m), PyObject *args, PyObject *kw)
{
    return orphan_call(args, kw, false);
}

PyDoc_STRVAR(remove_if_orphan_doc,
"remove_if_orphan(name, dir=None) -> bool\n\n"
"Unlink the named segment if no live process is attached to it, with\n"
"attachers held off while deciding; True if it was removed.");

static PyObject *
core_remove_if_orphan(PyObject *Py_UNUSED(m), PyObject *args, PyObject *kw)
{
    return orphan_call(args, kw, true);
}

PyDoc_STRVAR(validate_name_doc,
"validate_name(name) -> None\n\nRaise InvalidName if name is not valid.");

static PyObject *
core_validate_name(PyObject *Py_UNUSED(m), PyObject *arg)
{
    Py_ssize_t len;
    const char *name = PyUnicode_AsUTF8AndSize(arg, &len);
    hc_status st;

    if (name == NULL)
        return NULL;
    if ((size_t) len != strlen(name)) {
        hc_set_detail("the name contains a NUL byte");
        return hcpy_raise_status("name", HC_BAD_NAME);
    }
    st = hc_segment_validate_name(name);
    if (st != HC_OK)
        return hcpy_raise_status("name", st);
    Py_RETURN_NONE;
}


/* ---------------------------------------------------------------------- */
/* Module                                                                 */
/* ---------------------------------------------------------------------- */

static PyMethodDef module_methods[] = {
    {"create", (PyCFunction) (void (*)(void)) core_create,
     METH_VARARGS | METH_KEYWORDS, create_doc},
    {"attach", (PyCFunction) (void (*)(void)) core_attach,
     METH_VARARGS | METH_KEYWORDS, attach_doc},
    {"open", (PyCFunction) (void (*)(void)) core_open,
     METH_VARARGS | METH_KEYWORDS, open_doc},
    {"anonymous", (PyCFunction) core_anonymous, METH_VARARGS, anonymous_doc},
    {"unlink", (PyCFunction) (void (*)(void)) core_unlink,
     METH_VARARGS | METH_KEYWORDS, unlink_doc},
    {"is_orphan", (PyCFunction) (void (*)(void)) core_is_orphan,
     METH_VARARGS | METH_KEYWORDS, is_orphan_doc},
    {"remove_if_orphan", (PyCFunction) (void (*)(void)) core_remove_if_orphan,
     METH_VARARGS | METH_KEYWORDS, remove_if_orphan_doc},
    {"validate_name", (PyCFunction) core_validate_name, METH_O,
     validate_name_doc},
    {NULL}
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "herdcache._core",
    .m_doc = "The C core of herdcache (use the herdcache package instead).",
    .m_size = -1,
    .m_methods = module_methods,
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

PyMODINIT_FUNC
PyInit__core(void)
{
    PyObject *m;

    if (hcpy_load_exceptions() < 0)
        return NULL;
    m = PyModule_Create(&core_module);
    if (m == NULL)
        return NULL;
    if (add_type(m, &hcpy_Segment_Type, "Segment") < 0
        || add_type(m, &hcpy_Lock_Type, "Lock") < 0
        || add_type(m, &hcpy_Condition_Type, "Condition") < 0
        || add_type(m, &hcpy_Counter_Type, "Counter") < 0
        || add_type(m, &hcpy_Cache_Type, "Cache") < 0
        || add_type(m, &hcpy_Queue_Type, "Queue") < 0
        || PyModule_AddIntConstant(m, "KEY_MAX", HC_KEY_MAX) < 0
        || PyModule_AddIntConstant(m, "MIN_CACHE_SIZE",
                                   (long) hc_cache_min_size()) < 0
        || PyModule_AddIntConstant(m, "KIND_RAW", HC_KIND_RAW) < 0
        || PyModule_AddIntConstant(m, "KIND_COUNTER", HC_KIND_COUNTER) < 0
        || PyModule_AddIntConstant(m, "KIND_LOCK", HC_KIND_LOCK) < 0
        || PyModule_AddIntConstant(m, "KIND_CONDITION", HC_KIND_CONDITION) < 0
        || PyModule_AddIntConstant(m, "KIND_QUEUE", HC_KIND_QUEUE) < 0
        || PyModule_AddIntConstant(m, "KIND_CACHE", HC_KIND_CACHE) < 0
        || PyModule_AddIntConstant(m, "MAX_PROCESSES", HC_MAX_SLOTS) < 0
        || PyModule_AddIntConstant(m, "STRUCT_NAME_MAX",
                                   HC_STRUCT_NAME_MAX) < 0
        || PyModule_AddIntConstant(m, "SEGMENT_NAME_MAX",
                                   HC_SEGMENT_NAME_MAX) < 0
        || PyModule_AddIntConstant(m, "MIN_SEGMENT_SIZE",
                                   (long) hc_segment_min_size()) < 0
        || PyModule_AddStringConstant(m, "DEFAULT_DIR", HC_DEFAULT_DIR) < 0
        || PyModule_AddStringConstant(m, "FILE_PREFIX", HC_FILE_PREFIX) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
