/*
 * queue_results: the read side of the queue module (see queue.h): the failure groups of
 * `status` and the rows of `export`, decoded into JSON/CSV values by the column list
 * (batch/result_cols.h).
 *
 * Text that is not valid UTF-8 (item keys from file names, mostly) cannot be a JSON string;
 * it is exported escaped and with its raw bytes in hex (queue.h, docs/DECISIONS.md).
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch/queue.h"
#include "batch/queue_impl.h"

/* ---------------------------------------------------------------------------------------- */
/* UTF-8 */

/* Length of the valid UTF-8 sequence at s[0..n) (1..4), or 0 (overlong forms, surrogates and
 * code points over U+10FFFF are invalid, as for jansson). */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned cp, min;
    if ((c & 0xe0) == 0xc0)
        len = 2, cp = c & 0x1f, min = 0x80;
    else if ((c & 0xf0) == 0xe0)
        len = 3, cp = c & 0x0f, min = 0x800;
    else if ((c & 0xf8) == 0xf0)
        len = 4, cp = c & 0x07, min = 0x10000;
    else
        return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

static int utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_seq(p + i, n - i);
        if (!l)
            return 0;
        i += l;
    }
    return 1;
}

/* The escaped form of s[0..n), which is not valid UTF-8: '\' -> "\\", each byte that starts
 * no valid sequence -> "\xHH" (lower-case hex), everything else as it is. Reversible: read
 * "\\" as '\' and "\xHH" as the byte. */
static void utf8_escape(const char *s, size_t n, fmb_sb *out)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_seq(p + i, n - i);
        if (l == 1 && p[i] == '\\')
            fmb_sb_puts(out, "\\\\");
        else if (l)
            fmb_sb_add(out, p + i, l);
        else
            fmb_sb_printf(out, "\\x%02x", p[i]);
        i += l ? l : 1;
    }
}

static void hex_of(const char *s, size_t n, fmb_sb *out)
{
    for (size_t i = 0; i < n; i++)
        fmb_sb_printf(out, "%02x", (unsigned char)s[i]);
}

/* A JSON string for s[0..n); for text that is not valid UTF-8 the escaped form, and *hex
 * (when non-NULL) receives the raw bytes in hex (else it is set to NULL). */
static json_t *json_text(const char *s, size_t n, json_t **hex)
{
    if (hex)
        *hex = NULL;
    if (utf8_valid(s, n))
        return json_stringn(s, n);
    fmb_sb b = {0};
    utf8_escape(s, n, &b);
    json_t *v = json_stringn(b.buf, b.len);
    if (hex) {
        fmb_sb_clear(&b);
        hex_of(s, n, &b);
        *hex = json_stringn(b.buf, b.len);
    }
    fmb_sb_free(&b);
    return v;
}

/* ---------------------------------------------------------------------------------------- */
/* status: failure groups */

fmb_status fmb_queue_failures_json(fmb_queue *q, char **json, fmb_err *err)
{
    *json = NULL;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(q->db,
                           "SELECT substr(error, 1, instr(error || ':', ':') - 1) AS reason, "
                           "count(*), min(key) FROM item WHERE job = ?1 AND status IN "
                           "('failed', 'dead') GROUP BY reason ORDER BY count(*) DESC",
                           -1, &st, NULL) != SQLITE_OK)
        return fmb_queue_sql_fail(q, err, "failures");
    sqlite3_bind_text(st, 1, q->job, -1, SQLITE_STATIC);
    json_t *a = json_array();
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *o = json_object();
        static const char *const names[2][2] = {{"reason", "reason_hex"},
                                                {"example", "example_hex"}};
        for (int c = 0; c < 2; c++) {
            int col = c ? 2 : 0;
            const char *t = (const char *)sqlite3_column_text(st, col);
            size_t n = (size_t)sqlite3_column_bytes(st, col);
            json_t *hex;
            json_object_set_new(o, names[c][0], json_text(t ? t : "", t ? n : 0, &hex));
            if (hex)
                json_object_set_new(o, names[c][1], hex);
            if (!c)
                json_object_set_new(o, "count", json_integer(sqlite3_column_int64(st, 1)));
        }
        json_array_append_new(a, o);
    }
    fmb_status s = FMB_OK;
    if (rc != SQLITE_DONE)
        s = fmb_queue_sql_fail(q, err, "failures");
    sqlite3_finalize(st);
    if (!s) {
        *json = json_dumps(a, JSON_COMPACT);
        FMB_ASSERT(*json);
    }
    json_decref(a);
    return s;
}

/* ---------------------------------------------------------------------------------------- */
/* export */

