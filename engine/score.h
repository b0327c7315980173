/*
 * score: per-document scoring on top of the engine (the `score` command and task).
 *
 * With a context id (the model's EOS, as lm-eval does for models without BOS) the sequence
 * scored is [context, ids...], so every token and byte of the document is scored; without one
 * (context_id < 0) the first id is context only and n-1 tokens are scored.
 */
#ifndef FMB_SCORE_H
#define FMB_SCORE_H

#include "engine/engine.h"

typedef struct {
    int32_t context_id; /* prepended context token, or -1 */
    int per_token;      /* fill the per-token arrays */
    int top_k;          /* per-token top-k alternatives (needs per_token) */
} fmb_score_opts;

typedef struct {
    size_t tokens;        /* ids given (the document's tokens) */
    size_t scored;        /* positions scored: tokens (with context) or tokens-1 */
    double sum_nll;       /* sum of -log p over scored positions (nats) */
    double mean_nll;      /* NAN when nothing was scored */
    double ppl;           /* exp(mean_nll), NAN when undefined */
    double bits_per_byte; /* sum_nll / ln 2 / bytes; NAN when bytes == 0 */
    /* Per-token arrays (per_token): index i is the i-th scored token (ids[i] with context,
     * ids[i+1] without). Caller frees with fmb_score_result_free. */
    float *nll;        /* [scored] */
    int32_t *rank;     /* [scored] 0 = the model's top choice */
    int32_t *argmax;   /* [tokens] argmax of the logits after each given id */
    int32_t *topk_ids; /* [scored, top_k] alternatives at the position predicting token i */
    float *topk_logprobs;
} fmb_score_result;

/* Scores ids[0..n) from st (which it advances: afterwards st is the state after the document,
 * with the context token included). bytes is the document's byte length (0: unknown).
 * An empty document (n == 0, ids may be NULL) scores 0 tokens: sum_nll 0, mean_nll/ppl NAN.
 * Fails (FMB_EINVAL, "non-finite ...") when a log-probability or the sum is NaN or Inf. */
FMB_NODISCARD fmb_status fmb_score(fmb_engine *eng,
                                   fmb_state *st,
                                   const int32_t *ids,
                                   size_t n,
                                   size_t bytes,
                                   const fmb_score_opts *opts,
                                   fmb_score_result *r,
                                   fmb_err *err);
void fmb_score_result_free(fmb_score_result *r);

/* fmb_score in two halves around the forward pass, for callers that pack many documents into
 * one fmb_engine_forward_many: begin builds the sequence [context, ids...] (seq, m) and its
 * outputs o (the piece to run from the state); end turns the outputs into the result (the
 * same as fmb_score's) and frees the job. m == 0: nothing to run. */
typedef struct {
    int32_t *seq; /* [m] the positions to run */
    size_t m;
    fmb_outputs o; /* outputs of those positions (targets: the next id) */
    /* private */
    size_t n;
    int ctx, per_token, k;
    int32_t *tg, *rank, *am, *tki;
    float *lp, *tkl;
} fmb_score_job;

FMB_NODISCARD fmb_status fmb_score_begin(
    fmb_score_job *j, const int32_t *ids, size_t n, const fmb_score_opts *opts, fmb_err *err);
FMB_NODISCARD fmb_status fmb_score_end(fmb_score_job *j,
                                       size_t bytes,
                                       fmb_score_result *r,
                                       fmb_err *err);
void fmb_score_job_free(fmb_score_job *j);

#endif
