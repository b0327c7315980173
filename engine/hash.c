/* hash: FNV-1a and the two 128-bit constructions built on it. See hash.h. */
#include "engine/hash.h"

#include <stdio.h>

#define PHI 0x9e3779b97f4a7c15ull

uint64_t fmb_hash64(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    if (h == 0)
        h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static void hex2(uint64_t a, uint64_t b, char out[33])
{
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)a, (unsigned long long)b);
}

void fmb_hash_content(const void *data, size_t len, char out[33])
{
    uint64_t a = fmb_hash64(0, data, len);
    uint64_t b = fmb_hash64(a ^ PHI, data, len);
    hex2(a, b, out);
}

void fmb_hash_stream_add(fmb_hash_stream *h, const void *data, size_t len)
{
    h->a = fmb_hash64(h->a, data, len);
    h->b = fmb_hash64(h->b ^ PHI, data, len);
}

void fmb_hash_stream_hex(const fmb_hash_stream *h, char out[33])
{
    hex2(h->a, h->b, out);
}
