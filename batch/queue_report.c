/*
 * queue_report: the read side of the queue module (see queue.h) that `fmbatch report` needs:
 * per-task sums, score statistics and histograms, the best and worst documents, choice and
 * generate distributions. The aggregation is SQL; the formatting is batch/report.c's.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "batch/queue.h"
#include "batch/queue_impl.h"

static char *col_dup(sqlite3_stmt *st, int i, size_t *len)
{
    if (sqlite3_column_type(st, i) == SQLITE_NULL) {
        if (len)
            *len = 0;
        return NULL;
    }
    const char *t = (const char *)sqlite3_column_text(st, i);
    size_t n = (size_t)sqlite3_column_bytes(st, i);
    char *s = fmb_xmalloc(n + 1);
    memcpy(s, t, n);
    s[n] = 0;
    if (len)
        *len = n;
    return s;
}

static double col_real(sqlite3_stmt *st, int i)
{
    return sqlite3_column_type(st, i) == SQLITE_NULL ? NAN : sqlite3_column_double(st, i);
}

/* Prepares sql and binds ?1 = the job, ?2 = task. */
static fmb_status
prep(fmb_queue *q, const char *sql, const char *task, sqlite3_stmt **st, fmb_err *err)
{
    if (sqlite3_prepare_v2(q->db, sql, -1, st, NULL) != SQLITE_OK)
        return fmb_queue_sql_fail(q, err, "report");
    sqlite3_bind_text(*st, 1, q->job, -1, SQLITE_STATIC);
    if (task)
        sqlite3_bind_text(*st, 2, task, -1, SQLITE_STATIC);
    return FMB_OK;
}

/* Steps st to its end; a read error is a status, not a short answer. */
static fmb_status done(fmb_queue *q, sqlite3_stmt *st, int rc, fmb_err *err)
{
    fmb_status s = rc == SQLITE_DONE ? FMB_OK : fmb_queue_sql_fail(q, err, "report");
    sqlite3_finalize(st);
    return s;
}

fmb_status
fmb_queue_task_sum_get(fmb_queue *q, const char *task, fmb_queue_task_sum *out, fmb_err *err)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *st;
    fmb_status s = prep(q,
                        "SELECT status, count(*), sum(truncated), total(task_seconds) FROM result "
                        "WHERE job = ?1 AND task = ?2 GROUP BY status",
                        task, &st, err);
    if (s)
        return s;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *status = (const char *)sqlite3_column_text(st, 0);
        int64_t n = sqlite3_column_int64(st, 1);
        if (!strcmp(status, "ok"))
            out->ok = n;
        else
            out->skipped += n;
        out->truncated += sqlite3_column_int64(st, 2);
        out->seconds += sqlite3_column_double(st, 3);
    }
    return done(q, st, rc, err);
}

fmb_status fmb_queue_score_stats(
    fmb_queue *q, const char *task, fmb_queue_score_col col, fmb_queue_stats *out, fmb_err *err)
{
    out->n = 0;
    out->min = out->median = out->mean = out->max = NAN;
    /* the median: the middle one or two values of the ordered column, averaged */
    static const char *const sql[2] = {
#define STATS_SQL(c)                                                                               \
    "WITH v AS (SELECT " c " AS x FROM result WHERE job = ?1 AND task = ?2 AND " c                 \
    " IS NOT NULL), n AS (SELECT count(*) AS n FROM v) SELECT n, (SELECT min(x) FROM v), "         \
    "(SELECT avg(x) FROM (SELECT x FROM v ORDER BY x LIMIT 2 - (SELECT n FROM n) % 2 "             \
    "OFFSET ((SELECT n FROM n) - 1) / 2)), "                                                       \
    "(SELECT avg(x) FROM v), (SELECT max(x) FROM v) FROM n"
        STATS_SQL("bits_per_byte"), STATS_SQL("ppl")
#undef STATS_SQL
    };
    sqlite3_stmt *st;
    fmb_status s = prep(q, sql[col == FMB_QUEUE_PPL], task, &st, err);
    if (s)
        return s;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        out->n = sqlite3_column_int64(st, 0);
        out->min = col_real(st, 1);
        out->median = col_real(st, 2);
        out->mean = col_real(st, 3);
        out->max = col_real(st, 4);
        rc = sqlite3_step(st);
    }
    return done(q, st, rc, err);
}

