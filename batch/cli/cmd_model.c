/*
 * cmd_model: the single-document commands `score`, `generate` and `inspect`, on top of
 * engine/score, engine/generate and engine/model. Output contracts: docs/ARCHITECTURE.md.
 */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "batch/cli/cli.h"
#include "batch/job.h" /* FMB_TASK_MAX_N, FMB_TASK_MAX_LOGPROBS */
#include "batch/prompt.h"
#include "engine/device.h"
#include "engine/generate.h"
#include "engine/model.h"
#include "engine/score.h"

enum {
    OPT_MODEL = 256,
    OPT_IDS,
    OPT_TEXT,
    OPT_PROMPT,
    OPT_DOC,
    OPT_PER_TOKEN,
    OPT_TOPK_OUT,
    OPT_MAX_NEW,
    OPT_TEMP,
    OPT_TOPK,
    OPT_TOPP,
    OPT_SEED,
    OPT_STOP,
    OPT_IGNORE_EOS,
    OPT_REP_PEN,
    OPT_PRES_PEN,
    OPT_FREQ_PEN,
    OPT_MIN_P,
    OPT_N,
    OPT_LOGPROBS,
    OPT_BACKEND,
    OPT_DTYPE,
    OPT_CHUNK,
    OPT_MEMLIMIT,
    OPT_THREADS,
    OPT_KERNEL,
};

/* The model and input options of score and generate (input_opt handles them). */
#define INPUT_LONGOPTS                                                                             \
    {"model", required_argument, 0, OPT_MODEL}, {"ids-file", required_argument, 0, OPT_IDS},       \
        {"text-file", required_argument, 0, OPT_TEXT},                                             \
    {                                                                                              \
        "prompt", required_argument, 0, OPT_PROMPT                                                 \
    }

#define ENGINE_LONGOPTS                                                                            \
    {"backend", required_argument, 0, OPT_BACKEND}, {"dtype", required_argument, 0, OPT_DTYPE},    \
        {"chunk-tokens", required_argument, 0, OPT_CHUNK},                                         \
        {"mem-limit", required_argument, 0, OPT_MEMLIMIT},                                         \
        {"kernel", required_argument, 0, OPT_KERNEL},                                              \
    {                                                                                              \
        "threads", required_argument, 0, OPT_THREADS                                               \
    }

/* Handles the engine options; returns 1 if handled (0 ok), -1 on a bad value, 0 otherwise. */
static int engine_opt(int c, const char *cmd, fmb_engine_opts *eo)
{
    const char *name = c == OPT_BACKEND    ? "backend"
                       : c == OPT_DTYPE    ? "dtype"
                       : c == OPT_CHUNK    ? "chunk-tokens"
                       : c == OPT_MEMLIMIT ? "mem-limit"
                       : c == OPT_THREADS  ? "threads"
                       : c == OPT_KERNEL   ? "kernel"
                                           : NULL;
    if (!name)
        return 0;
    int bad;
    fmb_cli_engine_opt(name, optarg, eo, &bad);
    if (bad) {
        fmb_cli_error(cmd, "bad value for --%s: '%s'", name, optarg);
        return -1;
    }
    return 1;
}

/* Long-document progress on stderr: "score: 40960/100000 tokens (41%), 652 tok/s". Shown
 * when stderr is a terminal or with --verbose; a line per chunk, overwritten on a terminal. */
typedef struct {
    const char *cmd;
    double t0;
    int tty;
} progress_ctx;

static void show_progress(void *vctx, size_t done, size_t total)
{
    progress_ctx *c = vctx;
    double el = fmb_now() - c->t0;
    fprintf(stderr, "%s%s: %zu/%zu tokens (%.0f%%), %.0f tok/s%s", c->tty ? "\r" : "", c->cmd, done,
            total, 100.0 * (double)done / (double)total, el > 0 ? (double)done / el : 0.0,
            c->tty ? (done == total ? "\n" : "") : "\n");
    fflush(stderr);
}

