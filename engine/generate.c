/*
 * generate: prefill a prompt from a state, then decode with sampling, EOS and stop strings.
 * See generate.h.
 */
#include "engine/generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void fmb_gen_result_free(fmb_gen_result *r)
{
    if (!r)
        return;
    free(r->ids);
    free(r->logprobs);
    free(r->text);
    free(r->top_ids);
    free(r->top_logprobs);
    memset(r, 0, sizeof *r);
}

static int is_eos(const fmb_gen_opts *o, int32_t id)
{
    for (int i = 0; i < o->n_eos; i++)
        if (o->eos_ids[i] == id)
            return 1;
    return 0;
}

/* First occurrence of any stop string in hay[0..n), searching from `from`; -1 if none. */
static long find_stop(const fmb_gen_opts *o, const char *hay, size_t n, size_t from)
{
    long best = -1;
    for (int i = 0; i < o->n_stop; i++) {
        size_t sl = strlen(o->stop[i]);
        if (!sl || sl > n)
            continue;
        for (size_t p = from; p + sl <= n; p++)
            if (!memcmp(hay + p, o->stop[i], sl)) {
                if (best < 0 || (long)p < best)
                    best = (long)p;
                break;
            }
    }
    return best;
}

struct fmb_gen {
    const fmb_gen_opts *o; /* borrowed */
    const fmb_tok *tok;    /* borrowed, may be NULL */
    int32_t V;
    fmb_gen_result r;
    size_t cap;
    void *scratch; /* fmb_sample_scratch_bytes(V) */
    fmb_sb bytes;  /* raw bytes of the generated tokens, for stop-string matching */
    size_t maxstop;
    int stopped, finished;
    int bad; /* the logits of generated token bad - 1 held NaN or +Inf */
    /* the penalties' history (fmb_sample_history), allocated when a penalty is on */
    uint8_t *seen;    /* [(V + 7) / 8], repetition_penalty */
    uint32_t *counts; /* [V], presence and frequency penalties */
};

fmb_status fmb_gen_new(fmb_engine *eng,
                       const fmb_tok *tok,
                       size_t n_prompt,
                       const fmb_gen_opts *o,
                       fmb_gen **out,
                       fmb_err *err)
{
    *out = NULL;
    if (n_prompt == 0)
        return fmb_fail(err, FMB_EINVAL, "generate: the prompt has no tokens");
    if (o->n_stop && !tok)
        return fmb_fail(err, FMB_EINVAL, "generate: stop strings need a tokenizer");
    fmb_gen *g = fmb_xcalloc(1, sizeof *g);
    g->o = o;
    g->tok = tok;
    g->V = (int32_t)fmb_engine_config(eng)->V;
    g->cap = o->max_new_tokens ? o->max_new_tokens : 1;
    g->scratch = malloc(fmb_sample_scratch_bytes(g->V));
    g->r.ids = malloc(g->cap * sizeof *g->r.ids);
    g->r.logprobs = malloc(g->cap * sizeof *g->r.logprobs);
    g->r.prompt_tokens = n_prompt;
    g->r.finish_reason = "length";
    const fmb_sample_params *sp = &o->sample;
    if (sp->repetition_penalty > 0.0f && sp->repetition_penalty != 1.0f)
        g->seen = calloc(((size_t)g->V + 7) / 8, 1);
    if (sp->presence_penalty != 0.0f || sp->frequency_penalty != 0.0f)
        g->counts = calloc((size_t)g->V, sizeof *g->counts);
    FMB_ASSERT(o->logprobs >= 0 && o->logprobs <= 64);
    if (o->logprobs) {
        g->r.top_k = o->logprobs;
        g->r.top_ids = malloc(g->cap * (size_t)o->logprobs * sizeof *g->r.top_ids);
        g->r.top_logprobs = malloc(g->cap * (size_t)o->logprobs * sizeof *g->r.top_logprobs);
    }
    for (int i = 0; i < o->n_stop; i++)
        if (strlen(o->stop[i]) > g->maxstop)
            g->maxstop = strlen(o->stop[i]);
    if (!g->scratch || !g->r.ids || !g->r.logprobs ||
        (fmb_sample_has_penalty(sp) && !g->seen && !g->counts) ||
        (o->logprobs && (!g->r.top_ids || !g->r.top_logprobs))) {
        fmb_gen_free(g);
        return fmb_fail(err, FMB_ENOMEM, "generate: out of memory");
    }
    if (o->max_new_tokens == 0)
        g->finished = 1;
    *out = g;
    return FMB_OK;
}

void fmb_gen_free(fmb_gen *g)
{
    if (!g)
        return;
    fmb_gen_result_free(&g->r);
    free(g->scratch);
    free(g->seen);
    free(g->counts);
    fmb_sb_free(&g->bytes);
    free(g);
}

int fmb_gen_done(const fmb_gen *g)
{
    return g->finished;
}

