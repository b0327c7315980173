/*
 * sample: next-token choice from float32 logits with a counter-based RNG. See sample.h.
 *
 * The random number of step s of a stream is a pure function of (seed, stream, s): a SplitMix64
 * finaliser over the three, so no generator state is carried and a resumed or re-batched
 * generation draws exactly the same numbers.
 */
#include "engine/sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/base.h"

static uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

double fmb_rng_uniform(uint64_t seed, uint64_t stream, uint64_t step)
{
    uint64_t x = mix64(mix64(mix64(seed) ^ stream) ^ step);
    return (double)(x >> 11) * (1.0 / 9007199254740992.0);
}

double fmb_logprob_of(const float *logits, int32_t V, int32_t id)
{
    float mx = logits[0];
    for (int32_t v = 1; v < V; v++)
        if (logits[v] > mx)
            mx = logits[v];
    double se = 0;
    for (int32_t v = 0; v < V; v++)
        se += exp((double)logits[v] - (double)mx);
    return (double)logits[id] - (double)mx - log(se);
}

typedef struct {
    float val;
    int32_t id;
} cand;

/* Descending by value, ascending id on ties: a total order, so sorting is deterministic. */
static int cmp_cand(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->val != y->val)
        return x->val > y->val ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

int32_t fmb_sample(const float *logits,
                   int32_t V,
                   const fmb_sample_params *p,
                   uint64_t step,
                   void *scratch,
                   float *logprob)
{
    FMB_ASSERT(V > 0);
    int32_t pick = 0;
    if (p->temperature <= 0.0f) {
        for (int32_t v = 1; v < V; v++)
            if (logits[v] > logits[pick])
                pick = v;
    } else {
        cand *c = scratch ? scratch : fmb_xmalloc((size_t)V * sizeof *c);
        for (int32_t v = 0; v < V; v++)
            c[v] = (cand){logits[v] / p->temperature, v};
        size_t n = (size_t)V;
        int use_p = p->top_p > 0.0f && p->top_p < 1.0f;
        if ((p->top_k > 0 && p->top_k < V) || use_p) {
            qsort(c, n, sizeof *c, cmp_cand);
            if (p->top_k > 0 && (size_t)p->top_k < n)
                n = (size_t)p->top_k;
        }
        double mx = c[0].val;
        for (size_t i = 1; i < n; i++)
            mx = fmax(mx, c[i].val);
        double total = 0;
        for (size_t i = 0; i < n; i++)
            total += exp((double)c[i].val - mx);
        if (use_p) {
            // keep the smallest prefix (sorted descending) whose mass reaches top_p
            double acc = 0;
            size_t keep = 0;
            while (keep < n) {
                acc += exp((double)c[keep].val - mx) / total;
                keep++;
                if (acc >= p->top_p)
                    break;
            }
            n = keep;
            total = 0;
            for (size_t i = 0; i < n; i++)
                total += exp((double)c[i].val - mx);
        }
        double u = fmb_rng_uniform(p->seed, p->stream, step) * total, acc = 0;
        pick = c[n - 1].id;
        for (size_t i = 0; i < n; i++) {
            acc += exp((double)c[i].val - mx);
            if (u < acc) {
                pick = c[i].id;
                break;
            }
        }
        if (!scratch)
            free(c);
    }
    if (logprob)
        *logprob = (float)fmb_logprob_of(logits, V, pick);
    return pick;
}
