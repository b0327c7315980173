/*
 * cmd_bench: `fmbatch bench (--model DIR | --synthetic 7b)` measures prefill (scoring every
 * token: lm_head + log-probability of the next token), decode at batch 1 and batch B, and
 * device memory as the driver reports it (cudaMemGetInfo: total − free, so the CUDA context and
 * everything else in the process counts). Prints the JSON of ARCHITECTURE.md plus "kernels"
 * (the kernel choices in effect) and "ballast_bytes". Wall-clock timings around synchronous
 * engine calls after a warm-up. Kernel-level timings (the scan alone, conv, matvec) are
 * check notes of tests/gpu/test_kernels (`make test-gpu`).
 *
 *   --tokens 1024,16384,100000   prefill lengths (the last one's state serves the long decode)
 *   --decode-batch 16            the batched decode size (batch 1 is always measured)
 *   --decode-steps 64            steps per decode measurement
 *   --ballast-free 22GiB         first allocate device memory so that only this much is free
 *                                (a 24 GB card), then run everything
 *   --seed S                     synthetic weights and token ids
 *   --kernel K=V,..              kernel choices (kernels/kopts.h), as for every engine command
 *   --threads N                  CPU threads (the CPU backend; default all cores)
 * On the CPU backend the memory figures are the process's peak resident set ("peak_rss_bytes")
 * instead of device memory, and the weights are counted as float32.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "batch/cli/cli.h"
#include "engine/device.h"
#include "engine/synth.h"

#define MAX_LENS 8

typedef struct {
    size_t tokens;
    double seconds;
    size_t peak;
} prefill_row;

typedef struct {
    size_t batch, context;
    double ms;
} decode_row;

static size_t used_device_bytes(void)
{
    size_t fr = 0, tot = 0;
    return fmb_device_mem_info(&fr, &tot) ? tot - fr : 0;
}

/* The process's peak resident set so far (the CPU backend's memory figure). */
static size_t peak_rss_bytes(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? (size_t)ru.ru_maxrss * 1024 : 0;
}

static int32_t *random_ids(size_t n, int64_t V, uint64_t *s)
{
    int32_t *ids = fmb_xmalloc((n ? n : 1) * sizeof *ids);
    for (size_t i = 0; i < n; i++) {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        ids[i] = (int32_t)(*s % (uint64_t)V);
    }
    return ids;
}

/* Scores n tokens from a fresh state (left in *st); returns seconds. */
static double
prefill(fmb_engine *e, fmb_state *st, const int32_t *ids, size_t n, fmb_err *err, fmb_status *rc)
{
    int32_t *tg = fmb_xmalloc(n * sizeof *tg);
    float *lp = fmb_xmalloc(n * sizeof *lp);
    for (size_t i = 0; i < n; i++)
        tg[i] = i + 1 < n ? ids[i + 1] : -1;
    fmb_outputs o = {0};
    o.targets = tg;
    o.logprob = lp;
    fmb_state_reset(st);
    double t0 = fmb_now();
    *rc = fmb_engine_forward(e, st, ids, n, &o, err);
    double dt = fmb_now() - t0;
    free(tg);
    free(lp);
    return dt;
}

/* ms per decode step of `batch` sequences copied from src. */
static double decode(fmb_engine *e,
                     fmb_state *src,
                     size_t batch,
                     int steps,
                     uint64_t *seed,
                     fmb_err *err,
                     fmb_status *rc)
{
    size_t V = (size_t)fmb_engine_config(e)->V;
    fmb_state **sts = fmb_xcalloc(batch, sizeof *sts);
    float *logits = fmb_xmalloc(batch * V * sizeof(float));
    *rc = FMB_OK;
    for (size_t i = 0; i < batch && !*rc; i++)
        if (!(*rc = fmb_state_new(e, &sts[i], err)))
            fmb_state_copy(sts[i], src);
    double ms = -1;
    if (!*rc) {
        int32_t *ids = random_ids(batch * (size_t)(steps + 3), fmb_engine_config(e)->V, seed);
        for (int s = 0; s < 3 && !*rc; s++) // warm-up (and graph capture)
            *rc = fmb_engine_step(e, sts, ids + (size_t)s * batch, batch, logits, err);
        double t0 = fmb_now();
        for (int s = 0; s < steps && !*rc; s++)
            *rc = fmb_engine_step(e, sts, ids + (size_t)(s + 3) * batch, batch, logits, err);
        ms = (fmb_now() - t0) * 1e3 / steps;
        free(ids);
    }
    for (size_t i = 0; i < batch; i++)
        fmb_state_free(sts[i]);
    free(sts);
    free(logits);
    return ms;
}

