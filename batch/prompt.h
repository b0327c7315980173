/*
 * prompt: how a task prompt over a document becomes token ids, shared by the CLI and jobs so
 * that `fmbatch generate --document-file F --prompt S` reproduces a job's task exactly.
 *
 * A template holds "{document}" once (or not at all: then it reads as "{document}" followed by
 * the template). The prefix is [context] + encode(text before {document}, special tokens on) +
 * encode(document, special tokens off); its end state can be shared by every task whose text
 * before {document} is the same. The rest is encode(text after {document}, special on) and
 * continues from that state. context is the model's EOS (as for scoring: the document's first
 * token is predicted from it), or -1 for none.
 */
#ifndef FMB_PROMPT_H
#define FMB_PROMPT_H

#include "engine/tokenizer.h"

#define FMB_PROMPT_DOC_MARK "{document}"

/* Splits template at its first "{document}": *before_len bytes before it, *after points just
 * past it (or at template when absent). Returns 1 when the template holds the mark. */
int fmb_prompt_parts(const char *template_text, size_t *before_len, const char **after);

/* The prefix rule, in one place: appends [context_id if >= 0] + before[0..n_before) + doc
 * [0..n_doc) to out (offsets, when out wants them: doc_offsets[i] for document tokens (NULL:
 * SIZE_MAX), SIZE_MAX for the context and template tokens). Jobs (batch/task.c, with the
 * template part encoded once per job) and fmb_prompt_build below both go through it. */
void fmb_prompt_prefix(int32_t context_id,
                       const int32_t *before,
                       size_t n_before,
                       const int32_t *doc,
                       const size_t *doc_offsets,
                       size_t n_doc,
                       fmb_ids *out);

/* Appends the prefix ids to prefix and the rest ids to rest (both caller-owned). Offsets, if
 * requested on prefix, are byte offsets into the document for document tokens and SIZE_MAX
 * for the context and template tokens. */
FMB_NODISCARD fmb_status fmb_prompt_build(const fmb_tok *tok,
                                          int32_t context_id,
                                          const char *template_text,
                                          const char *doc,
                                          size_t doc_len,
                                          fmb_ids *prefix,
                                          fmb_ids *rest,
                                          fmb_err *err);

#endif
