/* fmbatch: command dispatch. Each command lives in batch/cli/cmd_*.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "batch/cli/cli.h"

typedef struct {
    const char *name;
    int (*fn)(int, char **);
    const char *args; /* the synopsis after the name */
    const char *what; /* one line */
} fmb_command;

/* The top-level usage; each command's own options are its --help. */
static const fmb_command commands[] = {
    {"run", NULL, "JOB.toml", "run or resume a job"}, /* takes the fault context */
    {"check", fmb_cmd_check, "JOB.toml", "validate a job: counts, estimates, memory plan"},
    {"status", fmb_cmd_status, "JOB.toml", "queue state of a job (JSON)"},
    {"export", fmb_cmd_export, "JOB.toml --format jsonl|csv", "results, one row per (item, task)"},
    {"retry", fmb_cmd_retry, "JOB.toml --failed", "failed and dead items back in the queue"},
    {"prune", fmb_cmd_prune, "JOB.toml [--apply]", "results of documents gone from the source"},
    {"report", fmb_cmd_report, "JOB.toml [--html F]", "a report to read (text, or HTML)"},
    {"merge", fmb_cmd_merge, "OUT.db SHARD.db...", "one output from a sharded job's outputs"},
    {"score", fmb_cmd_score, "--model DIR (--text-file F | ...)",
     "NLL, perplexity, bits per byte of one document"},
    {"generate", fmb_cmd_generate, "--model DIR --prompt S ...", "one scored generation"},
    {"tokenize", fmb_cmd_tokenize, "(--tokenizer F | --model DIR)", "bytes -> ids"},
    {"detokenize", fmb_cmd_detokenize, "(--tokenizer F | --model DIR)", "ids -> text"},
    {"inspect", fmb_cmd_inspect, "--model DIR", "config, parameters, dtypes, memory plan"},
    {"bench", fmb_cmd_bench, "(--model DIR | --synthetic 7b)", "prefill/decode speed, memory"},
    {"synth", fmb_cmd_synth, "--shape 7b|tiny|SPEC --out DIR", "write a random checkpoint"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: fmbatch <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        int n = fprintf(f, "  %s %s", commands[i].name, commands[i].args);
        fprintf(f, "%*s%s\n", n < 44 ? 44 - n : 1, "", commands[i].what);
    }
    fprintf(f, "\ncommon options: --backend auto|cpu|cuda  --dtype bf16|f32  --chunk-tokens N  "
               "--mem-limit SIZE  --threads N\n"
               "fmbatch COMMAND --help: that command's options; fmbatch --version\n");
}

/* OpenMP threads wait passively unless the user chose otherwise. libgomp's default lets idle
 * threads spin (~300K rounds) after every parallel region: on a shared machine or with two
 * workers on one host the spinning threads take the cores the working ones need (a job ran 3-9x
 * slower than with --threads 1; docs/DECISIONS.md). libgomp reads OMP_WAIT_POLICY once, before
 * main, so an unset policy is set and the program started again, once (the variable is then
 * set). If that exec fails, the run goes on with the default. */
static void passive_openmp(char **argv)
{
    if (getenv("OMP_WAIT_POLICY"))
        return;
    if (setenv("OMP_WAIT_POLICY", "PASSIVE", 1) == 0)
        execv("/proc/self/exe", argv);
}

int main(int argc, char **argv)
{
    passive_openmp(argv);
    if (argc < 2) {
        usage(stderr);
        return FMB_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return FMB_EXIT_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("fmbatch %s (OpenMP wait policy: %s)\n", FMB_VERSION, getenv("OMP_WAIT_POLICY"));
        return FMB_EXIT_OK;
    }
    if (!strcmp(argv[1], "run")) {
        // FMB_FAULT (batch/fault.h, the reliability tests): read here once, passed down
        fmb_fault *fault = NULL;
        fmb_err err;
        if (fmb_fault_parse(getenv("FMB_FAULT"), &fault, &err)) {
            fprintf(stderr, "fmbatch: %s\n", err.msg);
            return FMB_EXIT_USAGE;
        }
        int rc = fmb_cmd_run(argc - 1, argv + 1, fault);
        fmb_fault_free(fault);
        return rc;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name) && commands[i].fn)
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "fmbatch: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return FMB_EXIT_USAGE;
}
