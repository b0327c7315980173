/*
 * Golden tests of the CPU engine against Hugging Face transformers' FalconMamba (float32
 * outputs in tests/fixtures/tiny-X/ref.safetensors, made by tools/hf_reference.py, and in
 * tests/fixtures/demo-model for the trained jobs/demo/model, made by tools/hf_reference_demo.py):
 * logits at every position, per-position NLL over a 2,500-4,500-token prompt, 12 greedy tokens
 * and their log-probabilities; then chunk invariance, decode invariance and state save/restore.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/safetensors.h"
#include "tests/check.h"
#include "tests/fixture.h"

static fmb_engine *open_engine(const char *dir, size_t chunk)
{
    fmb_engine_opts o = {0};
    o.backend = FMB_BACKEND_CPU;
    o.chunk_tokens = chunk;
    fmb_engine *e = NULL;
    fmb_err err;
    if (fmb_engine_open(dir, &o, &e, &err)) {
        printf("FAIL open %s: %s\n", dir, err.msg);
        exit(1);
    }
    return e;
}

/* Per-position NLL of ids (n-1 values) from a fresh state. */
static float *long_nll(fmb_engine *e, const int32_t *ids, size_t n)
{
    fmb_state *st;
    fmb_err err;
    FMB_ASSERT(!fmb_state_new(e, &st, &err));
    int32_t *tg = malloc(n * sizeof *tg);
    float *lp = malloc(n * sizeof *lp);
    for (size_t i = 0; i < n; i++)
        tg[i] = i + 1 < n ? ids[i + 1] : -1;
    fmb_outputs o = {0};
    o.targets = tg;
    o.logprob = lp;
    FMB_ASSERT(!fmb_engine_forward(e, st, ids, n, &o, &err));
    for (size_t i = 0; i + 1 < n; i++)
        lp[i] = -lp[i];
    free(tg);
    fmb_state_free(st);
    return lp;
}

/* A progress callback that counts calls and checks they increase. ctx: size_t[3]. */
static void record_progress(void *ctx, size_t done, size_t total)
{
    size_t *c = ctx;
    if (done <= c[1])
        c[0] += 1000000; // not increasing: make the count wrong
    c[0]++;
    c[1] = done;
    c[2] = total;
}

