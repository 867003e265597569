/*-------------------------------------------------------------------------
 *
 * py_segment.c
 *	  herdcache._core.Segment: one process's mapping of a segment, and the
 *	  functions that find segments by name.
 *
 * A Segment object owns its hc_segment until close().  It counts what may
 * still point into the mapping from this process (exported buffers, held
 * locks; GIL-free calls count themselves in sg_busy through
 * PINNED_UNLOCKED) and refuses close() while any is there.
 *
 *-------------------------------------------------------------------------
 */
#include "py_binding.h"

#include <string.h>

#include "registry.h"
#include "slot.h"

hc_segment *
hcpy_segment_get(SegmentObject *self)
{
    if (self->seg == NULL)
        hcpy_raise_status("segment", HC_CLOSED);
    return self->seg;
}

PyObject *
hcpy_segment_wrap(PyTypeObject *type, hc_segment *seg)
{
    SegmentObject *self = (SegmentObject *) type->tp_alloc(type, 0);

    if (self == NULL) {
        hc_segment_close(seg);
        return NULL;
    }
    self->seg = seg;
    self->exports = 0;
    self->locks_held = 0;
    return (PyObject *) self;
}

hc_status
hcpy_wait(hc_segment *seg, hcpy_wait_fn wait, void *arg, uint64_t deadline)
{
    hc_status st;

    for (;;) {
        uint64_t until = hc_deadline_min_step(deadline, HCPY_SIGNAL_SLICE_NS);

        PINNED_UNLOCKED(seg, st, wait(arg, until));
        if (st == HC_TIMEOUT && until < deadline)
            st = HC_INTERRUPTED;        /* a slice ended: run the handlers */
        if (st != HC_INTERRUPTED)
            return st;
        if (PyErr_CheckSignals() < 0)
            return HC_INTERRUPTED;
    }
}

static void
Segment_dealloc(SegmentObject *self)
{
    /* If locks are still held the mapping must stay: leak it, safely. */
    if (self->seg != NULL)
        hc_segment_close(self->seg);
    Py_TYPE(self)->tp_free((PyObject *) self);
}

/* Locks this process holds through self (none, in a fresh fork child). */
static Py_ssize_t
locks_held(SegmentObject *self)
{
    if (self->locks_epoch != hc_fork_epoch()) {
        self->locks_held = 0;
        self->locks_epoch = hc_fork_epoch();
    }
    return self->locks_held;
}

void
hcpy_count_lock(SegmentObject *self, int delta)
{
    self->locks_held = locks_held(self) + delta;
}

PyDoc_STRVAR(Segment_close_doc,
"close() -> None\n\n"
"Unmap this process's view of the segment.  Raises SegmentBusy while a\n"
"lock of the segment is held by this process or a memoryview is alive.");

