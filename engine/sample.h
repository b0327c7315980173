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

typedef struct {
    float temperature; /* <= 0: greedy (argmax, ties to the lowest id) */
    int top_k;         /* <= 0: off */
    float top_p;       /* >= 1 or <= 0: off */
    uint64_t seed;
    uint64_t stream;
} fmb_sample_params;

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

/* log-softmax value of logits[id] (double precision sum). */
double fmb_logprob_of(const float *logits, int32_t V, int32_t id);

#endif
