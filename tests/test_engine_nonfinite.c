/*
 * test_engine_nonfinite: a checkpoint with a NaN (or +Inf) weight fails scoring, a choice-style
 * forward and generation with a "non-finite" reason instead of returning invented numbers; an
 * empty document scores 0 tokens (no UB: it ran memcpy from NULL). The poisoned checkpoint is a
 * copy of tests/fixtures/tiny-a with one element of one tensor overwritten.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/engine.h"
#include "engine/generate.h"
#include "engine/score.h"
#include "tests/check.h"

static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)len + 1);
    *n = fread(b, 1, (size_t)len, f);
    fclose(f);
    return b;
}

static int spit(const char *path, const char *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(b, 1, n, f);
    return fclose(f) || w != n ? -1 : 0;
}

/* Copies tiny-a to dir with element `at` of F32 tensor `name` set to value. */
static int poisoned_copy(const char *dir, const char *name, size_t at, float value)
{
    char p[512];
    size_t n;
    mkdir(dir, 0755);
    char *cfg = slurp("tests/fixtures/tiny-a/config.json", &n);
    snprintf(p, sizeof p, "%s/config.json", dir);
    if (!cfg || spit(p, cfg, n))
        return -1;
    free(cfg);
    char *st = slurp("tests/fixtures/tiny-a/model.safetensors", &n);
    if (!st || n < 8)
        return -1;
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++)
        hl |= (uint64_t)(unsigned char)st[i] << (8 * i);
    json_t *h = json_loadb(st + 8, (size_t)hl, 0, NULL);
    json_t *t = h ? json_object_get(h, name) : NULL;
    json_t *off = t ? json_object_get(t, "data_offsets") : NULL;
    if (!off || strcmp(json_string_value(json_object_get(t, "dtype")), "F32"))
        return -1;
    size_t o = 8 + (size_t)hl + (size_t)json_integer_value(json_array_get(off, 0)) + at * 4;
    json_decref(h);
    memcpy(st + o, &value, 4);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    int rc = spit(p, st, n);
    free(st);
    return rc;
}

static fmb_engine *open_cpu(const char *dir)
{
    fmb_engine_opts o = {0};
    o.backend = FMB_BACKEND_CPU;
    o.threads = 2;
    fmb_engine *e = NULL;
    fmb_err err;
    if (fmb_engine_open(dir, &o, &e, &err)) {
        printf("FAIL open %s: %s\n", dir, err.msg);
        exit(1);
    }
    return e;
}

static void empty_document(void)
{
    fmb_engine *e = open_cpu("tests/fixtures/tiny-a");
    fmb_state *st;
    fmb_err err;
    FMB_ASSERT(!fmb_state_new(e, &st, &err));
    fmb_score_opts so = {0, 1, 2}; /* context EOS (id 0), per-token with top-2 */
    fmb_score_result r;
    fmb_status s = fmb_score(e, st, NULL, 0, 0, &so, &r, &err);
    check(s == FMB_OK && r.tokens == 0 && r.scored == 0 && r.sum_nll == 0 && isnan(r.mean_nll) &&
              isnan(r.ppl) && isnan(r.bits_per_byte),
          "an empty document scores 0 tokens, NULL ppl", "status %d tokens %zu sum %g: %s", s,
          r.tokens, r.sum_nll, s ? err.msg : "");
    fmb_score_result_free(&r);
    fmb_state_free(st);
    fmb_engine_free(e);
}

static void poisoned(const char *what, const char *tensor, float value)
{
    char dir[256];
    snprintf(dir, sizeof dir, "/tmp/fmb_nonfinite_%d", (int)getpid());
    if (!check(poisoned_copy(dir, tensor, 5, value) == 0, "poisoned copy written", "%s", dir))
        return;
    fmb_engine *e = open_cpu(dir);
    fmb_state *st;
    fmb_err err;
    FMB_ASSERT(!fmb_state_new(e, &st, &err));
    int32_t ids[12] = {5, 17, 99, 3, 250, 12, 7, 7, 300, 41, 2, 77};
    fmb_score_opts so = {0, 0, 0};
    fmb_score_result r;
    err.msg[0] = 0;
    fmb_status s = fmb_score(e, st, ids, 12, 40, &so, &r, &err);
    check(s == FMB_EINVAL && strstr(err.msg, "non-finite"), "score fails on non-finite values",
          "%s: status %d sum %g: %s", what, s, s ? NAN : r.sum_nll, err.msg);
    if (!s)
        fmb_score_result_free(&r);
    /* a choice candidate: log-probabilities of targets after a prefix (task.c's run_choice) */
    fmb_state_reset(st);
    int32_t tg[12];
    float lp[12];
    for (int i = 0; i < 12; i++)
        tg[i] = i >= 8 ? ids[(i + 1) % 12] : -1;
    fmb_outputs o = {0};
    o.targets = tg;
    o.logprob = lp;
    err.msg[0] = 0;
    s = fmb_engine_forward(e, st, ids, 12, &o, &err);
    check(s == FMB_EINVAL && strstr(err.msg, "non-finite log-probability"),
          "a choice's forward fails on non-finite values", "%s: status %d lp %g: %s", what, s,
          (double)lp[8], err.msg);
    fmb_state_reset(st);
    fmb_gen_opts go;
    memset(&go, 0, sizeof go);
    go.max_new_tokens = 4;
    int32_t eos = 0;
    go.eos_ids = &eos;
    go.n_eos = 1;
    fmb_gen_result g;
    err.msg[0] = 0;
    s = fmb_generate(e, st, NULL, ids, 12, &go, &g, &err);
    check(s == FMB_EINVAL && strstr(err.msg, "non-finite logit"),
          "generation fails on non-finite logits", "%s: status %d n %zu finish %s: %s", what, s,
          s ? 0 : g.n, s ? "-" : g.finish_reason, err.msg);
    if (!s)
        fmb_gen_result_free(&g);
    fmb_state_free(st);
    fmb_engine_free(e);
    char p[300];
    snprintf(p, sizeof p, "%s/config.json", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    unlink(p);
    rmdir(dir);
}

int main(void)
{
    empty_document();
    poisoned("NaN in out_proj", "backbone.layers.1.mixer.out_proj.weight", NAN);
    poisoned("+Inf in in_proj", "backbone.layers.0.mixer.in_proj.weight", INFINITY);
    poisoned("NaN in lm_head", "lm_head.weight", NAN);
    return check_exit();
}
