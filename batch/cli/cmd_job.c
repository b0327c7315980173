/*
 * cmd_job: the job commands `run`, `check`, `status`, `export`, `retry`, `prune` and `report`
 * (docs/ARCHITECTURE.md).
 *
 * run: load the job, hash the model and tokenizer (fingerprint), load them, prepare the tasks,
 * open the output (queue) and the source, then for each document the source yields: claim it,
 * run the tasks, write its rows and mark it done in one transaction (or record why it failed).
 * A pass that leaves claimable items behind (released by an interrupted worker, or orphaned by
 * a dead one) is followed by another pass, up to three.
 *
 * Signals: the first SIGINT/SIGTERM sets fmb_job_signal (the one process-wide flag, an
 * fmb_stop_flag: the handler runs on the main thread, the engine reads it on its own); the current
 * item is released without counting an attempt at the next check, and the run exits 130/143. The
 * handler is one-shot (SA_RESETHAND): a second signal kills at once, and the next run reclaims
 * the item because its owner process is gone.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "batch/cli/cli.h"
#include "batch/ident.h"
#include "batch/job.h"
#include "batch/prefetch.h"
#include "batch/progress.h"
#include "batch/queue.h"
#include "batch/report.h"
#include "batch/shard.h"
#include "batch/source.h"
#include "batch/task.h"
#include "engine/hash.h"
#include "engine/tokenizer.h"

/* The signal that asked the run to stop (0: none). Written only by the handler. */
static fmb_stop_flag fmb_job_signal;

static void on_signal(int sig)
{
    fmb_job_signal = sig;
}

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* Shared option parsing: JOB.toml plus the engine options and a few per command. */
typedef struct {
    const char *job_path;
    fmb_engine_opts eo;
    fmb_progress_mode progress;
    double progress_interval;
    int64_t max_items;
    const char *format;
    int failed, include_failed;
    const char *html; /* report: --html FILE */
    int64_t top;      /* report: --top N (0: the default) */
    int no_snippets;
    /* export */
    const char *tasks[64]; /* --task values as given (comma lists), borrowed from argv */
    int n_tasks;
    const char *columns; /* --columns (the last one) */
    int wide, keep_special;
    int apply;           /* prune --apply */
    int count_source;    /* status --count-source */
    const char *shard;   /* --shard I/N | auto (NULL: [job].shard) */
    int64_t shard_count; /* --shard-count N (0: none) */
    const char *devices; /* run --devices all|0,1,... (NULL: this process is the worker) */
    int64_t slot, slots; /* run --worker-slot K/N (slots 0: none) */
} job_args;

enum {
    OPT_BACKEND = 256,
    OPT_DTYPE,
    OPT_CHUNK,
    OPT_MEM,
    OPT_THREADS,
    OPT_MAX_BATCH,
    OPT_KERNEL,
    OPT_PROGRESS,
    OPT_PROGRESS_INTERVAL,
    OPT_MAX_ITEMS,
    OPT_FORMAT,
    OPT_FAILED,
    OPT_INCLUDE_FAILED,
    OPT_HTML,
    OPT_TOP,
    OPT_NO_SNIPPETS,
    OPT_TASK,
    OPT_COLUMNS,
    OPT_WIDE,
    OPT_KEEP_SPECIAL,
    OPT_APPLY,
    OPT_SHARD,
    OPT_SHARD_COUNT,
    OPT_DEVICE,
    OPT_DEVICES,
    OPT_WORKER_SLOT,
    OPT_COUNT_SOURCE
};

/* The options of the job commands, one table: name, argument, help, default, and which
 * commands take it. `fmbatch CMD --help` prints the command's rows; getopt is given only them,
 * so an option of another command is refused. */
enum {
    C_RUN = 1,
    C_CHECK = 2,
    C_STATUS = 4,
    C_EXPORT = 8,
    C_RETRY = 16,
    C_REPORT = 32,
    C_PRUNE = 64,
    C_ALL = 127
};
typedef struct {
    const char *name, *arg, *help, *dflt;
    int val;
    unsigned cmds;
} job_opt;
static const job_opt job_opts[] = {
    {"backend", "auto|cpu|cuda", "engine backend", "[job] backend, else auto", OPT_BACKEND,
     C_RUN | C_CHECK},
    {"dtype", "bf16|f32", "CUDA compute type", "[job] dtype, else bf16", OPT_DTYPE,
     C_RUN | C_CHECK},
    {"chunk-tokens", "N", "prefill chunk length", "[job] chunk_tokens, else 4096 (cuda)", OPT_CHUNK,
     C_RUN | C_CHECK},
    {"mem-limit", "SIZE", "device memory to stay under (e.g. 22GiB)", "[job] mem_limit, else none",
     OPT_MEM, C_RUN | C_CHECK},
    {"threads", "N", "CPU threads", "[job] threads, else all cores", OPT_THREADS, C_RUN | C_CHECK},
    {"max-batch", "N", "documents in flight (results do not depend on it)",
     "[job] max_batch, else 128 on a GPU, 8 on the CPU", OPT_MAX_BATCH, C_RUN | C_CHECK},
    {"kernel", "K=V,...", "CUDA kernel choices (README)", "[job] kernel, else the defaults",
     OPT_KERNEL, C_RUN | C_CHECK},
    {"progress", "auto|bar|plain|none|machine",
     "progress display (machine: a line of counts a quarter second, for a parent program; "
     "--devices draws one for all its workers)",
     "auto", OPT_PROGRESS, C_RUN},
    {"progress-interval", "SECONDS", "seconds between plain progress lines", "30",
     OPT_PROGRESS_INTERVAL, C_RUN},
    {"max-items", "N", "stop after claiming N items", "no limit", OPT_MAX_ITEMS, C_RUN},
    {"format", "jsonl|csv", "export format", "jsonl", OPT_FORMAT, C_EXPORT},
    {"failed", NULL, "put failed and dead items back in the queue", NULL, OPT_FAILED, C_RETRY},
    {"include-failed", NULL, "also one row per failed or dead item", NULL, OPT_INCLUDE_FAILED,
     C_EXPORT},
    {"task", "NAME[,NAME...]", "only these tasks' rows (repeatable)", "every task, in job order",
     OPT_TASK, C_EXPORT},
    {"columns", "COL[,COL...]", "only these columns, in this order (an unknown one lists them)",
     "all", OPT_COLUMNS, C_EXPORT},
    {"wide", NULL, "one row per document, a column group per task (ppl.mean_nll, title.text)", NULL,
     OPT_WIDE, C_EXPORT},
    {"keep-special", NULL, "keep special tokens in generated text (ids are kept either way)", NULL,
     OPT_KEEP_SPECIAL, C_EXPORT},
    {"apply", NULL, "remove them (one transaction); without it prune only reports", NULL, OPT_APPLY,
     C_PRUNE},
    {"count-source", NULL,
     "also read the source through: its document count, those not queued yet, and the ETA "
     "over them",
     NULL, OPT_COUNT_SOURCE, C_STATUS},
    {"html", "FILE", "also write the report as one self-contained HTML page", NULL, OPT_HTML,
     C_REPORT},
    {"top", "N", "best and worst documents (and answers) shown per task", "5", OPT_TOP, C_REPORT},
    {"no-snippets", NULL, "do not re-read the source for document snippets", NULL, OPT_NO_SNIPPETS,
     C_REPORT},
    {"shard", "I/N|auto", "only the items whose key hashes to I mod N (docs/JOBS.md)",
     "[job] shard, else all items", OPT_SHARD, C_ALL},
    {"shard-count", "N", "the number of shards for --shard auto on Kubernetes",
     "SLURM_ARRAY_TASK_COUNT", OPT_SHARD_COUNT, C_ALL},
    {"device", "N", "the CUDA device (among the visible ones)", "0", OPT_DEVICE, C_RUN | C_CHECK},
    {"devices", "all|0,1,...", "one worker process per device, all on the one output", NULL,
     OPT_DEVICES, C_RUN},
    {"worker-slot", "K/N",
     "one of N workers on the output (--devices sets it): the first pass takes the documents at "
     "positions K, K+N, ... of the source and leaves the others queued; later passes take what "
     "is left",
     "none", OPT_WORKER_SLOT, C_RUN},
    {"help", NULL, "this help", NULL, 'h', C_ALL},
};
#define N_JOB_OPTS (sizeof job_opts / sizeof job_opts[0])

static unsigned cmd_bit(const char *cmd)
{
    return !strcmp(cmd, "run")      ? C_RUN
           : !strcmp(cmd, "check")  ? C_CHECK
           : !strcmp(cmd, "status") ? C_STATUS
           : !strcmp(cmd, "export") ? C_EXPORT
           : !strcmp(cmd, "report") ? C_REPORT
           : !strcmp(cmd, "prune")  ? C_PRUNE
                                    : C_RETRY;
}

static const job_opt *job_opt_of(int val)
{
    for (size_t i = 0; i < N_JOB_OPTS; i++)
        if (job_opts[i].val == val)
            return &job_opts[i];
    return NULL;
}

