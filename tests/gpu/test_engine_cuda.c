/*
 * test_engine_cuda: the CUDA engine on the HF fixtures (tests/fixtures/tiny-{a,b,bf16}, and
 * tests/fixtures/demo-model for the trained jobs/demo/model).
 *   --dtype f32: logits of every prompt and the long prompt's per-position NLL within 1e-4 of
 *     HF at chunk lengths 1, 3, 64 and 1000; greedy decoding (CUDA-graph steps) gives HF's
 *     tokens; the final state equals the CPU engine's; batched decode equals single decode.
 *   bf16: per-position |ΔNLL| ≤ 0.1 and mean |ΔNLL| ≤ 0.01 against HF; greedy tokens (decode
 *     steps) equal HF's up to the first step where HF's top-2 logit gap is below 0.05 (the gap
 *     from HF's logits at step 0, from the CPU engine, fed HF's ids, after).
 *   decode batch invariance (bf16 and f32): a sequence's logits inside decode batches of 5,
 *     16, 37 and 100 are bitwise those of the sequence decoded alone.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/safetensors.h"
#include "tests/check.h"
#include "tests/fixture.h"

static fmb_engine *open_engine_mb(
    const char *dir, fmb_backend_kind b, fmb_compute_kind ck, size_t chunk, size_t max_batch)
{
    fmb_engine_opts o = {0};
    o.kernel = fixture_kernel_env();
    o.backend = b;
    o.compute = ck;
    o.chunk_tokens = chunk;
    o.max_batch = max_batch;
    fmb_engine *e = NULL;
    fmb_err err;
    if (fmb_engine_open(dir, &o, &e, &err)) {
        printf("FAIL open %s: %s\n", dir, err.msg);
        exit(1);
    }
    return e;
}

static fmb_engine *
open_engine(const char *dir, fmb_backend_kind b, fmb_compute_kind ck, size_t chunk)
{
    return open_engine_mb(dir, b, ck, chunk, 0);
}

static float *long_nll(fmb_engine *e, const int32_t *ids, size_t n, fmb_state **keep)
{
    fmb_state *st;
    fmb_err err;
    FMB_ASSERT(!fmb_state_new(e, &st, &err));
    int32_t *tg = malloc(n * sizeof *tg);
    float *lp = malloc(n * sizeof *lp);
    for (size_t i = 0; i < n; i++)
        tg[i] = i + 1 < n ? ids[i + 1] : -1;
    for (size_t i = 0; i < n; i++)
        lp[i] = 12345.0f; /* poison: every position must be written */
    fmb_outputs o = {0};
    o.targets = tg;
    o.logprob = lp;
    FMB_ASSERT(!fmb_engine_forward(e, st, ids, n, &o, &err));
    for (size_t i = 0; i + 1 < n; i++)
        lp[i] = -lp[i];
    free(tg);
    if (keep)
        *keep = st;
    else
        fmb_state_free(st);
    return lp;
}

static size_t argmax_gap(const float *l, size_t V, double *gap)
{
    size_t am = 0;
    for (size_t v = 1; v < V; v++)
        if (l[v] > l[am])
            am = v;
    double second = -INFINITY;
    for (size_t v = 0; v < V; v++)
        if (v != am && l[v] > second)
            second = l[v];
    *gap = (double)l[am] - second;
    return am;
}

/* bf16 greedy tokens against HF's, up to the first step where HF's top-2 logit gap is below
 * 0.05. HF's logits at the generated positions are not stored: step 0 uses HF's logits at the
 * prompt's last position, later steps the CPU engine's (float32, ~1e-5 from HF) fed HF's ids. */
