/*-------------------------------------------------------------------------
 *
 * module.c
 *	  herdcache._core: the one file that turns the C core into Python.
 *
 * It parses arguments, maps hc_status codes onto herdcache.errors through
 * one table (raise_status), and releases the GIL around every call that
 * may sleep.  The core never calls back into Python; waits that a signal
 * interrupts come back as HC_INTERRUPTED, and this file runs the Python
 * signal handlers (PyErr_CheckSignals) before it waits again, so Ctrl-C
 * works inside a long lock or condition wait.
 *
 * Lifetimes.  Every object made from a segment (a Lock, a Condition, a
 * Counter, a memoryview) holds a reference to its Segment object.  close()
 * refuses while a lock is held or a view is exported, so no object ever
 * touches unmapped memory; after close() their methods raise
 * SegmentClosed.
 *
 *-------------------------------------------------------------------------
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <math.h>
#include <string.h>

#include "clock.h"
#include "condvar.h"
#include "counter.h"
#include "flight.h"
#include "lock.h"
#include "registry.h"
#include "segment.h"
#include "slot.h"
#include "status.h"
#include "table.h"

/* UNLOCKED: run a core call with the GIL released. */
#define UNLOCKED(out, call) \
    Py_BEGIN_ALLOW_THREADS \
    (out) = (call); \
    Py_END_ALLOW_THREADS

/*
 * PINNED_UNLOCKED: the same for a call that uses segment seg: close()
 * from another thread refuses while the call is in flight (sg_busy), so
 * the mapping cannot vanish under it.  Every GIL-free call on a segment
 * goes through here.
 */
#define PINNED_UNLOCKED(seg, out, call) \
    do { \
        hc_segment_enter(seg); \
        UNLOCKED(out, call); \
        hc_segment_leave(seg); \
    } while (0)

/* ---------------------------------------------------------------------- */
/* Exceptions                                                             */
/* ---------------------------------------------------------------------- */

/* status -> (exception class name in herdcache.errors, how to fix it) */
static const struct {
    const char *exc;
    const char *fix;
} status_table[HC_STATUS_COUNT] = {
    [HC_WOULD_BLOCK] = {"HerdcacheTimeout", "Retry, or block with a timeout"},
    [HC_TIMEOUT] = {"HerdcacheTimeout",
                    "Wait longer, or find the process that holds it "
                    "(python -m herdcache info NAME)"},
    [HC_NOT_FOUND] = {"SegmentNotFound",
                      "Create it first (Segment.create or Segment.open), or "
                      "check the name and the directory"},
    [HC_EXISTS] = {"SegmentExists",
                   "Attach to it (Segment.attach or Segment.open), or remove "
                   "a stale one with `python -m herdcache rm NAME`"},
    [HC_BAD_NAME] = {"InvalidName", "Choose a valid name"},
    [HC_BAD_ARGUMENT] = {"InvalidArgument", "Pass a value in range"},
    [HC_NO_SPACE] = {"SegmentFull",
                     "Create the segment with a larger size, or give "
                     "/dev/shm more room (Docker: --shm-size)"},
    [HC_REGISTRY_FULL] = {"SegmentFull",
                          "Use fewer named structures in one segment"},
    [HC_SLOTS_FULL] = {"SegmentFull",
                       "Attach fewer processes to one segment at once"},
    [HC_TOO_LARGE] = {"ValueTooLarge", "Store something smaller"},
    [HC_KIND_MISMATCH] = {"StructMismatch",
                          "Use another name for this structure"},
    [HC_SIZE_MISMATCH] = {"StructMismatch",
                          "Ask for the size it was created with, or use "
                          "another name"},
    [HC_BAD_MAGIC] = {"NotASegment",
                      "The file is not a herdcache segment: choose another "
                      "name or remove the file"},
    [HC_OTHER_ENDIAN] = {"NotASegment",
                         "Segments cannot be shared between byte orders"},
    [HC_VERSION_MISMATCH] = {"LayoutMismatch",
                             "Use the herdcache version that created it, or "
                             "remove it (python -m herdcache rm NAME) and "
                             "create it again"},
    [HC_TRUNCATED] = {"CorruptSegment",
                      "Remove it (python -m herdcache rm NAME) and create "
                      "it again"},
    [HC_NOT_READY] = {"CorruptSegment",
                      "Remove it (python -m herdcache rm NAME) and create "
                      "it again"},
    [HC_WRONG_OWNER] = {"UnsafeSegment",
                        "Run as the user who created it, or choose another "
                        "name"},
    [HC_INSECURE_MODE] = {"UnsafeSegment",
                          "Remove the link or `chmod 600` the file, or pass "
                          "allow_shared=True if every user who can write it "
                          "is trusted"},
    [HC_CORRUPT] = {"CorruptSegment",
                    "Remove it (python -m herdcache rm NAME) and create it "
                    "again"},
    [HC_BUSY] = {"SegmentBusy",
                 "Release held locks and drop memoryviews of the segment "
                 "before close()"},
    [HC_NOT_OWNER] = {"LockNotOwned",
                      "Release a lock from the thread that acquired it"},
    [HC_DEADLOCK] = {"LockNotOwned",
                     "This thread holds the lock already; it is not "
                     "reentrant"},
    [HC_CLOSED] = {"SegmentClosed", "Attach to the segment again"},
    [HC_PEER_DIED] = {"PeerDied", "Start a new peer"},
    [HC_CONFLICT] = {"HerdcacheError", "Retry the operation"},
    [HC_SYSTEM] = {"HerdcacheOSError", "See the system error above"},
};

static PyObject *exc_classes[HC_STATUS_COUNT];
static PyObject *exc_base;
static PyObject *serialization_error;     /* herdcache.errors.SerializationError */
static PyObject *cache_full;              /* herdcache.errors.CacheFull */

static int
load_exceptions(void)
{
    PyObject *errors = PyImport_ImportModule("herdcache.errors");
    int i;

    if (errors == NULL)
        return -1;
    exc_base = PyObject_GetAttrString(errors, "HerdcacheError");
    serialization_error = PyObject_GetAttrString(errors, "SerializationError");
    cache_full = PyObject_GetAttrString(errors, "CacheFull");
    if (exc_base == NULL || serialization_error == NULL || cache_full == NULL)
        goto fail;
    for (i = 0; i < HC_STATUS_COUNT; i++) {
        if (status_table[i].exc == NULL)
            continue;
        exc_classes[i] = PyObject_GetAttrString(errors, status_table[i].exc);
        if (exc_classes[i] == NULL)
            goto fail;
    }
    Py_DECREF(errors);
    return 0;
fail:
    Py_DECREF(errors);
    return -1;
}

/* Raise the exception for st: "what: cause: detail. fix." */
static PyObject *
raise_status(const char *what, hc_status st)
{
    const char *detail = hc_last_detail();
    PyObject *klass;
    int saved_errno = errno;

    if ((unsigned) st >= HC_STATUS_COUNT || exc_classes[st] == NULL)
        klass = exc_base;
    else
        klass = exc_classes[st];
    if (st == HC_SYSTEM) {
        PyObject *args = Py_BuildValue(
            "(is)", saved_errno,
            *detail ? detail : strerror(saved_errno));

        if (args != NULL) {
            PyErr_SetObject(klass, args);
            Py_DECREF(args);
        }
    }
    else
        PyErr_Format(klass, "%s: %s%s%s. %s%s", what, hc_strerror(st),
                     *detail ? ": " : "", detail,
                     status_table[st].fix ? status_table[st].fix : "",
                     status_table[st].fix ? "." : "");
    hc_clear_detail();
    return NULL;
}

/* A full cache that may not evict: CacheFull rather than SegmentFull. */
static PyObject *
raise_cache_full(hc_status st)
{
    const char *detail = hc_last_detail();

    PyErr_Format(cache_full, "set: %s%s%s. Give the cache a larger size, "
                 "delete keys, set shorter ttls, or open it with "
                 "evict=True", hc_strerror(st), *detail ? ": " : "", detail);
    hc_clear_detail();
    return NULL;
}

/* ---------------------------------------------------------------------- */
/* Helpers                                                                */
/* ---------------------------------------------------------------------- */

/* A timeout in seconds (None or negative: none) as an absolute deadline. */
static int
deadline_from(PyObject *timeout, uint64_t *deadline)
{
    double secs;

    if (timeout == NULL || timeout == Py_None) {
        *deadline = HC_FOREVER;
        return 0;
    }
    secs = PyFloat_AsDouble(timeout);
    if (secs == -1.0 && PyErr_Occurred())
        return -1;
    if (isnan(secs)) {
        PyErr_SetString(PyExc_ValueError, "timeout must be a number, not NaN");
        return -1;
    }
    if (secs < 0 || secs > 1e9) {
        *deadline = secs < 0 ? HC_FOREVER : hc_deadline_after(
            (uint64_t) 1e9 * HC_NS_PER_SEC);
        return 0;
    }
    *deadline = hc_deadline_after((uint64_t) (secs * 1e9));
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Segment                                                                */
/* ---------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    hc_segment *seg;            /* NULL once closed */
    Py_ssize_t exports;         /* buffers handed out */
    Py_ssize_t locks_held;      /* locks taken through this object */
} SegmentObject;

static PyTypeObject Segment_Type;

static hc_segment *
segment_get(SegmentObject *self)
{
    if (self->seg == NULL)
        raise_status("segment", HC_CLOSED);
    return self->seg;
}

static PyObject *
segment_wrap(hc_segment *seg)
{
    SegmentObject *self = PyObject_New(SegmentObject, &Segment_Type);

    if (self == NULL) {
        hc_segment_close(seg);
        return NULL;
    }
    self->seg = seg;
    self->exports = 0;
    self->locks_held = 0;
    return (PyObject *) self;
}

static void
Segment_dealloc(SegmentObject *self)
{
    /* If locks are still held the mapping must stay: leak it, safely. */
    if (self->seg != NULL)
        hc_segment_close(self->seg);
    PyObject_Free(self);
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
    if (self->exports > 0 || self->locks_held > 0) {
        hc_set_detail("%zd memoryviews of it are alive and %zd of its locks "
                      "are held", self->exports, self->locks_held);
        return raise_status("close", HC_BUSY);
    }
    st = hc_segment_close(self->seg);
    if (st != HC_OK)
        return raise_status("close", st);
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
    hc_segment *seg = segment_get(self);
    hc_status st;

    if (seg == NULL)
        return NULL;
    if (!PyArg_ParseTuple(args, "s#Ki", &name, &name_len, &size, &kind))
        return NULL;
    if (kind <= 0 || kind >= HC_KIND_COUNT) {
        PyErr_Format(PyExc_ValueError, "unknown structure kind %d", kind);
        return NULL;
    }
    PINNED_UNLOCKED(seg, st, hc_registry_find_or_alloc(seg, name, (size_t) name_len,
                                            size, (hc_struct_kind) kind,
                                            &info, &found));
    if (st != HC_OK)
        return raise_status("struct", st);
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
        raise_status("structs", HC_CORRUPT);
    }
    return name;
}

static PyObject *
Segment_structs(SegmentObject *self, PyObject *Py_UNUSED(ignored))
{
    hc_struct_info infos[HC_REGISTRY_CAPACITY];
    size_t count = 0, i;
    hc_segment *seg = segment_get(self);
    PyObject *list;
    hc_status st;

    if (seg == NULL)
        return NULL;
    st = hc_registry_list(seg, infos, HC_REGISTRY_CAPACITY, &count);
    if (st != HC_OK)
        return raise_status("structs", st);
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
    hc_segment *seg = segment_get(self);
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
        return raise_status("info", st);
    PINNED_UNLOCKED(seg, live, hc_slot_count_live(seg));
    return Py_BuildValue(
        "{s:s,s:s,s:O,s:K,s:K,s:K,s:K,s:I,s:I,s:d,s:I,s:I,s:O,s:I,s:I}",
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
        "slot", slot, "max_processes", (unsigned) HC_MAX_SLOTS);
}

