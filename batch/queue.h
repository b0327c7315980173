/*
 * queue: the job's output SQLite file as a work queue and result sink.
 *
 * Protocol (schemas/001_init.sql has the states):
 *   claim     BEGIN IMMEDIATE; insert the key if new; UPDATE ... RETURNING takes it when it is
 *             pending, changed (content hash differs: old results deleted), or running under a
 *             lease whose owner is gone (same host, pid dead or restarted) or expired. A worker
 *             that crashed max_attempts times on an item makes it dead instead (below).
 *   complete  one transaction: the item's result rows + done, fenced by the lease token.
 *   fail      failed with a reason (a data error: not retried unless the content changes).
 *   release   back to pending without counting the attempt (SIGINT/SIGTERM).
 * A heartbeat thread with its own connection renews this process's leases.
 *
 * Deaths and attempts. A worker that dies holding items leaves them running under a lease
 * of a gone owner; the next claim of each decides from the owner's worker file
 * (<output>.worker-<host>-<pid>-<start>, made by fmb_queue_worker_start) what the death says
 * about the item:
 *   crash    the worker died of a signal it raised itself (SIGSEGV, SIGBUS, SIGFPE, SIGILL,
 *            SIGABRT: its handler marked the file) while the item was in progress: the item
 *            may have caused it, so it counts as an attempt (max_attempts: dead).
 *   killed   no crash mark (SIGKILL, the OOM killer, a power loss, a lease that ran out) and
 *            the item was in progress: not an attempt, but counted in item.kills and bounded
 *            by fmb_queue_kill_limit (10 × max_attempts), so an item that exhausts memory
 *            every time is dead after that many kills instead of looping forever.
 *   idle     the item was held but not in progress (claimed for a batch, not started): neither.
 *   unknown  no worker file (a worker from before worker files): an attempt, as before.
 * "In progress" is what the worker said through fmb_queue_working: a worker holding many items
 * (a batch) marks only those whose processing has begun, so a crash counts against those and
 * not against every item it holds. finish, fail and release take an item out of the set.
 *
 * Ownership: fmb_queue_open returns a handle the caller closes with fmb_queue_close. Strings
 * passed in are copied or used only during the call.
 */
#ifndef FMB_QUEUE_H
#define FMB_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "batch/fault.h"
#include "batch/result_cols.h"
#include "kernels/base.h"

typedef struct fmb_queue fmb_queue;

typedef enum {
    FMB_CLAIM_TAKEN = 0, /* this worker now holds the item */
    FMB_CLAIM_DONE,      /* already done (same content) */
    FMB_CLAIM_FAILED,    /* already failed or dead (same content) */
    FMB_CLAIM_BUSY,      /* another live worker holds it */
    FMB_CLAIM_DEAD       /* just marked dead: attempts exhausted */
} fmb_claim;

typedef struct {
    int64_t pending, running, done, failed, dead;
    int64_t tokens; /* document tokens of done items */
    double seconds; /* summed item wall time of done items */
    double first_started, last_finished;
} fmb_queue_counts;

/* One result row: the ROW_* fields of batch/result_cols.h, in table order (task, kind, status,
 * note, doc_tokens, truncated, ..., text + text_len, ..., prefill_seconds, task_seconds; each
 * blob f with its size_t f_bytes). NULL / NAN / negative (for counts) mean SQL NULL. */
/* The value argument is expanded with these meanings (then they are gone again). */
#define ROW_TEXT(f) const char *f;
#define ROW_TEXTN(f, n)                                                                            \
    const char *f;                                                                                 \
    size_t n;
#define ROW_STATUS(f) const char *f;
#define ROW_INT(f)    int64_t f;
#define ROW_FLAG(f)   int f;
#define ROW_REAL(f)   double f;
#define ROW_BLOB(f)                                                                                \
    const void *f;                                                                                 \
    size_t f##_bytes;
#define CTX(what)
#define FMB_ROW_FIELD_(name, sql, enc, value, failed) value
typedef struct {
    FMB_RESULT_COLUMNS(FMB_ROW_FIELD_)
} fmb_result_row;
#undef ROW_TEXT
#undef ROW_TEXTN
#undef ROW_STATUS
#undef ROW_INT
#undef ROW_FLAG
#undef ROW_REAL
#undef ROW_BLOB
#undef CTX
#undef FMB_ROW_FIELD_

