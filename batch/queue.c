/*
 * queue: the SQLite queue and result sink (see queue.h for the protocol).
 *
 * Every write is a short BEGIN IMMEDIATE transaction (a deferred BEGIN that later writes gets
 * SQLITE_BUSY at once, ignoring busy_timeout). WAL lets `status` and `export` read while a run
 * writes. synchronous stays FULL (Debian's default): a done item survives a power loss.
 */
#include "batch/queue.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "batch/queue_impl.h"
#include "batch/schema.h"
#include "engine/hash.h"

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat), or -1. */
static int64_t proc_start_time(int64_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%lld/stat", (long long)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    if (!p)
        return -1;
    p++;
    /* after ')': field 3 (state) ... field 22 (starttime) */
    for (int field = 3; field < 22; field++) {
        p = strchr(p + 1, ' ');
        if (!p)
            return -1;
    }
    return strtoll(p + 1, NULL, 10);
}

/* SQL function owner_gone(host, pid, start): 1 when the owner is known to be gone (same host
 * and the pid is dead or now a different process), 0 otherwise (alive, or another host). */
static void sql_owner_gone(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    fmb_queue *q = sqlite3_user_data(ctx);
    const unsigned char *host = sqlite3_value_text(argv[0]);
    int64_t pid = sqlite3_value_int64(argv[1]);
    int64_t start = sqlite3_value_int64(argv[2]);
    if (!host || strcmp((const char *)host, q->host) || pid <= 0) {
        sqlite3_result_int(ctx, 0);
        return;
    }
    if (kill((pid_t)pid, 0) != 0 && errno == ESRCH) {
        sqlite3_result_int(ctx, 1);
        return;
    }
    int64_t now_start = proc_start_time(pid);
    sqlite3_result_int(ctx, now_start >= 0 && now_start != start);
}

/* ---------------------------------------------------------------------------------------- */
/* worker files: what a dead worker was doing (queue.h, "Deaths and attempts")
 *
 * <output>.worker-<host>-<pid>-<start>, one per worker process, text:
 *   "fmbatch worker 1\nstate: " then an 8-byte state field, "running " or "crash=NN" (the
 *   crash handler overwrites just these bytes), "\n", then "item ID\n" per item in progress and
 *   "end\n". The list is rewritten (pwrite + ftruncate, no fsync) when the set changes; text
 *   after "end" (a kill between the two calls) is ignored. Created and fsynced once, so that a
 *   power loss leaves at least the header: a missing file means the owner predates worker files
 *   (or could not write one), and its deaths count as attempts as before. */

#define WF_HEAD      "fmbatch worker 1\nstate: "
#define WF_STATE_OFF (sizeof WF_HEAD - 1)
#define WF_LIST_OFF  (WF_STATE_OFF + 9)

/* The crash handler's file: process-wide because signal dispositions are (one worker queue per
 * process). Written by fmb_queue_worker_start/close, read by the handler. */
static volatile sig_atomic_t crash_fd = -1;
static const int crash_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
static struct sigaction crash_old[sizeof crash_signals / sizeof crash_signals[0]];

/* Async-signal-safe: lseek and write on a pre-opened fd, then the default action (the
 * handler is one-shot: SA_RESETHAND), so the process still dies of the signal with its core. */
static void on_crash(int sig)
{
    int fd = crash_fd;
    if (fd >= 0) {
        char b[8] = {
            'c', 'r', 'a', 's', 'h', '=', (char)('0' + sig / 10 % 10), (char)('0' + sig % 10)};
        if (lseek(fd, (off_t)WF_STATE_OFF, SEEK_SET) >= 0) {
            ssize_t w = write(fd, b, sizeof b);
            (void)w;
        }
    }
    raise(sig);
}

static char *worker_path(const char *db, const char *host, int64_t pid, int64_t start)
{
    char h[256];
    size_t i = 0;
    for (; i < sizeof h - 1 && host[i]; i++) /* a host name into a file name */
        h[i] = (host[i] == '/' || host[i] < ' ') ? '_' : host[i];
    h[i] = 0;
    size_t n = strlen(db) + strlen(h) + 64;
    char *p = fmb_xmalloc(n);
    snprintf(p, n, "%s.worker-%s-%lld-%lld", db, h, (long long)pid, (long long)start);
    return p;
}

static void worker_write_list(fmb_queue *q)
{
    if (q->wfd < 0)
        return;
    size_t cap = q->n_working * 28 + 8, n = 0;
    char *b = fmb_xmalloc(cap);
    for (size_t i = 0; i < q->n_working; i++)
        n += (size_t)snprintf(b + n, cap - n, "item %lld\n", (long long)q->working[i]);
    n += (size_t)snprintf(b + n, cap - n, "end\n");
    /* best effort: without the list a death counts as an attempt (the safe side) */
    if (pwrite(q->wfd, b, n, (off_t)WF_LIST_OFF) == (ssize_t)n) {
        int rc = ftruncate(q->wfd, (off_t)(WF_LIST_OFF + n));
        (void)rc;
    }
    free(b);
}

static void working_remove(fmb_queue *q, int64_t id)
{
    for (size_t i = 0; i < q->n_working; i++)
        if (q->working[i] == id) {
            q->working[i] = q->working[--q->n_working];
            worker_write_list(q);
            return;
        }
}

void fmb_queue_working(fmb_queue *q, int64_t item_id, int on)
{
    if (!on) {
        working_remove(q, item_id);
        return;
    }
    for (size_t i = 0; i < q->n_working; i++)
        if (q->working[i] == item_id)
            return;
    if (q->n_working == q->cap_working) {
        q->cap_working = q->cap_working ? q->cap_working * 2 : 16;
        q->working = fmb_xrealloc(q->working, q->cap_working, sizeof *q->working);
    }
    q->working[q->n_working++] = item_id;
    worker_write_list(q);
}

