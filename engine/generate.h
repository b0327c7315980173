/*
 * generate: a scored generation from a state (the `generate` command and task).
 *
 * The prompt ids are prefilled from st, then tokens are decoded one at a time until max_new
 * tokens, an EOS id, or a stop string in the decoded text. Every generated token keeps its
 * log-probability under the model (log-softmax of the raw logits, before any penalty or
 * temperature), and with opts.logprobs the top-k of its position's raw distribution.
 * Penalties (fmb_sample_params) see a per-generation history: the input ids (fmb_gen_seen)
 * and the generated ones.
 */
#ifndef FMB_GENERATE_H
#define FMB_GENERATE_H

#include "engine/engine.h"
#include "engine/sample.h"
#include "engine/tokenizer.h"

typedef struct {
    size_t max_new_tokens;
    fmb_sample_params sample;
    const int32_t *eos_ids; /* stop on any of these (the token is kept in ids, not in text) */
    int n_eos;
    int ignore_eos;
    const char *const *stop; /* stop strings, matched in the decoded text (needs a tokenizer) */
    int n_stop;
    int logprobs; /* 0..64: keep each generated position's top-k raw log-probabilities */
    /* fmb_generate only: ids fed before the prompt (a document prefix already in st), seen by
     * the repetition penalty like the prompt; NULL: none */
    const int32_t *context;
    size_t n_context;
} fmb_gen_opts;

typedef struct {
    size_t prompt_tokens;
    int32_t *ids;    /* [n] generated ids */
    float *logprobs; /* [n] */
    size_t n;
    char *text; /* decoded text, cut before a stop string; NULL without a tokenizer */
    size_t text_len;
    const char *finish_reason; /* "length", "eos" or "stop" (static) */
    int top_k;                 /* opts.logprobs */
    int32_t *top_ids;          /* [n · top_k] per position, descending (fmb_topk_logprobs) */
    float *top_logprobs;       /* [n · top_k] */
} fmb_gen_result;

/* tok may be NULL (no text, no stop strings). st is advanced through the prompt and the
 * generated tokens. Fails (FMB_EINVAL, "non-finite logit ...") when a logits row it would
 * sample from holds a NaN or +Inf (the engine's check): no token is made up from it. */
FMB_NODISCARD fmb_status fmb_generate(fmb_engine *eng,
                                      fmb_state *st,
                                      const fmb_tok *tok,
                                      const int32_t *prompt,
                                      size_t n_prompt,
                                      const fmb_gen_opts *opts,
                                      fmb_gen_result *r,
                                      fmb_err *err);
void fmb_gen_result_free(fmb_gen_result *r);

/* fmb_generate as a resumable state machine, for callers that decode many sequences in one
 * batched fmb_engine_step (fmb_generate itself runs on it): new, then push the logits after
 * the prompt's last token and after each token it returns, until push returns 0; finish
 * fills the result (the same as fmb_generate's) and frees the generator. opts and tok are
 * borrowed until finish or free. */
typedef struct fmb_gen fmb_gen;
FMB_NODISCARD fmb_status fmb_gen_new(fmb_engine *eng,
                                     const fmb_tok *tok,
                                     size_t n_prompt,
                                     const fmb_gen_opts *opts,
                                     fmb_gen **out,
                                     fmb_err *err);
/* Samples the next token from logits [V]: *next. Returns 1 when *next must be fed back
 * (a decode step, then push again), 0 when the generation ended (EOS, stop string, length). */
int fmb_gen_push(fmb_gen *g, const float *logits, int32_t *next);
int fmb_gen_done(const fmb_gen *g); /* 1 once ended (also with max_new_tokens == 0) */
/* Marks ids as part of the input for the repetition penalty (the document, the prompt): call
 * before the first push. Generated ids are marked by push. A no-op without the penalty. */
void fmb_gen_seen(fmb_gen *g, const int32_t *ids, size_t n);
FMB_NODISCARD fmb_status fmb_gen_finish(fmb_gen *g, fmb_gen_result *r, fmb_err *err);
void fmb_gen_free(fmb_gen *g);

#endif