int fmb_cmd_bench(int argc, char **argv)
{
    const char *cmd = "bench", *model = NULL, *synthetic = NULL;
    fmb_engine_opts eo = {0};
    if (fmb_cli_engine_env(cmd, &eo))
        return FMB_EXIT_USAGE;
    size_t lens[MAX_LENS] = {1024, 16384, 100000};
    int nlens = 3, steps = 64;
    size_t dbatch = 16, ballast_free = 0;
    uint64_t seed = 1;
    enum {
        O_MODEL = 256,
        O_SYN,
        O_TOKENS,
        O_DB,
        O_DS,
        O_BALLAST,
        O_SEED,
        O_BACKEND,
        O_DTYPE,
        O_CHUNK,
        O_MEM,
        O_KERNEL,
        O_THREADS
    };
    static const struct option lo[] = {
        {"model", required_argument, 0, O_MODEL},
        {"synthetic", required_argument, 0, O_SYN},
        {"tokens", required_argument, 0, O_TOKENS},
        {"decode-batch", required_argument, 0, O_DB},
        {"decode-steps", required_argument, 0, O_DS},
        {"ballast-free", required_argument, 0, O_BALLAST},
        {"seed", required_argument, 0, O_SEED},
        {"backend", required_argument, 0, O_BACKEND},
        {"dtype", required_argument, 0, O_DTYPE},
        {"chunk-tokens", required_argument, 0, O_CHUNK},
        {"mem-limit", required_argument, 0, O_MEM},
        {"kernel", required_argument, 0, O_KERNEL},
        {"threads", required_argument, 0, O_THREADS},
        {"help", no_argument, 0, 'H'},
        {0, 0, 0, 0},
    };
    static const fmb_cli_opt_help own[] = {
        {"synthetic", "7b|SPEC", "random weights of that shape made on the GPU (no checkpoint)"},
        {"tokens", "N,N,...", "prefill lengths (default 1024,16384,100000)"},
        {"decode-batch", "B", "the batched decode size (batch 1 is always measured)"},
        {"decode-steps", "S", "steps per decode measurement"},
        {"ballast-free", "SIZE", "allocate device memory until only SIZE is free (a smaller card)"},
        {"seed", "N", "seed of the synthetic weights"},
        {NULL, NULL, NULL}};
    optind = 1;
    int ch;
    uint64_t u;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        int bad = 0;
        switch (ch) {
        case 'H':
            fmb_cli_help("bench (--model DIR | --synthetic 7b) [options]", lo, own);
            return FMB_EXIT_OK;
        case O_MODEL:
            model = optarg;
            break;
        case O_SYN:
            synthetic = optarg;
            break;
        case O_TOKENS: {
            nlens = 0;
            char *s = fmb_xstrdup(optarg), *save = NULL;
            for (char *t = strtok_r(s, ",", &save); t && !bad; t = strtok_r(NULL, ",", &save)) {
                if (nlens == MAX_LENS || fmb_cli_parse_u64(t, &u) || u == 0)
                    bad = 1;
                else
                    lens[nlens++] = (size_t)u;
            }
            free(s);
            break;
        }
        case O_DB:
            bad = fmb_cli_parse_u64(optarg, &u) || u == 0 || u > 256;
            dbatch = (size_t)u;
            break;
        case O_DS:
            bad = fmb_cli_parse_u64(optarg, &u) || u == 0 || u > 100000;
            steps = (int)u;
            break;
        case O_BALLAST:
            bad = fmb_cli_parse_size(optarg, &ballast_free);
            break;
        case O_SEED:
            bad = fmb_cli_parse_u64(optarg, &seed);
            break;
        case O_BACKEND:
            fmb_cli_engine_opt("backend", optarg, &eo, &bad);
            break;
        case O_DTYPE:
            fmb_cli_engine_opt("dtype", optarg, &eo, &bad);
            break;
        case O_CHUNK:
            fmb_cli_engine_opt("chunk-tokens", optarg, &eo, &bad);
            break;
        case O_MEM:
            fmb_cli_engine_opt("mem-limit", optarg, &eo, &bad);
            break;
        case O_KERNEL:
            fmb_cli_engine_opt("kernel", optarg, &eo, &bad);
            break;
        case O_THREADS:
            fmb_cli_engine_opt("threads", optarg, &eo, &bad);
            break;
        default:
            bad = 1;
        }
        if (bad) {
            fmb_cli_error(cmd, "bad option or value (see the comment of batch/cli/cmd_bench.c)");
            return FMB_EXIT_USAGE;
        }
    }
    if (!!model == !!synthetic || optind != argc) {
        fmb_cli_error(cmd, "usage: fmbatch bench (--model DIR | --synthetic 7b|SHAPE) [--tokens "
                           "N,N,..] [--decode-batch B] [--decode-steps S] [--ballast-free SIZE] "
                           "[--backend ..] [--dtype ..] [--chunk-tokens N] [--mem-limit SIZE] "
                           "[--kernel K=V,..] [--threads N]");
        return FMB_EXIT_USAGE;
    }
    if (eo.max_batch < dbatch)
        eo.max_batch = dbatch;

    fmb_err err;
    fmb_status s;
    size_t ballast_bytes = 0;
    void *ballast = NULL;
    if (ballast_free) {
        size_t fr = 0, tot = 0;
        if (!fmb_device_mem_info(&fr, &tot)) {
            fmb_cli_error(cmd, "--ballast-free needs a CUDA device (and the CUDA backend)");
            return FMB_EXIT_USAGE;
        }
        if (fr > ballast_free) {
            ballast_bytes = fr - ballast_free;
            ballast = fmb_device_ballast_new(ballast_bytes);
            if (!ballast) {
                fmb_cli_error(cmd, "could not allocate a %.2f GiB ballast",
                              ballast_bytes / 1073741824.0);
                return FMB_EXIT_FATAL;
            }
        }
    }
    fmb_engine *e = NULL;
    if (synthetic) {
        fmb_config cfg;
        if ((s = fmb_synth_shape(synthetic, &cfg, &err))) {
            fmb_cli_error(cmd, "%s", err.msg);
            return fmb_cli_exit_code(s);
        }
        s = fmb_engine_open_synthetic(&cfg, &eo, seed, &e, &err);
    } else {
        s = fmb_engine_open(model, &eo, &e, &err);
    }
    if (s) {
        fmb_cli_error(cmd, "%s", err.msg);
        return fmb_cli_exit_code(s);
    }
    const fmb_config *c = fmb_engine_config(e);
    int64_t params = fmb_config_param_count(c);
    const int on_cpu = strcmp(fmb_engine_backend_name(e), "cpu") == 0; /* float32 weights */
    size_t wbytes = (size_t)params * (on_cpu || eo.compute == FMB_COMPUTE_F32 ? 4 : 2);

    uint64_t rs = seed * 2654435761u + 7;
    prefill_row pr[MAX_LENS];
    decode_row dr[4];
    int ndr = 0;
    size_t peak = 0;
    fmb_state *st = NULL, *st1k = NULL;
    if ((s = fmb_state_new(e, &st, &err)) || (s = fmb_state_new(e, &st1k, &err)))
        goto fail;
    { // warm-up: load modules, cuBLAS heuristics
        int32_t *w = random_ids(512, c->V, &rs);
        prefill(e, st, w, 512, &err, &s);
        free(w);
        if (s)
            goto fail;
    }
    for (int i = 0; i < nlens; i++) {
        int32_t *ids = random_ids(lens[i], c->V, &rs);
        pr[i].tokens = lens[i];
        pr[i].seconds = prefill(e, st, ids, lens[i], &err, &s);
        pr[i].peak = on_cpu ? peak_rss_bytes() : used_device_bytes() - ballast_bytes;
        if (pr[i].peak > peak)
            peak = pr[i].peak;
        fprintf(stderr, "bench: prefill %zu tokens: %.3f s, %.0f tok/s\n", lens[i], pr[i].seconds,
                lens[i] / pr[i].seconds);
        free(ids);
        if (s)
            goto fail;
        if (i == 0)
            fmb_state_copy(st1k, st);
    }
    // decode: batch 1 after the first (short) and the last (long) prefill; batch B after short
    dr[ndr].batch = 1, dr[ndr].context = lens[0];
    dr[ndr++].ms = decode(e, st1k, 1, steps, &rs, &err, &s);
    if (s)
        goto fail;
    if (nlens > 1) {
        dr[ndr].batch = 1, dr[ndr].context = lens[nlens - 1];
        dr[ndr++].ms = decode(e, st, 1, steps, &rs, &err, &s);
        if (s)
            goto fail;
    }
    if (dbatch > 1) {
        dr[ndr].batch = dbatch, dr[ndr].context = lens[0];
        dr[ndr++].ms = decode(e, st1k, dbatch, steps, &rs, &err, &s);
        if (s)
            goto fail;
    }
    for (int i = 0; i < ndr; i++)
        fprintf(stderr, "bench: decode batch %zu context %zu: %.3f ms/step\n", dr[i].batch,
                dr[i].context, dr[i].ms);
    {
        size_t now = on_cpu ? peak_rss_bytes() : used_device_bytes() - ballast_bytes;
        if (now > peak)
            peak = now;
    }
    size_t chunk = fmb_engine_chunk_tokens(e);
    char dev[512];
    snprintf(dev, sizeof dev, "%s", fmb_engine_device_name(e));
    const char *backend = fmb_engine_backend_name(e);
    char kern[256];
    fmb_cli_kernel_report(e, kern, sizeof kern);
    fmb_state_free(st);
    fmb_state_free(st1k);
    fmb_engine_free(e);
    e = NULL;

    // On the CPU the memory figure is the process's peak resident set (getrusage), under its
    // own name: there is no device.
    const char *mem_key = on_cpu ? "peak_rss_bytes" : "peak_device_bytes";
    printf("{\"device\":\"%s\",\"backend\":\"%s\",\"weights_bytes\":%zu,\"chunk_tokens\":%zu,"
           "\"prefill\":[",
           dev, backend, wbytes, chunk);
    for (int i = 0; i < nlens; i++)
        printf("%s{\"tokens\":%zu,\"seconds\":%.4f,\"tok_per_s\":%.1f,\"%s\":%zu}", i ? "," : "",
               pr[i].tokens, pr[i].seconds, pr[i].tokens / pr[i].seconds, mem_key, pr[i].peak);
    printf("],\"decode\":[");
    for (int i = 0; i < ndr; i++)
        printf("%s{\"batch\":%zu,\"context\":%zu,\"ms_per_token\":%.4f,\"tok_per_s\":%.1f}",
               i ? "," : "", dr[i].batch, dr[i].context, dr[i].ms, dr[i].batch * 1e3 / dr[i].ms);
    printf("],\"kernels\":\"%s\",", kern);
    if (on_cpu)
        printf("\"peak_rss_bytes\":%zu}\n", peak);
    else
        printf("\"ballast_bytes\":%zu,\"peak_device_bytes\":%zu}\n", ballast_bytes, peak);
    fmb_device_ballast_free(ballast);
    return FMB_EXIT_OK;
fail:
    fmb_cli_error(cmd, "%s", err.msg);
    fmb_state_free(st);
    fmb_state_free(st1k);
    fmb_engine_free(e);
    fmb_device_ballast_free(ballast);
    return fmb_cli_exit_code(s);
}