/* The options naming the model and the input, shared by score and generate. */
typedef struct {
    const char *model, *ids_file, *text_file, *prompt, *doc_file;
} input_opts;

/* Returns 1 if c was one of the input options (stored in in), else 0. */
static int input_opt(int c, input_opts *in)
{
    switch (c) {
    case OPT_MODEL:
        in->model = optarg;
        return 1;
    case OPT_IDS:
        in->ids_file = optarg;
        return 1;
    case OPT_TEXT:
        in->text_file = optarg;
        return 1;
    case OPT_PROMPT:
        in->prompt = optarg;
        return 1;
    case OPT_DOC:
        in->doc_file = optarg;
        return 1;
    }
    return 0;
}

static void print_json_string(FILE *f, const char *s, size_t len)
{
    json_t *j = json_stringn(s, len);
    if (!j) { // not valid UTF-8 (cannot happen after a lossy decode): print null
        fputs("null", f);
        return;
    }
    char *d = json_dumps(j, JSON_ENCODE_ANY | JSON_ENSURE_ASCII);
    fputs(d, f);
    free(d);
    json_decref(j);
}

/* DIR/tokenizer.json into path (a buffer of FMB_TOK_PATH bytes). */
enum { FMB_TOK_PATH = 4200 };
static const char *tok_path(const char *model, char *path)
{
    snprintf(path, FMB_TOK_PATH, "%s/tokenizer.json", model);
    return path;
}

// --- score -------------------------------------------------------------------------------