typedef enum { ENC_TEXT, ENC_JSON, ENC_INT, ENC_REAL, ENC_F32LE, ENC_I32LE, ENC_U32LE } col_enc;

typedef struct {
    const char *name;
    col_enc enc;
} col_info;

#define COL_INFO_(name, sql, enc, value, failed) {#name, ENC_##enc},
static const col_info cols[FMB_RESULT_NCOLS] = {FMB_RESULT_COLUMNS(COL_INFO_)};

#define COL_NAME_(name, sql, enc, value, failed)   ", " #name
#define COL_FAILED_(name, sql, enc, value, failed) ", " failed
static const char col_names[] = FMB_RESULT_COLUMNS(COL_NAME_);
static const char col_failed[] = FMB_RESULT_COLUMNS(COL_FAILED_);

struct fmb_queue_export {
    fmb_queue *q;
    sqlite3_stmt *st;
    int csv, header_done, done;
    int hex_col[FMB_RESULT_NCOLS]; /* CSV: columns that get a <name>_hex column */
    int n_hex;
    fmb_sb line;
};

/* The query: the result rows, and with include_failed the failed/dead items padded to the
 * same columns (col_failed), ordered by item key and task. */
static fmb_status export_prepare(fmb_queue *q, int include_failed, sqlite3_stmt **st, fmb_err *err)
{
    fmb_sb sql = {0};
    fmb_sb_printf(&sql, "SELECT %s FROM result WHERE job = ?1", col_names + 2);
    if (include_failed)
        fmb_sb_printf(&sql,
                      " UNION ALL SELECT %s FROM item WHERE job = ?1 AND status IN ('failed', "
                      "'dead') ORDER BY 2, 3",
                      col_failed + 2);
    else
        fmb_sb_puts(&sql, " ORDER BY item_key, task");
    int rc = sqlite3_prepare_v2(q->db, sql.buf, -1, st, NULL);
    fmb_sb_free(&sql);
    if (rc != SQLITE_OK)
        return fmb_queue_sql_fail(q, err, "export");
    sqlite3_bind_text(*st, 1, q->job, -1, SQLITE_STATIC);
    FMB_ASSERT(sqlite3_column_count(*st) == FMB_RESULT_NCOLS);
    return FMB_OK;
}

static int is_text_enc(col_enc e)
{
    return e == ENC_TEXT || e == ENC_JSON;
}

fmb_status fmb_queue_export_open(fmb_queue *q,
                                 fmb_export_format format,
                                 int include_failed,
                                 fmb_queue_export **out,
                                 fmb_err *err)
{
    *out = NULL;
    fmb_queue_export *x = fmb_xcalloc(1, sizeof *x);
    x->q = q;
    x->csv = format == FMB_EXPORT_CSV;
    fmb_status s = export_prepare(q, include_failed, &x->st, err);
    if (!s && x->csv) {
        /* A first pass finds the text columns holding invalid UTF-8 somewhere: the header
         * must name their _hex columns before the first row. */
        int rc;
        while ((rc = sqlite3_step(x->st)) == SQLITE_ROW)
            for (int i = 0; i < FMB_RESULT_NCOLS; i++)
                if (!x->hex_col[i] && is_text_enc(cols[i].enc) &&
                    sqlite3_column_type(x->st, i) == SQLITE_TEXT) {
                    const char *t = (const char *)sqlite3_column_text(x->st, i);
                    if (!utf8_valid(t, (size_t)sqlite3_column_bytes(x->st, i))) {
                        x->hex_col[i] = 1;
                        x->n_hex++;
                    }
                }
        if (rc != SQLITE_DONE)
            s = fmb_queue_sql_fail(q, err, "export");
        sqlite3_reset(x->st);
    }
    if (s) {
        fmb_queue_export_close(x);
        return s;
    }
    *out = x;
    return FMB_OK;
}

void fmb_queue_export_close(fmb_queue_export *x)
{
    if (!x)
        return;
    sqlite3_finalize(x->st);
    fmb_sb_free(&x->line);
    free(x);
}

/* A blob of 4-byte little-endian values as a JSON array. */
static json_t *blob_json(col_enc enc, const void *p, int n)
{
    json_t *a = json_array();
    const unsigned char *b = p;
    for (int i = 0; i + 4 <= n; i += 4) {
        uint32_t u = (uint32_t)b[i] | (uint32_t)b[i + 1] << 8 | (uint32_t)b[i + 2] << 16 |
                     (uint32_t)b[i + 3] << 24;
        if (enc == ENC_F32LE) {
            float f;
            memcpy(&f, &u, 4);
            json_array_append_new(a, isfinite(f) ? json_real(f) : json_null());
        } else if (enc == ENC_U32LE) {
            json_array_append_new(a, json_integer((json_int_t)u));
        } else {
            int32_t v;
            memcpy(&v, &u, 4);
            json_array_append_new(a, json_integer(v));
        }
    }
    return a;
}

