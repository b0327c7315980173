/* test_batch_queue: the SQLite queue protocol: claims, skips, content changes, orphaned leases
 * (owner gone: reclaimed at once; owner alive: busy), dead after max_attempts, release without
 * an attempt, fenced completion, the fingerprint guard. */
#include <glob.h>
#include <math.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "batch/queue.h"
#include "batch/schema.h"
#include "engine/hash.h"
#include "tests/check.h"

static char path[256];

/* The tests look at and poke the file through a connection of their own (the queue keeps
 * its connection to itself). q only says which queue the statement is about. */
static const char *side_path; /* NULL: path */
static sqlite3 *side_db(void)
{
    sqlite3 *db = NULL;
    const char *p = side_path ? side_path : path;
    if (sqlite3_open_v2(p, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        printf("NOTE cannot open %s\n", p);
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 10000);
    sqlite3_exec(db, "PRAGMA foreign_keys = ON", NULL, NULL, NULL);
    return db;
}

static int64_t one(fmb_queue *q, const char *sql)
{
    (void)q;
    sqlite3 *db = side_db();
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    if (db && sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static void exec(fmb_queue *q, const char *sql)
{
    (void)q;
    sqlite3 *db = side_db();
    if (db)
        sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_close(db);
}

static int claim(fmb_queue *q, const char *key, const char *hash, int64_t *id)
{
    fmb_claim c;
    fmb_err err;
    int64_t tmp;
    if (fmb_queue_claim(q, key, hash, 3, &c, id ? id : &tmp, &err)) {
        printf("NOTE claim: %s\n", err.msg);
        return -1;
    }
    return (int)c;
}

static int complete(fmb_queue *q, int64_t id, const char *key)
{
    fmb_err err;
    fmb_result_row r = fmb_result_row_empty();
    r.task = "t";
    r.kind = "score";
    r.sum_nll = 1.5;
    int lost = 0;
    if (fmb_queue_begin(q, &err) || fmb_queue_add_result(q, id, key, &r, &err) ||
        fmb_queue_finish(q, id, 10, 0.1, &lost, &err)) {
        printf("NOTE complete: %s\n", err.msg);
        return -1;
    }
    return lost;
}

/* The result table is spelled out in schemas/001_init.sql (and byte for byte in batch/schema.c,
 * test_batch_job checks) and in batch/result_cols.h: both must name the same columns, in the
 * same order, with the same declarations; the created table must have them too. */
typedef struct {
    const char *name, *sql;
} col_decl;
#define DECL_(name, sql, enc, value, failed) {#name, sql},
static const col_decl x_cols[] = {FMB_RESULT_COLUMNS(DECL_)};
#define NX ((int)(sizeof x_cols / sizeof x_cols[0]))

static void squeeze(char *s) /* runs of blanks to one space, trimmed, trailing ',' dropped */
{
    char *w = s;
    for (char *r = s; *r; r++) {
        if (*r == ' ' || *r == '\t') {
            if (w > s && w[-1] != ' ')
                *w++ = ' ';
        } else {
            *w++ = *r;
        }
    }
    while (w > s && (w[-1] == ' ' || w[-1] == ','))
        w--;
    *w = 0;
}

static void test_schema_columns(void)
{
    size_t len;
    char *sql = check_read_file("schemas/001_init.sql", &len);
    if (!check(sql != NULL, "schema: read schemas/001_init.sql", "%s", ""))
        return;
    char *p = strstr(sql, "CREATE TABLE IF NOT EXISTS result (\n");
    int n = 0, bad = 0;
    char why[512] = "";
    if (p) {
        p = strchr(p, '\n') + 1;
        while (*p && strncmp(p, "    PRIMARY KEY", 15)) {
            char *e = strchr(p, '\n');
            if (!e)
                break;
            *e = 0;
            char *c = strstr(p, "--");
            if (c)
                *c = 0;
            squeeze(p);
            if (*p) {
                char *sp = strchr(p, ' ');
                const char *decl = sp ? sp + 1 : "";
                if (sp)
                    *sp = 0;
                if (n >= NX || strcmp(p, x_cols[n].name) || strcmp(decl, x_cols[n].sql)) {
                    if (!bad)
                        snprintf(why, sizeof why,
                                 "column %d: .sql '%s %s' vs result_cols.h '%s %s'", n + 1, p, decl,
                                 n < NX ? x_cols[n].name : "(none)", n < NX ? x_cols[n].sql : "");
                    bad = 1;
                }
                n++;
            }
            p = e + 1;
        }
    }
    check(p && !bad && n == NX && NX == FMB_RESULT_NCOLS,
          "schema: 001_init.sql result columns equal result_cols.h", "%s (%d vs %d columns)", why,
          n, NX);
    free(sql);
    /* The table SQLite made from the embedded schema. */
    sqlite3 *db = side_db();
    sqlite3_stmt *st = NULL;
    int i = 0;
    bad = 0;
    if (db && sqlite3_prepare_v2(db, "SELECT name FROM pragma_table_info('result') ORDER BY cid",
                                 -1, &st, NULL) == SQLITE_OK)
        for (; sqlite3_step(st) == SQLITE_ROW; i++)
            if (i >= NX || strcmp((const char *)sqlite3_column_text(st, 0), x_cols[i].name))
                bad = 1;
    sqlite3_finalize(st);
    sqlite3_close(db);
    check(!bad && i == NX, "schema: created result table has the listed columns", "%d columns", i);
}

/* Every field lands in its column (the binds come from the column list). */
static void test_row_binds(fmb_queue *q)
{
    fmb_err err;
    int64_t id;
    if (claim(q, "binds", "h", &id) != FMB_CLAIM_TAKEN)
        return;
    fmb_result_row r = fmb_result_row_empty();
    float nll[2] = {1.5f, 2.5f};
    r.task = "t";
    r.kind = "generate";
    r.note = "N";
    r.doc_tokens = 11;
    r.truncated = 1;
    r.prompt_tokens = 12;
    r.tokens = 13;
    r.ppl = 4.5;
    r.token_nll = nll;
    r.token_nll_bytes = sizeof nll;
    r.best = "B";
    r.best_index = 2;
    r.text = "T\0x";
    r.text_len = 3;
    r.finish_reason = "stop";
    r.seed = 77;
    r.task_seconds = 0.25;
    int lost = 0;
    int ok = !fmb_queue_begin(q, &err) && !fmb_queue_add_result(q, id, "binds", &r, &err) &&
             !fmb_queue_finish(q, id, 10, 0.1, &lost, &err) && !lost;
    ok = ok && one(q, "SELECT count(*) FROM result WHERE item_key = 'binds' AND task = 't' AND "
                      "kind = 'generate' AND status = 'ok' AND note = 'N' AND doc_tokens = 11 AND "
                      "truncated = 1 AND prompt_tokens = 12 AND tokens = 13 AND sum_nll IS NULL "
                      "AND ppl = 4.5 AND length(token_nll) = 8 AND token_rank IS NULL AND best = "
                      "'B' AND best_index = 2 AND hex(text) = '540078' AND finish_reason = "
                      "'stop' AND seed = 77 AND task_seconds = 0.25 AND prefill_seconds IS NULL "
                      "AND model = 'm' AND fmbatch_version IS NOT NULL AND finished_at > 0") == 1;
    check(ok, "result row: every field in its column", "%s", err.msg);
}

/* Export of a key that is not valid UTF-8: escaped, with the raw bytes in item_key_hex. */
static void test_export_bad_utf8(fmb_queue *q)
{
    fmb_err err;
    int64_t id;
    const char *key = "k\xff\\\xc3(";
    if (claim(q, key, "h", &id) != FMB_CLAIM_TAKEN || complete(q, id, key) != 0)
        return;
    for (int csv = 0; csv < 2; csv++) {
        fmb_queue_export *x = NULL;
        int found = 0, lines = 0, hex_header = 0;
        const char *line;
        size_t len;
        fmb_export_opts xo = {.format = csv ? FMB_EXPORT_CSV : FMB_EXPORT_JSONL};
        if (!fmb_queue_export_open(q, &xo, &x, &err))
            while (!fmb_queue_export_next(x, &line, &len, &err) && line) {
                if (csv && lines == 0)
                    hex_header = strstr(line, ",item_key_hex\n") != NULL;
                else if (csv)
                    found += strstr(line, ",k\\xff\\\\\\xc3(,") && strstr(line, ",6bff5cc328\n");
                else
                    found += strstr(line, "\"item_key\":\"k\\\\xff\\\\\\\\\\\\xc3(\","
                                          "\"item_key_hex\":\"6bff5cc328\"") != NULL;
                lines++;
            }
        fmb_queue_export_close(x);
        check(found == 1 && (!csv || hex_header),
              csv ? "export csv: invalid UTF-8 key escaped, item_key_hex column"
                  : "export jsonl: invalid UTF-8 key escaped, item_key_hex field",
              "found %d, header %d, %d lines", found, hex_header, lines);
    }
}

/* All export lines of a separate file's queue with opts xo, concatenated (caller frees). */
static char *export_all(fmb_queue *q, const fmb_export_opts *xo, fmb_status *st, fmb_err *err)
{
    fmb_queue_export *x = NULL;
    fmb_sb b = {0};
    const char *line;
    size_t len;
    *st = fmb_queue_export_open(q, xo, &x, err);
    while (!*st && !(*st = fmb_queue_export_next(x, &line, &len, err)) && line)
        fmb_sb_add(&b, line, len);
    fmb_queue_export_close(x);
    fmb_sb_putc(&b, 0);
    return fmb_sb_take(&b);
}

/* Export: numbers in their shortest round-trip text (a REAL as a double, a float32 blob as
 * floats), rows in the job's task order (not alphabetical), doc_id and meta from the item,
 * --columns in its order, an unknown column refused naming the valid ones, --wide groups, and
 * --task. */
static void test_export_options(void)
{
    char p2[300];
    snprintf(p2, sizeof p2, "%s.export", path);
    unlink(p2);
    fmb_queue *q = NULL;
    fmb_err err;
    if (fmb_queue_open(p2, "job", 1, 2, 600, &q, &err))
        return;
    fmb_claim c;
    int64_t id;
    int lost = 0;
    float nll[2] = {0.1f, 1.0f / 3};
    fmb_status s = fmb_queue_claim(q, "f.jsonl#d1", "h", 3, &c, &id, &err);
    if (!s)
        s = fmb_queue_item_info(q, "f.jsonl#d1", "d1", "{\"lang\":\"en\",\"n\":null}", &err);
    if (!s)
        s = fmb_queue_begin(q, &err);
    const char *tasks[] = {"zeta", "alpha"};
    for (int t = 0; t < 2 && !s; t++) {
        fmb_result_row r = fmb_result_row_empty();
        r.task = tasks[1 - t]; /* written alphabetically first */
        r.kind = "score";
        r.sum_nll = 0.1;
        r.mean_nll = 1.0 / 3;
        r.token_nll = nll;
        r.token_nll_bytes = sizeof nll;
        s = fmb_queue_add_result(q, id, "f.jsonl#d1", &r, &err);
    }
    if (!s)
        s = fmb_queue_finish(q, id, 10, 0.1, &lost, &err);
    fmb_export_opts xo = {
        .tasks = tasks, .n_tasks = 2, .columns = "task,sum_nll,mean_nll,token_nll,doc_id,meta"};
    char *all = s ? NULL : export_all(q, &xo, &s, &err);
    const char *want = "{\"task\":\"zeta\",\"sum_nll\":0.1,\"mean_nll\":0.3333333333333333,"
                       "\"token_nll\":[0.1,0.33333334],\"doc_id\":\"d1\",\"meta\":{\"lang\":\"en\","
                       "\"n\":null}}\n{\"task\":\"alpha\",";
    check(!s && all && !strncmp(all, want, strlen(want)),
          "export: shortest numbers, job task order, doc_id, meta, --columns order", "%s",
          s ? err.msg : all);
    free(all);
    xo.columns = "task,nope";
    all = export_all(q, &xo, &s, &err);
    check(s == FMB_EINVAL && strstr(err.msg, "'nope'") && strstr(err.msg, "item_key, doc_id"),
          "export: an unknown column is refused, naming the valid ones", "%s", err.msg);
    free(all);
    unsigned char on[2] = {0, 1};
    fmb_export_opts wo = {.tasks = tasks,
                          .n_tasks = 2,
                          .wide = 1,
                          .format = FMB_EXPORT_CSV,
                          .task_on = on,
                          .columns = "item_key,mean_nll,meta"};
    all = export_all(q, &wo, &s, &err);
    check(!s && all &&
              !strcmp(all, "item_key,meta.lang,meta.n,alpha.mean_nll\n"
                           "f.jsonl#d1,en,,0.3333333333333333\n"),
          "export --wide --task alpha --format csv: one row, a group per task, meta fields", "%s",
          s ? err.msg : all);
    free(all);
    fmb_queue_close(q);
    unlink(p2);
}

/* prune: the items (and results) whose key the source did not yield are counted, and removed
 * with apply; the others stay. */
static void test_prune(void)
{
    char p2[300];
    snprintf(p2, sizeof p2, "%s.prune", path);
    unlink(p2);
    fmb_queue *q = NULL;
    fmb_err err;
    if (fmb_queue_open(p2, "job", 1, 2, 600, &q, &err))
        return;
    int64_t id;
    side_path = p2;
    int ok = 1;
    for (const char *const *k = (const char *const[]){"keep", "gone1", "gone2", NULL}; *k; k++)
        ok &= claim(q, *k, "h", &id) == FMB_CLAIM_TAKEN && complete(q, id, *k) == 0;
    char *j1 = NULL, *j2 = NULL;
    ok = ok && !fmb_queue_prune_start(q, &err) && !fmb_queue_prune_seen(q, "keep", &err) &&
         !fmb_queue_prune_finish(q, 0, &j1, &err);
    int64_t left1 = one(q, "SELECT count(*) FROM item");
    ok = ok && !fmb_queue_prune_start(q, &err) && !fmb_queue_prune_seen(q, "keep", &err) &&
         !fmb_queue_prune_finish(q, 1, &j2, &err);
    check(ok && j1 && strstr(j1, "\"stale_items\":2") && strstr(j1, "\"stale_results\":2") &&
              strstr(j1, "\"removed\":false") && left1 == 3,
          "prune reports the items gone from the source, removes nothing", "%s", j1 ? j1 : err.msg);
    check(ok && j2 && strstr(j2, "\"removed\":true") && one(q, "SELECT count(*) FROM item") == 1 &&
              one(q, "SELECT count(*) FROM result") == 1 &&
              one(q, "SELECT count(*) FROM item WHERE key = 'keep'") == 1,
          "prune --apply removes them and their results, keeps the rest", "%s", j2 ? j2 : err.msg);
    free(j1);
    free(j2);
    side_path = NULL;
    fmb_queue_close(q);
    unlink(p2);
}

/* Worker files of path's workers still on disk. */
static size_t worker_files(void)
{
    char pat[300];
    snprintf(pat, sizeof pat, "%s.worker-*", path);
    glob_t g;
    size_t n = glob(pat, 0, NULL, &g) == 0 ? g.gl_pathc : 0;
    globfree(&g);
    return n;
}

/* A child worker (its own connection, a worker file) claims `work` and marks it in progress,
 * claims `hold` without starting it (NULL: none), then dies: how 0 abort(), 1 SIGSEGV, 2
 * SIGKILL (from outside, as kill -9 or the OOM killer would). Returns the signal it died of. */
static int child_dies(const char *work, const char *hold, int how)
{
    fflush(stdout);
    pid_t p = fork();
    if (p == 0) {
        struct rlimit rl = {0, 0};
        setrlimit(RLIMIT_CORE, &rl); /* no core file from the crashes below */
        fmb_queue *c = NULL;
        fmb_err e;
        fmb_claim cl;
        int64_t id;
        if (fmb_queue_open(path, "job", 0, 2, 600, &c, &e) || fmb_queue_worker_start(c, &e) ||
            fmb_queue_claim(c, work, "h", 1, &cl, &id, &e) || cl != FMB_CLAIM_TAKEN)
            _exit(90);
        fmb_queue_working(c, id, 1);
        if (hold && (fmb_queue_claim(c, hold, "h", 1, &cl, &id, &e) || cl != FMB_CLAIM_TAKEN))
            _exit(91);
        if (how == 0)
            abort();
        else if (how == 1)
            raise(SIGSEGV);
        else
            kill(getpid(), SIGKILL);
        _exit(92);
    }
    int st = 0;
    waitpid(p, &st, 0);
    return WIFSIGNALED(st) ? WTERMSIG(st) : -WEXITSTATUS(st);
}

/* Deaths and attempts (queue.h): a crash counts against the item in progress, an outside kill
 * and a held item do not; kills are bounded by fmb_queue_kill_limit; worker files go away. */
static void deaths(fmb_queue *q)
{
    int sig = child_dies("d1", "d2", 0);
    check(sig == SIGABRT && worker_files() == 1,
          "a crashing worker dies of its signal, its file stays", "signal %d, %zu files", sig,
          worker_files());
    check(claim(q, "d1", "h", NULL) == FMB_CLAIM_TAKEN &&
              one(q, "SELECT attempts FROM item WHERE key = 'd1'") == 2 &&
              one(q, "SELECT kills FROM item WHERE key = 'd1'") == 0,
          "a crash counts an attempt for the item in progress", "attempts %lld",
          (long long)one(q, "SELECT attempts FROM item WHERE key = 'd1'"));
    check(claim(q, "d2", "h", NULL) == FMB_CLAIM_TAKEN &&
              one(q, "SELECT attempts FROM item WHERE key = 'd2'") == 1 &&
              one(q, "SELECT kills FROM item WHERE key = 'd2'") == 0,
          "a crash counts nothing for an item only held", "attempts %lld",
          (long long)one(q, "SELECT attempts FROM item WHERE key = 'd2'"));
    check(worker_files() == 0, "the dead worker's file goes with its last lease", "%zu",
          worker_files());
    sig = child_dies("d3", NULL, 2);
    check(sig == SIGKILL && claim(q, "d3", "h", NULL) == FMB_CLAIM_TAKEN &&
              one(q, "SELECT attempts FROM item WHERE key = 'd3'") == 1 &&
              one(q, "SELECT kills FROM item WHERE key = 'd3'") == 1,
          "kill -9 counts a kill, not an attempt", "signal %d attempts %lld kills %lld", sig,
          (long long)one(q, "SELECT attempts FROM item WHERE key = 'd3'"),
          (long long)one(q, "SELECT kills FROM item WHERE key = 'd3'"));
    /* three outside kills in a row (max_attempts is 2): still taken */
    for (int i = 0; i < 3; i++) /* each child reclaims the last one's orphan */
        child_dies("d4", NULL, 2);
    check(claim(q, "d4", "h", NULL) == FMB_CLAIM_TAKEN &&
              one(q, "SELECT kills FROM item WHERE key = 'd4'") == 3,
          "repeated kills are not attempts", "kills %lld",
          (long long)one(q, "SELECT kills FROM item WHERE key = 'd4'"));
    /* the kill limit: dead at the limit's kill, with a reason saying so */
    char sql[200];
    snprintf(sql, sizeof sql, "UPDATE item SET status = 'pending', kills = %d WHERE key = 'd3'",
             fmb_queue_kill_limit(2) - 1);
    exec(q, sql);
    child_dies("d3", NULL, 2);
    fmb_claim c;
    int64_t id;
    fmb_err err;
    int ok = !fmb_queue_claim(q, "d3", "h", 1, &c, &id, &err) && c == FMB_CLAIM_DEAD;
    sqlite3_stmt *st = NULL;
    char why[300] = "";
    sqlite3 *db = side_db();
    if (db &&
        sqlite3_prepare_v2(db, "SELECT error FROM item WHERE key = 'd3'", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
        snprintf(why, sizeof why, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(db);
    check(ok && fmb_queue_kill_limit(2) == 20 && strstr(why, "killed from outside 20 times"),
          "dead after kill_limit kills, saying so", "claim %d: %s", (int)c, why);
    /* crashes: max_attempts (2) of them make the item dead, as before */
    exec(q, "UPDATE item SET status = 'pending', attempts = 0 WHERE key = 'd5'");
    child_dies("d5", NULL, 1);
    int c1 = claim(q, "d5", "h", NULL);
    exec(q, "UPDATE item SET status = 'pending', attempts = 1 WHERE key = 'd5'");
    child_dies("d5", NULL, 1);
    int c2 = claim(q, "d5", "h", NULL);
    check(c1 == FMB_CLAIM_TAKEN && c2 == FMB_CLAIM_DEAD,
          "dead after max_attempts crashes (SIGSEGV)", "claims %d %d", c1, c2);
    /* a worker that closes cleanly leaves no file */
    fmb_queue *w = NULL;
    if (!fmb_queue_open(path, "job", 0, 2, 600, &w, &err) && !fmb_queue_worker_start(w, &err)) {
        size_t during = worker_files();
        fmb_queue_close(w);
        check(during == 1 && worker_files() == 0, "a clean close removes the worker file",
              "%zu then %zu", during, worker_files());
    }
    for (const char *const *k = (const char *const[]){"d1", "d2", "d3", "d4", "d5", NULL}; *k;
         k++) {
        snprintf(sql, sizeof sql, "DELETE FROM item WHERE key = '%s'", *k);
        exec(q, sql);
    }
}

/* A version-1 file (before item.kills) and a version-2 file (before item.doc_id and
 * item.meta) open: migrated to version 3, their items kept. */
static void migration(void)
{
    for (int from = 1; from <= 2; from++) {
        char p1[300];
        snprintf(p1, sizeof p1, "%s.v%d", path, from);
        unlink(p1);
        sqlite3 *db = NULL;
        sqlite3_open(p1, &db);
        int rc = sqlite3_exec(db, fmb_schema_sql, NULL, NULL, NULL);
        if (from == 2)
            rc |= sqlite3_exec(db, fmb_schema_sql_2, NULL, NULL, NULL);
        char sql[300];
        snprintf(sql, sizeof sql,
                 "PRAGMA user_version = %d; INSERT INTO item (job, key, status, attempts, "
                 "enqueued_at) VALUES ('job', 'old', 'pending', 1, 0)",
                 from);
        rc |= sqlite3_exec(db, sql, NULL, NULL, NULL);
        sqlite3_close(db);
        fmb_queue *q = NULL;
        fmb_err err;
        fmb_status s = fmb_queue_open(p1, "job", 0, 2, 600, &q, &err);
        side_path = p1;
        check(rc == SQLITE_OK && s == FMB_OK && one(q, "PRAGMA user_version") == 3 &&
                  one(q, "SELECT kills FROM item WHERE key = 'old'") == 0 &&
                  one(q, "SELECT count(*) FROM item WHERE key = 'old' AND doc_id IS NULL AND "
                         "meta IS NULL") == 1 &&
                  claim(q, "old", "h", NULL) == FMB_CLAIM_TAKEN,
              from == 1 ? "a version-1 file is migrated to version 3"
                        : "a version-2 file is migrated to version 3",
              "%s", s ? err.msg : "");
        side_path = NULL;
        fmb_queue_close(q);
        unlink(p1);
    }
    const char *files[] = {FMB_SCHEMA_FILE_2, FMB_SCHEMA_FILE_3};
    const char *texts[] = {fmb_schema_sql_2, fmb_schema_sql_3};
    for (int i = 0; i < 2; i++) {
        size_t len = 0;
        char *file = check_read_file(files[i], &len);
        check(file && len == strlen(texts[i]) && !memcmp(file, texts[i], len),
              i ? "embedded migration equals " FMB_SCHEMA_FILE_3
                : "embedded migration equals " FMB_SCHEMA_FILE_2,
              "lengths %zu vs %zu", len, strlen(texts[i]));
        free(file);
    }
}

int main(void)
{
    snprintf(path, sizeof path, "/tmp/fmb_queue_%d.db", (int)getpid());
    unlink(path);
    fmb_queue *q = NULL;
    fmb_err err;
    if (!check(fmb_queue_open(path, "job", 1, 2, 600, &q, &err) == FMB_OK, "open creates", "%s",
               err.msg))
        return check_exit();
    check(one(q, "PRAGMA user_version") == 3 && one(q, "SELECT count(*) FROM item") == 0 &&
              one(q, "SELECT count(*) FROM pragma_table_info('item') WHERE name = 'kills'") == 1 &&
              one(q, "SELECT count(*) FROM pragma_table_info('item') WHERE name IN ('doc_id', "
                     "'meta')") == 2,
          "schema version 3 (item.kills, item.doc_id, item.meta)", "%s", "");
    check(fmb_queue_bind_job(q, "a = 1\nb = 2\n", "m", "mh", "th", &err) == FMB_OK,
          "first run stores the fingerprint", "%s", err.msg);
    check(fmb_queue_bind_job(q, "a = 1\nb = 2\n", "m", "mh", "th", &err) == FMB_OK,
          "same fingerprint accepted", "%s", err.msg);
    fmb_status s = fmb_queue_bind_job(q, "a = 1\nb = 3\n", "m", "mh", "th", &err);
    check(s == FMB_EINVAL && strstr(err.msg, "- b = 2") && strstr(err.msg, "+ b = 3"),
          "changed fingerprint refused with the difference", "%s", err.msg);

    int64_t id = -1, id2 = -1;
    test_schema_columns();
    test_row_binds(q);
    test_export_bad_utf8(q);
    test_export_options();
    test_prune();
    exec(q, "DELETE FROM item WHERE key NOT LIKE 'k_'"); /* the counts below start clean */
    check(claim(q, "k1", "h1", &id) == FMB_CLAIM_TAKEN, "new key is taken", "%s", "");
    check(claim(q, "k1", "h1", NULL) == FMB_CLAIM_BUSY, "own live lease is busy", "%s", "");
    check(complete(q, id, "k1") == 0, "complete writes rows and done", "%s", "");
    check(claim(q, "k1", "h1", NULL) == FMB_CLAIM_DONE, "done key with the same content skipped",
          "%s", "");
    check(one(q, "SELECT count(*) FROM result") == 1, "one result row", "%s", "");
    check(claim(q, "k1", "h2", &id2) == FMB_CLAIM_TAKEN && id2 == id &&
              one(q, "SELECT count(*) FROM result") == 0 &&
              one(q, "SELECT attempts FROM item WHERE key = 'k1'") == 1,
          "changed content is taken again, old rows dropped", "%s", "");
    check(complete(q, id2, "k1") == 0 && one(q, "SELECT count(*) FROM result") == 1,
          "redo completes", "%s", "");

    /* An orphaned lease: the owner pid does not exist -> reclaimed at once. */
    check(claim(q, "k2", "h", &id) == FMB_CLAIM_TAKEN, "k2 taken", "%s", "");
    exec(q, "UPDATE item SET lease_pid = 999999999 WHERE key = 'k2'");
    check(claim(q, "k2", "h", &id2) == FMB_CLAIM_TAKEN &&
              one(q, "SELECT attempts FROM item WHERE key = 'k2'") == 2,
          "lease of a dead process is reclaimed at once", "%s", "");
    /* attempts == max_attempts (2) and the owner dies again -> dead */
    exec(q, "UPDATE item SET lease_pid = 999999999 WHERE key = 'k2'");
    check(claim(q, "k2", "h", NULL) == FMB_CLAIM_DEAD &&
              one(q, "SELECT count(*) FROM item WHERE key = 'k2' AND status = 'dead'") == 1,
          "dead after max_attempts", "%s", "");
    check(claim(q, "k2", "h", NULL) == FMB_CLAIM_FAILED, "dead item skipped", "%s", "");

    /* A live owner on this host (pid 1 exists) with a valid lease: busy. With an expired lease:
     * reclaimed. A lease from another host: busy until expiry. */
    check(claim(q, "k3", "h", &id) == FMB_CLAIM_TAKEN, "k3 taken", "%s", "");
    exec(q, "UPDATE item SET lease_pid = 1, lease_start = (SELECT lease_start FROM item WHERE "
            "key='k3') WHERE key = 'k3'");
    int64_t start1 = -1;
    {
        FILE *f = fopen("/proc/1/stat", "r");
        char buf[1024] = "";
        if (f) {
            size_t n = fread(buf, 1, sizeof buf - 1, f);
            buf[n] = 0;
            fclose(f);
        }
        char *p = strrchr(buf, ')');
        for (int i = 2; p && i < 22; i++)
            p = strchr(p + 1, ' ');
        if (p)
            start1 = strtoll(p + 1, NULL, 10);
    }
    char sql[200];
    snprintf(sql, sizeof sql, "UPDATE item SET lease_start = %lld WHERE key = 'k3'",
             (long long)start1);
    exec(q, sql);
    int cl = claim(q, "k3", "h", NULL);
    check(cl == FMB_CLAIM_BUSY, "live owner's lease is respected", "claim %d, start %lld", cl,
          (long long)start1);
    exec(q, "UPDATE item SET lease_expires = 0 WHERE key = 'k3'");
    check(claim(q, "k3", "h", &id) == FMB_CLAIM_TAKEN, "expired lease is reclaimed", "%s", "");
    exec(q, "UPDATE item SET lease_host = 'elsewhere', lease_pid = 999999999 WHERE key = 'k3'");
    check(claim(q, "k3", "h", NULL) == FMB_CLAIM_BUSY, "another host's lease waits for expiry",
          "%s", "");
    exec(q, "UPDATE item SET lease_token = 12345 WHERE key = 'k3'"); /* another worker's */
    /* A late completion after the lease was stolen is fenced off. */
    check(complete(q, id, "k3") == 1 && one(q, "SELECT count(*) FROM result WHERE item_key = "
                                               "'k3'") == 0,
          "completion after a lost lease is rolled back", "%s", "");

    deaths(q);

    /* release: back to pending, the attempt not counted */
    check(claim(q, "k4", "h", &id) == FMB_CLAIM_TAKEN, "k4 taken", "%s", "");
    check(fmb_queue_release(q, id, &err) == FMB_OK &&
              one(q, "SELECT attempts FROM item WHERE key = 'k4'") == 0 &&
              one(q, "SELECT count(*) FROM item WHERE key = 'k4' AND status = 'pending'") == 1,
          "release counts no attempt", "attempts %lld, pending %lld",
          (long long)one(q, "SELECT attempts FROM item WHERE key = 'k4'"),
          (long long)one(q, "SELECT count(*) FROM item WHERE key = 'k4' AND status = 'pending'"));
    int64_t n = -1;
    check(fmb_queue_claimable(q, &n, &err) == FMB_OK && n == 1, "claimable counts pending", "%lld",
          (long long)n);
    /* failures from the source and from tasks */
    int rec = 0;
    check(fmb_queue_fail_key(q, "bad!entry", "corrupt entry: CRC", &rec, &err) == FMB_OK &&
              rec == 1,
          "source failure recorded", "%s", err.msg);
    check(fmb_queue_fail_key(q, "bad!entry", "corrupt entry: CRC", &rec, &err) == FMB_OK &&
              rec == 0,
          "same source failure not recorded twice", "%s", err.msg);
    fmb_queue_counts c;
    memset(&c, 0, sizeof c);
    s = fmb_queue_counts_get(q, &c, &err);
    check(s == FMB_OK && c.done == 1 && c.failed == 1 && c.dead == 1 && c.pending == 1 &&
              c.running == 1,
          "counts", "done %lld failed %lld dead %lld pending %lld running %lld", (long long)c.done,
          (long long)c.failed, (long long)c.dead, (long long)c.pending, (long long)c.running);
    check(fmb_queue_retry_failed(q, &n, &err) == FMB_OK && n == 2, "retry --failed", "%lld",
          (long long)n);
    /* a second connection: the job name guards the file */
    fmb_queue *q2 = NULL;
    if (fmb_queue_open(path, "other", 0, 2, 600, &q2, &err) == FMB_OK) {
        s = fmb_queue_bind_job(q2, "a = 1\nb = 2\n", "m", "mh", "th", &err);
        check(s == FMB_EINVAL && strstr(err.msg, "job 'job'"), "another job's output refused", "%s",
              err.msg);
    }
    fmb_queue_close(q2);
    char h1[33], h2[33];
    fmb_hash_content("abc", 3, h1);
    fmb_hash_content("abd", 3, h2);
    check(strlen(h1) == 32 && strcmp(h1, h2), "content hash", "%s %s", h1, h2);
    fmb_queue_close(q);
    migration();
    unlink(path);
    char wal[300];
    snprintf(wal, sizeof wal, "%s-wal", path);
    unlink(wal);
    snprintf(wal, sizeof wal, "%s-shm", path);
    unlink(wal);
    return check_exit();
}
