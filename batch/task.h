/*
 * task: runs a job's tasks over one document and turns the outcomes into result rows.
 *
 * All tasks of a document share its prefill. The prefix of a task is
 *   [EOS] + encode(template text before {document}, specials on) + encode(document, specials off)
 * (batch/prompt.h fmb_prompt_prefix, the split `fmbatch generate --document-file F --prompt S`
 * reproduces); tasks whose text before {document} is the same share one prefill, whose end state is
 * snapshotted. A score task scores [EOS] + document, which is exactly the prefix of templates that
 * start with {document}, so it shares their prefill too. Each choice/generate task continues from a
 * copy of the snapshot with encode(text after {document}, specials on).
 *
 *   choice    each candidate (encoded on its own, specials on) is scored after the rest of the
 *             prompt: total and mean logprob; best by total (or mean: best_by = "mean").
 *   generate  seed per item: fmb_hash64(job or task seed, item key, task name) & INT64_MAX with
 *             stream 0, so `fmbatch generate --seed <row's seed>` reproduces the row.
 *
 * Batching: fmb_tasks_run_many takes several documents at once (the runner's window) and
 * drives the engine with packed prefills (fmb_engine_forward_many) and batched decode steps;
 * every result is bitwise what the document gives alone (max_batch = 1).
 *
 * Ownership: the rows and everything they point to belong to their fmb_task_output.
 */
#ifndef FMB_TASK_H
#define FMB_TASK_H

#include "batch/job.h"
#include "batch/queue.h"
#include "engine/engine.h"
#include "engine/tokenizer.h"

typedef struct fmb_tasks fmb_tasks;

/* One document of a batch: borrowed for the fmb_tasks_run_many call. */
typedef struct {
    const char *key;
    const char *data;
    size_t len;
    /* tasks not to run for this document (it has their rows already: a job grown by a task);
     * their rows come back as empty placeholders. NULL / 0: run every task */
    char *const *skip;
    size_t n_skip;
} fmb_task_doc;

/* What a document of the batch gave: rows (status FMB_OK) or why it failed (error). */
typedef struct {
    fmb_status status;
    char error[512];
    fmb_result_row *rows; /* [n], one per job task, in job order */
    size_t n;
    int64_t doc_tokens; /* tokens processed (after truncation) */
    double seconds;     /* the batch's wall time, shared out by tokens */
    /* private: the allocations the rows point to */
    void **owned;
    size_t n_owned, cap_owned;
} fmb_task_output;

/* Frees what the output owns (the rows and what they point to); the struct may be reused. */
void fmb_task_output_free(fmb_task_output *o);

/* How many documents one fmb_tasks_run_many call takes and how many sequences decode
 * together, planned at fmb_tasks_new from the job's max_batch and the device's memory. */
typedef struct {
    size_t max_docs; /* documents per call */
    size_t max_seqs; /* work sequences in flight (choice candidates, generations) */
    size_t states;   /* recurrent states allocated: max_docs · prefix groups + max_seqs */
    size_t state_bytes;
} fmb_tasks_plan;

/* Where a run's engine time went, summed over every fmb_tasks_run_many call. */
typedef struct {
    double prefill_seconds; /* packed prefills of documents and prompt rests, choice pieces */
    int64_t prefill_tokens;
    double decode_seconds; /* batched decode steps */
    int64_t decode_tokens; /* sequences advanced, summed over steps */
    int64_t decode_steps;
} fmb_tasks_stats;
const fmb_tasks_stats *fmb_tasks_stats_get(const fmb_tasks *t);

/* Prepares every task: encodes template texts and candidates, compiles regexes (errors name the
 * job file), and allocates the state pool for max_batch documents at once (0: 1), fewer when
 * the device's memory (mem_limit, or what is free) holds fewer states. eng and tok are
 * borrowed and must outlive the object. */
FMB_NODISCARD fmb_status fmb_tasks_new(const fmb_job *job,
                                       fmb_engine *eng,
                                       const fmb_tok *tok,
                                       size_t max_batch,
                                       size_t mem_limit,
                                       fmb_tasks **out,
                                       fmb_err *err);
void fmb_tasks_free(fmb_tasks *t);
const fmb_tasks_plan *fmb_tasks_plan_get(const fmb_tasks *t);

/* Runs every task over docs[0..n) (n ≤ plan max_docs) as one batch: all prefixes in packed
 * prefills, all choice candidates in packed forwards, all generations in batched decode steps
 * (a finished sequence's slot is refilled at once). A document's rows are bitwise the same
 * whatever else is in the batch, in any order (the engine's batch invariance). outs[i] gets
 * document i's rows or its failure (a failure of one document never fails the others).
 * Returns FMB_EINTR when *stop became non-zero (outputs then hold nothing to keep), else
 * FMB_OK. The caller frees each output with fmb_task_output_free. */
FMB_NODISCARD fmb_status fmb_tasks_run_many(fmb_tasks *t,
                                            const fmb_task_doc *docs,
                                            size_t n,
                                            const fmb_stop_flag *stop,
                                            fmb_task_output *outs,
                                            fmb_err *err);

/* fmb_tasks_run_many in two halves, for a runner that prepares the next batch while the
 * engine runs this one: prepare tokenizes docs into outs (CPU only: it touches no engine or
 * state, so it may run on another thread than batch_run, beside it); batch_run runs the
 * phases (the engine's thread). docs and outs are borrowed until batch_free. */
typedef struct fmb_task_batch fmb_task_batch;
fmb_task_batch *
fmb_tasks_batch_prepare(fmb_tasks *t, const fmb_task_doc *docs, size_t n, fmb_task_output *outs);
FMB_NODISCARD fmb_status fmb_tasks_batch_run(fmb_tasks *t,
                                             fmb_task_batch *b,
                                             const fmb_stop_flag *stop,
                                             fmb_err *err);
void fmb_tasks_batch_free(fmb_task_batch *b);

/* Calls fn(ctx) after each decode step of batch_run (the runner's fault points; NULL removes
 * it). fn runs on the engine's thread. */
void fmb_tasks_set_step_hook(fmb_tasks *t, void (*fn)(void *ctx), void *ctx);

/* The per-item seed of a generate task (see above). */
int64_t fmb_task_item_seed(uint64_t seed, const char *key, const char *task_name);

#endif
