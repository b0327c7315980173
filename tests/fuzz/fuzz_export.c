/*
 * fuzz_export: libFuzzer target for the export encoder (batch/queue_results.c): the input up
 * to its first NUL is an item key, the rest a generated text (any bytes, NULs included), also
 * used as the row's note, a token_nll blob (float32: NaN, Inf, denormals) and, up to its first
 * NUL, the error of a second, failed item. Each input gets a fresh output database (queue
 * API); the JSONL export must parse (jansson, NULs allowed) and give back the key and the text
 * losslessly: the JSON string when the bytes are valid UTF-8, else "<column>_hex". The CSV
 * export is read to its end. `make fuzz` builds it; seeds: tests/fuzz/corpus_export.
 */
#include <jansson.h>
#include <math.h>

#include "batch/queue.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Whether column col of row o gives back raw[0..n) (hex when present, else the string). */
static int same(json_t *o, const char *col, const char *raw, size_t n)
{
    char hexcol[64];
    snprintf(hexcol, sizeof hexcol, "%s_hex", col);
    json_t *h = json_object_get(o, hexcol);
    if (h) {
        const char *x = json_string_value(h);
        if (!x || strlen(x) != 2 * n)
            return 0;
        for (size_t i = 0; i < n; i++) {
            unsigned b;
            if (sscanf(x + 2 * i, "%2x", &b) != 1 || (char)b != raw[i])
                return 0;
        }
        return 1;
    }
    json_t *s = json_object_get(o, col);
    return json_is_string(s) && json_string_length(s) == n && !memcmp(json_string_value(s), raw, n);
}

static void
drain(fmb_queue *q, fmb_export_format fmt, const char *key, const char *text, size_t tlen)
{
    fmb_queue_export *x = NULL;
    fmb_err err;
    fmb_export_opts eo = {0};
    eo.format = fmt;
    eo.include_failed = 1; /* every task, every column, no tokenizer: text as stored */
    if (fmb_queue_export_open(q, &eo, &x, &err))
        abort();
    int found = 0;
    for (;;) {
        const char *line;
        size_t len;
        if (fmb_queue_export_next(x, &line, &len, &err))
            abort();
        if (!line)
            break;
        if (fmt != FMB_EXPORT_JSONL)
            continue;
        json_error_t je;
        json_t *o = json_loadb(line, len, JSON_ALLOW_NUL, &je);
        if (!json_is_object(o)) {
            fprintf(stderr, "export line does not parse: %s\n", je.text);
            abort();
        }
        json_t *task = json_object_get(o, "task");
        if (json_is_string(task) && !strcmp(json_string_value(task), "t")) {
            found = 1;
            if (!same(o, "item_key", key, strlen(key)) || !same(o, "text", text, tlen))
                abort();
        }
        json_decref(o);
    }
    if (fmt == FMB_EXPORT_JSONL && !found)
        abort();
    fmb_queue_export_close(x);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t klen = nul ? (size_t)(nul - data) : size;
    char *key = malloc(klen + 8), *fkey = malloc(klen + 8);
    memcpy(key, data, klen);
    key[klen] = 0;
    snprintf(fkey, klen + 8, "%s~f", key);
    const char *text = nul ? (const char *)nul + 1 : "";
    size_t tlen = nul ? size - klen - 1 : 0;
    char *reason = strndup(text, tlen);
    char path[256];
    snprintf(path, sizeof path, "%s/o.db", fuzz_dir());
    const char *sfx[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char p[300];
        snprintf(p, sizeof p, "%s%s", path, sfx[i]);
        unlink(p);
    }
    fmb_queue *q = NULL;
    fmb_err err;
    int64_t id = -1, fid = -1;
    fmb_claim c = FMB_CLAIM_BUSY, fc = FMB_CLAIM_BUSY;
    if (fmb_queue_open(path, "f", 1, 3, 600, &q, &err) ||
        fmb_queue_bind_job(q, "fp", "m", "mh", "th", &err) ||
        fmb_queue_claim(q, key, "h", tlen, &c, &id, &err) ||
        fmb_queue_claim(q, fkey, "h", 0, &fc, &fid, &err) || c != FMB_CLAIM_TAKEN ||
        fc != FMB_CLAIM_TAKEN) {
        fprintf(stderr, "queue: %s\n", err.msg);
        abort();
    }
    fmb_result_row r;
    memset(&r, 0, sizeof r);
    r.task = "t";
    r.kind = "generate";
    r.status = "ok";
    r.note = reason;
    r.doc_tokens = r.prompt_tokens = r.tokens = r.best_index = r.seed = -1;
    r.sum_nll = r.mean_nll = r.ppl = r.bits_per_byte = r.prefill_seconds = r.task_seconds = NAN;
    r.text = text;
    r.text_len = tlen;
    r.token_nll = text;
    r.token_nll_bytes = tlen & ~(size_t)3;
    int lost = 0;
    if (fmb_queue_begin(q, &err) || fmb_queue_add_result(q, id, key, &r, &err) ||
        fmb_queue_finish(q, id, 1, 0.0, &lost, &err) || fmb_queue_fail(q, fid, reason, &err)) {
        fprintf(stderr, "queue: %s\n", err.msg);
        abort();
    }
    drain(q, FMB_EXPORT_JSONL, key, text, tlen);
    drain(q, FMB_EXPORT_CSV, key, text, tlen);
    fmb_queue_close(q);
    free(reason);
    free(key);
    free(fkey);
    return 0;
}
