/*
 * fuzz_prompt: libFuzzer target for prompt templates (batch/prompt.c): the input up to its
 * first NUL is a task template (with "{document}" once, several times or not at all), the rest
 * the document. Builds the prefix and the rest with the fixture tokenizer and checks the split
 * (the mark where fmb_prompt_parts says), the context id first, every id in the vocabulary,
 * and that the ids decode. `make fuzz` builds it; seeds: tests/fuzz/corpus_prompt.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch/prompt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static fmb_tok *tok;

static void check_ids(const fmb_ids *v)
{
    for (size_t i = 0; i < v->n; i++)
        if (v->ids[i] < 0 || v->ids[i] >= fmb_tok_vocab_size(tok))
            abort();
    char *out = NULL;
    size_t on = 0;
    fmb_err err;
    if (fmb_tok_decode(tok, v->ids, v->n, 0, &out, &on, &err))
        abort();
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fmb_err err;
    if (!tok && fmb_tok_load("tests/fixtures/tokenizer/tokenizer.json", &tok, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        abort();
    }
    const uint8_t *nul = memchr(data, 0, size);
    size_t tlen = nul ? (size_t)(nul - data) : size;
    char *tmpl = malloc(tlen + 1);
    memcpy(tmpl, data, tlen);
    tmpl[tlen] = 0;
    const char *doc = nul ? (const char *)nul + 1 : "";
    size_t dlen = nul ? size - tlen - 1 : 0;
    size_t before = 0;
    const char *after = NULL;
    int has = fmb_prompt_parts(tmpl, &before, &after);
    if (has != (strstr(tmpl, FMB_PROMPT_DOC_MARK) != NULL) || before > tlen ||
        (has && (strncmp(tmpl + before, FMB_PROMPT_DOC_MARK, strlen(FMB_PROMPT_DOC_MARK)) ||
                 after != tmpl + before + strlen(FMB_PROMPT_DOC_MARK))))
        abort();
    fmb_ids prefix = {0}, rest = {0};
    prefix.want_offsets = size & 1;
    int32_t ctx = (size & 2) ? 0 : -1;
    if (fmb_prompt_build(tok, ctx, tmpl, doc, dlen, &prefix, &rest, &err) == FMB_OK) {
        if (ctx >= 0 && (!prefix.n || prefix.ids[0] != ctx))
            abort();
        check_ids(&prefix);
        check_ids(&rest);
    }
    fmb_ids_free(&prefix);
    fmb_ids_free(&rest);
    free(tmpl);
    return 0;
}
