/*
 * source_jsonl: the `jsonl` source: JSON Lines, plain or .gz/.bz2/.xz/.zst, read through
 * libarchive's raw format (fmb_src_open_input, source_archive.c, which inflates gzip itself so
 * that the complete lines before a cut are kept; the rest of the file is one failed item).
 * A UTF-8 byte order mark at the start of a file is skipped.
 */
#include <archive.h>
#include <archive_entry.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch/source_impl.h"

/* ---------------------------------------------------------------------------------------- */
/* jsonl */

typedef struct {
    fmb_source base;
    fmb_src_input in; /* the open file (in.a), or in.a NULL between files */
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
    fmb_src_close_input(&s->in);
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
            int r = archive_read_data_block(s->in.a, &b, &n, &off);
            if (r == ARCHIVE_EOF) {
                s->at_eof = 1;
                continue;
            }
            if (r != ARCHIVE_OK) {
                fmb_src_set_error(src, "read error%s: %s", s->line_len ? " inside this line" : "",
                                  fmb_src_input_error(&s->in));
                s->stop = 1;
                return -1;
            }
            s->blk = b;
            s->blk_len = n;
            s->blk_pos = 0;
            if (s->total_out == 0 && n >= 3 && !memcmp(b, "\xef\xbb\xbf", 3))
                s->blk_pos = 3; /* a UTF-8 byte order mark */
            s->total_out += n;
            if (fmb_src_over_limits(src, &s->in, s->total_out)) {
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
                    s->line = fmb_xrealloc(s->line, cap, 1);
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
        if (s->in.a && s->stop)
            jsonl_close_current(s);
        if (!s->in.a) {
            if (src->cur_file >= src->n_files) {
                *eof = 1;
                return FMB_OK;
            }
            const char *path = src->files[src->cur_file];
            s->fkey = src->file_keys[src->cur_file];
            src->cur_file++;
            struct archive_entry *e;
            int r = fmb_src_open_input(&s->in, path, 1) ? ARCHIVE_FATAL : ARCHIVE_OK;
            if (r == ARCHIVE_OK)
                r = archive_read_next_header(s->in.a, &e);
            if (r == ARCHIVE_EOF) { /* an empty file */
                jsonl_close_current(s);
                continue;
            }
            if (r != ARCHIVE_OK) {
                fmb_src_set_key(src, "%s", s->fkey);
                fmb_src_set_error(src, "cannot open: %s", fmb_src_input_error(&s->in));
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
        src->loc = (int64_t)s->lineno;
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
        src->id_off = (int64_t)strlen(s->fkey) + 1; /* the line, or the id below */
        if (!obj || !json_is_object(obj)) {
            if (obj)
                fmb_src_set_error(src, "not a JSON object: line %llu",
                                  (unsigned long long)s->lineno);
            else
                fmb_src_set_error(src, "bad JSON: line %llu, column %d: %s",
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
                                  "id field '%s' is missing or not a string or integer: line "
                                  "%llu",
                                  cfg->id_field, (unsigned long long)s->lineno);
        }
        if (cfg->n_keep_fields) { /* a field the record lacks is null */
            json_t *m = json_object();
            for (size_t i = 0; i < cfg->n_keep_fields; i++) {
                json_t *v = json_object_get(obj, cfg->keep_fields[i]);
                json_object_set(m, cfg->keep_fields[i], v ? v : json_null());
            }
            src->meta = json_dumps(m, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
            json_decref(m);
        }
        json_t *text = json_object_get(obj, cfg->text_field);
        if (!src->error && !json_is_string(text))
            fmb_src_set_error(src, "text field '%s' is missing or not a string: line %llu",
                              cfg->text_field, (unsigned long long)s->lineno);
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

/* Line loc of the current file; a repeated id is keyed by its line, "<file>:<line>". */
static char *jsonl_where(fmb_source *src, int64_t loc, int as_key)
{
    (void)as_key;
    return fmb_src_fmt("%s:%lld", ((src_jsonl *)src)->fkey, (long long)loc);
}

static const fmb_src_vt jsonl_vt = {jsonl_next, jsonl_close, jsonl_where};

fmb_source *fmb_src_jsonl_new(void)
{
    src_jsonl *s = fmb_xcalloc(1, sizeof *s);
    s->base.vt = &jsonl_vt;
    return &s->base;
}