fmb_status fmb_queue_score_hist(
    fmb_queue *q, const char *task, double lo, double hi, int bins, int64_t *counts, fmb_err *err)
{
    FMB_ASSERT(bins > 0);
    memset(counts, 0, (size_t)bins * sizeof *counts);
    sqlite3_stmt *st;
    fmb_status s =
        prep(q,
             "SELECT CASE WHEN ?4 <= ?3 THEN 0 ELSE max(0, min(?5 - 1, CAST((bits_per_byte - ?3) "
             "* ?5 / (?4 - ?3) AS INTEGER))) END AS bin, count(*) FROM result WHERE job = ?1 AND "
             "task = ?2 AND bits_per_byte IS NOT NULL GROUP BY bin",
             task, &st, err);
    if (s)
        return s;
    sqlite3_bind_double(st, 3, lo);
    sqlite3_bind_double(st, 4, hi);
    sqlite3_bind_int(st, 5, bins);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t b = sqlite3_column_int64(st, 0);
        FMB_ASSERT(b >= 0 && b < bins);
        counts[b] = sqlite3_column_int64(st, 1);
    }
    return done(q, st, rc, err);
}

void fmb_queue_docs_free(fmb_queue_doc *d, size_t n)
{
    for (size_t i = 0; d && i < n; i++) {
        free(d[i].key);
        free(d[i].content_hash);
        free(d[i].text);
        free(d[i].extract);
        free(d[i].finish_reason);
    }
    free(d);
}

/* Rows of (key, content_hash, tokens, truncated, bits_per_byte, ppl, text, extract,
 * finish_reason) into docs. */
static fmb_status read_docs(
    fmb_queue *q, sqlite3_stmt *st, size_t n, fmb_queue_doc **docs, size_t *n_docs, fmb_err *err)
{
    sqlite3_bind_int64(st, 3, (sqlite3_int64)n);
    fmb_queue_doc *d = fmb_xcalloc(n ? n : 1, sizeof *d);
    size_t k = 0;
    int rc = SQLITE_DONE;
    while (k < n && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        fmb_queue_doc *o = &d[k++];
        o->key = col_dup(st, 0, NULL);
        o->content_hash = col_dup(st, 1, NULL);
        o->tokens = sqlite3_column_type(st, 2) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 2);
        o->truncated = sqlite3_column_int(st, 3);
        o->bits_per_byte = col_real(st, 4);
        o->ppl = col_real(st, 5);
        o->text = col_dup(st, 6, &o->text_len);
        o->extract = col_dup(st, 7, NULL);
        o->finish_reason = col_dup(st, 8, NULL);
    }
    if (k == n)
        rc = SQLITE_DONE;
    fmb_status s = done(q, st, rc, err);
    if (s) {
        fmb_queue_docs_free(d, k);
        d = NULL;
        k = 0;
    }
    *docs = d;
    *n_docs = k;
    return s;
}

#define DOC_COLS                                                                                   \
    "SELECT r.item_key, i.content_hash, r.tokens, r.truncated, r.bits_per_byte, r.ppl, r.text, "   \
    "r.extract, r.finish_reason FROM result r JOIN item i ON i.item_id = r.item_id "

fmb_status fmb_queue_score_top(fmb_queue *q,
                               const char *task,
                               int worst,
                               size_t n,
                               fmb_queue_doc **docs,
                               size_t *n_docs,
                               fmb_err *err)
{
    *docs = NULL;
    *n_docs = 0;
    sqlite3_stmt *st;
    fmb_status s = prep(q,
                        worst ? DOC_COLS "WHERE r.job = ?1 AND r.task = ?2 AND r.bits_per_byte IS "
                                         "NOT NULL ORDER BY r.bits_per_byte DESC, r.item_key "
                                         "LIMIT ?3"
                              : DOC_COLS "WHERE r.job = ?1 AND r.task = ?2 AND r.bits_per_byte IS "
                                         "NOT NULL ORDER BY r.bits_per_byte, r.item_key LIMIT ?3",
                        task, &st, err);
    return s ? s : read_docs(q, st, n, docs, n_docs, err);
}