PyDoc_STRVAR(Segment_hash_seed_doc,
"hash_seed() -> bytes\n\nThe segment's random 16-byte hashing key.");

static PyObject *
Segment_hash_seed(SegmentObject *self, PyObject *Py_UNUSED(ignored))
{
    hc_segment *seg = segment_get(self);

    if (seg == NULL)
        return NULL;
    return PyBytes_FromStringAndSize((const char *) seg->sg_header->sh_hash_seed,
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
    hc_segment *seg = segment_get(self);

    return seg ? PyLong_FromUnsignedLongLong(seg->sg_size) : NULL;
}

static PyObject *
Segment_get_path(SegmentObject *self, void *Py_UNUSED(closure))
{
    hc_segment *seg = segment_get(self);

    if (seg == NULL)
        return NULL;
    if (seg->sg_anonymous)
        Py_RETURN_NONE;
    return PyUnicode_DecodeFSDefault(seg->sg_path);
}

static PyObject *
Segment_get_created(SegmentObject *self, void *Py_UNUSED(closure))
{
    hc_segment *seg = segment_get(self);

    return seg ? PyBool_FromLong(seg->sg_creator) : NULL;
}

static int
Segment_getbuffer(SegmentObject *self, Py_buffer *view, int flags)
{
    hc_segment *seg = segment_get(self);

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

static PyMethodDef Segment_methods[] = {
    {"close", (PyCFunction) Segment_close, METH_NOARGS, Segment_close_doc},
    {"alloc", (PyCFunction) Segment_alloc, METH_VARARGS, Segment_alloc_doc},
    {"structs", (PyCFunction) Segment_structs, METH_NOARGS,
     Segment_structs_doc},
    {"info", (PyCFunction) Segment_info, METH_NOARGS, Segment_info_doc},
    {"hash_seed", (PyCFunction) Segment_hash_seed, METH_NOARGS,
     Segment_hash_seed_doc},
    {NULL}
};

static PyGetSetDef Segment_getset[] = {
    {"closed", (getter) Segment_get_closed, NULL, "True after close()", NULL},
    {"size", (getter) Segment_get_size, NULL, "bytes mapped", NULL},
    {"path", (getter) Segment_get_path, NULL, "file path, None if anonymous",
     NULL},
    {"created", (getter) Segment_get_created, NULL,
     "True if this process created the segment", NULL},
    {NULL}
};

static PyTypeObject Segment_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "herdcache._core.Segment",
    .tp_basicsize = sizeof(SegmentObject),
    .tp_dealloc = (destructor) Segment_dealloc,
    .tp_as_buffer = &Segment_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A mapped shared memory segment (made by create, attach, "
              "open or anonymous).",
    .tp_methods = Segment_methods,
    .tp_getset = Segment_getset,
};

/* Argument parsing shared by create / attach / open. */
typedef struct {
    const char *name;
    unsigned long long size;
    const char *dir;
    unsigned mode;
    int allow_shared;
    double timeout;             /* attach: seconds to wait for a creator */
} segment_args;

static hc_segment_options
options_of(const segment_args *a)
{
    hc_segment_options o;

    memset(&o, 0, sizeof(o));
    o.dir = a->dir;
    o.mode = a->mode;
    o.allow_shared = a->allow_shared != 0;
    o.attach_wait_ns = a->timeout > 0 ? (uint64_t) (a->timeout * 1e9) : 0;
    return o;
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
    o = options_of(&a);
    UNLOCKED(st, hc_segment_create(a.name, a.size, &o, &seg));
    if (st != HC_OK)
        return raise_status("create", st);
    return segment_wrap(seg);
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

    if (!PyArg_ParseTupleAndKeywords(args, kw, "s|zpd", kwlist, &a.name,
                                     &a.dir, &a.allow_shared, &a.timeout))
        return NULL;
    o = options_of(&a);
    UNLOCKED(st, hc_segment_attach(a.name, &o, &seg));
    if (st != HC_OK)
        return raise_status("attach", st);
    return segment_wrap(seg);
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

    if (!PyArg_ParseTupleAndKeywords(args, kw, "sK|zIpd", kwlist, &a.name,
                                     &a.size, &a.dir, &a.mode,
                                     &a.allow_shared, &a.timeout))
        return NULL;
    o = options_of(&a);
    UNLOCKED(st, hc_segment_open(a.name, a.size, &o, &seg, &created));
    if (st != HC_OK)
        return raise_status("open", st);
    obj = segment_wrap(seg);
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
        return raise_status("anonymous", st);
    return segment_wrap(seg);
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
    o = options_of(&a);
    st = hc_segment_unlink_name(a.name, &o);
    if (st != HC_OK)
        return raise_status("unlink", st);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(is_orphan_doc,
"is_orphan(name, dir=None) -> bool\n\n"
"True if no live process is attached to the named segment.");

static PyObject *
core_is_orphan(PyObject *Py_UNUSED(m), PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"name", "dir", NULL};
    segment_args a = {0};
    hc_segment_options o;
    bool orphan = false;
    hc_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "s|z", kwlist, &a.name,
                                     &a.dir))
        return NULL;
    o = options_of(&a);
    UNLOCKED(st, hc_segment_is_orphan(a.name, &o, &orphan));
    if (st != HC_OK)
        return raise_status("is_orphan", st);
    return PyBool_FromLong(orphan);
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
        return raise_status("name", HC_BAD_NAME);
    }
    st = hc_segment_validate_name(name);
    if (st != HC_OK)
        return raise_status("name", st);
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------------- */
/* Objects that live at an offset of a segment                            */
/* ---------------------------------------------------------------------- */

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

    if (!PyArg_ParseTuple(args, "O!K", &Segment_Type, &segobj, &offset))
        return -1;
    if (self->segment != NULL) {
        PyErr_SetString(PyExc_TypeError, "the object is initialised already");
        return -1;
    }
    seg = segment_get((SegmentObject *) segobj);
    if (seg == NULL)
        return -1;
    if (offset % 8 != 0 || offset < seg->sg_header->sh_data_offset
        || hc_segment_ptr(seg, offset, need) == NULL) {
        hc_set_detail("offset %llu is not inside the data area", offset);
        raise_status("structure", HC_CORRUPT);
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
    return segment_get(self->segment);
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

/* Wait for the lock with the GIL released, running signal handlers. */
static hc_status
lock_wait(hc_segment *seg, hc_lock *lock, uint64_t deadline)
{
    hc_status st;

    for (;;) {
        UNLOCKED(st, hc_lock_acquire(seg, lock, deadline));
        if (st != HC_INTERRUPTED)
            return st;
        if (PyErr_CheckSignals() < 0)
            return HC_INTERRUPTED;
    }
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
    if (deadline_from(timeout, &deadline) < 0)
        return NULL;
    st = hc_lock_acquire_nowait(seg, lock);
    if (st == HC_WOULD_BLOCK) {
        if (blocking) {
            hc_segment_enter(seg);
            st = lock_wait(seg, lock, deadline);
            hc_segment_leave(seg);
        }
        else
            st = hc_lock_try_acquire(seg, lock);
    }
    switch (st) {
    case HC_OK:
    case HC_OWNER_DIED:
        self->owner_died = st == HC_OWNER_DIED;
        self->base.segment->locks_held++;
        Py_RETURN_TRUE;
    case HC_TIMEOUT:
    case HC_WOULD_BLOCK:
        Py_RETURN_FALSE;
    case HC_INTERRUPTED:
        return NULL;            /* the signal handler's exception */
    default:
        return raise_status("acquire", st);
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
        return raise_status("release", st);
    self->base.segment->locks_held--;
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

static PyObject *
Lock_exit(LockObject *self, PyObject *Py_UNUSED(args))
{
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

static PyTypeObject Lock_Type = {
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

    if (!PyArg_ParseTuple(args, "O!KO!", &Segment_Type, &segobj, &offset,
                          &Lock_Type, &lockobj))
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
"predicate in a loop, or use wait_for().");

static PyObject *
Condition_wait(ConditionObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"timeout", NULL};
    PyObject *timeout = NULL;
    hc_segment *seg = placed_segment(&self->base);
    hc_cond *cv = self->base.ptr;
    hc_lock *lock = self->lock->base.ptr;
    uint64_t deadline;
    hc_status st;

    if (seg == NULL)
        return NULL;
    if (self->lock->base.segment != self->base.segment) {
        PyErr_SetString(PyExc_ValueError,
                        "the condition and its lock must be in one segment");
        return NULL;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O", kwlist, &timeout))
        return NULL;
    if (deadline_from(timeout, &deadline) < 0)
        return NULL;
    PINNED_UNLOCKED(seg, st, hc_cond_wait(seg, cv, lock, deadline));
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
    default:
        return raise_status("wait", st);
    }
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
        raise_status("notify", HC_NOT_OWNER);
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

static PyMethodDef Condition_methods[] = {
    {"wait", (PyCFunction) (void (*)(void)) Condition_wait,
     METH_VARARGS | METH_KEYWORDS, Condition_wait_doc},
    {"notify", (PyCFunction) (void (*)(void)) Condition_notify,
     METH_VARARGS | METH_KEYWORDS, Condition_notify_doc},
    {"notify_all", (PyCFunction) Condition_notify_all, METH_NOARGS,
     Condition_notify_all_doc},
    {NULL}
};

static PyTypeObject Condition_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "herdcache._core.Condition",
    .tp_basicsize = sizeof(ConditionObject),
    .tp_dealloc = (destructor) Condition_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Condition(segment, offset, lock): a cross-process condition.",
    .tp_methods = Condition_methods,
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

static PyTypeObject Counter_Type = {
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


/* ---------------------------------------------------------------------- */
/* Cache                                                                  */
/* ---------------------------------------------------------------------- */

/* Lock-free read attempts before a read takes the stripe lock. */
#define READ_ATTEMPTS 8

static const char *const stat_names[HC_STAT_COUNT] = {
    [HC_STAT_HITS] = "hits",
    [HC_STAT_MISSES] = "misses",
    [HC_STAT_SETS] = "sets",
    [HC_STAT_DELETES] = "deletes",
    [HC_STAT_EVICTIONS] = "evictions",
    [HC_STAT_EXPIRATIONS] = "expirations",
    [HC_STAT_READ_RETRIES] = "read_retries",
    [HC_STAT_RECOVERIES] = "recoveries",
    [HC_STAT_COMPUTES] = "computes",
    [HC_STAT_WAITS] = "waits",
    [HC_STAT_COALESCED] = "coalesced",
    [HC_STAT_TAKEOVERS] = "takeovers",
    [HC_STAT_STALE_SERVED] = "stale_served",
    [HC_STAT_EARLY_REFRESHES] = "early_refreshes",
    [HC_STAT_COMPUTE_ERRORS] = "compute_errors",
};

typedef struct {
    PyObject_HEAD
    SegmentObject *segment;
    hc_cache *cache;
    /* get_value()'s decoder: decode(data, **dict(zip(kwnames, kwvalues))) */
    PyObject *decode;           /* NULL: return the bytes */
    PyObject *decode_kwnames;   /* tuple of str, or NULL */
    PyObject *decode_kwvalues;  /* tuple, same length */
    long decode_format;
} CacheObject;

static hc_cache *
cache_get(CacheObject *self)
{
    if (self->cache == NULL || segment_get(self->segment) == NULL) {
        if (!PyErr_Occurred())
            raise_status("cache", HC_CLOSED);
        return NULL;
    }
    return self->cache;
}

/* A key as bytes: str is UTF-8, bytes as is; anything else is TypeError. */
static int
key_bytes(PyObject *key, const char **data, Py_ssize_t *len)
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
        PyErr_Format(exc_classes[HC_TOO_LARGE],
                     "a key has 1 to %d bytes (UTF-8 for str), got %zd. "
                     "Hash longer keys first, e.g. with hashlib",
                     HC_KEY_MAX, *len);
        return -1;
    }
    return 0;
}

static int
Cache_init(CacheObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"segment", "offset", "size", "max_value",
                             "evict", NULL};
    PyObject *segobj;
    unsigned long long offset, size;
    unsigned int max_value = HC_DEFAULT_MAX_VALUE;
    int evict = 1;
    hc_segment *seg;
    hc_cache *cache;
    hc_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!KK|Ip", kwlist,
                                     &Segment_Type, &segobj, &offset, &size,
                                     &max_value, &evict))
        return -1;
    seg = segment_get((SegmentObject *) segobj);
    if (seg == NULL)
        return -1;
    PINNED_UNLOCKED(seg, st, hc_cache_open(seg, offset, size, max_value, evict != 0,
                               &cache));
    if (st != HC_OK) {
        raise_status("cache", st);
        return -1;
    }
    if (self->cache != NULL)
        hc_cache_close(self->cache);
    self->cache = cache;
    Py_INCREF(segobj);
    Py_XSETREF(self->segment, (SegmentObject *) segobj);
    return 0;
}

