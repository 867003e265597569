/*-------------------------------------------------------------------------
 *
 * alloc.c
 *	  The buddy allocator described in alloc.h.
 *
 *-------------------------------------------------------------------------
 */
#include "alloc.h"

#include <string.h>

/* A free block's first 8 bytes: its neighbours in its order's list. */
typedef struct free_link {
    uint32_t fl_next;               /* unit index + 1, 0 = end */
    uint32_t fl_prev;
} free_link;

int
hc_alloc_order_for(uint64_t bytes)
{
    uint64_t units = (bytes + HC_UNIT - 1) >> HC_UNIT_SHIFT;
    int order = 0;

    if (units == 0)
        units = 1;
    while (((uint64_t) 1 << order) < units)
        order++;
    return order > HC_MAX_ORDER ? -1 : order;
}

static free_link *
link_at(const hc_arena_view *av, uint32_t unit)
{
    return (free_link *) hc_alloc_ptr(av, unit);
}

static bool
is_free_block(const hc_arena_view *av, uint32_t unit, unsigned order)
{
    return unit < av->av_units
        && av->av_map[unit] == (HC_MAP_FREE | (order + 1));
}

static void
push_free(const hc_arena_view *av, uint32_t unit, unsigned order)
{
    uint32_t head = av->av_arena->ar_free[order];
    free_link *l = link_at(av, unit);

    l->fl_next = head;
    l->fl_prev = 0;
    if (head != 0 && is_free_block(av, head - 1, order))
        link_at(av, head - 1)->fl_prev = unit + 1;
    av->av_arena->ar_free[order] = unit + 1;
    av->av_map[unit] = (uint8_t) (HC_MAP_FREE | (order + 1));
}

/* Unlink a free block from its list; false if the links are inconsistent. */
static bool
unlink_free(const hc_arena_view *av, uint32_t unit, unsigned order)
{
    free_link *l = link_at(av, unit);
    uint32_t next = l->fl_next, prev = l->fl_prev;

    if ((next != 0 && !is_free_block(av, next - 1, order))
        || (prev != 0 && !is_free_block(av, prev - 1, order)))
        return false;
    if (prev == 0) {
        if (av->av_arena->ar_free[order] != unit + 1)
            return false;
        av->av_arena->ar_free[order] = next;
    }
    else
        link_at(av, prev - 1)->fl_next = next;
    if (next != 0)
        link_at(av, next - 1)->fl_prev = prev;
    av->av_map[unit] = 0;
    return true;
}

/* The largest order of an aligned block at unit that fits in the arena. */
static unsigned
fitting_order(const hc_arena_view *av, uint32_t unit, unsigned max)
{
    unsigned order = max;

    while (order > 0
           && ((unit & ((UINT32_C(1) << order) - 1)) != 0
               || (uint64_t) unit + (UINT64_C(1) << order) > av->av_units))
        order--;
    return order;
}

void
hc_alloc_reset(const hc_arena_view *av)
{
    memset(av->av_map, 0, av->av_units);
    memset(av->av_arena->ar_free, 0, sizeof(av->av_arena->ar_free));
    av->av_arena->ar_used_units = 0;
    hc_alloc_rebuild_free(av);
}

hc_status
hc_alloc_block(const hc_arena_view *av, unsigned order, uint32_t *unit)
{
    unsigned k = order;
    uint32_t u;

    while (k <= HC_MAX_ORDER && av->av_arena->ar_free[k] == 0)
        k++;
    if (k > HC_MAX_ORDER)
        return HC_NO_SPACE;
    u = av->av_arena->ar_free[k] - 1;
    if (!is_free_block(av, u, k) || !unlink_free(av, u, k))
        return HC_CORRUPT;
    /* Split: keep the lower half, give the upper halves back. */
    while (k > order) {
        k--;
        push_free(av, u + (UINT32_C(1) << k), k);
    }
    av->av_map[u] = (uint8_t) (order + 1);
    av->av_arena->ar_used_units += UINT64_C(1) << order;
    *unit = u;
    return HC_OK;
}

hc_status
hc_alloc_free(const hc_arena_view *av, uint32_t unit, unsigned order)
{
    if (order > HC_MAX_ORDER || unit >= av->av_units
        || av->av_map[unit] != order + 1)
        return HC_CORRUPT;
    av->av_arena->ar_used_units -= UINT64_C(1) << order;
    av->av_map[unit] = 0;
    /* Coalesce with free buddies as far as they go. */
    while (order < HC_MAX_ORDER) {
        uint32_t buddy = unit ^ (UINT32_C(1) << order);

        if (!is_free_block(av, buddy, order) || !unlink_free(av, buddy, order))
            break;
        unit = unit < buddy ? unit : buddy;
        order++;
    }
    push_free(av, unit, order);
    return HC_OK;
}

bool
hc_alloc_mark_used(const hc_arena_view *av, uint32_t unit, unsigned order)
{
    uint64_t end = (uint64_t) unit + (UINT64_C(1) << order), u;

    if (order > HC_MAX_ORDER || end > av->av_units
        || (unit & ((UINT32_C(1) << order) - 1)) != 0)
        return false;
    /* Refuse overlaps: every unit of the block must be unclaimed. */
    for (u = unit; u < end; u++)
        if (av->av_map[u] != 0)
            return false;
    for (u = unit; u < end; u++)
        av->av_map[u] = HC_MAP_ORDER;   /* interior marker, fixed below */
    av->av_map[unit] = (uint8_t) (order + 1);
    av->av_arena->ar_used_units += UINT64_C(1) << order;
    return true;
}

void
hc_alloc_rebuild_free(const hc_arena_view *av)
{
    uint32_t u = 0;

    memset(av->av_arena->ar_free, 0, sizeof(av->av_arena->ar_free));
    while (u < av->av_units) {
        unsigned order;
        uint64_t end, v;

        if (av->av_map[u] != 0) {
            /* a used block: skip it (its interior carries HC_MAP_ORDER) */
            order = (av->av_map[u] & HC_MAP_ORDER) - 1;
            if (av->av_map[u] == HC_MAP_ORDER)
                order = 0;
            u += UINT32_C(1) << order;
            continue;
        }
        /* the largest aligned free block starting here */
        order = fitting_order(av, u, HC_MAX_ORDER);
        for (;;) {
            end = (uint64_t) u + (UINT64_C(1) << order);
            for (v = u; v < end && av->av_map[v] == 0; v++)
                ;
            if (v == end || order == 0)
                break;
            order--;
        }
        push_free(av, u, order);
        u += UINT32_C(1) << order;
    }
    /* Interior markers were only for the scan above. */
    for (u = 0; u < av->av_units; u++)
        if (av->av_map[u] == HC_MAP_ORDER)
            av->av_map[u] = 0;
}

hc_status
hc_alloc_check(const hc_arena_view *av, uint64_t *free_units)
{
    uint64_t total = 0, steps = 0;
    unsigned order;

    for (order = 0; order <= HC_MAX_ORDER; order++) {
        uint32_t cur = av->av_arena->ar_free[order], prev = 0;

        while (cur != 0) {
            if (!is_free_block(av, cur - 1, order)
                || link_at(av, cur - 1)->fl_prev != prev
                || ++steps > av->av_units)
                return HC_CORRUPT;
            total += UINT64_C(1) << order;
            prev = cur;
            cur = link_at(av, cur - 1)->fl_next;
        }
    }
    if (total + av->av_arena->ar_used_units != av->av_units)
        return HC_CORRUPT;
    *free_units = total;
    return HC_OK;
}
