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

/* One result row; NULL / NAN / negative (for counts) mean SQL NULL. */
typedef struct {
    const char *task, *kind, *status, *note;
    int64_t doc_tokens;
    int truncated;
    int64_t prompt_tokens;
    int64_t tokens;
    double sum_nll, mean_nll, ppl, bits_per_byte;
    const void *token_nll, *token_rank, *token_offset, *token_topk_ids, *token_topk_logprobs;
    size_t token_nll_bytes, token_rank_bytes, token_offset_bytes, token_topk_ids_bytes,
        token_topk_logprobs_bytes;
    const char *choices_json, *best;
    int64_t best_index;
    const char *text;
    size_t text_len;
    const char *ids_json, *logprobs_json, *finish_reason, *extract_json;
    int64_t seed;
    const char *sampling_json;
    double prefill_seconds, task_seconds;
} fmb_result_row;

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

/* First run: stores the fingerprint and identity. Later runs: the stored fingerprint must be
 * equal; otherwise FMB_EINVAL and err shows the difference ("- old" / "+ new" lines). */
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

FMB_NODISCARD fmb_status fmb_queue_fail(fmb_queue *q,
                                        int64_t item_id,
                                        const char *reason,
                                        fmb_err *err);
/* Records a source failure for key (claims it first; a done item with the same key is kept). */
FMB_NODISCARD fmb_status
fmb_queue_fail_key(fmb_queue *q, const char *key, const char *reason, int *recorded, fmb_err *err);
FMB_NODISCARD fmb_status fmb_queue_release(fmb_queue *q, int64_t item_id, fmb_err *err);

/* Items another pass over the source could take now (pending, or leases of gone owners). */
FMB_NODISCARD fmb_status fmb_queue_claimable(fmb_queue *q, int64_t *n, fmb_err *err);

FMB_NODISCARD fmb_status fmb_queue_counts_get(fmb_queue *q, fmb_queue_counts *c, fmb_err *err);

/* retry --failed: failed and dead items back to pending with attempts 0. */
FMB_NODISCARD fmb_status fmb_queue_retry_failed(fmb_queue *q, int64_t *n, fmb_err *err);

/* The underlying connection, for read-only reports (status, export). Borrowed. */
struct sqlite3 *fmb_queue_db(fmb_queue *q);

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

/* 128-bit content hash of bytes as 32 hex chars + NUL. */
void fmb_queue_content_hash(const void *data, size_t len, char out[33]);

#endif
