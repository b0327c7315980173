/*
 * job: a job file (TOML) read into a validated fmb_job.
 *
 *   [job]     name, model, tokenizer, output, backend, dtype, chunk_tokens, threads, max_batch,
 *             mem_limit, seed, max_document_tokens, max_document_bytes, too_long
 *             ("truncate" | "skip"),
 *             max_attempts, lease_seconds, kernel (the kernel choices, "scan=seg": kopts.h),
 *             shard ("I/N" | "auto": batch/shard.h; applied by the CLI, which may override it)
 *   [source]  kind = "archive" | "jsonl" | "files" | "sqlite" and its keys (see job.c)
 *   [[task]]  name, kind = "score" | "choice" | "generate" and its keys
 *
 * Unknown keys, wrong types and missing required keys are FMB_EINVAL errors naming
 * file:line:column. Relative paths (model, tokenizer, output, source paths, database) resolve
 * against the job file's folder; item keys use the paths as written (see fmb_job.dir).
 *
 * Ownership: fmb_job_load returns a job the caller frees with fmb_job_free; all strings inside
 * belong to it.
 */
#ifndef FMB_JOB_H
#define FMB_JOB_H

#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h" /* fmb_kernel_opts */
#include "kernels/base.h"

typedef enum { FMB_SRC_ARCHIVE = 0, FMB_SRC_JSONL, FMB_SRC_FILES, FMB_SRC_SQLITE } fmb_src_kind;
typedef enum { FMB_TASK_SCORE = 0, FMB_TASK_CHOICE, FMB_TASK_GENERATE } fmb_task_kind;
typedef enum { FMB_TOO_LONG_TRUNCATE = 0, FMB_TOO_LONG_SKIP } fmb_too_long;

typedef struct {
    fmb_src_kind kind;
    char **paths; /* globs as written (archive, jsonl, files); relative to fmb_job.dir */
    size_t n_paths;
    char **include; /* fnmatch patterns on entry/relative names; empty = all */
    size_t n_include;
    char **exclude;
    size_t n_exclude;
    char *text_field;   /* jsonl: default "text" */
    char *id_field;     /* jsonl: NULL = line number */
    char **keep_fields; /* jsonl fields / sqlite query columns carried into item.meta */
    size_t n_keep_fields;
    int key_content;         /* key = "content": items keyed by the content hash */
    char *database;          /* sqlite: path as written */
    char *query;             /* sqlite: SELECT giving (key, text) */
    int64_t page_rows;       /* sqlite: rows per keyset page */
    int64_t max_entry_bytes; /* one document (entry, line, file, row) */
    int64_t max_total_bytes; /* all bytes out of one archive or jsonl file (0 = no limit) */
    double max_ratio;        /* uncompressed / compressed bytes of one archive (0 = off) */
    int64_t ratio_floor;     /* the ratio is checked only past this many bytes out */
} fmb_source_cfg;

/* One extraction regex: name = pattern, named groups become JSON fields. */
typedef struct {
    char *name;
    char *pattern;
    int line, col; /* where the pattern was written, for compile errors */
} fmb_extract_cfg;

typedef struct {
    char *name;
    fmb_task_kind kind;
    char *prompt;   /* choice/generate: template with exactly one {document} */
    char *prefix;   /* prompt before {document} (owned, may be "") */
    char *suffix;   /* prompt after {document} (owned, non-empty for choice/generate) */
    char **choices; /* choice */
    size_t n_choices;
    int choice_by_mean;  /* choice: "best" by mean logprob instead of total */
    int choice_by_bytes; /* choice: "best" by total / the candidate's bytes (lm-eval acc_norm) */
    /* score */
    int per_token;
    int top_k_tokens;
    /* generate */
    int64_t max_new_tokens;
    double temperature;
    int64_t top_k;
    double top_p;
    int has_seed;
    uint64_t seed; /* task seed (default: the job's) */
    char **stop;
    size_t n_stop;
    int32_t *eos; /* explicit EOS ids; NULL = the model's */
    int n_eos;
    int ignore_eos;
    fmb_extract_cfg *extract;
    size_t n_extract;
    int64_t match_limit; /* PCRE2 match limit for extract */
    int64_t depth_limit; /* PCRE2 depth limit */
    /* generate: logits processors (engine/sample.h) and samples; defaults are off / 1 */
    double repetition_penalty;                  /* 1 = off; > 0 */
    double presence_penalty, frequency_penalty; /* 0 = off; -2..2 */
    double min_p;                               /* 0 = off; 0..1 */
    int64_t n;                                  /* samples per document, 1..FMB_TASK_MAX_N */
    int64_t logprobs;                           /* top-k logprobs per generated token, 0..20 */
} fmb_task_cfg;