static PyObject *
Segment_close(SegmentObject *self, PyObject *Py_UNUSED(ignored))
{
    hc_status st;

    if (self->seg == NULL)
        Py_RETURN_NONE;
    if (self->exports > 0 || locks_held(self) > 0) {
        hc_set_detail("%zd memoryviews of it are alive and %zd of its locks "
                      "are held", self->exports, self->locks_held);
        return hcpy_raise_status("close", HC_BUSY);
    }
    st = hc_segment_close(self->seg);
    if (st != HC_OK)
        return hcpy_raise_status("close", st);
    self->seg = NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(Segment_alloc_doc,
"alloc(name, size, kind) -> (offset, found)\n\n"
"Find the structure called name, or allocate size bytes for it (zeroed,\n"
"64-byte aligned, never freed).  found tells which.");

static PyObject *
Segment_alloc(SegmentObject *self, PyObject *args)
{
    const char *name;
    Py_ssize_t name_len;
    unsigned long long size;
    int kind;
    hc_struct_info info;
    bool found = false;
    hc_segment *seg = hcpy_segment_get(self);
    hc_status st;

    if (seg == NULL)
        return NULL;
    if (!PyArg_ParseTuple(args, "s#Ki", &name, &name_len, &size, &kind))
        return NULL;
    if (kind <= 0 || kind >= HC_KIND_COUNT) {
        PyErr_Format(PyExc_ValueError, "unknown structure kind %d", kind);
        return NULL;
    }
    PINNED_UNLOCKED(seg, st,
                    hc_registry_find_or_alloc(seg, name, (size_t) name_len,
                                              size, (hc_struct_kind) kind,
                                              &info, &found));
    if (st != HC_OK)
        return hcpy_raise_status("struct", st);
    return Py_BuildValue("(KO)", (unsigned long long) info.offset,
                         found ? Py_True : Py_False);
}

PyDoc_STRVAR(Segment_structs_doc,
"structs() -> list[tuple[str, str, int, int]]\n\n"
"Every named structure as (name, kind, offset, size).");

/*
 * A structure's name as str.  Names come from the segment, so they are
 * untrusted: one that is not UTF-8 (no name herdcache wrote ever is)
 * means the registry is corrupt, not that the caller passed bad text.
 */
static PyObject *
struct_name(const hc_struct_info *info, size_t index)
{
    PyObject *name = PyUnicode_DecodeUTF8(info->name,
                                          (Py_ssize_t) strlen(info->name),
                                          "strict");

    if (name == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();
        hc_set_detail("the name of structure %zu is not UTF-8", index);
        hcpy_raise_status("structs", HC_CORRUPT);
    }
    return name;
}

static PyObject *
Segment_structs(SegmentObject *self, PyObject *Py_UNUSED(ignored))
{
    hc_struct_info infos[HC_REGISTRY_CAPACITY];
    size_t count = 0, i;
    hc_segment *seg = hcpy_segment_get(self);
    PyObject *list;
    hc_status st;

    if (seg == NULL)
        return NULL;
    st = hc_registry_list(seg, infos, HC_REGISTRY_CAPACITY, &count);
    if (st != HC_OK)
        return hcpy_raise_status("structs", st);
    list = PyList_New(0);
    for (i = 0; list != NULL && i < count && i < HC_REGISTRY_CAPACITY; i++) {
        PyObject *name = struct_name(&infos[i], i);
        PyObject *item = name == NULL ? NULL : Py_BuildValue(
            "(NsKK)", name, hc_struct_kind_name(infos[i].kind),
            (unsigned long long) infos[i].offset,
            (unsigned long long) infos[i].size);

        if (item == NULL || PyList_Append(list, item) < 0) {
            Py_XDECREF(item);
            Py_CLEAR(list);
            break;
        }
        Py_DECREF(item);
    }
    return list;
}

PyDoc_STRVAR(Segment_info_doc,
"info() -> dict\n\n"
"Identity and usage of the segment: name, path, size, used, free,\n"
"creator pid and uid, creation time, attached processes, own slot.");

static PyObject *
Segment_info(SegmentObject *self, PyObject *Py_UNUSED(ignored))
{
    hc_segment *seg = hcpy_segment_get(self);
    hc_segment_header *h;
    uint64_t top;
    uint32_t live, slot = 0;
    hc_status st;

    if (seg == NULL)
        return NULL;
    h = seg->sg_header;
    top = atomic_load_explicit(&h->sh_alloc_top, memory_order_relaxed);
    if (top > seg->sg_size)
        top = seg->sg_size;
    st = hc_slot_self_index(seg, &slot);
    if (st != HC_OK)
        return hcpy_raise_status("info", st);
    PINNED_UNLOCKED(seg, live, hc_slot_count_live(seg));
    return Py_BuildValue(
        "{s:s,s:s,s:O,s:K,s:K,s:K,s:K,s:I,s:I,s:d,s:I,s:I,s:O,s:I,s:I,s:s}",
        "name", seg->sg_name, "path", seg->sg_path,
        "anonymous", seg->sg_anonymous ? Py_True : Py_False,
        "size", (unsigned long long) seg->sg_size,
        "used", (unsigned long long) top,
        "free", (unsigned long long) (seg->sg_size - top),
        "data_offset", (unsigned long long) h->sh_data_offset,
        "creator_pid", h->sh_creator_pid, "creator_uid", h->sh_creator_uid,
        "created", (double) h->sh_created_unix_ns / 1e9,
        "layout_version", h->sh_layout_version,
        "attached", live,
        "rebooted", seg->sg_rebooted ? Py_True : Py_False,
        "slot", slot, "max_processes", (unsigned) HC_MAX_SLOTS,
        "huge_pages", hc_huge_got_name(seg->sg_huge));
}

static PyObject *
Segment_get_hash_seed(SegmentObject *self, void *Py_UNUSED(closure))
{
    hc_segment *seg = hcpy_segment_get(self);

    if (seg == NULL)
        return NULL;
    return PyBytes_FromStringAndSize(
        (const char *) seg->sg_header->sh_hash_seed,
        sizeof(seg->sg_header->sh_hash_seed));
}

static PyObject *
Segment_get_closed(SegmentObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->seg == NULL);
}

