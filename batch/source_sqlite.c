/*
 * source_sqlite: documents from a SQLite query giving (key, text), read in key-ordered pages.
 *
 * The user's query is wrapped as
 *   WITH src(k, t) AS (<query>) SELECT k, t FROM src [WHERE k > ?last] ORDER BY k LIMIT ?n
 * and each page is copied out and its statement reset before any document is processed, so no
 * read transaction stays open while the model runs (one long SELECT would starve the WAL
 * checkpoints of a database that is also being written).
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch/source_impl.h"

typedef struct {
    char *key;
    char *text; /* NULL: the text column was NULL */
    size_t len;
} row;

typedef struct {
    fmb_source base;
    sqlite3 *db;
    sqlite3_stmt *first, *after; /* first page; pages after the last key */
    sqlite3_value *last;         /* last key seen (a copy), NULL before the first page */
    row *rows;
    size_t n_rows, pos;
    int done;
} src_sqlite;

static void clear_rows(src_sqlite *s)
{
    for (size_t i = 0; i < s->n_rows; i++) {
        free(s->rows[i].key);
        free(s->rows[i].text);
    }
    s->n_rows = s->pos = 0;
}

static fmb_status fetch_page(src_sqlite *s, fmb_err *err)
{
    const fmb_job *job = s->base.job;
    sqlite3_stmt *st = s->last ? s->after : s->first;
    int64_t n = job->source.page_rows;
    clear_rows(s);
    if (s->last) {
        sqlite3_bind_value(st, 1, s->last);
        sqlite3_bind_int64(st, 2, n);
    } else {
        sqlite3_bind_int64(st, 1, n);
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        row *r = &s->rows[s->n_rows++];
        const unsigned char *k = sqlite3_column_text(st, 0);
        r->key = fmb_xstrdup(k ? (const char *)k : "");
        if (sqlite3_column_type(st, 1) == SQLITE_NULL) {
            r->text = NULL;
            r->len = 0;
        } else {
            const void *t = sqlite3_column_blob(st, 1);
            r->len = (size_t)sqlite3_column_bytes(st, 1);
            r->text = fmb_xmalloc(r->len + 1);
            if (r->len)
                memcpy(r->text, t, r->len);
            r->text[r->len] = 0;
        }
        sqlite3_value_free(s->last);
        s->last = sqlite3_value_dup(sqlite3_column_value(st, 0));
        FMB_ASSERT(s->last);
    }
    fmb_status ret = FMB_OK;
    if (rc != SQLITE_DONE)
        ret = fmb_fail(err, FMB_EIO, "%s: query failed: %s", job->source.database,
                       sqlite3_errmsg(s->db));
    sqlite3_reset(st); /* ends the read transaction */
    sqlite3_clear_bindings(st);
    if ((int64_t)s->n_rows < n)
        s->done = 1;
    return ret;
}

static fmb_status sqlite_next(fmb_source *src, fmb_doc *doc, int *eof, fmb_err *err)
{
    src_sqlite *s = (src_sqlite *)src;
    if (s->pos >= s->n_rows) {
        if (s->done) {
            *eof = 1;
            return FMB_OK;
        }
        fmb_status st = fetch_page(s, err);
        if (st)
            return st;
        if (s->n_rows == 0) {
            *eof = 1;
            return FMB_OK;
        }
    }
    row *r = &s->rows[s->pos++];
    fmb_src_set_key(src, "%s", r->key);
    size_t limit = (size_t)src->job->source.max_entry_bytes;
    if (!r->text)
        fmb_src_set_error(src, "the text column is NULL");
    else if (r->len > limit)
        fmb_src_set_error(src, "document is over max_entry_bytes (%zu bytes)", limit);
    else if (fmb_src_reserve(src, r->len, limit))
        fmb_src_set_error(src, "out of memory");
    else {
        memcpy(src->buf, r->text, r->len);
        src->len = r->len;
    }
    fmb_src_emit(src, doc);
    return FMB_OK;
}

static void sqlite_close(fmb_source *src)
{
    src_sqlite *s = (src_sqlite *)src;
    clear_rows(s);
    free(s->rows);
    sqlite3_finalize(s->first);
    sqlite3_finalize(s->after);
    sqlite3_value_free(s->last);
    sqlite3_close(s->db);
    fmb_src_free_common(src);
    free(s);
}

static const fmb_src_vt sqlite_vt = {sqlite_next, sqlite_close};

fmb_status fmb_src_sqlite_open(const fmb_job *job, fmb_source **out, fmb_err *err)
{
    *out = NULL;
    src_sqlite *s = fmb_xcalloc(1, sizeof *s);
    s->base.vt = &sqlite_vt;
    s->base.job = job;
    s->rows = fmb_xcalloc((size_t)job->source.page_rows, sizeof *s->rows);
    char *path = fmb_job_resolve(job, job->source.database);
    fmb_status ret = FMB_OK;
    char *sql = NULL;
    int rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READONLY, NULL);
    if (rc != SQLITE_OK) {
        ret = fmb_fail(err, FMB_EINVAL, "%s: [source].database: cannot open '%s': %s", job->path,
                       job->source.database, s->db ? sqlite3_errmsg(s->db) : "?");
        goto fail;
    }
    sqlite3_busy_timeout(s->db, 10000);
    /* Strip a trailing ';' so the query can sit inside the CTE. */
    size_t ql = strlen(job->source.query);
    while (ql && (job->source.query[ql - 1] == ';' || job->source.query[ql - 1] == ' ' ||
                  job->source.query[ql - 1] == '\n' || job->source.query[ql - 1] == '\t'))
        ql--;
    size_t n = ql + 200;
    sql = fmb_xmalloc(n);
    snprintf(sql, n, "WITH src(k, t) AS (%.*s) SELECT k, t FROM src ORDER BY k LIMIT ?1", (int)ql,
             job->source.query);
    if (sqlite3_prepare_v2(s->db, sql, -1, &s->first, NULL) != SQLITE_OK) {
        ret = fmb_fail(err, FMB_EINVAL,
                       "%s: [source].query: %s (it must be one SELECT giving a key and a text "
                       "column)",
                       job->path, sqlite3_errmsg(s->db));
        goto fail;
    }
    snprintf(sql, n,
             "WITH src(k, t) AS (%.*s) SELECT k, t FROM src WHERE k > ?1 ORDER BY k LIMIT ?2",
             (int)ql, job->source.query);
    if (sqlite3_prepare_v2(s->db, sql, -1, &s->after, NULL) != SQLITE_OK) {
        ret = fmb_fail(err, FMB_EINVAL, "%s: [source].query: %s", job->path, sqlite3_errmsg(s->db));
        goto fail;
    }
    free(sql);
    free(path);
    *out = &s->base;
    return FMB_OK;
fail:
    free(sql);
    free(path);
    sqlite_close(&s->base);
    return ret;
}