static void
Cache_dealloc(CacheObject *self)
{
    if (self->cache != NULL)
        hc_cache_close(self->cache);
    Py_XDECREF(self->decode);
    Py_XDECREF(self->decode_kwnames);
    Py_XDECREF(self->decode_kwvalues);
    Py_XDECREF(self->segment);
    Py_TYPE(self)->tp_free((PyObject *) self);
}

/* What a read returns to Python, before it is turned into objects. */
typedef struct {
    uint8_t *copy;              /* malloc'ed (locked path) or NULL */
    PyObject *bytes;            /* the value (lock-free path) */
    hc_read rd;
    bool found;
} cache_result;

/* The locked read: copy the value into C memory under the stripe lock. */
static hc_status
read_locked(hc_cache *c, const char *key, uint32_t len, uint64_t hash,
            uint64_t now, cache_result *res)
{
    hc_status st = hc_cache_lock_stripe(c, hash);

    if (st != HC_OK)
        return st;
    st = hc_cache_read_begin(c, key, len, hash, now, &res->rd);
    if (st == HC_CORRUPT) {
        hc_cache_rebuild_locked(c, hash);
        st = hc_cache_read_begin(c, key, len, hash, now, &res->rd);
    }
    if (st == HC_OK) {
        res->copy = malloc(res->rd.rd_value_len ? res->rd.rd_value_len : 1);
        if (res->copy == NULL)
            st = HC_SYSTEM;
        else {
            memcpy(res->copy, res->rd.rd_value, res->rd.rd_value_len);
            res->found = true;
        }
    }
    hc_cache_unlock_stripe(c, hash);
    return st == HC_NOT_FOUND || st == HC_CORRUPT ? HC_OK : st;
}

/*
 * Look key up: lock-free a few times (each copy validated by the epoch),
 * then under the stripe lock.  On success res->found tells hit or miss;
 * res->bytes (or res->copy) holds the value.
 */
static int
cache_lookup(hc_cache *c, const char *key, Py_ssize_t len, uint64_t now,
             cache_result *res)
{
    uint64_t hash = hc_cache_hash(c, key, (size_t) len);
    hc_status st;
    int attempt;

    memset(res, 0, sizeof(*res));
    for (attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
        st = hc_cache_read_begin(c, key, (uint32_t) len, hash, now, &res->rd);
        if (st == HC_OK) {
            res->bytes = PyBytes_FromStringAndSize(
                (const char *) res->rd.rd_value, res->rd.rd_value_len);
            if (res->bytes == NULL)
                return -1;
        }
        if (hc_cache_read_valid(&res->rd) && st != HC_CORRUPT) {
            res->found = st == HC_OK;
            return 0;
        }
        Py_CLEAR(res->bytes);
        hc_cache_count_stat(c, HC_STAT_READ_RETRIES, 1);
    }
    PINNED_UNLOCKED(c->ca_seg, st, read_locked(c, key, (uint32_t) len, hash, now, res));
    if (st != HC_OK) {
        raise_status("get", st);
        return -1;
    }
    if (res->found) {
        res->bytes = PyBytes_FromStringAndSize((const char *) res->copy,
                                               res->rd.rd_value_len);
        free(res->copy);
        res->copy = NULL;
        if (res->bytes == NULL)
            return -1;
    }
    return 0;
}

/* Count a hit or a miss; reap an expired item if its lock is free. */
static void
account_read(hc_cache *c, const char *key, Py_ssize_t len, cache_result *res)
{
    if (res->found && res->rd.rd_expired)
        hc_cache_reap_nowait(c, key, (uint32_t) len,
                             hc_cache_hash(c, key, (size_t) len));
    hc_cache_count_stat(c, res->found && !res->rd.rd_expired
                           ? HC_STAT_HITS : HC_STAT_MISSES, 1);
}

/*
 * A FLIGHT found by get(): during an early refresh it carries the old
 * value, still fresh until fl_value_expires; return that, else None.
 */
static PyObject *
refreshing_value(cache_result *res, long format)
{
    hc_flight_record rec;
    const char *data = PyBytes_AS_STRING(res->bytes);
    Py_ssize_t len = PyBytes_GET_SIZE(res->bytes);
    PyObject *value = NULL;

    if ((size_t) len >= sizeof(rec)) {
        memcpy(&rec, data, sizeof(rec));
        if (rec.fl_stale_until != 0 && hc_now_ns() < rec.fl_value_expires
            && rec.fl_stale_format == format)
            value = PyBytes_FromStringAndSize(data + sizeof(rec),
                                              len - (Py_ssize_t) sizeof(rec));
    }
    Py_DECREF(res->bytes);
    if (value == NULL && !PyErr_Occurred())
        Py_RETURN_NONE;
    return value;
}

static PyObject *stored_bytes(CacheObject *self, PyObject *keyobj,
                              long format);

PyDoc_STRVAR(Cache_get_doc,
"get(key, format) -> bytes | None\n\n"
"The stored bytes of key, or None if absent or expired.  Raises\n"
"SerializationError if the value was stored with another format tag.");

static PyObject *
Cache_get(CacheObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    long format;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "get(key, format)");
        return NULL;
    }
    format = PyLong_AsLong(args[1]);
    if (format == -1 && PyErr_Occurred())
        return NULL;
    return stored_bytes(self, args[0], format);
}

/* The bytes stored under key in format, None on a miss (get's body). */
static PyObject *
stored_bytes(CacheObject *self, PyObject *keyobj, long format)
{
    hc_cache *c = cache_get(self);
    const char *key;
    Py_ssize_t len;
    cache_result res;

    if (c == NULL || key_bytes(keyobj, &key, &len) < 0
        || cache_lookup(c, key, len, hc_now_ns(), &res) < 0)
        return NULL;
    account_read(c, key, len, &res);
    if (res.found && res.rd.rd_format == HC_FORMAT_FLIGHT)
        return refreshing_value(&res, format);
    /* A key being computed (or that failed) holds no value for get(). */
    if (!res.found || res.rd.rd_expired
        || res.rd.rd_format >= HC_FORMAT_INTERNAL) {
        Py_XDECREF(res.bytes);
        Py_RETURN_NONE;
    }
    if (res.rd.rd_format != format) {
        Py_DECREF(res.bytes);
        PyErr_Format(serialization_error,
                     "the value of this key was stored with format %d, this "
                     "cache reads format %ld: open the cache with the "
                     "serializer that wrote it", res.rd.rd_format, format);
        return NULL;
    }
    return res.bytes;
}

PyDoc_STRVAR(Cache_set_decoder_doc,
"set_decoder(format, decode=None, kwargs=None) -> None\n\n"
"What get_value() does with the bytes of a hit of this format:\n"
"decode(data, **kwargs), or nothing if decode is None.");

static PyObject *
Cache_set_decoder(CacheObject *self, PyObject *args)
{
    PyObject *decode = Py_None, *kwargs = Py_None, *names = NULL, *values;
    long format;

    if (!PyArg_ParseTuple(args, "l|OO", &format, &decode, &kwargs))
        return NULL;
    if (kwargs != Py_None) {
        if (!PyDict_Check(kwargs)) {
            PyErr_SetString(PyExc_TypeError, "kwargs must be a dict");
            return NULL;
        }
        Py_ssize_t i, n;

        names = PySequence_Tuple(kwargs);       /* the keys, in order */
        n = names ? PyTuple_GET_SIZE(names) : 0;
        values = names ? PyTuple_New(n) : NULL;
        for (i = 0; values != NULL && i < n; i++)
            PyTuple_SET_ITEM(values, i, Py_NewRef(PyDict_GetItem(
                kwargs, PyTuple_GET_ITEM(names, i))));
        Py_XSETREF(self->decode_kwvalues, values);
        if (values == NULL) {
            Py_XDECREF(names);
            return NULL;
        }
    }
    else
        Py_CLEAR(self->decode_kwvalues);
    Py_XSETREF(self->decode_kwnames, names);
    Py_XSETREF(self->decode, decode == Py_None ? NULL : Py_NewRef(decode));
    self->decode_format = format;
    Py_RETURN_NONE;
}

/* decode(data, **kwargs) by vectorcall; a failure becomes SerializationError. */
static PyObject *
decode_value(CacheObject *self, PyObject *data)
{
    PyObject *stack[16], *res;
    Py_ssize_t nkw = self->decode_kwnames
        ? PyTuple_GET_SIZE(self->decode_kwnames) : 0, i;

    if (self->decode == NULL || nkw > 15)
        return Py_NewRef(data);
    stack[1] = data;
    for (i = 0; i < nkw; i++)
        stack[2 + i] = PyTuple_GET_ITEM(self->decode_kwvalues, i);
    res = PyObject_Vectorcall(self->decode, stack + 1,
                              1 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                              self->decode_kwnames);
    if (res == NULL && PyErr_ExceptionMatches(PyExc_Exception)
        && !PyErr_ExceptionMatches(serialization_error)) {
        PyObject *type, *value, *tb;

        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        PyErr_Format(serialization_error, "stored bytes do not decode: %S",
                     value);
        {
            PyObject *t2, *v2, *tb2;

            PyErr_Fetch(&t2, &v2, &tb2);
            PyErr_NormalizeException(&t2, &v2, &tb2);
            PyException_SetCause(v2, value);    /* steals value */
            PyErr_Restore(t2, v2, tb2);
        }
        Py_XDECREF(type);
        Py_XDECREF(tb);
    }
    return res;
}

PyDoc_STRVAR(Cache_get_value_doc,
"get_value(key, default=None) -> object\n\n"
"The decoded value of key (see set_decoder), or default if absent.");

static PyObject *
Cache_get_value(CacheObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *data, *value;

    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "get_value(key, default=None)");
        return NULL;
    }
    data = stored_bytes(self, args[0], self->decode_format);
    if (data == NULL)
        return NULL;
    if (data == Py_None) {
        Py_DECREF(data);
        return Py_NewRef(nargs == 2 ? args[1] : Py_None);
    }
    value = decode_value(self, data);
    Py_DECREF(data);
    return value;
}

PyDoc_STRVAR(Cache_lookup_doc,
"lookup(key) -> (bytes, format, ttl, stale_ttl, csn, delta_ms) | None\n\n"
"Everything stored for key, expired or not: ttl is the seconds left\n"
"(negative once expired, None if it never expires).  None if absent.");

