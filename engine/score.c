/*
 * score: per-document NLL, perplexity and bits per byte. See score.h.
 *
 * The whole sequence goes through one fmb_engine_forward call (which chunks it), or one piece
 * of a packed fmb_engine_forward_many (fmb_score_begin/end); host memory is a few bytes per
 * token for the per-position outputs, never [tokens × vocab].
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

void fmb_score_job_free(fmb_score_job *j)
{
    if (!j)
        return;
    free(j->seq);
    free(j->tg);
    free(j->lp);
    free(j->rank);
    free(j->am);
    free(j->tki);
    free(j->tkl);
    memset(j, 0, sizeof *j);
}

fmb_status fmb_score_begin(
    fmb_score_job *j, const int32_t *ids, size_t n, const fmb_score_opts *opts, fmb_err *err)
{
    memset(j, 0, sizeof *j);
    j->ctx = opts->context_id >= 0;
    j->n = n;
    j->per_token = opts->per_token;
    size_t m = n + (size_t)j->ctx; // positions run through the model
    j->m = m;
    if (m == 0)
        return FMB_OK;
    int k = opts->per_token && opts->top_k > 0 ? opts->top_k : 0;
    j->k = k;
    j->seq = malloc(m * sizeof *j->seq);
    j->tg = malloc(m * sizeof *j->tg);
    j->lp = malloc(m * sizeof *j->lp);
    j->rank = opts->per_token ? malloc(m * sizeof *j->rank) : NULL;
    j->am = opts->per_token ? malloc(m * sizeof *j->am) : NULL;
    j->tki = k ? malloc(m * (size_t)k * sizeof *j->tki) : NULL;
    j->tkl = k ? malloc(m * (size_t)k * sizeof *j->tkl) : NULL;
    if (!j->seq || !j->tg || !j->lp || (opts->per_token && (!j->rank || !j->am)) ||
        (k && (!j->tki || !j->tkl))) {
        fmb_score_job_free(j);
        return fmb_fail(err, FMB_ENOMEM, "out of memory scoring %zu tokens", n);
    }
    if (j->ctx)
        j->seq[0] = opts->context_id;
    if (n)
        memcpy(j->seq + j->ctx, ids, n * sizeof *ids);
    for (size_t t = 0; t < m; t++)
        j->tg[t] = t + 1 < m ? j->seq[t + 1] : -1;
    j->o.targets = j->tg;
    j->o.logprob = j->lp;
    j->o.rank = j->rank;
    j->o.argmax = j->am;
    j->o.top_k = k;
    j->o.topk_ids = j->tki;
    j->o.topk_logprobs = j->tkl;
    return FMB_OK;
}

fmb_status fmb_score_end(fmb_score_job *j, size_t bytes, fmb_score_result *r, fmb_err *err)
{
    memset(r, 0, sizeof *r);
    size_t m = j->m, n = j->n;
    int ctx = j->ctx;
    r->tokens = n;
    r->scored = m ? m - 1 : 0;
    r->mean_nll = r->ppl = r->bits_per_byte = NAN;
    fmb_status s = FMB_OK;
    if (m == 0)
        goto out;
    double sum = 0;
    for (size_t t = 0; t + 1 < m; t++)
        sum += -(double)j->lp[t];
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
    if (j->per_token) {
        // Scored token i is predicted at position i; argmax after ids[i] is at position i+ctx.
        r->nll = malloc((r->scored ? r->scored : 1) * sizeof *r->nll);
        r->rank = malloc((r->scored ? r->scored : 1) * sizeof *r->rank);
        r->argmax = malloc((n ? n : 1) * sizeof *r->argmax);
        if (!r->nll || !r->rank || !r->argmax) {
            s = fmb_fail(err, FMB_ENOMEM, "out of memory scoring %zu tokens", n);
            goto out;
        }
        for (size_t i = 0; i < r->scored; i++) {
            r->nll[i] = -j->lp[i];
            r->rank[i] = j->rank[i];
        }
        if (n)
            memcpy(r->argmax, j->am + ctx, n * sizeof *j->am);
        if (j->k) {
            r->topk_ids = j->tki;
            r->topk_logprobs = j->tkl;
            j->tki = NULL;
            j->tkl = NULL;
        }
    }
out:
    if (s)
        fmb_score_result_free(r);
    fmb_score_job_free(j);
    return s;
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
    fmb_score_job j;
    fmb_status s = fmb_score_begin(&j, ids, n, opts, err);
    if (!s && j.m)
        s = fmb_engine_forward(eng, st, j.seq, j.m, &j.o, err);
    if (s) {
        fmb_score_job_free(&j);
        return s;
    }
    return fmb_score_end(&j, bytes, r, err);
}