fmb_status fmb_queue_worker_start(fmb_queue *q, fmb_err *err)
{
    if (q->wfd >= 0)
        return FMB_OK;
    FMB_ASSERT(crash_fd < 0); /* one worker queue per process */
    char *path = worker_path(q->path, q->host, q->pid, q->start);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        fmb_status s = fmb_fail(err, FMB_EIO, "%s: %s", path, strerror(errno));
        free(path);
        return s;
    }
    char head[64];
    int n = snprintf(head, sizeof head, "%srunning \nend\n", WF_HEAD);
    if (write(fd, head, (size_t)n) != n || fsync(fd)) {
        fmb_status s = fmb_fail(err, FMB_EIO, "%s: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        free(path);
        return s;
    }
    /* the directory entry too: after a power loss the file says "running", not absent */
    char *dir = fmb_xstrdup(path), *slash = strrchr(dir, '/');
    if (slash == dir)
        dir[1] = 0;
    else if (slash)
        *slash = 0;
    int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        int rc = fsync(dfd);
        (void)rc;
        close(dfd);
    }
    free(dir);
    q->wpath = path;
    q->wfd = fd;
    worker_write_list(q);
    /* an alternate stack for this thread, so that a stack overflow still reaches the handler */
    q->altstack = fmb_xmalloc(1 << 16);
    stack_t ss;
    memset(&ss, 0, sizeof ss);
    ss.ss_sp = q->altstack;
    ss.ss_size = 1 << 16;
    sigaltstack(&ss, NULL);
    crash_fd = fd;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_crash;
    sa.sa_flags = SA_RESETHAND | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof crash_signals / sizeof crash_signals[0]; i++)
        sigaction(crash_signals[i], &sa, &crash_old[i]);
    return FMB_OK;
}

static void worker_stop(fmb_queue *q)
{
    if (q->wfd < 0)
        return;
    for (size_t i = 0; i < sizeof crash_signals / sizeof crash_signals[0]; i++)
        sigaction(crash_signals[i], &crash_old[i], NULL);
    crash_fd = -1;
    stack_t ss;
    memset(&ss, 0, sizeof ss);
    ss.ss_flags = SS_DISABLE;
    sigaltstack(&ss, NULL);
    free(q->altstack);
    q->altstack = NULL;
    close(q->wfd);
    q->wfd = -1;
    unlink(q->wpath); /* a clean exit: nothing held any more */
    free(q->wpath);
    q->wpath = NULL;
}

typedef enum {
    DEATH_UNKNOWN = 0, /* no worker file: counts as an attempt (as before worker files) */
    DEATH_CRASH,       /* the worker crashed while processing this item: an attempt */
    DEATH_KILLED,      /* killed from outside while processing it: a kill, not an attempt */
    DEATH_IDLE         /* the item was only held (not in progress): neither */
} death_kind;

/* How the owner (host, pid, start) of item id died, from its worker file. */
static death_kind
owner_death(const fmb_queue *q, const char *host, int64_t pid, int64_t start, int64_t id)
{
    if (!host)
        return DEATH_UNKNOWN;
    char *path = worker_path(q->path, host, pid, start);
    FILE *f = fopen(path, "r");
    free(path);
    if (!f)
        return DEATH_UNKNOWN;
    char line[128];
    death_kind k = DEATH_UNKNOWN;
    if (fgets(line, sizeof line, f) && !strcmp(line, "fmbatch worker 1\n") &&
        fgets(line, sizeof line, f) && !strncmp(line, "state: ", 7)) {
        int crashed = !strncmp(line + 7, "crash=", 6);
        k = DEATH_IDLE;
        while (fgets(line, sizeof line, f) && strcmp(line, "end\n")) {
            long long v;
            if (sscanf(line, "item %lld", &v) == 1 && v == id) {
                k = crashed ? DEATH_CRASH : DEATH_KILLED;
                break;
            }
        }
    }
    fclose(f);
    return k;
}

fmb_status fmb_queue_sql_fail(fmb_queue *q, fmb_err *err, const char *what)
{
    return fmb_fail(err, FMB_EIO, "%s: %s: %s", q->path, what, sqlite3_errmsg(q->db));
}

static int exec(fmb_queue *q, const char *sql)
{
    return sqlite3_exec(q->db, sql, NULL, NULL, NULL);
}

/* Ends the open transaction after a failed statement: the message is taken first (a
 * ROLLBACK would replace SQLite's error text), then the transaction is rolled back. */
static fmb_status abort_tx(fmb_queue *q, fmb_err *err, const char *what)
{
    fmb_status s = fmb_queue_sql_fail(q, err, what);
    exec(q, "ROLLBACK");
    q->in_batch = 0; /* the whole batch's transaction is gone */
    return s;
}

/* Counts -1 and reals NAN (SQL NULL); pointers NULL, sizes and flags 0. */
#define EMPTY_(name, sql, enc, value, failed) value
#define ROW_TEXT(f)
#define ROW_TEXTN(f, n)
#define ROW_STATUS(f)
#define ROW_INT(f)  r.f = -1;
#define ROW_FLAG(f) r.f = 0;
#define ROW_REAL(f) r.f = NAN;
#define ROW_BLOB(f)
#define CTX(what)

fmb_result_row fmb_result_row_empty(void)
{
    fmb_result_row r;
    memset(&r, 0, sizeof r);
    FMB_RESULT_COLUMNS(EMPTY_)
    return r;
}
#undef ROW_TEXT
#undef ROW_TEXTN
#undef ROW_STATUS
#undef ROW_INT
#undef ROW_FLAG
#undef ROW_REAL
#undef ROW_BLOB
#undef CTX

/* The folder the output database goes in: created (with its parents) when missing, as users
 * expect of an output path; a folder that cannot be made or written is named in the error
 * (SQLite would only say "unable to open database file"). */
static fmb_status output_folder(const char *path, fmb_err *err)
{
    char *dir = fmb_xstrdup(path);
    char *slash = strrchr(dir, '/');
    fmb_status s = FMB_OK;
    if (!slash) {
        free(dir);
        return FMB_OK; /* the current folder */
    }
    slash[slash == dir ? 1 : 0] = 0;
    struct stat stt;
    if (stat(dir, &stt) != 0) {
        /* mkdir -p: each missing component in turn */
        for (char *p = dir + 1;; p++) {
            if (*p == '/' || !*p) {
                char c = *p;
                *p = 0;
                if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
                    s = fmb_fail(err, FMB_EIO, "%s: cannot create the output folder %s: %s", path,
                                 dir, strerror(errno));
                    break;
                }
                *p = c;
                if (!c)
                    break;
            }
        }
    } else if (!S_ISDIR(stt.st_mode)) {
        s = fmb_fail(err, FMB_EIO, "%s: the output folder %s is not a folder", path, dir);
    } else if (access(dir, W_OK | X_OK) != 0 && access(path, F_OK) != 0) {
        s = fmb_fail(err, FMB_EIO,
                     "%s: cannot create the output database: the folder %s is not "
                     "writable (%s)",
                     path, dir, strerror(errno));
    }
    free(dir);
    return s;
}

