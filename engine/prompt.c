/* prompt: template + document → prefix and rest ids. See prompt.h. */
#include "engine/prompt.h"

#include <string.h>

#define DOC_MARK "{document}"

void fmb_prompt_parts(const char *t, size_t *before_len, const char **after)
{
    const char *m = strstr(t, DOC_MARK);
    if (!m) {
        *before_len = 0;
        *after = t;
        return;
    }
    *before_len = (size_t)(m - t);
    *after = m + strlen(DOC_MARK);
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
    if (context_id >= 0)
        fmb_ids_push(prefix, context_id, SIZE_MAX);
    fmb_status s;
    if (before) {
        size_t n0 = prefix->n;
        if ((s = fmb_tok_encode(tok, t, before, 1, prefix, err)))
            return s;
        if (prefix->offsets)
            for (size_t i = n0; i < prefix->n; i++)
                prefix->offsets[i] = SIZE_MAX;
    }
    if ((s = fmb_tok_encode(tok, doc, doc_len, 0, prefix, err)))
        return s;
    if (rest && *after)
        return fmb_tok_encode(tok, after, strlen(after), 1, rest, err);
    return FMB_OK;
}