static PyObject *
Segment_get_size(SegmentObject *self, void *Py_UNUSED(closure))
{
    hc_segment *seg = hcpy_segment_get(self);

    return seg ? PyLong_FromUnsignedLongLong(seg->sg_size) : NULL;
}

static PyObject *
Segment_get_path(SegmentObject *self, void *Py_UNUSED(closure))
{
    hc_segment *seg = hcpy_segment_get(self);

    if (seg == NULL)
        return NULL;
    if (seg->sg_anonymous)
        Py_RETURN_NONE;
    return PyUnicode_DecodeFSDefault(seg->sg_path);
}

static PyObject *
Segment_get_created(SegmentObject *self, void *Py_UNUSED(closure))
{
    hc_segment *seg = hcpy_segment_get(self);

    return seg ? PyBool_FromLong(seg->sg_creator) : NULL;
}

static int
Segment_getbuffer(SegmentObject *self, Py_buffer *view, int flags)
{
    hc_segment *seg = hcpy_segment_get(self);

    if (seg == NULL)
        return -1;
    if (PyBuffer_FillInfo(view, (PyObject *) self, seg->sg_base,
                          (Py_ssize_t) seg->sg_size, 0, flags) < 0)
        return -1;
    self->exports++;
    return 0;
}

static void
Segment_releasebuffer(SegmentObject *self, Py_buffer *Py_UNUSED(view))
{
    self->exports--;
}

static PyBufferProcs Segment_as_buffer = {
    (getbufferproc) Segment_getbuffer,
    (releasebufferproc) Segment_releasebuffer,
};

/* ---------------------------------------------------------------------- */
/* Segments by name: Segment._create, _attach, _open, _anonymous and the  */
/* module functions unlink, is_orphan, validate_name                      */
/* ---------------------------------------------------------------------- */

/* Argument parsing shared by create / attach / open / unlink / is_orphan. */
typedef struct {
    const char *name;
    unsigned long long size;
    const char *dir;
    unsigned mode;
    int allow_shared;
    PyObject *timeout;          /* attach: seconds to wait for a creator */
    unsigned int huge;          /* hc_huge_mode */
} segment_args;

/* The core's options for a; -1 with an exception (a bad timeout). */
static int
options_of(const segment_args *a, hc_segment_options *o)
{
    memset(o, 0, sizeof(*o));
    o->dir = a->dir;
    o->mode = a->mode;
    o->allow_shared = a->allow_shared != 0;
    o->huge_pages = a->huge <= HC_HUGE_ON ? (hc_huge_mode) a->huge
                                          : HC_HUGE_ON;
    return hcpy_seconds(a->timeout, "timeout", HCPY_GRACE,
                        &o->attach_wait_ns);
}

PyDoc_STRVAR(Segment_create_doc,
"_create(name, size, dir=None, mode=0o600, huge_pages=0) -> Segment\n\n"
"Create a named segment; fail if the name exists.");

static PyObject *
Segment_create(PyTypeObject *cls, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"name", "size", "dir", "mode", "huge_pages",
                             NULL};
    segment_args a = {.mode = 0600};
    hc_segment_options o;
    hc_segment *seg;
    hc_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "sK|zII", kwlist, &a.name,
                                     &a.size, &a.dir, &a.mode, &a.huge))
        return NULL;
    if (options_of(&a, &o) < 0)
        return NULL;
    UNLOCKED(st, hc_segment_create(a.name, a.size, &o, &seg));
    if (st != HC_OK)
        return hcpy_raise_in(HCPY_IN_SEGMENT_CREATE, "create", st);
    return hcpy_segment_wrap(cls, seg);
}

PyDoc_STRVAR(Segment_attach_doc,
"_attach(name, dir=None, allow_shared=False, timeout=30.0, huge_pages=0)"
" -> Segment\n\n"
"Attach an existing named segment.");

static PyObject *
Segment_attach(PyTypeObject *cls, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"name", "dir", "allow_shared", "timeout",
                             "huge_pages", NULL};
    segment_args a = {0};
    hc_segment_options o;
    hc_segment *seg;
    hc_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "s|zpOI", kwlist, &a.name,
                                     &a.dir, &a.allow_shared, &a.timeout,
                                     &a.huge))
        return NULL;
    if (options_of(&a, &o) < 0)
        return NULL;
    UNLOCKED(st, hc_segment_attach(a.name, &o, &seg));
    if (st != HC_OK)
        return hcpy_raise_status("attach", st);
    return hcpy_segment_wrap(cls, seg);
}