static fmb_status open_db(const char *path, int create, sqlite3 **out, fmb_err *err)
{
    int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0);
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, flags, NULL) != SQLITE_OK) {
        int sys = db ? sqlite3_system_errno(db) : 0;
        fmb_status s = fmb_fail(err, create ? FMB_EIO : FMB_EINVAL, "%s: cannot open: %s%s%s%s",
                                path, db ? sqlite3_errmsg(db) : "out of memory", sys ? " (" : "",
                                sys ? strerror(sys) : "", sys ? ")" : "");
        sqlite3_close(db);
        return s;
    }
    sqlite3_busy_timeout(db, 30000);
    sqlite3_exec(db,
                 "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; "
                 "PRAGMA foreign_keys = ON;",
                 NULL, NULL, NULL);
    *out = db;
    return FMB_OK;
}

fmb_status fmb_queue_open(const char *path,
                          const char *job_name,
                          int create,
                          int max_attempts,
                          double lease_seconds,
                          fmb_queue **out,
                          fmb_err *err)
{
    *out = NULL;
    if (!create && access(path, F_OK) != 0)
        return fmb_fail(err, FMB_EINVAL, "%s: no output yet (run the job first)", path);
    fmb_queue *q = fmb_xcalloc(1, sizeof *q);
    q->path = fmb_xstrdup(path);
    q->job = fmb_xstrdup(job_name);
    q->max_attempts = max_attempts > 0 ? max_attempts : 3;
    q->lease_seconds = lease_seconds > 0 ? lease_seconds : 600;
    if (gethostname(q->host, sizeof q->host - 1))
        snprintf(q->host, sizeof q->host, "localhost");
    q->pid = (int64_t)getpid();
    q->wfd = -1;
    q->start = proc_start_time(q->pid);
    pthread_mutex_init(&q->hb_mu, NULL);
    pthread_cond_init(&q->hb_cv, NULL);
    fmb_status s = create ? output_folder(path, err) : FMB_OK;
    if (!s)
        s = open_db(path, create, &q->db, err);
    if (s)
        goto fail;
    sqlite3_create_function(q->db, "fmb_owner_gone", 3, SQLITE_UTF8, q, sql_owner_gone, NULL, NULL);
    /* Schema: applied once, under the write lock, so concurrent first runs do not race. */
    if (exec(q, "BEGIN IMMEDIATE") != SQLITE_OK) {
        s = fmb_queue_sql_fail(q, err, "cannot lock");
        goto fail;
    }
    sqlite3_stmt *st;
    int version = 0, tables = 0;
    if (sqlite3_prepare_v2(q->db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            version = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
    }
    if (sqlite3_prepare_v2(q->db, "SELECT count(*) FROM sqlite_master", -1, &st, NULL) ==
        SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            tables = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
    }
    if (version == 0 && tables > 0) {
        exec(q, "ROLLBACK");
        s = fmb_fail(err, FMB_EINVAL, "%s: exists and is not an fmbatch output file", path);
        goto fail;
    }
    if (version > FMB_SCHEMA_VERSION) {
        exec(q, "ROLLBACK");
        s = fmb_fail(err, FMB_EINVAL, "%s: schema version %d is newer than this fmbatch (%d)", path,
                     version, FMB_SCHEMA_VERSION);
        goto fail;
    }
    if (version < FMB_SCHEMA_VERSION) {
        /* a new file: 001 then every migration; an older file: the migrations it lacks */
        char pragma[64];
        snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d", FMB_SCHEMA_VERSION);
        if ((version < 1 && exec(q, fmb_schema_sql) != SQLITE_OK) ||
            (version < 2 && exec(q, fmb_schema_sql_2) != SQLITE_OK) ||
            (version < 3 && exec(q, fmb_schema_sql_3) != SQLITE_OK) ||
            exec(q, pragma) != SQLITE_OK) {
            s = abort_tx(q, err,
                         version ? "cannot migrate the schema" : "cannot create the schema");
            goto fail;
        }
    }
    if (exec(q, "COMMIT") != SQLITE_OK) {
        s = fmb_queue_sql_fail(q, err, "commit");
        goto fail;
    }
    *out = q;
    return FMB_OK;
fail:
    fmb_queue_close(q);
    return s;
}

void fmb_queue_close(fmb_queue *q)
{
    if (!q)
        return;
    fmb_queue_heartbeat_stop(q);
    worker_stop(q);
    free(q->working);
    sqlite3_close(q->db);
    pthread_mutex_destroy(&q->hb_mu);
    pthread_cond_destroy(&q->hb_cv);
    free(q->path);
    free(q->job);
    free(q->model);
    free(q->model_hash);
    free(q->held_id);
    free(q->held_tok);
    free(q->tokenizer_hash);
    free(q);
}

/* ---------------------------------------------------------------------------------------- */
/* meta */

static char *meta_get(fmb_queue *q, const char *key)
{
    sqlite3_stmt *st;
    char *v = NULL;
    if (sqlite3_prepare_v2(q->db, "SELECT value FROM meta WHERE key = ?1", -1, &st, NULL) !=
        SQLITE_OK)
        return NULL;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = fmb_xstrdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return v;
}

static int meta_set(fmb_queue *q, const char *key, const char *value)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(q->db, "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)", -1,
                           &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* Appends to err the lines of a not in b with prefix. */
static void diff_lines(char *out, size_t cap, const char *a, const char *b, char prefix)
{
    const char *p = a;
    while (*p) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        int found = 0;
        const char *r = b;
        while (*r && !found) {
            const char *re = strchr(r, '\n');
            size_t rn = re ? (size_t)(re - r) : strlen(r);
            if (rn == n && !memcmp(r, p, n))
                found = 1;
            r += rn + (re ? 1 : 0);
        }
        if (!found) {
            size_t l = strlen(out);
            snprintf(out + l, cap - l, "\n  %c %.*s", prefix, (int)n, p);
        }
        p += n + (e ? 1 : 0);
    }
}

/* 1 if text holds the line [p, p + n). */
static int has_line(const char *text, const char *p, size_t n)
{
    for (const char *r = text; *r;) {
        const char *re = strchr(r, '\n');
        size_t rn = re ? (size_t)(re - r) : strlen(r);
        if (rn == n && !memcmp(r, p, n))
            return 1;
        r += rn + (re ? 1 : 0);
    }
    return 0;
}

/* 1 if the line [p, p + n) is a task's ("task.NAME....") and no prefix "task.X." of it names a
 * task of text (whose fingerprint has a "task.X.kind = " line): the line is of a task added
 * since. Task names may hold dots, so every prefix is tried. */
static int line_of_new_task(const char *text, const char *p, size_t n)
{
    if (n < 5 || memcmp(p, "task.", 5))
        return 0;
    for (size_t k = 5; k < n; k++) {
        if (p[k] != '.')
            continue;
        char kind_line[600];
        int w = snprintf(kind_line, sizeof kind_line, "%.*skind = ", (int)(k + 1), p);
        if (w <= 0 || (size_t)w >= sizeof kind_line)
            return 0;
        for (const char *r = text; *r;) {
            const char *re = strchr(r, '\n');
            size_t rn = re ? (size_t)(re - r) : strlen(r);
            if (rn >= (size_t)w && !memcmp(r, kind_line, (size_t)w))
                return 0;
            r += rn + (re ? 1 : 0);
        }
    }
    return 1;
}

/* 1 if fingerprint now only adds tasks to old: every old line is still there, and every new line
 * is one of an added task's ("growing a job", queue.h). */
static int only_tasks_added(const char *old, const char *now)
{
    for (const char *p = old; *p;) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (!has_line(now, p, n))
            return 0;
        p += n + (e ? 1 : 0);
    }
    for (const char *p = now; *p;) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (!has_line(old, p, n) && !line_of_new_task(old, p, n))
            return 0;
        p += n + (e ? 1 : 0);
    }
    return 1;
}

