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
#include "engine/tokenizer.h"

/* ---------------------------------------------------------------------------------------- */
/* UTF-8 */

static int utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t l = fmb_utf8_seq(p + i, n - i);
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
        size_t l = fmb_utf8_seq(p + i, n - i);
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

/* An export column: the table's (batch/result_cols.h) and the item's that export adds. sel is
 * its value in a result row (result r JOIN item i), failed in a failed item's row (item). */
typedef struct {
    const char *name;
    col_enc enc;
    const char *sel, *failed;
} col_info;

#define COL_INFO_(name, sql, enc, value, failed) {#name, ENC_##enc, "r." #name, failed},
static const col_info table_cols[FMB_RESULT_NCOLS] = {FMB_RESULT_COLUMNS(COL_INFO_)};
#define EXTRA_INFO_(name, enc, after, sel)  {#name, ENC_##enc, sel, sel},
#define EXTRA_AFTER_(name, enc, after, sel) #after,
static const col_info extra_cols[] = {FMB_EXPORT_EXTRA_COLUMNS(EXTRA_INFO_)};
static const char *const extra_after[] = {FMB_EXPORT_EXTRA_COLUMNS(EXTRA_AFTER_)};
#define N_EXTRA  (sizeof extra_cols / sizeof extra_cols[0])
#define N_EXPORT (FMB_RESULT_NCOLS + (int)N_EXTRA)

/* --wide: the columns that belong to the document (one value per row), not to a task; task and
 * kind are the group's name and the job's, so they are left out of the groups. */
static int doc_level(const char *name)
{
    static const char *const names[] = {"job",   "item_key",   "doc_id",         "item_id",
                                        "model", "model_hash", "tokenizer_hash", "fmbatch_version",
                                        "meta",  NULL};
    for (const char *const *n = names; *n; n++)
        if (!strcmp(*n, name))
            return 1;
    return 0;
}

/* One output value: column col of the row, for task (wide: its group; -1 the document), or
 * one field sub of its JSON object (wide: extract groups, meta fields). */
typedef struct {
    int col, task;
    char *sub;
    char *name;
    int hex; /* CSV: a <name>_hex column follows the others */
} slot;

struct fmb_queue_export {
    fmb_queue *q;
    sqlite3_stmt *st;
    fmb_export_opts o;
    col_info cols[N_EXPORT];
    int c_key, c_task, c_text, c_ids, c_extract, c_meta, c_status, c_note, c_order;
    int csv, header_done, done, wide;
    slot *slots;
    size_t n_slots;
    int *present;    /* [(n_tasks + 1) * N_EXPORT]: a non-NULL value seen (wide), invalid UTF-8
                      * seen (hex, bit 2); row 0 the document / narrow */
    char **specials; /* [n_specials] the special tokens' texts, by id order found */
    int32_t *special_ids;
    size_t n_specials;
    /* wide: the row being gathered */
    json_t **vals, **hexes;
    char *cur_key;
    int have_row;
    fmb_sb line;
};

static int col_index(const fmb_queue_export *x, const char *name)
{
    for (int i = 0; i < N_EXPORT; i++)
        if (!strcmp(x->cols[i].name, name))
            return i;
    return -1;
}

/* The query: the result rows (of the tasks asked for) joined with their items, and with
 * include_failed the failed/dead items padded to the same columns, ordered by item key and
 * then the job's task order (a last column, c_order: failed rows first, unknown tasks last). */