int fmb_cmd_score(int argc, char **argv)
{
    static const struct option lo[] = {INPUT_LONGOPTS,
                                       {"per-token", no_argument, 0, OPT_PER_TOKEN},
                                       {"top-k", required_argument, 0, OPT_TOPK_OUT},
                                       {"verbose", no_argument, 0, 'v'},
                                       ENGINE_LONGOPTS,
                                       {"help", no_argument, 0, 'H'},
                                       {0, 0, 0, 0}};
    static const fmb_cli_opt_help own[] = {
        {"per-token", NULL, "print every scored token's id, byte offset, NLL and rank"},
        {"top-k", "K", "per-token top-K alternatives (needs --per-token)"},
        {NULL, NULL, NULL}};
    const char *cmd = "score";
    input_opts in = {0};
    int per_token = 0, top_k = 0, verbose = 0, c, h;
    uint64_t u;
    double t_start = fmb_now();
    fmb_engine_opts eo = {0};
    if (fmb_cli_engine_env(cmd, &eo))
        return FMB_EXIT_USAGE;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        if ((h = engine_opt(c, cmd, &eo)) < 0)
            return FMB_EXIT_USAGE;
        if (h || input_opt(c, &in))
            continue;
        switch (c) {
        case 'H':
            fmb_cli_help("score --model DIR (--ids-file F | --text-file F | --prompt S) [options]",
                         lo, own);
            return FMB_EXIT_OK;
        case OPT_PER_TOKEN:
            per_token = 1;
            break;
        case 'v':
            verbose = 1;
            break;
        case OPT_TOPK_OUT:
            if (fmb_cli_parse_u64(optarg, &u) || u > 64) {
                fmb_cli_error(cmd, "--top-k must be an integer in [0, 64]");
                return FMB_EXIT_USAGE;
            }
            top_k = (int)u;
            break;
        case '?':
            return FMB_EXIT_USAGE;
        default:
            return FMB_EXIT_USAGE;
        }
    }
    const char *model = in.model, *ids_file = in.ids_file, *text_file = in.text_file,
               *prompt = in.prompt;
    if (!model || (!!ids_file + !!text_file + !!prompt) != 1 || optind != argc) {
        fmb_cli_error(cmd, "usage: fmbatch score --model DIR (--ids-file F | --text-file F | "
                           "--prompt S) [--per-token] [--top-k K]");
        return FMB_EXIT_USAGE;
    }
    fmb_err err;
    fmb_engine *eng = NULL;
    fmb_tok *tok = NULL;
    fmb_state *st = NULL;
    int32_t *ids = NULL;
    char *text = NULL;
    size_t n = 0, bytes = 0;
    fmb_ids enc = {0};
    fmb_score_result r = {0};
    int rc = FMB_EXIT_OK;
    fmb_status s = fmb_engine_open(model, &eo, &eng, &err);
    if (s)
        goto fail;
    const fmb_config *cfg = fmb_engine_config(eng);
    fmb_score_opts so = {-1, per_token, top_k};
    if (ids_file) {
        // the ids as given: the first one is context only
        if ((s = fmb_cli_read_ids(ids_file, &ids, &n, &err)))
            goto fail;
    } else {
        char tp[FMB_TOK_PATH];
        if ((s = fmb_tok_load(tok_path(model, tp), &tok, &err)))
            goto fail;
        if (text_file) {
            if ((s = fmb_cli_read_file(text_file, &text, &bytes, &err)))
                goto fail;
            enc.want_offsets = per_token; /* a job's score row keeps them (token_offset) */
            s = fmb_tok_encode(tok, text, bytes, 0, &enc, &err); // document: no specials
        } else {
            bytes = strlen(prompt);
            enc.want_offsets = per_token;
            s = fmb_tok_encode(tok, prompt, bytes, 1, &enc, &err);
        }
        if (s)
            goto fail;
        ids = enc.ids;
        n = enc.n;
        // EOS is the context of the first token, so every token and byte is scored
        so.context_id = cfg->n_eos ? cfg->eos_ids[0] : -1;
    }
    double t_score = fmb_now();
    progress_ctx pc = {cmd, t_score, isatty(2)};
    if (pc.tty || verbose)
        fmb_engine_set_progress(eng, show_progress, &pc);
    if ((s = fmb_state_new(eng, &st, &err)) ||
        (s = fmb_score(eng, st, ids, n, bytes, &so, &r, &err)))
        goto fail;
    if (verbose) {
        double el = fmb_now() - t_score;
        fprintf(stderr,
                "score: %zu tokens in %.3f s (%.1f tokens/s) on %s, chunk %zu; load %.3f s\n",
                r.scored + 1, el, (double)(r.scored + 1) / el, fmb_engine_device_name(eng),
                fmb_engine_chunk_tokens(eng), t_score - t_start);
    }
    printf("{\"tokens\":%zu,\"sum_nll\":", r.tokens);
    fmb_cli_json_num(stdout, r.scored ? r.sum_nll : NAN);
    printf(",\"mean_nll\":");
    fmb_cli_json_num(stdout, r.mean_nll);
    printf(",\"ppl\":");
    fmb_cli_json_num(stdout, r.ppl);
    printf(",\"bits_per_byte\":");
    fmb_cli_json_num(stdout, r.bits_per_byte);
    if (per_token) {
        printf(",\"nll\":[");
        for (size_t i = 0; i < r.scored; i++) {
            if (i)
                putchar(',');
            fmb_cli_json_num(stdout, r.nll[i]);
        }
        printf("],\"rank\":[");
        for (size_t i = 0; i < r.scored; i++)
            printf(i ? ",%d" : "%d", r.rank[i]);
        printf("],\"argmax\":[");
        for (size_t i = 0; i < r.tokens; i++)
            printf(i ? ",%d" : "%d", r.argmax[i]);
        // the scored tokens (nll[i] is ids[i]'s) and where each starts in the text, as a job's
        // score row stores them (token_offset); an ids file has no text: offsets null
        size_t first = n - r.scored; /* 1 when the first id was context only */
        printf("],\"ids\":[");
        for (size_t i = 0; i < r.scored; i++)
            printf(i ? ",%d" : "%d", ids[first + i]);
        printf("],\"offsets\":");
        if (enc.offsets) {
            printf("[");
            for (size_t i = 0; i < r.scored; i++)
                printf(i ? ",%zu" : "%zu", enc.offsets[first + i]);
            printf("]");
        } else {
            printf("null");
        }
        if (top_k) {
            printf(",\"top_k\":[");
            for (size_t i = 0; i < r.scored; i++) {
                printf(i ? ",[" : "[");
                for (int k = 0; k < top_k; k++) {
                    printf(k ? ",[%d," : "[%d,", r.topk_ids[i * (size_t)top_k + k]);
                    fmb_cli_json_num(stdout, r.topk_logprobs[i * (size_t)top_k + k]);
                    putchar(']');
                }
                putchar(']');
            }
            putchar(']');
        }
    }
    printf("}\n");
    goto out;
