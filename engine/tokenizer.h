/*
 * tokenizer: Hugging Face tokenizer.json (byte-level BPE, the Falcon pipeline) in C.
 *
 * Encodes exactly as HF tokenizers does: added tokens matched leftmost-longest on the raw text
 * (when special matching is on), then the pre-tokenizer Sequence (Punctuation, ByteLevel,
 * Digits, Split), then BPE merges per piece. No BOS/EOS is added unless the post-processor is a
 * TemplateProcessing. Decoding maps byte-level chars back to bytes.
 *
 * A loaded fmb_tok is immutable: encode/decode may run from several threads at once.
 */
#ifndef FMB_TOKENIZER_H
#define FMB_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/base.h"

typedef struct fmb_tok fmb_tok;

/* A growable array of ids; offsets (if want_offsets was set before encoding) holds, for each
 * id, the byte offset in the input where the token starts. Owned by the caller: fmb_ids_free. */
typedef struct {
    int32_t *ids;
    size_t *offsets; /* [n] or NULL */
    size_t n, cap;
    int want_offsets;
} fmb_ids;

void fmb_ids_free(fmb_ids *v);
void fmb_ids_push(fmb_ids *v, int32_t id, size_t offset);

/* Loads and validates path (a tokenizer.json). Unsupported or malformed: FMB_EINVAL/FMB_EUNSUP
 * with a message naming the file and the field. Caller frees with fmb_tok_free. */
FMB_NODISCARD fmb_status fmb_tok_load(const char *path, fmb_tok **out, fmb_err *err);
void fmb_tok_free(fmb_tok *tok);

/* Encodes len bytes of text and appends to out. Invalid UTF-8 is replaced by U+FFFD first
 * (exactly as Rust's String::from_utf8_lossy). special != 0 matches special added tokens in the
 * text (prompt templates); special == 0 never does (document text: "<|endoftext|>" in a web
 * page stays text), which is HF's encode_special_tokens=True: non-special added tokens, if a
 * file has any, still match, as in HF. A TemplateProcessing post-processor's ids are added
 * (HF's add_special_tokens=True). Offsets (if out->want_offsets) are byte offsets into text.
 * Thread-safe: all scratch is per call. Errors: FMB_ENOMEM, FMB_ELIMIT (over 4 GiB, a regex
 * match limit). */
FMB_NODISCARD fmb_status fmb_tok_encode(
    const fmb_tok *tok, const char *text, size_t len, int special, fmb_ids *out, fmb_err *err);

/* Decodes ids to bytes; invalid UTF-8 in the result is replaced by U+FFFD (as HF's lossy
 * decode). *out is NUL-terminated, caller frees. skip_special drops special added tokens. */
FMB_NODISCARD fmb_status fmb_tok_decode(const fmb_tok *tok,
                                        const int32_t *ids,
                                        size_t n,
                                        int skip_special,
                                        char **out,
                                        size_t *out_len,
                                        fmb_err *err);

/* The raw bytes of one token after the byte-level map is undone (may be a partial UTF-8
 * sequence: streaming decoders buffer incomplete tails). Borrowed, valid while tok lives.
 * NULL for an id out of range. */
const char *fmb_tok_token_bytes(const fmb_tok *tok, int32_t id, size_t *len);

/* 1 if id is a special added token (dropped by decode with skip_special). */
int fmb_tok_is_special(const fmb_tok *tok, int32_t id);

/* Streaming decode helper: the length of the longest prefix of s[0..len) that does not end in a
 * UTF-8 sequence that is incomplete but still valid so far (hold those bytes back until the next
 * token arrives; anything else, invalid bytes included, is final: a lossy decode turns it into
 * U+FFFD whatever follows). */
size_t fmb_tok_utf8_complete(const char *s, size_t len);

/* Number of ids (model vocab plus added tokens, max id + 1). */
int32_t fmb_tok_vocab_size(const fmb_tok *tok);
/* Id of a token string (vocab or added), or -1. */
int32_t fmb_tok_token_id(const fmb_tok *tok, const char *token);

#endif
