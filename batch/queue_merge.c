/*
 * queue_merge: the SQL of `fmbatch merge` (batch/queue.h, "merging shards"): a shard's output
 * is ATTACHed to the merged output and its items and result rows copied in one transaction.
 * The column lists come from the merged file's own tables (both files carry the same schema
 * version, checked by the caller), so that a column added later needs no change here.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "batch/queue.h"
#include "batch/queue_impl.h"
#include "batch/shard.h"
#include "engine/hash.h"

static char *dup_col(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? fmb_xstrdup((const char *)t) : NULL;
}

fmb_status fmb_queue_file_info_read(const char *path, fmb_queue_file_info *info, fmb_err *err)
{
    memset(info, 0, sizeof *info);
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        fmb_status s = fmb_fail(err, FMB_EINVAL, "%s: cannot open: %s", path,
                                db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return s;
    }
    sqlite3_busy_timeout(db, 30000);
    fmb_status s = FMB_OK;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        info->schema_version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    st = NULL;
    if (info->schema_version < 1) {
        s = fmb_fail(err, FMB_EINVAL, "%s: not an fmbatch output file (%s)", path,
                     sqlite3_errmsg(db));
        goto out;
    }
    if (sqlite3_prepare_v2(db,
                           "SELECT key, value FROM meta WHERE key IN ('job_name', 'fingerprint', "
                           "'merged_shards', 'shard_count', 'source_complete')",
                           -1, &st, NULL) != SQLITE_OK) {
        s = fmb_fail(err, FMB_EIO, "%s: cannot read meta: %s", path, sqlite3_errmsg(db));
        goto out;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *k = (const char *)sqlite3_column_text(st, 0);
        if (!strcmp(k, "source_complete")) {
            info->complete = 1;
            continue;
        }
        char **dst = !strcmp(k, "job_name")        ? &info->job_name
                     : !strcmp(k, "fingerprint")   ? &info->fingerprint
                     : !strcmp(k, "merged_shards") ? &info->merged_shards
                                                   : &info->shard_count;
        free(*dst);
        *dst = dup_col(st, 1);
    }
    sqlite3_finalize(st);
    st = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT count(*), coalesce(sum(status IN ('pending', 'running')), 0) "
                           "FROM item",
                           -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW) {
        s = fmb_fail(err, FMB_EIO, "%s: cannot count the items: %s", path, sqlite3_errmsg(db));
        goto out;
    }
    info->items = sqlite3_column_int64(st, 0);
    info->unfinished = sqlite3_column_int64(st, 1);
out:
    sqlite3_finalize(st);
    sqlite3_close(db);
    if (s)
        fmb_queue_file_info_free(info);
    return s;
}

void fmb_queue_file_info_free(fmb_queue_file_info *info)
{
    free(info->job_name);
    free(info->fingerprint);
    free(info->merged_shards);
    free(info->shard_count);
    memset(info, 0, sizeof *info);
}

/* fmb_key_shard(key, n): batch/shard.h's partition, for the check that a file holds only its
 * shard's keys. */
static void sql_key_shard(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    const char *key = (const char *)sqlite3_value_text(argv[0]);
    sqlite3_result_int64(ctx, key ? fmb_shard_of(key, sqlite3_value_int64(argv[1])) : -1);
}

/* The columns of main.table, comma-separated; item_id left out (skip_id) or, for result,
 * taken from the merged item (mi.item_id). */
static char *columns(fmb_queue *q, const char *table, int skip_id, int prefix)
{
    char sql[128];
    snprintf(sql, sizeof sql, "PRAGMA main.table_info(%s)", table);
    sqlite3_stmt *st = NULL;
    fmb_sb b = {0};
    if (sqlite3_prepare_v2(q->db, sql, -1, &st, NULL) != SQLITE_OK)
        return NULL;
    int n = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *c = (const char *)sqlite3_column_text(st, 1);
        if (skip_id && !strcmp(c, "item_id"))
            continue;
        if (n++)
            fmb_sb_puts(&b, ", ");
        if (prefix)
            fmb_sb_printf(&b, "%s.\"%s\"", !strcmp(c, "item_id") ? "mi" : "r", c);
        else
            fmb_sb_printf(&b, "\"%s\"", c);
    }
    sqlite3_finalize(st);
    char *out = fmb_sb_take(&b);
    if (!n) {
        free(out);
        return NULL;
    }
    return out;
}

static int meta_put(fmb_queue *q, const char *key, const char *value)
{
    sqlite3_stmt *st = NULL;
    int ok =
        sqlite3_prepare_v2(q->db, "INSERT OR REPLACE INTO main.meta (key, value) VALUES (?1, ?2)",
                           -1, &st, NULL) == SQLITE_OK;
    if (ok) {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
        ok = sqlite3_step(st) == SQLITE_DONE;
    }
    sqlite3_finalize(st);
    return ok ? 0 : -1;
}

fmb_status fmb_queue_mark_complete(fmb_queue *q, int complete, fmb_err *err)
{
    char now[64];
    snprintf(now, sizeof now, "%.3f", (double)time(NULL));
    int bad = complete ? meta_put(q, "source_complete", now)
                       : sqlite3_exec(q->db, "DELETE FROM main.meta WHERE key = 'source_complete'",
                                      NULL, NULL, NULL) != SQLITE_OK;
    return bad ? fmb_queue_sql_fail(q, err, "cannot write meta") : FMB_OK;
}

