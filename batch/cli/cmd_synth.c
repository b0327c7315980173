/* cmd_synth: `fmbatch synth` writes a random checkpoint in the HF layout (engine/synth.h). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch/cli/cli.h"
#include "engine/synth.h"
#include "engine/tokenizer.h"

/* --tokenizer F: F, checked to load and to fit a vocabulary of V, copied to DIR/tokenizer.json. */
static fmb_status copy_tokenizer(const char *src, const char *dir, int64_t V, fmb_err *err)
{
    fmb_tok *tok = NULL;
    fmb_status s = fmb_tok_load(src, &tok, err);
    if (s)
        return s;
    int32_t n = fmb_tok_vocab_size(tok);
    fmb_tok_free(tok);
    if (n > V)
        return fmb_fail(err, FMB_EINVAL,
                        "%s: %d tokens do not fit the model's vocabulary of %lld (--shape V=..)",
                        src, n, (long long)V);
    char *text;
    size_t len;
    if ((s = fmb_cli_read_file(src, &text, &len, err)))
        return s;
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(text, 1, len, f) == len;
    if (f && fclose(f) != 0)
        ok = 0;
    free(text);
    return ok ? FMB_OK : fmb_fail(err, FMB_EIO, "%s: cannot write", path);
}

int fmb_cmd_synth(int argc, char **argv)
{
    static const struct option lo[] = {
        {"shape", required_argument, 0, 's'}, {"out", required_argument, 0, 'o'},
        {"dtype", required_argument, 0, 'd'}, {"shards", required_argument, 0, 'n'},
        {"seed", required_argument, 0, 'r'},  {"tokenizer", required_argument, 0, 't'},
        {"help", no_argument, 0, 'H'},        {0, 0, 0, 0}};
    static const fmb_cli_opt_help own[] = {
        {"shape", "7b|100m|tiny|D=..,L=..,V=..", "the model's shape"},
        {"out", "DIR", "the folder to write (config.json, safetensors)"},
        {"dtype", "bf16|f32", "stored dtype (default bf16)"},
        {"shards", "N", "safetensors shards (with an index when N > 1)"},
        {"seed", "N", "seed of the random weights"},
        {"tokenizer", "FILE",
         "a tokenizer.json to copy in (its ids must fit the vocabulary), so "
         "that the folder is a complete model"},
        {NULL, NULL, NULL}};
    const char *cmd = "synth", *shape = NULL, *out = NULL, *tokenizer = NULL;
    fmb_synth_opts o = {FMB_DT_BF16, 0, 1, 0};
    int c;
    uint64_t u;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'H':
            fmb_cli_help("synth --shape SHAPE --out DIR [options]", lo, own);
            return FMB_EXIT_OK;
        case 's':
            shape = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        case 'd':
            if (!strcmp(optarg, "bf16"))
                o.dtype = FMB_DT_BF16;
            else if (!strcmp(optarg, "f32"))
                o.dtype = FMB_DT_F32;
            else {
                fmb_cli_error(cmd, "--dtype must be bf16 or f32");
                return FMB_EXIT_USAGE;
            }
            break;
        case 'n':
            if (fmb_cli_parse_u64(optarg, &u) || u < 1 || u > 999) {
                fmb_cli_error(cmd, "--shards must be in [1, 999]");
                return FMB_EXIT_USAGE;
            }
            o.shards = (int)u;
            break;
        case 't':
            tokenizer = optarg;
            break;
        case 'r':
            if (fmb_cli_parse_u64(optarg, &u)) {
                fmb_cli_error(cmd, "--seed must be a non-negative integer");
                return FMB_EXIT_USAGE;
            }
            o.seed = u;
            break;
        default:
            return FMB_EXIT_USAGE;
        }
    }
    if (!shape || !out || optind != argc) {
        fmb_cli_error(cmd, "usage: fmbatch synth --shape 7b|100m|tiny|D=..,L=..,V=..[,E=..,N=..,"
                           "R=..,K=..] --out DIR [--dtype bf16|f32] [--shards N] [--seed S]");
        return FMB_EXIT_USAGE;
    }
    fmb_err err;
    fmb_config cfg;
    fmb_status s = fmb_synth_shape(shape, &cfg, &err);
    if (!s) {
        // The 7B is written like the real checkpoint: three shards, expand 16, no mixer_rms_eps.
        if (!strcmp(shape, "7b")) {
            o.like_7b_config = 1;
            if (!o.shards)
                o.shards = 3;
        }
        if (!o.shards)
            o.shards = 1;
        s = fmb_synth_write(&cfg, out, &o, 1, &err);
    }
    if (!s && tokenizer)
        s = copy_tokenizer(tokenizer, out, cfg.V, &err);
    if (s) {
        fmb_cli_error(cmd, "%s", err.msg);
        return fmb_cli_exit_code(s);
    }
    fprintf(stderr, "synth: %s: %lld parameters\n", out, (long long)fmb_config_param_count(&cfg));
    return FMB_EXIT_OK;
}
