/*
 * source: the factory and the dispatch of source.h: fmb_src_open picks the implementation from
 * [source].kind (source_archive.c, source_jsonl.c, source_files.c, source_sqlite.c), and
 * fmb_src_next turns a key seen before in this pass into a failed item (one place for every
 * kind; the keys' contract is in source.h).
 */
#include <stdlib.h>
#include <string.h>

#include "batch/shard.h"
#include "batch/source_impl.h"
#include "engine/hash.h"

/* ---------------------------------------------------------------------------------------- */
/* Dispatch */

fmb_status fmb_src_open(const fmb_job *job, fmb_source **out, fmb_err *err)
{
    *out = NULL;
    if (job->source.kind == FMB_SRC_SQLITE)
        return fmb_src_sqlite_open(job, out, err);
    fmb_source *src = job->source.kind == FMB_SRC_ARCHIVE ? fmb_src_archive_new()
                      : job->source.kind == FMB_SRC_JSONL ? fmb_src_jsonl_new()
                                                          : fmb_src_files_new();
    src->job = job;
    fmb_status s = fmb_src_expand_paths(src, err);
    if (s) {
        fmb_src_close(src);
        return s;
    }
    *out = src;
    return FMB_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Repeated keys */

static uint64_t rotl(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static uint64_t fmix(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ull;
    k ^= k >> 33;
    return k;
}

/* MurmurHash3 x64 128 (seed 0) of the key's bytes. */
static void hash128(const char *key, uint64_t out[2])
{
    const unsigned char *p = (const unsigned char *)key;
    size_t n = strlen(key);
    const uint64_t c1 = 0x87c37b91114253d5ull, c2 = 0x4cf5ad432745937full;
    uint64_t h1 = 0, h2 = 0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        uint64_t k1, k2;
        memcpy(&k1, p + i, 8);
        memcpy(&k2, p + i + 8, 8);
        k1 *= c1;
        k1 = rotl(k1, 31);
        k1 *= c2;
        h1 ^= k1;
        h1 = rotl(h1, 27);
        h1 += h2;
        h1 = h1 * 5 + 0x52dce729;
        k2 *= c2;
        k2 = rotl(k2, 33);
        k2 *= c1;
        h2 ^= k2;
        h2 = rotl(h2, 31);
        h2 += h1;
        h2 = h2 * 5 + 0x38495ab5;
    }
    uint64_t k1 = 0, k2 = 0;
    for (size_t j = n - i; j > 8; j--)
        k2 = (k2 << 8) | p[i + j - 1];
    for (size_t j = n - i > 8 ? 8 : n - i; j > 0; j--)
        k1 = (k1 << 8) | p[i + j - 1];
    if (n - i > 8) {
        k2 *= c2;
        k2 = rotl(k2, 33);
        k2 *= c1;
        h2 ^= k2;
    }
    if (n - i > 0) {
        k1 *= c1;
        k1 = rotl(k1, 31);
        k1 *= c2;
        h1 ^= k1;
    }
    h1 ^= (uint64_t)n;
    h2 ^= (uint64_t)n;
    h1 += h2;
    h2 += h1;
    h1 = fmix(h1);
    h2 = fmix(h2);
    h1 += h2;
    h2 += h1;
    out[0] = h1;
    out[1] = h2 | (h1 == 0 && h2 == 0); /* {0, 0} marks an empty slot */
}

static fmb_src_seen_slot *seen_slot(fmb_src_seen_slot *t, size_t cap, const uint64_t h[2])
{
    size_t i = (size_t)h[0] & (cap - 1);
    while ((t[i].h[0] || t[i].h[1]) && (t[i].h[0] != h[0] || t[i].h[1] != h[1]))
        i = (i + 1) & (cap - 1);
    return &t[i];
}

/* Adds key at loc. Returns 1 (and *first = where it was) if it was there already. */
static int seen_add(fmb_source *src, const char *key, int64_t loc, int64_t *first)
{
    if ((src->seen_n + 1) * 10 > src->seen_cap * 7) {
        size_t cap = src->seen_cap ? src->seen_cap * 2 : 1024;
        fmb_src_seen_slot *t = fmb_xcalloc(cap, sizeof *t);
        for (size_t i = 0; i < src->seen_cap; i++)
            if (src->seen[i].h[0] || src->seen[i].h[1])
                *seen_slot(t, cap, src->seen[i].h) = src->seen[i];
        free(src->seen);
        src->seen = t;
        src->seen_cap = cap;
    }
    uint64_t h[2];
    hash128(key, h);
    fmb_src_seen_slot *sl = seen_slot(src->seen, src->seen_cap, h);
    if (sl->h[0] || sl->h[1]) {
        *first = sl->loc;
        return 1;
    }
    sl->h[0] = h[0];
    sl->h[1] = h[1];
    sl->loc = loc;
    src->seen_n++;
    return 0;
}

/* A key seen before in this pass: the item becomes a failed one under the key of its own
 * position (vt->where), which a rerun derives again, so that it is recorded once and skipped
 * after; the first occurrence keeps the key. */
static void repeated_key(fmb_source *src, fmb_doc *doc)
{
    int64_t first, other;
    if (!seen_add(src, src->key, src->loc, &first))
        return;
    char *at = src->vt->where(src, first, 0);
    char *orig = fmb_xstrdup(src->key);
    char *base = src->vt->where(src, src->loc, 1);
    char *key = fmb_xstrdup(base);
    /* The position's key may itself be a key of the source: then a suffix, as stable. */
    for (int n = 2; seen_add(src, key, src->loc, &other); n++) {
        free(key);
        key = fmb_src_fmt("%s~%d", base, n);
    }
    fmb_src_set_key(src, "%s", key);
    fmb_src_set_error(src, "duplicate key: '%s', first at %s", orig, at);
    src->len = 0;
    free(key);
    free(base);
    free(orig);
    free(at);
    fmb_src_emit(src, doc);
}

/* key = "content": the item's key becomes its content hash. A content seen before in this
 * pass is a failed item under its own source key (as stable as the repeats above), and the
 * message names the first by its source key (kept for this: src->first_keys). */
static void content_key(fmb_source *src, fmb_doc *doc)
{
    char h[33];
    fmb_hash_content(src->buf ? src->buf : "", src->len, h);
    char *orig = fmb_xstrdup(src->key);
    fmb_src_set_key(src, "content:%s", h);
    int64_t first, other;
    if (!seen_add(src, src->key, (int64_t)src->n_first_keys, &first)) {
        if (src->n_first_keys == src->cap_first_keys) {
            src->cap_first_keys = src->cap_first_keys ? 2 * src->cap_first_keys : 256;
            src->first_keys =
                fmb_xrealloc(src->first_keys, src->cap_first_keys, sizeof *src->first_keys);
        }
        src->first_keys[src->n_first_keys++] = orig;
        fmb_src_emit(src, doc);
        return;
    }
    char *key = fmb_xstrdup(orig);
    for (int n = 2; seen_add(src, key, -1, &other); n++) {
        free(key);
        key = fmb_src_fmt("%s~%d", orig, n);
    }
    fmb_src_set_error(src, "duplicate key: '%s', first at %s", src->key, src->first_keys[first]);
    fmb_src_set_key(src, "%s", key);
    src->len = 0;
    free(key);
    free(orig);
    fmb_src_emit(src, doc);
}

fmb_status fmb_src_next(fmb_source *src, fmb_doc *doc, int *eof, fmb_err *err)
{
    fmb_status s;
    /* A sharded job sees only its shard's items, after the repeated keys are settled (every
     * shard reads the whole source, so they get the same keys in each; batch/shard.h). */
    do {
        *eof = 0;
        free(src->error);
        src->error = NULL;
        free(src->meta);
        src->meta = NULL;
        free(src->doc_id);
        src->doc_id = NULL;
        src->len = 0;
        src->loc = 0;
        src->id_off = -1;
        s = src->vt->next(src, doc, eof, err);
        if (s != FMB_OK || *eof)
            return s;
        if (src->id_off >= 0 && (size_t)src->id_off <= strlen(src->key))
            src->doc_id = fmb_xstrdup(src->key + src->id_off);
        /* the job's document limit, whatever the reader (readers stop reading at it already) */
        int64_t limit = src->job->max_document_bytes;
        if (!src->error && limit > 0 && src->len > (uint64_t)limit) {
            fmb_src_too_large(src, src->len, 0);
            fmb_src_emit(src, doc);
        }
        if (src->job->source.key_content && !src->error)
            content_key(src, doc);
        else
            repeated_key(src, doc);
        doc->doc_id = src->doc_id;
    } while (!fmb_shard_mine(src->job, doc->key));
    return FMB_OK;
}

void fmb_src_close(fmb_source *src)
{
    if (src)
        src->vt->close(src);
}