static fmb_status export_prepare(fmb_queue_export *x, fmb_err *err)
{
    const fmb_export_opts *o = &x->o;
    fmb_sb sql = {0}, order = {0}, filter = {0};
    fmb_sb_puts(&order, "CASE r.task");
    for (size_t t = 0; t < o->n_tasks; t++) {
        char *q = sqlite3_mprintf(" WHEN %Q THEN %d", o->tasks[t], (int)t);
        fmb_sb_puts(&order, q);
        sqlite3_free(q);
    }
    fmb_sb_printf(&order, " ELSE %d END", (int)o->n_tasks);
    if (!o->n_tasks) { /* CASE needs a WHEN */
        fmb_sb_clear(&order);
        fmb_sb_puts(&order, "0");
    }
    if (o->task_on) {
        fmb_sb_puts(&filter, " AND r.task IN (''");
        for (size_t t = 0; t < o->n_tasks; t++)
            if (o->task_on[t]) {
                char *q = sqlite3_mprintf(", %Q", o->tasks[t]);
                fmb_sb_puts(&filter, q);
                sqlite3_free(q);
            }
        fmb_sb_puts(&filter, ")");
    }
    fmb_sb_puts(&sql, "SELECT ");
    for (int i = 0; i < N_EXPORT; i++)
        fmb_sb_printf(&sql, "%s, ", x->cols[i].sel);
    fmb_sb_printf(&sql, "%s FROM result r JOIN item i ON i.item_id = r.item_id WHERE r.job = ?1%s",
                  order.buf, filter.len ? filter.buf : "");
    if (o->include_failed) {
        fmb_sb_puts(&sql, " UNION ALL SELECT ");
        for (int i = 0; i < N_EXPORT; i++)
            fmb_sb_printf(&sql, "%s, ", x->cols[i].failed);
        fmb_sb_puts(&sql, "-1 FROM item i WHERE job = ?1 AND status IN ('failed', 'dead')");
    }
    fmb_sb_printf(&sql, " ORDER BY %d, %d, %d", x->c_key + 1, N_EXPORT + 1, x->c_task + 1);
    int rc = sqlite3_prepare_v2(x->q->db, sql.buf, -1, &x->st, NULL);
    fmb_sb_free(&sql);
    fmb_sb_free(&order);
    fmb_sb_free(&filter);
    if (rc != SQLITE_OK)
        return fmb_queue_sql_fail(x->q, err, "export");
    sqlite3_bind_text(x->st, 1, x->q->job, -1, SQLITE_STATIC);
    FMB_ASSERT(sqlite3_column_count(x->st) == N_EXPORT + 1);
    x->c_order = N_EXPORT;
    return FMB_OK;
}

static int is_text_enc(col_enc e)
{
    return e == ENC_TEXT || e == ENC_JSON;
}

/* ---- numbers: the shortest text that reads back to the same value (docs/DECISIONS.md) ---- */

static void put_double(fmb_sb *b, double d)
{
    if (!isfinite(d)) {
        fmb_sb_puts(b, "null");
        return;
    }
    char t[40];
    for (int p = 15; p <= 17; p++) {
        snprintf(t, sizeof t, "%.*g", p, d);
        if (strtod(t, NULL) == d)
            break;
    }
    fmb_sb_puts(b, t);
    if (!strpbrk(t, ".eE")) /* stays a real for JSON readers: 2.0, not 2 */
        fmb_sb_puts(b, ".0");
}

static void put_float(fmb_sb *b, float f)
{
    if (!isfinite(f)) {
        fmb_sb_puts(b, "null");
        return;
    }
    char t[40];
    for (int p = 6; p <= 9; p++) {
        snprintf(t, sizeof t, "%.*g", p, (double)f);
        if (strtof(t, NULL) == f)
            break;
    }
    fmb_sb_puts(b, t);
    if (!strpbrk(t, ".eE"))
        fmb_sb_puts(b, ".0");
}

/* v as compact JSON; reals as put_double, or put_float when f32 (values stored as float32). */
static void emit(fmb_sb *b, json_t *v, int f32)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        int first = 1;
        fmb_sb_putc(b, '{');
        for (void *it = json_object_iter(v); it; it = json_object_iter_next(v, it)) {
            const char *k = json_object_iter_key(it);
            json_t *m = json_object_iter_value(it);
            json_t *ks = json_string(k);
            if (!first)
                fmb_sb_putc(b, ',');
            first = 0;
            emit(b, ks, f32);
            json_decref(ks);
            fmb_sb_putc(b, ':');
            emit(b, m, f32);
        }
        fmb_sb_putc(b, '}');
        break;
    }
    case JSON_ARRAY:
        fmb_sb_putc(b, '[');
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i)
                fmb_sb_putc(b, ',');
            emit(b, json_array_get(v, i), f32);
        }
        fmb_sb_putc(b, ']');
        break;
    case JSON_STRING: {
        char *t = json_dumps(v, JSON_ENCODE_ANY);
        FMB_ASSERT(t);
        fmb_sb_puts(b, t);
        free(t);
        break;
    }
    case JSON_INTEGER:
        fmb_sb_printf(b, "%lld", (long long)json_integer_value(v));
        break;
    case JSON_REAL:
        if (f32)
            put_float(b, (float)json_real_value(v));
        else
            put_double(b, json_real_value(v));
        break;
    case JSON_TRUE:
        fmb_sb_puts(b, "true");
        break;
    case JSON_FALSE:
        fmb_sb_puts(b, "false");
        break;
    default:
        fmb_sb_puts(b, "null");
    }
}