static void job_help(const char *cmd, unsigned bit)
{
    printf("usage: fmbatch %s JOB.toml [options]\n\noptions:\n", cmd);
    for (size_t i = 0; i < N_JOB_OPTS; i++) {
        const job_opt *o = &job_opts[i];
        if (!(o->cmds & bit))
            continue;
        char lhs[64];
        snprintf(lhs, sizeof lhs, "--%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        printf("  %-32s %s%s%s%s\n", lhs, o->help, o->dflt ? " (default: " : "",
               o->dflt ? o->dflt : "", o->dflt ? ")" : "");
    }
}

static int parse_args(int argc, char **argv, job_args *a);

/* parse_args for a command: 1 when the command must return *rc at once (0 after --help,
 * FMB_EXIT_USAGE on a usage error), else 0. */
static int parse_or_exit(int argc, char **argv, job_args *a, int *rc)
{
    int pa = parse_args(argc, argv, a);
    *rc = pa > 0 ? FMB_EXIT_OK : FMB_EXIT_USAGE;
    return pa != 0;
}

/* Returns 0, -1 on a usage error, 1 after --help (printed). */
static int parse_args(int argc, char **argv, job_args *a)
{
    unsigned bit = cmd_bit(argv[0]);
    struct option opts[N_JOB_OPTS + 1];
    size_t no = 0;
    for (size_t i = 0; i < N_JOB_OPTS; i++)
        if (job_opts[i].cmds & bit)
            opts[no++] =
                (struct option){job_opts[i].name, job_opts[i].arg ? required_argument : no_argument,
                                0, job_opts[i].val};
    opts[no] = (struct option){0, 0, 0, 0};
    const char *cmd = argv[0];
    memset(a, 0, sizeof *a);
    a->progress_interval = 30;
    optind = 1;
    opterr = 1;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int bad = 0;
        uint64_t u;
        double d;
        switch (c) {
        case OPT_BACKEND:
        case OPT_DTYPE:
        case OPT_CHUNK:
        case OPT_MEM:
        case OPT_THREADS:
        case OPT_MAX_BATCH:
        case OPT_KERNEL:
            fmb_cli_engine_opt(job_opt_of(c)->name, optarg, &a->eo, &bad);
            if (bad) {
                fmb_cli_error(cmd, "bad value for --%s: '%s'", job_opt_of(c)->name, optarg);
                return -1;
            }
            break;
        case OPT_PROGRESS:
            if (fmb_progress_mode_parse(optarg, &a->progress)) {
                fmb_cli_error(cmd, "--progress must be auto, bar, plain, none or machine");
                return -1;
            }
            break;
        case OPT_PROGRESS_INTERVAL:
            if (fmb_cli_parse_float(optarg, &d) || d <= 0) {
                fmb_cli_error(cmd, "--progress-interval must be a positive number of seconds");
                return -1;
            }
            a->progress_interval = d;
            break;
        case OPT_MAX_ITEMS:
            if (fmb_cli_parse_u64(optarg, &u) || u == 0) {
                fmb_cli_error(cmd, "--max-items must be a positive integer");
                return -1;
            }
            a->max_items = (int64_t)u;
            break;
        case OPT_FORMAT:
            if (strcmp(optarg, "jsonl") && strcmp(optarg, "csv")) {
                fmb_cli_error(cmd, "--format must be jsonl or csv");
                return -1;
            }
            a->format = optarg;
            break;
        case OPT_FAILED:
            a->failed = 1;
            break;
        case OPT_INCLUDE_FAILED:
            a->include_failed = 1;
            break;
        case OPT_HTML:
            a->html = optarg;
            break;
        case OPT_TOP:
            if (fmb_cli_parse_u64(optarg, &u) || u == 0 || u > 100000) {
                fmb_cli_error(cmd, "--top must be an integer from 1 to 100000");
                return -1;
            }
            a->top = (int64_t)u;
            break;
        case OPT_NO_SNIPPETS:
            a->no_snippets = 1;
            break;
        case OPT_TASK:
            if (a->n_tasks == (int)(sizeof a->tasks / sizeof a->tasks[0])) {
                fmb_cli_error(cmd, "too many --task options (give a comma list)");
                return -1;
            }
            a->tasks[a->n_tasks++] = optarg;
            break;
        case OPT_COLUMNS:
            a->columns = optarg;
            break;
        case OPT_WIDE:
            a->wide = 1;
            break;
        case OPT_KEEP_SPECIAL:
            a->keep_special = 1;
            break;
        case OPT_APPLY:
            a->apply = 1;
            break;
        case OPT_COUNT_SOURCE:
            a->count_source = 1;
            break;
        case OPT_SHARD:
            a->shard = optarg;
            break;
        case OPT_DEVICE:
            if (fmb_cli_parse_u64(optarg, &u) || u > 4096) {
                fmb_cli_error(cmd, "--device must be a device number");
                return -1;
            }
            a->eo.device = (int)u;
            break;
        case OPT_DEVICES:
            a->devices = optarg;
            break;
        case OPT_WORKER_SLOT: { /* the I/N form of --shard (batch/shard.h), without auto */
            fmb_err serr;
            const fmb_shard_env none = {0};
            if (!strcmp(optarg, "auto") ||
                fmb_shard_parse(optarg, &none, 0, &a->slot, &a->slots, &serr) || a->slots > 4096) {
                fmb_cli_error(cmd, "--worker-slot must be K/N with 0 <= K < N <= 4096");
                return -1;
            }
            break;
        }
        case OPT_SHARD_COUNT:
            if (fmb_cli_parse_u64(optarg, &u) || u == 0 || u > 1000000) {
                fmb_cli_error(cmd, "--shard-count must be an integer from 1 to 1000000");
                return -1;
            }
            a->shard_count = (int64_t)u;
            break;
        case 'h':
            job_help(cmd, bit);
            return 1;
        default:
            return -1;
        }
    }
    if (optind != argc - 1) {
        fmb_cli_error(cmd, "expected one job file (fmbatch %s JOB.toml [options])", cmd);
        return -1;
    }
    a->job_path = argv[optind];
    return 0;
}

/* fmb_job_load and the shard (--shard, [job].shard): every job command sees the same output. */
static fmb_status job_load(const job_args *a, fmb_job **job, fmb_err *err)
{
    fmb_status s = fmb_job_load(a->job_path, job, err);
    if (!s && (s = fmb_cli_job_shard(*job, a->shard, a->shard_count, err))) {
        fmb_job_free(*job);
        *job = NULL;
    }
    return s;
}

/* Job settings fill engine options the command line did not set. Kernel choices: the command
 * line, then the legacy environment, then [job].kernel; job->kernel becomes the result (the
 * fingerprint records it). */
static int job_engine_opts(fmb_job *job, fmb_engine_opts *eo, const char *cmd)
{
    int bad = 0;
    fmb_engine_opts env = {0};
    if (fmb_cli_engine_env(cmd, &env))
        return -1;
    fmb_kernel_opts_fill(&eo->kernel, &env.kernel);
    fmb_kernel_opts_fill(&eo->kernel, &job->kernel);
    job->kernel = eo->kernel;
    if (eo->backend == FMB_BACKEND_AUTO)
        fmb_cli_engine_opt("backend", job->backend, eo, &bad);
    if (!bad && eo->compute == FMB_COMPUTE_DEFAULT && job->dtype)
        fmb_cli_engine_opt("dtype", job->dtype, eo, &bad);
    if (!eo->chunk_tokens && job->chunk_tokens)
        eo->chunk_tokens = (size_t)job->chunk_tokens;
    if (!eo->threads && job->threads)
        eo->threads = (int)job->threads;
    if (!eo->max_batch && job->max_batch)
        eo->max_batch = (size_t)job->max_batch;
    if (!bad && !eo->mem_limit && job->mem_limit)
        fmb_cli_engine_opt("mem-limit", job->mem_limit, eo, &bad);
    if (bad)
        fmb_cli_error(cmd, "%s: [job] has a bad backend, dtype or mem_limit", job->path);
    return bad ? -1 : 0;
}

/* ---------------------------------------------------------------------------------------- */
/* run */

#define FMB_GPU_MAX_BATCH 128
/* Bytes of documents one window may hold (a bound on host memory, not on the batch). */
#define FMB_WINDOW_BYTES ((size_t)256 << 20)

typedef struct {
    fmb_job *job;
    fmb_tok *tok;
    fmb_engine *eng;
    fmb_tasks *tasks;
    fmb_queue *q;
    char model_hash[33], tok_hash[33];
    fmb_fault *fault; /* FMB_FAULT (run only; borrowed from main); NULL: none */
    int pass;         /* the run's pass over the source, from 0 */
    int64_t pos;      /* the position in the source of the next document of the pass */
} run_env;

static void env_free(run_env *e)
{
    fmb_tasks_free(e->tasks);
    fmb_queue_close(e->q);
    fmb_engine_free(e->eng);
    fmb_tok_free(e->tok);
    fmb_job_free(e->job);
}