fmb_status fmb_queue_bind_job(fmb_queue *q,
                              const char *fingerprint,
                              const char *model,
                              const char *model_hash,
                              const char *tokenizer_hash,
                              fmb_err *err)
{
    free(q->model);
    free(q->model_hash);
    free(q->tokenizer_hash);
    q->model = fmb_xstrdup(model);
    q->model_hash = fmb_xstrdup(model_hash);
    q->tokenizer_hash = fmb_xstrdup(tokenizer_hash);
    if (exec(q, "BEGIN IMMEDIATE") != SQLITE_OK)
        return fmb_queue_sql_fail(q, err, "cannot lock");
    char *old_job = meta_get(q, "job_name");
    char *old_fp = meta_get(q, "fingerprint");
    fmb_status s = FMB_OK;
    if (!old_fp) {
        char now[64];
        snprintf(now, sizeof now, "%.3f", wall_now());
        char ver[16];
        snprintf(ver, sizeof ver, "%d", FMB_SCHEMA_VERSION);
        char h[33];
        fmb_hash_content(fingerprint, strlen(fingerprint), h);
        if (meta_set(q, "job_name", q->job) || meta_set(q, "fingerprint", fingerprint) ||
            meta_set(q, "fingerprint_hash", h) || meta_set(q, "model", model) ||
            meta_set(q, "model_hash", model_hash) ||
            meta_set(q, "tokenizer_hash", tokenizer_hash) ||
            meta_set(q, "fmbatch_version", FMB_VERSION) || meta_set(q, "created_at", now) ||
            meta_set(q, "schema_version", ver))
            s = fmb_queue_sql_fail(q, err, "cannot write meta");
    } else if (!old_job || strcmp(old_job, q->job)) {
        s = fmb_fail(err, FMB_EINVAL,
                     "%s was written by job '%s', not '%s': refusing to mix results (use another "
                     "output file)",
                     q->path, old_job ? old_job : "?", q->job);
    } else if (strcmp(old_fp, fingerprint) && only_tasks_added(old_fp, fingerprint)) {
        /* Growing the job: the new tasks run over the documents already done, the old tasks'
         * rows stay (the runner runs only the tasks an item has no row for). */
        char h[33];
        fmb_hash_content(fingerprint, strlen(fingerprint), h);
        sqlite3_stmt *st = NULL;
        if (meta_set(q, "fingerprint", fingerprint) || meta_set(q, "fingerprint_hash", h) ||
            sqlite3_prepare_v2(q->db,
                               "UPDATE item SET status = 'pending', finished_at = NULL WHERE "
                               "job = ?1 AND status = 'done'",
                               -1, &st, NULL) != SQLITE_OK)
            s = fmb_queue_sql_fail(q, err, "cannot add the tasks");
        else {
            sqlite3_bind_text(st, 1, q->job, -1, SQLITE_STATIC);
            if (sqlite3_step(st) != SQLITE_DONE)
                s = fmb_queue_sql_fail(q, err, "cannot add the tasks");
            else
                q->grown = sqlite3_changes(q->db);
        }
        sqlite3_finalize(st);
    } else if (strcmp(old_fp, fingerprint)) {
        char d[900] = "";
        diff_lines(d, sizeof d, old_fp, fingerprint, '-');
        diff_lines(d, sizeof d, fingerprint, old_fp, '+');
        s = fmb_fail(err, FMB_EINVAL,
                     "%s was made by a different job: its settings changed (- in the output "
                     "file, + now); refusing to mix results. Use a new output file, or restore "
                     "the settings:%s",
                     q->path, d);
    }
    free(old_job);
    free(old_fp);
    if (exec(q, s ? "ROLLBACK" : "COMMIT") != SQLITE_OK && !s)
        s = fmb_queue_sql_fail(q, err, "commit");
    return s;
}

/* ---------------------------------------------------------------------------------------- */
/* claim / complete / fail / release */

/* One item's writes: a transaction of its own, or inside a batch (fmb_queue_batch_begin) a
 * savepoint, so that each item stays atomic (a lost lease rolls back that item alone) while
 * the batch commits once. */
static int tx_begin(fmb_queue *q)
{
    return exec(q, q->in_batch ? "SAVEPOINT item" : "BEGIN IMMEDIATE");
}

static int tx_commit(fmb_queue *q)
{
    return exec(q, q->in_batch ? "RELEASE item" : "COMMIT");
}

static void tx_rollback(fmb_queue *q)
{
    if (q->in_batch) {
        exec(q, "ROLLBACK TO item");
        exec(q, "RELEASE item");
    } else {
        exec(q, "ROLLBACK");
    }
}

fmb_status fmb_queue_batch_begin(fmb_queue *q, fmb_err *err)
{
    FMB_ASSERT(!q->in_batch);
    if (exec(q, "BEGIN IMMEDIATE") != SQLITE_OK)
        return fmb_queue_sql_fail(q, err, "cannot lock to write results");
    q->in_batch = 1;
    return FMB_OK;
}

void fmb_queue_batch_abort(fmb_queue *q)
{
    if (q->in_batch)
        exec(q, "ROLLBACK");
    q->in_batch = 0;
}

int fmb_queue_in_batch(const fmb_queue *q)
{
    return q->in_batch;
}

