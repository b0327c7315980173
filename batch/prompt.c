/* prompt: template + document → prefix and rest ids. See prompt.h. */
#include "batch/prompt.h"

#include <string.h>

int fmb_prompt_parts(const char *t, size_t *before_len, const char **after)
{
    const char *m = strstr(t, FMB_PROMPT_DOC_MARK);
    if (!m) {
        *before_len = 0;
        *after = t;
        return 0;
    }
    *before_len = (size_t)(m - t);
    *after = m + strlen(FMB_PROMPT_DOC_MARK);
    return 1;
}

void fmb_prompt_prefix(int32_t context_id,
                       const int32_t *before,
                       size_t n_before,
                       const int32_t *doc,
                       const size_t *doc_offsets,
                       size_t n_doc,
                       fmb_ids *out)
{
    if (context_id >= 0)
        fmb_ids_push(out, context_id, SIZE_MAX);
    for (size_t i = 0; i < n_before; i++)
        fmb_ids_push(out, before[i], SIZE_MAX);
    for (size_t i = 0; i < n_doc; i++)
        fmb_ids_push(out, doc[i], doc_offsets ? doc_offsets[i] : SIZE_MAX);
}

fmb_status fmb_prompt_build(const fmb_tok *tok,
                            int32_t context_id,
                            const char *t,
                            const char *doc,
                            size_t doc_len,
                            fmb_ids *prefix,
                            fmb_ids *rest,
                            fmb_err *err)
{
    size_t before;
    const char *after;
    fmb_prompt_parts(t ? t : "", &before, &after);
    fmb_ids b, d;
    memset(&b, 0, sizeof b);
    memset(&d, 0, sizeof d);
    d.want_offsets = prefix->want_offsets;
    fmb_status s = FMB_OK;
    if ((before && (s = fmb_tok_encode(tok, t, before, 1, &b, err))) ||
        (s = fmb_tok_encode(tok, doc, doc_len, 0, &d, err)))
        goto out;
    fmb_prompt_prefix(context_id, b.ids, b.n, d.ids, d.offsets, d.n, prefix);
    if (rest && *after)
        s = fmb_tok_encode(tok, after, strlen(after), 1, rest, err);
out:
    fmb_ids_free(&b);
    fmb_ids_free(&d);
    return s;
}