static PyObject *
Cache_lookup(CacheObject *self, PyObject *key)
{
    hc_cache *c = cache_get(self);
    const char *kdata;
    Py_ssize_t len;
    cache_result res;
    uint64_t now = hc_now_ns();
    PyObject *ttl;

    if (c == NULL || key_bytes(key, &kdata, &len) < 0
        || cache_lookup(c, kdata, len, now, &res) < 0)
        return NULL;
    if (!res.found || res.rd.rd_format >= HC_FORMAT_INTERNAL) {
        Py_XDECREF(res.bytes);
        Py_RETURN_NONE;
    }
    if (res.rd.rd_expires == HC_FOREVER)
        ttl = Py_NewRef(Py_None);
    else
        ttl = PyFloat_FromDouble(((double) res.rd.rd_expires
                                  - (double) now) / 1e9);
    if (ttl == NULL) {
        Py_DECREF(res.bytes);
        return NULL;
    }
    return Py_BuildValue("(NiNdKI)", res.bytes, (int) res.rd.rd_format, ttl,
                         (double) res.rd.rd_stale_s,
                         (unsigned long long) res.rd.rd_csn,
                         res.rd.rd_delta_ms);
}

/* A ttl in seconds (None: never) as an absolute expiry; -1 on error. */
static int
expiry_from(PyObject *ttl, uint64_t now, uint64_t *expires)
{
    double secs;

    if (ttl == NULL || ttl == Py_None) {
        *expires = HC_FOREVER;
        return 0;
    }
    secs = PyFloat_AsDouble(ttl);
    if (secs == -1.0 && PyErr_Occurred())
        return -1;
    if (isnan(secs)) {
        PyErr_SetString(PyExc_ValueError, "ttl must be a number, not NaN");
        return -1;
    }
    if (isinf(secs) && secs > 0)
        *expires = HC_FOREVER;
    else if (secs <= 0)
        *expires = now;         /* expired at once */
    else if (secs > 1e10)
        *expires = HC_FOREVER;
    else
        *expires = now + (uint64_t) (secs * 1e9);
    return 0;
}

PyDoc_STRVAR(Cache_store_doc,
"store(key, value, format, ttl=None, mode=0, expect_csn=0, stale_ttl=0.0)"
" -> int\n\n"
"Store bytes under key; return the write's commit sequence number, or 0\n"
"if mode refused (1 add: exists, 2 replace: absent, 3 cas: changed).");

static PyObject *
Cache_store(CacheObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"key", "value", "format", "ttl", "mode",
                             "expect_csn", "stale_ttl", NULL};
    PyObject *key, *ttl = Py_None;
    Py_buffer value;
    int format, mode = HC_SET_ALWAYS;
    unsigned long long expect = 0, csn = 0;
    double stale = 0;
    hc_cache *c = cache_get(self);
    const char *kdata;
    Py_ssize_t klen;
    hc_write wr;
    hc_status st;

    if (c == NULL)
        return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Oy*i|OiKd", kwlist, &key,
                                     &value, &format, &ttl, &mode, &expect,
                                     &stale))
        return NULL;
    memset(&wr, 0, sizeof(wr));
    if (key_bytes(key, &kdata, &klen) < 0
        || expiry_from(ttl, hc_now_ns(), &wr.wr_expires) < 0)
        goto fail;
    if (mode < HC_SET_ALWAYS || mode > HC_SET_CAS || format < 0
        || format >= HC_FORMAT_INTERNAL || value.len > UINT32_MAX
        || stale < 0 || stale > UINT16_MAX) {
        PyErr_SetString(PyExc_ValueError, "mode, format, value size or "
                        "stale_ttl out of range");
        goto fail;
    }
    wr.wr_key = kdata;
    wr.wr_key_len = (uint32_t) klen;
    wr.wr_hash = hc_cache_hash(c, kdata, (size_t) klen);
    wr.wr_value = value.buf;
    wr.wr_value_len = (uint32_t) value.len;
    wr.wr_format = (uint8_t) format;
    wr.wr_stale_s = (uint16_t) ceil(stale);
    wr.wr_mode = (hc_set_mode) mode;
    wr.wr_expect_csn = expect;
    PINNED_UNLOCKED(c->ca_seg, st, hc_cache_set(c, &wr, (uint64_t *) &csn));
    PyBuffer_Release(&value);
    if (st == HC_EXISTS || st == HC_NOT_FOUND || st == HC_CONFLICT)
        return PyLong_FromLong(0);
    if (st == HC_NO_SPACE)
        return raise_cache_full(st);
    if (st != HC_OK)
        return raise_status("set", st);
    return PyLong_FromUnsignedLongLong(csn);
fail:
    PyBuffer_Release(&value);
    return NULL;
}

PyDoc_STRVAR(Cache_delete_doc,
"delete(key) -> bool\n\nRemove key; False if it was absent or expired.");

static PyObject *
Cache_delete(CacheObject *self, PyObject *key)
{
    hc_cache *c = cache_get(self);
    const char *kdata;
    Py_ssize_t len;
    hc_status st;

    if (c == NULL || key_bytes(key, &kdata, &len) < 0)
        return NULL;
    PINNED_UNLOCKED(c->ca_seg, st, hc_cache_delete(c, kdata, (uint32_t) len,
                                 hc_cache_hash(c, kdata, (size_t) len)));
    if (st == HC_NOT_FOUND)
        Py_RETURN_FALSE;
    if (st != HC_OK)
        return raise_status("delete", st);
    Py_RETURN_TRUE;
}

PyDoc_STRVAR(Cache_touch_doc,
"touch(key, ttl) -> bool\n\nGive key a new ttl; False if absent.");

static PyObject *
Cache_touch(CacheObject *self, PyObject *args)
{
    hc_cache *c = cache_get(self);
    PyObject *key, *ttl;
    const char *kdata;
    Py_ssize_t len;
    uint64_t expires;
    hc_status st;

    if (c == NULL || !PyArg_ParseTuple(args, "OO", &key, &ttl)
        || key_bytes(key, &kdata, &len) < 0
        || expiry_from(ttl, hc_now_ns(), &expires) < 0)
        return NULL;
    PINNED_UNLOCKED(c->ca_seg, st, hc_cache_touch(c, kdata, (uint32_t) len,
                                hc_cache_hash(c, kdata, (size_t) len),
                                expires));
    if (st == HC_NOT_FOUND)
        Py_RETURN_FALSE;
    if (st != HC_OK)
        return raise_status("touch", st);
    Py_RETURN_TRUE;
}

PyDoc_STRVAR(Cache_clear_doc, "clear() -> None\n\nRemove every item.");