/* A row with every field NULL. */
fmb_result_row fmb_result_row_empty(void);

/* Opens (create != 0: creates) path. Existing files must carry this schema version. */
FMB_NODISCARD fmb_status fmb_queue_open(const char *path,
                                        const char *job_name,
                                        int create,
                                        int max_attempts,
                                        double lease_seconds,
                                        fmb_queue **out,
                                        fmb_err *err);
void fmb_queue_close(fmb_queue *q);

/* Fault injection (batch/fault.h; the reliability tests): q passes the after-claim and
 * after-commit points of f (borrowed; NULL: none). fmb_queue_fault_vfs makes every SQLite
 * connection of the process go through a VFS shim for f's SQLite and checkpoint points; call it
 * once, before fmb_queue_open (a no-op when f arms none of them). batch/queue_fault.c. */
void fmb_queue_set_fault(fmb_queue *q, fmb_fault *f);
FMB_NODISCARD fmb_status fmb_queue_fault_vfs(fmb_fault *f, fmb_err *err);

/* First run: stores the fingerprint and identity. Later runs: the stored fingerprint must be
 * equal; otherwise FMB_EINVAL and err shows the difference ("- old" / "+ new" lines). Growing a
 * job is the exception: when the new fingerprint only adds tasks (every old line is still
 * there, every new line is an added task's), it is stored and every done item goes back to
 * pending; its rows stay, and the runner runs only the tasks an item has no row for
 * (fmb_queue_item_tasks). fmb_queue_grown says how many items were reopened. */
FMB_NODISCARD fmb_status fmb_queue_bind_job(fmb_queue *q,
                                            const char *fingerprint,
                                            const char *model,
                                            const char *model_hash,
                                            const char *tokenizer_hash,
                                            fmb_err *err);

FMB_NODISCARD fmb_status fmb_queue_claim(fmb_queue *q,
                                         const char *key,
                                         const char *content_hash,
                                         size_t bytes,
                                         fmb_claim *outcome,
                                         int64_t *item_id,
                                         fmb_err *err);

/* complete = begin, add rows, finish. finish returns FMB_EINTERNAL-free FMB_OK with *lost = 1
 * (and rolls back) when the lease was taken by another worker meanwhile. */
FMB_NODISCARD fmb_status fmb_queue_begin(fmb_queue *q, fmb_err *err);
FMB_NODISCARD fmb_status fmb_queue_add_result(
    fmb_queue *q, int64_t item_id, const char *key, const fmb_result_row *r, fmb_err *err);
FMB_NODISCARD fmb_status fmb_queue_finish(
    fmb_queue *q, int64_t item_id, int64_t tokens, double seconds, int *lost, fmb_err *err);
void fmb_queue_rollback(fmb_queue *q);

/* Several items' writes in one transaction (a runner's batch): between batch_begin and
 * batch_commit, claim, begin/finish, fail and release write each item under a savepoint of its own
 * (still atomic and fenced by its lease; a lost lease rolls back that item alone) and the
 * disk sees one commit. A process killed before the commit leaves every item of the batch
 * running under its lease, reclaimed by the next run. */
FMB_NODISCARD fmb_status fmb_queue_batch_begin(fmb_queue *q, fmb_err *err);
FMB_NODISCARD fmb_status fmb_queue_batch_commit(fmb_queue *q, fmb_err *err);
/* Rolls the batch back (nothing of it lands; a no-op outside a batch, or after an error
 * that already rolled it back). */
void fmb_queue_batch_abort(fmb_queue *q);
int fmb_queue_in_batch(const fmb_queue *q); /* 1 between batch_begin and commit/abort */

FMB_NODISCARD fmb_status fmb_queue_fail(fmb_queue *q,
                                        int64_t item_id,
                                        const char *reason,
                                        fmb_err *err);
/* Records a source failure for key (claims it first; a done item with the same key is kept). */
FMB_NODISCARD fmb_status
fmb_queue_fail_key(fmb_queue *q, const char *key, const char *reason, int *recorded, fmb_err *err);
FMB_NODISCARD fmb_status fmb_queue_release(fmb_queue *q, int64_t item_id, fmb_err *err);

