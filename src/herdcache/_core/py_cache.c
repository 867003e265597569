/*-------------------------------------------------------------------------
 *
 * py_cache.c
 *	  herdcache._core.Cache: the shared hash table, with single flight.
 *
 * Reads are lock-free first (each copy validated by the item's epoch) and
 * fall back to the stripe lock; writes and flights run with the GIL
 * released and the segment pinned.  get_value() decodes in C by vectorcall
 * so that a hit costs one call from Python.
 *
 *-------------------------------------------------------------------------
 */
#include "py_binding.h"

#include <string.h>

#include "clock.h"
#include "flight.h"
#include "slot.h"
#include "table.h"

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

/*
 * The per-process decoded layer: key -> LocalEntry, the decoded values of
 * this process's recent hits.  An entry is served only while the shared
 * table still holds the item it was decoded from (same csn, unexpired),
 * checked on every hit by hc_cache_identify(); so it is never older than
 * what get_value() would return.  Bounded in entries and in bytes (each
 * charged its serialized length); full, it drops entries in about the
 * order they came (a cursor over the dict).  A stale entry is replaced in
 * place by the value read afresh, so a key written often does not churn
 * the dict (a delete and an insert leave a dummy slot that later probes
 * step over until the dict is resized).
 */
typedef struct {
    PyObject *entries;          /* dict, NULL: the layer is off */
    PyObject *immutable_types;  /* tuple: keep only such values; or NULL */
    Py_ssize_t max_items, max_bytes, bytes, cursor;
    unsigned long long hits, misses;
} local_layer;

typedef struct {
    PyObject_HEAD
    SegmentObject *segment;
    hc_cache *cache;
    /* get_value()'s decoder: decode(data, **dict(zip(kwnames, kwvalues))) */
    PyObject *decode;           /* NULL: return the bytes */
    PyObject *decode_kwnames;   /* tuple of str, or NULL */
    PyObject *decode_kwvalues;  /* tuple, same length */
    long decode_format;
    PyObject *decode_name;      /* the serializer's name, for messages */
    local_layer local;          /* get_local()'s decoded values */
} CacheObject;

static hc_cache *
cache_get(CacheObject *self)
{
    if (self->cache == NULL || hcpy_segment_get(self->segment) == NULL) {
        if (!PyErr_Occurred())
            hcpy_raise_status("cache", HC_CLOSED);
        return NULL;
    }
    return self->cache;
}

static int
Cache_init(CacheObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"segment", "offset", "size", "max_value",
                             "evict", "eviction", NULL};
    PyObject *segobj;
    unsigned long long offset, size;
    unsigned int max_value = HC_DEFAULT_MAX_VALUE;
    unsigned int eviction = HC_EVICTION_STORED;
    int evict = 1;
    hc_segment *seg;
    hc_cache *cache;
    hc_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!KK|IpI", kwlist,
                                     &hcpy_Segment_Type, &segobj, &offset,
                                     &size, &max_value, &evict, &eviction))
        return -1;
    seg = hcpy_segment_get((SegmentObject *) segobj);
    if (seg == NULL)
        return -1;
    PINNED_UNLOCKED(seg, st, hc_cache_open(seg, offset, size, max_value,
                                           evict != 0,
                                           (hc_eviction) eviction, &cache));
    if (st != HC_OK) {
        hcpy_raise_status("cache", st);
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
    Py_XDECREF(self->decode_name);
    Py_XDECREF(self->local.entries);
    Py_XDECREF(self->local.immutable_types);
    Py_XDECREF(self->segment);
    Py_TYPE(self)->tp_free((PyObject *) self);
}

/* What a read returns to Python, before it is turned into objects. */
typedef struct {
    uint8_t *copy;              /* malloc'ed (locked path) or NULL */
    PyObject *bytes;            /* the value (lock-free path) */
    hc_read rd;
    bool found;
    bool served_old;            /* an early refresh's old value (rd: its own) */
} cache_result;

/* The locked read: copy the value into C memory under the stripe lock. */
static hc_status
read_locked(hc_cache *c, const char *key, uint32_t len, uint64_t hash,
            uint64_t now, uint64_t horizon, cache_result *res)
{
    hc_status st = hc_cache_read_locked_at(c, key, len, hash, now, horizon,
                                           &res->rd, &res->copy);

    res->found = st == HC_OK;
    return st == HC_NOT_FOUND ? HC_OK : st;
}

/*
 * Look key's item up as of horizon (a snapshot's csn; UINT64_MAX: the
 * newest): lock-free a few times (each copy validated by the epoch), then
 * under the stripe lock.  On success res->found tells hit or miss;
 * res->bytes (or res->copy) holds the item's value.
 */