/* The first row's first column of sql as text (NULL: no row); *bad on an error. */
static char *query_text(fmb_queue *q, const char *sql, int64_t a, int64_t b, int *bad)
{
    sqlite3_stmt *st = NULL;
    char *out = NULL;
    if (sqlite3_prepare_v2(q->db, sql, -1, &st, NULL) != SQLITE_OK) {
        *bad = 1;
        return NULL;
    }
    sqlite3_bind_int64(st, 1, a);
    sqlite3_bind_int64(st, 2, b);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        out = dup_col(st, 0);
    else if (rc != SQLITE_DONE)
        *bad = 1;
    sqlite3_finalize(st);
    return out;
}

fmb_status fmb_queue_merge_shard(fmb_queue *q,
                                 const char *shard_path,
                                 const char *fingerprint,
                                 int64_t index,
                                 int64_t count,
                                 const char *merged_shards,
                                 int64_t *items,
                                 int64_t *rows,
                                 fmb_err *err)
{
    *items = *rows = 0;
    sqlite3_create_function(q->db, "fmb_key_shard", 2, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL,
                            sql_key_shard, NULL, NULL);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(q->db, "ATTACH DATABASE ?1 AS s", -1, &st, NULL) != SQLITE_OK)
        return fmb_queue_sql_fail(q, err, "cannot attach the shard");
    sqlite3_bind_text(st, 1, shard_path, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return fmb_fail(err, FMB_EINVAL, "%s: cannot attach: %s", shard_path,
                        sqlite3_errmsg(q->db));
    fmb_status s = FMB_OK;
    char *icols = columns(q, "item", 1, 0), *rcols = columns(q, "result", 0, 0),
         *rsel = columns(q, "result", 0, 1), *sql = NULL;
    int bad = 0;
    if (!icols || !rcols || !rsel) {
        s = fmb_queue_sql_fail(q, err, "cannot read the tables' columns");
        goto detach;
    }
    if (sqlite3_exec(q->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        s = fmb_queue_sql_fail(q, err, "cannot lock");
        goto detach;
    }
    char *dup = query_text(q,
                           "SELECT si.key FROM s.item si JOIN main.item mi ON mi.job = si.job AND "
                           "mi.key = si.key ORDER BY si.key LIMIT 1",
                           0, 0, &bad);
    char *alien = bad || dup ? NULL
                             : query_text(q,
                                          "SELECT key FROM s.item WHERE fmb_key_shard(key, ?1) != "
                                          "?2 ORDER BY key LIMIT 1",
                                          count, index, &bad);
    if (bad)
        s = fmb_queue_sql_fail(q, err, "cannot compare the items");
    else if (dup)
        s = fmb_fail(err, FMB_EINVAL,
                     "%s: item '%s' is in %s already: refusing to merge an item twice (was this "
                     "shard, or an output with its items, merged before?)",
                     shard_path, dup, q->path);
    else if (alien)
        s = fmb_fail(err, FMB_EINVAL,
                     "%s: item '%s' does not belong to shard %" PRId64 "/%" PRId64
                     " (its key hashes to another shard): not a shard's own output",
                     shard_path, alien, index, count);
    free(dup);
    free(alien);
    if (s)
        goto rollback;
    char *had_fp =
        query_text(q, "SELECT value FROM main.meta WHERE key = 'fingerprint'", 0, 0, &bad);
    if (!had_fp && !bad) {
        /* a new merged output: the shard's identity, its fingerprint without the shard line */
        char h[33], now[64];
        fmb_hash_content(fingerprint, strlen(fingerprint), h);
        snprintf(now, sizeof now, "%.3f", (double)time(NULL));
        if (sqlite3_exec(q->db,
                         "INSERT OR REPLACE INTO main.meta (key, value) SELECT key, value "
                         "FROM s.meta",
                         NULL, NULL, NULL) != SQLITE_OK ||
            meta_put(q, "fingerprint", fingerprint) || meta_put(q, "fingerprint_hash", h) ||
            meta_put(q, "created_at", now))
            bad = 1;
    }
    free(had_fp);
    char cnt[32];
    snprintf(cnt, sizeof cnt, "%" PRId64, count);
    if (bad || meta_put(q, "merged_shards", merged_shards) || meta_put(q, "shard_count", cnt)) {
        s = fmb_queue_sql_fail(q, err, "cannot write meta");
        goto rollback;
    }
    fmb_sb b = {0};
    fmb_sb_printf(&b, "INSERT INTO main.item (%s) SELECT %s FROM s.item ORDER BY item_id", icols,
                  icols);
    sql = fmb_sb_take(&b);
    if (sqlite3_exec(q->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
        s = fmb_queue_sql_fail(q, err, "cannot copy the items");
        goto rollback;
    }
    *items = sqlite3_changes(q->db);
    free(sql);
    fmb_sb_printf(&b,
                  "INSERT INTO main.result (%s) SELECT %s FROM s.result r JOIN main.item mi ON "
                  "mi.job = r.job AND mi.key = r.item_key",
                  rcols, rsel);
    sql = fmb_sb_take(&b);
    if (sqlite3_exec(q->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
        s = fmb_queue_sql_fail(q, err, "cannot copy the results");
        goto rollback;
    }
    *rows = sqlite3_changes(q->db);
    if (sqlite3_exec(q->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        s = fmb_queue_sql_fail(q, err, "commit");
        goto rollback;
    }
    goto detach;
rollback:
    sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
    *items = *rows = 0;
detach:
    sqlite3_exec(q->db, "DETACH DATABASE s", NULL, NULL, NULL);
    free(sql);
    free(icols);
    free(rcols);
    free(rsel);
    return s;
}