void fmb_gen_seen(fmb_gen *g, const int32_t *ids, size_t n)
{
    if (!g->seen)
        return;
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < g->V)
            g->seen[ids[i] >> 3] |= (uint8_t)(1u << (ids[i] & 7));
}

int fmb_gen_push(fmb_gen *g, const float *logits, int32_t *next)
{
    const fmb_gen_opts *o = g->o;
    FMB_ASSERT(!g->finished && g->r.n < g->cap);
    // NaN or +Inf logits (non-finite weights or state) would sample an invented token
    for (int32_t v = 0; v < g->V; v++)
        if (isnan(logits[v]) || logits[v] == INFINITY) {
            g->bad = (int)g->r.n + 1;
            g->finished = 1;
            return 0;
        }
    float lp;
    fmb_sample_history h = {g->seen, g->counts};
    int32_t id = fmb_sample_hist(logits, g->V, &o->sample, &h, g->r.n, g->scratch, &lp);
    if (o->logprobs)
        fmb_topk_logprobs(logits, g->V, o->logprobs, g->r.top_ids + g->r.n * (size_t)o->logprobs,
                          g->r.top_logprobs + g->r.n * (size_t)o->logprobs);
    fmb_gen_seen(g, &id, 1);
    if (g->counts)
        g->counts[id]++;
    g->r.ids[g->r.n] = id;
    g->r.logprobs[g->r.n] = lp;
    g->r.n++;
    *next = id;
    if (!o->ignore_eos && is_eos(o, id)) {
        g->r.finish_reason = "eos";
        g->finished = 1;
        return 0;
    }
    if (o->n_stop) {
        size_t tl;
        const char *tb = fmb_tok_token_bytes(g->tok, id, &tl);
        if (tb && tl) {
            size_t from = g->bytes.len > g->maxstop ? g->bytes.len - g->maxstop : 0;
            fmb_sb_add(&g->bytes, tb, tl);
            if (find_stop(o, g->bytes.buf, g->bytes.len, from) >= 0) {
                g->r.finish_reason = "stop";
                g->stopped = 1;
                g->finished = 1;
                return 0;
            }
        }
    }
    if (g->r.n == o->max_new_tokens) {
        g->finished = 1;
        return 0;
    }
    return 1;
}

fmb_status fmb_gen_finish(fmb_gen *g, fmb_gen_result *r, fmb_err *err)
{
    fmb_status s = FMB_OK;
    if (g->bad) {
        s = fmb_fail(err, FMB_EINVAL,
                     "non-finite logits before generated token %d: the model's weights or state "
                     "hold NaN or Inf",
                     g->bad - 1);
        goto out;
    }
    if (g->tok) {
        size_t nt = g->r.n;
        if (!strcmp(g->r.finish_reason, "eos"))
            nt--; // the EOS token is generated and scored, but not part of the text
        if ((s = fmb_tok_decode(g->tok, g->r.ids, nt, 0, &g->r.text, &g->r.text_len, err)))
            goto out;
        if (g->stopped) {
            long at = find_stop(g->o, g->r.text, g->r.text_len, 0);
            if (at >= 0) {
                g->r.text_len = (size_t)at;
                g->r.text[at] = 0;
            }
        }
    }
out:
    if (s) {
        memset(r, 0, sizeof *r);
    } else {
        *r = g->r;
        memset(&g->r, 0, sizeof g->r);
    }
    fmb_gen_free(g);
    return s;
}

fmb_status fmb_generate(fmb_engine *eng,
                        fmb_state *st,
                        const fmb_tok *tok,
                        const int32_t *prompt,
                        size_t n_prompt,
                        const fmb_gen_opts *o,
                        fmb_gen_result *r,
                        fmb_err *err)
{
    memset(r, 0, sizeof *r);
    fmb_gen *g;
    fmb_status s = fmb_gen_new(eng, tok, n_prompt, o, &g, err);
    if (s)
        return s;
    if (o->context)
        fmb_gen_seen(g, o->context, o->n_context);
    fmb_gen_seen(g, prompt, n_prompt);
    float *logits = malloc((size_t)g->V * sizeof *logits);
    if (!logits) {
        fmb_gen_free(g);
        return fmb_fail(err, FMB_ENOMEM, "generate: out of memory");
    }
    fmb_outputs out = {0};
    out.logits = logits;
    out.logits_from = n_prompt - 1;
    if ((s = fmb_engine_forward(eng, st, prompt, n_prompt, &out, err)))
        goto fail;
    int32_t id;
    while (!fmb_gen_done(g) && fmb_gen_push(g, logits, &id)) {
        fmb_state *sts[1] = {st};
        if ((s = fmb_engine_step(eng, sts, &id, 1, logits, err)))
            goto fail;
    }
    free(logits);
    return fmb_gen_finish(g, r, err);
fail:
    free(logits);
    fmb_gen_free(g);
    return s;
}