fail:
    fmb_cli_error(cmd, "%s", err.msg);
    rc = fmb_cli_exit_code(s);
out:
    fmb_score_result_free(&r);
    if (ids != enc.ids)
        free(ids);
    fmb_ids_free(&enc);
    free(text);
    fmb_state_free(st);
    fmb_tok_free(tok);
    fmb_engine_free(eng);
    return rc;
}

// --- generate ----------------------------------------------------------------------------

int fmb_cmd_generate(int argc, char **argv)
{
    static const struct option lo[] = {INPUT_LONGOPTS,
                                       {"document-file", required_argument, 0, OPT_DOC},
                                       {"max-new-tokens", required_argument, 0, OPT_MAX_NEW},
                                       {"temperature", required_argument, 0, OPT_TEMP},
                                       {"top-k", required_argument, 0, OPT_TOPK},
                                       {"top-p", required_argument, 0, OPT_TOPP},
                                       {"seed", required_argument, 0, OPT_SEED},
                                       {"stop", required_argument, 0, OPT_STOP},
                                       {"ignore-eos", no_argument, 0, OPT_IGNORE_EOS},
                                       {"repetition-penalty", required_argument, 0, OPT_REP_PEN},
                                       {"presence-penalty", required_argument, 0, OPT_PRES_PEN},
                                       {"frequency-penalty", required_argument, 0, OPT_FREQ_PEN},
                                       {"min-p", required_argument, 0, OPT_MIN_P},
                                       {"n", required_argument, 0, OPT_N},
                                       {"logprobs", required_argument, 0, OPT_LOGPROBS},
                                       ENGINE_LONGOPTS,
                                       {"help", no_argument, 0, 'H'},
                                       {0, 0, 0, 0}};
    static const fmb_cli_opt_help own[] = {
        {"document-file", "FILE", "a document; --prompt is then a template with {document}"},
        {"max-new-tokens", "N", "tokens to generate at most"},
        {"temperature", "T", "sampling temperature (default 0: greedy)"},
        {"top-k", "K", "sample from the K most likely tokens (default 0: off)"},
        {"top-p", "P", "nucleus sampling mass (default 1: off)"},
        {"seed", "N", "sampling seed (a job row's seed reproduces it)"},
        {"stop", "TEXT", "stop string; repeatable"},
        {"ignore-eos", NULL, "do not stop at the model's EOS"},
        {"repetition-penalty", "R",
         "HF repetition penalty over the input and generated ids "
         "(default 1: off)"},
        {"presence-penalty", "P", "subtract P from generated ids' logits (default 0)"},
        {"frequency-penalty", "F", "subtract F per occurrence in the generated ids (default 0)"},
        {"min-p", "P", "drop tokens below P times the top probability (default 0: off)"},
        {"n", "N", "N samples from the same state, one line each (sample j: stream j)"},
        {"logprobs", "K", "top-K raw log-probabilities of each generated position (0..20)"},
        {NULL, NULL, NULL}};
    const char *cmd = "generate";
    input_opts in = {0};
    const char *stops[16];
    int n_stop = 0, c, h, n_samples = 1;
    uint64_t u;
    double d;
    fmb_gen_opts go = {0};
    go.max_new_tokens = 16;
    go.sample.top_p = 1.0f;
    fmb_engine_opts eo = {0};
    if (fmb_cli_engine_env(cmd, &eo))
        return FMB_EXIT_USAGE;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        if ((h = engine_opt(c, cmd, &eo)) < 0)
            return FMB_EXIT_USAGE;
        if (h || input_opt(c, &in))
            continue;
        switch (c) {
        case 'H':
            fmb_cli_help("generate --model DIR (--ids-file F | --text-file F | --prompt S | "
                         "--document-file F --prompt S) [options]",
                         lo, own);
            return FMB_EXIT_OK;
        case OPT_MAX_NEW:
            if (fmb_cli_parse_u64(optarg, &u) || u > 1000000) {
                fmb_cli_error(cmd, "--max-new-tokens must be an integer in [0, 1000000]");
                return FMB_EXIT_USAGE;
            }
            go.max_new_tokens = (size_t)u;
            break;
        case OPT_TEMP:
            if (fmb_cli_parse_float(optarg, &d) || d < 0) {
                fmb_cli_error(cmd, "--temperature must be a number >= 0");
                return FMB_EXIT_USAGE;
            }
            go.sample.temperature = (float)d;
            break;
        case OPT_TOPK:
            if (fmb_cli_parse_u64(optarg, &u) || u > INT32_MAX) {
                fmb_cli_error(cmd, "--top-k must be a non-negative integer");
                return FMB_EXIT_USAGE;
            }
            go.sample.top_k = (int)u;
            break;
        case OPT_TOPP:
            if (fmb_cli_parse_float(optarg, &d) || d <= 0 || d > 1) {
                fmb_cli_error(cmd, "--top-p must be in (0, 1]");
                return FMB_EXIT_USAGE;
            }
            go.sample.top_p = (float)d;
            break;
        case OPT_SEED:
            if (fmb_cli_parse_u64(optarg, &u)) {
                fmb_cli_error(cmd, "--seed must be a non-negative integer");
                return FMB_EXIT_USAGE;
            }
            go.sample.seed = u;
            break;
        case OPT_STOP:
            if (n_stop == 16 || !*optarg) {
                fmb_cli_error(cmd, "--stop: at most 16 non-empty stop strings");
                return FMB_EXIT_USAGE;
            }
            stops[n_stop++] = optarg;
            break;
        case OPT_IGNORE_EOS:
            go.ignore_eos = 1;
            break;
        case OPT_REP_PEN:
            if (fmb_cli_parse_float(optarg, &d) || !(d > 0 && d <= 100)) {
                fmb_cli_error(cmd, "--repetition-penalty must be in (0, 100]");
                return FMB_EXIT_USAGE;
            }
            go.sample.repetition_penalty = (float)d;
            break;
        case OPT_PRES_PEN:
        case OPT_FREQ_PEN:
            if (fmb_cli_parse_float(optarg, &d) || !(d >= -2 && d <= 2)) {
                fmb_cli_error(cmd, "--%s-penalty must be in [-2, 2]",
                              c == OPT_PRES_PEN ? "presence" : "frequency");
                return FMB_EXIT_USAGE;
            }
            *(c == OPT_PRES_PEN ? &go.sample.presence_penalty : &go.sample.frequency_penalty) =
                (float)d;
            break;
        case OPT_MIN_P:
            if (fmb_cli_parse_float(optarg, &d) || !(d >= 0 && d <= 1)) {
                fmb_cli_error(cmd, "--min-p must be in [0, 1]");
                return FMB_EXIT_USAGE;
            }
            go.sample.min_p = (float)d;
            break;
        case OPT_N:
            if (fmb_cli_parse_u64(optarg, &u) || u < 1 || u > FMB_TASK_MAX_N) {
                fmb_cli_error(cmd, "--n must be an integer in [1, %d]", FMB_TASK_MAX_N);
                return FMB_EXIT_USAGE;
            }
            n_samples = (int)u;
            break;
        case OPT_LOGPROBS:
            if (fmb_cli_parse_u64(optarg, &u) || u > FMB_TASK_MAX_LOGPROBS) {
                fmb_cli_error(cmd, "--logprobs must be an integer in [0, %d]",
                              FMB_TASK_MAX_LOGPROBS);
                return FMB_EXIT_USAGE;
            }
            go.logprobs = (int)u;
            break;
        case '?':
            return FMB_EXIT_USAGE;
        default:
            return FMB_EXIT_USAGE;
        }
    }
    const char *model = in.model, *ids_file = in.ids_file, *text_file = in.text_file,
               *prompt = in.prompt, *doc_file = in.doc_file;
    int sources = !!ids_file + !!text_file + (prompt && !doc_file) + !!doc_file;
    if (!model || sources != 1 || (doc_file && !prompt) || optind != argc) {
        fmb_cli_error(cmd, "usage: fmbatch generate --model DIR (--ids-file F | --text-file F | "
                           "--prompt S | --document-file F --prompt S) [--max-new-tokens N] "
                           "[--temperature T] [--top-k K] [--top-p P] [--seed S] [--stop S]... "
                           "[--ignore-eos] [--repetition-penalty R] [--presence-penalty P] "
                           "[--frequency-penalty F] [--min-p P] [--n N] [--logprobs K]");
        return FMB_EXIT_USAGE;
    }
    go.stop = stops;
    go.n_stop = n_stop;
    fmb_err err;
    fmb_engine *eng = NULL;
    fmb_tok *tok = NULL;
    fmb_state *st = NULL, *base = NULL;
    int32_t *ids = NULL;
    char *text = NULL;
    size_t n = 0, len = 0;
    fmb_ids pre = {0}, rest = {0};
    fmb_gen_result r = {0};
    int rc = FMB_EXIT_OK;
    fmb_status s = fmb_engine_open(model, &eo, &eng, &err);
    if (s)
        goto fail;
    const fmb_config *cfg = fmb_engine_config(eng);
    go.eos_ids = cfg->eos_ids;
    go.n_eos = cfg->n_eos;
    // Token ids need no tokenizer (the text is then null) unless stop strings are given.
    char tpath[FMB_TOK_PATH];
    tok_path(model, tpath);
    if (!ids_file || n_stop || access(tpath, F_OK) == 0)
        if ((s = fmb_tok_load(tpath, &tok, &err)))
            goto fail;
    if ((s = fmb_state_new(eng, &st, &err)))
        goto fail;
    const int32_t *prompt_ids;
    size_t n_prompt;
    if (ids_file) {
        if ((s = fmb_cli_read_ids(ids_file, &ids, &n, &err)))
            goto fail;
        prompt_ids = ids;
        n_prompt = n;
    } else if (text_file || (prompt && !doc_file)) {
        if (text_file) {
            if ((s = fmb_cli_read_file(text_file, &text, &len, &err)))
                goto fail;
        } else {
            len = strlen(prompt);
        }
        // a prompt typed by the user may use special tokens; a text file is a document
        if ((s = fmb_tok_encode(tok, text ? text : prompt, len, text ? 0 : 1, &pre, &err)))
            goto fail;
        prompt_ids = pre.ids;
        n_prompt = pre.n;
    } else {
        // A job's split: [EOS] + template-before + document is prefilled on its own, the rest
        // of the prompt continues from that state (batch/prompt.h).
        if ((s = fmb_cli_read_file(doc_file, &text, &len, &err)))
            goto fail;
        int32_t ctx = cfg->n_eos ? cfg->eos_ids[0] : -1;
        if ((s = fmb_prompt_build(tok, ctx, prompt, text, len, &pre, &rest, &err)))
            goto fail;
        if (rest.n) {
            if ((s = fmb_engine_forward(eng, st, pre.ids, pre.n, NULL, &err)))
                goto fail;
            prompt_ids = rest.ids;
            n_prompt = rest.n;
            go.context = pre.ids; /* seen by the repetition penalty, as in a job */
            go.n_context = pre.n;
        } else {
            prompt_ids = pre.ids;
            n_prompt = pre.n;
        }
    }
    // n samples continue the same state, sample j with stream j (a job row's sample j)
    if (n_samples > 1) {
        if ((s = fmb_state_new(eng, &base, &err)))
            goto fail;
        fmb_state_copy(base, st);
    }
    for (int j = 0; j < n_samples; j++) {
        if (j)
            fmb_state_copy(st, base);
        go.sample.stream = (uint64_t)j;
        if ((s = fmb_generate(eng, st, tok, prompt_ids, n_prompt, &go, &r, &err)))
            goto fail;
        printf("{\"prompt_tokens\":%zu,", doc_file ? pre.n + rest.n : n_prompt);
        if (n_samples > 1)
            printf("\"index\":%d,", j);
        printf("\"ids\":[");
        for (size_t i = 0; i < r.n; i++)
            printf(i ? ",%d" : "%d", r.ids[i]);
        printf("],\"logprobs\":[");
        for (size_t i = 0; i < r.n; i++) {
            if (i)
                putchar(',');
            fmb_cli_json_num(stdout, r.logprobs[i]);
        }
        printf("]");
        if (r.top_k) {
            // [[[id, logprob], ... K], ... tokens], as `score --top-k`
            printf(",\"top_logprobs\":[");
            for (size_t i = 0; i < r.n; i++) {
                printf(i ? ",[" : "[");
                for (int k = 0; k < r.top_k; k++) {
                    printf(k ? ",[%d," : "[%d,", r.top_ids[i * (size_t)r.top_k + k]);
                    fmb_cli_json_num(stdout, r.top_logprobs[i * (size_t)r.top_k + k]);
                    putchar(']');
                }
                putchar(']');
            }
            putchar(']');
        }
        printf(",\"text\":");
        if (r.text)
            print_json_string(stdout, r.text, r.text_len);
        else
            printf("null");
        printf(",\"finish_reason\":\"%s\"}\n", r.finish_reason);
        fmb_gen_result_free(&r);
    }
    goto out;
