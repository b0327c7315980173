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
#include "tests/check.h"

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

int main(void)
{
    run_case("tiny-a", FMB_COMPUTE_DEFAULT, 64);
    run_case("tiny-a", FMB_COMPUTE_DEFAULT, 0);
    run_case("tiny-b", FMB_COMPUTE_DEFAULT, 37);
#ifdef FMB_TEST_CUDA
    run_case("tiny-a", FMB_COMPUTE_F32, 64);
    run_case("tiny-bf16", FMB_COMPUTE_DEFAULT, 100);
#endif
    return check_exit();
}
