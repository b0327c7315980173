/*
 * test_engine_batch: fmb_engine_forward_many is batch-invariant, bitwise. Pieces of awkward
 * lengths (1 token, one chunk exactly, one past, several chunks), some continuing from a state
 * already advanced, some with no outputs (a prefix prefill), with every kind of output (target
 * log-probabilities, ranks, argmax, top-k of different k, raw logits from a position), run
 *   alone through fmb_engine_forward (the reference),
 *   packed through fmb_engine_forward_many, in order, reversed and shuffled, at two chunk
 *   lengths, and with a different set of neighbours;
 * every output array and every final state must be byte-identical to the reference.
 *
 * Built twice: tests/test_engine_batch (the CPU backend, which runs pieces one by one) and
 * tests/gpu/test_engine_batch (the CUDA backend, which packs them into shared chunks).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/generate.h"
#include "tests/check.h"
#include "tests/fixture.h"

#ifndef FMB_TEST_BACKEND
#define FMB_TEST_BACKEND FMB_BACKEND_CPU
#endif

#define NP 19

typedef struct {
    size_t n, pre; /* tokens; tokens run before (the piece continues that state) */
    int kind;      /* 0 no outputs, 1 score-like, 2 logits of the last two, 3 everything */
    int top_k;
    int32_t *ids, *tg, *rank, *am, *tki;
    float *lp, *tkl, *logits;
    fmb_outputs o;
    fmb_state *st;
} piece;

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t next_u32(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static fmb_engine *open_engine(const char *dir, fmb_compute_kind ck, size_t chunk)
{
    fmb_engine_opts o = {0};
    o.kernel = fixture_kernel_env();
    o.backend = FMB_TEST_BACKEND;
    o.compute = ck;
    o.chunk_tokens = chunk;
    fmb_engine *e = NULL;
    fmb_err err;
    if (fmb_engine_open(dir, &o, &e, &err)) {
        printf("FAIL open %s: %s\n", dir, err.msg);
        exit(1);
    }
    return e;
}

/* Fresh output buffers (poisoned) and outputs view for p. */
static void alloc_out(piece *p, size_t V)
{
    size_t n = p->n, k = (size_t)p->top_k;
    p->tg = calloc(n, sizeof *p->tg);
    p->lp = malloc(n * sizeof *p->lp);
    p->rank = malloc(n * sizeof *p->rank);
    p->am = malloc(n * sizeof *p->am);
    p->tki = malloc((n * k + 1) * sizeof *p->tki);
    p->tkl = malloc((n * k + 1) * sizeof *p->tkl);
    p->logits = malloc(2 * V * sizeof *p->logits);
    memset(p->lp, 0x7f, n * sizeof *p->lp);
    memset(p->rank, 0x7f, n * sizeof *p->rank);
    memset(p->am, 0x7f, n * sizeof *p->am);
    memset(p->tki, 0x7f, (n * k + 1) * sizeof *p->tki);
    memset(p->tkl, 0x7f, (n * k + 1) * sizeof *p->tkl);
    memset(p->logits, 0x7f, 2 * V * sizeof *p->logits);
    for (size_t t = 0; t < n; t++)
        p->tg[t] = t + 1 < n ? p->ids[t + 1] : -1;
    memset(&p->o, 0, sizeof p->o);
    if (p->kind == 1 || p->kind == 3) {
        p->o.targets = p->tg;
        p->o.logprob = p->lp;
        p->o.rank = p->rank;
    }
    if (p->kind == 3) {
        p->o.argmax = p->am;
        p->o.top_k = p->top_k;
        p->o.topk_ids = p->tki;
        p->o.topk_logprobs = p->tkl;
    }
    if (p->kind == 2 || p->kind == 3) {
        p->o.logits = p->logits;
        p->o.logits_from = n >= 2 ? n - 2 : 0;
    }
}

static void free_out(piece *p)
{
    free(p->tg);
    free(p->lp);
    free(p->rank);
    free(p->am);
    free(p->tki);
    free(p->tkl);
    free(p->logits);
    fmb_state_free(p->st);
    p->st = NULL;
}

/* A state advanced through pre tokens of a fixed prefix. */
static fmb_state *start_state(fmb_engine *e, size_t pre)
{
    fmb_state *st;
    fmb_err err;
    FMB_ASSERT(!fmb_state_new(e, &st, &err));
    if (pre) {
        int32_t *ids = malloc(pre * sizeof *ids);
        for (size_t i = 0; i < pre; i++)
            ids[i] = (int32_t)(i * 7 % 50 + 3);
        FMB_ASSERT(!fmb_engine_forward(e, st, ids, pre, NULL, &err));
        free(ids);
    }
    return st;
}

static int same_outputs(const piece *a, const piece *b, size_t V, const fmb_config *c)
{
    size_t n = a->n, k = (size_t)a->top_k;
    if (memcmp(a->lp, b->lp, n * 4) || memcmp(a->rank, b->rank, n * 4) ||
        memcmp(a->am, b->am, n * 4) || memcmp(a->tki, b->tki, n * k * 4) ||
        memcmp(a->tkl, b->tkl, n * k * 4))
        return 0;
    size_t nl = a->kind >= 2 ? (n >= 2 ? 2 : 1) : 0;
    if (memcmp(a->logits, b->logits, nl * V * 4))
        return 0;
    size_t conv = (size_t)(c->L * c->E * (c->K - 1)), ssm = (size_t)(c->L * c->E * c->N);
    float *ca = malloc(conv * 4), *sa = malloc(ssm * 4), *cb = malloc(conv * 4),
          *sb = malloc(ssm * 4);
    fmb_state_read(a->st, ca, sa);
    fmb_state_read(b->st, cb, sb);
    int ok = !memcmp(ca, cb, conv * 4) && !memcmp(sa, sb, ssm * 4);
    free(ca);
    free(sa);
    free(cb);
    free(sb);
    return ok;
}

static void run_case(const char *model, fmb_compute_kind ck, size_t chunk)
{
    char dir[512];
    snprintf(dir, sizeof dir, "tests/fixtures/%s", model);
    fmb_engine *e = open_engine(dir, ck, chunk);
    const fmb_config *c = fmb_engine_config(e);
    size_t V = (size_t)c->V, T = fmb_engine_chunk_tokens(e);
    // lengths: 1, T, T + 1, 3T + 5, and random 1..300
    size_t lens[NP] = {1, T, T + 1, 3 * T + 5, 2, 17};
    for (int i = 6; i < NP; i++)
        lens[i] = 1 + next_u32() % 300;
    piece ref[NP], got[NP];
    for (int i = 0; i < NP; i++) {
        piece *p = &ref[i];
        memset(p, 0, sizeof *p);
        p->n = lens[i];
        p->pre = i % 4 == 1 ? 1 + next_u32() % 90 : 0;
        p->kind = i % 4;
        p->top_k = p->kind == 3 ? (int)(1 + i % 5) : 0;
        p->ids = malloc(p->n * sizeof *p->ids);
        for (size_t t = 0; t < p->n; t++)
            p->ids[t] = (int32_t)(next_u32() % V);
        alloc_out(p, V);
        p->st = start_state(e, p->pre);
        fmb_err err;
        FMB_ASSERT(!fmb_engine_forward(e, p->st, p->ids, p->n, p->kind ? &p->o : NULL, &err));
    }
    const char *orders[] = {"in order", "reversed", "shuffled", "half (other neighbours)"};
    for (int oi = 0; oi < 4; oi++) {
        int perm[NP], np = oi == 3 ? NP / 2 : NP;
        for (int i = 0; i < NP; i++)
            perm[i] = oi == 1 ? NP - 1 - i : i;
        if (oi >= 2)
            for (int i = NP - 1; i > 0; i--) {
                int j = (int)(next_u32() % (uint32_t)(i + 1)), t = perm[i];
                perm[i] = perm[j];
                perm[j] = t;
            }
        fmb_piece pcs[NP];
        for (int q = 0; q < np; q++) {
            int i = perm[q];
            got[i] = ref[i];
            got[i].st = NULL;
            alloc_out(&got[i], V);
            got[i].st = start_state(e, got[i].pre);
            pcs[q].st = got[i].st;
            pcs[q].ids = got[i].ids;
            pcs[q].n = got[i].n;
            pcs[q].out = got[i].kind ? &got[i].o : NULL;
        }
        fmb_err err;
        fmb_status s = fmb_engine_forward_many(e, pcs, (size_t)np, &err);
        int bad = -1;
        for (int q = 0; q < np && bad < 0 && !s; q++)
            if (!same_outputs(&ref[perm[q]], &got[perm[q]], V, c))
                bad = perm[q];
        char name[200];
        snprintf(name, sizeof name, "forward_many %s %s chunk %zu %s: bitwise = alone", model,
                 ck == FMB_COMPUTE_F32 ? "f32" : "default", T, orders[oi]);
        if (s)
            check(0, name, "%s", err.msg);
        else
            check(bad < 0, name, "piece %d (%zu tokens, kind %d) differs", bad,
                  bad >= 0 ? ref[bad].n : 0, bad >= 0 ? ref[bad].kind : 0);
        for (int q = 0; q < np; q++)
            free_out(&got[perm[q]]);
    }
    for (int i = 0; i < NP; i++) {
        free(ref[i].ids);
        free_out(&ref[i]);
    }
    fmb_engine_free(e);
}

/* Generations with every logits processor (repetition, presence and frequency penalties,
 * min_p, top-k/top-p, temperature and greedy), top-k logprobs, and n = 3 samples of one
 * prompt on streams 0..2:
 *   alone through fmb_generate (the reference), and
 *   all at once through the fmb_gen state machine with packed prompt prefills and batched
 *   fmb_engine_step calls, in two orders;
 * ids, logprobs and top-k arrays must be byte-identical. And the greedy ones against a decode
 * loop of this test's own that penalises the raw logits from the history the documentation
 * names (the context + the prompt seen; the generated ids seen and counted). On tiny-a and
 * on the trained demo model (whose logits have both signs and real repetitions). */
#define NG 9
static void gen_case(const char *dir)
{
    const char *model = dir;
    fmb_engine *e = open_engine(dir, FMB_COMPUTE_DEFAULT, 0);
    const fmb_config *c = fmb_engine_config(e);
    size_t V = (size_t)c->V;
    fmb_gen_opts go[NG];
    int32_t *prompt[NG], ctx[40];
    size_t np[NG];
    for (int i = 0; i < 40; i++)
        ctx[i] = (int32_t)(next_u32() % V);
    for (int g = 0; g < NG; g++) {
        memset(&go[g], 0, sizeof go[g]);
        fmb_gen_opts *o = &go[g];
        o->max_new_tokens = 12 + (size_t)(g < 3 ? 0 : g);
        o->ignore_eos = 1;
        o->logprobs = g % 3 ? 1 + g % 5 : 0;
        o->sample.temperature = g % 4 == 0 ? 0.0f : 0.7f + 0.1f * (float)g;
        o->sample.top_k = g % 2 ? 30 : 0;
        o->sample.top_p = g % 3 == 1 ? 0.9f : 1.0f;
        o->sample.min_p = g % 3 == 2 ? 0.05f : 0.0f;
        o->sample.repetition_penalty = g % 2 ? 1.3f : 2.5f;
        o->sample.presence_penalty = g % 3 ? 0.6f : 0.0f;
        o->sample.frequency_penalty = g % 4 == 3 ? 0.0f : 0.4f;
        o->sample.seed = 1000 + (uint64_t)(g < 3 ? 0 : g); /* g 0..2: one seed, streams 0..2 */
        o->sample.stream = (uint64_t)(g < 3 ? g : 0);
        np[g] = g && g < 3 ? np[0] : 1 + next_u32() % 20;
        prompt[g] = malloc(np[g] * sizeof *prompt[g]);
        for (size_t k = 0; k < np[g]; k++)
            prompt[g][k] = (int32_t)(next_u32() % V);
        if (g && g < 3) { /* n = 3 samples: g 0's prompt, context and settings, stream g */
            memcpy(prompt[g], prompt[0], np[0] * sizeof *prompt[g]);
            *o = go[0];
            o->sample.stream = (uint64_t)g;
        }
        o->context = ctx;
        o->n_context = g < 3 ? 40 : (size_t)(g * 4);
        if (g < 3)
            o->sample.temperature = 0.9f; /* the samples draw */
    }
    fmb_gen_result ref[NG], got[NG];
    fmb_err err;
    fmb_state *base[NG];
    for (int g = 0; g < NG; g++) {
        base[g] = start_state(e, 0);
        FMB_ASSERT(!fmb_engine_forward(e, base[g], ctx, go[g].n_context, NULL, &err));
        fmb_state *st = start_state(e, 0);
        fmb_state_copy(st, base[g]);
        FMB_ASSERT(!fmb_generate(e, st, NULL, prompt[g], np[g], &go[g], &ref[g], &err));
        fmb_state_free(st);
    }
    check(ref[0].n == ref[1].n && ref[1].n == ref[2].n &&
              memcmp(ref[0].ids, ref[1].ids, ref[0].n * 4) &&
              memcmp(ref[1].ids, ref[2].ids, ref[1].n * 4),
          "gen: n = 3 samples of one state (streams 0..2) differ", "%s", "the same ids");
    for (int order = 0; order < 2; order++) {
        fmb_gen *gs[NG];
        fmb_state *sts[NG];
        fmb_piece pcs[NG];
        fmb_outputs os[NG];
        float *lg = malloc(NG * V * sizeof *lg), *sl = malloc(NG * V * sizeof *sl);
        int idx[NG];
        for (int q = 0; q < NG; q++) {
            int g = order ? NG - 1 - q : q;
            idx[q] = g;
            FMB_ASSERT(!fmb_gen_new(e, NULL, np[g], &go[g], &gs[g], &err));
            fmb_gen_seen(gs[g], ctx, go[g].n_context);
            fmb_gen_seen(gs[g], prompt[g], np[g]);
            sts[q] = start_state(e, 0);
            fmb_state_copy(sts[q], base[g]);
            memset(&os[q], 0, sizeof os[q]);
            os[q].logits = lg + (size_t)q * V;
            os[q].logits_from = np[g] - 1;
            pcs[q] = (fmb_piece){sts[q], prompt[g], np[g], &os[q]};
        }
        FMB_ASSERT(!fmb_engine_forward_many(e, pcs, NG, &err));
        const float *from[NG];
        for (int q = 0; q < NG; q++)
            from[q] = lg + (size_t)q * V;
        int live[NG], nl;
        for (int q = 0; q < NG; q++)
            live[q] = 1;
        do {
            fmb_state *bs[NG];
            int32_t ids[NG];
            int at[NG];
            nl = 0;
            for (int q = 0; q < NG; q++) {
                int32_t nx;
                if (!live[q])
                    continue;
                if (!fmb_gen_push(gs[idx[q]], from[q], &nx)) {
                    live[q] = 0;
                    continue;
                }
                bs[nl] = sts[q];
                ids[nl] = nx;
                at[nl++] = q;
            }
            if (nl)
                FMB_ASSERT(!fmb_engine_step(e, bs, ids, (size_t)nl, sl, &err));
            for (int k = 0; k < nl; k++)
                from[at[k]] = sl + (size_t)k * V;
            // the rows of sl move: copy each live one to its own slot before the next step
            for (int k = 0; k < nl; k++) {
                memcpy(lg + (size_t)at[k] * V, from[at[k]], V * sizeof *lg);
                from[at[k]] = lg + (size_t)at[k] * V;
            }
        } while (nl);
        int bad = -1;
        for (int g = 0; g < NG; g++) {
            FMB_ASSERT(!fmb_gen_finish(gs[g], &got[g], &err));
            size_t K = (size_t)go[g].logprobs;
            if (bad < 0 &&
                (got[g].n != ref[g].n || memcmp(got[g].ids, ref[g].ids, ref[g].n * 4) ||
                 memcmp(got[g].logprobs, ref[g].logprobs, ref[g].n * 4) ||
                 (K && (memcmp(got[g].top_ids, ref[g].top_ids, ref[g].n * K * 4) ||
                        memcmp(got[g].top_logprobs, ref[g].top_logprobs, ref[g].n * K * 4)))))
                bad = g;
            fmb_gen_result_free(&got[g]);
        }
        for (int q = 0; q < NG; q++)
            fmb_state_free(sts[q]);
        free(lg);
        free(sl);
        char name[160];
        snprintf(name, sizeof name,
                 "gen %s: penalties, min_p, logprobs, n = 3 batched (%s) = each alone", model,
                 order ? "reversed" : "in order");
        check(bad < 0, name, "generation %d differs", bad);
    }
    // the greedy ones (g 0 and 4) against this test's own decode loop
    for (int g = 4; g < NG; g += 4) {
        const fmb_sample_params *sp = &go[g].sample;
        fmb_state *st = start_state(e, 0);
        fmb_state_copy(st, base[g]);
        float *l = malloc(V * sizeof *l);
        char *seen = calloc(V, 1);
        int *cnt = calloc(V, sizeof *cnt);
        for (size_t k = 0; k < go[g].n_context; k++)
            seen[ctx[k]] = 1;
        for (size_t k = 0; k < np[g]; k++)
            seen[prompt[g][k]] = 1;
        fmb_outputs o = {0};
        o.logits = l;
        o.logits_from = np[g] - 1;
        FMB_ASSERT(!fmb_engine_forward(e, st, prompt[g], np[g], &o, &err));
        int ok = 1;
        for (size_t t = 0; t < go[g].max_new_tokens && ok; t++) {
            int32_t best = -1;
            float bv = 0;
            for (size_t v = 0; v < V; v++) {
                float x = l[v];
                if (seen[v])
                    x = x < 0 ? x * sp->repetition_penalty : x / sp->repetition_penalty;
                if (cnt[v])
                    x = x - sp->frequency_penalty * (float)cnt[v] - sp->presence_penalty;
                if (best < 0 || x > bv) {
                    best = (int32_t)v;
                    bv = x;
                }
            }
            ok = ref[g].ids[t] == best;
            seen[best] = 1;
            cnt[best]++;
            fmb_state *one[1] = {st};
            FMB_ASSERT(!fmb_engine_step(e, one, &best, 1, l, &err));
        }
        char name[160];
        snprintf(name, sizeof name, "gen %s: greedy + penalties = the reference decode loop (%d)",
                 model, g);
        check(ok, name, "%s", "a token differs");
        free(l);
        free(seen);
        free(cnt);
        fmb_state_free(st);
    }
    for (int g = 0; g < NG; g++) {
        fmb_gen_result_free(&ref[g]);
        fmb_state_free(base[g]);
        free(prompt[g]);
    }
    fmb_engine_free(e);
}

#ifdef FMB_TEST_CUDA
#include "engine/synth.h"

/* At the 7B shape (random weights made on the device), the default kernels: a packed
 * forward_many equals each piece alone, and a decode step's logits of one sequence are the
 * same alone and at positions 0, 37 and 99 of batches of 64 and 100 (different neighbours).
 * Skipped (noted) where the device has no room for the weights. */
static void seven_b(void)
{
    fmb_config cfg;
    fmb_err err;
    FMB_ASSERT(!fmb_synth_shape("7b", &cfg, &err));
    fmb_engine_opts o = {0};
    o.kernel = fixture_kernel_env();
    o.backend = FMB_BACKEND_CUDA;
    o.max_batch = 128;
    fmb_engine *e = NULL;
    if (fmb_engine_open_synthetic(&cfg, &o, 11, &e, &err)) {
        check_note("7b batch invariance skipped: %s", err.msg);
        return;
    }
    size_t V = (size_t)cfg.V;
    // packed prefill: 9 pieces of 1..3000 tokens vs alone (logprobs of every position)
    enum { P7 = 9 };
    size_t lens[P7] = {1, 5, 300, 4096, 4097, 17, 3000, 64, 2};
    int32_t *ids[P7], *tg[P7];
    float *ref[P7], *got[P7];
    fmb_state *st[P7];
    fmb_piece pcs[P7];
    fmb_outputs os[P7];
    for (int i = 0; i < P7; i++) {
        ids[i] = malloc(lens[i] * sizeof(int32_t));
        tg[i] = malloc(lens[i] * sizeof(int32_t));
        ref[i] = malloc(lens[i] * sizeof(float));
        got[i] = malloc(lens[i] * sizeof(float));
        for (size_t t = 0; t < lens[i]; t++)
            ids[i][t] = (int32_t)(next_u32() % V);
        for (size_t t = 0; t < lens[i]; t++)
            tg[i][t] = t + 1 < lens[i] ? ids[i][t + 1] : -1;
        memset(&os[i], 0, sizeof os[i]);
        os[i].targets = tg[i];
        os[i].logprob = ref[i];
        FMB_ASSERT(!fmb_state_new(e, &st[i], &err));
        FMB_ASSERT(!fmb_engine_forward(e, st[i], ids[i], lens[i], &os[i], &err));
        fmb_state_reset(st[i]);
        os[i].logprob = got[i];
        pcs[P7 - 1 - i] = (fmb_piece){st[i], ids[i], lens[i], &os[i]};
    }
    fmb_status s = fmb_engine_forward_many(e, pcs, P7, &err);
    int bad = s ? 99 : -1;
    for (int i = 0; i < P7 && bad < 0; i++)
        if (memcmp(ref[i], got[i], lens[i] * sizeof(float)))
            bad = i;
    check(bad < 0, "7b: forward_many (9 pieces, reversed) bitwise = each alone", "piece %d", bad);
    // decode: sequence 0 alone, then inside batches
    enum { NB = 100 };
    fmb_state *d[NB];
    int32_t tok[NB];
    float *alone = malloc(V * sizeof(float)), *lg = malloc(NB * V * sizeof(float));
    for (int i = 0; i < NB; i++) {
        FMB_ASSERT(!fmb_state_new(e, &d[i], &err));
        tok[i] = (int32_t)(next_u32() % V);
    }
    int32_t pre[3] = {11, 12, 13};
    FMB_ASSERT(!fmb_engine_forward(e, d[0], pre, 3, NULL, &err));
    fmb_state *probe;
    FMB_ASSERT(!fmb_state_new(e, &probe, &err));
    fmb_state_copy(probe, d[0]);
    FMB_ASSERT(!fmb_engine_step(e, &probe, &tok[0], 1, alone, &err));
    const int Bs[3] = {64, 100, 100}, at[3] = {0, 37, 99};
    for (int c = 0; c < 3; c++) {
        fmb_state *b[NB];
        int32_t bt[NB];
        int B = Bs[c], pos = at[c] < B ? at[c] : B - 1;
        for (int i = 0, j = 1; i < B; i++) {
            if (i == pos) {
                fmb_state_copy(probe, d[0]);
                b[i] = probe;
                bt[i] = tok[0];
            } else {
                fmb_state_reset(d[j]);
                b[i] = d[j];
                bt[i] = tok[(j + c) % NB];
                j++;
            }
        }
        s = fmb_engine_step(e, b, bt, (size_t)B, lg, &err);
        check(!s && !memcmp(lg + (size_t)pos * V, alone, V * sizeof(float)),
              "7b: decode step logits of a sequence alone = at a position of a batch",
              "batch %d position %d%s", B, pos, s ? " (step failed)" : "");
    }
    fmb_state_free(probe);
    for (int i = 0; i < NB; i++)
        fmb_state_free(d[i]);
    free(alone);
    free(lg);
    for (int i = 0; i < P7; i++) {
        free(ids[i]);
        free(tg[i]);
        free(ref[i]);
        free(got[i]);
        fmb_state_free(st[i]);
    }
    fmb_engine_free(e);
}
#endif

int main(void)
{
    run_case("tiny-a", FMB_COMPUTE_DEFAULT, 64);
    run_case("tiny-a", FMB_COMPUTE_DEFAULT, 0);
    run_case("tiny-b", FMB_COMPUTE_DEFAULT, 37);
    gen_case("tests/fixtures/tiny-a");
    gen_case("jobs/demo/model");
#ifdef FMB_TEST_CUDA
    run_case("tiny-a", FMB_COMPUTE_F32, 64);
    run_case("tiny-bf16", FMB_COMPUTE_DEFAULT, 100);
    seven_b();
#endif
    return check_exit();
}