/* ---- items (batch/queue_items.c) ---- */

/* Records the document's doc_id and keep_fields meta (JSON object text; NULL: none) on the
 * item of key, when they differ from what it holds (every pass over the source). */
FMB_NODISCARD fmb_status fmb_queue_item_info(
    fmb_queue *q, const char *key, const char *doc_id, const char *meta, fmb_err *err);

/* prune: start, then every key the source yields (fmb_queue_prune_seen), then finish: the
 * items of this job whose key was not seen, with their results, counted as a compact JSON
 * object {"stale_items","stale_results","running","by_status","examples","removed"}
 * (examples: the first 20 keys), and with apply removed, in one transaction (items running
 * under another worker are counted in "running" and left alone). *json is the caller's. */
FMB_NODISCARD fmb_status fmb_queue_prune_start(fmb_queue *q, fmb_err *err);
FMB_NODISCARD fmb_status fmb_queue_prune_seen(fmb_queue *q, const char *key, fmb_err *err);
FMB_NODISCARD fmb_status fmb_queue_prune_finish(fmb_queue *q, int apply, char **json, fmb_err *err);

/* Items another pass over the source could take now (pending, or leases of gone owners). */
FMB_NODISCARD fmb_status fmb_queue_claimable(fmb_queue *q, int64_t *n, fmb_err *err);

FMB_NODISCARD fmb_status fmb_queue_counts_get(fmb_queue *q, fmb_queue_counts *c, fmb_err *err);

/* retry --failed: failed and dead items back to pending with attempts 0. */
FMB_NODISCARD fmb_status fmb_queue_retry_failed(fmb_queue *q, int64_t *n, fmb_err *err);

/* ---- the read side (batch/queue_results.c) ---- */

/* Failed and dead items grouped by reason (the error text up to its first ':'), most frequent
 * first, as a compact JSON array [{"reason","count","example"}] (example: the smallest key).
 * Text that is not valid UTF-8 is escaped as export does (reason_hex / example_hex added).
 * *json is the caller's (free). */
FMB_NODISCARD fmb_status fmb_queue_failures_json(fmb_queue *q, char **json, fmb_err *err);

/* Export of the result rows joined with their items: JSONL (one object per row) or CSV (a
 * header line, then one line per row; RFC 4180 quoting), ordered by item key and then the
 * job's task order. The columns are the table's (batch/result_cols.h) with doc_id after
 * item_key and meta (keep_fields) last, or o->columns (a comma list, in its order; an unknown
 * name is FMB_EINVAL listing the valid ones). include_failed adds one row per failed or dead
 * item (status failed/dead, note = the error, the result columns NULL). wide: one row per item
 * instead; the document's columns once, then per task of the job (in order) a group
 * "<task>.<column>" of the columns any of its rows has a value in (status always), extract as
 * "<task>.fields.<group>" and "<task>.fields_ok", meta as "meta.<field>". Numbers: the shortest
 * text that reads back to the same double (float32 blobs: the same float). tok (may be NULL):
 * the special tokens the ids of a generated text hold are cut from its text (the ids stay).
 * A text value that is not valid UTF-8 is exported escaped (docs/DECISIONS.md, "Lossless
 * export of non-UTF-8 text"): every backslash doubled and every byte of an invalid sequence as
 * \xHH, with the raw bytes in hex in an extra "<column>_hex" value (JSONL: right after the
 * column, only in such rows; CSV: a column appended to the header only when some row needs it,
 * empty elsewhere). */
typedef struct fmb_queue_export fmb_queue_export;
typedef enum { FMB_EXPORT_JSONL = 0, FMB_EXPORT_CSV } fmb_export_format;
struct fmb_tok;
typedef struct {
    fmb_export_format format;
    int include_failed, wide;
    const char *const *tasks; /* the job's task names in job order [n_tasks] */
    size_t n_tasks;
    const unsigned char *task_on; /* [n_tasks] 1: export its rows; NULL: every task */
    const char *columns;          /* comma list, NULL: all */
    const struct fmb_tok *tok;
} fmb_export_opts;

FMB_NODISCARD fmb_status fmb_queue_export_open(fmb_queue *q,
                                               const fmb_export_opts *o,
                                               fmb_queue_export **out,
                                               fmb_err *err);