static int
lookup_item_at(hc_cache *c, const char *key, Py_ssize_t len, uint64_t now,
               uint64_t horizon, cache_result *res)
{
    uint64_t hash = hc_cache_hash(c, key, (size_t) len);
    hc_status st;
    int attempt;

    memset(res, 0, sizeof(*res));
    for (attempt = 0; attempt < HC_READ_ATTEMPTS; attempt++) {
        st = hc_cache_read_begin_at(c, key, (uint32_t) len, hash, now,
                                    horizon, &res->rd);
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
    PINNED_UNLOCKED(c->ca_seg, st,
                    read_locked(c, key, (uint32_t) len, hash, now, horizon,
                                res));
    if (st != HC_OK) {
        hcpy_raise_status("get", st);
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
 * A FLIGHT found during an early refresh carries the old value, still
 * fresh until its own expiry: the key is present with that value to every
 * operation (flight.h, "Early refresh").  Make res that value (keeping the
 * flight's csn, the token a compare-and-set presents); leave any other
 * internal item as it is, absent.  -1 with an exception.
 */
static int
serve_refreshing(cache_result *res, uint64_t now)
{
    const void *old;
    size_t old_len;
    uint8_t format;
    uint64_t expires;
    PyObject *bytes;

    if (!res->found || res->rd.rd_format != HC_FORMAT_FLIGHT
        || !hc_flight_refreshing_value(PyBytes_AS_STRING(res->bytes),
                                       (size_t) PyBytes_GET_SIZE(res->bytes),
                                       now, res->rd.rd_expires, &old,
                                       &old_len, &format, &expires))
        return 0;
    bytes = PyBytes_FromStringAndSize(old, (Py_ssize_t) old_len);
    if (bytes == NULL)
        return -1;
    Py_SETREF(res->bytes, bytes);
    res->rd.rd_format = format;
    res->rd.rd_expires = expires;
    res->rd.rd_expired = false;
    res->rd.rd_stale_s = 0;
    res->rd.rd_delta_ms = 0;
    res->served_old = true;
    return 0;
}

/* lookup_item_at(), then what a user sees there (serve_refreshing()). */
static int
cache_lookup_at(hc_cache *c, const char *key, Py_ssize_t len, uint64_t now,
                uint64_t horizon, cache_result *res)
{
    if (lookup_item_at(c, key, len, now, horizon, res) < 0)
        return -1;
    return serve_refreshing(res, now);
}

/* The newest version of key: the plain lookup. */
static int
cache_lookup(hc_cache *c, const char *key, Py_ssize_t len, uint64_t now,
             cache_result *res)
{
    return cache_lookup_at(c, key, len, now, UINT64_MAX, res);
}

static PyObject *stored_bytes(CacheObject *self, PyObject *keyobj,
                              long format, uint64_t *csn);

/* The one message for a value another serializer stored; returns NULL. */
static PyObject *
format_mismatch(PyObject *key, long stored, long format)
{
    PyErr_Format(hcpy_SerializationError,
                 "the value of %R was stored with format %ld, this cache "
                 "reads format %ld: open the cache with the serializer that "
                 "wrote it", key, stored, format);
    return NULL;
}

PyDoc_STRVAR(Cache_get_doc,
"_get(key, format) -> bytes | None\n\n"
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
    return stored_bytes(self, args[0], format, NULL);
}

/*
 * The bytes stored under key in format, None on a miss (get's body).
 * With csn: the csn of the item the bytes are, 0 if they are not one
 * item's value (a miss, or an old value served during a refresh).
 */
static PyObject *
stored_bytes(CacheObject *self, PyObject *keyobj, long format, uint64_t *csn)
{
    hc_cache *c = cache_get(self);
    const char *key;
    Py_ssize_t len;
    cache_result res;

    if (csn != NULL)
        *csn = 0;
    if (c == NULL || hcpy_key_bytes(keyobj, &key, &len) < 0
        || cache_lookup(c, key, len, hc_expiry_now_ns(), &res) < 0)
        return NULL;
    account_read(c, key, len, &res);
    /* A key being computed (or that failed) holds no value for get(). */
    if (!res.found || res.rd.rd_expired
        || res.rd.rd_format >= HC_FORMAT_INTERNAL) {
        Py_XDECREF(res.bytes);
        Py_RETURN_NONE;
    }
    if (res.rd.rd_format != format) {
        Py_DECREF(res.bytes);
        return format_mismatch(keyobj, res.rd.rd_format, format);
    }
    if (csn != NULL)
        *csn = res.served_old ? 0 : res.rd.rd_csn;
    return res.bytes;
}

PyDoc_STRVAR(Cache_set_decoder_doc,
"_set_decoder(format, decode=None, kwargs=None, name=None) -> None\n\n"
"What get_value() does with the bytes of a hit of this format:\n"
"decode(data, **kwargs), or nothing if decode is None.  name: the\n"
"serializer's, for the message of a value that does not decode.");

static PyObject *
Cache_set_decoder(CacheObject *self, PyObject *args)
{
    PyObject *decode = Py_None, *kwargs = Py_None, *names = NULL, *values;
    PyObject *name = Py_None;
    long format;

    if (!PyArg_ParseTuple(args, "l|OOO", &format, &decode, &kwargs, &name))
        return NULL;
    name = name == Py_None ? PyUnicode_FromFormat("format %ld", format)
                           : Py_NewRef(name);
    if (name == NULL)
        return NULL;
    Py_XSETREF(self->decode_name, name);
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

/* decode(data, **kwargs) by vectorcall; a failure: SerializationError. */
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
    if (res == NULL)
        hcpy_serializer_failed("get", self->decode_name, "decode",
                               "the stored bytes",
                               "Open the cache with the serializer that "
                               "wrote the value, or delete the key");
    return res;
}

PyDoc_STRVAR(Cache_get_value_doc,
"_get_value(key, default=None) -> object\n\n"
"The decoded value of key (see set_decoder), or default if absent.");

/*
 * get_value()'s body: the decoded value of key, or dflt on a miss.  With
 * csn and nbytes: the item's csn (0 if the value is not one item's, see
 * stored_bytes) and the length of its bytes.
 */
static PyObject *
decoded_value(CacheObject *self, PyObject *key, PyObject *dflt,
              uint64_t *csn, Py_ssize_t *nbytes)
{
    PyObject *data = stored_bytes(self, key, self->decode_format, csn),
             *value;

    if (data == NULL)
        return NULL;
    if (data == Py_None) {
        Py_DECREF(data);
        return Py_NewRef(dflt);
    }
    if (nbytes != NULL)
        *nbytes = PyBytes_GET_SIZE(data);
    value = decode_value(self, data);
    Py_DECREF(data);
    return value;
}

PyDoc_STRVAR(Cache_decode_doc,
"_decode(key, data, format) -> object\n\n"
"data (the value of key, stored in format) decoded as get_value() does;\n"
"SerializationError if format is not this cache's.");

static PyObject *
Cache_decode(CacheObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    long format;

    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "_decode(key, data, format)");
        return NULL;
    }
    format = PyLong_AsLong(args[2]);
    if (format == -1 && PyErr_Occurred())
        return NULL;
    if (format != self->decode_format)
        return format_mismatch(args[0], format, self->decode_format);
    return decode_value(self, args[1]);
}

static PyObject *
Cache_get_value(CacheObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "_get_value(key, default=None)");
        return NULL;
    }
    return decoded_value(self, args[0], nargs == 2 ? args[1] : Py_None,
                         NULL, NULL);
}

/* ---------------------------------------------------------------------- */
/* The per-process decoded layer (local_layer above)                      */
/* ---------------------------------------------------------------------- */

/*
 * One kept value, with the csn of the item it was decoded from, its key's
 * hash (a hit does not hash the key again) and its charge.  One object
 * with C fields, not a tuple of ints: a hit reads them without unboxing
 * and a keep allocates once.  Not GC-tracked: only the layer's dict refers
 * to it, so it is never part of a cycle (the value, if a container, is
 * tracked on its own).
 */
typedef struct {
    PyObject_HEAD
    PyObject *le_value;
    uint64_t le_csn;
    uint64_t le_hash;
    Py_ssize_t le_charged;
} LocalEntry;

static void
LocalEntry_dealloc(LocalEntry *e)
{
    Py_XDECREF(e->le_value);
    PyObject_Free(e);
}

static PyTypeObject LocalEntry_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "herdcache._core._LocalEntry",
    .tp_basicsize = sizeof(LocalEntry),
    .tp_dealloc = (destructor) LocalEntry_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A value of the decoded layer (internal).",
};

