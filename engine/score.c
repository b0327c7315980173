/*
 * score: per-document NLL, perplexity and bits per byte. See score.h.
 *
 * The whole sequence goes through one fmb_engine_forward call (which chunks it); host memory
 * is a few bytes per token for the per-position outputs, never [tokens × vocab].
 */
#include "engine/score.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void fmb_score_result_free(fmb_score_result *r)
{
    if (!r)
        return;
    free(r->nll);
    free(r->rank);
    free(r->argmax);
    free(r->topk_ids);
    free(r->topk_logprobs);
    memset(r, 0, sizeof *r);
}

fmb_status fmb_score(fmb_engine *eng,
                     fmb_state *st,
                     const int32_t *ids,
                     size_t n,
                     size_t bytes,
                     const fmb_score_opts *opts,
                     fmb_score_result *r,
                     fmb_err *err)
{
    memset(r, 0, sizeof *r);
    int ctx = opts->context_id >= 0;
    size_t m = n + (size_t)ctx; // positions run through the model
    r->tokens = n;
    r->scored = m ? m - 1 : 0;
    r->mean_nll = r->ppl = r->bits_per_byte = NAN;
    if (m == 0)
        return FMB_OK;
    int32_t *seq = malloc(m * sizeof *seq), *tg = malloc(m * sizeof *tg);
    float *lp = malloc(m * sizeof *lp);
    int k = opts->per_token && opts->top_k > 0 ? opts->top_k : 0;
    int32_t *rank = opts->per_token ? malloc(m * sizeof *rank) : NULL;
    int32_t *am = opts->per_token ? malloc(m * sizeof *am) : NULL;
    int32_t *tki = k ? malloc(m * (size_t)k * sizeof *tki) : NULL;
    float *tkl = k ? malloc(m * (size_t)k * sizeof *tkl) : NULL;
    fmb_status s = FMB_OK;
    if (!seq || !tg || !lp || (opts->per_token && (!rank || !am)) || (k && (!tki || !tkl))) {
        s = fmb_fail(err, FMB_ENOMEM, "out of memory scoring %zu tokens", n);
        goto out;
    }
    if (ctx)
        seq[0] = opts->context_id;
    if (n) // an empty document with a context: ids may be NULL (memcpy's arguments may not)
        memcpy(seq + ctx, ids, n * sizeof *ids);
    for (size_t t = 0; t < m; t++)
        tg[t] = t + 1 < m ? seq[t + 1] : -1;
    fmb_outputs o = {0};
    o.targets = tg;
    o.logprob = lp;
    o.rank = rank;
    o.argmax = am;
    o.top_k = k;
    o.topk_ids = tki;
    o.topk_logprobs = tkl;
    if ((s = fmb_engine_forward(eng, st, seq, m, &o, err)))
        goto out;
    double sum = 0;
    for (size_t t = 0; t + 1 < m; t++)
        sum += -(double)lp[t];
    // The engine already fails a non-finite log-probability; the sum is checked again so that no
    // backend can make a score out of NaN or Inf.
    if (!isfinite(sum)) {
        s = fmb_fail(err, FMB_EINVAL,
                     "non-finite sum of log-probabilities (%g) over %zu positions: the model's "
                     "weights or state hold NaN or Inf",
                     sum, r->scored);
        goto out;
    }
    r->sum_nll = sum;
    if (r->scored) {
        r->mean_nll = sum / (double)r->scored;
        r->ppl = exp(r->mean_nll);
    }
    if (bytes)
        r->bits_per_byte = sum / log(2.0) / (double)bytes;
    if (opts->per_token) {
        // Scored token i is predicted at position i; argmax after ids[i] is at position i+ctx.
        r->nll = malloc((r->scored ? r->scored : 1) * sizeof *r->nll);
        r->rank = malloc((r->scored ? r->scored : 1) * sizeof *r->rank);
        r->argmax = malloc((n ? n : 1) * sizeof *r->argmax);
        if (!r->nll || !r->rank || !r->argmax) {
            s = fmb_fail(err, FMB_ENOMEM, "out of memory scoring %zu tokens", n);
            goto out;
        }
        for (size_t i = 0; i < r->scored; i++) {
            r->nll[i] = -lp[i];
            r->rank[i] = rank[i];
        }
        memcpy(r->argmax, am + ctx, n * sizeof *am);
        if (k) {
            r->topk_ids = tki;
            r->topk_logprobs = tkl;
            tki = NULL;
            tkl = NULL;
        }
    }
out:
    if (s)
        fmb_score_result_free(r);
    free(seq);
    free(tg);
    free(lp);
    free(rank);
    free(am);
    free(tki);
    free(tkl);
    return s;
}
