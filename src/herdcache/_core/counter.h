/*-------------------------------------------------------------------------
 *
 * counter.h
 *	  Named atomic 64-bit counters.
 *
 * A counter is one int64 on a cache line of its own (the registry aligns
 * every structure to 64 bytes), so two hot counters never share a line.
 * Every operation is sequentially consistent: users build hand-offs
 * between processes out of counters ("store 1 when ready"), and on x86 a
 * seq_cst read-modify-write costs what a relaxed one does.
 *
 *-------------------------------------------------------------------------
 */
#ifndef HC_COUNTER_H
#define HC_COUNTER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct hc_counter {
    _Atomic int64_t ct_value;
} hc_counter;

/* Add delta (wrapping as two's complement) and return the new value. */
static inline int64_t
hc_counter_add(hc_counter *c, int64_t delta)
{
    uint64_t old = (uint64_t) atomic_fetch_add_explicit(
        &c->ct_value, delta, memory_order_seq_cst);

    return (int64_t) (old + (uint64_t) delta);
}

static inline int64_t
hc_counter_load(hc_counter *c)
{
    return atomic_load_explicit(&c->ct_value, memory_order_seq_cst);
}

static inline void
hc_counter_store(hc_counter *c, int64_t value)
{
    atomic_store_explicit(&c->ct_value, value, memory_order_seq_cst);
}

static inline int64_t
hc_counter_exchange(hc_counter *c, int64_t value)
{
    return atomic_exchange_explicit(&c->ct_value, value,
                                    memory_order_seq_cst);
}

/* Store desired if the value is *expected; else load it into *expected. */
static inline bool
hc_counter_compare_exchange(hc_counter *c, int64_t *expected, int64_t desired)
{
    return atomic_compare_exchange_strong_explicit(
        &c->ct_value, expected, desired,
        memory_order_seq_cst, memory_order_seq_cst);
}

#endif /* HC_COUNTER_H */
