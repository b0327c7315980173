/*
 * hash: the non-cryptographic hashes of fmbatch, in one place.
 *
 * Their values are stored (output databases: content_hash, fingerprint_hash, model_hash,
 * tokenizer_hash) and sampling seeds derive from them, so they must never change:
 * tests/test_engine_units.c pins known values.
 *
 *   fmb_hash64          64-bit FNV-1a, continuing from h (0 starts from the FNV offset basis).
 *   fmb_hash_content    128-bit hash of one buffer (document bytes, fingerprints): lane a =
 *                       FNV-1a of the bytes, lane b = FNV-1a of the bytes seeded with a ^ phi.
 *   fmb_hash_stream     128-bit hash of a sequence of pieces (model and tokenizer identity):
 *                       every piece goes through both lanes, lane b seeded with b ^ phi each
 *                       time. It is not fmb_hash_content of the concatenation (piece borders
 *                       count); both are kept as they are because their values are stored.
 * Hex forms are 32 lower-case hex chars + NUL: lane a then lane b, each %016llx.
 */
#ifndef FMB_HASH_H
#define FMB_HASH_H

#include <stddef.h>
#include <stdint.h>

uint64_t fmb_hash64(uint64_t h, const void *data, size_t len);

void fmb_hash_content(const void *data, size_t len, char out[33]);

typedef struct {
    uint64_t a, b;
} fmb_hash_stream;

/* Start with fmb_hash_stream h = {0, 0}. */
void fmb_hash_stream_add(fmb_hash_stream *h, const void *data, size_t len);
void fmb_hash_stream_hex(const fmb_hash_stream *h, char out[33]);

#endif
