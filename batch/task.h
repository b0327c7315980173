/*
 * task: runs a job's tasks over one document and turns the outcomes into result rows.
 *
 * All tasks of a document share its prefill. The prefix of a task is
 *   [EOS] + encode(template text before {document}, specials on) + encode(document, specials off)
 * (engine/prompt.h, the split `fmbatch generate --document-file F --prompt S` reproduces); tasks
 * whose text before {document} is the same share one prefill, whose end state is snapshotted.
 * A score task scores [EOS] + document, which is exactly the prefix of templates that start with
 * {document}, so it shares their prefill too. Each choice/generate task continues from a copy of
 * the snapshot with encode(text after {document}, specials on).
 *
 *   choice    each candidate (encoded on its own, specials on) is scored after the rest of the
 *             prompt: total and mean logprob; best by total (or mean: best_by = "mean").
 *   generate  seed per item: fmb_hash64(job or task seed, item key, task name) & INT64_MAX with
 *             stream 0, so `fmbatch generate --seed <row's seed>` reproduces the row.
 *
 * Ownership: the rows and everything they point to belong to the fmb_tasks object until the
 * next fmb_tasks_run or fmb_tasks_free.
 */
#ifndef FMB_TASK_H
#define FMB_TASK_H

#include <signal.h>

#include "batch/job.h"
#include "batch/queue.h"
#include "engine/engine.h"
#include "engine/tokenizer.h"

typedef struct fmb_tasks fmb_tasks;

typedef struct {
    fmb_result_row *rows; /* [n], one per job task, in job order */
    size_t n;
    int64_t doc_tokens; /* tokens processed (after truncation) */
} fmb_task_output;

/* Prepares every task: encodes template texts and candidates, compiles regexes (errors name the
 * job file). eng and tok are borrowed and must outlive the object. */
FMB_NODISCARD fmb_status fmb_tasks_new(
    const fmb_job *job, fmb_engine *eng, const fmb_tok *tok, fmb_tasks **out, fmb_err *err);
void fmb_tasks_free(fmb_tasks *t);

/* Runs every task over doc[0..len). FMB_EINTR when *stop became non-zero (checked between
 * prefills and tasks); any other error fails this document only (err says why). */
FMB_NODISCARD fmb_status fmb_tasks_run(fmb_tasks *t,
                                       const char *key,
                                       const char *doc,
                                       size_t len,
                                       const volatile sig_atomic_t *stop,
                                       fmb_task_output *out,
                                       fmb_err *err);

/* The per-item seed of a generate task (see above). */
int64_t fmb_task_item_seed(uint64_t seed, const char *key, const char *task_name);

#endif