/* True if value may stay in a layer that keeps immutable values only. */
static int
local_admits(const local_layer *l, PyObject *value, int depth)
{
    PyObject *items, *item;
    Py_ssize_t i;
    int admits = 1;

    if (l->immutable_types == NULL)
        return 1;
    if (depth < 32 && (PyTuple_CheckExact(value)
                       || PyFrozenSet_CheckExact(value))) {
        items = PySequence_Tuple(value);
        if (items == NULL) {
            PyErr_Clear();      /* not admitted; get() is not failed */
            return 0;
        }
        for (i = 0; admits && i < PyTuple_GET_SIZE(items); i++) {
            item = PyTuple_GET_ITEM(items, i);
            admits = local_admits(l, item, depth + 1);
        }
        Py_DECREF(items);
        return admits;
    }
    return value == Py_None || PySequence_Contains(
        l->immutable_types, (PyObject *) Py_TYPE(value)) == 1;
}

/* Drop key's entry (a borrowed reference from the dict); -1 on error. */
static int
local_forget(local_layer *l, PyObject *key, PyObject *entry)
{
    Py_ssize_t charged = ((LocalEntry *) entry)->le_charged;
    int rc;

    Py_INCREF(key);
    rc = PyDict_DelItem(l->entries, key);
    Py_DECREF(key);
    if (rc == 0)
        l->bytes -= charged;
    return rc;
}

/* Drop the entry at the cursor (about the oldest); -1 on error. */
static int
local_evict_one(local_layer *l)
{
    PyObject *key, *entry;
    Py_ssize_t pos = l->cursor;

    if (!PyDict_Next(l->entries, &pos, &key, &entry)) {
        pos = 0;
        if (!PyDict_Next(l->entries, &pos, &key, &entry))
            return 0;
    }
    l->cursor = pos;
    return local_forget(l, key, entry);
}

/*
 * Keep value (the item csn's, charged bytes) under key, in place of the
 * key's stale entry if it has one; or, if value is not to be kept, drop
 * that entry.  -1 on error.
 */
static int
local_keep(CacheObject *self, PyObject *key, PyObject *value, uint64_t csn,
           Py_ssize_t charged)
{
    local_layer *l = &self->local;
    PyObject *old = PyDict_GetItemWithError(l->entries, key);
    Py_ssize_t old_charged = old ? ((LocalEntry *) old)->le_charged : 0;
    LocalEntry *entry;
    const char *kdata;
    Py_ssize_t klen;
    int rc;

    if (old == NULL && PyErr_Occurred())
        return -1;
    if (csn == 0 || charged > l->max_bytes || !local_admits(l, value, 0))
        return old == NULL ? 0 : local_forget(l, key, old);
    if (self->cache == NULL || hcpy_key_bytes(key, &kdata, &klen) < 0
        || (entry = PyObject_New(LocalEntry, &LocalEntry_Type)) == NULL)
        return -1;
    entry->le_value = Py_NewRef(value);
    entry->le_csn = csn;
    entry->le_hash = hc_cache_hash(self->cache, kdata, (size_t) klen);
    entry->le_charged = charged;
    rc = PyDict_SetItem(l->entries, key, (PyObject *) entry);
    Py_DECREF(entry);
    if (rc < 0)
        return -1;
    l->bytes += charged - old_charged;
    /* Over a bound: drop the oldest (rarely the newcomer, when the
     * cursor has come round to it). */
    while (PyDict_GET_SIZE(l->entries) > 0
           && (PyDict_GET_SIZE(l->entries) > l->max_items
               || l->bytes > l->max_bytes))
        if (local_evict_one(l) < 0)
            return -1;
    return 0;
}

/*
 * 1 if the shared table still holds, unexpired, the item entry was
 * decoded from; 0 if not; -1 on error.  No copy, no decode: one lookup
 * that compares the csn (hc_cache_identify).
 */
static int
local_current(CacheObject *self, PyObject *key, const LocalEntry *entry)
{
    hc_cache *c = cache_get(self);
    const char *kdata;
    Py_ssize_t klen;
    uint64_t hash = entry->le_hash, csn = entry->le_csn;
    hc_read rd;
    hc_status st;

    if (c == NULL || hcpy_key_bytes(key, &kdata, &klen) < 0)
        return -1;
    /*
     * "now" 0: expiry is judged below, reading the clock only for an item
     * that can expire (a third of a hit's time otherwise).  The lookup
     * then marks the item visited even if it expired: one SIEVE decision.
     */
    st = hc_cache_identify(c, kdata, (uint32_t) klen, hash, 0, &rd);
    if (st == HC_WOULD_BLOCK)
        PINNED_UNLOCKED(c->ca_seg, st, hc_cache_read_locked(
            c, kdata, (uint32_t) klen, hash, 0, &rd, NULL));
    if (st != HC_OK && st != HC_NOT_FOUND) {
        hcpy_raise_status("get", st);
        return -1;
    }
    return st == HC_OK && rd.rd_csn == csn
        && rd.rd_format == self->decode_format
        && (rd.rd_expires == HC_FOREVER || hc_expiry_now_ns() < rd.rd_expires);
}

PyDoc_STRVAR(Cache_get_local_doc,
"_get_local(key, default=None) -> object\n\n"
"get_value() through this process's decoded layer (set_local): the kept\n"
"object itself while the table still holds the item it came from.");

static PyObject *
Cache_get_local(CacheObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    local_layer *l = &self->local;
    PyObject *key, *entry, *value;
    uint64_t csn = 0;
    Py_ssize_t nbytes = 0;
    int current;

    if (l->entries == NULL || nargs < 1 || nargs > 2)
        return Cache_get_value(self, args, nargs);
    key = args[0];
    if (!PyUnicode_CheckExact(key) && !PyBytes_CheckExact(key))
        return Cache_get_value(self, args, nargs);      /* its error */
    entry = PyDict_GetItemWithError(l->entries, key);
    if (entry != NULL) {
        Py_INCREF(entry);
        current = local_current(self, key, (LocalEntry *) entry);
        if (current == 1) {
            l->hits++;
            value = Py_NewRef(((LocalEntry *) entry)->le_value);
            Py_DECREF(entry);
            return value;
        }
        Py_DECREF(entry);
        if (current < 0)
            return NULL;
        /* Stale: local_keep() below replaces it, or drops it. */
    }
    else if (PyErr_Occurred())
        return NULL;
    l->misses++;
    value = decoded_value(self, key, nargs == 2 ? args[1] : Py_None, &csn,
                          &nbytes);
    /* The decoder ran Python code, which may have turned the layer off. */
    if (value != NULL && l->entries != NULL
        && local_keep(self, key, value, csn, nbytes) < 0)
        Py_CLEAR(value);
    return value;
}

