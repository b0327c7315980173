/*
 * source_sqlite: documents from a SQLite query giving (key, text), read in pages in the order
 * (key, text).
 *
 * The user's query is wrapped as
 *   WITH src(k, t) AS (<query>),
 *        page AS (SELECT k, t FROM src [WHERE k >= ?bound] ORDER BY k, t LIMIT ?n OFFSET ?g)
 *   SELECT k, t, k IS lag(k) OVER (ORDER BY k, t), k IS ?bound FROM page ORDER BY k, t
 * and each page is copied out and its statement reset before any document is processed, so no
 * read transaction stays open while the model runs (one long SELECT would starve the WAL
 * checkpoints of a database that is also being written, or block its writers).
 *
 * No row is lost at a page boundary: a page starts at the last key read (>=, not >) and skips
 * the g rows of that key already read, so rows sharing a key are all read even when they
 * straddle pages; ordering by the text too makes the order within a key the same on every
 * page (rows equal in both are interchangeable). Equality is SQLite's own (k IS ...: the key's
 * type and collation), never recomputed here. NULL keys sort first and are read by offset
 * until the first key. Each row has a number, its position in that order (1-based): a row
 * with a NULL key is a failed item keyed "<database>:row <n>", and a key read again is one too
 * (source.c, through sqlite_where).
 */
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch/source_impl.h"

typedef struct {
    char *key;  /* NULL: the key column was NULL */
    char *text; /* NULL: the text column was NULL */
    size_t len;
    int same_prev;  /* the key IS the previous row's (in this page) */
    int same_bound; /* the key IS the page's bound */
    char *meta;     /* keep_fields: the row's kept columns as a JSON object text */
} row;

typedef struct {
    fmb_source base;
    sqlite3 *db;
    sqlite3_stmt *first, *after; /* pages before any key (NULL keys), pages from a key on */
    sqlite3_value *bound;        /* the last key read (a copy), NULL while only NULL keys */
    int64_t skip;                /* rows of that key (or NULL keys) read so far */
    int64_t row_no;              /* rows yielded so far */
    row *rows;
    size_t n_rows, pos;
    int done;
} src_sqlite;

static void clear_rows(src_sqlite *s)
{
    for (size_t i = 0; i < s->n_rows; i++) {
        free(s->rows[i].key);
        free(s->rows[i].text);
        free(s->rows[i].meta);
    }
    s->n_rows = s->pos = 0;
}

static fmb_status fetch_page(src_sqlite *s, fmb_err *err)
{
    const fmb_job *job = s->base.job;
    sqlite3_stmt *st = s->bound ? s->after : s->first;
    int64_t n = job->source.page_rows;
    clear_rows(s);
    sqlite3_bind_int64(st, 1, n);
    sqlite3_bind_int64(st, 2, s->skip);
    if (s->bound)
        sqlite3_bind_value(st, 3, s->bound);
    else
        sqlite3_bind_null(st, 3);
    sqlite3_value *last = NULL;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        FMB_ASSERT((int64_t)s->n_rows < n);
        row *r = &s->rows[s->n_rows++];
        const unsigned char *k = sqlite3_column_text(st, 0);
        r->key = sqlite3_column_type(st, 0) == SQLITE_NULL ? NULL
                                                           : fmb_xstrdup(k ? (const char *)k : "");
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
        r->meta = NULL;
        if (job->source.n_keep_fields) {
            json_t *m = json_object();
            for (size_t i = 0; i < job->source.n_keep_fields; i++) {
                int c = 4 + (int)i;
                json_t *v;
                switch (sqlite3_column_type(st, c)) {
                case SQLITE_INTEGER:
                    v = json_integer(sqlite3_column_int64(st, c));
                    break;
                case SQLITE_FLOAT:
                    v = json_real(sqlite3_column_double(st, c));
                    break;
                case SQLITE_NULL:
                    v = json_null();
                    break;
                default: /* text, and a blob as its bytes */
                    v = json_stringn((const char *)sqlite3_column_text(st, c),
                                     (size_t)sqlite3_column_bytes(st, c));
                    if (!v) /* not UTF-8 */
                        v = json_null();
                }
                json_object_set_new(m, job->source.keep_fields[i], v);
            }
            r->meta = json_dumps(m, JSON_COMPACT | JSON_REAL_PRECISION(17));
            json_decref(m);
        }
        r->same_prev = sqlite3_column_int(st, 2);
        r->same_bound = sqlite3_column_int(st, 3);
        sqlite3_value_free(last);
        last = sqlite3_value_dup(sqlite3_column_value(st, 0));
        FMB_ASSERT(last);
    }
    fmb_status ret = FMB_OK;
    if (rc != SQLITE_DONE)
        ret =
            fmb_fail(err, FMB_EIO, "%s: [source].database '%s': reading after row %lld: %s",
                     job->path, job->source.database, (long long)s->row_no, sqlite3_errmsg(s->db));
    sqlite3_reset(st); /* ends the read transaction */
    sqlite3_clear_bindings(st);
    size_t m = s->n_rows;
    if (ret == FMB_OK && m > 0) {
        /* The next page starts at this page's last key, past the rows of it read by then. */
        int64_t run = 1;
        while (run < (int64_t)m && s->rows[m - (size_t)run].same_prev)
            run++;
        int last_null = s->rows[m - 1].key == NULL;
        if (!s->bound && last_null) {
            s->skip += (int64_t)m; /* still NULL keys: by offset */
        } else if (s->bound && run == (int64_t)m && s->rows[0].same_bound) {
            s->skip += (int64_t)m; /* the whole page is more of the bound's key */
        } else {
            sqlite3_value_free(s->bound);
            s->bound = last;
            last = NULL;
            s->skip = run;
        }
    }
    sqlite3_value_free(last);
    if ((int64_t)m < n)
        s->done = 1;
    return ret;
}