fmb_status fmb_queue_batch_commit(fmb_queue *q, fmb_err *err)
{
    FMB_ASSERT(q->in_batch);
    q->in_batch = 0;
    if (exec(q, "COMMIT") != SQLITE_OK)
        return abort_tx(q, err, "commit a batch of results");
    fmb_fault_hit(q->fault, FMB_FAULT_AFTER_COMMIT);
    return FMB_OK;
}

static void held_add(fmb_queue *q, int64_t item_id, int64_t token)
{
    // a new claim supersedes whatever this handle held under that id (an item deleted and its
    // rowid reused, or taken over by another worker meanwhile)
    for (size_t i = 0; i < q->n_held; i++)
        if (q->held_id[i] == item_id) {
            q->held_tok[i] = token;
            return;
        }
    if (q->n_held == q->cap_held) {
        q->cap_held = q->cap_held ? 2 * q->cap_held : 64;
        q->held_id = fmb_xrealloc(q->held_id, q->cap_held, sizeof *q->held_id);
        q->held_tok = fmb_xrealloc(q->held_tok, q->cap_held, sizeof *q->held_tok);
    }
    q->held_id[q->n_held] = item_id;
    q->held_tok[q->n_held] = token;
    q->n_held++;
}

/* Removes the worker file of a gone owner once none of its leases is left running. */
static void unlink_worker_file_if_done(fmb_queue *q, const char *host, int64_t pid, int64_t start)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(q->db,
                           "SELECT count(*) FROM item WHERE status = 'running' AND lease_host = ?1 "
                           "AND lease_pid = ?2 AND lease_start = ?3",
                           -1, &st, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_text(st, 1, host, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, pid);
    sqlite3_bind_int64(st, 3, start);
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int64(st, 0) == 0) {
        char *path = worker_path(q->path, host, pid, start);
        unlink(path);
        free(path);
    }
    sqlite3_finalize(st);
}

int fmb_queue_kill_limit(int max_attempts)
{
    return 10 * (max_attempts > 0 ? max_attempts : 3);
}

/* Marks item id dead (finished at now, its lease cleared) with the given extra assignments
 * (the error text). Returns 0, or -1 on an SQLite error (the caller's transaction is kept). */
static int set_dead(fmb_queue *q, int64_t id, double now, const char *assign)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "UPDATE item SET status = 'dead', lease_host = NULL, lease_pid = NULL, lease_token "
             "= NULL, finished_at = ?2, %s WHERE item_id = ?1",
             assign);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(q->db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_double(st, 2, now);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

fmb_status fmb_queue_claim(fmb_queue *q,
                           const char *key,
                           const char *content_hash,
                           size_t bytes,
                           fmb_claim *outcome,
                           int64_t *item_id,
                           fmb_err *err)
{
    *outcome = FMB_CLAIM_BUSY;
    *item_id = -1;
    double now = wall_now();
    int64_t token = ((q->pid & 0xffffff) << 32) | (++q->token_seq & 0xffffffff);
    if (tx_begin(q) != SQLITE_OK)
        return fmb_queue_sql_fail(q, err, "cannot lock for a claim");
    fmb_status s = FMB_OK;
    sqlite3_stmt *st = NULL;
    char *old_host = NULL; /* the previous owner of an orphaned lease */
    int64_t old_pid = 0, old_start = 0;
    int old_gone = 0;
    death_kind death = DEATH_UNKNOWN;
    /* 1. new key: insert it running, owned by us. */
    const char *ins = "INSERT INTO item (job, key, content_hash, bytes, status, attempts, "
                      "lease_host, lease_pid, lease_start, lease_token, lease_expires, "
                      "enqueued_at, started_at, worker) VALUES (?1, ?2, ?3, ?4, 'running', 1, "
                      "?5, ?6, ?7, ?8, ?9, ?10, ?10, ?5 || ':' || ?6) ON CONFLICT (job, key) DO "
                      "NOTHING RETURNING item_id";
    if (sqlite3_prepare_v2(q->db, ins, -1, &st, NULL) != SQLITE_OK)
        goto sqlerr;
    sqlite3_bind_text(st, 1, q->job, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, content_hash, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, (int64_t)bytes);
    sqlite3_bind_text(st, 5, q->host, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, q->pid);
    sqlite3_bind_int64(st, 7, q->start);
    sqlite3_bind_int64(st, 8, token);
    sqlite3_bind_double(st, 9, now + q->lease_seconds);
    sqlite3_bind_double(st, 10, now);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *item_id = sqlite3_column_int64(st, 0);
        *outcome = FMB_CLAIM_TAKEN;
        sqlite3_finalize(st);
        goto commit;
    }
    if (rc != SQLITE_DONE)
        goto sqlerr;
    sqlite3_finalize(st);
    st = NULL;
    /* 2. known key: look at its state. */
    if (sqlite3_prepare_v2(q->db,
                           "SELECT item_id, status, content_hash, attempts, "
                           "(status = 'running' AND (lease_expires < ?3 OR "
                           "fmb_owner_gone(lease_host, lease_pid, lease_start))), "
                           "lease_host, lease_pid, lease_start, kills, "
                           "fmb_owner_gone(lease_host, lease_pid, lease_start) "
                           "FROM item WHERE job = ?1 AND key = ?2",
                           -1, &st, NULL) != SQLITE_OK)
        goto sqlerr;
    sqlite3_bind_text(st, 1, q->job, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 3, now);
    if (sqlite3_step(st) != SQLITE_ROW)
        goto sqlerr;
    int64_t id = sqlite3_column_int64(st, 0);
    char status[16];
    snprintf(status, sizeof status, "%s", (const char *)sqlite3_column_text(st, 1));
    const unsigned char *h = sqlite3_column_text(st, 2);
    int same = h && !strcmp((const char *)h, content_hash);
    int64_t attempts = sqlite3_column_int64(st, 3);
    int orphan = sqlite3_column_int(st, 4);
    old_host = sqlite3_column_type(st, 5) == SQLITE_NULL
                   ? NULL
                   : fmb_xstrdup((const char *)sqlite3_column_text(st, 5));
    old_pid = sqlite3_column_int64(st, 6);
    old_start = sqlite3_column_int64(st, 7);
    int64_t kills = sqlite3_column_int64(st, 8);
    old_gone = sqlite3_column_int(st, 9);
    sqlite3_finalize(st);
    st = NULL;
    *item_id = id;
    int changed = 0;
    int attempt_inc = 1, kill_inc = 0; /* a pending item: a new attempt */
    if (!strcmp(status, "done") || !strcmp(status, "failed") || !strcmp(status, "dead")) {
        if (same) {
            *outcome = !strcmp(status, "done") ? FMB_CLAIM_DONE : FMB_CLAIM_FAILED;
            goto commit;
        }
        changed = 1; /* the document changed since: redo it */
    } else if (h && !same) {
        changed = 1; /* pending with rows (a job grown by a task) whose document changed */
    }
    if (!strcmp(status, "running")) {
        if (!orphan) {
            *outcome = FMB_CLAIM_BUSY;
            goto commit;
        }
        /* The owner died (or its lease ran out): what was it doing? (queue.h) */
        death = owner_death(q, old_host, old_pid, old_start, id);
        if (death == DEATH_KILLED || death == DEATH_IDLE) {
            attempt_inc = 0; /* the dead owner's attempt is given back, this take uses it */
            kill_inc = death == DEATH_KILLED;
        }
        if (kill_inc && kills + 1 >= fmb_queue_kill_limit(q->max_attempts)) {
            if (set_dead(q, id, now,
                         "kills = kills + 1, error = 'its worker was killed from outside ' || "
                         "(kills + 1) || ' times while processing it (SIGKILL, the OOM killer, "
                         "a power loss?)'"))
                goto sqlerr;
            *outcome = FMB_CLAIM_DEAD;
            goto commit;
        }
        if (attempt_inc && attempts >= q->max_attempts) {
            if (set_dead(q, id, now, "error = 'a worker died on it ' || attempts || ' times'"))
                goto sqlerr;
            *outcome = FMB_CLAIM_DEAD;
            goto commit;
        }
    }
    if (changed) {
        if (sqlite3_prepare_v2(q->db, "DELETE FROM result WHERE item_id = ?1", -1, &st, NULL) !=
            SQLITE_OK)
            goto sqlerr;
        sqlite3_bind_int64(st, 1, id);
        if (sqlite3_step(st) != SQLITE_DONE)
            goto sqlerr;
        sqlite3_finalize(st);
        st = NULL;
    }
    /* 3. take it: UPDATE ... RETURNING, conditioned again on the state we saw. */
    if (sqlite3_prepare_v2(
            q->db,
            "UPDATE item SET status = 'running', attempts = CASE WHEN ?9 THEN 1 ELSE attempts + "
            "?11 END, kills = CASE WHEN ?9 THEN 0 ELSE kills + ?12 END, content_hash = ?2, bytes = "
            "?3, lease_host = ?4, lease_pid = ?5, lease_start = "
            "?6, lease_token = ?7, lease_expires = ?8 + ?10, started_at = ?8, error = NULL, "
            "worker = ?4 || ':' || ?5, "
            "finished_at = NULL WHERE item_id = ?1 AND (status = 'pending' OR ?9 OR (status = "
            "'running' AND (lease_expires < ?8 OR fmb_owner_gone(lease_host, lease_pid, "
            "lease_start)))) RETURNING attempts",
            -1, &st, NULL) != SQLITE_OK)
        goto sqlerr;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, content_hash, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (int64_t)bytes);
    sqlite3_bind_text(st, 4, q->host, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, q->pid);
    sqlite3_bind_int64(st, 6, q->start);
    sqlite3_bind_int64(st, 7, token);
    sqlite3_bind_double(st, 8, now);
    sqlite3_bind_int(st, 9, changed);
    sqlite3_bind_double(st, 10, q->lease_seconds);
    sqlite3_bind_int(st, 11, attempt_inc);
    sqlite3_bind_int(st, 12, kill_inc);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *outcome = FMB_CLAIM_TAKEN;
    else if (rc != SQLITE_DONE)
        goto sqlerr;
    sqlite3_finalize(st);
    st = NULL;