/*
 * Cache.get itself: the whole of get() in one call from Python, through
 * the decoded layer if it is on (_get_local), else _get_value(); a key
 * over the table's length limit goes to the Python side's _get_long().
 */
PyDoc_STRVAR(Cache_get_decoded_doc,
"_get_decoded(key, default=None)\n--\n\n"
"The value of ``key``, or ``default`` if it is absent or expired.");

static PyObject *
Cache_get_decoded(CacheObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t len = 0;

    if (nargs >= 1 && nargs <= 2) {
        if (PyUnicode_Check(args[0])) {
            if (PyUnicode_AsUTF8AndSize(args[0], &len) == NULL)
                return NULL;
        }
        else if (PyBytes_Check(args[0]))
            len = PyBytes_GET_SIZE(args[0]);
        if (len > HC_KEY_MAX)
            return PyObject_CallMethod((PyObject *) self, "_get_long", "OO",
                                       args[0],
                                       nargs == 2 ? args[1] : Py_None);
    }
    return Cache_get_local(self, args, nargs);
}

PyDoc_STRVAR(Cache_set_local_doc,
"_set_local(max_items, max_bytes, immutable_types=None) -> None\n\n"
"Turn this process's decoded layer on (max_items > 0) or off, emptied.\n"
"immutable_types: a tuple of types; if given, only values of those types\n"
"(or None, or tuples and frozensets of them) are kept.");

static PyObject *
Cache_set_local(CacheObject *self, PyObject *args)
{
    local_layer *l = &self->local;
    Py_ssize_t max_items, max_bytes;
    PyObject *types = Py_None;

    if (!PyArg_ParseTuple(args, "nn|O", &max_items, &max_bytes, &types))
        return NULL;
    if (types != Py_None && !PyTuple_Check(types)) {
        PyErr_SetString(PyExc_TypeError, "immutable_types must be a tuple");
        return NULL;
    }
    if (PyType_Ready(&LocalEntry_Type) < 0)
        return NULL;
    Py_CLEAR(l->entries);
    Py_XSETREF(l->immutable_types, types == Py_None ? NULL
                                                    : Py_NewRef(types));
    l->max_items = max_items;
    l->max_bytes = max_bytes;
    l->bytes = l->cursor = 0;
    if (max_items > 0 && (l->entries = PyDict_New()) == NULL)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(Cache_local_stats_doc,
"_local_stats() -> dict\n\n"
"This process's decoded layer: items, bytes (charged: serialized\n"
"lengths), max_items, max_bytes, hits (served from it), misses.");

static PyObject *
Cache_local_stats(CacheObject *self, PyObject *Py_UNUSED(ignored))
{
    local_layer *l = &self->local;

    return Py_BuildValue("{s:n,s:n,s:n,s:n,s:K,s:K}",
                         "items", l->entries ? PyDict_GET_SIZE(l->entries) : 0,
                         "bytes", l->bytes, "max_items", l->max_items,
                         "max_bytes", l->max_bytes, "hits", l->hits,
                         "misses", l->misses);
}

PyDoc_STRVAR(Cache_lookup_doc,
"_lookup(key) -> (bytes, format, ttl, stale_ttl, csn, delta_ms) | None\n\n"
"Everything stored for key, expired or not: ttl is the seconds left\n"
"(negative once expired, None if it never expires).  None if absent.");

static PyObject *
Cache_lookup(CacheObject *self, PyObject *key)
{
    hc_cache *c = cache_get(self);
    const char *kdata;
    Py_ssize_t len;
    cache_result res;
    uint64_t now = hc_expiry_now_ns();
    PyObject *ttl;

    if (c == NULL || hcpy_key_bytes(key, &kdata, &len) < 0
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

/*
 * The write of key and value that store() and flight_publish() share;
 * the caller sets the mode and the delta.  -1 with an exception.
 */
static int
write_of(hc_cache *c, PyObject *key, const Py_buffer *value, int format,
         PyObject *ttl, PyObject *stale_ttl, hc_write *wr)
{
    const char *kdata;
    Py_ssize_t klen;
    uint64_t stale_ns;

    memset(wr, 0, sizeof(*wr));
    if (hcpy_key_bytes(key, &kdata, &klen) < 0
        || hcpy_expiry(ttl, hc_expiry_now_ns(), &wr->wr_expires) < 0
        || hcpy_seconds(stale_ttl, "stale_ttl", HCPY_STALE, &stale_ns) < 0)
        return -1;
    if (format < 0 || format >= HC_FORMAT_INTERNAL
        || value->len > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError,
                        "format or value size out of range");
        return -1;
    }
    wr->wr_key = kdata;
    wr->wr_key_len = (uint32_t) klen;
    wr->wr_hash = hc_cache_hash(c, kdata, (size_t) klen);
    wr->wr_value = value->buf;
    wr->wr_value_len = (uint32_t) value->len;
    wr->wr_format = (uint8_t) format;
    /* Whole seconds, rounded up: a stale window is never cut short. */
    wr->wr_stale_s = (uint16_t) ((stale_ns + HC_NS_PER_SEC - 1)
                                 / HC_NS_PER_SEC);
    return 0;
}

PyDoc_STRVAR(Cache_store_doc,
"_store(key, value, format, ttl=None, mode=0, expect_csn=0, stale_ttl=0.0)"
" -> int\n\n"
"Store bytes under key; return the write's commit sequence number, or 0\n"
"if mode refused (1 add: exists, 2 replace: absent, 3 cas: changed).");

static PyObject *
Cache_store(CacheObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"key", "value", "format", "ttl", "mode",
                             "expect_csn", "stale_ttl", NULL};
    PyObject *key, *ttl = Py_None, *stale = NULL;
    Py_buffer value;
    int format, mode = HC_SET_ALWAYS;
    unsigned long long expect = 0, csn = 0;
    hc_cache *c = cache_get(self);
    hc_write wr;
    hc_status st;

    if (c == NULL)
        return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Oy*i|OiKO", kwlist, &key,
                                     &value, &format, &ttl, &mode, &expect,
                                     &stale))
        return NULL;
    if (write_of(c, key, &value, format, ttl, stale, &wr) < 0)
        goto fail;
    if (mode < HC_SET_ALWAYS || mode > HC_SET_SWAP) {
        PyErr_Format(PyExc_ValueError, "mode out of range: %d", mode);
        goto fail;
    }
    wr.wr_mode = (hc_set_mode) mode;
    wr.wr_expect_csn = expect;
    PINNED_UNLOCKED(c->ca_seg, st, hc_cache_set(c, &wr, (uint64_t *) &csn));
    PyBuffer_Release(&value);
    if (st == HC_EXISTS || st == HC_NOT_FOUND || st == HC_CONFLICT)
        return PyLong_FromLong(0);
    if (st != HC_OK)
        return hcpy_raise_in(HCPY_IN_CACHE_WRITE, "set", st);
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

    if (c == NULL || hcpy_key_bytes(key, &kdata, &len) < 0)
        return NULL;
    PINNED_UNLOCKED(c->ca_seg, st, hc_cache_delete(c, kdata, (uint32_t) len,
                                 hc_cache_hash(c, kdata, (size_t) len)));
    if (st == HC_NOT_FOUND)
        Py_RETURN_FALSE;
    if (st != HC_OK)
        return hcpy_raise_status("delete", st);
    Py_RETURN_TRUE;
}

