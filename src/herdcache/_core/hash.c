/*-------------------------------------------------------------------------
 *
 * hash.c
 *	  SipHash with configurable rounds (see hash.h).
 *
 * Written from the SipHash paper's description: four 64-bit words of
 * state, message words mixed in with c rounds of SipRound each, the
 * length in the top byte of the last word, then d finalisation rounds.
 *
 *-------------------------------------------------------------------------
 */
#include "hash.h"

#include <string.h>

#define ROTL(x, b) (uint64_t) (((x) << (b)) | ((x) >> (64 - (b))))

static inline void
sip_round(uint64_t v[4])
{
    v[0] += v[1];
    v[1] = ROTL(v[1], 13);
    v[1] ^= v[0];
    v[0] = ROTL(v[0], 32);
    v[2] += v[3];
    v[3] = ROTL(v[3], 16);
    v[3] ^= v[2];
    v[0] += v[3];
    v[3] = ROTL(v[3], 21);
    v[3] ^= v[0];
    v[2] += v[1];
    v[1] = ROTL(v[1], 17);
    v[1] ^= v[2];
    v[2] = ROTL(v[2], 32);
}

/* Little-endian load, whatever the host order (the vectors are LE). */
static inline uint64_t
load_le64(const uint8_t *p)
{
    uint64_t x = 0;
    int i;

    for (i = 7; i >= 0; i--)
        x = (x << 8) | p[i];
    return x;
}

static inline void
compress(uint64_t v[4], uint64_t m, int rounds)
{
    int i;

    v[3] ^= m;
    for (i = 0; i < rounds; i++)
        sip_round(v);
    v[0] ^= m;
}

uint64_t
hc_siphash(const uint64_t key[2], const void *data, size_t len, int c_rounds,
           int d_rounds)
{
    const uint8_t *p = data;
    uint64_t v[4] = {
        key[0] ^ UINT64_C(0x736f6d6570736575),
        key[1] ^ UINT64_C(0x646f72616e646f6d),
        key[0] ^ UINT64_C(0x6c7967656e657261),
        key[1] ^ UINT64_C(0x7465646279746573),
    };
    uint8_t tail[8] = {0};
    size_t whole = len & ~(size_t) 7;
    size_t i;

    for (i = 0; i < whole; i += 8)
        compress(v, load_le64(p + i), c_rounds);
    memcpy(tail, p + whole, len - whole);
    tail[7] = (uint8_t) len;
    compress(v, load_le64(tail), c_rounds);
    v[2] ^= 0xff;
    for (i = 0; i < (size_t) d_rounds; i++)
        sip_round(v);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}