/* Column i of the current row as a JSON value; *hex as json_text says. */
static json_t *column_json(sqlite3_stmt *st, int i, json_t **hex)
{
    *hex = NULL;
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_INTEGER:
        return json_integer(sqlite3_column_int64(st, i));
    case SQLITE_FLOAT:
        return json_real(sqlite3_column_double(st, i));
    case SQLITE_TEXT: {
        const char *t = (const char *)sqlite3_column_text(st, i);
        size_t n = (size_t)sqlite3_column_bytes(st, i);
        json_t *v = NULL;
        if (cols[i].enc == ENC_JSON)
            v = json_loadb(t, n, JSON_ALLOW_NUL, NULL);
        if (!v)
            v = json_text(t, n, hex);
        return v ? v : json_null();
    }
    case SQLITE_BLOB:
        if (cols[i].enc == ENC_F32LE || cols[i].enc == ENC_I32LE || cols[i].enc == ENC_U32LE)
            return blob_json(cols[i].enc, sqlite3_column_blob(st, i), sqlite3_column_bytes(st, i));
        return json_null();
    default:
        return json_null();
    }
}

/* One CSV field (RFC 4180: quoted when it holds a comma, quote, CR or LF). */
static void csv_field(fmb_sb *b, const char *s, size_t n)
{
    int quote = 0;
    for (size_t i = 0; i < n && !quote; i++)
        quote = s[i] == ',' || s[i] == '"' || s[i] == '\r' || s[i] == '\n';
    if (!quote) {
        fmb_sb_add(b, s, n);
        return;
    }
    fmb_sb_putc(b, '"');
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"')
            fmb_sb_putc(b, '"');
        fmb_sb_putc(b, s[i]);
    }
    fmb_sb_putc(b, '"');
}

static void csv_value(fmb_sb *b, json_t *v)
{
    if (json_is_string(v)) {
        csv_field(b, json_string_value(v), json_string_length(v));
    } else if (!json_is_null(v)) {
        char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
        FMB_ASSERT(t);
        csv_field(b, t, strlen(t));
        free(t);
    }
}

fmb_status fmb_queue_export_next(fmb_queue_export *x, const char **line, size_t *len, fmb_err *err)
{
    *line = NULL;
    *len = 0;
    fmb_sb *b = &x->line;
    fmb_sb_clear(b);
    if (x->done)
        return FMB_OK;
    if (x->csv && !x->header_done) {
        x->header_done = 1;
        for (int i = 0; i < FMB_RESULT_NCOLS; i++) {
            if (i)
                fmb_sb_putc(b, ',');
            csv_field(b, cols[i].name, strlen(cols[i].name));
        }
        for (int i = 0; i < FMB_RESULT_NCOLS; i++)
            if (x->hex_col[i])
                fmb_sb_printf(b, ",%s_hex", cols[i].name);
        fmb_sb_putc(b, '\n');
        *line = b->buf;
        *len = b->len;
        return FMB_OK;
    }
    int rc = sqlite3_step(x->st);
    if (rc != SQLITE_ROW) {
        x->done = 1;
        return rc == SQLITE_DONE ? FMB_OK : fmb_queue_sql_fail(x->q, err, "export");
    }
    if (x->csv) {
        json_t *hexes[FMB_RESULT_NCOLS] = {0};
        for (int i = 0; i < FMB_RESULT_NCOLS; i++) {
            json_t *v = column_json(x->st, i, &hexes[i]);
            if (i)
                fmb_sb_putc(b, ',');
            csv_value(b, v);
            json_decref(v);
        }
        for (int i = 0; i < FMB_RESULT_NCOLS; i++) {
            if (x->hex_col[i]) {
                fmb_sb_putc(b, ',');
                if (hexes[i])
                    csv_value(b, hexes[i]);
            }
            json_decref(hexes[i]);
        }
        fmb_sb_putc(b, '\n');
    } else {
        json_t *o = json_object();
        for (int i = 0; i < FMB_RESULT_NCOLS; i++) {
            json_t *hex;
            json_object_set_new(o, cols[i].name, column_json(x->st, i, &hex));
            if (hex) {
                char name[64];
                snprintf(name, sizeof name, "%s_hex", cols[i].name);
                json_object_set_new(o, name, hex);
            }
        }
        char *t = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(17));
        FMB_ASSERT(t);
        fmb_sb_puts(b, t);
        fmb_sb_putc(b, '\n');
        free(t);
        json_decref(o);
    }
    *line = b->buf;
    *len = b->len;
    return FMB_OK;
}