PyDoc_STRVAR(Cache_compare_and_delete_doc,
"_compare_and_delete(key, csn) -> bool\n\n"
"Remove key only if it holds the write whose csn is csn; False if it\n"
"holds another, or is absent or expired.");

static PyObject *
Cache_compare_and_delete(CacheObject *self, PyObject *args)
{
    hc_cache *c = cache_get(self);
    unsigned long long csn;
    PyObject *key;
    const char *kdata;
    Py_ssize_t len;
    hc_status st;

    if (!PyArg_ParseTuple(args, "OK:compare_and_delete", &key, &csn))
        return NULL;
    if (c == NULL || hcpy_key_bytes(key, &kdata, &len) < 0)
        return NULL;
    if (csn == 0)       /* no write has csn 0, and 0 would mean "any" */
        Py_RETURN_FALSE;
    PINNED_UNLOCKED(c->ca_seg, st,
                    hc_cache_delete_csn(c, kdata, (uint32_t) len,
                                        hc_cache_hash(c, kdata, (size_t) len),
                                        (uint64_t) csn));
    if (st == HC_NOT_FOUND || st == HC_CONFLICT)
        Py_RETURN_FALSE;
    if (st != HC_OK)
        return hcpy_raise_status("compare_and_delete", st);
    Py_RETURN_TRUE;
}

PyDoc_STRVAR(Cache_touch_doc,
"_touch(key, ttl) -> bool\n\nGive key a new ttl; False if absent.");

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
        || hcpy_key_bytes(key, &kdata, &len) < 0
        || hcpy_expiry(ttl, hc_expiry_now_ns(), &expires) < 0)
        return NULL;
    PINNED_UNLOCKED(c->ca_seg, st, hc_cache_touch(c, kdata, (uint32_t) len,
                                hc_cache_hash(c, kdata, (size_t) len),
                                expires));
    if (st == HC_NOT_FOUND)
        Py_RETURN_FALSE;
    if (st != HC_OK)
        return hcpy_raise_status("touch", st);
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
        return hcpy_raise_status("clear", st);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(Cache_expire_all_doc,
"_expire_all() -> None\n\n"
"Expire every value now, keeping its stale window (the tier's flush).");

