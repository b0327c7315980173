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
    /* cands, their sort buffer, the exps, the penalised logits */
    return (size_t)V * (2 * sizeof(cand) + sizeof(double) + sizeof(float));
}

int fmb_sample_has_penalty(const fmb_sample_params *p)
{
    return (p->repetition_penalty > 0.0f && p->repetition_penalty != 1.0f) ||
           p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f;
}

void fmb_sample_penalize(const float *logits,
                         int32_t V,
                         const fmb_sample_params *p,
                         const fmb_sample_history *h,
                         float *out)
{
    int rep = p->repetition_penalty > 0.0f && p->repetition_penalty != 1.0f;
    float rp = p->repetition_penalty, fp = p->frequency_penalty, pp = p->presence_penalty;
    const uint8_t *seen = h ? h->seen : NULL;
    const uint32_t *counts = h ? h->counts : NULL;
    for (int32_t v = 0; v < V; v++) {
        float l = logits[v];
        // HF RepetitionPenaltyLogitsProcessor: once per id present, whatever its count
        if (rep && seen && (seen[v >> 3] >> (v & 7) & 1))
            l = l > 0.0f ? l / rp : l * rp;
        // vLLM/OpenAI: frequency first, then presence, over the generated ids only
        if (counts && counts[v]) {
            l -= fp * (float)counts[v];
            l -= pp;
        }
        out[v] = l;
    }
}

int32_t fmb_sample(const float *logits,
                   int32_t V,
                   const fmb_sample_params *p,
                   uint64_t step,
                   void *scratch,
                   float *logprob)
{
    return fmb_sample_hist(logits, V, p, NULL, step, scratch, logprob);
}

int32_t fmb_sample_hist(const float *raw,
                        int32_t V,
                        const fmb_sample_params *p,
                        const fmb_sample_history *h,
                        uint64_t step,
                        void *scratch,
                        float *logprob)
{
    FMB_ASSERT(V > 0);
    int32_t pick = 0;
    void *buf = scratch ? scratch : fmb_xmalloc(fmb_sample_scratch_bytes(V));
    cand *c = buf, *tmp = c + V;
    double *e = (double *)(tmp + V); /* e[i] = exp(c[i].val - mx), computed once */
    const float *logits = raw;
    if (fmb_sample_has_penalty(p)) {
        float *pen =
            (float *)(void *)((char *)buf + (size_t)V * (2 * sizeof(cand) + sizeof(double)));
        fmb_sample_penalize(raw, V, p, h, pen);
        logits = pen;
    }
    if (p->temperature <= 0.0f) {
        for (int32_t v = 1; v < V; v++)
            if (logits[v] > logits[pick])
                pick = v;
    } else {
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
        if (p->min_p > 0.0f) {
            // p_i / p_max = e[i] / 1 (the max's exp is 1): the same set whether or not top-k
            // and top-p renormalised before; the order of c is kept
            size_t keep = 0;
            total = 0;
            for (size_t i = 0; i < n; i++)
                if (e[i] >= (double)p->min_p) {
                    c[keep] = c[i];
                    e[keep] = e[i];
                    total += e[keep++];
                }
            n = keep; /* >= 1: the max survives any min_p <= 1 */
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
    }
    if (!scratch)
        free(buf);
    if (logprob)
        *logprob = (float)fmb_logprob_of(raw, V, pick);
    return pick;
}

void fmb_topk_logprobs(const float *l, int32_t V, int k, int32_t *ids, float *lps)
{
    FMB_ASSERT(k >= 0 && k <= 64);
    float mx = l[0];
    for (int32_t v = 1; v < V; v++)
        if (l[v] > mx)
            mx = l[v];
    double se = 0;
    for (int32_t v = 0; v < V; v++)
        se += exp((double)l[v] - (double)mx);
    double lse = log(se);
    // insertion into a sorted list of the k best; strict > keeps the lowest id on ties
    int cnt = 0;
    for (int32_t v = 0; v < V && k > 0; v++) {
        if (cnt == k && !(l[v] > l[ids[cnt - 1]]))
            continue;
        int i = cnt < k ? cnt++ : cnt - 1;
        while (i > 0 && l[v] > l[ids[i - 1]]) {
            ids[i] = ids[i - 1];
            i--;
        }
        ids[i] = v;
    }
    for (int i = 0; i < k; i++) {
        if (i >= cnt)
            ids[i] = -1;
        lps[i] = i < cnt ? (float)((double)l[ids[i]] - (double)mx - lse) : NAN;
    }
}