PyDoc_STRVAR(Segment_open_doc,
"_open(name, size, dir=None, mode=0o600, allow_shared=False, timeout=30.0,"
" huge_pages=0) -> (Segment, created)\n\n"
"Attach the named segment, or create it if absent (race-free).");

static PyObject *
Segment_open(PyTypeObject *cls, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"name", "size", "dir", "mode", "allow_shared",
                             "timeout", "huge_pages", NULL};
    segment_args a = {.mode = 0600};
    hc_segment_options o;
    hc_segment *seg;
    bool created = false;
    PyObject *obj;
    hc_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "sK|zIpOI", kwlist, &a.name,
                                     &a.size, &a.dir, &a.mode,
                                     &a.allow_shared, &a.timeout, &a.huge))
        return NULL;
    if (options_of(&a, &o) < 0)
        return NULL;
    UNLOCKED(st, hc_segment_open(a.name, a.size, &o, &seg, &created));
    if (st != HC_OK)
        return hcpy_raise_in(HCPY_IN_SEGMENT_CREATE, "open", st);
    obj = hcpy_segment_wrap(cls, seg);
    if (obj == NULL)
        return NULL;
    return Py_BuildValue("(NO)", obj, created ? Py_True : Py_False);
}

PyDoc_STRVAR(Segment_anonymous_doc,
"_anonymous(size, huge_pages=0) -> Segment\n\n"
"Create a segment shared with fork() children only.");

static PyObject *
Segment_anonymous(PyTypeObject *cls, PyObject *args)
{
    unsigned long long size;
    unsigned int huge = HC_HUGE_OFF;
    hc_segment *seg;
    hc_status st;

    if (!PyArg_ParseTuple(args, "K|I", &size, &huge))
        return NULL;
    UNLOCKED(st, hc_segment_anonymous(size, huge <= HC_HUGE_ON
                                      ? (hc_huge_mode) huge : HC_HUGE_ON,
                                      &seg));
    if (st != HC_OK)
        return hcpy_raise_in(HCPY_IN_SEGMENT_CREATE, "anonymous", st);
    return hcpy_segment_wrap(cls, seg);
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

static PyMethodDef Segment_methods[] = {
    {"close", (PyCFunction) Segment_close, METH_NOARGS, Segment_close_doc},
    {"alloc", (PyCFunction) Segment_alloc, METH_VARARGS, Segment_alloc_doc},
    {"structs", (PyCFunction) Segment_structs, METH_NOARGS,
     Segment_structs_doc},
    {"info", (PyCFunction) Segment_info, METH_NOARGS, Segment_info_doc},
    {"_create", (PyCFunction) (void (*)(void)) Segment_create,
     METH_VARARGS | METH_KEYWORDS | METH_CLASS, Segment_create_doc},
    {"_attach", (PyCFunction) (void (*)(void)) Segment_attach,
     METH_VARARGS | METH_KEYWORDS | METH_CLASS, Segment_attach_doc},
    {"_open", (PyCFunction) (void (*)(void)) Segment_open,
     METH_VARARGS | METH_KEYWORDS | METH_CLASS, Segment_open_doc},
    {"_anonymous", (PyCFunction) Segment_anonymous, METH_VARARGS | METH_CLASS,
     Segment_anonymous_doc},
    {NULL}
};

static PyGetSetDef Segment_getset[] = {
    {"closed", (getter) Segment_get_closed, NULL, "True after close()", NULL},
    {"size", (getter) Segment_get_size, NULL, "bytes mapped", NULL},
    {"path", (getter) Segment_get_path, NULL, "file path, None if anonymous",
     NULL},
    {"created", (getter) Segment_get_created, NULL,
     "True if this process created the segment", NULL},
    {"hash_seed", (getter) Segment_get_hash_seed, NULL,
     "the segment's random 16-byte key for hashes that must agree across "
     "processes", NULL},
    {NULL}
};

PyTypeObject hcpy_Segment_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "herdcache._core.Segment",
    .tp_basicsize = sizeof(SegmentObject),
    .tp_dealloc = (destructor) Segment_dealloc,
    .tp_as_buffer = &Segment_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "A mapped shared memory segment (made by create, attach, "
              "open or anonymous).",
    .tp_methods = Segment_methods,
    .tp_getset = Segment_getset,
};

/* The functions that find segments by name, without mapping one. */
PyMethodDef hcpy_segment_functions[] = {
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
