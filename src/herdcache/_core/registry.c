/*-------------------------------------------------------------------------
 *
 * registry.c
 *	  Finding and allocating named structures in a segment.
 *
 *-------------------------------------------------------------------------
 */
#include "registry.h"

#include <string.h>

#include "clock.h"
#include "inject.h"
#include "slot.h"

/* How long a registry call waits for a live holder of the registry lock. */
#define REGISTRY_LOCK_WAIT_NS (UINT64_C(30) * HC_NS_PER_SEC)

static const char *const kind_names[HC_KIND_COUNT] = {
    [HC_KIND_RAW] = "struct",
    [HC_KIND_COUNTER] = "counter",
    [HC_KIND_LOCK] = "lock",
    [HC_KIND_CONDITION] = "condition",
    [HC_KIND_QUEUE] = "queue",
    [HC_KIND_CACHE] = "cache",
};

const char *
hc_struct_kind_name(uint32_t kind)
{
    if (kind == 0 || kind >= HC_KIND_COUNT)
        return "unknown";
    return kind_names[kind];
}

static hc_status
validate_struct_name(const char *name, size_t len)
{
    if (len == 0 || len > HC_STRUCT_NAME_MAX || memchr(name, '\0', len)) {
        hc_set_detail("a structure name is 1 to %d bytes without NUL; "
                      "got %zu bytes", HC_STRUCT_NAME_MAX, len);
        return HC_BAD_NAME;
    }
    return HC_OK;
}

/*
 * Copy entry e into out if it is READY and every field is sane; an entry
 * that is READY but insane makes the whole segment suspect (HC_CORRUPT).
 */
static hc_status
read_entry(hc_segment *seg, hc_registry_entry *e, hc_struct_info *out)
{
    uint64_t data = seg->sg_header->sh_data_offset;

    /* Pairs with the release store that publishes the entry. */
    if (atomic_load_explicit(&e->re_state, memory_order_acquire)
        != HC_ENTRY_READY)
        return HC_NOT_FOUND;
    memcpy(out->name, e->re_name, sizeof(out->name));
    out->kind = e->re_kind;
    out->offset = e->re_offset;
    out->size = e->re_size;
    if (memchr(out->name, '\0', sizeof(out->name)) == NULL
        || out->kind == 0 || out->kind >= HC_KIND_COUNT
        || out->offset % HC_ALIGN != 0 || out->offset < data
        || hc_segment_ptr(seg, out->offset, out->size) == NULL) {
        hc_set_detail("registry entry %td is invalid (offset %llu, size "
                      "%llu, segment size %llu)",
                      e - seg->sg_header->sh_registry,
                      (unsigned long long) out->offset,
                      (unsigned long long) out->size,
                      (unsigned long long) seg->sg_size);
        return HC_CORRUPT;
    }
    return HC_OK;
}

static hc_status
lock_registry(hc_segment *seg)
{
    uint64_t deadline = hc_deadline_after(REGISTRY_LOCK_WAIT_NS);
    hc_status st;

    do
        st = hc_lock_acquire(seg, &seg->sg_header->sh_registry_lock, deadline);
    while (st == HC_INTERRUPTED);
    /* A dead holder leaves a consistent registry: see registry.h. */
    if (st == HC_OWNER_DIED)
        st = HC_OK;
    if (st == HC_TIMEOUT)
        hc_set_detail("the registry lock stayed held for %llu s",
                      (unsigned long long) (REGISTRY_LOCK_WAIT_NS
                                            / HC_NS_PER_SEC));
    return st;
}

static hc_status
check_match(const hc_struct_info *info, const char *name, uint64_t size,
            hc_struct_kind kind)
{
    if (info->kind != (uint32_t) kind) {
        hc_set_detail("\"%s\" is a %s, not a %s", name,
                      hc_struct_kind_name(info->kind),
                      hc_struct_kind_name(kind));
        return HC_KIND_MISMATCH;
    }
    if (info->size != size) {
        hc_set_detail("\"%s\" exists with %llu bytes, asked for %llu", name,
                      (unsigned long long) info->size,
                      (unsigned long long) size);
        return HC_SIZE_MISMATCH;
    }
    return HC_OK;
}