commit:
    if (*outcome == FMB_CLAIM_TAKEN)
        held_add(q, *item_id, token);
    if (tx_commit(q) != SQLITE_OK) {
        s = abort_tx(q, err, "commit a claim");
    }
    if (!s && *outcome == FMB_CLAIM_TAKEN)
        fmb_fault_hit(q->fault, FMB_FAULT_AFTER_CLAIM);
    /* The last item of a gone owner with a worker file: the file has told all it can. */
    if (!s && death != DEATH_UNKNOWN && old_gone && old_host)
        unlink_worker_file_if_done(q, old_host, old_pid, old_start);
    free(old_host);
    return s;
sqlerr:
    s = fmb_queue_sql_fail(q, err, "claim");
    sqlite3_finalize(st);
    exec(q, "ROLLBACK"); /* the whole transaction, a batch's too: the error is the run's */
    q->in_batch = 0;
    free(old_host);
    return s;
}

fmb_status fmb_queue_begin(fmb_queue *q, fmb_err *err)
{
    if (tx_begin(q) != SQLITE_OK)
        return fmb_queue_sql_fail(q, err, "cannot lock to write results");
    return FMB_OK;
}

void fmb_queue_rollback(fmb_queue *q)
{
    tx_rollback(q);
}

static void bind_opt_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

static void bind_opt_textn(sqlite3_stmt *st, int i, const char *s, size_t n)
{
    if (s)
        sqlite3_bind_text64(st, i, s, n, SQLITE_STATIC, SQLITE_UTF8);
    else
        sqlite3_bind_null(st, i);
}

static void bind_opt_real(sqlite3_stmt *st, int i, double x)
{
    if (isfinite(x))
        sqlite3_bind_double(st, i, x);
    else
        sqlite3_bind_null(st, i);
}

static void bind_opt_int(sqlite3_stmt *st, int i, int64_t x)
{
    if (x >= 0)
        sqlite3_bind_int64(st, i, x);
    else
        sqlite3_bind_null(st, i);
}