/* The start of a text for a message: up to 40 bytes, cut at a character, one line. */
static void snippet(const char *t, size_t len, char *out, size_t cap)
{
    size_t n = len < 40 ? len : 40;
    while (n < len && n > 0 && ((unsigned char)t[n] & 0xc0) == 0x80)
        n--;
    if (n + 1 > cap)
        n = cap - 1;
    for (size_t i = 0; i < n; i++)
        out[i] = (unsigned char)t[i] < 0x20 ? ' ' : t[i];
    out[n] = 0;
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
    src->loc = ++s->row_no;
    size_t limit = (size_t)src->job->source.max_entry_bytes;
    if (!r->key) {
        char head[48];
        snippet(r->text ? r->text : "", r->len, head, sizeof head);
        fmb_src_set_key(src, "%s:row %lld", src->job->source.database, (long long)s->row_no);
        if (r->text)
            fmb_src_set_error(src,
                              "the key column is NULL: row %lld of the query in key order, the "
                              "text begins '%s'",
                              (long long)s->row_no, head);
        else
            fmb_src_set_error(src,
                              "the key column is NULL: row %lld of the query in key order, the "
                              "text is NULL too",
                              (long long)s->row_no);
        fmb_src_emit(src, doc);
        return FMB_OK;
    }
    fmb_src_set_key(src, "%s", r->key);
    src->id_off = 0;
    src->meta = r->meta;
    r->meta = NULL;
    limit = fmb_src_doc_limit(src);
    if (!r->text)
        fmb_src_set_error(src, "the text column is NULL");
    else if (r->len > limit && fmb_src_doc_limit_is_job(src))
        fmb_src_too_large(src, r->len, 0);
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
    sqlite3_value_free(s->bound);
    sqlite3_close(s->db);
    fmb_src_free_common(src);
    free(s);
}

/* Row loc of the query in (key, text) order; a repeated key is keyed "<database>:row <n>". */
static char *sqlite_where(fmb_source *src, int64_t loc, int as_key)
{
    return fmb_src_fmt(as_key ? "%s:row %lld" : "%s row %lld", src->job->source.database,
                       (long long)loc);
}

static const fmb_src_vt sqlite_vt = {sqlite_next, sqlite_close, sqlite_where};

/* 1 when SQLite's plan for a page from a key on (sql) sorts the query's whole result: a
 * "USE TEMP B-TREE FOR ORDER BY" inside the page's co-routine, where an index on the key (or
 * the rowid as the key) gives a seek to the bound and at most a sort of equal keys ("... FOR
 * RIGHT PART OF ORDER BY"). Each page then reads every row from the bound on: N rows in pages
 * of P take ~N²/2P row reads (20,000 rows: 3.7 s against 0.07 with the rowid as key). */