/* The next line with its '\n' (CSV: the header first). *line is NULL at the end; it is
 * borrowed until the next call. */
FMB_NODISCARD fmb_status fmb_queue_export_next(fmb_queue_export *x,
                                               const char **line,
                                               size_t *len,
                                               fmb_err *err);
void fmb_queue_export_close(fmb_queue_export *x);

/* ---- the report's queries (batch/queue_report.c; `fmbatch report`, batch/report.h) ---- */

/* One task's result rows: ok and skipped rows, truncated documents, summed task seconds. */
typedef struct {
    int64_t ok, skipped, truncated;
    double seconds;
} fmb_queue_task_sum;
FMB_NODISCARD fmb_status fmb_queue_task_sum_get(fmb_queue *q,
                                                const char *task,
                                                fmb_queue_task_sum *out,
                                                fmb_err *err);

/* Summary of one score column (FMB_QUEUE_BPB or FMB_QUEUE_PPL) over a task's rows that have
 * a value: n, min, median (the mean of the middle two for an even n), mean, max (NAN when
 * n = 0). */
typedef enum { FMB_QUEUE_BPB = 0, FMB_QUEUE_PPL } fmb_queue_score_col;
typedef struct {
    int64_t n;
    double min, median, mean, max;
} fmb_queue_stats;
FMB_NODISCARD fmb_status fmb_queue_score_stats(
    fmb_queue *q, const char *task, fmb_queue_score_col col, fmb_queue_stats *out, fmb_err *err);
/* Bits per byte in bins equal-width bins over [lo, hi] (the last one closed; values outside
 * are clamped into the end bins; hi <= lo puts every value in bin 0): counts[bins]. */
FMB_NODISCARD fmb_status fmb_queue_score_hist(
    fmb_queue *q, const char *task, double lo, double hi, int bins, int64_t *counts, fmb_err *err);

/* One document's row as the report shows it (fields of other kinds are NULL/NAN/-1). */
typedef struct {
    char *key;          /* item key */
    char *content_hash; /* of the bytes the run saw (item.content_hash) */
    int64_t tokens;     /* score: tokens scored */
    int truncated;
    double bits_per_byte, ppl; /* score */
    char *text;                /* generate: the generated text, text_len bytes */
    size_t text_len;
    char *extract;       /* generate: the extract JSON, or NULL */
    char *finish_reason; /* generate */
} fmb_queue_doc;
void fmb_queue_docs_free(fmb_queue_doc *d, size_t n);

/* The n lowest (worst = 0) or highest (worst = 1) bits-per-byte rows of a score task, ties
 * by key. *docs is the caller's (fmb_queue_docs_free). */
FMB_NODISCARD fmb_status fmb_queue_score_top(fmb_queue *q,
                                             const char *task,
                                             int worst,
                                             size_t n,
                                             fmb_queue_doc **docs,
                                             size_t *n_docs,
                                             fmb_err *err);
/* The first n ok rows of a generate task by key. */
FMB_NODISCARD fmb_status fmb_queue_generate_rows(
    fmb_queue *q, const char *task, size_t n, fmb_queue_doc **docs, size_t *n_docs, fmb_err *err);

/* A task's ok rows counted by one value: FMB_QUEUE_BY_BEST (choice: index = best_index, value
 * = best, ordered by index), FMB_QUEUE_BY_FINISH (generate: finish_reason) or
 * FMB_QUEUE_BY_EXTRACT (generate: "matched", "no match" or "no extract"); those two most
 * frequent first (index -1). */
typedef enum { FMB_QUEUE_BY_BEST = 0, FMB_QUEUE_BY_FINISH, FMB_QUEUE_BY_EXTRACT } fmb_queue_by;
typedef struct {
    char *value; /* NULL for a NULL value */
    int64_t index, count;
} fmb_queue_group;
FMB_NODISCARD fmb_status fmb_queue_groups(fmb_queue *q,
                                          const char *task,
                                          fmb_queue_by by,
                                          fmb_queue_group **groups,
                                          size_t *n_groups,
                                          fmb_err *err);
void fmb_queue_groups_free(fmb_queue_group *g, size_t n);

