/*
 * source_archive: the two libarchive-backed sources.
 *
 *   archive  tar, zip, 7z, each optionally gzip/bzip2/xz/zstd-compressed. Only these formats
 *            and filters are registered (never *_all(): that can fork external programs and
 *            pulls in the readers with most CVEs). Non-regular entries are skipped.
 *   jsonl    JSON Lines, plain or .gz/.bz2/.xz/.zst, read through libarchive's raw format.
 *
 * Limits (from [source]): one document over max_entry_bytes, an archive over max_total_bytes,
 * or a compression ratio over max_ratio (once past ratio_floor_bytes) fail that item; the last
 * two also stop reading that archive. Buffers grow while counting and are never sized from an
 * entry's declared size (which may be missing or lie).
 */
#include <archive.h>
#include <archive_entry.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch/source_impl.h"

static struct archive *open_reader(const char *path, int raw)
{
    struct archive *a = archive_read_new();
    FMB_ASSERT(a);
    archive_read_support_filter_gzip(a);
    archive_read_support_filter_bzip2(a);
    archive_read_support_filter_xz(a);
    archive_read_support_filter_zstd(a);
    if (raw) {
        archive_read_support_format_raw(a);
        archive_read_support_format_empty(a);
    } else {
        archive_read_support_format_tar(a);
        archive_read_support_format_zip(a);
        archive_read_support_format_7zip(a);
        archive_read_support_format_empty(a);
    }
    (void)path;
    return a;
}