static int page_sorts_all(sqlite3 *db, const char *sql)
{
    char *eqp = fmb_src_fmt("EXPLAIN QUERY PLAN %s", sql);
    sqlite3_stmt *st = NULL;
    int sorts = 0;
    if (sqlite3_prepare_v2(db, eqp, -1, &st, NULL) == SQLITE_OK) {
        // rows (id, parent, notused, detail), a parent before its children; sub: the page
        // co-routine and what it holds
        int sub[256], n = 0;
        while (sqlite3_step(st) == SQLITE_ROW && n < 256) {
            int id = sqlite3_column_int(st, 0), parent = sqlite3_column_int(st, 1), in = 0;
            const char *d = (const char *)sqlite3_column_text(st, 3);
            for (int i = 0; i < n && !in; i++)
                in = sub[i] == parent;
            if (in || (d && !strcmp(d, "CO-ROUTINE page")))
                sub[n++] = id;
            if (in && d && !strcmp(d, "USE TEMP B-TREE FOR ORDER BY"))
                sorts = 1;
        }
    }
    sqlite3_finalize(st);
    free(eqp);
    return sorts;
}

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
    /* keep_fields: the query's own columns by name; src then names every column (c<i>), and
     * the page carries the kept ones after the four above (fetch_page reads them). */
    char cols[4096] = "", kept[4096] = "";
    if (job->source.n_keep_fields) {
        sqlite3_stmt *q = NULL;
        char *uq = fmb_src_fmt("%.*s", (int)ql, job->source.query);
        int prc = sqlite3_prepare_v2(s->db, uq, -1, &q, NULL);
        free(uq);
        if (prc != SQLITE_OK) {
            ret = fmb_fail(err, FMB_EINVAL, "%s: [source].query: %s", job->path,
                           sqlite3_errmsg(s->db));
            goto fail;
        }
        int nc = sqlite3_column_count(q);
        for (int c = 2; c < nc; c++)
            snprintf(cols + strlen(cols), sizeof cols - strlen(cols), ", c%d", c);
        for (size_t i = 0; i < job->source.n_keep_fields && ret == FMB_OK; i++) {
            int found = -1;
            for (int c = 2; c < nc && found < 0; c++)
                if (sqlite3_column_name(q, c) &&
                    !strcmp(sqlite3_column_name(q, c), job->source.keep_fields[i]))
                    found = c;
            if (found < 0) {
                char names[1024] = "";
                for (int c = 2; c < nc; c++)
                    snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s",
                             c > 2 ? ", " : "", sqlite3_column_name(q, c));
                ret = fmb_fail(err, FMB_EINVAL,
                               "%s: [source].keep_fields: '%s' is not a column of [source].query "
                               "after its key and text (those: %s)",
                               job->path, job->source.keep_fields[i], names[0] ? names : "none");
            }
            snprintf(kept + strlen(kept), sizeof kept - strlen(kept), ", c%d", found);
        }
        sqlite3_finalize(q);
        if (ret)
            goto fail;
    }
    size_t n = ql + 400 + 2 * sizeof cols + sizeof kept;
    sql = fmb_xmalloc(n);
    for (int which = 0; which < 2; which++) {
        snprintf(sql, n,
                 "WITH src(k, t%s) AS (%.*s), page AS (SELECT k, t%s FROM src %s ORDER BY k, t "
                 "LIMIT ?1 OFFSET ?2) SELECT k, t, k IS lag(k) OVER (ORDER BY k, t), k IS ?3%s "
                 "FROM page ORDER BY k, t",
                 cols, (int)ql, job->source.query, kept, which ? "WHERE k >= ?3" : "", kept);
        if (sqlite3_prepare_v2(s->db, sql, -1, which ? &s->after : &s->first, NULL) != SQLITE_OK) {
            int ec = sqlite3_errcode(s->db) & 0xff;
            if (ec == SQLITE_BUSY || ec == SQLITE_LOCKED || ec == SQLITE_IOERR ||
                ec == SQLITE_NOMEM || ec == SQLITE_CANTOPEN || ec == SQLITE_PERM)
                ret = fmb_fail(err, FMB_EIO, "%s: [source].database '%s': cannot read it: %s",
                               job->path, job->source.database, sqlite3_errmsg(s->db));
            else if (ec == SQLITE_NOTADB || ec == SQLITE_CORRUPT)
                ret = fmb_fail(err, FMB_EINVAL, "%s: [source].database '%s': %s", job->path,
                               job->source.database, sqlite3_errmsg(s->db));
            else
                ret = fmb_fail(err, FMB_EINVAL,
                               "%s: [source].query: %s (it must be one SELECT giving a key and "
                               "a text column, from [source].database '%s')",
                               job->path, sqlite3_errmsg(s->db), job->source.database);
            goto fail;
        }
    }
    // sql holds the page statement from a key on (the loop's last)
    if (page_sorts_all(s->db, sql))
        s->base.warning = fmb_src_fmt(
            "%s: [source].query: SQLite sorts the query's whole result for every page of %lld "
            "rows (no index on the key to seek to a page's first key), so reading N rows takes "
            "about N²/%lld row reads: index the key column, or use the table's INTEGER PRIMARY "
            "KEY (its rowid) as the key, or raise [source].page_rows",
            job->path, (long long)job->source.page_rows, 2 * (long long)job->source.page_rows);
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