/* Loads everything a run or a check needs. Returns an exit code (0 = ready). */
static int env_open(const char *cmd, job_args *a, int with_queue, run_env *e)
{
    fmb_err err;
    fmb_status s;
    memset(e, 0, sizeof *e);
    if ((s = job_load(a, &e->job, &err))) {
        fmb_cli_error(cmd, "%s", err.msg);
        return FMB_EXIT_USAGE;
    }
    if (job_engine_opts(e->job, &a->eo, cmd))
        return FMB_EXIT_USAGE;
    // the engine's decode scratch is sized for the batch (the default when none is given)
    fmb_engine_opts eo = a->eo;
    if (!eo.max_batch)
        eo.max_batch = FMB_GPU_MAX_BATCH;
    if ((s = fmb_ident_model(e->job->model, e->model_hash, &err)) ||
        (s = fmb_ident_file(e->job->tokenizer, e->tok_hash, &err)) ||
        (s = fmb_tok_load(e->job->tokenizer, &e->tok, &err)) ||
        (s = fmb_engine_open(e->job->model, &eo, &e->eng, &err))) {
        fmb_cli_error(cmd, "%s: %s", e->job->path, err.msg);
        return s == FMB_ENOMEM || s == FMB_EINTERNAL ? FMB_EXIT_FATAL : FMB_EXIT_USAGE;
    }
    // A signal stops the engine within one chunk, even inside a 100K-token document.
    fmb_engine_set_cancel(e->eng, &fmb_job_signal);
    // Documents in flight: --max-batch / [job].max_batch, else 128 on a GPU (the decode step's
    // cost grows slowly with the batch: H200, 7B, 16.9 ms at 64 sequences, 33.5 at 256), fewer
    // where the device holds fewer states (fmb_tasks_new plans them), and 8 on the CPU (which
    // runs pieces one by one: batching only bounds the states held).
    size_t max_batch = a->eo.max_batch;
    if (!max_batch)
        max_batch = strcmp(fmb_engine_backend_name(e->eng), "cpu") ? FMB_GPU_MAX_BATCH : 8;
    if ((s = fmb_tasks_new(e->job, e->eng, e->tok, max_batch, a->eo.mem_limit, &e->tasks, &err))) {
        fmb_cli_error(cmd, "%s", err.msg);
        return s == FMB_EINVAL || s == FMB_EUNSUP ? FMB_EXIT_USAGE : FMB_EXIT_FATAL;
    }
    if (!with_queue)
        return 0;
    if ((s = fmb_queue_open(e->job->output, e->job->name, 1, (int)e->job->max_attempts,
                            (double)e->job->lease_seconds, &e->q, &err))) {
        fmb_cli_error(cmd, "%s", err.msg);
        return s == FMB_EINVAL ? FMB_EXIT_USAGE : FMB_EXIT_FATAL;
    }
    char *fp = fmb_job_fingerprint_text(e->job, e->model_hash, e->tok_hash);
    s = fmb_queue_bind_job(e->q, fp, e->job->model, e->model_hash, e->tok_hash, &err);
    free(fp);
    if (s) {
        fmb_cli_error(cmd, "%s", err.msg);
        return s == FMB_EINVAL ? FMB_EXIT_USAGE : FMB_EXIT_FATAL;
    }
    if (fmb_queue_grown(e->q))
        fprintf(stderr,
                "fmbatch %s: the job has new tasks: %lld done documents are queued again for "
                "them (their other rows stay)\n",
                cmd, (long long)fmb_queue_grown(e->q));
    return 0;
}

/* The documents claimed for a batch (owned copies: the source reuses its buffers), and once
 * prepared, their outputs and the prepared batch. */
typedef struct {
    fmb_task_doc *docs;
    int64_t *ids; /* queue item ids */
    size_t n, cap, bytes;
    fmb_task_output *outs; /* [n] once prepared */
    /* [n]: the tasks each item has rows for already (a job grown by a task): their rows are
     * not written again */
    char ***have;
    size_t *n_have;
    fmb_task_batch *batch;
} window;

/* Takes d's key and data into the window (d is left empty). */
static void window_add(window *w, fmb_pdoc *d, int64_t id)
{
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 64;
        w->docs = fmb_xrealloc(w->docs, w->cap, sizeof *w->docs);
        w->ids = fmb_xrealloc(w->ids, w->cap, sizeof *w->ids);
        w->have = fmb_xrealloc(w->have, w->cap, sizeof *w->have);
        w->n_have = fmb_xrealloc(w->n_have, w->cap, sizeof *w->n_have);
    }
    w->have[w->n] = NULL;
    w->n_have[w->n] = 0;
    w->docs[w->n] = (fmb_task_doc){d->key, d->data, d->len, NULL, 0};
    w->ids[w->n] = id;
    w->n++;
    w->bytes += d->len;
    d->key = d->data = NULL;
}

static void window_clear(window *w)
{
    fmb_tasks_batch_free(w->batch);
    w->batch = NULL;
    for (size_t i = 0; w->outs && i < w->n; i++)
        fmb_task_output_free(&w->outs[i]);
    free(w->outs);
    w->outs = NULL;
    for (size_t i = 0; i < w->n; i++) {
        free((char *)w->docs[i].key);
        free((char *)w->docs[i].data);
        for (size_t k = 0; k < w->n_have[i]; k++)
            free(w->have[i][k]);
        free(w->have[i]);
    }
    w->n = 0;
    w->bytes = 0;
}

/* Gives the window's items back to the queue (no attempt counted) and clears it. */
static void window_release(const char *cmd, run_env *e, window *w)
{
    fmb_err err;
    for (size_t i = 0; i < w->n; i++)
        if (fmb_queue_release(e->q, w->ids[i], &err))
            fmb_cli_error(cmd, "%s", err.msg);
    window_clear(w);
}

/* The engine's own thread: it runs one prepared batch at a time, so that the runner can claim
 * and tokenize the next window and write the last one's rows meanwhile (the GPU does not wait
 * on the disk or SQLite). Only this thread touches the engine and the task states. */
typedef struct {
    run_env *e;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    fmb_task_batch *b; /* the batch handed over (has_job) */
    int has_job, done, quit;
    fmb_status s;
    fmb_err err;
    size_t prog_done; /* the engine's progress within the batch's prefill (under mu) */
} engine_thread;

/* Runs on the engine thread after each prefill chunk (fmb_engine_set_progress). */
static void engine_progress(void *ctx, size_t done, size_t total)
{
    engine_thread *et = ctx;
    (void)total;
    if (et->e->fault) /* the prefill fault point (batch/fault.h) */
        fmb_fault_hit(et->e->fault, FMB_FAULT_PREFILL);
    pthread_mutex_lock(&et->mu);
    if (done > et->prog_done)
        et->prog_done = done;
    pthread_mutex_unlock(&et->mu);
}

static void *engine_main(void *arg)
{
    engine_thread *et = arg;
    fmb_engine_bind_thread(et->e->eng); /* --device N: this thread's CUDA device too */
    fmb_engine_set_progress(et->e->eng, engine_progress, et);
    pthread_mutex_lock(&et->mu);
    for (;;) {
        while (!et->has_job && !et->quit)
            pthread_cond_wait(&et->cv, &et->mu);
        if (et->quit)
            break;
        fmb_task_batch *b = et->b;
        pthread_mutex_unlock(&et->mu);
        fmb_err err;
        fmb_status s = fmb_tasks_batch_run(et->e->tasks, b, &fmb_job_signal, &err);
        pthread_mutex_lock(&et->mu);
        et->s = s;
        et->err = err;
        et->prog_done = 0;
        et->has_job = 0;
        et->done = 1;
        pthread_cond_broadcast(&et->cv);
    }
    pthread_mutex_unlock(&et->mu);
    fmb_engine_set_progress(et->e->eng, NULL, NULL);
    return NULL;
}

static void engine_submit(engine_thread *et, fmb_task_batch *b)
{
    pthread_mutex_lock(&et->mu);
    et->b = b;
    et->has_job = 1;
    et->done = 0;
    pthread_cond_broadcast(&et->cv);
    pthread_mutex_unlock(&et->mu);
}

/* Waits for the batch, redrawing the progress (pg, pc: may be NULL) every quarter second with
 * the engine's position in the batch: progress moves within a long document. */