/* The ratio and total limits of one archive; 0 ok, else sets the item's error. */
static int over_limits(fmb_source *src, struct archive *a, uint64_t total_out)
{
    const fmb_source_cfg *cfg = &src->job->source;
    if (cfg->max_total_bytes > 0 && total_out > (uint64_t)cfg->max_total_bytes) {
        fmb_src_set_error(src, "archive is over max_total_bytes (%lld bytes out)",
                          (long long)cfg->max_total_bytes);
        return 1;
    }
    int64_t in = archive_filter_bytes(a, -1);
    if (cfg->max_ratio > 0 && total_out > (uint64_t)cfg->ratio_floor && in > 0 &&
        (double)total_out > cfg->max_ratio * (double)in) {
        fmb_src_set_error(src, "compression ratio over max_ratio %g (%llu bytes out of %lld)",
                          cfg->max_ratio, (unsigned long long)total_out, (long long)in);
        return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* archive */

typedef struct {
    fmb_source base;
    struct archive *a; /* the open archive, or NULL between archives */
    const char *akey;  /* its key (borrowed from base.file_keys) */
    uint64_t total_out;
    int stop; /* stop reading this archive after the current item */
    char last_entry[256];
} src_archive;

static void close_current(src_archive *s)
{
    if (s->a)
        archive_read_free(s->a);
    s->a = NULL;
    s->stop = 0;
    s->total_out = 0;
    s->last_entry[0] = 0;
}

static fmb_status archive_next(fmb_source *src, fmb_doc *doc, int *eof, fmb_err *err)
{
    (void)err;
    src_archive *s = (src_archive *)src;
    const fmb_source_cfg *cfg = &src->job->source;
    for (;;) {
        if (s->a && s->stop)
            close_current(s);
        if (!s->a) {
            if (src->cur_file >= src->n_files) {
                *eof = 1;
                return FMB_OK;
            }
            const char *path = src->files[src->cur_file];
            s->akey = src->file_keys[src->cur_file];
            src->cur_file++;
            s->a = open_reader(path, 0);
            if (archive_read_open_filename(s->a, path, 65536) != ARCHIVE_OK) {
                fmb_src_set_key(src, "%s", s->akey);
                fmb_src_set_error(src, "cannot open archive: %s", archive_error_string(s->a));
                close_current(s);
                fmb_src_emit(src, doc);
                return FMB_OK;
            }
        }
        struct archive_entry *e;
        int r = archive_read_next_header(s->a, &e);
        if (r == ARCHIVE_EOF) {
            close_current(s);
            continue;
        }
        if (r < ARCHIVE_WARN) {
            /* The rest of this archive cannot be read: one failed item says so. */
            fmb_src_set_key(src, "%s!", s->akey);
            fmb_src_set_error(src, "archive is corrupt after entry '%s': %s", s->last_entry,
                              archive_error_string(s->a) ? archive_error_string(s->a) : "?");
            s->stop = 1;
            fmb_src_emit(src, doc);
            return FMB_OK;
        }
        if (archive_entry_filetype(e) != AE_IFREG)
            continue;
        const char *name = archive_entry_pathname(e);
        if (!name)
            name = archive_entry_pathname_utf8(e);
        if (!name)
            name = "";
        snprintf(s->last_entry, sizeof s->last_entry, "%s", name);
        if (!fmb_src_wanted(cfg, name))
            continue;
        fmb_src_set_key(src, "%s!%s", s->akey, name);
        if (archive_entry_is_encrypted(e)) {
            fmb_src_set_error(src, "entry is encrypted");
            fmb_src_emit(src, doc);
            return FMB_OK;
        }
        size_t limit = (size_t)cfg->max_entry_bytes;
        for (;;) {
            const void *buf;
            size_t size;
            la_int64_t off;
            r = archive_read_data_block(s->a, &buf, &size, &off);
            if (r == ARCHIVE_EOF)
                break;
            if (r != ARCHIVE_OK) {
                fmb_src_set_error(src, "corrupt entry: %s",
                                  archive_error_string(s->a) ? archive_error_string(s->a) : "?");
                if (r == ARCHIVE_FATAL)
                    s->stop = 1;
                break;
            }
            /* Sparse entries: the holes read as zeros. */
            size_t at = off > 0 ? (size_t)off : 0;
            if (at < src->len)
                at = src->len;
            if (at + size > limit) {
                fmb_src_set_error(src, "entry is over max_entry_bytes (%zu bytes)", limit);
                break;
            }
            if (fmb_src_reserve(src, at - src->len + size, limit)) {
                fmb_src_set_error(src, "out of memory reading the entry");
                break;
            }
            memset(src->buf + src->len, 0, at - src->len);
            if (size)
                memcpy(src->buf + at, buf, size);
            src->len = at + size;
            s->total_out += size;
            if (over_limits(src, s->a, s->total_out)) {
                s->stop = 1;
                break;
            }
        }
        fmb_src_emit(src, doc);
        return FMB_OK;
    }
}

static void archive_close(fmb_source *src)
{
    src_archive *s = (src_archive *)src;
    close_current(s);
    fmb_src_free_common(src);
    free(s);
}

static const fmb_src_vt archive_vt = {archive_next, archive_close};

fmb_source *fmb_src_archive_new(void)
{
    src_archive *s = fmb_xcalloc(1, sizeof *s);
    s->base.vt = &archive_vt;
    return &s->base;
}

/* ---------------------------------------------------------------------------------------- */
/* jsonl */

typedef struct {
    fmb_source base;
    struct archive *a;
    const char *fkey;
    const char *blk; /* the current data block (borrowed from libarchive) and our position */
    size_t blk_len, blk_pos;
    int at_eof;
    uint64_t lineno, total_out;
    int stop;
    char *line; /* the current line */
    size_t line_len, line_cap;
} src_jsonl;

static void jsonl_close_current(src_jsonl *s)
{
    if (s->a)
        archive_read_free(s->a);
    s->a = NULL;
    s->blk = NULL;
    s->blk_len = s->blk_pos = 0;
    s->at_eof = 0;
    s->lineno = 0;
    s->total_out = 0;
    s->stop = 0;
}

/* Reads the next line into s->line. Returns 1 with a line, 0 at the end of the file, -1 when the
 * line is over the limit (skipped to its end) or the stream failed (error set, stop set). */
static int read_line(src_jsonl *s)
{
    fmb_source *src = &s->base;
    size_t limit = (size_t)src->job->source.max_entry_bytes;
    int over = 0, any = 0;
    s->line_len = 0;
    for (;;) {
        if (s->blk_pos >= s->blk_len) {
            if (s->at_eof)
                return over ? -1 : any ? 1 : 0;
            const void *b;
            size_t n;
            la_int64_t off;
            int r = archive_read_data_block(s->a, &b, &n, &off);
            if (r == ARCHIVE_EOF) {
                s->at_eof = 1;
                continue;
            }
            if (r != ARCHIVE_OK) {
                fmb_src_set_error(src, "read error: %s",
                                  archive_error_string(s->a) ? archive_error_string(s->a) : "?");
                s->stop = 1;
                return -1;
            }
            s->blk = b;
            s->blk_len = n;
            s->blk_pos = 0;
            s->total_out += n;
            if (over_limits(src, s->a, s->total_out)) {
                s->stop = 1;
                return -1;
            }
            continue;
        }
        any = 1;
        const char *p = s->blk + s->blk_pos;
        size_t avail = s->blk_len - s->blk_pos;
        const char *nl = memchr(p, '\n', avail);
        size_t take = nl ? (size_t)(nl - p) : avail;
        if (!over) {
            if (s->line_len + take > limit) {
                over = 1;
            } else {
                if (s->line_len + take + 1 > s->line_cap) {
                    size_t cap = s->line_cap ? s->line_cap : 65536;
                    while (cap < s->line_len + take + 1)
                        cap *= 2;
                    char *nb = realloc(s->line, cap);
                    FMB_ASSERT(nb);
                    s->line = nb;
                    s->line_cap = cap;
                }
                memcpy(s->line + s->line_len, p, take);
                s->line_len += take;
            }
        }
        s->blk_pos += take + (nl ? 1 : 0);
        if (nl) {
            if (over)
                fmb_src_set_error(src, "line is over max_entry_bytes (%zu bytes)", limit);
            return over ? -1 : 1;
        }
    }
}

static int blank(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
            return 0;
    return 1;
}

static fmb_status jsonl_next(fmb_source *src, fmb_doc *doc, int *eof, fmb_err *err)
{
    (void)err;
    src_jsonl *s = (src_jsonl *)src;
    const fmb_source_cfg *cfg = &src->job->source;
    for (;;) {
        if (s->a && s->stop)
            jsonl_close_current(s);
        if (!s->a) {
            if (src->cur_file >= src->n_files) {
                *eof = 1;
                return FMB_OK;
            }
            const char *path = src->files[src->cur_file];
            s->fkey = src->file_keys[src->cur_file];
            src->cur_file++;
            s->a = open_reader(path, 1);
            struct archive_entry *e;
            int r = archive_read_open_filename(s->a, path, 65536);
            if (r == ARCHIVE_OK)
                r = archive_read_next_header(s->a, &e);
            if (r == ARCHIVE_EOF) { /* an empty file */
                jsonl_close_current(s);
                continue;
            }
            if (r != ARCHIVE_OK) {
                fmb_src_set_key(src, "%s", s->fkey);
                fmb_src_set_error(src, "cannot open: %s", archive_error_string(s->a));
                jsonl_close_current(s);
                fmb_src_emit(src, doc);
                return FMB_OK;
            }
        }
        int r = read_line(s);
        if (r == 0) {
            jsonl_close_current(s);
            continue;
        }
        s->lineno++;
        if (r < 0) {
            fmb_src_set_key(src, "%s:%llu", s->fkey, (unsigned long long)s->lineno);
            fmb_src_emit(src, doc);
            return FMB_OK;
        }
        if (blank(s->line, s->line_len))
            continue;
        json_error_t je;
        json_t *obj =
            json_loadb(s->line, s->line_len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
        fmb_src_set_key(src, "%s:%llu", s->fkey, (unsigned long long)s->lineno);
        if (!obj || !json_is_object(obj)) {
            if (obj)
                fmb_src_set_error(src, "line %llu: not a JSON object",
                                  (unsigned long long)s->lineno);
            else
                fmb_src_set_error(src, "line %llu, column %d: bad JSON: %s",
                                  (unsigned long long)s->lineno, je.column, je.text);
            json_decref(obj);
            fmb_src_emit(src, doc);
            return FMB_OK;
        }
        if (cfg->id_field) {
            json_t *id = json_object_get(obj, cfg->id_field);
            if (json_is_string(id) && json_string_length(id) > 0 &&
                strlen(json_string_value(id)) == json_string_length(id))
                fmb_src_set_key(src, "%s#%s", s->fkey, json_string_value(id));
            else if (json_is_integer(id))
                fmb_src_set_key(src, "%s#%lld", s->fkey, (long long)json_integer_value(id));
            else
                fmb_src_set_error(src,
                                  "line %llu: id field '%s' is missing or not a string or "
                                  "integer",
                                  (unsigned long long)s->lineno, cfg->id_field);
        }
        json_t *text = json_object_get(obj, cfg->text_field);
        if (!src->error && !json_is_string(text))
            fmb_src_set_error(src, "line %llu: text field '%s' is missing or not a string",
                              (unsigned long long)s->lineno, cfg->text_field);
        if (!src->error) {
            size_t n = json_string_length(text);
            if (fmb_src_reserve(src, n, (size_t)-1) == 0) {
                memcpy(src->buf, json_string_value(text), n);
                src->len = n;
            } else {
                fmb_src_set_error(src, "out of memory");
            }
        }
        json_decref(obj);
        fmb_src_emit(src, doc);
        return FMB_OK;
    }
}

static void jsonl_close(fmb_source *src)
{
    src_jsonl *s = (src_jsonl *)src;
    jsonl_close_current(s);
    free(s->line);
    fmb_src_free_common(src);
    free(s);
}

static const fmb_src_vt jsonl_vt = {jsonl_next, jsonl_close};

fmb_source *fmb_src_jsonl_new(void)
{
    src_jsonl *s = fmb_xcalloc(1, sizeof *s);
    s->base.vt = &jsonl_vt;
    return &s->base;
}
