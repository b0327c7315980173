/* cmd_synth: `fmbatch synth` writes a random checkpoint in the HF layout (engine/synth.h). */
#include <getopt.h>
#include <string.h>

#include "batch/cli/cli.h"
#include "engine/synth.h"

int fmb_cmd_synth(int argc, char **argv)
{
    static const struct option lo[] = {{"shape", required_argument, 0, 's'},
                                       {"out", required_argument, 0, 'o'},
                                       {"dtype", required_argument, 0, 'd'},
                                       {"shards", required_argument, 0, 'n'},
                                       {"seed", required_argument, 0, 'r'},
                                       {"help", no_argument, 0, 'H'},
                                       {0, 0, 0, 0}};
    static const fmb_cli_opt_help own[] = {
        {"shape", "7b|100m|tiny|D=..,L=..,V=..", "the model's shape"},
        {"out", "DIR", "the folder to write (config.json, safetensors)"},
        {"dtype", "bf16|f32", "stored dtype (default bf16)"},
        {"shards", "N", "safetensors shards (with an index when N > 1)"},
        {"seed", "N", "seed of the random weights"},
        {NULL, NULL, NULL}};
    const char *cmd = "synth", *shape = NULL, *out = NULL;
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
    if (s) {
        fmb_cli_error(cmd, "%s", err.msg);
        return fmb_cli_exit_code(s);
    }
    fprintf(stderr, "synth: %s: %lld parameters\n", out, (long long)fmb_config_param_count(&cfg));
    return FMB_EXIT_OK;
}