/* The largest n and logprobs of a generate task. */
#define FMB_TASK_MAX_N        64
#define FMB_TASK_MAX_LOGPROBS 20

typedef struct {
    char *path; /* the job file as given */
    char *dir;  /* the job file's folder (absolute) */
    char *name;
    char *model;           /* resolved path */
    char *tokenizer;       /* resolved path (default model/tokenizer.json) */
    char *output;          /* resolved path ("{shard}" replaced once fmb_shard_apply ran) */
    char *output_template; /* NULL, or the resolved path as written, with "{shard}" */
    char *shard;           /* [job].shard as written ("I/N" | "auto"), NULL: none */
    int64_t shard_index, shard_count; /* batch/shard.h; shard_count 0: unsharded */
    char *backend;                    /* "auto" | "cpu" | "cuda" */
    char *dtype;                      /* NULL | "bf16" | "f32" */
    int64_t chunk_tokens, threads;
    int64_t max_batch; /* documents in flight at once (0: the backend's default); never in the
                        * fingerprint: rows do not depend on it */
    char *mem_limit;   /* as written, "24GiB" */
    uint64_t seed;
    int64_t max_document_tokens; /* 0 = no limit */
    int64_t max_document_bytes;  /* a larger document fails its item (0 = no limit) */
    fmb_too_long too_long;
    int64_t max_attempts;
    int64_t lease_seconds;
    /* [job].kernel parsed; the run command overwrites it with the choices the engine gets
     * (command line, then environment, then this), which the fingerprint records. */
    fmb_kernel_opts kernel;
    fmb_source_cfg source;
    fmb_task_cfg *tasks;
    size_t n_tasks;
} fmb_job;

/* The largest job file fmb_job_load reads (its message states this figure). */
#define FMB_JOB_FILE_MAX ((size_t)16 << 20)

/* Parses a byte size: "24GiB", "512M", "1.5GB", "1000" (decimal K/M/G/T, binary KiB/MiB/GiB/
 * TiB, case-insensitive). Returns 0 on success. ([job].mem_limit and --mem-limit.) */
int fmb_job_parse_size(const char *s, size_t *out);

/* Reads and validates path. Errors name path:line:column. Caller frees with fmb_job_free. */
FMB_NODISCARD fmb_status fmb_job_load(const char *path, fmb_job **out, fmb_err *err);
/* The same from text already in memory (dir: the folder relative paths resolve against). */
FMB_NODISCARD fmb_status fmb_job_parse(
    const char *text, size_t len, const char *path, const char *dir, fmb_job **out, fmb_err *err);
void fmb_job_free(fmb_job *job);

/* Joins a path as written with the job folder (absolute paths unchanged). Caller frees. */
char *fmb_job_resolve(const fmb_job *job, const char *path);

/* The settings that decide a job's results, one "key = value" line each, sorted by nothing but
 * a fixed order (model_hash and tokenizer_hash are filled in by the caller). Caller frees. */
char *
fmb_job_fingerprint_text(const fmb_job *job, const char *model_hash, const char *tokenizer_hash);

const char *fmb_task_kind_name(fmb_task_kind k);
const char *fmb_src_kind_name(fmb_src_kind k);

#endif