/* ---- values ---- */

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

/* The generated text without the special tokens its ids hold: each special id's text is cut
 * at its first occurrence from where the previous one was cut (the ids say how many there are
 * and in which order; a text that merely looks like one, made of ordinary tokens, stays). */
static void strip_specials(const fmb_queue_export *x, sqlite3_stmt *st, fmb_sb *out)
{
    const char *t = (const char *)sqlite3_column_text(st, x->c_text);
    size_t n = (size_t)sqlite3_column_bytes(st, x->c_text);
    fmb_sb_add(out, t, n);
    json_t *ids = NULL;
    if (sqlite3_column_type(st, x->c_ids) == SQLITE_TEXT)
        ids = json_loadb((const char *)sqlite3_column_text(st, x->c_ids),
                         (size_t)sqlite3_column_bytes(st, x->c_ids), 0, NULL);
    size_t pos = 0;
    for (size_t i = 0; json_is_array(ids) && i < json_array_size(ids); i++) {
        json_int_t id = json_integer_value(json_array_get(ids, i));
        for (size_t k = 0; k < x->n_specials; k++) {
            if (x->special_ids[k] != id)
                continue;
            size_t sl = strlen(x->specials[k]);
            for (size_t p = pos; sl && p + sl <= out->len; p++)
                if (!memcmp(out->buf + p, x->specials[k], sl)) {
                    memmove(out->buf + p, out->buf + p + sl, out->len - p - sl);
                    out->len -= sl;
                    out->buf[out->len] = 0;
                    pos = p;
                    break;
                }
        }
    }
    json_decref(ids);
}

/* Column i of the current row as a JSON value; *hex as json_text says. */
static json_t *column_json(const fmb_queue_export *x, sqlite3_stmt *st, int i, json_t **hex)
{
    *hex = NULL;
    const col_info *c = &x->cols[i];
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_INTEGER:
        return json_integer(sqlite3_column_int64(st, i));
    case SQLITE_FLOAT:
        return json_real(sqlite3_column_double(st, i));
    case SQLITE_TEXT: {
        const char *t = (const char *)sqlite3_column_text(st, i);
        size_t n = (size_t)sqlite3_column_bytes(st, i);
        json_t *v = NULL;
        if (c->enc == ENC_JSON)
            v = json_loadb(t, n, JSON_ALLOW_NUL, NULL);
        if (!v && i == x->c_text && x->n_specials) {
            fmb_sb b = {0};
            strip_specials(x, st, &b);
            v = json_text(b.buf ? b.buf : "", b.len, hex);
            fmb_sb_free(&b);
        }
        if (!v)
            v = json_text(t, n, hex);
        return v ? v : json_null();
    }
    case SQLITE_BLOB:
        if (c->enc == ENC_F32LE || c->enc == ENC_I32LE || c->enc == ENC_U32LE)
            return blob_json(c->enc, sqlite3_column_blob(st, i), sqlite3_column_bytes(st, i));
        return json_null();
    default:
        return json_null();
    }
}

/* The row's task as an index into the job's tasks (-1: a failed item's row, n_tasks: a task
 * the job does not have). */
static int row_task(const fmb_queue_export *x)
{
    return sqlite3_column_int(x->st, x->c_order);
}

static int *present_at(const fmb_queue_export *x, int task, int col)
{
    return &x->present[(size_t)(task + 1) * N_EXPORT + (size_t)col];
}

/* A name once in the list (the wide columns' field names, in the order first seen). */
static void add_name(char ***v, size_t *n, const char *name)
{
    for (size_t i = 0; i < *n; i++)
        if (!strcmp((*v)[i], name))
            return;
    *v = fmb_xrealloc(*v, *n + 1, sizeof **v);
    (*v)[(*n)++] = fmb_xstrdup(name);
}

static void add_slot(fmb_queue_export *x, int col, int task, const char *sub, const char *name)
{
    x->slots = fmb_xrealloc(x->slots, x->n_slots + 1, sizeof *x->slots);
    slot *s = &x->slots[x->n_slots++];
    s->col = col;
    s->task = task;
    s->sub = sub ? fmb_xstrdup(sub) : NULL;
    s->name = fmb_xstrdup(name);
    s->hex = x->csv && !sub && (*present_at(x, x->wide ? task : -1, col) & 2);
}

