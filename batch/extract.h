/*
 * extract: PCRE2 named groups pulled out of generated text, as a JSON object.
 *
 * A task's `extract = { name = 'regex', ... }` compiles every regex once (UTF, JIT when the
 * machine has it, match and depth limits from the task). For one text the result is
 *   {"ok": true|false, "<group>": "captured" | null, ...}
 * with every named group of every regex; ok is true when every regex matched. A regex that hits
 * its match or depth limit is an item failure (FMB_ELIMIT), not a non-match.
 *
 * Ownership: the set is created by fmb_extract_new and freed by fmb_extract_free; it is not
 * shared between threads (one match data block inside).
 */
#ifndef FMB_EXTRACT_H
#define FMB_EXTRACT_H

#include "batch/job.h"
#include "kernels/base.h"

typedef struct fmb_extract fmb_extract;

/* Compiles the task's regexes. Errors name job_path:line:col and the offset in the pattern. */
FMB_NODISCARD fmb_status fmb_extract_new(const fmb_task_cfg *task,
                                         const char *job_path,
                                         fmb_extract **out,
                                         fmb_err *err);
void fmb_extract_free(fmb_extract *x);

/* Runs every regex over text[0..len). *json (caller frees) gets the object above. */
FMB_NODISCARD fmb_status
fmb_extract_run(fmb_extract *x, const char *text, size_t len, char **json, fmb_err *err);

#endif
