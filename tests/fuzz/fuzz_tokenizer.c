/*
 * fuzz_tokenizer: libFuzzer target for engine/tokenizer (`make fuzz`; `make test`
 * replays tests/fuzz/corpus_tokenizer and crashes/tokenizer through tests/fuzz/replay.c).
 *
 * The first input byte picks the mode (special on/off, offsets), the rest is the text. Checks
 * that encode succeeds, ids are in range, and decode(encode(x)) is x after the lossy UTF-8
 * replacement (the byte-level pipeline loses nothing else), and that decoding arbitrary ids
 * never fails. Build and run by hand from the repository root:
 *
 *   clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -I. \
 *       tests/fuzz/fuzz_tokenizer.c engine/tokenizer.c kernels/base.c tests/check.c \
 *       -ljansson -lpcre2-8 -lm -o build-fuzz-tok
 *   ./build-fuzz-tok -max_total_time=120 -max_len=4096
 *
 * FMB_FUZZ_TOKENIZER names another tokenizer.json (default: tests/fixtures/tokenizer/).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/tokenizer.h"
#include "tests/check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static fmb_tok *tok;

static fmb_tok *get_tok(void)
{
    if (!tok) {
        const char *p = getenv("FMB_FUZZ_TOKENIZER");
        fmb_err err;
        if (fmb_tok_load(p ? p : "tests/fixtures/tokenizer/tokenizer.json", &tok, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            abort();
        }
    }
    return tok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size)
        return 0;
    const fmb_tok *t = get_tok();
    int mode = data[0];
    data++;
    size--;
    fmb_ids v = {0};
    v.want_offsets = mode & 2;
    fmb_err err;
    if (fmb_tok_encode(t, (const char *)data, size, mode & 1, &v, &err)) {
        fprintf(stderr, "encode failed: %s\n", err.msg);
        abort();
    }
    for (size_t i = 0; i < v.n; i++) {
        if (v.ids[i] < 0 || v.ids[i] >= fmb_tok_vocab_size(t))
            abort();
        if (v.want_offsets && (v.offsets[i] > size || (i && v.offsets[i] < v.offsets[i - 1])))
            abort();
    }
    char *out = NULL, *want = malloc(3 * size + 1);
    size_t on = 0, wn = check_utf8_lossy(data, size, want);
    if (fmb_tok_decode(t, v.ids, v.n, 0, &out, &on, &err) || on != wn || memcmp(out, want, wn))
        abort();
    free(out);
    /* The input read as little-endian ids: decoding anything must work. */
    size_t n_ids = size / 2;
    int32_t *ids = malloc((n_ids + 1) * sizeof *ids);
    for (size_t i = 0; i < n_ids; i++)
        ids[i] = (int32_t)(data[2 * i] | data[2 * i + 1] << 8) - 1000;
    if (fmb_tok_decode(t, ids, n_ids, mode & 4, &out, &on, &err))
        abort();
    free(out);
    free(ids);
    free(want);
    fmb_ids_free(&v);
    return 0;
}