/* The first pass: which values there are (CSV: the header must name the _hex columns before the
 * first row; wide: the column groups and the extract and meta fields), then the columns. */
static fmb_status export_plan(fmb_queue_export *x, const int *want, size_t n_want, fmb_err *err)
{
    size_t nt = x->o.n_tasks;
    x->present = fmb_xcalloc((nt + 2) * N_EXPORT, sizeof *x->present);
    char ***fields = fmb_xcalloc(nt + 1, sizeof *fields); /* [0] meta, [1 + t] extract of t */
    size_t *n_fields = fmb_xcalloc(nt + 1, sizeof *n_fields);
    int rc;
    while ((rc = sqlite3_step(x->st)) == SQLITE_ROW) {
        int t = row_task(x);
        if (t > (int)nt)
            t = (int)nt;
        for (int i = 0; i < N_EXPORT; i++) {
            int type = sqlite3_column_type(x->st, i);
            int tt = x->wide && !doc_level(x->cols[i].name) ? t : -1;
            int *p = present_at(x, tt, i);
            if (type != SQLITE_NULL)
                *p |= 1;
            if (type == SQLITE_TEXT && is_text_enc(x->cols[i].enc) &&
                !utf8_valid((const char *)sqlite3_column_text(x->st, i),
                            (size_t)sqlite3_column_bytes(x->st, i)))
                *p |= 2;
            if (x->wide && type == SQLITE_TEXT && (i == x->c_meta || i == x->c_extract)) {
                json_t *v = json_loadb((const char *)sqlite3_column_text(x->st, i),
                                       (size_t)sqlite3_column_bytes(x->st, i), 0, NULL);
                size_t f = i == x->c_meta ? 0 : (size_t)t + 1;
                for (void *it = json_is_object(v) && f <= nt ? json_object_iter(v) : NULL; it;
                     it = json_object_iter_next(v, it))
                    add_name(&fields[f], &n_fields[f], json_object_iter_key(it));
                json_decref(v);
            }
        }
    }
    fmb_status s = FMB_OK;
    if (rc != SQLITE_DONE)
        s = fmb_queue_sql_fail(x->q, err, "export");
    sqlite3_reset(x->st);
    char name[600];
    if (!x->wide) {
        for (size_t w = 0; w < n_want; w++)
            add_slot(x, want[w], -1, NULL, x->cols[want[w]].name);
    } else {
        for (size_t w = 0; w < n_want; w++) {
            int c = want[w];
            if (!doc_level(x->cols[c].name))
                continue;
            if (c != x->c_meta) {
                add_slot(x, c, -1, NULL, x->cols[c].name);
                continue;
            }
            for (size_t f = 0; f < n_fields[0]; f++) {
                snprintf(name, sizeof name, "meta.%s", fields[0][f]);
                add_slot(x, c, -1, fields[0][f], name);
            }
        }
        for (size_t t = 0; t < nt; t++) {
            if (x->o.task_on && !x->o.task_on[t])
                continue;
            for (size_t w = 0; w < n_want; w++) {
                int c = want[w];
                const char *cn = x->cols[c].name;
                if (doc_level(cn) || c == x->c_task || !strcmp(cn, "kind"))
                    continue;
                /* a group's status is always there; a failed item's row fills its note too */
                if (!(*present_at(x, (int)t, c) & 1) && c != x->c_status &&
                    !(c == x->c_note && (*present_at(x, -1, x->c_note) & 1)))
                    continue;
                if (c != x->c_extract) {
                    snprintf(name, sizeof name, "%s.%s", x->o.tasks[t], cn);
                    add_slot(x, c, (int)t, NULL, name);
                    continue;
                }
                for (size_t f = 0; f < n_fields[t + 1]; f++) {
                    const char *k = fields[t + 1][f];
                    if (!strcmp(k, "ok"))
                        snprintf(name, sizeof name, "%s.fields_ok", x->o.tasks[t]);
                    else
                        snprintf(name, sizeof name, "%s.fields.%s", x->o.tasks[t], k);
                    add_slot(x, c, (int)t, k, name);
                }
            }
        }
    }
    for (size_t f = 0; f <= nt; f++) {
        for (size_t i = 0; i < n_fields[f]; i++)
            free(fields[f][i]);
        free(fields[f]);
    }
    free(fields);
    free(n_fields);
    x->vals = fmb_xcalloc(x->n_slots + 1, sizeof *x->vals);
    x->hexes = fmb_xcalloc(x->n_slots + 1, sizeof *x->hexes);
    return s;
}