// name: the fixture folder tests/fixtures/NAME (ref.safetensors); dir: the model's folder
// (NULL: the same folder).
static void golden(const char *name, const char *model_dir, int n_prompts)
{
    char dir[256], path[300], tn[64], label[128];
    snprintf(path, sizeof path, "tests/fixtures/%s/ref.safetensors", name);
    snprintf(dir, sizeof dir, "%s", model_dir ? model_dir : "");
    if (!model_dir)
        snprintf(dir, sizeof dir, "tests/fixtures/%s", name);
    fmb_st *rs;
    fmb_err err;
    if (fmb_st_open_file(path, &rs, &err)) {
        printf("FAIL %s: %s\n", name, err.msg);
        return;
    }
    fmb_engine *e = open_engine(dir, 0);
    size_t V = (size_t)fmb_engine_config(e)->V;

    double worst_logit = 0, worst_glp = 0;
    int greedy_ok = 1;
    for (int p = 0; p < n_prompts; p++) {
        size_t n;
        snprintf(tn, sizeof tn, "prompt%d.ids", p);
        int32_t *ids = fixture_ids(rs, tn, &n);
        snprintf(tn, sizeof tn, "prompt%d.logits", p);
        const fmb_tensor *rl = fixture_ref(rs, tn);
        float *lg = malloc(n * V * sizeof *lg);
        fmb_state *st;
        FMB_ASSERT(!fmb_state_new(e, &st, &err));
        fmb_outputs o = {0};
        o.logits = lg;
        FMB_ASSERT(!fmb_engine_forward(e, st, ids, n, &o, &err));
        double w = 0;
        for (size_t i = 0; i < n * V; i++)
            w = fmax(w, fabs(lg[i] - fixture_at(rl, i)));
        worst_logit = fmax(worst_logit, w);
        snprintf(label, sizeof label, "%s prompt%d logits (%zu positions)", name, p, n);
        check(w <= 1e-4, label, "max |diff| %.3g > 1e-4", w);

        // 12 greedy tokens, decoded step by step from the prompt's state.
        snprintf(tn, sizeof tn, "prompt%d.greedy_ids", p);
        size_t ng;
        int32_t *gids = fixture_ids(rs, tn, &ng);
        snprintf(tn, sizeof tn, "prompt%d.greedy_logprobs", p);
        const fmb_tensor *glp = fixture_ref(rs, tn);
        const float *last = lg + (n - 1) * V;
        float *step = malloc(V * sizeof *step);
        memcpy(step, last, V * sizeof *step);
        int ok = 1;
        double wg = 0;
        for (size_t g = 0; g < ng; g++) {
            size_t am = 0;
            double mx = step[0], se = 0;
            for (size_t v = 1; v < V; v++)
                if (step[v] > mx) {
                    mx = step[v];
                    am = v;
                }
            for (size_t v = 0; v < V; v++)
                se += exp(step[v] - mx);
            double lp = step[am] - mx - log(se);
            if ((int32_t)am != gids[g])
                ok = 0;
            wg = fmax(wg, fabs(lp - fixture_at(glp, g)));
            int32_t id = (int32_t)am;
            fmb_state *sts[1] = {st};
            FMB_ASSERT(!fmb_engine_step(e, sts, &id, 1, step, &err));
        }
        snprintf(label, sizeof label, "%s prompt%d greedy tokens", name, p);
        check(ok, label, "greedy ids differ from HF's");
        greedy_ok &= ok;
        snprintf(label, sizeof label, "%s prompt%d greedy logprobs", name, p);
        check(wg <= 1e-4, label, "max |diff| %.3g > 1e-4", wg);
        worst_glp = fmax(worst_glp, wg);
        free(step);
        free(gids);
        free(lg);
        free(ids);
        fmb_state_free(st);
    }

    // Long prompt: per-position NLL.
    size_t n;
    int32_t *ids = fixture_ids(rs, "long.ids", &n);
    const fmb_tensor *rn = fixture_ref(rs, "long.nll");
    float *nll = long_nll(e, ids, n);
    double w = 0, mean = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        w = fmax(w, fabs(nll[i] - fixture_at(rn, i)));
        mean += nll[i];
    }
    snprintf(label, sizeof label, "%s long NLL (%zu positions)", name, n - 1);
    check(w <= 1e-4, label, "max |diff| %.3g > 1e-4", w);
    check_note("%s: worst |logit diff| %.3g, worst greedy logprob diff %.3g, worst NLL diff %.3g, "
               "mean NLL %.6f",
               name, worst_logit, worst_glp, w, mean / (double)(n - 1));

    // Chunk invariance: chunk lengths 1, 3, 64, 1000 and the whole prompt.
    size_t chunks[] = {1, 3, 64, 1000, n};
    double wc = 0;
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        fmb_engine *ec = open_engine(dir, chunks[c]);
        float *nc = long_nll(ec, ids, n);
        double d = 0;
        for (size_t i = 0; i + 1 < n; i++)
            d = fmax(d, fabs(nc[i] - nll[i]));
        snprintf(label, sizeof label, "%s chunk invariance T=%zu", name, chunks[c]);
        check(d <= 1e-5, label, "max |diff| %.3g > 1e-5 against the default chunk", d);
        wc = fmax(wc, d);
        free(nc);
        fmb_engine_free(ec);
    }
    check_note("%s: worst NLL diff across chunk lengths %.3g", name, wc);

    // A cancel flag: unset, the chunk-by-chunk calls give bit-identical results; set, the
    // forward pass and the decode step stop with FMB_EINTR.
    {
        fmb_engine *ec = open_engine(dir, 64);
        float *plain = long_nll(ec, ids, n);
        fmb_stop_flag flag = 0;
        fmb_engine_set_cancel(ec, &flag);
        float *pieces = long_nll(ec, ids, n);
        snprintf(label, sizeof label, "%s cancel flag unset: identical results", name);
        check(!memcmp(plain, pieces, (n - 1) * sizeof *plain), label, "results differ");
        // progress: called once per chunk, increasing, ending at the total
        size_t calls[3] = {0, 0, 0}; // count, last done, last total
        fmb_engine_set_progress(ec, record_progress, calls);
        float *again = long_nll(ec, ids, n);
        fmb_engine_set_progress(ec, NULL, NULL);
        snprintf(label, sizeof label, "%s progress once per chunk, ending at the total", name);
        check(calls[0] == (n + 63) / 64 && calls[1] == n && calls[2] == n &&
                  !memcmp(plain, again, (n - 1) * sizeof *plain),
              label, "%zu calls, last %zu/%zu", calls[0], calls[1], calls[2]);
        free(again);
        flag = 1;
        fmb_state *sc;
        FMB_ASSERT(!fmb_state_new(ec, &sc, &err));
        fmb_status s1 = fmb_engine_forward(ec, sc, ids, n, NULL, &err);
        float *lg1 = malloc(V * sizeof *lg1);
        fmb_status s2 = fmb_engine_step(ec, &sc, ids, 1, lg1, &err);
        snprintf(label, sizeof label, "%s cancel flag set: FMB_EINTR", name);
        check(s1 == FMB_EINTR && s2 == FMB_EINTR, label, "got %d %d", s1, s2);
        free(lg1);
        free(plain);
        free(pieces);
        fmb_state_free(sc);
        fmb_engine_free(ec);
    }

    // Decode invariance: prefill k tokens then step one by one; logits equal a full prefill's.
    size_t k = 37, m = 80;
    float *full = malloc(m * V * sizeof *full), *one = malloc(V * sizeof *one);
    fmb_state *st, *st2, *saved;
    FMB_ASSERT(!fmb_state_new(e, &st, &err) && !fmb_state_new(e, &st2, &err) &&
               !fmb_state_new(e, &saved, &err));
    fmb_outputs o = {0};
    o.logits = full;
    FMB_ASSERT(!fmb_engine_forward(e, st, ids, m, &o, &err));
    o.logits = NULL;
    FMB_ASSERT(!fmb_engine_forward(e, st2, ids, k, NULL, &err));
    fmb_state_copy(saved, st2);
    // Decode and prefill round differently; the bound scales with the logits' size (a trained
    // model's reach ~20, the random fixtures' stay under 5, where it is 1e-5).
    double scale = 5;
    for (size_t i = 0; i < m * V; i++)
        scale = fmax(scale, fabs(full[i]));
    const double tol = 2e-6 * scale;
    double wd = 0;
    for (size_t t = k; t < m; t++) {
        fmb_state *s1[1] = {st2};
        FMB_ASSERT(!fmb_engine_step(e, s1, &ids[t], 1, one, &err));
        for (size_t v = 0; v < V; v++)
            wd = fmax(wd, fabs(one[v] - full[t * V + v]));
    }
    snprintf(label, sizeof label, "%s decode invariance (prefill %zu, step to %zu)", name, k, m);
    check(wd <= tol, label, "max |diff| %.3g > %.3g", wd, tol);

    // Save/restore: continuing from a restored copy gives the same logits.
    fmb_state_reset(st2);
    fmb_state_copy(st2, saved);
    fmb_state *s1[1] = {st2};
    FMB_ASSERT(!fmb_engine_step(e, s1, &ids[k], 1, one, &err));
    double wr = 0;
    for (size_t v = 0; v < V; v++)
        wr = fmax(wr, fabs(one[v] - full[k * V + v]));
    snprintf(label, sizeof label, "%s state save/restore", name);
    check(wr <= tol, label, "max |diff| %.3g", wr);

    // State read/write round trip through host float32 arrays.
    const fmb_config *c = fmb_engine_config(e);
    size_t nc = (size_t)(c->L * c->E * (c->K - 1)), ns = (size_t)(c->L * c->E * c->N);
    float *cv = malloc(nc * sizeof *cv), *sv = malloc(ns * sizeof *sv);
    fmb_state_read(saved, cv, sv);
    fmb_state_reset(st2);
    fmb_state_write(st2, cv, sv);
    FMB_ASSERT(!fmb_engine_step(e, s1, &ids[k], 1, one, &err));
    wr = 0;
    for (size_t v = 0; v < V; v++)
        wr = fmax(wr, fabs(one[v] - full[k * V + v]));
    snprintf(label, sizeof label, "%s state read/write", name);
    check(wr <= tol, label, "max |diff| %.3g", wr);

    free(cv);
    free(sv);
    free(full);
    free(one);
    fmb_state_free(st);
    fmb_state_free(st2);
    fmb_state_free(saved);
    free(nll);
    free(ids);
    fmb_engine_free(e);
    fmb_st_close(rs);
}

int main(void)
{
    golden("tiny-a", NULL, 4);
    golden("tiny-b", NULL, 3);
    golden("tiny-bf16", NULL, 2);
    // The trained demo model (bf16 weights, tied lm_head, real text): peaked logits.
    golden("demo-model", "jobs/demo/model", 3);
    return check_exit();
}