static PyObject *
Cache_clear(CacheObject *self, PyObject *Py_UNUSED(ignored))
{
    hc_cache *c = cache_get(self);
    hc_status st;

    if (c == NULL)
        return NULL;
    PINNED_UNLOCKED(c->ca_seg, st, hc_cache_clear(c));
    if (st != HC_OK)
        return raise_status("clear", st);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(Cache_count_doc,
"count() -> int\n\nThe number of unexpired items.");

static PyObject *
Cache_count(CacheObject *self, PyObject *Py_UNUSED(ignored))
{
    hc_cache *c = cache_get(self);
    uint64_t n = 0;
    hc_status st;

    if (c == NULL)
        return NULL;
    PINNED_UNLOCKED(c->ca_seg, st, hc_cache_count(c, hc_now_ns(), &n));
    if (st != HC_OK)
        return raise_status("len", st);
    return PyLong_FromUnsignedLongLong(n);
}

/* Append the packed keys of one stripe to list (as bytes objects). */
static int
append_keys(PyObject *list, const uint8_t *buf, size_t len)
{
    size_t pos = 0;

    while (pos + 2 <= len) {
        uint16_t klen;
        PyObject *k;

        memcpy(&klen, buf + pos, 2);
        if (pos + 2 + klen > len)
            break;
        k = PyBytes_FromStringAndSize((const char *) buf + pos + 2, klen);
        if (k == NULL || PyList_Append(list, k) < 0) {
            Py_XDECREF(k);
            return -1;
        }
        Py_DECREF(k);
        pos += 2 + (size_t) klen;
    }
    return 0;
}

PyDoc_STRVAR(Cache_keys_doc,
"keys() -> list[bytes]\n\nThe keys of unexpired items, stripe by stripe.");

static PyObject *
Cache_keys(CacheObject *self, PyObject *Py_UNUSED(ignored))
{
    hc_cache *c = cache_get(self);
    PyObject *list;
    uint32_t i;

    if (c == NULL || (list = PyList_New(0)) == NULL)
        return NULL;
    for (i = 0; i < c->ca_layout.cl_nstripes; i++) {
        uint8_t *buf = NULL;
        size_t len = 0, count = 0;
        hc_status st;

        PINNED_UNLOCKED(c->ca_seg, st, hc_cache_stripe_keys(c, i, hc_now_ns(), &buf, &len,
                                          &count));
        if (st != HC_OK) {
            Py_DECREF(list);
            return raise_status("keys", st);
        }
        if (append_keys(list, buf, len) < 0) {
            free(buf);
            Py_DECREF(list);
            return NULL;
        }
        free(buf);
    }
    return list;
}

PyDoc_STRVAR(Cache_check_doc,
"check() -> None\n\n"
"Verify every invariant of the table (chains, queue, allocator, counts);\n"
"raise CorruptSegment naming the first one broken.");

static PyObject *
Cache_check(CacheObject *self, PyObject *Py_UNUSED(ignored))
{
    hc_cache *c = cache_get(self);
    hc_status st;

    if (c == NULL)
        return NULL;
    PINNED_UNLOCKED(c->ca_seg, st, hc_cache_check(c));
    if (st != HC_OK)
        return raise_status("check", st);
    Py_RETURN_NONE;
}

static PyObject *
stats_dict(const uint64_t counts[HC_STAT_COUNT])
{
    PyObject *d = PyDict_New();
    int k;

    for (k = 0; d != NULL && k < HC_STAT_COUNT; k++) {
        PyObject *v = PyLong_FromUnsignedLongLong(counts[k]);

        if (v == NULL || PyDict_SetItemString(d, stat_names[k], v) < 0)
            Py_CLEAR(d);
        Py_XDECREF(v);
    }
    return d;
}

PyDoc_STRVAR(Cache_stats_doc,
"stats() -> dict\n\nCounters summed over every process, and usage.");

static PyObject *
Cache_stats(CacheObject *self, PyObject *Py_UNUSED(ignored))
{
    hc_cache *c = cache_get(self);
    uint64_t totals[HC_STAT_COUNT], used, capacity, items, payload;
    PyObject *d;

    if (c == NULL)
        return NULL;
    hc_cache_stats(c, totals);
    hc_cache_usage(c, &used, &capacity, &items, &payload);
    d = stats_dict(totals);
    if (d == NULL)
        return NULL;
    {
        PyObject *extra = Py_BuildValue(
            "{s:K,s:K,s:K,s:K,s:K,s:I,s:I}",
            "entries", (unsigned long long) items,
            "bytes_used", (unsigned long long) used,
            "bytes_free", (unsigned long long) (capacity - used),
            "bytes_capacity", (unsigned long long) capacity,
            "payload_bytes", (unsigned long long) payload,
            "max_value_size", c->ca_max_value,
            "stripes", c->ca_layout.cl_nstripes);

        if (extra == NULL || PyDict_Update(d, extra) < 0) {
            Py_XDECREF(extra);
            goto fail;
        }
        Py_DECREF(extra);
    }
    return d;
fail:
    Py_DECREF(d);
    return NULL;
}

PyDoc_STRVAR(Cache_stats_by_process_doc,
"stats_by_process() -> list[dict]\n\n"
"Per-process counters (pid 0: processes that have exited).");

static PyObject *
Cache_stats_by_process(CacheObject *self, PyObject *Py_UNUSED(ignored))
{
    hc_cache *c = cache_get(self);
    PyObject *list;
    uint32_t i;

    if (c == NULL || (list = PyList_New(0)) == NULL)
        return NULL;
    for (i = 0; i <= HC_MAX_SLOTS; i++) {
        uint64_t counts[HC_STAT_COUNT];
        uint32_t pid;
        PyObject *d, *pidobj;

        if (!hc_cache_stats_slot(c, i, counts, &pid))
            continue;
        d = stats_dict(counts);
        pidobj = PyLong_FromUnsignedLong(pid);
        if (d == NULL || pidobj == NULL
            || PyDict_SetItemString(d, "pid", pidobj) < 0
            || PyList_Append(list, d) < 0) {
            Py_XDECREF(pidobj);
            Py_XDECREF(d);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(pidobj);
        Py_DECREF(d);
    }
    return list;
}

PyDoc_STRVAR(Cache_count_stat_doc,
"count_stat(name, n=1) -> None\n\nAdd n to this process's counter name.");

static PyObject *
Cache_count_stat(CacheObject *self, PyObject *args)
{
    hc_cache *c = cache_get(self);
    const char *name;
    unsigned long long n = 1;
    int k;

    if (c == NULL || !PyArg_ParseTuple(args, "s|K", &name, &n))
        return NULL;
    for (k = 0; k < HC_STAT_COUNT; k++) {
        if (strcmp(stat_names[k], name) == 0) {
            hc_cache_count_stat(c, (hc_stat) k, n);
            Py_RETURN_NONE;
        }
    }
    PyErr_Format(PyExc_ValueError, "no statistic %s", name);
    return NULL;
}


/* ---------------------------------------------------------------------- */
/* Single flight (Cache methods)                                          */
/* ---------------------------------------------------------------------- */

static const char *const outcome_names[] = {
    [HC_FLIGHT_HIT] = "hit",
    [HC_FLIGHT_STALE] = "stale",
    [HC_FLIGHT_COMPUTE] = "compute",
    [HC_FLIGHT_WAIT] = "wait",
    [HC_FLIGHT_FAILED] = "failed",
};

/* Seconds (float, None: never) as nanoseconds; -1 with an exception. */
static int
ns_from(PyObject *secs_obj, uint64_t *ns)
{
    double secs = PyFloat_AsDouble(secs_obj);

    if (secs == -1.0 && PyErr_Occurred())
        return -1;
    if (isnan(secs) || secs <= 0 || secs > 1e9) {
        PyErr_Format(PyExc_ValueError, "expected seconds in (0, 1e9], got %R",
                     secs_obj);
        return -1;
    }
    *ns = (uint64_t) (secs * 1e9);
    return 0;
}

PyDoc_STRVAR(Cache_flight_begin_doc,
"flight_begin(key, lease, waited_round=0, refresh=False)\n"
"    -> (outcome, data, format, round, wait_seq, ttl, delta_ms, took_over)\n\n"
"Under the key's stripe lock, decide what this caller does: outcome is\n"
"'hit' (data is the value), 'stale' (data is the old value; another\n"
"process computes), 'compute' (you compute round; publish or abort it),\n"
"'wait' (another computes round: flight_wait(key, wait_seq), then begin\n"
"again) or 'failed' (data is the error of the round you waited for).");

static PyObject *
Cache_flight_begin(CacheObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"key", "lease", "waited_round", "refresh", NULL};
    PyObject *key, *lease, *data = Py_None, *ttl = Py_None, *res_obj;
    unsigned long long waited = 0;
    int refresh = 0;
    hc_cache *c = cache_get(self);
    hc_flight_request rq;
    hc_flight_result res;
    const char *kdata;
    Py_ssize_t klen;
    hc_status st;

    if (c == NULL
        || !PyArg_ParseTupleAndKeywords(args, kw, "OO|Kp", kwlist, &key,
                                        &lease, &waited, &refresh)
        || key_bytes(key, &kdata, &klen) < 0)
        return NULL;
    memset(&rq, 0, sizeof(rq));
    if (ns_from(lease, &rq.fq_lease_ns) < 0)
        return NULL;
    rq.fq_key = kdata;
    rq.fq_key_len = (uint32_t) klen;
    rq.fq_hash = hc_cache_hash(c, kdata, (size_t) klen);
    rq.fq_waited_round = waited;
    rq.fq_refresh = refresh != 0;
    PINNED_UNLOCKED(c->ca_seg, st, hc_flight_begin(c, &rq, &res));
    if (st != HC_OK) {
        free(res.fr_data);
        return raise_status("get_or_compute", st);
    }
    if (res.fr_data != NULL)
        data = PyBytes_FromStringAndSize((const char *) res.fr_data,
                                         res.fr_len);
    free(res.fr_data);
    if (data == NULL)
        return NULL;
    if (res.fr_outcome == HC_FLIGHT_HIT && res.fr_expires != HC_FOREVER)
        ttl = PyFloat_FromDouble(((double) res.fr_expires
                                  - (double) hc_now_ns()) / 1e9);
    else
        Py_INCREF(ttl);
    res_obj = Py_BuildValue("(sOiKINIO)", outcome_names[res.fr_outcome],
                            data, (int) res.fr_format,
                            (unsigned long long) res.fr_round,
                            res.fr_wait_seq, ttl, res.fr_delta_ms,
                            res.fr_took_over ? Py_True : Py_False);
    if (data != Py_None)
        Py_DECREF(data);
    return res_obj;
}

PyDoc_STRVAR(Cache_flight_wait_doc,
"flight_wait(key, wait_seq, timeout) -> None\n\n"
"Sleep (GIL released) until a flight of key's stripe ends, the timeout\n"
"passes, or one probe slice (50 ms) is over; then call flight_begin.");

static PyObject *
Cache_flight_wait(CacheObject *self, PyObject *args)
{
    PyObject *key, *timeout;
    unsigned int seq;
    hc_cache *c = cache_get(self);
    const char *kdata;
    Py_ssize_t klen;
    uint64_t deadline, hash;
    hc_status st;

    if (c == NULL || !PyArg_ParseTuple(args, "OIO", &key, &seq, &timeout)
        || key_bytes(key, &kdata, &klen) < 0
        || deadline_from(timeout, &deadline) < 0)
        return NULL;
    hash = hc_cache_hash(c, kdata, (size_t) klen);
    PINNED_UNLOCKED(c->ca_seg, st, hc_flight_wait(c, hash, seq, deadline));
    if (st == HC_INTERRUPTED && PyErr_CheckSignals() < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(Cache_flight_publish_doc,
"flight_publish(key, value, format, ttl, round, stale_ttl=0, delta_ms=0)"
" -> bool\n\n"
"Store the computed value if round is still the key's flight; False if\n"
"the round was taken over or the key was set or deleted meanwhile.");

static PyObject *
Cache_flight_publish(CacheObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"key", "value", "format", "ttl", "round",
                             "stale_ttl", "delta_ms", NULL};
    PyObject *key, *ttl;
    Py_buffer value;
    int format;
    unsigned long long round;
    double stale = 0;
    unsigned int delta_ms = 0;
    hc_cache *c = cache_get(self);
    const char *kdata;
    Py_ssize_t klen;
    hc_write wr;
    hc_status st;

    if (c == NULL
        || !PyArg_ParseTupleAndKeywords(args, kw, "Oy*iOK|dI", kwlist, &key,
                                        &value, &format, &ttl, &round,
                                        &stale, &delta_ms))
        return NULL;
    memset(&wr, 0, sizeof(wr));
    if (key_bytes(key, &kdata, &klen) < 0
        || expiry_from(ttl, hc_now_ns(), &wr.wr_expires) < 0)
        goto fail;
    if (format < 0 || format >= HC_FORMAT_INTERNAL || stale < 0
        || stale > UINT16_MAX || value.len > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "format, stale_ttl or value size "
                        "out of range");
        goto fail;
    }
    wr.wr_key = kdata;
    wr.wr_key_len = (uint32_t) klen;
    wr.wr_hash = hc_cache_hash(c, kdata, (size_t) klen);
    wr.wr_value = value.buf;
    wr.wr_value_len = (uint32_t) value.len;
    wr.wr_format = (uint8_t) format;
    wr.wr_stale_s = (uint16_t) ceil(stale);
    wr.wr_delta_ms = delta_ms > UINT16_MAX ? UINT16_MAX : (uint16_t) delta_ms;
    PINNED_UNLOCKED(c->ca_seg, st, hc_flight_publish(c, &wr, round));
    PyBuffer_Release(&value);
    if (st == HC_CONFLICT)
        Py_RETURN_FALSE;
    if (st == HC_NO_SPACE)
        return raise_cache_full(st);
    if (st != HC_OK)
        return raise_status("get_or_compute", st);
    Py_RETURN_TRUE;
fail:
    PyBuffer_Release(&value);
    return NULL;
}

PyDoc_STRVAR(Cache_flight_abort_doc,
"flight_abort(key, round, error=None, error_ttl=0.0) -> bool\n\n"
"End round without a value: with error bytes, its waiters fail with them\n"
"(and callers for error_ttl seconds too); without, the key is freed.");

static PyObject *
Cache_flight_abort(CacheObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"key", "round", "error", "error_ttl", NULL};
    PyObject *key;
    unsigned long long round;
    Py_buffer err = {0};
    double error_ttl = 0;
    hc_cache *c = cache_get(self);
    const char *kdata;
    Py_ssize_t klen;
    uint64_t now = hc_now_ns();
    hc_status st;

    if (c == NULL
        || !PyArg_ParseTupleAndKeywords(args, kw, "OK|z*d", kwlist, &key,
                                        &round, &err, &error_ttl))
        return NULL;
    if (key_bytes(key, &kdata, &klen) < 0 || err.len > UINT32_MAX) {
        PyBuffer_Release(&err);
        return NULL;
    }
    PINNED_UNLOCKED(c->ca_seg, st, hc_flight_abort(c, kdata, (uint32_t) klen,
                                 hc_cache_hash(c, kdata, (size_t) klen),
                                 round, err.buf, (uint32_t) err.len,
                                 now + (uint64_t) (error_ttl > 0
                                                   ? error_ttl * 1e9 : 0)));
    PyBuffer_Release(&err);
    if (st == HC_CONFLICT)
        Py_RETURN_FALSE;
    if (st != HC_OK)
        return raise_status("get_or_compute", st);
    Py_RETURN_TRUE;
}

static PyMethodDef Cache_methods[] = {
    {"get", (PyCFunction) (void (*)(void)) Cache_get, METH_FASTCALL,
     Cache_get_doc},
    {"lookup", (PyCFunction) Cache_lookup, METH_O, Cache_lookup_doc},
    {"set_decoder", (PyCFunction) Cache_set_decoder, METH_VARARGS,
     Cache_set_decoder_doc},
    {"get_value", (PyCFunction) (void (*)(void)) Cache_get_value,
     METH_FASTCALL, Cache_get_value_doc},
    {"store", (PyCFunction) (void (*)(void)) Cache_store,
     METH_VARARGS | METH_KEYWORDS, Cache_store_doc},
    {"delete", (PyCFunction) Cache_delete, METH_O, Cache_delete_doc},
    {"touch", (PyCFunction) Cache_touch, METH_VARARGS, Cache_touch_doc},
    {"clear", (PyCFunction) Cache_clear, METH_NOARGS, Cache_clear_doc},
    {"count", (PyCFunction) Cache_count, METH_NOARGS, Cache_count_doc},
    {"keys", (PyCFunction) Cache_keys, METH_NOARGS, Cache_keys_doc},
    {"check", (PyCFunction) Cache_check, METH_NOARGS, Cache_check_doc},
    {"stats", (PyCFunction) Cache_stats, METH_NOARGS, Cache_stats_doc},
    {"stats_by_process", (PyCFunction) Cache_stats_by_process, METH_NOARGS,
     Cache_stats_by_process_doc},
    {"count_stat", (PyCFunction) Cache_count_stat, METH_VARARGS,
     Cache_count_stat_doc},
    {"flight_begin", (PyCFunction) (void (*)(void)) Cache_flight_begin,
     METH_VARARGS | METH_KEYWORDS, Cache_flight_begin_doc},
    {"flight_wait", (PyCFunction) Cache_flight_wait, METH_VARARGS,
     Cache_flight_wait_doc},
    {"flight_publish", (PyCFunction) (void (*)(void)) Cache_flight_publish,
     METH_VARARGS | METH_KEYWORDS, Cache_flight_publish_doc},
    {"flight_abort", (PyCFunction) (void (*)(void)) Cache_flight_abort,
     METH_VARARGS | METH_KEYWORDS, Cache_flight_abort_doc},
    {NULL}
};