static PyObject *
Cache_expire_all(CacheObject *self, PyObject *Py_UNUSED(ignored))
{
    hc_cache *c = cache_get(self);
    uint64_t now = hc_expiry_now_ns();
    hc_status st;

    if (c == NULL)
        return NULL;
    PINNED_UNLOCKED(c->ca_seg, st, hc_cache_expire_all(c, now));
    if (st != HC_OK)
        return hcpy_raise_status("expire_all", st);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(Cache_count_doc,
"_count() -> int\n\nThe number of unexpired items.");

static PyObject *
Cache_count(CacheObject *self, PyObject *Py_UNUSED(ignored))
{
    hc_cache *c = cache_get(self);
    uint64_t n = 0;
    hc_status st;

    if (c == NULL)
        return NULL;
    PINNED_UNLOCKED(c->ca_seg, st, hc_cache_count(c, hc_expiry_now_ns(), &n));
    if (st != HC_OK)
        return hcpy_raise_status("len", st);
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
"_keys() -> list[bytes]\n\nThe keys of unexpired items, stripe by stripe.");

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

        PINNED_UNLOCKED(c->ca_seg, st,
                        hc_cache_stripe_keys(c, i, hc_expiry_now_ns(), &buf, &len,
                                             &count));
        if (st != HC_OK) {
            Py_DECREF(list);
            return hcpy_raise_status("keys", st);
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
        return hcpy_raise_status("check", st);
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
"_stats() -> dict\n\nCounters summed over every process, and usage.");

static PyObject *
Cache_stats(CacheObject *self, PyObject *Py_UNUSED(ignored))
{
    hc_cache *c = cache_get(self);
    uint64_t totals[HC_STAT_COUNT], used, capacity, items, payload;
    uint64_t wakes, woken;
    PyObject *d;

    if (c == NULL)
        return NULL;
    hc_cache_stats(c, totals);
    hc_cache_usage(c, &used, &capacity, &items, &payload);
    hc_flight_wake_counts(c, &wakes, &woken);
    d = stats_dict(totals);
    if (d == NULL)
        return NULL;
    {
        PyObject *extra = Py_BuildValue(
            "{s:K,s:K,s:K,s:K,s:K,s:I,s:I,s:K,s:K,s:K}",
            "entries", (unsigned long long) items,
            "bytes_used", (unsigned long long) used,
            "bytes_free", (unsigned long long) (capacity - used),
            "bytes_capacity", (unsigned long long) capacity,
            "payload_bytes", (unsigned long long) payload,
            "max_value_size", c->ca_max_value,
            "stripes", c->ca_layout.cl_nstripes,
            "generation", (unsigned long long) hc_cache_generation(c),
            "flight_wakes", (unsigned long long) wakes,
            "flight_woken", (unsigned long long) woken);

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
"_stats_by_process() -> list[dict]\n\n"
"Per-process counters, with pid and alive (still attached); pid 0:\n"
"processes that have exited.");

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
        bool alive;
        PyObject *d, *pidobj;

        if (!hc_cache_stats_slot(c, i, counts, &pid, &alive))
            continue;
        d = stats_dict(counts);
        pidobj = PyLong_FromUnsignedLong(pid);
        if (d == NULL || pidobj == NULL
            || PyDict_SetItemString(d, "pid", pidobj) < 0
            || PyDict_SetItemString(d, "alive", alive ? Py_True : Py_False) < 0
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
"_count_stat(name, n=1) -> None\n\nAdd n to this process's counter name.");

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

PyDoc_STRVAR(Cache_flight_begin_doc,
"_flight_begin(key, lease, waited_round=0, refresh=False)\n"
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
        || hcpy_key_bytes(key, &kdata, &klen) < 0)
        return NULL;
    memset(&rq, 0, sizeof(rq));
    if (hcpy_seconds(lease, "lease", HCPY_LEASE, &rq.fq_lease_ns) < 0)
        return NULL;
    rq.fq_key = kdata;
    rq.fq_key_len = (uint32_t) klen;
    rq.fq_hash = hc_cache_hash(c, kdata, (size_t) klen);
    rq.fq_waited_round = waited;
    rq.fq_refresh = refresh != 0;
    PINNED_UNLOCKED(c->ca_seg, st, hc_flight_begin(c, &rq, &res));
    if (st != HC_OK) {
        free(res.fr_data);
        return hcpy_raise_status("get_or_compute", st);
    }
    if (res.fr_data != NULL)
        data = PyBytes_FromStringAndSize((const char *) res.fr_data,
                                         res.fr_len);
    free(res.fr_data);
    if (data == NULL)
        return NULL;
    if (res.fr_outcome == HC_FLIGHT_HIT && res.fr_expires != HC_FOREVER)
        ttl = PyFloat_FromDouble(((double) res.fr_expires
                                  - (double) hc_expiry_now_ns()) / 1e9);
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
"_flight_wait(key, wait_seq, timeout) -> None\n\n"
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
        || hcpy_key_bytes(key, &kdata, &klen) < 0
        || hcpy_deadline(timeout, HCPY_WAIT, &deadline) < 0)
        return NULL;
    hash = hc_cache_hash(c, kdata, (size_t) klen);
    PINNED_UNLOCKED(c->ca_seg, st, hc_flight_wait(c, hash, seq, deadline));
    if (st == HC_INTERRUPTED && PyErr_CheckSignals() < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(Cache_flight_publish_doc,
"_flight_publish(key, value, format, ttl, round, stale_ttl=0, delta_ms=0)"
" -> bool\n\n"
"Store the computed value if round is still the key's flight; False if\n"
"the round was taken over or the key was set or deleted meanwhile.");

static PyObject *
Cache_flight_publish(CacheObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"key", "value", "format", "ttl", "round",
                             "stale_ttl", "delta_ms", NULL};
    PyObject *key, *ttl, *stale = NULL;
    Py_buffer value;
    int format;
    unsigned long long round;
    unsigned int delta_ms = 0;
    hc_cache *c = cache_get(self);
    hc_write wr;
    hc_status st;

    if (c == NULL
        || !PyArg_ParseTupleAndKeywords(args, kw, "Oy*iOK|OI", kwlist, &key,
                                        &value, &format, &ttl, &round,
                                        &stale, &delta_ms))
        return NULL;
    if (write_of(c, key, &value, format, ttl, stale, &wr) < 0) {
        PyBuffer_Release(&value);
        return NULL;
    }
    wr.wr_delta_ms = delta_ms > UINT16_MAX ? UINT16_MAX : (uint16_t) delta_ms;
    PINNED_UNLOCKED(c->ca_seg, st, hc_flight_publish(c, &wr, round));
    PyBuffer_Release(&value);
    if (st == HC_CONFLICT)
        Py_RETURN_FALSE;
    if (st != HC_OK)
        return hcpy_raise_in(HCPY_IN_CACHE_WRITE, "set", st);
    Py_RETURN_TRUE;
}

PyDoc_STRVAR(Cache_flight_abort_doc,
"_flight_abort(key, round, error=None, error_ttl=0.0) -> bool\n\n"
"End round without a value: with error bytes, its waiters fail with them\n"
"(and callers for error_ttl seconds too); without, the key is freed.");

static PyObject *
Cache_flight_abort(CacheObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"key", "round", "error", "error_ttl", NULL};
    PyObject *key;
    unsigned long long round;
    Py_buffer err = {0};
    PyObject *error_ttl = NULL;
    hc_cache *c = cache_get(self);
    const char *kdata;
    Py_ssize_t klen;
    uint64_t error_ns;
    hc_status st;

    if (c == NULL
        || !PyArg_ParseTupleAndKeywords(args, kw, "OK|z*O", kwlist, &key,
                                        &round, &err, &error_ttl))
        return NULL;
    if (hcpy_key_bytes(key, &kdata, &klen) < 0 || err.len > UINT32_MAX
        || hcpy_seconds(error_ttl, "error_ttl", HCPY_GRACE, &error_ns) < 0) {
        PyBuffer_Release(&err);
        return NULL;
    }
    PINNED_UNLOCKED(c->ca_seg, st, hc_flight_abort(c, kdata, (uint32_t) klen,
                                 hc_cache_hash(c, kdata, (size_t) klen),
                                 round, err.buf, (uint32_t) err.len,
                                 hc_expiry_now_ns() + error_ns));
    PyBuffer_Release(&err);
    if (st == HC_CONFLICT)
        Py_RETURN_FALSE;
    if (st != HC_OK)
        return hcpy_raise_status("get_or_compute", st);
    Py_RETURN_TRUE;
}

/* ---------------------------------------------------------------------- */
/* Snapshots and atomic batches (commit.h)                                */
/* ---------------------------------------------------------------------- */

PyDoc_STRVAR(Cache_csn_doc,
"_csn() -> int\n\nThe last commit sequence number issued.");

static PyObject *
Cache_csn(CacheObject *self, PyObject *Py_UNUSED(ignored))
{
    hc_cache *c = cache_get(self);

    return c ? PyLong_FromUnsignedLongLong(hc_cache_csn(c)) : NULL;
}

PyDoc_STRVAR(Cache_snapshot_open_doc,
"_snapshot_open(max_age_ns) -> (csn, deadline)\n\n"
"Register a snapshot at the current csn (max_age_ns 0: no age limit).");

static PyObject *
Cache_snapshot_open(CacheObject *self, PyObject *arg)
{
    hc_cache *c = cache_get(self);
    unsigned long long max_age;
    uint64_t csn, deadline;
    hc_status st;

    if (c == NULL)
        return NULL;
    max_age = PyLong_AsUnsignedLongLong(arg);
    if (max_age == (unsigned long long) -1 && PyErr_Occurred())
        return NULL;
    st = hc_snapshot_open(c, max_age, &csn, &deadline);
    if (st != HC_OK)
        return hcpy_raise_status("snapshot", st);
    return Py_BuildValue("(KK)", (unsigned long long) csn,
                         (unsigned long long) deadline);
}