/* Carve size bytes for a new entry e; the registry lock is held. */
static hc_status
allocate(hc_segment *seg, hc_registry_entry *e, const char *name,
         size_t name_len, uint64_t size, hc_struct_kind kind,
         hc_struct_info *out)
{
    hc_segment_header *h = seg->sg_header;
    uint64_t top = atomic_load_explicit(&h->sh_alloc_top, memory_order_relaxed);
    uint64_t start = (top + HC_ALIGN - 1) & ~(uint64_t) (HC_ALIGN - 1);
    uint64_t alloc = size == 0 ? HC_ALIGN : size;

    if (top < h->sh_data_offset || start < top
        || hc_segment_ptr(seg, start, alloc) == NULL) {
        if (top < h->sh_data_offset || top > seg->sg_size) {
            hc_set_detail("allocation top %llu lies outside the segment",
                          (unsigned long long) top);
            return HC_CORRUPT;
        }
        hc_set_detail("\"%.*s\" needs %llu bytes, %llu of %llu are free",
                      (int) name_len, name, (unsigned long long) size,
                      (unsigned long long) (seg->sg_size - start),
                      (unsigned long long) seg->sg_size);
        return HC_NO_SPACE;
    }
    HC_INJECT("registry.alloc.start");
    memset(e->re_name, 0, sizeof(e->re_name));
    memcpy(e->re_name, name, name_len);
    e->re_kind = (uint32_t) kind;
    e->re_offset = start;
    e->re_size = size;
    /* relaxed: readers of alloc_top take the lock or only want a figure */
    atomic_store_explicit(&h->sh_alloc_top, start + alloc, memory_order_relaxed);
    HC_INJECT("registry.alloc.before_ready");
    /* Publish the entry: pairs with the acquire load in read_entry(). */
    atomic_store_explicit(&e->re_state, HC_ENTRY_READY, memory_order_release);
    return read_entry(seg, e, out);
}

static hc_status
find_or_alloc_locked(hc_segment *seg, const char *name, size_t name_len,
                     uint64_t size, hc_struct_kind kind, hc_struct_info *out,
                     bool *found)
{
    hc_registry_entry *free_entry = NULL;
    size_t i;

    for (i = 0; i < HC_REGISTRY_CAPACITY; i++) {
        hc_registry_entry *e = &seg->sg_header->sh_registry[i];
        hc_status st = read_entry(seg, e, out);

        if (st == HC_NOT_FOUND) {
            if (free_entry == NULL)
                free_entry = e;
            continue;
        }
        if (st != HC_OK)
            return st;
        if (strlen(out->name) == name_len
            && memcmp(out->name, name, name_len) == 0) {
            *found = true;
            return check_match(out, out->name, size, kind);
        }
    }
    if (free_entry == NULL) {
        hc_set_detail("all %d names are taken", HC_REGISTRY_CAPACITY);
        return HC_REGISTRY_FULL;
    }
    *found = false;
    return allocate(seg, free_entry, name, name_len, size, kind, out);
}

hc_status
hc_registry_find_or_alloc(hc_segment *seg, const char *name, size_t name_len,
                          uint64_t size, hc_struct_kind kind,
                          hc_struct_info *out, bool *found)
{
    hc_status st = validate_struct_name(name, name_len);

    if (st != HC_OK)
        return st;
    if (kind <= 0 || kind >= HC_KIND_COUNT)
        return HC_BAD_ARGUMENT;
    st = lock_registry(seg);
    if (st != HC_OK)
        return st;
    st = find_or_alloc_locked(seg, name, name_len, size, kind, out, found);
    hc_lock_release(seg, &seg->sg_header->sh_registry_lock);
    return st;
}

hc_status
hc_registry_list(hc_segment *seg, hc_struct_info *out, size_t cap,
                 size_t *count)
{
    size_t i, n = 0;

    for (i = 0; i < HC_REGISTRY_CAPACITY; i++) {
        hc_struct_info info;
        hc_status st = read_entry(seg, &seg->sg_header->sh_registry[i], &info);

        if (st == HC_NOT_FOUND)
            continue;
        if (st != HC_OK)
            return st;
        if (n < cap)
            out[n] = info;
        n++;
    }
    *count = n;
    return HC_OK;
}