static PyTypeObject Cache_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "herdcache._core.Cache",
    .tp_basicsize = sizeof(CacheObject),
    .tp_dealloc = (destructor) Cache_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Cache(segment, offset, size, max_value=1MiB, evict=True): "
              "the shared hash table at offset of segment.",
    .tp_methods = Cache_methods,
    .tp_init = (initproc) Cache_init,
    .tp_new = PyType_GenericNew,
};

/* ---------------------------------------------------------------------- */
/* Queue                                                                  */
/* ---------------------------------------------------------------------- */

/*
 * herdcache._core.Queue: the message queue of queue.h, with serializing.
 *
 * This section keeps to itself (its include, exceptions and argument
 * parsing are here) so that it merges cleanly beside other sections.
 *
 * The GIL.  A side is owned with the GIL held when it is free (one CAS);
 * if another thread or process owns it, the GIL is released for the wait.
 * While the consumer side is owned, this thread keeps the GIL to make the
 * bytes objects, which is safe: no thread waits for a queue side while it
 * holds the GIL.  Waits for room or data always release the GIL, and so
 * do copies of QUEUE_LONG_COPY bytes or more.  Serializers run while no
 * side is owned (dumps before a put owns its side, loads after a get left
 * it), so user code never runs while this process holds up a side.
 */
#include "queue.h"

#define QUEUE_LONG_COPY (256 * 1024)

/*
 * get_many's default cap on the bytes of one batch.  A batch is a list of
 * fresh bytes objects; past a few hundred KiB they no longer fit in the
 * CPU's cache with the ring, and 4 KiB messages went 2.3x slower in
 * batches of 1000 (4 MB) than capped at 256 KiB (benchmarks/queue.py).
 */
#define QUEUE_BATCH_BYTES (256 * 1024)

static PyObject *queue_empty_exc, *queue_full_exc, *queue_closed_exc,
    *serialization_exc;

static int
queue_load_exceptions(void)
{
    PyObject *stdq = PyImport_ImportModule("queue");
    PyObject *errors = PyImport_ImportModule("herdcache.errors");
    int rc = -1;

    if (stdq != NULL && errors != NULL
        && (queue_empty_exc = PyObject_GetAttrString(stdq, "Empty")) != NULL
        && (queue_full_exc = PyObject_GetAttrString(stdq, "Full")) != NULL
        && (queue_closed_exc = PyObject_GetAttrString(errors, "QueueClosed"))
           != NULL
        && (serialization_exc = PyObject_GetAttrString(
                errors, "SerializationError")) != NULL)
        rc = 0;
    Py_XDECREF(stdq);
    Py_XDECREF(errors);
    return rc;
}

typedef struct {
    PyObject_HEAD
    SegmentObject *segment;
    hc_queue_handle *qh;        /* NULL until __init__ */
    PyObject *dumps;            /* NULL: raw bytes */
    PyObject *loads;
    PyObject *serializer;       /* its name, for messages */
} QueueObject;

/* The exception for a queue status, with the queue's own fixes. */
static PyObject *
queue_raise(const char *what, hc_status st)
{
    const char *detail = hc_last_detail();
    PyObject *klass = exc_classes[st];
    const char *head = hc_strerror(st), *fix;

    switch (st) {
    case HC_CLOSED:
        klass = queue_closed_exc;
        head = "the queue is closed";
        fix = "A closed queue stays closed: make a new one (another name, "
              "or remove this one's segment first)";
        break;
    case HC_PEER_DIED:
        fix = "Start a new process for that side (its first put or get "
              "clears this), or close() the queue when a side is done";
        break;
    case HC_TOO_LARGE:
        head = "message too large";
        fix = "Make the queue larger (size=), or send smaller messages";
        break;
    case HC_BUSY:
        klass = exc_classes[HC_BAD_ARGUMENT];
        head = "this side of the queue is taken";
        fix = "Make the queue with single_producer=False and "
              "single_consumer=False to share a side between threads or "
              "processes";
        break;
    default:
        return raise_status(what, st);
    }
    PyErr_Format(klass, "%s: %s%s%s. %s.", what, head, *detail ? ": " : "",
                 detail, fix);
    hc_clear_detail();
    return NULL;
}

/*
 * Replace the serializer's exception by a SerializationError whose cause
 * it is.  verb: "encode" or "decode"; what: the value or message.
 */