PyDoc_STRVAR(Cache_snapshot_close_doc,
"_snapshot_close(csn) -> None\n\nEnd a snapshot _snapshot_open() began.");

static PyObject *
Cache_snapshot_close(CacheObject *self, PyObject *arg)
{
    hc_cache *c = cache_get(self);
    unsigned long long csn;

    if (c == NULL)
        return NULL;
    csn = PyLong_AsUnsignedLongLong(arg);
    if (csn == (unsigned long long) -1 && PyErr_Occurred())
        return NULL;
    hc_snapshot_close(c, csn);
    Py_RETURN_NONE;
}

/*
 * Look key up as of the snapshot at csn, then check that the snapshot
 * could read it exactly (after the read: a version it needed may have
 * gone meanwhile) and count the hit or miss.  -1 with an exception.
 */
static int
snapshot_lookup(hc_cache *c, PyObject *keyobj, uint64_t csn,
                uint64_t deadline, cache_result *res)
{
    const char *key;
    Py_ssize_t len;
    hc_status st;

    if (hcpy_key_bytes(keyobj, &key, &len) < 0
        || cache_lookup_at(c, key, len, hc_expiry_now_ns(), csn, res) < 0)
        return -1;
    st = hc_snapshot_check(c, csn, deadline);
    if (st != HC_OK) {
        Py_CLEAR(res->bytes);
        hcpy_raise_status("snapshot get", st);
        return -1;
    }
    hc_cache_count_stat(c, res->found && !res->rd.rd_expired
                           ? HC_STAT_HITS : HC_STAT_MISSES, 1);
    return 0;
}

PyDoc_STRVAR(Cache_get_at_doc,
"_get_at(key, csn, deadline) -> (bytes, format) | None\n\n"
"The value key had in the snapshot at csn; None if absent then (or\n"
"expired now).  Raises SnapshotTooOld if the snapshot cannot be read.");

static PyObject *
Cache_get_at(CacheObject *self, PyObject *args)
{
    hc_cache *c = cache_get(self);
    unsigned long long csn, deadline;
    PyObject *keyobj;
    cache_result res;

    if (c == NULL || !PyArg_ParseTuple(args, "OKK", &keyobj, &csn, &deadline)
        || snapshot_lookup(c, keyobj, csn, deadline, &res) < 0)
        return NULL;
    if (!res.found || res.rd.rd_expired
        || res.rd.rd_format >= HC_FORMAT_INTERNAL) {
        Py_XDECREF(res.bytes);
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(Ni)", res.bytes, (int) res.rd.rd_format);
}

PyDoc_STRVAR(Cache_get_value_at_doc,
"_get_value_at(key, default, csn, deadline) -> object\n\n"
"get_value() as of the snapshot at csn: the decoded value key had then,\n"
"or default.  Raises SnapshotTooOld if the snapshot cannot be read.");

static PyObject *
Cache_get_value_at(CacheObject *self, PyObject *const *args,
                   Py_ssize_t nargs)
{
    hc_cache *c = cache_get(self);
    unsigned long long csn, deadline;
    cache_result res;
    PyObject *value;

    if (c == NULL)
        return NULL;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError,
                        "_get_value_at(key, default, csn, deadline)");
        return NULL;
    }
    csn = PyLong_AsUnsignedLongLong(args[2]);
    deadline = PyLong_AsUnsignedLongLong(args[3]);
    if (PyErr_Occurred()
        || snapshot_lookup(c, args[0], csn, deadline, &res) < 0)
        return NULL;
    /* A key being computed reads as a plain get reads it (during an
     * early refresh, the old value: cache_lookup_at() served it). */
    if (!res.found || res.rd.rd_expired
        || res.rd.rd_format >= HC_FORMAT_INTERNAL) {
        Py_XDECREF(res.bytes);
        return Py_NewRef(args[1]);
    }
    if (res.rd.rd_format != self->decode_format) {
        Py_DECREF(res.bytes);
        return format_mismatch(args[0], res.rd.rd_format,
                               self->decode_format);
    }
    value = decode_value(self, res.bytes);
    Py_DECREF(res.bytes);
    return value;
}

/* One op of _batch(): (key, bytes, format, ttl), or (key, None) to delete. */
static int
batch_op_of(hc_cache *c, PyObject *op, Py_buffer *value, hc_write *wr)
{
    PyObject *key, *data, *ttl = Py_None;
    int format = 0;
    const char *kdata;
    Py_ssize_t klen;

    if (!PyArg_ParseTuple(op, "OO|iO", &key, &data, &format, &ttl))
        return -1;
    if (data != Py_None) {
        if (PyObject_GetBuffer(data, value, PyBUF_SIMPLE) < 0)
            return -1;
        return write_of(c, key, value, format, ttl, NULL, wr);
    }
    memset(wr, 0, sizeof(*wr));
    if (hcpy_key_bytes(key, &kdata, &klen) < 0)
        return -1;
    wr->wr_key = kdata;
    wr->wr_key_len = (uint32_t) klen;
    wr->wr_hash = hc_cache_hash(c, kdata, (size_t) klen);
    wr->wr_value = "";
    wr->wr_format = HC_FORMAT_TOMBSTONE;
    return 0;
}

PyDoc_STRVAR(Cache_batch_doc,
"_batch(ops) -> (csn, existed)\n\n"
"Apply ops atomically: each (key, bytes, format, ttl) stores, each\n"
"(key, None) deletes.  existed: how many deleted keys held a value.");

static PyObject *
Cache_batch(CacheObject *self, PyObject *ops)
{
    hc_cache *c = cache_get(self);
    PyObject *seq = c ? PySequence_Fast(ops, "ops must be a sequence") : NULL;
    Py_ssize_t n = seq ? PySequence_Fast_GET_SIZE(seq) : 0, i, ready = 0;
    hc_write *wrs = PyMem_Calloc(n ? (size_t) n : 1, sizeof(hc_write));
    Py_buffer *bufs = PyMem_Calloc(n ? (size_t) n : 1, sizeof(Py_buffer));
    uint8_t *existed = PyMem_Calloc(n ? (size_t) n : 1, 1);
    PyObject *result = NULL;
    uint64_t csn = 0, count = 0;
    hc_status st;

    if (seq == NULL || wrs == NULL || bufs == NULL || existed == NULL) {
        if (seq != NULL)
            PyErr_NoMemory();
        goto done;
    }
    for (ready = 0; ready < n; ready++)
        if (batch_op_of(c, PySequence_Fast_GET_ITEM(seq, ready), &bufs[ready],
                        &wrs[ready]) < 0)
            goto done;
    PINNED_UNLOCKED(c->ca_seg, st,
                    hc_cache_batch(c, wrs, (size_t) n, existed, &csn));
    if (st != HC_OK) {
        hcpy_raise_in(HCPY_IN_CACHE_WRITE, "atomic write", st);
        goto done;
    }
    for (i = 0; i < n; i++)
        count += existed[i];
    result = Py_BuildValue("(KK)", (unsigned long long) csn,
                           (unsigned long long) count);
done:
    for (i = 0; bufs != NULL && i < n; i++)
        if (bufs[i].obj != NULL)      /* calloc'ed: NULL if never taken */
            PyBuffer_Release(&bufs[i]);
    PyMem_Free(wrs);
    PyMem_Free(bufs);
    PyMem_Free(existed);
    Py_XDECREF(seq);
    return result;
}