fmb_status fmb_queue_generate_rows(
    fmb_queue *q, const char *task, size_t n, fmb_queue_doc **docs, size_t *n_docs, fmb_err *err)
{
    *docs = NULL;
    *n_docs = 0;
    sqlite3_stmt *st;
    fmb_status s = prep(q,
                        DOC_COLS "WHERE r.job = ?1 AND r.task = ?2 AND r.status = 'ok' ORDER BY "
                                 "r.item_key LIMIT ?3",
                        task, &st, err);
    return s ? s : read_docs(q, st, n, docs, n_docs, err);
}

void fmb_queue_groups_free(fmb_queue_group *g, size_t n)
{
    for (size_t i = 0; g && i < n; i++)
        free(g[i].value);
    free(g);
}

fmb_status fmb_queue_groups(fmb_queue *q,
                            const char *task,
                            fmb_queue_by by,
                            fmb_queue_group **groups,
                            size_t *n_groups,
                            fmb_err *err)
{
    *groups = NULL;
    *n_groups = 0;
    static const char *const sql[3] = {
        "SELECT best_index, best, count(*) FROM result WHERE job = ?1 AND task = ?2 AND status "
        "= 'ok' GROUP BY best_index, best ORDER BY best_index, best",
        "SELECT -1, finish_reason AS v, count(*) FROM result WHERE job = ?1 AND task = ?2 AND "
        "status = 'ok' GROUP BY v ORDER BY count(*) DESC, v",
        "SELECT -1, CASE WHEN extract IS NULL OR NOT json_valid(extract) THEN 'no extract' WHEN "
        "json_extract(extract, '$.ok') THEN 'matched' ELSE 'no match' END AS v, count(*) FROM "
        "result WHERE job = ?1 AND task = ?2 AND status = 'ok' GROUP BY v ORDER BY count(*) "
        "DESC, v"};
    sqlite3_stmt *st;
    fmb_status s = prep(q, sql[by], task, &st, err);
    if (s)
        return s;
    size_t n = 0, cap = 0;
    fmb_queue_group *g = NULL;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? 2 * cap : 8;
            g = fmb_xrealloc(g, cap, sizeof *g);
        }
        g[n].index = sqlite3_column_type(st, 0) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 0);
        g[n].value = col_dup(st, 1, NULL);
        g[n].count = sqlite3_column_int64(st, 2);
        n++;
    }
    s = done(q, st, rc, err);
    if (s) {
        fmb_queue_groups_free(g, n);
        return s;
    }
    *groups = g;
    *n_groups = n;
    return FMB_OK;
}

int64_t fmb_queue_grown(const fmb_queue *q)
{
    return q->grown;
}

fmb_status
fmb_queue_item_tasks(fmb_queue *q, const char *key, char ***names, size_t *n, fmb_err *err)
{
    *names = NULL;
    *n = 0;
    sqlite3_stmt *st;
    fmb_status s =
        prep(q, "SELECT task FROM result WHERE job = ?1 AND item_key = ?2", key, &st, err);
    if (s)
        return s;
    int rc;
    size_t cap = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? 2 * cap : 4;
            *names = fmb_xrealloc(*names, cap, sizeof **names);
        }
        (*names)[(*n)++] = col_dup(st, 0, NULL);
    }
    if ((s = done(q, st, rc, err))) {
        for (size_t i = 0; i < *n; i++)
            free((*names)[i]);
        free(*names);
        *names = NULL;
        *n = 0;
    }
    return s;
}

/* One text column of the item row of key (sql selects it), or NULL. *out is the caller's. */
static fmb_status
item_column(fmb_queue *q, const char *sql, const char *key, char **out, fmb_err *err)
{
    *out = NULL;
    sqlite3_stmt *st;
    fmb_status s = prep(q, sql, key, &st, err);
    if (s)
        return s;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *out = col_dup(st, 0, NULL);
        rc = sqlite3_step(st);
    }
    s = done(q, st, rc, err);
    if (s) {
        free(*out);
        *out = NULL;
    }
    return s;
}

fmb_status fmb_queue_item_status(fmb_queue *q, const char *key, char **status, fmb_err *err)
{
    return item_column(q, "SELECT status FROM item WHERE job = ?1 AND key = ?2", key, status, err);
}

fmb_status fmb_queue_item_error(fmb_queue *q, const char *key, char **error, fmb_err *err)
{
    return item_column(q, "SELECT error FROM item WHERE job = ?1 AND key = ?2", key, error, err);
}