static void
bf16_greedy(const char *name, const char *dir, const fmb_st *rs, fmb_engine *eb, size_t V)
{
    char tn[64], label[160];
    fmb_err err;
    fmb_engine *cpu = open_engine(dir, FMB_BACKEND_CPU, FMB_COMPUTE_DEFAULT, 0);
    for (int p = 0; p < 4; p++) {
        size_t n, ng;
        snprintf(tn, sizeof tn, "prompt%d.ids", p);
        if (!fmb_st_find(rs, tn))
            break;
        int32_t *ids = fixture_ids(rs, tn, &n);
        snprintf(tn, sizeof tn, "prompt%d.greedy_ids", p);
        int32_t *gids = fixture_ids(rs, tn, &ng);
        snprintf(tn, sizeof tn, "prompt%d.logits", p);
        const fmb_tensor *rl = fixture_ref(rs, tn);

        // HF's top-2 gap per step: HF's own logits at step 0, the CPU engine's after
        float *cl = malloc(V * sizeof *cl);
        for (size_t v = 0; v < V; v++)
            cl[v] = (float)fixture_at(rl, (n - 1) * V + v);
        fmb_state *cs;
        FMB_ASSERT(!fmb_state_new(cpu, &cs, &err));
        FMB_ASSERT(!fmb_engine_forward(cpu, cs, ids, n, NULL, &err));
        size_t cmp = ng, cpu_agree = 0;
        double min_gap = INFINITY;
        for (size_t g = 0; g < ng; g++) {
            double gap;
            size_t am = argmax_gap(cl, V, &gap);
            if (gap < 0.05) {
                cmp = g;
                break;
            }
            min_gap = fmin(min_gap, gap);
            cpu_agree += (int32_t)am == gids[g];
            fmb_state *sts[1] = {cs};
            FMB_ASSERT(!fmb_engine_step(cpu, sts, &gids[g], 1, cl, &err));
        }
        snprintf(label, sizeof label, "cpu f32 %s prompt%d greedy = HF's where gap >= 0.05", name,
                 p);
        check(cpu_agree == cmp, label, "%zu of %zu agree", cpu_agree, cmp);
        fmb_state_free(cs);

        // bf16 greedy decoding on the CUDA engine (decode steps), its own tokens fed back
        float *lg = malloc(n * V * sizeof *lg);
        for (size_t i = 0; i < n * V; i++)
            lg[i] = NAN;
        fmb_state *st;
        FMB_ASSERT(!fmb_state_new(eb, &st, &err));
        fmb_outputs o = {0};
        o.logits = lg;
        FMB_ASSERT(!fmb_engine_forward(eb, st, ids, n, &o, &err));
        float *step = malloc(V * sizeof *step);
        memcpy(step, lg + (n - 1) * V, V * sizeof *step);
        size_t match = 0;
        for (size_t g = 0; g < cmp; g++) {
            double gap;
            int32_t id = (int32_t)argmax_gap(step, V, &gap);
            if (id != gids[g] || isnan(step[id]))
                break;
            match++;
            fmb_state *sts[1] = {st};
            FMB_ASSERT(!fmb_engine_step(eb, sts, &id, 1, step, &err));
        }
        snprintf(label, sizeof label, "cuda bf16 %s prompt%d greedy tokens = HF's to gap < 0.05",
                 name, p);
        check(match == cmp, label, "first %zu of %zu match", match, cmp);
        if (cmp < ng)
            check_note("cuda bf16 %s prompt%d greedy: %zu of %zu steps compared (HF top-2 gap < "
                       "0.05 at step %zu; min gap before it %.4f)",
                       name, p, cmp, ng, cmp, min_gap);
        else
            check_note("cuda bf16 %s prompt%d greedy: %zu of %zu steps compared (min HF top-2 "
                       "gap %.4f)",
                       name, p, cmp, ng, min_gap);
        fmb_state_free(st);
        free(step), free(lg), free(cl), free(gids), free(ids);
    }
    fmb_engine_free(cpu);
}