fail:
    fmb_cli_error(cmd, "%s", err.msg);
    rc = fmb_cli_exit_code(s);
out:
    fmb_gen_result_free(&r);
    free(ids);
    free(text);
    fmb_ids_free(&pre);
    fmb_ids_free(&rest);
    fmb_state_free(base);
    fmb_state_free(st);
    fmb_tok_free(tok);
    fmb_engine_free(eng);
    return rc;
}

// --- inspect -----------------------------------------------------------------------------

int fmb_cmd_inspect(int argc, char **argv)
{
    static const struct option lo[] = {{"model", required_argument, 0, OPT_MODEL},
                                       ENGINE_LONGOPTS,
                                       {"help", no_argument, 0, 'H'},
                                       {0, 0, 0, 0}};
    const char *cmd = "inspect", *model = NULL;
    int c, h;
    fmb_engine_opts eo = {0};
    if (fmb_cli_engine_env(cmd, &eo))
        return FMB_EXIT_USAGE;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        if ((h = engine_opt(c, cmd, &eo)))
            if (h < 0)
                return FMB_EXIT_USAGE;
        if (c == 'H') {
            fmb_cli_help("inspect --model DIR [options]", lo, NULL);
            return FMB_EXIT_OK;
        }
        if (c == OPT_MODEL)
            model = optarg;
        else if (!h)
            return FMB_EXIT_USAGE;
    }
    if (!model || optind != argc) {
        fmb_cli_error(cmd, "usage: fmbatch inspect --model DIR [--backend ..] [--kernel K=V,..]");
        return FMB_EXIT_USAGE;
    }
    fmb_err err;
    fmb_model *m;
    fmb_status s = fmb_model_open(model, &m, &err);
    if (s) {
        fmb_cli_error(cmd, "%s", err.msg);
        return fmb_cli_exit_code(s);
    }
    const fmb_config *k = &m->cfg;
    size_t params = 0, by_dtype[6] = {0};
    for (size_t i = 0; i < fmb_st_count(m->st); i++) {
        const fmb_tensor *t = fmb_st_at(m->st, i);
        params += t->numel;
        by_dtype[t->dtype] += t->numel;
    }
    size_t chunk = eo.chunk_tokens ? eo.chunk_tokens : 512;
    size_t D = (size_t)k->D, E = (size_t)k->E, N = (size_t)k->N, R = (size_t)k->R, V = (size_t)k->V;
    size_t state = (size_t)k->L * E * ((size_t)k->K - 1 + N) * 4;
    size_t scratch = chunk * (3 * D + 5 * E + R + 2 * N) * 4;
    printf("{\"model\":");
    print_json_string(stdout, model, strlen(model));
    printf(",\"model_type\":\"%s\",\"config\":{\"vocab_size\":%zu,\"hidden_size\":%zu,"
           "\"intermediate_size\":%zu,\"state_size\":%zu,\"time_step_rank\":%zu,"
           "\"conv_kernel\":%lld,\"num_hidden_layers\":%lld,\"layer_norm_epsilon\":%g,"
           "\"mixer_rms_eps\":%g,\"mixer_norm\":%s,\"tie_word_embeddings\":%s,\"use_bias\":%s,"
           "\"use_conv_bias\":%s,\"eos_token_id\":[",
           k->model_type, V, D, E, N, R, (long long)k->K, (long long)k->L, k->norm_eps,
           k->mixer_eps, k->mixer_norm ? "true" : "false", k->tie_embeddings ? "true" : "false",
           k->use_bias ? "true" : "false", k->use_conv_bias ? "true" : "false");
    for (int i = 0; i < k->n_eos; i++)
        printf(i ? ",%d" : "%d", k->eos_ids[i]);
    printf("]},\"parameters\":%zu,\"parameters_by_dtype\":{", params);
    int first = 1;
    for (int dt = 0; dt < 6; dt++)
        if (by_dtype[dt]) {
            printf("%s\"%s\":%zu", first ? "" : ",", fmb_dtype_name((fmb_dtype)dt), by_dtype[dt]);
            first = 0;
        }
    printf("},\"tensors\":%zu,\"file_bytes\":%zu,", fmb_st_count(m->st), fmb_st_file_bytes(m->st));
    printf("\"memory_plan\":{\"bf16_weights_bytes\":%zu,\"f32_weights_bytes\":%zu,"
           "\"state_bytes_per_sequence\":%zu,\"chunk_tokens\":%zu,"
           "\"cpu_scratch_bytes\":%zu,\"logits_tile_bytes\":%zu},",
           params * 2, params * 4, state, chunk, scratch, (size_t)64 << 20);
    // The kernel choices an engine opened with these options would take (pdl=auto: on where
    // the device supports it; `fmbatch bench` and `check` report it resolved).
    const char *backend = fmb_device_backend_for(eo.backend);
    char kern[256];
    if (strcmp(backend, "cuda"))
        snprintf(kern, sizeof kern, "n/a (cpu backend)");
    else
        fmb_kernel_opts_format(&eo.kernel, FMB_KOPTS_ALL, kern, sizeof kern);
    printf("\"backend\":\"%s\",\"kernels\":\"%s\"", backend, kern);
    // NaN/Inf weights make every result non-finite (the engine then fails each item): listed
    // here and named on stderr; inspect still exits 0 (it reports), `check` refuses the job.
    size_t n_bad;
    const char *bad_name;
    json_t *bad = fmb_cli_nonfinite_weights(m->st, &n_bad, &bad_name);
    char *bad_txt = json_dumps(bad, JSON_COMPACT);
    printf(",\"nonfinite_weights\":%s}\n", bad_txt ? bad_txt : "[]");
    free(bad_txt);
    json_decref(bad);
    if (n_bad)
        fmb_cli_error(cmd, "%s: %zu tensors hold NaN or Inf values (first: %s)",
                      fmb_st_source(m->st), n_bad, bad_name);
    fmb_model_free(m);
    return FMB_EXIT_OK;
}
