/*
 * queue_items: what the queue records about the documents beside the protocol of queue.c:
 * each item's doc_id and keep_fields meta (fmb_queue_item_info), and `prune` (the items of
 * documents the source no longer yields: counted, and removed with their results).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch/queue.h"
#include "batch/queue_impl.h"

fmb_status fmb_queue_item_info(
    fmb_queue *q, const char *key, const char *doc_id, const char *meta, fmb_err *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(q->db,
                           "UPDATE item SET doc_id = ?3, meta = ?4 WHERE job = ?1 AND key = ?2 "
                           "AND (doc_id IS NOT ?3 OR meta IS NOT ?4)",
                           -1, &st, NULL) != SQLITE_OK)
        return fmb_queue_sql_fail(q, err, "item info");
    sqlite3_bind_text(st, 1, q->job, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, doc_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, meta, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? FMB_OK : fmb_queue_sql_fail(q, err, "item info");
}

/* ---------------------------------------------------------------------------------------- */
/* prune: the source's keys go into a temporary table of this connection (nothing of the
 * output changes until fmb_queue_prune_finish applies), then the items not in it are the
 * stale ones. */

fmb_status fmb_queue_prune_start(fmb_queue *q, fmb_err *err)
{
    if (sqlite3_exec(q->db,
                     "DROP TABLE IF EXISTS temp.prune_seen; CREATE TEMP TABLE prune_seen (key "
                     "TEXT PRIMARY KEY) WITHOUT ROWID; BEGIN",
                     NULL, NULL, NULL) != SQLITE_OK)
        return fmb_queue_sql_fail(q, err, "prune");
    return FMB_OK;
}

fmb_status fmb_queue_prune_seen(fmb_queue *q, const char *key, fmb_err *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(q->db, "INSERT OR IGNORE INTO temp.prune_seen (key) VALUES (?1)", -1,
                           &st, NULL) != SQLITE_OK)
        return fmb_queue_sql_fail(q, err, "prune");
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? FMB_OK : fmb_queue_sql_fail(q, err, "prune");
}

#define STALE " FROM item WHERE job = ?1 AND key NOT IN (SELECT key FROM temp.prune_seen)"

/* One integer from sql (binding the job as ?1), or -1 after an error. */
static int64_t count_of(fmb_queue *q, const char *sql)
{
    sqlite3_stmt *st;
    int64_t v = -1;
    if (sqlite3_prepare_v2(q->db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, q->job, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* Runs sql (binding the job as ?1) to its end: 0, else -1. */
static int run_job(fmb_queue *q, const char *sql)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(q->db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, q->job, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

fmb_status fmb_queue_prune_finish(fmb_queue *q, int apply, char **json, fmb_err *err)
{
    *json = NULL;
    fmb_status s = FMB_OK;
    // the keys are in; the counts, the examples and the removal share one write transaction
    if (sqlite3_exec(q->db, "COMMIT; BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        s = fmb_queue_sql_fail(q, err, "prune");
        sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
        return s;
    }
    json_t *o = json_object();
    int64_t items = count_of(q, "SELECT count(*)" STALE);
    int64_t running = count_of(q, "SELECT count(*)" STALE " AND status = 'running'");
    int64_t results = count_of(q, "SELECT count(*) FROM result WHERE job = ?1 AND item_id IN "
                                  "(SELECT item_id" STALE " AND status != 'running')");
    json_t *by = json_object(), *ex = json_array();
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(q->db, "SELECT status, count(*)" STALE " GROUP BY status", -1, &st,
                                NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, q->job, -1, SQLITE_STATIC);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
            json_object_set_new(by, (const char *)sqlite3_column_text(st, 0),
                                json_integer(sqlite3_column_int64(st, 1)));
        sqlite3_finalize(st);
        rc = sqlite3_prepare_v2(q->db, "SELECT key" STALE " ORDER BY key LIMIT 20", -1, &st, NULL);
    }
    if (rc == SQLITE_DONE || rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, q->job, -1, SQLITE_STATIC);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
            json_array_append_new(ex, json_stringn((const char *)sqlite3_column_text(st, 0),
                                                   (size_t)sqlite3_column_bytes(st, 0)));
        sqlite3_finalize(st);
    }
    if (rc != SQLITE_DONE || items < 0 || running < 0 || results < 0)
        s = fmb_queue_sql_fail(q, err, "prune");
    /* a running item is another worker's: it is left to it (and counted apart) */
    if (!s && apply &&
        (run_job(q, "DELETE FROM result WHERE job = ?1 AND item_id IN (SELECT item_id" STALE
                    " AND status != 'running')") ||
         run_job(q, "DELETE" STALE " AND status != 'running'")))
        s = fmb_queue_sql_fail(q, err, "prune: remove");
    if (!s && sqlite3_exec(q->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        s = fmb_queue_sql_fail(q, err, "prune: commit");
    if (s)
        sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_exec(q->db, "DROP TABLE IF EXISTS temp.prune_seen", NULL, NULL, NULL);
    json_object_set_new(o, "stale_items", json_integer(items));
    json_object_set_new(o, "stale_results", json_integer(results));
    json_object_set_new(o, "running", json_integer(running));
    json_object_set_new(o, "by_status", by);
    json_object_set_new(o, "examples", ex);
    json_object_set_new(o, "removed", json_boolean(apply && !s));
    if (!s) {
        *json = json_dumps(o, JSON_COMPACT);
        FMB_ASSERT(*json);
    }
    json_decref(o);
    return s;
}
