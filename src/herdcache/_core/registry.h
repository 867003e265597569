/*-------------------------------------------------------------------------
 *
 * registry.h
 *	  The name -> structure index of a segment (PostgreSQL's ShmemIndex).
 *
 * hc_registry_find_or_alloc() is ShmemInitStruct: under the registry lock
 * it finds the entry of that name or carves a new 64-byte aligned piece
 * out of the segment and records it, and it tells the caller which.  The
 * memory of a new piece is zero (the file was zero-filled and nothing is
 * ever freed), and every kind of structure the core defines treats all
 * zero bytes as its valid initial state, so there is no half-initialised
 * window for anyone to see.
 *
 * Notes on synchronization
 *
 * Entries are written only under sh_registry_lock: the fields first, then
 * re_state = READY with a release store.  Readers without the lock (names
 * for humans) load re_state with acquire before the fields (pairs with
 * that store).  A process that dies while it holds the lock leaves either
 * no entry (state still FREE) or a whole one; at worst sh_alloc_top moved
 * past a piece nobody records, which leaks that piece and nothing else.
 *
 *-------------------------------------------------------------------------
 */
#ifndef HC_REGISTRY_H
#define HC_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "segment.h"

typedef enum hc_struct_kind {
    HC_KIND_RAW = 1,            /* bytes for the user (seg.struct) */
    HC_KIND_COUNTER,
    HC_KIND_LOCK,
    HC_KIND_CONDITION,
    HC_KIND_QUEUE,
    HC_KIND_CACHE,
    HC_KIND_COUNT
} hc_struct_kind;

#define HC_ENTRY_FREE 0
#define HC_ENTRY_READY 1

/* A validated copy of one registry entry. */
typedef struct hc_struct_info {
    char name[HC_STRUCT_NAME_MAX + 1];
    uint32_t kind;
    uint64_t offset;
    uint64_t size;
} hc_struct_info;

/*
 * Find the structure called name (name_len bytes, no NUL inside), or
 * allocate size bytes for it.  *found tells which.  Errors: HC_BAD_NAME,
 * HC_KIND_MISMATCH, HC_SIZE_MISMATCH, HC_REGISTRY_FULL, HC_NO_SPACE,
 * HC_CORRUPT, HC_TIMEOUT (the registry lock stayed held by a live process).
 */
hc_status hc_registry_find_or_alloc(hc_segment *seg, const char *name,
                                    size_t name_len, uint64_t size,
                                    hc_struct_kind kind, hc_struct_info *out,
                                    bool *found);

/* Copy up to cap valid entries into out; *count is how many exist. */
hc_status hc_registry_list(hc_segment *seg, hc_struct_info *out, size_t cap,
                           size_t *count);

const char *hc_struct_kind_name(uint32_t kind);

#endif /* HC_REGISTRY_H */
