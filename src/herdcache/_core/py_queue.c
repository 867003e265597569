/*-------------------------------------------------------------------------
 *
 * py_queue.c
 *	  herdcache._core.Queue: the message queue of queue.h, with serializing.
 *
 * The GIL.  A side is owned with the GIL held when it is free (one CAS);
 * if another thread or process owns it, the GIL is released for the wait.
 * While the consumer side is owned, this thread keeps the GIL to make the
 * bytes objects, which is safe: no thread waits for a queue side while it
 * holds the GIL.  Waits for room or data always release the GIL, and so
 * do copies of QUEUE_LONG_COPY bytes or more.  Serializers run while no
 * side is owned (dumps before a put owns its side, loads after a get left
 * it), so user code never runs while this process holds up a side.
 *
 *-------------------------------------------------------------------------
 */
#include "py_binding.h"

#include "queue.h"

/* Copies of this many bytes or more release the GIL. */
#define QUEUE_LONG_COPY (256 * 1024)

/*
 * get_many's default cap on the bytes of one batch.  A batch is a list of
 * fresh bytes objects; past a few hundred KiB they no longer fit in the
 * CPU's cache with the ring, and 4 KiB messages went 2.3x slower in
 * batches of 1000 (4 MB) than capped at 256 KiB (benchmarks/queues.py).
 */
#define QUEUE_BATCH_BYTES (256 * 1024)

typedef struct {
    PyObject_HEAD
    SegmentObject *segment;
    hc_queue_handle *qh;        /* NULL until __init__ */
    PyObject *dumps;            /* NULL: raw bytes */
    PyObject *loads;
    PyObject *serializer;       /* its name, for messages */
} QueueObject;

/* The live handle, or NULL with an exception (closed segment, no init). */
static hc_queue_handle *
queue_handle(QueueObject *self)
{
    if (self->qh == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Queue not initialised");
        return NULL;
    }
    return hcpy_segment_get(self->segment) ? self->qh : NULL;
}

/*
 * block and timeout as queue.Queue takes them, as a deadline (HC_FOREVER
 * for none).  timeout is ignored when block is false; negative is an error.
 */
static int
queue_deadline(PyObject *block_obj, PyObject *timeout, int *block,
               uint64_t *deadline)
{
    *block = block_obj == NULL ? 1 : PyObject_IsTrue(block_obj);
    if (*block < 0)
        return -1;
    *deadline = HC_FOREVER;
    if (!*block)
        return 0;
    return hcpy_deadline(timeout, HCPY_QUEUE_WAIT, deadline);
}

/* What a queue waits for: its side, and the room a put needs. */
typedef struct {
    hc_queue_handle *qh;
    hc_queue_side_id side;
    size_t len;
} queue_waiting;

/* hcpy_wait_fn: own the side, waiting for it until until. */
static hc_status
begin_until(void *arg, uint64_t until)
{
    queue_waiting *w = arg;

    return w->side == HC_QUEUE_PUT ? hc_queue_put_begin(w->qh, until)
                                   : hc_queue_get_begin(w->qh, until);
}

/* hcpy_wait_fn: wait for room or data until until. */
static hc_status
wait_until(void *arg, uint64_t until)
{
    queue_waiting *w = arg;

    return w->side == HC_QUEUE_PUT ? hc_queue_wait_put(w->qh, w->len, until)
                                   : hc_queue_wait_get(w->qh, until);
}

/* Own a side; if it is owned now, wait for it without the GIL. */
static hc_status
queue_begin(QueueObject *self, hc_queue_side_id side, uint64_t deadline)
{
    queue_waiting w = {self->qh, side, 0};
    hc_status st = begin_until(&w, HC_QUEUE_NOWAIT);

    if (st == HC_WOULD_BLOCK || st == HC_INTERRUPTED)
        st = hcpy_wait(self->segment->seg, begin_until, &w, deadline);
    return st;
}

/* Wait for room or data without the GIL, running signal handlers. */
static hc_status
queue_wait(QueueObject *self, hc_queue_side_id side, size_t len,
           uint64_t deadline)
{
    queue_waiting w = {self->qh, side, len};

    return hcpy_wait(self->segment->seg, wait_until, &w, deadline);
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
    hcpy_serializer_failed(
        "put", self->serializer, "encode a", Py_TYPE(obj)->tp_name,
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
        hcpy_serializer_failed("get", self->serializer, "decode", what,
                                "Use the same serializer in every process "
                                "of the queue (the message was taken off)");
    }
    Py_DECREF(data);
    return obj;
}

/*
 * Copy a message in or out; a long copy releases the GIL, pinned: the
 * other side runs without a lock in a single-producer or single-consumer
 * queue, so only sg_busy stops close() from unmapping the ring under it.
 */
static hc_status
queue_put_next(QueueObject *self, const void *buf, size_t len)
{
    hc_status st;

    if (len < QUEUE_LONG_COPY)
        return hc_queue_put_next(self->qh, buf, len);
    PINNED_UNLOCKED(self->segment->seg, st,
                    hc_queue_put_next(self->qh, buf, len));
    return st;
}

/* Copy the owned message into bytes; 0, a result for PINNED_UNLOCKED. */
static int
copy_message(hc_queue_handle *qh, PyObject *bytes)
{
    hc_queue_get_copy(qh, PyBytes_AS_STRING(bytes));
    return 0;
}

