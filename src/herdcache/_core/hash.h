/*-------------------------------------------------------------------------
 *
 * hash.h
 *	  A keyed 64-bit hash for keys that come from the outside world.
 *
 * SipHash-1-3 (Aumasson and Bernstein; the variant CPython uses for str),
 * keyed with the segment's random seed: every process of a segment hashes
 * a key to the same value, and nobody who does not know the seed can
 * craft keys that pile into one bucket.  hc_siphash() takes the round
 * counts so the C tests can check it against the published SipHash-2-4
 * test vectors.
 *
 *-------------------------------------------------------------------------
 */
#ifndef HC_HASH_H
#define HC_HASH_H

#include <stddef.h>
#include <stdint.h>

uint64_t hc_siphash(const uint64_t key[2], const void *data, size_t len,
                    int c_rounds, int d_rounds);

static inline uint64_t
hc_hash_key(const uint64_t seed[2], const void *data, size_t len)
{
    return hc_siphash(seed, data, len, 1, 3);
}

#endif /* HC_HASH_H */
