/*
 * sample: choosing the next token from float32 logits, reproducibly.
 *
 * Randomness comes from a counter-based generator keyed by (seed, stream, step): the same
 * item, task and step draw the same number whatever else runs, so reruns and resumed runs
 * reproduce sampled generations exactly. stream is a 64-bit hash of (item key, task name).
 */
#ifndef FMB_SAMPLE_H
#define FMB_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "engine/hash.h" /* fmb_hash64, for the stream of a seed (callers include this) */

/* Zero-initialised fields are off. The logits processors run in this order (HF's): the
 * repetition penalty, then the frequency and presence penalties, then temperature, then top-k,
 * top-p and min-p (docs/JOBS.md). Greedy (temperature <= 0) takes the argmax of the penalised
 * logits. Every step is float32 on the host, whatever the backend. */
typedef struct {
    float temperature; /* <= 0: greedy (argmax, ties to the lowest id) */
    int top_k;         /* <= 0: off */
    float top_p;       /* >= 1 or <= 0: off */
    uint64_t seed;
    uint64_t stream;
    float min_p;              /* (0, 1]: drop p < min_p * p_max (after temperature); 0: off */
    float repetition_penalty; /* HF: a seen id's logit > 0 is divided, < 0 multiplied; 0 or 1:
                               * off */
    float presence_penalty;   /* vLLM/OpenAI over the generated ids: l -= presence * (count > 0) */
    float frequency_penalty;  /* ... and l -= frequency * count */
} fmb_sample_params;

/* What the penalties look at, owned by the caller (fmb_gen keeps one per generation). */
typedef struct {
    const uint8_t *seen;    /* [(V + 7) / 8] bit v: id v was in the input or generated; NULL:
                             * none (repetition_penalty) */
    const uint32_t *counts; /* [V] times id v was generated; NULL: none (presence, frequency) */
} fmb_sample_history;

/* 1 when p applies a penalty that needs a history. */
int fmb_sample_has_penalty(const fmb_sample_params *p);

/* out[V] = the logits after the penalties of p over h (out may be logits). */
void fmb_sample_penalize(const float *logits,
                         int32_t V,
                         const fmb_sample_params *p,
                         const fmb_sample_history *h,
                         float *out);

/* A uniform double in [0, 1) from (seed, stream, step): the counter-based RNG. */
double fmb_rng_uniform(uint64_t seed, uint64_t stream, uint64_t step);

/* Bytes of fmb_sample's scratch for a vocabulary of V. */
size_t fmb_sample_scratch_bytes(int32_t V);

/* Picks a token from logits [V]. scratch must hold fmb_sample_scratch_bytes(V) or be NULL
 * (then it allocates). *logprob (if non-NULL) receives the chosen token's log-probability
 * under the model's raw distribution (log-softmax of the unscaled logits). */
int32_t fmb_sample(const float *logits,
                   int32_t V,
                   const fmb_sample_params *p,
                   uint64_t step,
                   void *scratch,
                   float *logprob);

/* fmb_sample with penalties over h (NULL: none). The logprob is still the raw model's. */
int32_t fmb_sample_hist(const float *logits,
                        int32_t V,
                        const fmb_sample_params *p,
                        const fmb_sample_history *h,
                        uint64_t step,
                        void *scratch,
                        float *logprob);

/* log-softmax value of logits[id] (double precision sum). */
double fmb_logprob_of(const float *logits, int32_t V, int32_t id);

/* The k most likely ids of the raw distribution, descending, the lowest id first on ties (the
 * score task's rule), with their log-softmax values as fmb_logprob_of computes them:
 * ids[k], lps[k]; positions past V are -1 and NaN. k <= 64. */
void fmb_topk_logprobs(const float *logits, int32_t V, int k, int32_t *ids, float *lps);

#endif
