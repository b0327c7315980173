/*
 * generate: prefill a prompt from a state, then decode with sampling, EOS and stop strings.
 * See generate.h.
 */
#include "engine/generate.h"

#include <stdlib.h>
#include <string.h>

void fmb_gen_result_free(fmb_gen_result *r)
{
    if (!r)
        return;
    free(r->ids);
    free(r->logprobs);
    free(r->text);
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
    r->prompt_tokens = n_prompt;
    r->finish_reason = "length";
    if (n_prompt == 0)
        return fmb_fail(err, FMB_EINVAL, "generate: the prompt has no tokens");
    if (o->n_stop && !tok)
        return fmb_fail(err, FMB_EINVAL, "generate: stop strings need a tokenizer");
    int32_t V = (int32_t)fmb_engine_config(eng)->V;
    size_t cap = o->max_new_tokens ? o->max_new_tokens : 1;
    float *logits = malloc((size_t)V * sizeof *logits);
    void *scratch = malloc((size_t)V * 8);
    r->ids = malloc(cap * sizeof *r->ids);
    r->logprobs = malloc(cap * sizeof *r->logprobs);
    fmb_sb bytes = {0}; // raw bytes of the generated tokens, for stop-string matching
    size_t maxstop = 0;
    for (int i = 0; i < o->n_stop; i++)
        if (strlen(o->stop[i]) > maxstop)
            maxstop = strlen(o->stop[i]);
    fmb_status s = FMB_OK;
    if (!logits || !scratch || !r->ids || !r->logprobs) {
        s = fmb_fail(err, FMB_ENOMEM, "generate: out of memory");
        goto out;
    }
    fmb_outputs out = {0};
    out.logits = logits;
    out.logits_from = n_prompt - 1;
    if ((s = fmb_engine_forward(eng, st, prompt, n_prompt, &out, err)))
        goto out;
    int stopped = 0;
    for (size_t i = 0; i < o->max_new_tokens; i++) {
        float lp;
        int32_t id = fmb_sample(logits, V, &o->sample, i, scratch, &lp);
        r->ids[r->n] = id;
        r->logprobs[r->n] = lp;
        r->n++;
        if (!o->ignore_eos && is_eos(o, id)) {
            r->finish_reason = "eos";
            break;
        }
        if (o->n_stop) {
            size_t tl;
            const char *tb = fmb_tok_token_bytes(tok, id, &tl);
            if (tb && tl) {
                size_t from = bytes.len > maxstop ? bytes.len - maxstop : 0;
                fmb_sb_add(&bytes, tb, tl);
                if (find_stop(o, bytes.buf, bytes.len, from) >= 0) {
                    r->finish_reason = "stop";
                    stopped = 1;
                    break;
                }
            }
        }
        if (i + 1 == o->max_new_tokens)
            break;
        fmb_state *sts[1] = {st};
        if ((s = fmb_engine_step(eng, sts, &id, 1, logits, err)))
            goto out;
    }
    if (tok) {
        size_t nt = r->n;
        if (!strcmp(r->finish_reason, "eos"))
            nt--; // the EOS token is generated and scored, but not part of the text
        if ((s = fmb_tok_decode(tok, r->ids, nt, 0, &r->text, &r->text_len, err)))
            goto out;
        if (stopped) {
            long at = find_stop(o, r->text, r->text_len, 0);
            if (at >= 0) {
                r->text_len = (size_t)at;
                r->text[at] = 0;
            }
        }
    }
out:
    fmb_sb_free(&bytes);
    free(logits);
    free(scratch);
    if (s)
        fmb_gen_result_free(r);
    return s;
}