// name: the fixture folder tests/fixtures/NAME (ref.safetensors); model_dir: the model's folder
// (NULL: the same folder).
static void fixture(const char *name, const char *model_dir)
{
    char dir[256], path[300], tn[64], label[160];
    snprintf(path, sizeof path, "tests/fixtures/%s/ref.safetensors", name);
    if (model_dir)
        snprintf(dir, sizeof dir, "%s", model_dir);
    else
        snprintf(dir, sizeof dir, "tests/fixtures/%s", name);
    fmb_st *rs;
    fmb_err err;
    if (fmb_st_open_file(path, &rs, &err)) {
        printf("FAIL %s: %s\n", name, err.msg);
        return;
    }
    fmb_engine *e = open_engine(dir, FMB_BACKEND_CUDA, FMB_COMPUTE_F32, 0);
    check(strcmp(fmb_engine_backend_name(e), "cuda") == 0, "backend is cuda", "got %s",
          fmb_engine_backend_name(e));
    const fmb_config *cfg = fmb_engine_config(e);
    size_t V = (size_t)cfg->V;

    // prompts: logits at every position, then 12 greedy tokens by decode steps (graphs)
    for (int p = 0; p < 4; p++) {
        size_t n;
        snprintf(tn, sizeof tn, "prompt%d.ids", p);
        if (!fmb_st_find(rs, tn))
            break;
        int32_t *ids = fixture_ids(rs, tn, &n);
        snprintf(tn, sizeof tn, "prompt%d.logits", p);
        const fmb_tensor *rl = fixture_ref(rs, tn);
        float *lg = malloc(n * V * sizeof *lg);
        for (size_t i = 0; i < n * V; i++)
            lg[i] = NAN;
        fmb_state *st;
        FMB_ASSERT(!fmb_state_new(e, &st, &err));
        fmb_outputs o = {0};
        o.logits = lg;
        FMB_ASSERT(!fmb_engine_forward(e, st, ids, n, &o, &err));
        double w = 0;
        for (size_t i = 0; i < n * V; i++)
            w = isnan(lg[i]) ? INFINITY : fmax(w, fabs(lg[i] - fixture_at(rl, i)));
        snprintf(label, sizeof label, "cuda f32 %s prompt%d logits (%zu positions)", name, p, n);
        check(w <= 1e-4, label, "max |diff| %.3g > 1e-4", w);

        size_t ng;
        snprintf(tn, sizeof tn, "prompt%d.greedy_ids", p);
        int32_t *gids = fixture_ids(rs, tn, &ng);
        float *step = malloc(V * sizeof *step);
        memcpy(step, lg + (n - 1) * V, V * sizeof *step);
        int ok = 1;
        for (size_t g = 0; g < ng; g++) {
            size_t am = 0;
            for (size_t v = 1; v < V; v++)
                if (step[v] > step[am])
                    am = v;
            ok &= (int32_t)am == gids[g];
            int32_t id = (int32_t)am;
            fmb_state *sts[1] = {st};
            FMB_ASSERT(!fmb_engine_step(e, sts, &id, 1, step, &err));
        }
        snprintf(label, sizeof label, "cuda f32 %s prompt%d greedy tokens (decode steps)", name, p);
        check(ok, label, "greedy ids differ from HF's");
        free(step), free(gids), free(lg), free(ids);
        fmb_state_free(st);
    }

    // long prompt at several chunk lengths, f32
    size_t n;
    int32_t *ids = fixture_ids(rs, "long.ids", &n);
    const fmb_tensor *rn = fixture_ref(rs, "long.nll");
    size_t chunks[] = {1, 3, 64, 1000, 0};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        fmb_engine *ec =
            chunks[c] ? open_engine(dir, FMB_BACKEND_CUDA, FMB_COMPUTE_F32, chunks[c]) : e;
        fmb_state *st;
        float *nll = long_nll(ec, ids, n, &st);
        double w = 0;
        for (size_t i = 0; i + 1 < n; i++)
            w = fmax(w, fabs(nll[i] - fixture_at(rn, i)));
        snprintf(label, sizeof label, "cuda f32 %s long NLL chunk=%zu (%zu positions)", name,
                 fmb_engine_chunk_tokens(ec), n - 1);
        check(w <= 1e-4, label, "max |diff| %.3g > 1e-4", w);
        if (!chunks[c]) {
            // the final state against the CPU engine's
            fmb_engine *cpu = open_engine(dir, FMB_BACKEND_CPU, FMB_COMPUTE_DEFAULT, 0);
            fmb_state *cs;
            free(long_nll(cpu, ids, n, &cs));
            size_t cf = (size_t)(cfg->L * cfg->E * (cfg->K - 1)),
                   sf = (size_t)(cfg->L * cfg->E * cfg->N);
            float *a = malloc((cf + sf) * 4), *b = malloc((cf + sf) * 4);
            fmb_state_read(st, a, a + cf);
            fmb_state_read(cs, b, b + cf);
            double num = 0, den = 0;
            for (size_t i = 0; i < cf + sf; i++) {
                num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
                den += (double)b[i] * b[i];
            }
            snprintf(label, sizeof label, "cuda f32 %s final state vs cpu engine", name);
            check(sqrt(num / den) <= 1e-5, label, "rel L2 %.3g", sqrt(num / den));
            // state write/read round trip
            fmb_state_write(cs, a, a + cf);
            fmb_state_read(cs, b, b + cf);
            check(memcmp(a, b, (cf + sf) * 4) == 0, "cuda state write/read round trip", "differs");
            fmb_state_free(cs);
            fmb_engine_free(cpu);
            free(a), free(b);
        }
        check_note("cuda f32 %s chunk %zu: worst NLL diff %.3g", name, fmb_engine_chunk_tokens(ec),
                   w);
        free(nll);
        fmb_state_free(st);
        if (chunks[c])
            fmb_engine_free(ec);
    }

    // batched decode (3 sequences, batch-invariant) against one at a time
    {
        fmb_state *s1[3], *s2[3];
        for (int i = 0; i < 3; i++) {
            FMB_ASSERT(!fmb_state_new(e, &s1[i], &err) && !fmb_state_new(e, &s2[i], &err));
            FMB_ASSERT(!fmb_engine_forward(e, s1[i], ids + 10 * i, 5 + (size_t)i, NULL, &err));
            fmb_state_copy(s2[i], s1[i]);
        }
        float *lb = malloc(3 * V * 4), *l1 = malloc(3 * V * 4);
        double w = 0;
        for (int step = 0; step < 4; step++) {
            int32_t tk[3] = {ids[100 + step], ids[200 + step], ids[300 + step]};
            FMB_ASSERT(!fmb_engine_step(e, s1, tk, 3, lb, &err));
            for (int i = 0; i < 3; i++) {
                fmb_state *one[1] = {s2[i]};
                FMB_ASSERT(!fmb_engine_step(e, one, &tk[i], 1, l1 + (size_t)i * V, &err));
            }
            for (size_t i = 0; i < 3 * V; i++)
                w = fmax(w, fabs(lb[i] - l1[i]));
        }
        snprintf(label, sizeof label, "cuda f32 %s batched decode = single decode", name);
        check(w <= 1e-5, label, "max |diff| %.3g", w);
        for (int i = 0; i < 3; i++)
            fmb_state_free(s1[i]), fmb_state_free(s2[i]);
        free(lb), free(l1);
    }
    fmb_engine_free(e);

    // bf16 against HF's fp32 NLL
    fmb_engine *eb = open_engine(dir, FMB_BACKEND_CUDA, FMB_COMPUTE_BF16, 0);
    float *nb = long_nll(eb, ids, n, NULL);
    double w = 0, mean = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        double d = fabs(nb[i] - fixture_at(rn, i));
        w = fmax(w, isnan(d) ? INFINITY : d);
        mean += d;
    }
    mean /= (double)(n - 1);
    snprintf(label, sizeof label, "cuda bf16 %s long NLL per position", name);
    check(w <= 0.1, label, "max |diff| %.3g > 0.1", w);
    snprintf(label, sizeof label, "cuda bf16 %s long NLL mean |diff|", name);
    check(mean <= 0.01, label, "mean |diff| %.3g > 0.01", mean);
    check_note("cuda bf16 %s: worst |dNLL| %.4f, mean %.5f", name, w, mean);
    // bf16 results independent of the chunk length (row-invariant GEMMs, time-sequential
    // scan), bit for bit; only in the default modes (FMB_GEMM=cublas or FMB_SCAN=seg are not)
    const char *gm = getenv("FMB_GEMM"), *sm = getenv("FMB_SCAN");
    int inv_modes = !(gm && strcmp(gm, "cublas") == 0) &&
                    !(sm && (strcmp(sm, "seg") == 0 || strcmp(sm, "quad") == 0));
    size_t bch[] = {1, 3, 64, 1000};
    for (size_t c = 0; c < sizeof bch / sizeof bch[0]; c++) {
        fmb_engine *ec = open_engine(dir, FMB_BACKEND_CUDA, FMB_COMPUTE_BF16, bch[c]);
        float *nc = long_nll(ec, ids, n, NULL);
        int same = memcmp(nc, nb, (n - 1) * sizeof *nc) == 0;
        snprintf(label, sizeof label, "cuda bf16 %s long NLL chunk=%zu bitwise = default chunk",
                 name, bch[c]);
        if (inv_modes)
            check(same, label, "differs");
        else
            check_note("%s: %s", label, same ? "yes" : "no");
        free(nc);
        fmb_engine_free(ec);
    }
    free(nb);

    // bf16 batched decode of 12 sequences against one at a time: equal within bf16 rounding
    // (bitwise, in fact: decode_invariance)
    {
        enum { NB = 12 };
        fmb_state *s1[NB], *s2[NB];
        for (int i = 0; i < NB; i++) {
            FMB_ASSERT(!fmb_state_new(eb, &s1[i], &err) && !fmb_state_new(eb, &s2[i], &err));
            FMB_ASSERT(!fmb_engine_forward(eb, s1[i], ids + (size_t)(7 * i) % (n - 8),
                                           2 + (size_t)i % 5, NULL, &err));
            fmb_state_copy(s2[i], s1[i]);
        }
        float *lb = malloc(NB * V * 4), *l1 = malloc(NB * V * 4);
        double num = 0, den = 0;
        for (int step = 0; step < 3; step++) {
            int32_t tk[NB];
            for (int i = 0; i < NB; i++)
                tk[i] = ids[(size_t)(11 * i + step) % n];
            FMB_ASSERT(!fmb_engine_step(eb, s1, tk, NB, lb, &err));
            for (int i = 0; i < NB; i++) {
                fmb_state *one[1] = {s2[i]};
                FMB_ASSERT(!fmb_engine_step(eb, one, &tk[i], 1, l1 + (size_t)i * V, &err));
            }
            for (size_t i = 0; i < (size_t)NB * V; i++) {
                num += ((double)lb[i] - l1[i]) * ((double)lb[i] - l1[i]);
                den += (double)l1[i] * l1[i];
            }
        }
        snprintf(label, sizeof label, "cuda bf16 %s batched decode (12) = single decode", name);
        check(den > 0 && sqrt(num / den) <= 1e-2, label, "rel L2 %.3g", sqrt(num / den));
        for (int i = 0; i < NB; i++)
            fmb_state_free(s1[i]), fmb_state_free(s2[i]);
        free(lb), free(l1);
    }
    bf16_greedy(name, dir, rs, eb, V);
    fmb_engine_free(eb);
    free(ids);
    fmb_st_close(rs);
}