static void bind_opt_blob(sqlite3_stmt *st, int i, const void *p, size_t n)
{
    if (p)
        sqlite3_bind_blob64(st, i, p, n, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

/* The INSERT, from the column list: "INSERT OR REPLACE INTO result (job, item_key, ...)
 * VALUES (?, ?, ...)"; the parameters number 1..FMB_RESULT_NCOLS in column order. */
#define INSERT_NAME_(name, sql, enc, value, failed)  ", " #name
#define INSERT_PARAM_(name, sql, enc, value, failed) ", ?"
static const char insert_names[] = FMB_RESULT_COLUMNS(INSERT_NAME_);
static const char insert_params[] = FMB_RESULT_COLUMNS(INSERT_PARAM_);

/* One bind per column, in order: i is the parameter number. */
#define BIND_(name, sql, enc, value, failed)                                                       \
    i++;                                                                                           \
    value;
#define ROW_TEXT(f)             bind_opt_text(st, i, r->f)
#define ROW_TEXTN(f, n)         bind_opt_textn(st, i, r->f, r->n)
#define ROW_STATUS(f)           sqlite3_bind_text(st, i, r->f ? r->f : "ok", -1, SQLITE_STATIC)
#define ROW_INT(f)              bind_opt_int(st, i, r->f)
#define ROW_FLAG(f)             sqlite3_bind_int(st, i, r->f)
#define ROW_REAL(f)             bind_opt_real(st, i, r->f)
#define ROW_BLOB(f)             bind_opt_blob(st, i, r->f, r->f##_bytes)
#define CTX(what)               BIND_CTX_##what
#define BIND_CTX_JOB            sqlite3_bind_text(st, i, q->job, -1, SQLITE_STATIC)
#define BIND_CTX_KEY            sqlite3_bind_text(st, i, key, -1, SQLITE_STATIC)
#define BIND_CTX_ITEM_ID        sqlite3_bind_int64(st, i, item_id)
#define BIND_CTX_MODEL          bind_opt_text(st, i, q->model)
#define BIND_CTX_MODEL_HASH     bind_opt_text(st, i, q->model_hash)
#define BIND_CTX_TOKENIZER_HASH bind_opt_text(st, i, q->tokenizer_hash)
#define BIND_CTX_VERSION        sqlite3_bind_text(st, i, FMB_VERSION, -1, SQLITE_STATIC)
#define BIND_CTX_NOW            sqlite3_bind_double(st, i, wall_now())

fmb_status fmb_queue_add_result(
    fmb_queue *q, int64_t item_id, const char *key, const fmb_result_row *r, fmb_err *err)
{
    char sql[sizeof insert_names + sizeof insert_params + 64];
    snprintf(sql, sizeof sql, "INSERT OR REPLACE INTO result (%s) VALUES (%s)", insert_names + 2,
             insert_params + 2);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(q->db, sql, -1, &st, NULL) != SQLITE_OK)
        return fmb_queue_sql_fail(q, err, "prepare a result insert");
    int i = 0;
    FMB_RESULT_COLUMNS(BIND_)
    FMB_ASSERT(i == FMB_RESULT_NCOLS);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return fmb_queue_sql_fail(q, err, "insert a result");
    return FMB_OK;
}
#undef ROW_TEXT
#undef ROW_TEXTN
#undef ROW_STATUS
#undef ROW_INT
#undef ROW_FLAG
#undef ROW_REAL
#undef ROW_BLOB
#undef CTX

/* The lease token this handle holds on item_id (0, which fences nothing, when none). */
static int64_t held_token(const fmb_queue *q, int64_t item_id)
{
    for (size_t i = 0; i < q->n_held; i++)
        if (q->held_id[i] == item_id)
            return q->held_tok[i];
    return 0;
}

static void held_drop(fmb_queue *q, int64_t item_id)
{
    for (size_t i = 0; i < q->n_held; i++)
        if (q->held_id[i] == item_id) {
            q->held_id[i] = q->held_id[q->n_held - 1];
            q->held_tok[i] = q->held_tok[q->n_held - 1];
            q->n_held--;
            return;
        }
}

fmb_status fmb_queue_finish(
    fmb_queue *q, int64_t item_id, int64_t tokens, double seconds, int *lost, fmb_err *err)
{
    *lost = 0;
    working_remove(q, item_id); /* done or lost: either way no longer in progress here */
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(q->db,
                           "UPDATE item SET status = 'done', tokens = ?2, seconds = ?3, "
                           "finished_at = ?4, lease_host = NULL, lease_pid = NULL, lease_start "
                           "= NULL, lease_token = NULL, lease_expires = NULL, error = NULL "
                           "WHERE item_id = ?1 AND status = 'running' AND lease_token = ?5",
                           -1, &st, NULL) != SQLITE_OK) {
        return abort_tx(q, err, "finish");
    }
    sqlite3_bind_int64(st, 1, item_id);
    bind_opt_int(st, 2, tokens);
    sqlite3_bind_double(st, 3, seconds);
    sqlite3_bind_double(st, 4, wall_now());
    sqlite3_bind_int64(st, 5, held_token(q, item_id));
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        return abort_tx(q, err, "finish");
    }
    held_drop(q, item_id);
    if (sqlite3_changes(q->db) != 1) { /* the lease was lost: another worker owns it now */
        *lost = 1;
        tx_rollback(q);
        return FMB_OK;
    }
    if (tx_commit(q) != SQLITE_OK) {
        return abort_tx(q, err, "commit results");
    }
    return FMB_OK;
}

static fmb_status
simple_update(fmb_queue *q, const char *sql, int64_t item_id, const char *text, fmb_err *err)
{
    working_remove(q, item_id); /* failed or released: no longer in progress here */
    if (tx_begin(q) != SQLITE_OK)
        return fmb_queue_sql_fail(q, err, "cannot lock");
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(q->db, sql, -1, &st, NULL) != SQLITE_OK) {
        return abort_tx(q, err, "update");
    }
    sqlite3_bind_int64(st, 1, item_id);
    sqlite3_bind_int64(st, 2, held_token(q, item_id));
    sqlite3_bind_double(st, 3, wall_now());
    if (text)
        sqlite3_bind_text(st, 4, text, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE || tx_commit(q) != SQLITE_OK) {
        return abort_tx(q, err, "update");
    }
    held_drop(q, item_id);
    return FMB_OK;
}

fmb_status fmb_queue_fail(fmb_queue *q, int64_t item_id, const char *reason, fmb_err *err)
{
    return simple_update(q,
                         "UPDATE item SET status = 'failed', error = ?4, finished_at = ?3, "
                         "lease_host = NULL, lease_pid = NULL, lease_start = NULL, lease_token "
                         "= NULL, lease_expires = NULL WHERE item_id = ?1 AND lease_token = ?2 "
                         "AND status = 'running'",
                         item_id, reason, err);
}

fmb_status fmb_queue_release(fmb_queue *q, int64_t item_id, fmb_err *err)
{
    return simple_update(q,
                         "UPDATE item SET status = 'pending', attempts = max(attempts - 1, 0), "
                         "lease_host = NULL, lease_pid = NULL, lease_start = NULL, lease_token "
                         "= NULL, lease_expires = NULL WHERE item_id = ?1 AND lease_token = ?2 "
                         "AND status = 'running' AND ?3 IS NOT NULL",
                         item_id, NULL, err);
}

