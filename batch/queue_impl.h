/*
 * queue_impl: what the queue module's files (batch/queue.c: open, claims, writes, heartbeat;
 * batch/queue_results.c and batch/queue_report.c: the read side) share. Not for other modules:
 * nothing outside these files touches the SQLite connection.
 */
#ifndef FMB_QUEUE_IMPL_H
#define FMB_QUEUE_IMPL_H

#include <pthread.h>
#include <sqlite3.h>

#include "batch/queue.h"

struct fmb_queue {
    sqlite3 *db;
    char *path;
    char *job;
    int max_attempts;
    double lease_seconds;
    char host[256];
    int64_t pid, start; /* this process: the lease owner */
    int64_t token_seq;
    char *model, *model_hash, *tokenizer_hash;
    /* the leases this handle holds (a worker holds one per item in its batch): item ids and
     * their lease tokens, [n_held] */
    int64_t *held_id, *held_tok;
    size_t n_held, cap_held;
    int in_batch;  /* inside fmb_queue_batch_begin/commit: items write under savepoints */
    int64_t grown; /* items reopened by fmb_queue_bind_job for added tasks */
    /* worker file (fmb_queue_worker_start): path, fd, and the items in progress it lists */
    char *wpath;
    int wfd;
    int64_t *working;
    size_t n_working, cap_working;
    void *altstack;
    /* heartbeat */
    pthread_t hb;
    int hb_running;
    pthread_mutex_t hb_mu;
    pthread_cond_t hb_cv;
    int hb_stop;
    fmb_fault *fault; /* borrowed; NULL: no fault injection */
};

/* "path: what: SQLite's message" as a FMB_EIO status. */
fmb_status fmb_queue_sql_fail(fmb_queue *q, fmb_err *err, const char *what);

#endif