static fmb_status engine_wait(
    engine_thread *et, fmb_err *err, fmb_progress *pg, fmb_progress_counts *pc, const char *key)
{
    pthread_mutex_lock(&et->mu);
    while (!et->done) {
        if (!pg) {
            pthread_cond_wait(&et->cv, &et->mu);
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 250000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        if (pthread_cond_timedwait(&et->cv, &et->mu, &ts) == ETIMEDOUT && !et->done) {
            pc->in_flight_done = (int64_t)et->prog_done;
            pthread_mutex_unlock(&et->mu);
            fmb_progress_update(pg, pc, key);
            pthread_mutex_lock(&et->mu);
        }
    }
    et->done = 0;
    fmb_status s = et->s;
    if (s)
        *err = et->err;
    pthread_mutex_unlock(&et->mu);
    return s;
}

/* Records a run batch: each document's rows and done, or failed with its reason, in one
 * transaction for the window (a savepoint per item, fenced by its lease). Returns an exit code
 * for fatal trouble, else 0. Clears the window. */
static int
window_write(const char *cmd, run_env *e, window *w, fmb_progress *pg, fmb_progress_counts *pc)
{
    fmb_err err;
    fmb_status s;
    int rc = 0;
    if ((s = fmb_queue_batch_begin(e->q, &err))) {
        fmb_cli_error(cmd, "%s", err.msg);
        rc = FMB_EXIT_FATAL;
    }
    for (size_t i = 0; i < w->n && !rc; i++) {
        const char *key = w->docs[i].key;
        fmb_task_output *out = &w->outs[i];
        if (out->status) {
            pc->failed++;
            fprintf(stderr, "fmbatch run: %s: failed: %s\n", key, out->error);
            if ((s = fmb_queue_fail(e->q, w->ids[i], out->error, &err))) {
                fmb_cli_error(cmd, "%s", err.msg);
                rc = FMB_EXIT_FATAL;
            }
            continue;
        }
        int lost = 0;
        if (!(s = fmb_queue_begin(e->q, &err))) {
            for (size_t k = 0; k < out->n && !s; k++) {
                int had = 0;
                for (size_t h = 0; h < w->n_have[i] && !had; h++)
                    had = !strcmp(w->have[i][h], out->rows[k].task);
                if (!had)
                    s = fmb_queue_add_result(e->q, w->ids[i], key, &out->rows[k], &err);
            }
            if (s)
                fmb_queue_rollback(e->q);
            else
                s = fmb_queue_finish(e->q, w->ids[i], out->doc_tokens, out->seconds, &lost, &err);
        }
        if (s) {
            fmb_cli_error(cmd, "%s", err.msg);
            rc = FMB_EXIT_FATAL;
            break;
        }
        if (lost) {
            fprintf(stderr,
                    "fmbatch run: %s: lease lost to another worker; its result is "
                    "theirs\n",
                    key);
            pc->skipped++;
        } else {
            pc->done++;
            pc->tokens += out->doc_tokens;
        }
    }
    if (!rc)
        fmb_fault_hit(e->fault, FMB_FAULT_BEFORE_COMMIT);
    if (!rc && (s = fmb_queue_batch_commit(e->q, &err))) {
        fmb_cli_error(cmd, "%s", err.msg);
        rc = FMB_EXIT_FATAL;
    }
    if (rc)
        fmb_queue_batch_abort(e->q);
    if (w->n)
        fmb_progress_update(pg, pc, w->docs[w->n - 1].key);
    window_clear(w);
    return rc;
}

/* A document counted as skipped by the run's first pass is taken (or fails) in a later one. */
static void unskip(fmb_progress_counts *pc)
{
    if (pc->skipped > 0)
        pc->skipped--;
}

/* Claims documents from the reader into w until it holds max_docs documents or
 * FMB_WINDOW_BYTES, the source ends (*eof) or the run must stop. The claims share one
 * transaction while documents are at hand; it is committed before waiting on the reader, so
 * other workers never wait long on this one's lock. Returns an exit code for fatal trouble
 * (the uncommitted claims are rolled back, the window cleared), else 0. */
static int window_fill(const char *cmd,
                       run_env *e,
                       job_args *a,
                       fmb_prefetch *pf,
                       size_t max_docs,
                       window *w,
                       fmb_progress *pg,
                       fmb_progress_counts *pc,
                       int64_t *taken,
                       int *eof)
{
    fmb_err err;
    fmb_status s;
    int rc = 0;
    while (!*eof && !fmb_job_signal && w->n < max_docs && w->bytes < FMB_WINDOW_BYTES &&
           !(a->max_items && *taken >= a->max_items)) {
        if (fmb_queue_in_batch(e->q) && !fmb_prefetch_ready(pf) &&
            (s = fmb_queue_batch_commit(e->q, &err))) {
            fmb_cli_error(cmd, "%s", err.msg);
            rc = FMB_EXIT_FATAL;
            break;
        }
        fmb_pdoc doc;
        if ((s = fmb_prefetch_next(pf, &doc, eof, &err))) {
            fmb_cli_error(cmd, "%s", err.msg);
            rc = FMB_EXIT_FATAL;
            break;
        }
        if (*eof)
            break;
        // a later pass re-reads the source: each document was counted once by the first (as
        // seen, and skipped, failed or taken); what this pass takes or fails was a skip then
        const int later = e->pass > 0;
        if (!later)
            pc->seen++;
        e->pos++;
        if (!fmb_queue_in_batch(e->q) && (s = fmb_queue_batch_begin(e->q, &err))) {
            fmb_cli_error(cmd, "%s", err.msg);
            rc = FMB_EXIT_FATAL;
            fmb_pdoc_free(&doc);
            break;
        }
        if (doc.error) {
            int recorded;
            if ((s = fmb_queue_fail_key(e->q, doc.key, doc.error, &recorded, &err)) ||
                (s = fmb_queue_item_info(e->q, doc.key, doc.doc_id, doc.meta, &err))) {
                fmb_cli_error(cmd, "%s", err.msg);
                rc = FMB_EXIT_FATAL;
            } else if (recorded) {
                pc->failed++;
                if (later)
                    unskip(pc);
                fprintf(stderr, "fmbatch run: %s: failed: %s\n", doc.key, doc.error);
            } else if (!later) {
                pc->skipped++;
            }
            fmb_progress_update(pg, pc, doc.key);
            fmb_pdoc_free(&doc);
            if (rc)
                break;
            continue;
        }
        fmb_claim claim;
        int64_t id;
        // --worker-slot K/N, first pass: another slot's document is queued (claimed and given
        // back at once, no attempt counted) for that worker, or for this one's next pass
        const int other = a->slots > 1 && e->pass == 0 && (e->pos - 1) % a->slots != a->slot;
        if ((s = fmb_queue_claim(e->q, doc.key, doc.hash, doc.len, &claim, &id, &err)) ||
            (s = fmb_queue_item_info(e->q, doc.key, doc.doc_id, doc.meta, &err)) ||
            (other && claim == FMB_CLAIM_TAKEN && (s = fmb_queue_release(e->q, id, &err)))) {
            fmb_cli_error(cmd, "%s", err.msg);
            rc = FMB_EXIT_FATAL;
            fmb_pdoc_free(&doc);
            break;
        }
        if (other && claim == FMB_CLAIM_TAKEN)
            claim = FMB_CLAIM_BUSY; /* counted as skipped: the other worker's */
        if (later && (claim == FMB_CLAIM_DEAD || claim == FMB_CLAIM_TAKEN))
            unskip(pc);
        if (claim == FMB_CLAIM_DEAD) {
            pc->failed++;
            fprintf(stderr,
                    "fmbatch run: %s: dead: its workers died on it too often (`fmbatch "
                    "status` says how)\n",
                    doc.key);
        } else if (claim != FMB_CLAIM_TAKEN) {
            pc->skipped += !later;
            fmb_progress_update(pg, pc, doc.key);
        } else {
            char **have = NULL;
            size_t n_have = 0;
            if ((s = fmb_queue_item_tasks(e->q, doc.key, &have, &n_have, &err))) {
                fmb_cli_error(cmd, "%s", err.msg);
                rc = FMB_EXIT_FATAL;
                fmb_pdoc_free(&doc);
                break;
            }
            (*taken)++;
            window_add(w, &doc, id);
            w->have[w->n - 1] = have;
            w->n_have[w->n - 1] = n_have;
            w->docs[w->n - 1].skip = have; /* those tasks are not run again */
            w->docs[w->n - 1].n_skip = n_have;
        }
        fmb_pdoc_free(&doc);
    }
    if (fmb_queue_in_batch(e->q)) {
        if (rc)
            fmb_queue_batch_abort(e->q); /* nothing of it lands: the claims are undone */
        else if ((s = fmb_queue_batch_commit(e->q, &err))) {
            fmb_cli_error(cmd, "%s", err.msg);
            rc = FMB_EXIT_FATAL;
        }
    }
    if (!rc && w->n)
        fmb_fault_hit(e->fault, FMB_FAULT_AFTER_CLAIM_WINDOW);
    if (rc)
        window_clear(w); /* claims rolled back or orphaned to the next run: nothing to release */
    return rc;
}

/* One pass over the source, pipelined: the reader thread reads ahead; while the engine thread
 * runs window k, this thread claims and tokenizes window k + 1, then hands it over the moment
 * k ends and writes k's rows while k + 1 runs. Returns an exit code for fatal trouble, else 0;
 * a signal releases every claimed item (none counts as an attempt). */
static int run_pass(const char *cmd,
                    run_env *e,
                    job_args *a,
                    fmb_progress *pg,
                    fmb_progress_counts *pc,
                    int64_t *taken)
{
    fmb_err err;
    fmb_source *src = NULL;
    fmb_status s = fmb_src_open(e->job, &src, &err);
    if (s) {
        fmb_cli_error(cmd, "%s", err.msg);
        return s == FMB_EINVAL ? FMB_EXIT_USAGE : FMB_EXIT_FATAL;
    }
    if (e->pass == 0 && fmb_src_warning(src))
        fprintf(stderr, "fmbatch %s: note: %s\n", cmd, fmb_src_warning(src));
    size_t max_docs = fmb_tasks_plan_get(e->tasks)->max_docs;
    // The reader and engine threads never take SIGINT/SIGTERM (the mask is inherited): the
    // handler runs on this thread, and their system calls are not cut short by it.
    sigset_t block, old_mask;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old_mask);
    fmb_prefetch *pf = NULL;
    s = fmb_prefetch_start(src, 2 * max_docs, FMB_WINDOW_BYTES, &pf, &err);
    engine_thread et;
    memset(&et, 0, sizeof et);
    et.e = e;
    pthread_mutex_init(&et.mu, NULL);
    pthread_cond_init(&et.cv, NULL);
    int started = !s && pthread_create(&et.th, NULL, engine_main, &et) == 0;
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
    if (!started) {
        fmb_cli_error(cmd, "%s", s ? err.msg : "cannot start the engine thread");
        fmb_prefetch_stop(pf);
        pthread_mutex_destroy(&et.mu);
        pthread_cond_destroy(&et.cv);
        return FMB_EXIT_FATAL;
    }
    window w[2];
    memset(w, 0, sizeof w);
    int rc = 0, eof = 0, running = -1, k = 0;
    for (;;) {
        // the next window: claimed and tokenized while the engine runs the current one
        rc = window_fill(cmd, e, a, pf, max_docs, &w[k], pg, pc, taken, &eof);
        if (!rc && w[k].n) {
            w[k].outs = fmb_xcalloc(w[k].n, sizeof *w[k].outs);
            w[k].batch = fmb_tasks_batch_prepare(e->tasks, w[k].docs, w[k].n, w[k].outs);
        }
        int finished = running;
        if (running >= 0) {
            s = engine_wait(&et, &err, pg, pc, w[finished].n ? w[finished].docs[0].key : NULL);
            running = -1;
            if (s == FMB_EINTR) { /* a signal: everything claimed goes back */
                window_release(cmd, e, &w[finished]);
                window_release(cmd, e, &w[k]);
                break;
            }
        }
        if (!rc && w[k].n && !fmb_job_signal) {
            // every document of the batch is in progress from here on: a crash concerns each
            for (size_t i = 0; i < w[k].n; i++)
                fmb_queue_working(e->q, w[k].ids[i], 1);
            pc->in_flight = (int64_t)w[k].n;
            pc->in_flight_tokens = pc->in_flight_done = 0;
            for (size_t i = 0; i < w[k].n; i++)
                pc->in_flight_tokens += w[k].outs[i].doc_tokens;
            engine_submit(&et, w[k].batch);
            running = k;
        } else if (w[k].n) {
            window_release(cmd, e, &w[k]); /* a signal while filling */
        }
        if (finished >= 0) {
            int rc2 = window_write(cmd, e, &w[finished], pg, pc);
            rc = rc ? rc : rc2;
        }
        if (running < 0) {
            pc->in_flight = pc->in_flight_tokens = pc->in_flight_done = 0;
            break;
        }
        if (rc) { /* fatal: let the running batch end (its results are dropped), give its
                   * items back */
            fmb_status ignored = engine_wait(&et, &err, NULL, NULL, NULL);
            (void)ignored;
            window_release(cmd, e, &w[running]);
            running = -1;
            break;
        }
        k = 1 - k;
    }
    pthread_mutex_lock(&et.mu);
    et.quit = 1;
    pthread_cond_broadcast(&et.cv);
    pthread_mutex_unlock(&et.mu);
    pthread_join(et.th, NULL);
    pthread_mutex_destroy(&et.mu);
    pthread_cond_destroy(&et.cv);
    for (int i = 0; i < 2; i++) {
        window_clear(&w[i]);
        free(w[i].docs);
        free(w[i].ids);
        free(w[i].have);
        free(w[i].n_have);
    }
    fmb_prefetch_stop(pf);
    return rc;
}