fmb_status
fmb_queue_fail_key(fmb_queue *q, const char *key, const char *reason, int *recorded, fmb_err *err)
{
    /* The source could not produce the document, so there is no content: hash the reason, so
     * that a repaired document (which hashes differently) is taken again. */
    char h[33];
    fmb_hash_content(reason, strlen(reason), h);
    fmb_claim c;
    int64_t id;
    *recorded = 0;
    fmb_status s = fmb_queue_claim(q, key, h, 0, &c, &id, err);
    if (s || c != FMB_CLAIM_TAKEN)
        return s;
    *recorded = 1;
    return fmb_queue_fail(q, id, reason, err);
}

/* ---------------------------------------------------------------------------------------- */
/* reports */

static fmb_status one_int(fmb_queue *q, const char *sql, int64_t *out, fmb_err *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(q->db, sql, -1, &st, NULL) != SQLITE_OK)
        return fmb_queue_sql_fail(q, err, "query");
    sqlite3_bind_text(st, 1, q->job, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 2, wall_now());
    int rc = sqlite3_step(st);
    *out = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW)
        return fmb_queue_sql_fail(q, err, "query");
    return FMB_OK;
}

fmb_status fmb_queue_claimable(fmb_queue *q, int64_t *n, fmb_err *err)
{
    return one_int(q,
                   "SELECT count(*) FROM item WHERE job = ?1 AND (status = 'pending' OR (status "
                   "= 'running' AND (lease_expires < ?2 OR fmb_owner_gone(lease_host, lease_pid, "
                   "lease_start))))",
                   n, err);
}

fmb_status fmb_queue_counts_get(fmb_queue *q, fmb_queue_counts *c, fmb_err *err)
{
    memset(c, 0, sizeof *c);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(q->db,
                           "SELECT status, count(*), sum(tokens), sum(seconds), min(started_at), "
                           "max(finished_at) FROM item WHERE job = ?1 GROUP BY status",
                           -1, &st, NULL) != SQLITE_OK)
        return fmb_queue_sql_fail(q, err, "counts");
    sqlite3_bind_text(st, 1, q->job, -1, SQLITE_STATIC);
    c->first_started = NAN;
    c->last_finished = NAN;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *s = (const char *)sqlite3_column_text(st, 0);
        int64_t n = sqlite3_column_int64(st, 1);
        if (!strcmp(s, "pending"))
            c->pending = n;
        else if (!strcmp(s, "running"))
            c->running = n;
        else if (!strcmp(s, "done")) {
            c->done = n;
            c->tokens = sqlite3_column_int64(st, 2);
            c->seconds = sqlite3_column_double(st, 3);
            if (sqlite3_column_type(st, 4) != SQLITE_NULL)
                c->first_started = sqlite3_column_double(st, 4);
            if (sqlite3_column_type(st, 5) != SQLITE_NULL)
                c->last_finished = sqlite3_column_double(st, 5);
        } else if (!strcmp(s, "failed"))
            c->failed = n;
        else if (!strcmp(s, "dead"))
            c->dead = n;
    }
    /* A read error (a corrupt file) must not pass for an empty queue. */
    fmb_status s = rc == SQLITE_DONE ? FMB_OK : fmb_queue_sql_fail(q, err, "counts");
    sqlite3_finalize(st);
    return s;
}

fmb_status fmb_queue_retry_failed(fmb_queue *q, int64_t *n, fmb_err *err)
{
    if (exec(q, "BEGIN IMMEDIATE") != SQLITE_OK)
        return fmb_queue_sql_fail(q, err, "cannot lock");
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(
            q->db,
            "UPDATE item SET status = 'pending', attempts = 0, kills = 0, error = NULL, "
            "finished_at = NULL WHERE job = ?1 AND status IN ('failed', 'dead')",
            -1, &st, NULL) != SQLITE_OK) {
        return abort_tx(q, err, "retry");
    }
    sqlite3_bind_text(st, 1, q->job, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    *n = sqlite3_changes(q->db);
    if (rc != SQLITE_DONE || exec(q, "COMMIT") != SQLITE_OK) {
        return abort_tx(q, err, "retry");
    }
    return FMB_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* heartbeat: a thread with its own connection extends this process's leases. */

static void *heartbeat_main(void *arg)
{
    fmb_queue *q = arg;
    sqlite3 *db = NULL;
    fmb_err err;
    if (open_db(q->path, 0, &db, &err))
        return NULL;
    double period = q->lease_seconds / 3;
    if (period < 0.5)
        period = 0.5;
    pthread_mutex_lock(&q->hb_mu);
    while (!q->hb_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double t = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9 + period;
        ts.tv_sec = (time_t)t;
        ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
        pthread_cond_timedwait(&q->hb_cv, &q->hb_mu, &ts);
        if (q->hb_stop)
            break;
        pthread_mutex_unlock(&q->hb_mu);
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db,
                               "UPDATE item SET lease_expires = ?1 WHERE job = ?2 AND status = "
                               "'running' AND lease_host = ?3 AND lease_pid = ?4 AND "
                               "lease_start = ?5",
                               -1, &st, NULL) == SQLITE_OK) {
            sqlite3_bind_double(st, 1, wall_now() + q->lease_seconds);
            sqlite3_bind_text(st, 2, q->job, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 3, q->host, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 4, q->pid);
            sqlite3_bind_int64(st, 5, q->start);
            sqlite3_step(st);
            sqlite3_finalize(st);
        }
        pthread_mutex_lock(&q->hb_mu);
    }
    pthread_mutex_unlock(&q->hb_mu);
    sqlite3_close(db);
    return NULL;
}

fmb_status fmb_queue_heartbeat_start(fmb_queue *q, fmb_err *err)
{
    if (q->hb_running)
        return FMB_OK;
    q->hb_stop = 0;
    if (pthread_create(&q->hb, NULL, heartbeat_main, q))
        return fmb_fail(err, FMB_EINTERNAL, "cannot start the lease heartbeat thread");
    q->hb_running = 1;
    return FMB_OK;
}

void fmb_queue_heartbeat_stop(fmb_queue *q)
{
    if (!q->hb_running)
        return;
    pthread_mutex_lock(&q->hb_mu);
    q->hb_stop = 1;
    pthread_cond_signal(&q->hb_cv);
    pthread_mutex_unlock(&q->hb_mu);
    pthread_join(q->hb, NULL);
    q->hb_running = 0;
}