fmb_status
fmb_queue_export_open(fmb_queue *q, const fmb_export_opts *o, fmb_queue_export **out, fmb_err *err)
{
    *out = NULL;
    fmb_queue_export *x = fmb_xcalloc(1, sizeof *x);
    x->q = q;
    x->o = *o;
    x->csv = o->format == FMB_EXPORT_CSV;
    x->wide = o->wide;
    int n = 0;
    for (int i = 0; i < FMB_RESULT_NCOLS; i++) {
        x->cols[n++] = table_cols[i];
        for (size_t e = 0; e < N_EXTRA; e++)
            if (!strcmp(extra_after[e], table_cols[i].name))
                x->cols[n++] = extra_cols[e];
    }
    FMB_ASSERT(n == N_EXPORT);
    x->c_key = col_index(x, "item_key");
    x->c_task = col_index(x, "task");
    x->c_text = col_index(x, "text");
    x->c_ids = col_index(x, "ids");
    x->c_extract = col_index(x, "extract");
    x->c_meta = col_index(x, "meta");
    x->c_status = col_index(x, "status");
    x->c_note = col_index(x, "note");
    /* the columns asked for, by name */
    int want[N_EXPORT * 4];
    size_t n_want = 0;
    fmb_status s = FMB_OK;
    if (!o->columns) {
        for (int i = 0; i < N_EXPORT; i++)
            want[n_want++] = i;
    } else {
        const char *p = o->columns;
        while (!s && *p) {
            size_t l = strcspn(p, ",");
            int c = -1;
            for (int i = 0; i < N_EXPORT && c < 0; i++)
                if (strlen(x->cols[i].name) == l && !memcmp(x->cols[i].name, p, l))
                    c = i;
            if (c < 0) {
                fmb_sb b = {0};
                for (int i = 0; i < N_EXPORT; i++)
                    fmb_sb_printf(&b, "%s%s", i ? ", " : "", x->cols[i].name);
                s = fmb_fail(err, FMB_EINVAL, "--columns: unknown column '%.*s' (columns: %s)",
                             (int)l, p, b.buf);
                fmb_sb_free(&b);
            } else if (n_want < sizeof want / sizeof want[0]) {
                want[n_want++] = c;
            }
            p += l + (p[l] == ',');
        }
        if (!s && !n_want)
            s = fmb_fail(err, FMB_EINVAL, "--columns: no column named");
    }
    /* special tokens: their texts, to cut from generated text */
    for (int32_t id = 0; !s && o->tok && id < fmb_tok_vocab_size(o->tok); id++) {
        if (!fmb_tok_is_special(o->tok, id))
            continue;
        char *t = NULL;
        size_t tl = 0;
        fmb_err de;
        if (fmb_tok_decode(o->tok, &id, 1, 0, &t, &tl, &de) || !tl) {
            free(t);
            continue;
        }
        x->specials = fmb_xrealloc(x->specials, x->n_specials + 1, sizeof *x->specials);
        x->special_ids = fmb_xrealloc(x->special_ids, x->n_specials + 1, sizeof *x->special_ids);
        x->specials[x->n_specials] = t;
        x->special_ids[x->n_specials++] = id;
    }
    if (!s)
        s = export_prepare(x, err);
    if (!s)
        s = export_plan(x, want, n_want, err);
    if (s) {
        fmb_queue_export_close(x);
        return s;
    }
    *out = x;
    return FMB_OK;
}

static void clear_vals(fmb_queue_export *x)
{
    for (size_t i = 0; i < x->n_slots; i++) {
        json_decref(x->vals[i]);
        json_decref(x->hexes[i]);
        x->vals[i] = x->hexes[i] = NULL;
    }
    x->have_row = 0;
}