/* The source counted on a thread of its own while the run starts (a second pass of the reader:
 * exact, whatever the kind), for the progress bar's total and the ETA. */
typedef struct {
    const fmb_job *job;
    fmb_progress *pg;
    atomic_int stop;
    pthread_t th;
    int started;
} source_counter;

static void *count_main(void *arg)
{
    source_counter *sc = arg;
    fmb_source *src;
    fmb_err err;
    if (fmb_src_open(sc->job, &src, &err))
        return NULL; /* the run reports it */
    int64_t n = 0;
    int eof = 0;
    while (!atomic_load(&sc->stop)) {
        fmb_doc d;
        if (fmb_src_next(src, &d, &eof, &err) || eof)
            break;
        n++;
    }
    if (eof)
        fmb_progress_set_total(sc->pg, n);
    fmb_src_close(src);
    return NULL;
}

static void counter_start(source_counter *sc, const fmb_job *job, fmb_progress *pg)
{
    memset(sc, 0, sizeof *sc);
    sc->job = job;
    sc->pg = pg;
    atomic_init(&sc->stop, 0);
    sigset_t block, old;
    sigfillset(&block);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    sc->started = pthread_create(&sc->th, NULL, count_main, sc) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void counter_stop(source_counter *sc)
{
    if (!sc->started)
        return;
    atomic_store(&sc->stop, 1);
    pthread_join(sc->th, NULL);
    sc->started = 0;
}

/* The engine thread's decode fault point (after each decode step); the prefill point is hit
 * by engine_progress after each chunk. */
static void fault_decode(void *ctx)
{
    fmb_fault_hit(ctx, FMB_FAULT_DECODE);
}

int fmb_cmd_run(int argc, char **argv, fmb_fault *fault)
{
    const char *cmd = argv[0];
    job_args a;
    int rc_args;
    if (parse_or_exit(argc, argv, &a, &rc_args))
        return rc_args;
    if (a.devices)
        return fmb_cli_run_workers(argc, argv, a.devices);
    run_env e;
    fmb_err err;
    double t_open = fmb_now();
    if (fmb_queue_fault_vfs(fault, &err)) { /* before any SQLite file is opened */
        fmb_cli_error(cmd, "%s", err.msg);
        return FMB_EXIT_FATAL;
    }
    int rc = env_open(cmd, &a, 1, &e);
    if (rc) {
        env_free(&e);
        return rc;
    }
    if (fault) {
        e.fault = fault;
        fmb_queue_set_fault(e.q, fault);
        if (fmb_fault_armed(fault, FMB_FAULT_DECODE))
            fmb_tasks_set_step_hook(e.tasks, fault_decode, fault);
    }
    t_open = fmb_now() - t_open; /* model, tokenizer, tasks, states, output: before any item */
    fmb_queue_counts qc;
    fmb_progress_counts pc;
    memset(&pc, 0, sizeof pc);
    if (!fmb_queue_counts_get(e.q, &qc, &err))
        pc.total = qc.pending + qc.running + qc.done + qc.failed + qc.dead;
    install_signals();
    if (fmb_queue_mark_complete(e.q, 0, &err)) /* until this run has seen the whole source */
        fmb_cli_error(cmd, "%s", err.msg);
    if (fmb_queue_heartbeat_start(e.q, &err))
        fmb_cli_error(cmd, "%s (leases will not be renewed)", err.msg);
    if (fmb_queue_worker_start(e.q, &err)) /* a kill -9 then counts as an attempt, as before */
        fmb_cli_error(cmd, "%s (no worker file: any death counts as an attempt)", err.msg);
    if (e.job->shard_count > 1) /* the other shards' items are never seen, claimed or counted */
        fprintf(stderr,
                "fmbatch run: shard %lld/%lld: only the items whose key hashes to %lld mod %lld "
                "(progress and counts are of those); `fmbatch merge` joins the shards\n",
                (long long)e.job->shard_index, (long long)e.job->shard_count,
                (long long)e.job->shard_index, (long long)e.job->shard_count);
    fmb_progress *pg = fmb_progress_new(a.progress, a.progress_interval);
    source_counter counter;
    counter_start(&counter, e.job, pg);
    int64_t taken = 0;
    for (int pass = 0; pass < 3 && !rc && !fmb_job_signal; pass++) {
        e.pass = pass;
        e.pos = 0;
        rc = run_pass(cmd, &e, &a, pg, &pc, &taken);
        int64_t left = 0;
        if (rc || fmb_job_signal || (a.max_items && taken >= a.max_items) ||
            fmb_queue_claimable(e.q, &left, &err) || left == 0)
            break;
        if (pc.total < pc.seen)
            pc.total = pc.seen;
        fprintf(stderr, "fmbatch run: %lld items left claimable, another pass\n", (long long)left);
    }
    fmb_queue_heartbeat_stop(e.q);
    counter_stop(&counter);
    int sig = fmb_job_signal;
    const char *how = sig ? "interrupted (the current item was released)" : "finished";
    fmb_progress_end(pg, &pc, rc ? "stopped by an error" : how);
    const fmb_tasks_stats *ts = fmb_tasks_stats_get(e.tasks);
    const fmb_tasks_plan *tp = fmb_tasks_plan_get(e.tasks);
    if (ts->prefill_tokens || ts->decode_steps)
        fprintf(stderr,
                "fmbatch run: engine: opened in %.2f s; batches of up to %zu documents; "
                "prefill %lld tokens in "
                "%.2f s (%.0f tok/s); decode %lld tokens in %lld steps, %.2f s (%.0f tok/s, "
                "%.1f sequences a step)\n",
                t_open, tp->max_docs, (long long)ts->prefill_tokens, ts->prefill_seconds,
                ts->prefill_seconds > 0 ? (double)ts->prefill_tokens / ts->prefill_seconds : 0,
                (long long)ts->decode_tokens, (long long)ts->decode_steps, ts->decode_seconds,
                ts->decode_seconds > 0 ? (double)ts->decode_tokens / ts->decode_seconds : 0,
                ts->decode_steps ? (double)ts->decode_tokens / (double)ts->decode_steps : 0);
    if (!rc && !sig && !fmb_queue_counts_get(e.q, &qc, &err)) {
        fprintf(stderr,
                "fmbatch run: output %s: %lld done, %lld failed, %lld dead, %lld pending, "
                "%lld running\n",
                e.job->output, (long long)qc.done, (long long)qc.failed, (long long)qc.dead,
                (long long)qc.pending, (long long)qc.running);
        // Exit 3 only for items that failed in this run: a nightly rerun over a corpus with one
        // old bad line exits 0 (the old failures are still counted above and in `status`).
        if (qc.failed + qc.dead > 0)
            fprintf(stderr,
                    "fmbatch run: %lld failed in this run, %lld in all: `fmbatch status %s` "
                    "groups the reasons, `fmbatch retry %s --failed` queues them again\n",
                    (long long)pc.failed, (long long)(qc.failed + qc.dead), a.job_path, a.job_path);
        if (pc.failed > 0)
            rc = FMB_EXIT_ITEMS_FAILED;
        // the whole source seen and nothing left: `fmbatch merge` may take this output
        if (!(a.max_items && taken >= a.max_items) && qc.pending + qc.running == 0 &&
            fmb_queue_mark_complete(e.q, 1, &err))
            fmb_cli_error(cmd, "%s", err.msg);
    }
    env_free(&e);
    if (sig)
        return 128 + sig;
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* check */

/* Whether run could create or write the output (without creating anything): the file when it
 * exists, else its nearest existing folder. 0 when fine, else 1 and why. */
static int output_problem(const char *path, char *why, size_t n)
{
    if (access(path, F_OK) == 0) {
        if (access(path, R_OK | W_OK) != 0) {
            snprintf(why, n, "'%.400s' exists but cannot be written (%s)", path, strerror(errno));
            return 1;
        }
        return 0;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    for (;;) {
        char *slash = strrchr(dir, '/');
        if (!slash) {
            snprintf(dir, sizeof dir, ".");
        } else if (slash == dir) {
            dir[1] = 0;
        } else {
            *slash = 0;
        }
        struct stat sb;
        if (stat(dir, &sb) == 0) {
            if (!S_ISDIR(sb.st_mode)) {
                snprintf(why, n, "'%.250s' is not a folder, so '%.250s' cannot be made", dir, path);
                return 1;
            }
            if (access(dir, W_OK | X_OK) != 0) {
                snprintf(why, n,
                         "folder '%.250s' cannot be written (%s), so '%.250s' cannot be made", dir,
                         strerror(errno), path);
                return 1;
            }
            return 0;
        }
        if (!strcmp(dir, ".") || !strcmp(dir, "/"))
            return 0;
    }
}

int fmb_cmd_check(int argc, char **argv)
{
    const char *cmd = argv[0];
    job_args a;
    int rc_args;
    if (parse_or_exit(argc, argv, &a, &rc_args))
        return rc_args;
    run_env e;
    int rc = env_open(cmd, &a, 0, &e);
    if (rc) {
        env_free(&e);
        return rc;
    }
    fmb_err err;
    fmb_source *src = NULL;
    fmb_status s = fmb_src_open(e.job, &src, &err);
    if (s) {
        fmb_cli_error(cmd, "%s", err.msg);
        env_free(&e);
        return s == FMB_EINVAL ? FMB_EXIT_USAGE : FMB_EXIT_FATAL;
    }
    char *src_note = fmb_src_warning(src) ? fmb_xstrdup(fmb_src_warning(src)) : NULL;
    /* Items already done in an existing output are left out of the estimates (read only: check
     * creates nothing). */
    fmb_queue *done_q = NULL;
    struct stat ost;
    if (stat(e.job->output, &ost) == 0 &&
        fmb_queue_open(e.job->output, e.job->name, 0, (int)e.job->max_attempts,
                       (double)e.job->lease_seconds, &done_q, &err))
        done_q = NULL; /* not ours or unreadable: estimate everything */
    /* Count everything; tokenize a sample of documents for a bytes-per-token estimate. */
    int64_t items = 0, bad = 0, bytes = 0, sample_bytes = 0, sample_tokens = 0;
    int64_t done_items = 0, done_bytes = 0;
    json_t *bad_list = json_array();
    for (;;) {
        fmb_doc doc;
        int eof;
        if ((s = fmb_src_next(src, &doc, &eof, &err))) {
            fmb_cli_error(cmd, "%s", err.msg);
            rc = FMB_EXIT_FATAL;
            break;
        }
        if (eof)
            break;
        items++;
        if (doc.error) {
            bad++;
            if (json_array_size(bad_list) < 20) {
                json_t *o = json_object();
                json_object_set_new(o, "key", json_string(doc.key));
                json_object_set_new(o, "error", json_string(doc.error));
                json_array_append_new(bad_list, o);
            }
            continue;
        }
        bytes += (int64_t)doc.len;
        if (done_q) {
            char *st_text = NULL;
            if (!fmb_queue_item_status(done_q, doc.key, &st_text, &err) && st_text &&
                !strcmp(st_text, "done")) {
                done_items++;
                done_bytes += (int64_t)doc.len;
            }
            free(st_text);
        }
        if (sample_bytes < (1 << 20)) {
            fmb_ids ids;
            memset(&ids, 0, sizeof ids);
            if (!fmb_tok_encode(e.tok, doc.data, doc.len, 0, &ids, &err)) {
                sample_bytes += (int64_t)doc.len;
                sample_tokens += (int64_t)ids.n;
            }
            fmb_ids_free(&ids);
        }
    }
    fmb_src_close(src);
    fmb_queue_close(done_q);
    if (!rc && items == 0) {
        fmb_cli_error(cmd, "%s: the source yields no document", e.job->path);
        rc = FMB_EXIT_USAGE;
    }
    if (!rc) {
        const double tok_per_byte =
            sample_bytes > 0 ? (double)sample_tokens / (double)sample_bytes : 0;
        double tokens = (double)bytes * tok_per_byte;
        /* What is left to run: the documents not done yet, plus per document each choice
         * and generate prompt's tail and each choice (prefilled), and each generate task's
         * max_new_tokens (decoded: an upper bound, answers may stop earlier). */
        const int64_t todo = items - bad - done_items;
        double todo_tokens = (double)(bytes - done_bytes) * tok_per_byte, gen_tokens = 0;
        size_t gen_seqs = 0;
        for (size_t t = 0; t < e.job->n_tasks; t++) {
            const fmb_task_cfg *tc = &e.job->tasks[t];
            size_t extra = 0;
            fmb_ids ids;
            for (size_t c = 0; c <= tc->n_choices; c++) {
                const char *txt = c == tc->n_choices ? tc->suffix : tc->choices[c];
                memset(&ids, 0, sizeof ids);
                if (txt && !fmb_tok_encode(e.tok, txt, strlen(txt), 0, &ids, &err))
                    extra += ids.n;
                fmb_ids_free(&ids);
            }
            todo_tokens += (double)extra * (double)todo;
            if (tc->kind == FMB_TASK_GENERATE) {
                gen_tokens += (double)tc->max_new_tokens * (double)todo;
                gen_seqs += 1;
            }
        }
        /* Prefill speed at the job's chunk length (at most 4096 tokens), timed after a warm-up
         * of the same length: the first call pays for cuBLAS plans, graphs and caches. */
        double tps = NAN;
        fmb_state *st = NULL;
        size_t T = fmb_engine_chunk_tokens(e.eng);
        T = T > 4096 ? 4096 : T ? T : 256;
        int32_t *wid = fmb_xmalloc(T * sizeof *wid);
        for (size_t i = 0; i < T; i++)
            wid[i] = (int32_t)(i % 200 + 10);
        if (!fmb_state_new(e.eng, &st, &err) &&
            !fmb_engine_forward(e.eng, st, wid, T, NULL, &err)) {
            fmb_state_reset(st);
            double t0 = fmb_now();
            if (!fmb_engine_forward(e.eng, st, wid, T, NULL, &err))
                tps = (double)T / (fmb_now() - t0);
        }
        fmb_state_free(st);
        free(wid);
        /* A decode step at the batch the run would use for the answers, timed after a
         * warm-up step. */
        double step_s = NAN;
        size_t b = gen_seqs * (size_t)(todo > 0 ? todo : 0);
        const size_t max_seqs = fmb_tasks_plan_get(e.tasks)->max_seqs;
        b = b > max_seqs ? max_seqs : b;
        if (gen_tokens > 0 && b > 0) {
            fmb_state **sts = fmb_xcalloc(b, sizeof *sts);
            int32_t *sid = fmb_xmalloc(b * sizeof *sid);
            float *lg = fmb_xmalloc(b * (size_t)fmb_engine_config(e.eng)->V * sizeof *lg);
            size_t ok = 0;
            while (ok < b && !fmb_state_new(e.eng, &sts[ok], &err))
                ok++;
            for (size_t i = 0; i < b; i++)
                sid[i] = (int32_t)(i % 200 + 10);
            if (ok == b && !fmb_engine_step(e.eng, sts, sid, b, lg, &err)) {
                double t0 = fmb_now();
                int n_ok = 0;
                for (int k = 0; k < 3; k++)
                    n_ok += !fmb_engine_step(e.eng, sts, sid, b, lg, &err);
                if (n_ok == 3)
                    step_s = (fmb_now() - t0) / 3;
            }
            for (size_t i = 0; i < ok; i++)
                fmb_state_free(sts[i]);
            free(sts), free(sid), free(lg);
        }
        double decode_s = gen_tokens > 0 ? ceil(gen_tokens / (double)(b ? b : 1)) * step_s : 0;
        const fmb_config *cfg = fmb_engine_config(e.eng);
        double state_bytes = (double)cfg->L * (double)cfg->E * (double)(cfg->K - 1 + cfg->N) * 4;
        json_t *o = json_object();
        json_object_set_new(o, "job", json_string(e.job->name));
        json_object_set_new(o, "source", json_string(fmb_src_kind_name(e.job->source.kind)));
        json_object_set_new(o, "items", json_integer(items));
        json_object_set_new(o, "failing_items", json_integer(bad));
        json_object_set_new(o, "failing", bad_list);
        bad_list = NULL;
        json_object_set_new(o, "bytes", json_integer(bytes));
        json_object_set_new(o, "estimated_tokens", json_integer((json_int_t)tokens));
        json_object_set_new(o, "tasks", json_integer((json_int_t)e.job->n_tasks));
        json_object_set_new(o, "backend", json_string(fmb_engine_backend_name(e.eng)));
        json_object_set_new(o, "device", json_string(fmb_engine_device_name(e.eng)));
        char kern[256];
        json_object_set_new(o, "kernels",
                            json_string(fmb_cli_kernel_report(e.eng, kern, sizeof kern)));
        json_object_set_new(o, "prefill_tokens_per_second",
                            isfinite(tps) ? json_real(tps) : json_null());
        json_object_set_new(o, "done_items", json_integer((json_int_t)done_items));
        json_object_set_new(o, "items_to_run", json_integer((json_int_t)todo));
        json_object_set_new(o, "estimated_prefill_tokens", json_integer((json_int_t)todo_tokens));
        json_object_set_new(o, "estimated_prefill_seconds",
                            isfinite(tps) && tps > 0 ? json_real(todo_tokens / tps) : json_null());
        json_object_set_new(o, "estimated_decode_tokens", json_integer((json_int_t)gen_tokens));
        json_object_set_new(o, "estimated_decode_seconds",
                            isfinite(decode_s) ? json_real(decode_s) : json_null());
        json_object_set_new(o, "estimated_seconds",
                            isfinite(tps) && tps > 0 && isfinite(decode_s)
                                ? json_real(todo_tokens / tps + decode_s)
                                : json_null());
        json_t *mem = json_object();
        json_object_set_new(mem, "state_bytes_per_sequence", json_integer((json_int_t)state_bytes));
        const fmb_tasks_plan *tp = fmb_tasks_plan_get(e.tasks);
        json_object_set_new(mem, "states", json_integer((json_int_t)tp->states));
        json_object_set_new(mem, "batch_documents", json_integer((json_int_t)tp->max_docs));
        json_object_set_new(mem, "batch_sequences", json_integer((json_int_t)tp->max_seqs));
        json_object_set_new(mem, "chunk_tokens",
                            json_integer((json_int_t)fmb_engine_chunk_tokens(e.eng)));
        fmb_engine_mem em;
        fmb_engine_memory(e.eng, &em);
        json_object_set_new(mem, "weights_bytes", json_integer((json_int_t)em.weights_bytes));
        json_object_set_new(mem, "mapped_bytes", json_integer((json_int_t)em.mapped_bytes));
        json_object_set_new(mem, "scratch_bytes", json_integer((json_int_t)em.scratch_bytes));
        if (em.device_total) {
            json_object_set_new(mem, "device_total_bytes",
                                json_integer((json_int_t)em.device_total));
            json_object_set_new(mem, "device_free_bytes", json_integer((json_int_t)em.device_free));
        }
        json_object_set_new(o, "memory_plan", mem);
        /* NaN/Inf weights: every item would fail ("non-finite ..."), so check refuses. */
        size_t n_bad = 0;
        const char *bad_name = NULL;
        fmb_st *wst = NULL;
        if (!fmb_st_open_dir(e.job->model, &wst, &err)) {
            json_object_set_new(o, "nonfinite_weights",
                                fmb_cli_nonfinite_weights(wst, &n_bad, &bad_name));
            if (n_bad) {
                fmb_cli_error(cmd,
                              "%s: %s: %zu tensors hold NaN or Inf values (first: %s); every "
                              "item would fail",
                              e.job->path, fmb_st_source(wst), n_bad, bad_name);
                rc = FMB_EXIT_USAGE;
            }
        }
        json_object_set_new(o, "output", json_string(e.job->output));
        char why[700];
        if (output_problem(e.job->output, why, sizeof why)) {
            fmb_cli_error(cmd, "%s: [job].output: %s", e.job->path, why);
            json_object_set_new(o, "output_problem", json_string(why));
            rc = FMB_EXIT_USAGE;
        }
        json_t *notes = json_array();
        if (e.job->source.kind == FMB_SRC_JSONL && !e.job->source.id_field &&
            !e.job->source.key_content) {
            const char *n = "[source]: JSON Lines keys are file:line without id_field, so they "
                            "depend on line numbers: a line added or removed re-keys every "
                            "later record (and a rerun computes them again); set id_field to "
                            "a stable id, or key = \"content\"";
            fprintf(stderr, "fmbatch check: note: %s: %s\n", e.job->path, n);
            json_array_append_new(notes, json_string(n));
        }
        if (src_note) { /* it names the job file itself */
            fprintf(stderr, "fmbatch check: note: %s\n", src_note);
            json_array_append_new(notes, json_string(src_note));
        }
        json_object_set_new(o, "notes", notes);
        json_object_set_new(o, "model_hash", json_string(e.model_hash));
        json_object_set_new(o, "tokenizer_hash", json_string(e.tok_hash));
        char *txt = json_dumps(o, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
        printf("%s\n", txt);
        free(txt);
        json_decref(o);
        fmb_st_close(wst);
    }
    json_decref(bad_list);
    free(src_note);
    env_free(&e);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* status, retry, export: only the job file and its output are needed (no model). */

static int open_output(const char *cmd, job_args *a, fmb_job **job, fmb_queue **q, int create)
{
    fmb_err err;
    *q = NULL;
    if (job_load(a, job, &err)) {
        fmb_cli_error(cmd, "%s", err.msg);
        return FMB_EXIT_USAGE;
    }
    if (fmb_queue_open((*job)->output, (*job)->name, create, (int)(*job)->max_attempts,
                       (double)(*job)->lease_seconds, q, &err)) {
        fmb_cli_error(cmd, "%s", err.msg);
        return FMB_EXIT_USAGE;
    }
    return 0;
}

int fmb_cmd_status(int argc, char **argv)
{
    const char *cmd = argv[0];
    job_args a;
    int rc_args;
    if (parse_or_exit(argc, argv, &a, &rc_args))
        return rc_args;
    fmb_job *job = NULL;
    fmb_queue *q = NULL;
    fmb_err err;
    fmb_queue_counts c;
    memset(&c, 0, sizeof c);
    int rc = 0;
    if (job_load(&a, &job, &err)) {
        fmb_cli_error(cmd, "%s", err.msg);
        return FMB_EXIT_USAGE;
    }
    FILE *probe = fopen(job->output, "rb");
    if (probe) { /* no output yet: every count is 0 */
        fclose(probe);
        if (fmb_queue_open(job->output, job->name, 0, (int)job->max_attempts,
                           (double)job->lease_seconds, &q, &err)) {
            fmb_cli_error(cmd, "%s", err.msg);
            rc = FMB_EXIT_USAGE;
        } else if (fmb_queue_counts_get(q, &c, &err)) {
            fmb_cli_error(cmd, "%s", err.msg);
            rc = FMB_EXIT_FATAL;
        }
    }
    char *fails = NULL;
    if (q && !rc && fmb_queue_failures_json(q, &fails, &err)) {
        fmb_cli_error(cmd, "%s", err.msg);
        rc = FMB_EXIT_FATAL;
    }
    /* --count-source: the documents the source yields (this shard's), read through as a run
     * reads them; those the queue has not seen yet count as left. */
    int64_t source_items = -1;
    if (!rc && a.count_source) {
        fmb_source *src = NULL;
        fmb_status s = fmb_src_open(job, &src, &err);
        int eof = 0;
        for (source_items = 0; !s;) {
            fmb_doc d;
            if ((s = fmb_src_next(src, &d, &eof, &err)) || eof)
                break;
            source_items++;
        }
        fmb_src_close(src);
        if (s) {
            fmb_cli_error(cmd, "%s", err.msg);
            rc = s == FMB_EINVAL ? FMB_EXIT_USAGE : FMB_EXIT_FATAL;
        }
    }
    if (!rc) {
        double wall = c.last_finished - c.first_started;
        int64_t left = c.pending + c.running;
        const int64_t known = c.pending + c.running + c.done + c.failed + c.dead;
        if (source_items > known)
            left += source_items - known;
        printf("{\"pending\":%lld,\"running\":%lld,\"done\":%lld,\"failed\":%lld,\"dead\":%lld,"
               "\"total\":%lld,\"tokens\":%lld,\"item_seconds\":",
               (long long)c.pending, (long long)c.running, (long long)c.done, (long long)c.failed,
               (long long)c.dead, (long long)(c.pending + c.running + c.done + c.failed + c.dead),
               (long long)c.tokens);
        fmb_cli_json_num(stdout, c.seconds);
        printf(",\"tokens_per_second\":");
        fmb_cli_json_num(stdout, wall > 0 ? (double)c.tokens / wall : NAN);
        printf(",\"items_per_second\":");
        fmb_cli_json_num(stdout, wall > 0 ? (double)c.done / wall : NAN);
        printf(",\"eta_seconds\":");
        fmb_cli_json_num(stdout, c.done > 0 && wall > 0 ? (double)left * wall / (double)c.done
                                                        : (left ? NAN : 0));
        if (source_items >= 0)
            printf(",\"source_items\":%lld,\"not_queued\":%lld", (long long)source_items,
                   (long long)(source_items > known ? source_items - known : 0));
        printf(",\"failures\":%s}\n", fails ? fails : "[]");
    }
    free(fails);
    fmb_queue_close(q);
    fmb_job_free(job);
    return rc;
}

int fmb_cmd_retry(int argc, char **argv)
{
    const char *cmd = argv[0];
    job_args a;
    int rc_args;
    if (parse_or_exit(argc, argv, &a, &rc_args))
        return rc_args;
    if (!a.failed) {
        fmb_cli_error(cmd, "usage: fmbatch retry JOB.toml --failed");
        return FMB_EXIT_USAGE;
    }
    fmb_job *job = NULL;
    fmb_queue *q = NULL;
    int rc = open_output(cmd, &a, &job, &q, 0);
    fmb_err err;
    int64_t n = 0;
    if (!rc && fmb_queue_retry_failed(q, &n, &err)) {
        fmb_cli_error(cmd, "%s", err.msg);
        rc = FMB_EXIT_FATAL;
    }
    if (!rc)
        printf("{\"retried\":%lld}\n", (long long)n);
    fmb_queue_close(q);
    fmb_job_free(job);
    return rc;
}

int fmb_cmd_export(int argc, char **argv)
{
    const char *cmd = argv[0];
    job_args a;
    int rc_args;
    if (parse_or_exit(argc, argv, &a, &rc_args))
        return rc_args;
    fmb_export_format format =
        a.format && !strcmp(a.format, "csv") ? FMB_EXPORT_CSV : FMB_EXPORT_JSONL;
    fmb_job *job = NULL;
    fmb_queue *q = NULL;
    fmb_queue_export *x = NULL;
    fmb_tok *tok = NULL;
    fmb_err err = {{0}};
    int rc = open_output(cmd, &a, &job, &q, 0);
    const char **names = NULL;
    unsigned char *on = NULL;
    if (!rc) {
        names = fmb_xcalloc(job->n_tasks + 1, sizeof *names);
        on = fmb_xcalloc(job->n_tasks + 1, 1);
        for (size_t t = 0; t < job->n_tasks; t++)
            names[t] = job->tasks[t].name;
    }
    /* --task NAME[,NAME]: each must be a task of the job */
    for (int i = 0; !rc && i < a.n_tasks; i++) {
        for (const char *p = a.tasks[i]; !rc && *p;) {
            size_t l = strcspn(p, ",");
            size_t t = 0;
            while (t < job->n_tasks && (strlen(names[t]) != l || memcmp(names[t], p, l)))
                t++;
            if (t == job->n_tasks) {
                fmb_sb b = {0};
                for (size_t k = 0; k < job->n_tasks; k++)
                    fmb_sb_printf(&b, "%s%s", k ? ", " : "", names[k]);
                fmb_cli_error(cmd, "--task: '%.*s' is not a task of %s (tasks: %s)", (int)l, p,
                              a.job_path, b.buf ? b.buf : "");
                fmb_sb_free(&b);
                rc = FMB_EXIT_USAGE;
            } else {
                on[t] = 1;
            }
            p += l + (p[l] == ',');
        }
    }
    /* generated text loses its special tokens unless --keep-special: the tokenizer says which */
    if (!rc && !a.keep_special && fmb_tok_load(job->tokenizer, &tok, &err)) {
        fmb_cli_error(cmd,
                      "%s: cannot load the tokenizer (%s): generated text is exported as stored, "
                      "special tokens kept",
                      a.job_path, err.msg);
        tok = NULL;
    }
    fmb_export_opts xo = {.format = format,
                          .include_failed = a.include_failed,
                          .wide = a.wide,
                          .tasks = names,
                          .n_tasks = job ? job->n_tasks : 0,
                          .task_on = a.n_tasks ? on : NULL,
                          .columns = a.columns,
                          .tok = tok};
    fmb_status xs;
    if (!rc && (xs = fmb_queue_export_open(q, &xo, &x, &err))) {
        fmb_cli_error(cmd, "%s", err.msg);
        rc = xs == FMB_EINVAL ? FMB_EXIT_USAGE : FMB_EXIT_FATAL;
    }
    while (!rc) {
        const char *line;
        size_t len;
        if (fmb_queue_export_next(x, &line, &len, &err)) {
            fmb_cli_error(cmd, "%s", err.msg);
            rc = FMB_EXIT_FATAL;
        } else if (!line) {
            break;
        } else {
            fwrite(line, 1, len, stdout);
        }
    }
    if (!rc && (fflush(stdout) || ferror(stdout))) {
        fmb_cli_error(cmd, "cannot write the export to standard output");
        rc = FMB_EXIT_FATAL;
    }
    fmb_queue_export_close(x);
    fmb_tok_free(tok);
    free(names);
    free(on);
    fmb_queue_close(q);
    fmb_job_free(job);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* prune: the items whose key the source no longer yields (a file removed, an id gone; every
 * key the source yields counts, failed ones too), reported, and with --apply removed. The
 * source is read through once, as a run reads it (its limits bound what is held). */

int fmb_cmd_prune(int argc, char **argv)
{
    const char *cmd = argv[0];
    job_args a;
    int rc_args;
    if (parse_or_exit(argc, argv, &a, &rc_args))
        return rc_args;
    fmb_job *job = NULL;
    fmb_queue *q = NULL;
    fmb_err err;
    int rc = open_output(cmd, &a, &job, &q, 0);
    fmb_source *src = NULL;
    fmb_status s;
    if (!rc && (s = fmb_src_open(job, &src, &err))) {
        fmb_cli_error(cmd, "%s", err.msg);
        rc = s == FMB_EINVAL ? FMB_EXIT_USAGE : FMB_EXIT_FATAL;
    }
    if (!rc && fmb_queue_prune_start(q, &err)) {
        fmb_cli_error(cmd, "%s", err.msg);
        rc = FMB_EXIT_FATAL;
    }
    int64_t seen = 0;
    while (!rc) {
        fmb_doc doc;
        int eof;
        if (fmb_src_next(src, &doc, &eof, &err) ||
            (!eof && fmb_queue_prune_seen(q, doc.key, &err))) {
            fmb_cli_error(cmd, "%s (nothing was removed)", err.msg);
            rc = FMB_EXIT_FATAL;
        } else if (eof) {
            break;
        }
        seen++;
    }
    fmb_src_close(src);
    char *json = NULL;
    if (!rc && fmb_queue_prune_finish(q, a.apply, &json, &err)) {
        fmb_cli_error(cmd, "%s", err.msg);
        rc = FMB_EXIT_FATAL;
    }
    if (!rc) {
        /* {"source_items":N, ...the queue's counts} on one line, as status */
        printf("{\"source_items\":%lld,%s\n", (long long)seen, json + 1);
        if (fflush(stdout) || ferror(stdout))
            rc = FMB_EXIT_FATAL;
    }
    free(json);
    fmb_queue_close(q);
    fmb_job_free(job);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* report */

int fmb_cmd_report(int argc, char **argv)
{
    const char *cmd = argv[0];
    job_args a;
    int rc_args;
    if (parse_or_exit(argc, argv, &a, &rc_args))
        return rc_args;
    fmb_job *job = NULL;
    fmb_err err;
    if (job_load(&a, &job, &err)) {
        fmb_cli_error(cmd, "%s", err.msg);
        return FMB_EXIT_USAGE;
    }
    if (access(job->output, F_OK) != 0) {
        fmb_cli_error(cmd, "%s: no results yet: run `fmbatch run %s` first (%s does not exist)",
                      a.job_path, a.job_path, job->output);
        fmb_job_free(job);
        return FMB_EXIT_FATAL;
    }
    fmb_queue *q = NULL;
    if (fmb_queue_open(job->output, job->name, 0, (int)job->max_attempts,
                       (double)job->lease_seconds, &q, &err)) {
        fmb_cli_error(cmd, "%s", err.msg);
        fmb_job_free(job);
        return FMB_EXIT_USAGE;
    }
    /* the HTML file is opened before the work, so that a bad path fails at once */
    FILE *html = NULL;
    int rc = 0;
    if (a.html && !(html = fopen(a.html, "w"))) {
        fmb_cli_error(cmd, "--html %s: %s", a.html, strerror(errno));
        rc = FMB_EXIT_USAGE;
    }
    const char *no_color = getenv("NO_COLOR");
    fmb_report_opts o = {.top = a.top ? (size_t)a.top : 5,
                         .snippets = !a.no_snippets,
                         .bold = isatty(STDOUT_FILENO) && !(no_color && *no_color)};
    fmb_report *r = NULL;
    if (!rc && fmb_report_gather(job, q, &o, &r, &err)) {
        fmb_cli_error(cmd, "%s", err.msg);
        rc = FMB_EXIT_FATAL;
    }
    if (!rc) {
        fmb_report_text(r, stdout);
        if (fflush(stdout) || ferror(stdout)) {
            fmb_cli_error(cmd, "cannot write the report to standard output");
            rc = FMB_EXIT_FATAL;
        }
    }
    if (!rc && html) {
        fmb_report_html(r, html);
        if (fflush(html) || ferror(html)) {
            fmb_cli_error(cmd, "--html %s: write error", a.html);
            rc = FMB_EXIT_FATAL;
        }
    }
    if (html && fclose(html) && !rc) {
        fmb_cli_error(cmd, "--html %s: %s", a.html, strerror(errno));
        rc = FMB_EXIT_FATAL;
    }
    fmb_report_free(r);
    fmb_queue_close(q);
    fmb_job_free(job);
    return rc;
}
