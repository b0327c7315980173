/*
 * fuzz_progress: libFuzzer target for the `--progress machine` line parser (batch/progress.c),
 * which `run --devices` applies to every line its workers print. The input is one line (a
 * newline inside cuts it). A line it takes must hold nine counts in [0, 2^53] and must
 * round-trip: formatting the counts and parsing that gives the same counts. Combining copies
 * of them must sum what it sums and keep the settled count of the largest. `make fuzz` builds
 * it; seeds: tests/fuzz/corpus_progress.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "batch/progress.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    const char *nl = memchr(s, '\n', size);
    size_t n = nl ? (size_t)(nl - s) : size;
    fmb_progress_counts c, back;
    memset(&c, 0x5a, sizeof c);
    const fmb_progress_counts before = c;
    if (!fmb_progress_parse(s, n, &c)) {
        if (memcmp(&c, &before, sizeof c))
            abort(); /* a line it refuses leaves the counts as they were */
        return 0;
    }
    char buf[256];
    size_t len = fmb_progress_format(&c, buf, sizeof buf);
    if (len < 1 || buf[len - 1] != '\n' || !fmb_progress_parse(buf, len - 1, &back) ||
        memcmp(&c, &back, sizeof c))
        abort();
    fmb_progress_counts w[2] = {c, c}, all;
    fmb_progress_combine(w, 2, &all);
    if (c.seen < 0 || c.done < 0 || c.done > ((int64_t)1 << 53) || all.seen != c.seen ||
        all.total != c.total || all.done != 2 * c.done || all.tokens != 2 * c.tokens)
        abort();
    return 0;
}