PyDoc_STRVAR(Cache_retained_bytes_doc,
"_retained_bytes() -> int\n\n"
"Bytes of old versions and tombstones kept for snapshots.");

static PyObject *
Cache_retained_bytes(CacheObject *self, PyObject *Py_UNUSED(ignored))
{
    hc_cache *c = cache_get(self);

    return c ? PyLong_FromUnsignedLongLong(hc_cache_retained_bytes(c))
             : NULL;
}

static PyObject *
Cache_eviction(CacheObject *self, void *closure)
{
    hc_cache *c = cache_get(self);

    (void) closure;
    return c == NULL ? NULL
                     : PyUnicode_FromString(hc_eviction_name(c->ca_eviction));
}

static PyGetSetDef Cache_getset[] = {
    {"eviction", (getter) Cache_eviction, NULL,
     "The eviction policy, \"sieve\" or \"s3fifo\", as the cache was "
     "created with.", NULL},
    {NULL}
};

static PyMethodDef Cache_methods[] = {
    {"_csn", (PyCFunction) Cache_csn, METH_NOARGS, Cache_csn_doc},
    {"_snapshot_open", (PyCFunction) Cache_snapshot_open, METH_O,
     Cache_snapshot_open_doc},
    {"_snapshot_close", (PyCFunction) Cache_snapshot_close, METH_O,
     Cache_snapshot_close_doc},
    {"_get_at", (PyCFunction) Cache_get_at, METH_VARARGS, Cache_get_at_doc},
    {"_get_value_at", (PyCFunction) (void (*)(void)) Cache_get_value_at,
     METH_FASTCALL, Cache_get_value_at_doc},
    {"_batch", (PyCFunction) Cache_batch, METH_O, Cache_batch_doc},
    {"_retained_bytes", (PyCFunction) Cache_retained_bytes, METH_NOARGS,
     Cache_retained_bytes_doc},
    {"_get", (PyCFunction) (void (*)(void)) Cache_get, METH_FASTCALL,
     Cache_get_doc},
    {"_lookup", (PyCFunction) Cache_lookup, METH_O, Cache_lookup_doc},
    {"_decode", (PyCFunction) (void (*)(void)) Cache_decode, METH_FASTCALL,
     Cache_decode_doc},
    {"_set_decoder", (PyCFunction) Cache_set_decoder, METH_VARARGS,
     Cache_set_decoder_doc},
    {"_get_value", (PyCFunction) (void (*)(void)) Cache_get_value,
     METH_FASTCALL, Cache_get_value_doc},
    {"_get_local", (PyCFunction) (void (*)(void)) Cache_get_local,
     METH_FASTCALL, Cache_get_local_doc},
    {"_get_decoded", (PyCFunction) (void (*)(void)) Cache_get_decoded,
     METH_FASTCALL, Cache_get_decoded_doc},
    {"_set_local", (PyCFunction) Cache_set_local, METH_VARARGS,
     Cache_set_local_doc},
    {"_local_stats", (PyCFunction) Cache_local_stats, METH_NOARGS,
     Cache_local_stats_doc},
    {"_store", (PyCFunction) (void (*)(void)) Cache_store,
     METH_VARARGS | METH_KEYWORDS, Cache_store_doc},
    {"delete", (PyCFunction) Cache_delete, METH_O, Cache_delete_doc},
    {"_compare_and_delete", (PyCFunction) Cache_compare_and_delete,
     METH_VARARGS, Cache_compare_and_delete_doc},
    {"_touch", (PyCFunction) Cache_touch, METH_VARARGS, Cache_touch_doc},
    {"clear", (PyCFunction) Cache_clear, METH_NOARGS, Cache_clear_doc},
    {"_expire_all", (PyCFunction) Cache_expire_all, METH_NOARGS,
     Cache_expire_all_doc},
    {"_count", (PyCFunction) Cache_count, METH_NOARGS, Cache_count_doc},
    {"_keys", (PyCFunction) Cache_keys, METH_NOARGS, Cache_keys_doc},
    {"check", (PyCFunction) Cache_check, METH_NOARGS, Cache_check_doc},
    {"_stats", (PyCFunction) Cache_stats, METH_NOARGS, Cache_stats_doc},
    {"_stats_by_process", (PyCFunction) Cache_stats_by_process, METH_NOARGS,
     Cache_stats_by_process_doc},
    {"_count_stat", (PyCFunction) Cache_count_stat, METH_VARARGS,
     Cache_count_stat_doc},
    {"_flight_begin", (PyCFunction) (void (*)(void)) Cache_flight_begin,
     METH_VARARGS | METH_KEYWORDS, Cache_flight_begin_doc},
    {"_flight_wait", (PyCFunction) Cache_flight_wait, METH_VARARGS,
     Cache_flight_wait_doc},
    {"_flight_publish", (PyCFunction) (void (*)(void)) Cache_flight_publish,
     METH_VARARGS | METH_KEYWORDS, Cache_flight_publish_doc},
    {"_flight_abort", (PyCFunction) (void (*)(void)) Cache_flight_abort,
     METH_VARARGS | METH_KEYWORDS, Cache_flight_abort_doc},
    {NULL}
};

PyTypeObject hcpy_Cache_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "herdcache._core.Cache",
    .tp_basicsize = sizeof(CacheObject),
    .tp_dealloc = (destructor) Cache_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Cache(segment, offset, size, max_value=1MiB, evict=True, "
              "eviction=EVICTION_STORED): the shared hash table at offset "
              "of segment.",
    .tp_methods = Cache_methods,
    .tp_getset = Cache_getset,
    .tp_init = (initproc) Cache_init,
    .tp_new = PyType_GenericNew,
};