static void
queue_get_copy(QueueObject *self, PyObject *bytes)
{
    int rc;

    if (PyBytes_GET_SIZE(bytes) < QUEUE_LONG_COPY)
        rc = copy_message(self->qh, bytes);
    else
        PINNED_UNLOCKED(self->segment->seg, rc,
                        copy_message(self->qh, bytes));
    (void) rc;
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
               && (st = queue_put_next(self, views[*done].buf,
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
        queue_get_copy(self, data);
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
                     full_or_empty == hcpy_QueueFull ? "full" : "empty");
        return NULL;
    case HC_INTERRUPTED:
        return NULL;            /* the signal handler's exception */
    default:
        return hcpy_raise_in(HCPY_IN_QUEUE, what, st);
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
        || hcpy_parse("put", args, nargs, kwnames, queue_put_names, 3, 1, a)
        || queue_deadline(a[1], a[2], &block, &deadline) < 0
        || queue_encode(self, a[0], &encoded, &view) < 0)
        return NULL;
    st = queue_put_views(self, &view, 1, &done, block, deadline);
    PyBuffer_Release(&view);
    Py_XDECREF(encoded);
    return queue_result("put", st, hcpy_QueueFull);
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
        || hcpy_parse("get", args, nargs, kwnames, queue_get_names, 2, 0, a)
        || queue_deadline(a[0], a[1], &block, &deadline) < 0)
        return NULL;
    list = queue_get_list(self, 1, SIZE_MAX, block, deadline, &st);
    if (list == NULL || PyList_GET_SIZE(list) == 0) {
        Py_XDECREF(list);
        return list == NULL ? NULL : queue_result("get", st, hcpy_QueueEmpty);
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
            hcpy_raise_in(HCPY_IN_QUEUE, "put_many", HC_TOO_LARGE);
            return -1;
        }
    }
    return 0;
}

/*
 * Give the pending exception of put_many .count = done, whatever it is
 * (queue.Full, PeerDied, QueueClosed, a signal handler's exception...):
 * the first done messages went in, the rest did not, so a caller can
 * retry the rest without duplicating any.  Returns NULL.
 */
static PyObject *
with_count(Py_ssize_t done)
{
    PyObject *type, *value, *tb, *count;

    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    count = PyLong_FromSsize_t(done);
    if (value == NULL || count == NULL
        || PyObject_SetAttrString(value, "count", count) < 0) {
        Py_XDECREF(count);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        return NULL;            /* that failure's exception is set */
    }
    Py_DECREF(count);
    PyErr_Restore(type, value, tb);
    return NULL;
}

/* queue.Full for a batch that went in part way (with_count adds .count). */
static PyObject *
queue_full_part(void)
{
    PyErr_SetString(hcpy_QueueFull, "put_many: the queue is full; the "
                    "first messages went in (see .count), the rest did not");
    return NULL;
}

PyDoc_STRVAR(Queue_put_many_doc,
"put_many(objs, block=True, timeout=None) -> None\n\n"
"Put every object of objs, in order, publishing once per batch that fits\n"
"(one store and at most one wake-up for many messages).\n\n"
":param objs: a sequence (or iterable) of objects.\n"
":param block: wait for room when the queue fills up.\n"
":param timeout: seconds to wait at most, for the whole batch.\n"
":raises queue.Full: no room in time.  Every exception raised once the\n"
"    batch is under way has .count: how many of the first messages went\n"
"    in (the rest did not).\n"
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
        || hcpy_parse("put_many", args, nargs, kwnames, names, 3, 1, a)
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
                  ? queue_full_part()
                  : queue_result("put_many", st, hcpy_QueueFull);
        if (res == NULL)
            with_count(done);
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
        || hcpy_parse("get_many", args, nargs, kwnames, names, 4, 0, a)
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
                            : queue_result("get_many", st, hcpy_QueueEmpty);
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
"process again.  Raises SegmentBusy, giving nothing up, while another\n"
"thread of this process is inside a put or get on a single side.");

static PyObject *
Queue_detach(QueueObject *self, PyObject *Py_UNUSED(ignored))
{
    hc_queue_handle *qh = queue_handle(self);

    if (qh == NULL)
        return NULL;
    if (hc_queue_detach(qh) != HC_OK)
        return hcpy_raise_in(HCPY_IN_QUEUE_DETACH, "detach", HC_BUSY);
    Py_RETURN_NONE;
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
    if (!PyArg_ParseTuple(args, "O!KKIOOU", &hcpy_Segment_Type, &segobj,
                          &offset, &size, &flags, &dumps, &loads, &name))
        return -1;
    if ((dumps == Py_None) != (loads == Py_None)
        || (dumps != Py_None
            && (!PyCallable_Check(dumps) || !PyCallable_Check(loads)))) {
        PyErr_SetString(PyExc_TypeError,
                        "dumps and loads must both be callables, or None");
        return -1;
    }
    if ((seg = hcpy_segment_get((SegmentObject *) segobj)) == NULL)
        return -1;
    if (offset < seg->sg_header->sh_data_offset) {
        hc_set_detail("offset %llu is not inside the data area", offset);
        hcpy_raise_status("queue", HC_CORRUPT);
        return -1;
    }
    PINNED_UNLOCKED(seg, st, hc_queue_open(seg, offset, size, flags,
                                           &self->qh));
    if (st != HC_OK) {
        self->qh = NULL;
        hcpy_raise_in(HCPY_IN_QUEUE, "queue", st);
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
            (void) hc_queue_detach(self->qh);   /* busy: left as a death */
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

PyTypeObject hcpy_Queue_Type = {
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