/* Decode is batch-invariant, bit for bit (docs/DECISIONS.md): one sequence (a 9-token prefix
 * of the long prompt) decoded alone for 3 steps, then the same 3 steps from the same state
 * inside batches of 5, 16, 37 and 100 sequences (each other sequence with its own prefix of
 * 1..12 tokens and its own tokens, the target at a different position each time, the same
 * batch size for all 3 steps: its states must also evolve identically); the target's logits
 * must be memcmp-equal to the alone run at every step. max_batch 128: every batch is one
 * step. */
static void decode_invariance(const char *name, const char *dir, fmb_compute_kind ck)
{
    enum { NSTEP = 3, BMAX = 100 };
    const char *cn = ck == FMB_COMPUTE_F32 ? "f32" : "bf16";
    char path[300], label[200];
    snprintf(path, sizeof path, "tests/fixtures/%s/ref.safetensors", name);
    fmb_st *rs;
    fmb_err err;
    if (fmb_st_open_file(path, &rs, &err)) {
        check(0, "decode invariance fixture", "%s", err.msg);
        return;
    }
    size_t n;
    int32_t *ids = fixture_ids(rs, "long.ids", &n);
    FMB_ASSERT(n > 40);
    fmb_engine *e = open_engine_mb(dir, FMB_BACKEND_CUDA, ck, 0, 128);
    size_t V = (size_t)fmb_engine_config(e)->V;
    fmb_state *base, *sts[BMAX];
    FMB_ASSERT(!fmb_state_new(e, &base, &err));
    FMB_ASSERT(!fmb_engine_forward(e, base, ids, 9, NULL, &err));
    for (int i = 0; i < BMAX; i++)
        FMB_ASSERT(!fmb_state_new(e, &sts[i], &err));
    const int32_t tgt_tok[NSTEP] = {ids[9], ids[10], ids[11]};
    // alone
    float *alone = malloc(NSTEP * V * 4), *lb = malloc(BMAX * V * 4);
    fmb_state_copy(sts[0], base);
    for (int k = 0; k < NSTEP; k++)
        FMB_ASSERT(!fmb_engine_step(e, sts, &tgt_tok[k], 1, alone + (size_t)k * V, &err));
    int finite = 1;
    for (size_t i = 0; i < NSTEP * V; i++)
        finite &= isfinite(alone[i]);
    snprintf(label, sizeof label, "cuda %s %s decode alone: logits finite", cn, name);
    check(finite, label, "a NaN or inf");
    const size_t Bs[4] = {5, 16, 37, 100};
    for (int bi = 0; bi < 4; bi++) {
        const size_t B = Bs[bi], pos = (B * (size_t)(bi + 1) * 7 / 11) % B;
        for (size_t i = 0; i < B; i++) {
            if (i == pos) {
                fmb_state_copy(sts[i], base);
                continue;
            }
            // another sequence: its own prefix (start and length from i and B)
            size_t o = (i * 13 + B * 3) % (n - 16), len = 1 + (i + B) % 12;
            fmb_state_reset(sts[i]);
            FMB_ASSERT(!fmb_engine_forward(e, sts[i], ids + o, len, NULL, &err));
        }
        int same = 1, first = -1;
        for (int k = 0; k < NSTEP; k++) {
            int32_t tk[BMAX];
            for (size_t i = 0; i < B; i++)
                tk[i] = i == pos ? tgt_tok[k] : ids[(i * 31 + (size_t)k * 5 + B) % n];
            for (size_t i = 0; i < B * V; i++)
                lb[i] = NAN;
            FMB_ASSERT(!fmb_engine_step(e, sts, tk, B, lb, &err));
            if (memcmp(lb + pos * V, alone + (size_t)k * V, V * 4) != 0 && same) {
                same = 0;
                first = k;
            }
        }
        snprintf(label, sizeof label,
                 "cuda %s %s decode: a sequence at position %zu of a batch of %zu bitwise = "
                 "alone (%d steps)",
                 cn, name, pos, B, NSTEP);
        check(same, label, "logits differ first at step %d", first);
    }
    for (int i = 0; i < BMAX; i++)
        fmb_state_free(sts[i]);
    fmb_state_free(base);
    free(alone), free(lb), free(ids);
    fmb_engine_free(e);
    fmb_st_close(rs);
}

int main(void)
{
#ifdef FMB_HAVE_CUDA
    fixture("tiny-a", NULL);
    fixture("tiny-b", NULL);
    fixture("tiny-bf16", NULL);
    fixture("demo-model", "jobs/demo/model"); // trained: peaked logits, real text
    const char *fx[4] = {"tiny-a", "tiny-b", "tiny-bf16", "demo-model"};
    for (int i = 0; i < 4; i++) {
        char dir[256];
        if (i == 3)
            snprintf(dir, sizeof dir, "jobs/demo/model");
        else
            snprintf(dir, sizeof dir, "tests/fixtures/%s", fx[i]);
        decode_invariance(fx[i], dir, FMB_COMPUTE_BF16);
        decode_invariance(fx[i], dir, FMB_COMPUTE_F32);
    }
#else
    check(0, "cuda build", "built without CUDA");
#endif
    return check_exit();
}