static void
queue_serializer_failed(QueueObject *self, const char *op, const char *verb,
                        const char *what, const char *fix)
{
    PyObject *type, *cause, *tb, *etype, *exc, *etb;

    PyErr_Fetch(&type, &cause, &tb);
    PyErr_NormalizeException(&type, &cause, &tb);
    if (tb != NULL)
        PyException_SetTraceback(cause, tb);
    PyErr_Format(serialization_exc, "%s: the serializer '%U' cannot %s %s: "
                 "%S. %s.", op, self->serializer, verb, what, cause, fix);
    PyErr_Fetch(&etype, &exc, &etb);
    PyErr_NormalizeException(&etype, &exc, &etb);
    PyException_SetCause(exc, cause);   /* steals cause */
    PyErr_Restore(etype, exc, etb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
}

/* The live handle, or NULL with an exception (closed segment, no init). */
static hc_queue_handle *
queue_handle(QueueObject *self)
{
    if (self->qh == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Queue not initialised");
        return NULL;
    }
    return segment_get(self->segment) ? self->qh : NULL;
}

/*
 * Parse up to n arguments given by position or keyword (vectorcall), the
 * first `required` of them mandatory; absent ones are NULL in out[].
 */
static int
queue_parse(const char *fname, PyObject *const *args, Py_ssize_t nargs,
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

/*
 * block and timeout as queue.Queue takes them, as a deadline (HC_FOREVER
 * for none).  timeout is ignored when block is false; negative is an error.
 */
static int
queue_deadline(PyObject *block_obj, PyObject *timeout, int *block,
               uint64_t *deadline)
{
    double secs;

    *block = block_obj == NULL ? 1 : PyObject_IsTrue(block_obj);
    if (*block < 0)
        return -1;
    *deadline = HC_FOREVER;
    if (!*block || timeout == NULL || timeout == Py_None)
        return 0;
    secs = PyFloat_AsDouble(timeout);
    if (secs == -1.0 && PyErr_Occurred())
        return -1;
    if (secs < 0) {
        PyErr_SetString(PyExc_ValueError,
                        "'timeout' must be a non-negative number");
        return -1;
    }
    return deadline_from(timeout, deadline);
}

/* Own a side; if it is owned now, wait for it without the GIL. */
static hc_status
queue_begin(QueueObject *self, hc_queue_side_id side, uint64_t deadline)
{
    hc_queue_handle *qh = self->qh;
    hc_segment *seg = self->segment->seg;
    hc_status st = side == HC_QUEUE_PUT
                       ? hc_queue_put_begin(qh, HC_QUEUE_NOWAIT)
                       : hc_queue_get_begin(qh, HC_QUEUE_NOWAIT);

    while (st == HC_WOULD_BLOCK || st == HC_INTERRUPTED) {
        if (st == HC_INTERRUPTED && PyErr_CheckSignals() < 0)
            return HC_INTERRUPTED;
        hc_segment_enter(seg);
        UNLOCKED(st, side == HC_QUEUE_PUT ? hc_queue_put_begin(qh, deadline)
                                          : hc_queue_get_begin(qh, deadline));
        hc_segment_leave(seg);
    }
    return st;
}

/* Wait for room or data without the GIL, running signal handlers. */
static hc_status
queue_wait(QueueObject *self, hc_queue_side_id side, size_t len,
           uint64_t deadline)
{
    hc_queue_handle *qh = self->qh;
    hc_segment *seg = self->segment->seg;
    hc_status st;

    for (;;) {
        hc_segment_enter(seg);
        UNLOCKED(st, side == HC_QUEUE_PUT
                         ? hc_queue_wait_put(qh, len, deadline)
                         : hc_queue_wait_get(qh, deadline));
        hc_segment_leave(seg);
        if (st != HC_INTERRUPTED)
            return st;
        if (PyErr_CheckSignals() < 0)
            return HC_INTERRUPTED;
    }
}

/* Serialize obj (or take a raw queue's bytes) into view. */
static int
queue_encode(QueueObject *self, PyObject *obj, PyObject **encoded,
             Py_buffer *view)
{
    PyObject *data = obj;

    *encoded = NULL;
    if (self->dumps != NULL) {
        data = PyObject_CallOneArg(self->dumps, obj);
        if (data == NULL)
            goto fail;
        *encoded = data;
    }
    if (PyObject_GetBuffer(data, view, PyBUF_SIMPLE) == 0)
        return 0;
    Py_CLEAR(*encoded);
fail:
    queue_serializer_failed(
        self, "put", "encode a", Py_TYPE(obj)->tp_name,
        self->dumps == NULL ? "A raw queue takes bytes-like objects: encode "
                              "it, or make the queue with serializer="
                              "'msgpack'"
                            : "Convert it to types the serializer knows, or "
                              "choose another serializer (pickle: same trust "
                              "domain only)");
    return -1;
}

/* Decode a message (stealing data); raw queues return it as it is. */
static PyObject *
queue_decode(QueueObject *self, PyObject *data)
{
    PyObject *obj;
    char what[64];

    if (self->loads == NULL)
        return data;
    obj = PyObject_CallOneArg(self->loads, data);
    if (obj == NULL) {
        snprintf(what, sizeof(what), "a message of %zd bytes",
                 PyBytes_GET_SIZE(data));
        queue_serializer_failed(self, "get", "decode", what,
                                "Use the same serializer in every process "
                                "of the queue (the message was taken off)");
    }
    Py_DECREF(data);
    return obj;
}

static hc_status
queue_put_next(hc_queue_handle *qh, const void *buf, size_t len)
{
    hc_status st;

    if (len < QUEUE_LONG_COPY)
        return hc_queue_put_next(qh, buf, len);
    UNLOCKED(st, hc_queue_put_next(qh, buf, len));
    return st;
}

static void
queue_get_copy(hc_queue_handle *qh, PyObject *bytes)
{
    if (PyBytes_GET_SIZE(bytes) < QUEUE_LONG_COPY)
        hc_queue_get_copy(qh, PyBytes_AS_STRING(bytes));
    else {
        Py_BEGIN_ALLOW_THREADS
        hc_queue_get_copy(qh, PyBytes_AS_STRING(bytes));
        Py_END_ALLOW_THREADS
    }
}

/*
 * Put views[*done..n), publishing once per batch, waiting for room if
 * block.  *done counts what went in, also when this fails part way.
 */
static hc_status
queue_put_views(QueueObject *self, Py_buffer *views, Py_ssize_t n,
                Py_ssize_t *done, int block, uint64_t deadline)
{
    hc_queue_handle *qh = self->qh;
    hc_status st;

    for (;;) {
        st = queue_begin(self, HC_QUEUE_PUT, block ? deadline : HC_FOREVER);
        if (st != HC_OK)
            return st;
        while (*done < n
               && (st = queue_put_next(qh, views[*done].buf,
                                       (size_t) views[*done].len)) == HC_OK)
            ++*done;
        hc_queue_put_end(qh);
        if (*done == n || st != HC_WOULD_BLOCK || !block)
            return *done == n ? HC_OK : st;
        st = queue_wait(self, HC_QUEUE_PUT, (size_t) views[*done].len,
                        deadline);
        if (st != HC_OK)
            return st;
    }
}

/*
 * Take up to max messages (as bytes) into list, stopping once max_bytes
 * are taken (after at least one message); the side is owned.
 */
static hc_status
queue_take(QueueObject *self, PyObject *list, Py_ssize_t max,
           size_t max_bytes)
{
    hc_status st = HC_OK;
    PyObject *data;
    size_t len, taken = 0;

    while (PyList_GET_SIZE(list) < max && taken < max_bytes
           && (st = hc_queue_get_next(self->qh, &len)) == HC_OK) {
        taken += len;
        /* Into the list first: once copied the message is off the ring. */
        data = PyBytes_FromStringAndSize(NULL, (Py_ssize_t) len);
        if (data == NULL || PyList_Append(list, data) < 0) {
            Py_XDECREF(data);
            return HC_OK;       /* the Python error is set */
        }
        Py_DECREF(data);
        queue_get_copy(self->qh, data);
    }
    return st;
}

/* Get up to max raw messages, waiting for the first if block. */
static PyObject *
queue_get_list(QueueObject *self, Py_ssize_t max, size_t max_bytes,
               int block, uint64_t deadline, hc_status *stp)
{
    PyObject *list = PyList_New(0);
    hc_status st = HC_OK;

    while (list != NULL) {
        st = queue_begin(self, HC_QUEUE_GET, block ? deadline : HC_FOREVER);
        if (st != HC_OK)
            break;
        st = queue_take(self, list, max, max_bytes);
        hc_queue_get_end(self->qh);
        if (PyErr_Occurred())
            Py_CLEAR(list);
        else if (PyList_GET_SIZE(list) > 0)
            st = HC_OK;         /* deliver these; a failure shows next time */
        else if (st == HC_WOULD_BLOCK && block
                 && (st = queue_wait(self, HC_QUEUE_GET, 0, deadline))
                    == HC_OK)
            continue;
        break;
    }
    *stp = st;
    return list;
}

/* Turn a put's or get's status into its result or exception. */
static PyObject *
queue_result(const char *what, hc_status st, PyObject *full_or_empty)
{
    switch (st) {
    case HC_OK:
        Py_RETURN_NONE;
    case HC_WOULD_BLOCK:
    case HC_TIMEOUT:
        PyErr_Format(full_or_empty, "%s: the queue is %s", what,
                     full_or_empty == queue_full_exc ? "full" : "empty");
        return NULL;
    case HC_INTERRUPTED:
        return NULL;            /* the signal handler's exception */
    default:
        return queue_raise(what, st);
    }
}

static const char *const queue_put_names[] = {"obj", "block", "timeout"};

PyDoc_STRVAR(Queue_put_doc,
"put(obj, block=True, timeout=None) -> None\n\n"
"Serialize obj and append it to the queue, as queue.Queue.put does.\n\n"
":param obj: any object the queue's serializer takes (bytes-like for a\n"
"    raw queue).\n"
":param block: wait for room if the queue is full (else raise at once).\n"
":param timeout: seconds to wait at most (None: no limit).\n"
":raises queue.Full: no room in time.\n"
":raises QueueClosed: the queue was closed.\n"
":raises ValueTooLarge: larger than max_message_size.\n"
":raises SerializationError: the serializer refused obj.\n"
":raises PeerDied: every consumer that joined died and none is left.");

static PyObject *
Queue_put(QueueObject *self, PyObject *const *args, Py_ssize_t nargs,
          PyObject *kwnames)
{
    PyObject *a[3], *encoded;
    Py_buffer view;
    Py_ssize_t done = 0;
    uint64_t deadline;
    int block;
    hc_status st;

    if (queue_handle(self) == NULL
        || queue_parse("put", args, nargs, kwnames, queue_put_names, 3, 1, a)
        || queue_deadline(a[1], a[2], &block, &deadline) < 0
        || queue_encode(self, a[0], &encoded, &view) < 0)
        return NULL;
    st = queue_put_views(self, &view, 1, &done, block, deadline);
    PyBuffer_Release(&view);
    Py_XDECREF(encoded);
    return queue_result("put", st, queue_full_exc);
}

PyDoc_STRVAR(Queue_put_nowait_doc,
"put_nowait(obj) -> None\n\n"
"put(obj, block=False): raise queue.Full at once if there is no room.");

static PyObject *
Queue_put_nowait(QueueObject *self, PyObject *obj)
{
    PyObject *args[2] = {obj, Py_False};

    return Queue_put(self, args, 2, NULL);
}

static const char *const queue_get_names[] = {"block", "timeout"};

PyDoc_STRVAR(Queue_get_doc,
"get(block=True, timeout=None) -> object\n\n"
"Remove and return the oldest message, as queue.Queue.get does.\n\n"
":param block: wait for a message if the queue is empty.\n"
":param timeout: seconds to wait at most (None: no limit).\n"
":raises queue.Empty: nothing came in time.\n"
":raises QueueClosed: the queue was closed and is drained.\n"
":raises PeerDied: the queue is empty, every producer that joined died\n"
"    and none is left.\n"
":raises SerializationError: the message could not be decoded (it is\n"
"    taken off the queue all the same).\n"
":raises CorruptSegment: the ring holds an invalid message header.");

static PyObject *
Queue_get(QueueObject *self, PyObject *const *args, Py_ssize_t nargs,
          PyObject *kwnames)
{
    PyObject *a[2], *list, *data;
    uint64_t deadline;
    int block;
    hc_status st;

    if (queue_handle(self) == NULL
        || queue_parse("get", args, nargs, kwnames, queue_get_names, 2, 0, a)
        || queue_deadline(a[0], a[1], &block, &deadline) < 0)
        return NULL;
    list = queue_get_list(self, 1, SIZE_MAX, block, deadline, &st);
    if (list == NULL || PyList_GET_SIZE(list) == 0) {
        Py_XDECREF(list);
        return list == NULL ? NULL : queue_result("get", st, queue_empty_exc);
    }
    data = PyList_GET_ITEM(list, 0);
    Py_INCREF(data);
    Py_DECREF(list);
    return queue_decode(self, data);
}

PyDoc_STRVAR(Queue_get_nowait_doc,
"get_nowait() -> object\n\n"
"get(block=False): raise queue.Empty at once if there is no message.");

static PyObject *
Queue_get_nowait(QueueObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *args[1] = {Py_False};

    return Queue_get(self, args, 1, NULL);
}

/* Encode every object of seq into views[] (and the new bytes into keep). */
static int
queue_encode_all(QueueObject *self, PyObject *seq, Py_buffer *views,
                 PyObject *keep, Py_ssize_t *nviews)
{
    Py_ssize_t i, n = PySequence_Fast_GET_SIZE(seq);
    uint64_t max = hc_queue_max_message(self->qh->qh_ring_size);
    PyObject *encoded;

    for (*nviews = 0, i = 0; i < n; i++) {
        if (queue_encode(self, PySequence_Fast_GET_ITEM(seq, i), &encoded,
                         &views[i]) < 0)
            return -1;
        ++*nviews;
        if (encoded != NULL && PyList_Append(keep, encoded) < 0) {
            Py_DECREF(encoded);
            return -1;
        }
        Py_XDECREF(encoded);
        /* All or nothing for size: check before anything is put. */
        if ((uint64_t) views[i].len > max) {
            hc_set_detail("message %zd of the batch has %zd bytes; a message "
                          "may have at most %llu", i, views[i].len,
                          (unsigned long long) max);
            queue_raise("put_many", HC_TOO_LARGE);
            return -1;
        }
    }
    return 0;
}

/* queue.Full for a batch that went in part way, with .count = done. */
static PyObject *
queue_full_part(Py_ssize_t done)
{
    PyObject *exc = PyObject_CallFunction(
        queue_full_exc, "s", "put_many: the queue is full; the first "
        "messages went in (see .count), the rest did not");
    PyObject *count = PyLong_FromSsize_t(done);

    if (exc != NULL && count != NULL
        && PyObject_SetAttrString(exc, "count", count) == 0)
        PyErr_SetObject(queue_full_exc, exc);
    Py_XDECREF(count);
    Py_XDECREF(exc);
    return NULL;
}

PyDoc_STRVAR(Queue_put_many_doc,
"put_many(objs, block=True, timeout=None) -> None\n\n"
"Put every object of objs, in order, publishing once per batch that fits\n"
"(one store and at most one wake-up for many messages).\n\n"
":param objs: a sequence (or iterable) of objects.\n"
":param block: wait for room when the queue fills up.\n"
":param timeout: seconds to wait at most, for the whole batch.\n"
":raises queue.Full: no room in time; its .count says how many of the\n"
"    first messages went in.\n"
":raises ValueTooLarge: one message is larger than max_message_size\n"
"    (checked before any is put).\n"
":raises QueueClosed, SerializationError, PeerDied: as put().");

static PyObject *
Queue_put_many(QueueObject *self, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames)
{
    static const char *const names[] = {"objs", "block", "timeout"};
    PyObject *a[3], *seq = NULL, *keep = NULL, *res = NULL;
    Py_buffer *views = NULL;
    Py_ssize_t i, n = 0, nviews = 0, done = 0;
    uint64_t deadline;
    int block;
    hc_status st;

    if (queue_handle(self) == NULL
        || queue_parse("put_many", args, nargs, kwnames, names, 3, 1, a)
        || queue_deadline(a[1], a[2], &block, &deadline) < 0
        || (seq = PySequence_Fast(a[0], "put_many() takes a sequence"))
           == NULL)
        return NULL;
    n = PySequence_Fast_GET_SIZE(seq);
    views = PyMem_New(Py_buffer, n > 0 ? n : 1);
    keep = PyList_New(0);
    if (views == NULL || keep == NULL)
        PyErr_NoMemory();
    else if (queue_encode_all(self, seq, views, keep, &nviews) == 0) {
        st = queue_put_views(self, views, n, &done, block, deadline);
        res = done > 0 && done < n && (st == HC_WOULD_BLOCK
                                       || st == HC_TIMEOUT)
                  ? queue_full_part(done)
                  : queue_result("put_many", st, queue_full_exc);
    }
    for (i = 0; i < nviews; i++)
        PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    Py_XDECREF(keep);
    Py_DECREF(seq);
    return res;
}

PyDoc_STRVAR(Queue_get_many_doc,
"get_many(max_items=1000, block=True, timeout=None, max_bytes=262144)"
" -> list\n\n"
"Wait (if block) for at least one message, then return the messages\n"
"there are, oldest first, up to max_items and until max_bytes bytes are\n"
"taken; the ring space is freed once for the whole batch.\n\n"
":param max_items: the most messages to return (at least 1).\n"
":param max_bytes: stop after this many bytes (at least one message is\n"
"    returned; None: no limit).  Batches that stay in the CPU cache are\n"
"    much faster: the default keeps them to 256 KiB.\n"
":raises queue.Empty: nothing came in time.\n"
":raises QueueClosed: the queue was closed and is drained.\n"
":raises PeerDied, SerializationError, CorruptSegment: as get(); a\n"
"    message that cannot be decoded loses the rest of its batch.");

static PyObject *
Queue_get_many(QueueObject *self, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames)
{
    static const char *const names[] = {"max_items", "block", "timeout",
                                        "max_bytes"};
    PyObject *a[4], *list;
    Py_ssize_t i, max = 1000, max_bytes = QUEUE_BATCH_BYTES;
    uint64_t deadline;
    int block;
    hc_status st;

    if (queue_handle(self) == NULL
        || queue_parse("get_many", args, nargs, kwnames, names, 4, 0, a)
        || queue_deadline(a[1], a[2], &block, &deadline) < 0
        || (a[0] != NULL && (max = PyLong_AsSsize_t(a[0])) == -1
            && PyErr_Occurred())
        || (a[3] != NULL && a[3] != Py_None
            && (max_bytes = PyLong_AsSsize_t(a[3])) == -1 && PyErr_Occurred()))
        return NULL;
    if (max < 1 || max_bytes < 1) {
        PyErr_SetString(PyExc_ValueError,
                        "max_items and max_bytes must be at least 1");
        return NULL;
    }
    list = queue_get_list(self, max,
                          a[3] == Py_None ? SIZE_MAX : (size_t) max_bytes,
                          block, deadline, &st);
    if (list == NULL || PyList_GET_SIZE(list) == 0) {
        Py_XDECREF(list);
        return list == NULL ? NULL
                            : queue_result("get_many", st, queue_empty_exc);
    }
    for (i = 0; self->loads != NULL && i < PyList_GET_SIZE(list); i++) {
        PyObject *data = PyList_GET_ITEM(list, i), *obj;

        Py_INCREF(data);
        if ((obj = queue_decode(self, data)) == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SetItem(list, i, obj);
    }
    return list;
}

/* The approximate counts; -1 with an exception if the queue is unusable. */
static int
queue_counts(QueueObject *self, uint64_t *messages, uint64_t *bytes)
{
    hc_queue_handle *qh = queue_handle(self);

    if (qh == NULL)
        return -1;
    hc_queue_counts(qh, messages, bytes);
    return 0;
}

PyDoc_STRVAR(Queue_qsize_doc,
"qsize() -> int\n\n"
"The approximate number of messages in the queue (other processes move\n"
"it while you look, as with queue.Queue).");

static PyObject *
Queue_qsize(QueueObject *self, PyObject *Py_UNUSED(ignored))
{
    uint64_t messages, bytes;

    if (queue_counts(self, &messages, &bytes) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(messages);
}

PyDoc_STRVAR(Queue_empty_doc,
"empty() -> bool\n\nTrue if the queue holds no message right now.");

static PyObject *
Queue_empty(QueueObject *self, PyObject *Py_UNUSED(ignored))
{
    uint64_t messages, bytes;

    if (queue_counts(self, &messages, &bytes) < 0)
        return NULL;
    return PyBool_FromLong(bytes == 0);
}

PyDoc_STRVAR(Queue_full_doc,
"full() -> bool\n\n"
"True if not even an empty message fits right now (a larger message may\n"
"not fit even when this is False).");

static PyObject *
Queue_full(QueueObject *self, PyObject *Py_UNUSED(ignored))
{
    uint64_t messages, bytes;

    if (queue_counts(self, &messages, &bytes) < 0)
        return NULL;
    return PyBool_FromLong(bytes + HC_QUEUE_RECORD_HEADER
                           > self->qh->qh_ring_size);
}

/* Run a void core call on the live handle. */
static PyObject *
queue_call(QueueObject *self, void (*fn)(hc_queue_handle *))
{
    hc_queue_handle *qh = queue_handle(self);

    if (qh == NULL)
        return NULL;
    fn(qh);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(Queue_close_doc,
"close() -> None\n\n"
"Close the queue for every process: puts raise QueueClosed from now on,\n"
"gets return what is left and then raise QueueClosed, and every waiter\n"
"wakes up.  A put that overlaps close() may or may not go in.");

static PyObject *
Queue_close(QueueObject *self, PyObject *Py_UNUSED(ignored))
{
    return queue_call(self, hc_queue_close);
}

PyDoc_STRVAR(Queue_detach_doc,
"detach() -> None\n\n"
"Stop counting this process as a producer or consumer, so that its exit\n"
"is not taken for a death (PeerDied) by the other side.  Done for you at\n"
"exit and when the queue object is freed; the next put or get counts the\n"
"process again.");

static PyObject *
Queue_detach(QueueObject *self, PyObject *Py_UNUSED(ignored))
{
    return queue_call(self, hc_queue_detach);
}

PyDoc_STRVAR(Queue_struct_size_doc,
"struct_size(capacity) -> int\n\n"
"Bytes a queue whose ring holds capacity bytes takes in a segment.");

static PyObject *
Queue_struct_size(PyObject *Py_UNUSED(cls), PyObject *arg)
{
    unsigned long long ring = PyLong_AsUnsignedLongLong(arg);

    if (ring == (unsigned long long) -1 && PyErr_Occurred())
        return NULL;
    if (ring > (UINT64_C(1) << 48)) {
        PyErr_SetString(PyExc_ValueError, "a queue of 256 TiB or more?");
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(hc_queue_struct_size(ring));
}

static int
Queue_init(QueueObject *self, PyObject *args, PyObject *Py_UNUSED(kw))
{
    PyObject *segobj, *dumps, *loads, *name;
    unsigned long long offset, size;
    unsigned int flags;
    hc_segment *seg;
    hc_status st;

    if (self->qh != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Queue already initialised");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "O!KKIOOU", &Segment_Type, &segobj, &offset,
                          &size, &flags, &dumps, &loads, &name))
        return -1;
    if ((dumps == Py_None) != (loads == Py_None)
        || (dumps != Py_None
            && (!PyCallable_Check(dumps) || !PyCallable_Check(loads)))) {
        PyErr_SetString(PyExc_TypeError,
                        "dumps and loads must both be callables, or None");
        return -1;
    }
    if ((seg = segment_get((SegmentObject *) segobj)) == NULL)
        return -1;
    if (offset < seg->sg_header->sh_data_offset) {
        hc_set_detail("offset %llu is not inside the data area", offset);
        raise_status("queue", HC_CORRUPT);
        return -1;
    }
    hc_segment_enter(seg);
    UNLOCKED(st, hc_queue_open(seg, offset, size, flags, &self->qh));
    hc_segment_leave(seg);
    if (st != HC_OK) {
        self->qh = NULL;
        queue_raise("queue", st);
        return -1;
    }
    Py_INCREF(segobj);
    self->segment = (SegmentObject *) segobj;
    self->dumps = dumps == Py_None ? NULL : Py_NewRef(dumps);
    self->loads = loads == Py_None ? NULL : Py_NewRef(loads);
    self->serializer = Py_NewRef(name);
    return 0;
}

static void
Queue_dealloc(QueueObject *self)
{
    if (self->qh != NULL) {
        if (self->segment->seg != NULL)
            hc_queue_detach(self->qh);
        hc_queue_free(self->qh);
    }
    Py_XDECREF(self->segment);
    Py_XDECREF(self->dumps);
    Py_XDECREF(self->loads);
    Py_XDECREF(self->serializer);
    Py_TYPE(self)->tp_free((PyObject *) self);
}

enum { QUEUE_CLOSED, QUEUE_CAPACITY, QUEUE_MAX_MESSAGE, QUEUE_FLAGS,
       QUEUE_RING_OFFSET };

/* The read-only attributes; closure says which. */
static PyObject *
Queue_get_attr(QueueObject *self, void *closure)
{
    hc_queue_handle *qh = queue_handle(self);

    if (qh == NULL)
        return NULL;
    switch ((int) (intptr_t) closure) {
    case QUEUE_CLOSED:
        return PyBool_FromLong(hc_queue_is_closed(qh));
    case QUEUE_CAPACITY:
        return PyLong_FromUnsignedLongLong(qh->qh_ring_size);
    case QUEUE_MAX_MESSAGE:
        return PyLong_FromUnsignedLongLong(
            hc_queue_max_message(qh->qh_ring_size));
    case QUEUE_FLAGS:
        return PyLong_FromUnsignedLong(qh->qh_flags);
    default:
        return PyLong_FromSize_t((size_t) (qh->qh_queue->q_ring
                                           - self->segment->seg->sg_base));
    }
}

static PyMethodDef Queue_methods[] = {
    {"put", (PyCFunction) (void (*)(void)) Queue_put,
     METH_FASTCALL | METH_KEYWORDS, Queue_put_doc},
    {"put_nowait", (PyCFunction) Queue_put_nowait, METH_O,
     Queue_put_nowait_doc},
    {"get", (PyCFunction) (void (*)(void)) Queue_get,
     METH_FASTCALL | METH_KEYWORDS, Queue_get_doc},
    {"get_nowait", (PyCFunction) Queue_get_nowait, METH_NOARGS,
     Queue_get_nowait_doc},
    {"put_many", (PyCFunction) (void (*)(void)) Queue_put_many,
     METH_FASTCALL | METH_KEYWORDS, Queue_put_many_doc},
    {"get_many", (PyCFunction) (void (*)(void)) Queue_get_many,
     METH_FASTCALL | METH_KEYWORDS, Queue_get_many_doc},
    {"qsize", (PyCFunction) Queue_qsize, METH_NOARGS, Queue_qsize_doc},
    {"empty", (PyCFunction) Queue_empty, METH_NOARGS, Queue_empty_doc},
    {"full", (PyCFunction) Queue_full, METH_NOARGS, Queue_full_doc},
    {"close", (PyCFunction) Queue_close, METH_NOARGS, Queue_close_doc},
    {"detach", (PyCFunction) Queue_detach, METH_NOARGS, Queue_detach_doc},
    {"struct_size", (PyCFunction) Queue_struct_size, METH_O | METH_STATIC,
     Queue_struct_size_doc},
    {NULL}
};

#define QUEUE_ATTR(name, which, doc) \
    {name, (getter) Queue_get_attr, NULL, doc, (void *) (intptr_t) (which)}

static PyGetSetDef Queue_getset[] = {
    QUEUE_ATTR("closed", QUEUE_CLOSED,
               "True once any process closed the queue"),
    QUEUE_ATTR("capacity", QUEUE_CAPACITY,
               "bytes of the ring (a message takes 8 + its length rounded "
               "up to 8)"),
    QUEUE_ATTR("max_message_size", QUEUE_MAX_MESSAGE,
               "the largest message, in bytes after serializing"),
    QUEUE_ATTR("_flags", QUEUE_FLAGS,
               "single-producer (1) and single-consumer (2) flags"),
    QUEUE_ATTR("_ring_offset", QUEUE_RING_OFFSET,
               "where the ring starts in the segment (for tests)"),
    {NULL}
};

static PyTypeObject Queue_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "herdcache._core.Queue",
    .tp_basicsize = sizeof(QueueObject),
    .tp_dealloc = (destructor) Queue_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Queue(segment, offset, size, flags, dumps, loads, name): a "
              "message queue in a segment (use herdcache.Queue).",
    .tp_methods = Queue_methods,
    .tp_getset = Queue_getset,
    .tp_init = (initproc) Queue_init,
    .tp_new = PyType_GenericNew,
};

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

    if (load_exceptions() < 0)
        return NULL;
    m = PyModule_Create(&core_module);
    if (m == NULL)
        return NULL;
    if (add_type(m, &Segment_Type, "Segment") < 0
        || add_type(m, &Lock_Type, "Lock") < 0
        || add_type(m, &Condition_Type, "Condition") < 0
        || add_type(m, &Counter_Type, "Counter") < 0
        || add_type(m, &Cache_Type, "Cache") < 0
        || add_type(m, &Queue_Type, "Queue") < 0
        || queue_load_exceptions() < 0
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