/* Items reopened for added tasks by the last fmb_queue_bind_job (0: none). */
int64_t fmb_queue_grown(const fmb_queue *q);

/* The names of the tasks the item has result rows for (*names[*n], the caller frees each and
 * the array; NULL and 0 for none). */
FMB_NODISCARD fmb_status
fmb_queue_item_tasks(fmb_queue *q, const char *key, char ***names, size_t *n, fmb_err *err);

/* The queue status of the item key ("done", "failed", ...; NULL when the queue has no such
 * item). *status is the caller's. */
FMB_NODISCARD fmb_status fmb_queue_item_status(fmb_queue *q,
                                               const char *key,
                                               char **status,
                                               fmb_err *err);

/* The error text of the item key (NULL when it has none). *error is the caller's. */
FMB_NODISCARD fmb_status fmb_queue_item_error(fmb_queue *q,
                                              const char *key,
                                              char **error,
                                              fmb_err *err);

/* Makes this process a worker with a worker file (see "Deaths and attempts") and installs
 * one-shot handlers for SIGSEGV, SIGBUS, SIGFPE, SIGILL and SIGABRT that mark it crashed
 * (async-signal-safe: a write to the pre-opened file) before the signal's default action.
 * One worker queue per process; fmb_queue_close restores the handlers and removes the file.
 * Without it (tests, tools) deaths count as attempts as before. */
FMB_NODISCARD fmb_status fmb_queue_worker_start(fmb_queue *q, fmb_err *err);
/* Marks item_id as in progress (on != 0: its processing begins now) or not. A death of the
 * process counts against the items in progress only. Cheap: one pwrite of the list. */
void fmb_queue_working(fmb_queue *q, int64_t item_id, int on);
/* Kills (deaths not of the item's making, while in progress) after which an item is dead. */
int fmb_queue_kill_limit(int max_attempts);

/* Starts/stops the lease heartbeat thread (renews every lease_seconds / 3). */
FMB_NODISCARD fmb_status fmb_queue_heartbeat_start(fmb_queue *q, fmb_err *err);
void fmb_queue_heartbeat_stop(fmb_queue *q);

/* ---- merging shards (batch/queue_merge.c; `fmbatch merge`, docs/JOBS.md "Shards") ---- */

/* What an output file says about itself, read without changing it. */
typedef struct {
    char *job_name, *fingerprint; /* meta; NULL when absent */
    char *merged_shards;          /* meta of a merged output: "0,1,4" (NULL: none) */
    char *shard_count;            /* meta of a merged output: "7" (NULL: none) */
    int64_t items, unfinished;    /* items; of those, pending or running */
    int complete;                 /* meta source_complete: a run went through the whole source */
    int schema_version;           /* PRAGMA user_version */
} fmb_queue_file_info;

FMB_NODISCARD fmb_status fmb_queue_file_info_read(const char *path,
                                                  fmb_queue_file_info *info,
                                                  fmb_err *err);
void fmb_queue_file_info_free(fmb_queue_file_info *info);

/* Marks (complete = 1) or unmarks the output as gone through: a run unmarks it when it starts
 * and marks it when it ends with the whole source seen and no item pending or running. A
 * worker may have no item pending between two windows, so merge takes only marked shards. */
FMB_NODISCARD fmb_status fmb_queue_mark_complete(fmb_queue *q, int complete, fmb_err *err);

/* Copies the items and result rows of the output shard_path (shard index of count; its
 * fingerprint without the shard line: fingerprint) into q, in one transaction: item ids are
 * renumbered, the rows follow their item. Refused (FMB_EINVAL, nothing written) when an item key
 * is in q already or a key of the file does not hash to index (batch/shard.h). The first shard
 * of a new q also gives it the shard's meta, with fingerprint (and its hash) in place of the
 * shard's; every shard sets meta merged_shards (the caller's list, with index) and shard_count.
 * *items, *rows: what was copied. */
FMB_NODISCARD fmb_status fmb_queue_merge_shard(fmb_queue *q,
                                               const char *shard_path,
                                               const char *fingerprint,
                                               int64_t index,
                                               int64_t count,
                                               const char *merged_shards,
                                               int64_t *items,
                                               int64_t *rows,
                                               fmb_err *err);

#endif
