/*
 * cli: the command table and helpers shared by the fmbatch commands (batch/cli/cmd_*.c).
 *
 * Exit codes (docs/ARCHITECTURE.md): 0 ok; 2 usage or configuration error (bad flag, bad TOML, bad
 * model folder); 3 a run finished with failed items; 1 any other fatal error; 130/143 on
 * SIGINT/SIGTERM.
 */
#ifndef FMB_CLI_H
#define FMB_CLI_H

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>

#include "batch/fault.h"
#include "batch/job.h"
#include "engine/engine.h"
#include "engine/safetensors.h"
#include "kernels/base.h"

enum { FMB_EXIT_OK = 0, FMB_EXIT_FATAL = 1, FMB_EXIT_USAGE = 2, FMB_EXIT_ITEMS_FAILED = 3 };

/* One function per command; argv[0] is the command name. Returns the exit code. */
int fmb_cmd_score(int argc, char **argv);
int fmb_cmd_generate(int argc, char **argv);
int fmb_cmd_inspect(int argc, char **argv);
int fmb_cmd_synth(int argc, char **argv);
int fmb_cmd_tokenize(int argc, char **argv);
int fmb_cmd_detokenize(int argc, char **argv);
int fmb_cmd_bench(int argc, char **argv);
/* fault: FMB_FAULT as main parsed it (batch/fault.h), borrowed; NULL: none. */
int fmb_cmd_run(int argc, char **argv, fmb_fault *fault);
int fmb_cmd_check(int argc, char **argv);
int fmb_cmd_status(int argc, char **argv);
int fmb_cmd_export(int argc, char **argv);
int fmb_cmd_retry(int argc, char **argv);
int fmb_cmd_report(int argc, char **argv);
int fmb_cmd_prune(int argc, char **argv);
int fmb_cmd_merge(int argc, char **argv);
/* `run --devices`: one worker process per device on the job's one output
 * (batch/cli/cli_workers.c); argv as fmb_cmd_run got it. Returns the combined exit code. */
int fmb_cli_run_workers(int argc, char **argv, const char *devices);

/* Applies the shard of a job command (batch/cli/cli_shard.c): spec (--shard, NULL: [job].shard,
 * NULL: unsharded) and count (--shard-count, 0: none); "auto" reads the schedulers' variables.
 * FMB_EINVAL when they do not make a shard. */
FMB_NODISCARD fmb_status fmb_cli_job_shard(fmb_job *job,
                                           const char *spec,
                                           int64_t count,
                                           fmb_err *err);

/* Maps a status to an exit code: data/configuration errors are usage errors (2). */
int fmb_cli_exit_code(fmb_status s);

/* Prints "fmbatch <cmd>: <msg>" to stderr. */
void fmb_cli_error(const char *cmd, const char *fmt, ...) FMB_PRINTF_LIKE(2, 3);

/* Parses "24GiB", "512M", "1000" (bytes). Returns 0 on success. */
int fmb_cli_parse_size(const char *s, size_t *out);
/* Parses a non-negative integer; returns 0 on success. */
int fmb_cli_parse_u64(const char *s, uint64_t *out);
int fmb_cli_parse_float(const char *s, double *out);

/* Engine options shared by commands: --backend, --dtype, --chunk-tokens, --mem-limit,
 * --threads, --kernel (kernel choices, kernels/kopts.h; repeatable, later items win). Returns
 * 1 if name was one of them (and sets *bad on a bad value), else 0. */
int fmb_cli_engine_opt(const char *name, const char *value, fmb_engine_opts *opts, int *bad);

/* The legacy environment variables of the kernel choices (FMB_SCAN, FMB_MATVEC, FMB_GEMM,
 * FMB_PDL=0, FMB_CUDA_GRAPHS=0, FMB_DEBUG_SYNC=1, FMB_GEMM_VERBOSE=1), read here and nowhere
 * else, into opts->kernel. Every command that opens an engine calls it once, before its flags
 * (so --kernel wins). Returns -1 (after an error message) on a bad value, else 0. */
int fmb_cli_engine_env(const char *cmd, fmb_engine_opts *opts);

/* The "kernels" value that inspect, bench and check report: the choices in effect (all keys)
 * on a backend that has them, else "n/a (cpu backend)". buf: at least 160 bytes. */
const char *fmb_cli_kernel_report(const fmb_engine *eng, char *buf, size_t n);

/* Reads a whole file (path "-" = stdin). Caller frees; NUL-terminated. */
FMB_NODISCARD fmb_status fmb_cli_read_file(const char *path, char **out, size_t *len, fmb_err *err);

/* Help text of one option; a command passes its own for names whose meaning is its own (NULL
 * ends the table), the rest come from cli.c's table of the shared names. */
typedef struct {
    const char *name, *arg, *help;
} fmb_cli_opt_help;

/* `fmbatch CMD --help`: the usage line, then every option of lo (the table getopt is given, so
 * the two cannot drift) with its argument and help. */
void fmb_cli_help(const char *usage, const struct option *lo, const fmb_cli_opt_help *own);

/* Reads token ids: whitespace-separated, or a JSON array (what `fmbatch tokenize` prints).
 * Caller frees *ids. Names the file and the bad word or position. */
FMB_NODISCARD fmb_status fmb_cli_read_ids(const char *path, int32_t **ids, size_t *n, fmb_err *err);

/* The checkpoint's tensors holding NaN or Inf values (one pass over the mapped weights): a
 * JSON array of {"tensor", "dtype", "values", "first_index"}, empty when every weight is finite;
 * *n_bad receives its length, *first_name the first listed tensor's name (borrowed from st) or
 * NULL. Caller owns the array. (`check` and `inspect`.) */
json_t *fmb_cli_nonfinite_weights(const fmb_st *st, size_t *n_bad, const char **first_name);

/* JSON number for a double: NaN and infinities print as null. */
void fmb_cli_json_num(FILE *f, double x);

#endif