void fmb_queue_export_close(fmb_queue_export *x)
{
    if (!x)
        return;
    sqlite3_finalize(x->st);
    if (x->vals)
        clear_vals(x);
    free(x->vals);
    free(x->hexes);
    for (size_t i = 0; i < x->n_slots; i++) {
        free(x->slots[i].sub);
        free(x->slots[i].name);
    }
    free(x->slots);
    for (size_t i = 0; i < x->n_specials; i++)
        free(x->specials[i]);
    free(x->specials);
    free(x->special_ids);
    free(x->present);
    free(x->cur_key);
    fmb_sb_free(&x->line);
    free(x);
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

static void csv_value(fmb_sb *b, json_t *v, int f32)
{
    if (json_is_string(v)) {
        csv_field(b, json_string_value(v), json_string_length(v));
    } else if (v && !json_is_null(v)) {
        fmb_sb t = {0};
        emit(&t, v, f32);
        csv_field(b, t.buf, t.len);
        fmb_sb_free(&t);
    }
}

static int slot_f32(const fmb_queue_export *x, const slot *s)
{
    return x->cols[s->col].enc == ENC_F32LE;
}

/* The gathered values as one line into x->line. */
static void put_line(fmb_queue_export *x)
{
    fmb_sb *b = &x->line;
    if (x->csv) {
        for (size_t i = 0; i < x->n_slots; i++) {
            if (i)
                fmb_sb_putc(b, ',');
            csv_value(b, x->vals[i], slot_f32(x, &x->slots[i]));
        }
        for (size_t i = 0; i < x->n_slots; i++)
            if (x->slots[i].hex) {
                fmb_sb_putc(b, ',');
                csv_value(b, x->hexes[i], 0);
            }
    } else {
        fmb_sb_putc(b, '{');
        for (size_t i = 0; i < x->n_slots; i++) {
            json_t *k = json_string(x->slots[i].name);
            if (i)
                fmb_sb_putc(b, ',');
            emit(b, k, 0);
            json_decref(k);
            fmb_sb_putc(b, ':');
            if (x->vals[i])
                emit(b, x->vals[i], slot_f32(x, &x->slots[i]));
            else
                fmb_sb_puts(b, "null");
            if (x->hexes[i]) {
                fmb_sb_printf(b, ",\"%s_hex\":", x->slots[i].name);
                emit(b, x->hexes[i], 0);
            }
        }
        fmb_sb_putc(b, '}');
    }
    fmb_sb_putc(b, '\n');
    clear_vals(x);
}

/* The current row's values into the slots they fill (narrow: every slot; wide: the document's
 * once, and the groups of the row's task, or of every task for a failed item's row). */
static void gather(fmb_queue_export *x)
{
    int t = row_task(x);
    for (size_t i = 0; i < x->n_slots; i++) {
        const slot *s = &x->slots[i];
        if (x->wide) {
            if (s->task < 0
                    ? x->vals[i] != NULL
                    : (t >= 0 ? s->task != t : (s->col != x->c_status && s->col != x->c_note)) ||
                          x->vals[i])
                continue;
        }
        json_t *hex = NULL;
        json_t *v = column_json(x, x->st, s->col, &hex);
        if (s->sub) {
            json_t *m = json_is_object(v) ? json_object_get(v, s->sub) : NULL;
            json_t *keep = m ? json_incref(m) : NULL;
            json_decref(v);
            v = keep;
        }
        x->vals[i] = v;
        x->hexes[i] = hex;
    }
    x->have_row = 1;
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
        for (size_t i = 0; i < x->n_slots; i++) {
            if (i)
                fmb_sb_putc(b, ',');
            csv_field(b, x->slots[i].name, strlen(x->slots[i].name));
        }
        for (size_t i = 0; i < x->n_slots; i++)
            if (x->slots[i].hex)
                fmb_sb_printf(b, ",%s_hex", x->slots[i].name);
        fmb_sb_putc(b, '\n');
        *line = b->buf;
        *len = b->len;
        return FMB_OK;
    }
    for (;;) {
        int rc = sqlite3_step(x->st);
        if (rc != SQLITE_ROW) {
            x->done = 1;
            if (rc != SQLITE_DONE)
                return fmb_queue_sql_fail(x->q, err, "export");
            if (x->have_row) /* wide: the last document */
                put_line(x);
            break;
        }
        if (!x->wide) {
            gather(x);
            put_line(x);
            break;
        }
        const char *k = (const char *)sqlite3_column_text(x->st, x->c_key);
        int same = x->cur_key && k && !strcmp(x->cur_key, k);
        if (x->have_row && !same)
            put_line(x);
        if (!same) {
            free(x->cur_key);
            x->cur_key = fmb_xstrdup(k ? k : "");
        }
        gather(x);
        if (b->len)
            break;
    }
    if (b->len) {
        *line = b->buf;
        *len = b->len;
    }
    return FMB_OK;
}
