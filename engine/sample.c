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

/* An unsigned key whose ascending order is the descending order of v (-0 as +0: equal
 * values tie, as they compare equal). */
static uint32_t desc_key(float v)
{
    if (v == 0.0f)
        v = 0.0f;
    uint32_t u;
    memcpy(&u, &v, 4);
    u = (u & 0x80000000u) ? ~u : u ^ 0x80000000u; /* ascending float order */
    return ~u;
}

/* Sorts c[0..n) descending by value, ascending id on ties (c comes in ascending id order):
 * an LSD radix sort on the value's bits, stable, so ties keep their id order. The same
 * permutation as a comparison sort by "descending value, then ascending id", in O(n) (qsort
 * of a 65K vocabulary took ~5 ms a token). tmp: n more cands. */
static void sort_desc(cand *c, cand *tmp, size_t n)
{
    cand *src = c, *dst = tmp;
    for (int shift = 0; shift < 32; shift += 8) {
        size_t count[257] = {0};
        for (size_t i = 0; i < n; i++)
            count[((desc_key(src[i].val) >> shift) & 0xff) + 1]++;
        if (count[((desc_key(src[0].val) >> shift) & 0xff) + 1] == n)
            continue; /* every key has the same byte here */
        for (int k = 0; k < 256; k++)
            count[k + 1] += count[k];
        for (size_t i = 0; i < n; i++)
            dst[count[(desc_key(src[i].val) >> shift) & 0xff]++] = src[i];
        cand *t = src;
        src = dst;
        dst = t;
    }
    if (src != c)
        memcpy(c, src, n * sizeof *c);
}

size_t fmb_sample_scratch_bytes(int32_t V)
{
    return (size_t)V * (2 * sizeof(cand) + sizeof(double));
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
        void *buf = scratch ? scratch : fmb_xmalloc(fmb_sample_scratch_bytes(V));
        cand *c = buf, *tmp = c + V;
        double *e = (double *)(tmp + V); /* e[i] = exp(c[i].val - mx), computed once */
        for (int32_t v = 0; v < V; v++)
            c[v] = (cand){logits[v] / p->temperature, v};
        size_t n = (size_t)V;
        int use_p = p->top_p > 0.0f && p->top_p < 1.0f;
        if ((p->top_k > 0 && p->top_k < V) || use_p) {
            sort_desc(c, tmp, n);
            if (p->top_k > 0 && (size_t)p->top_k < n)
                n = (size_t)p->top_k;
        }
        double mx = c[0].val;
        for (size_t i = 1; i < n; i++)
            mx = fmax(mx, c[i].val);
        double total = 0;
        for (size_t i = 0; i < n; i++) {
            e[i] = exp((double)c[i].val - mx);
            total += e[i];
        }
        if (use_p) {
            // keep the smallest prefix (sorted descending) whose mass reaches top_p
            double acc = 0;
            size_t keep = 0;
            while (keep < n) {
                acc += e[keep] / total;
                keep++;
                if (acc >= p->top_p)
                    break;
            }
            n = keep;
            total = 0;
            for (size_t i = 0; i < n; i++)
                total += e[i];
        }
        double u = fmb_rng_uniform(p->seed, p->stream, step) * total, acc = 0;
        pick = c[n - 1].id;
        for (size_t i = 0; i < n; i++) {
            acc += e[i];
            if (u < acc) {
                pick = c[i].id;
                break;
            }
        }
        if (!scratch)
            free(buf);
    }
    if (logprob)
        *logprob = (float)fmb_logprob_of(logits, V, pick);
    return pick;
}
