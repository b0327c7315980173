/*
 * test_tokenizer: engine/tokenizer against HF's ids (tests/fixtures/tokenizer/cases.jsonl), the
 * tiny models' tokenizer.json files, malformed files, lossy UTF-8, offsets, streaming, special
 * matching on/off, a seeded random-bytes loop (round trip through decode), pathological inputs
 * and concurrent encodes. The differential test against HF itself is tests/sh/tokenizer_diff.sh.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/tokenizer.h"
#include "tests/check.h"

#define TOK_JSON "tests/fixtures/tokenizer/tokenizer.json"

static size_t b64_decode(const char *s, unsigned char *out)
{
    static const char *al = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0;
    for (; *s && *s != '='; s++) {
        const char *p = strchr(al, *s);
        if (!p)
            continue;
        acc = (acc << 6) | (uint32_t)(p - al);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(acc >> bits);
        }
    }
    return n;
}

static void test_cases(const fmb_tok *tok)
{
    size_t len;
    char *all = check_read_file("tests/fixtures/tokenizer/cases.jsonl", &len);
    if (!check(all != NULL, "tok_cases_read", "cannot read cases.jsonl"))
        return;
    size_t n = 0, bad_enc = 0, bad_dec = 0;
    char *save = NULL;
    for (char *line = strtok_r(all, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_error_t je;
        json_t *c = json_loads(line, JSON_ALLOW_NUL, &je);
        if (!c)
            continue;
        n++;
        const char *b64 = json_string_value(json_object_get(c, "bytes_b64"));
        json_t *tj = json_object_get(c, "text");
        unsigned char *in;
        size_t in_n;
        if (b64) {
            in = malloc(strlen(b64) + 1);
            in_n = b64_decode(b64, in);
        } else {
            in_n = json_string_length(tj);
            in = malloc(in_n + 1);
            memcpy(in, json_string_value(tj), in_n);
        }
        json_t *ids = json_object_get(c, "ids");
        fmb_ids v = {0};
        fmb_err err = {{0}};
        int ok = !fmb_tok_encode(tok, (const char *)in, in_n, 1, &v, &err) &&
                 v.n == json_array_size(ids);
        for (size_t i = 0; ok && i < v.n; i++)
            ok = v.ids[i] == json_integer_value(json_array_get(ids, i));
        if (!ok && bad_enc++ < 5)
            check_note("case %zu encode differs (%zu ids, want %zu): %.60s", n, v.n,
                       json_array_size(ids), json_string_value(tj));
        /* decode HF's ids */
        int32_t *want = malloc((json_array_size(ids) + 1) * sizeof *want);
        for (size_t i = 0; i < json_array_size(ids); i++)
            want[i] = (int32_t)json_integer_value(json_array_get(ids, i));
        char *out = NULL;
        size_t out_n = 0;
        json_t *dec = json_object_get(c, "decoded");
        ok = !fmb_tok_decode(tok, want, json_array_size(ids), 0, &out, &out_n, &err) &&
             out_n == json_string_length(dec) && !memcmp(out, json_string_value(dec), out_n);
        if (!ok && bad_dec++ < 5)
            check_note("case %zu decode differs: %.60s", n, json_string_value(dec));
        free(out);
        free(want);
        fmb_ids_free(&v);
        free(in);
        json_decref(c);
    }
    free(all);
    check(n == 331 && bad_enc == 0, "tok_cases_encode", "%zu of %zu cases differ from HF", bad_enc,
          n);
    check(n == 331 && bad_dec == 0, "tok_cases_decode", "%zu of %zu decodes differ from HF",
          bad_dec, n);
}

static int
encode_eq(const fmb_tok *tok, const char *s, size_t n, int special, const int32_t *want, size_t wn)
{
    fmb_ids v = {0};
    fmb_err err = {{0}};
    int ok = !fmb_tok_encode(tok, s, n, special, &v, &err) && v.n == wn;
    for (size_t i = 0; ok && i < wn; i++)
        ok = v.ids[i] == want[i];
    fmb_ids_free(&v);
    return ok;
}

static void test_special(const fmb_tok *tok)
{
    const int32_t on[] = {11, 332, 84};
    const int32_t off[] = {16230, 676, 1424, 6474, 15804, 332, 84};
    check(encode_eq(tok, "<|endoftext|> hi", 16, 1, on, 3), "tok_special_on", "ids differ");
    check(encode_eq(tok, "<|endoftext|> hi", 16, 0, off, 7), "tok_special_off",
          "a document's <|endoftext|> must stay text");
    check(fmb_tok_token_id(tok, "<|endoftext|>") == 11 && fmb_tok_is_special(tok, 11) &&
              !fmb_tok_is_special(tok, 332),
          "tok_special_lookup", "token_id/is_special");
    int32_t ids[] = {11, 332, 84};
    char *out;
    size_t n;
    fmb_err err;
    int ok = !fmb_tok_decode(tok, ids, 3, 1, &out, &n, &err) && !strcmp(out, " hi");
    if (ok)
        free(out);
    check(ok, "tok_decode_skip_special", "skip_special should drop id 11");
}

/* Offsets: byte offsets into the caller's input, also across U+FFFD replacements. */
static void test_offsets(const fmb_tok *tok)
{
    fmb_ids v = {0};
    v.want_offsets = 1;
    fmb_err err;
    int ok = !fmb_tok_encode(tok, "Hello, world!", 13, 1, &v, &err) && v.n == 4 &&
             v.offsets[0] == 0 && v.offsets[1] == 5 && v.offsets[2] == 6 && v.offsets[3] == 12;
    check(ok, "tok_offsets_ascii", "offsets %zu %zu %zu %zu", v.n > 0 ? v.offsets[0] : 99,
          v.n > 1 ? v.offsets[1] : 99, v.n > 2 ? v.offsets[2] : 99, v.n > 3 ? v.offsets[3] : 99);
    fmb_ids_free(&v);
    v.want_offsets = 1;
    /* "\xFF\xFEab": two replacements (6 bytes in the lossy text) then "ab" at input offset 2. */
    ok = !fmb_tok_encode(tok, "\xFF\xFE ab", 5, 1, &v, &err) && v.n >= 2 && v.offsets[v.n - 1] == 2;
    check(ok, "tok_offsets_lossy", "last token should start at input byte 2, got %zu",
          v.n ? v.offsets[v.n - 1] : 0);
    fmb_ids_free(&v);
}

/* Rust from_utf8_lossy: one U+FFFD per maximal invalid subpart. */
static void test_lossy(const fmb_tok *tok)
{
    static const struct {
        const char *in;
        size_t n;
        const char *want;
    } cs[] = {
        {"\xF0\x9F\x98", 3, "\xEF\xBF\xBD"},                         /* truncated 4-byte */
        {"\xED\xA0\x80", 3, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, /* surrogate */
        {"\xE0\x80\xAF", 3, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, /* overlong */
        {"\xC0\xAF", 2, "\xEF\xBF\xBD\xEF\xBF\xBD"},                 /* C0 never valid */
        {"\xE2\x82x", 3, "\xEF\xBF\xBDx"},                           /* 2 of 3, then ASCII */
        {"\xF4\x90\x80\x80", 4, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, /* > 10FFFF */
        {"\xF1\x80\x80\xE1\x80\xC2", 6, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},
        {"a\x00"
         "b",
         3,
         "a\x00"
         "b"},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        fmb_ids v = {0};
        fmb_err err;
        char *out = NULL;
        size_t n = 0, wn = i == 7 ? 3 : strlen(cs[i].want);
        if (fmb_tok_encode(tok, cs[i].in, cs[i].n, 1, &v, &err) ||
            fmb_tok_decode(tok, v.ids, v.n, 0, &out, &n, &err) || n != wn ||
            memcmp(out, cs[i].want, n)) {
            check_note("lossy case %zu differs", i);
            bad++;
        }
        free(out);
        fmb_ids_free(&v);
    }
    check(!bad, "tok_lossy_utf8", "%d cases differ", bad);
}

static void test_streaming(const fmb_tok *tok)
{
    int ok = fmb_tok_utf8_complete("ab\xE2\x82", 4) == 2 &&
             fmb_tok_utf8_complete("ab\xE2", 3) == 2 &&
             fmb_tok_utf8_complete("ab\xE2\x82\xAC", 5) == 5 &&
             fmb_tok_utf8_complete("\xF0\x9F\x98", 3) == 0 &&
             fmb_tok_utf8_complete("ab\xFF", 3) == 3 && /* invalid: final */
             fmb_tok_utf8_complete("ab\xE2x", 4) == 4 && fmb_tok_utf8_complete("", 0) == 0 &&
             fmb_tok_utf8_complete("\xED\xA0", 2) == 2; /* a surrogate prefix is invalid */
    check(ok, "tok_utf8_complete", "streaming prefix lengths");
    /* Stream the tokens of an emoji text one by one: the held-back bytes make up the text. */
    const char *txt = "héllo 😀 мир 中文";
    fmb_ids v = {0};
    fmb_err err;
    char buf[256];
    size_t bn = 0, shown = 0;
    char shown_txt[256];
    ok = !fmb_tok_encode(tok, txt, strlen(txt), 1, &v, &err);
    int split_seen = 0;
    for (size_t i = 0; ok && i < v.n; i++) {
        size_t l;
        const char *b = fmb_tok_token_bytes(tok, v.ids[i], &l);
        memcpy(buf + bn, b, l);
        bn += l;
        size_t c = fmb_tok_utf8_complete(buf, bn);
        if (c < bn)
            split_seen = 1;
        memcpy(shown_txt + shown, buf, c);
        shown += c;
        memmove(buf, buf + c, bn - c);
        bn -= c;
    }
    ok = ok && bn == 0 && shown == strlen(txt) && !memcmp(shown_txt, txt, shown) && split_seen;
    check(ok, "tok_streaming_decode", "streamed text differs (split seen %d)", split_seen);
    fmb_ids_free(&v);
    size_t l;
    check(fmb_tok_token_bytes(tok, -1, &l) == NULL &&
              fmb_tok_token_bytes(tok, fmb_tok_vocab_size(tok), &l) == NULL,
          "tok_token_bytes_range", "out-of-range ids give NULL");
}

static void test_random_bytes(const fmb_tok *tok)
{
    uint64_t seed = 0x70CE11u;
    unsigned char in[300];
    char want[1000];
    int bad = 0;
    for (int it = 0; it < 3000; it++) {
        size_t n = check_rand_u64(&seed) % 300;
        int mode = (int)(check_rand_u64(&seed) % 3);
        for (size_t i = 0; i < n; i++) {
            uint64_t r = check_rand_u64(&seed);
            in[i] = mode == 0 ? (unsigned char)r
                    : mode == 1
                        ? (unsigned char)" a1.\xD0\xB2\xE4\xB8\xAD\xF0\x9F\x98\x80<|>'s"[r % 19]
                        : (unsigned char)(0x80 + r % 0x80);
        }
        for (int special = 0; special < 2; special++) {
            fmb_ids v = {0};
            fmb_err err;
            char *out = NULL;
            size_t on = 0;
            size_t wn = check_utf8_lossy(in, n, want);
            if (fmb_tok_encode(tok, (const char *)in, n, special, &v, &err) ||
                fmb_tok_decode(tok, v.ids, v.n, 0, &out, &on, &err) || on != wn ||
                memcmp(out, want, wn)) {
                if (bad++ < 3)
                    check_note("random bytes iteration %d (special %d) does not round-trip", it,
                               special);
            }
            for (size_t i = 0; i < v.n; i++)
                if (v.ids[i] < 0 || v.ids[i] >= fmb_tok_vocab_size(tok))
                    bad++;
            free(out);
            fmb_ids_free(&v);
        }
    }
    check(!bad, "tok_random_bytes_roundtrip", "%d failures (seed 0x70CE11)", bad);
}

/* Pathological inputs: must finish in linear-ish time and round-trip. */
static void test_pathological(const fmb_tok *tok)
{
    const size_t n = 1u << 20;
    char *buf = malloc(n);
    static const char *const units[] = {"a", " ", "\xD0\xB2", "7", "!", "'s", "a.", "\t\n"};
    uint64_t seed = 3;
    for (size_t u = 0; u < sizeof units / sizeof units[0] + 1; u++) {
        size_t len = 0;
        if (u < sizeof units / sizeof units[0]) {
            size_t ul = strlen(units[u]);
            for (; len + ul <= n; len += ul)
                memcpy(buf + len, units[u], ul);
        } else { /* no whitespace, mixed classes */
            static const char al[] = "abcXYZ019.,;-_()";
            for (; len < n; len++)
                buf[len] = al[check_rand_u64(&seed) % (sizeof al - 1)];
        }
        fmb_ids v = {0};
        fmb_err err;
        char *out = NULL;
        size_t on = 0;
        double t0 = fmb_now();
        int ok = !fmb_tok_encode(tok, buf, len, 1, &v, &err);
        double t = fmb_now() - t0;
        ok = ok && !fmb_tok_decode(tok, v.ids, v.n, 0, &out, &on, &err) && on == len &&
             !memcmp(out, buf, len);
        char name[64];
        snprintf(name, sizeof name, "tok_pathological_%zu", u);
        check(ok && t < 30, name, "1 MiB of unit %zu: ok %d, %.2f s", u, ok, t);
        check_note("%s: 1 MiB -> %zu ids in %.3f s", name, v.n, t);
        free(out);
        fmb_ids_free(&v);
    }
    free(buf);
}

typedef struct {
    const fmb_tok *tok;
    int ok;
} thr_arg;

static void *thr_main(void *p)
{
    thr_arg *a = p;
    const char *txt = "Concurrent encodes share one immutable tokenizer: Привет, 1234567!";
    a->ok = 1;
    for (int i = 0; i < 300 && a->ok; i++) {
        fmb_ids v = {0};
        fmb_err err;
        char *out = NULL;
        size_t on;
        a->ok = !fmb_tok_encode(a->tok, txt, strlen(txt), 1, &v, &err) &&
                !fmb_tok_decode(a->tok, v.ids, v.n, 0, &out, &on, &err) && on == strlen(txt) &&
                !memcmp(out, txt, on);
        free(out);
        fmb_ids_free(&v);
    }
    return NULL;
}

static void test_threads(const fmb_tok *tok)
{
    pthread_t th[4];
    thr_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i].tok = tok;
        pthread_create(&th[i], NULL, thr_main, &a[i]);
    }
    int ok = 1;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ok &= a[i].ok;
    }
    check(ok, "tok_threads", "concurrent encode/decode failed");
}

static void test_tiny(void)
{
    const char *dirs[] = {"tiny-a", "tiny-b", "tiny-bf16"};
    for (int i = 0; i < 3; i++) {
        char path[256], name[64];
        snprintf(path, sizeof path, "tests/fixtures/%s/tokenizer.json", dirs[i]);
        snprintf(name, sizeof name, "tok_load_%s", dirs[i]);
        fmb_tok *t = NULL;
        fmb_err err = {{0}};
        int ok = !fmb_tok_load(path, &t, &err);
        fmb_ids v = {0};
        const char *txt = "Hello, world! Привет 1234567 <|endoftext|>";
        ok = ok && !fmb_tok_encode(t, txt, strlen(txt), 1, &v, &err) && v.n > 0;
        for (size_t k = 0; ok && k < v.n; k++)
            ok = v.ids[k] >= 0 && v.ids[k] < fmb_tok_vocab_size(t);
        check(ok, name, "%s", err.msg);
        fmb_ids_free(&v);
        fmb_tok_free(t);
    }
}

/* Malformed or unsupported files: a status and a message naming the field. */
static void test_malformed(void)
{
    size_t len;
    char *good = check_read_file("tests/fixtures/tiny-a/tokenizer.json", &len);
    json_error_t je;
    json_t *base = good ? json_loads(good, 0, &je) : NULL;
    free(good);
    if (!check(base != NULL, "tok_malformed_base", "cannot read tiny-a tokenizer.json"))
        return;
    static const struct {
        const char *name, *field;
        fmb_status want;
    } cs[] = {
        {"missing_vocab", "model.vocab", FMB_EINVAL},
        {"merge_unknown", "model.merges[", FMB_EINVAL},
        {"merge_bad_form", "model.merges[", FMB_EINVAL},
        {"unknown_pretok", "pre_tokenizer.pretokenizers[1].type", FMB_EUNSUP},
        {"normalizer", "normalizer", FMB_EUNSUP},
        {"bad_json", "bad JSON", FMB_EINVAL},
        {"model_type", "model.type", FMB_EUNSUP},
        {"decoder", "decoder", FMB_EUNSUP},
        {"split_regex", "pretokenizers[3].pattern", FMB_EINVAL},
        {"added_id", "added_tokens[0].id", FMB_EUNSUP},
        {"behavior", "pretokenizers[0].behavior", FMB_EINVAL},
        {"vocab_id", "model.vocab", FMB_EINVAL},
        {"post_processor", "post_processor", FMB_EUNSUP},
        {"missing_file", "cannot open", FMB_EIO},
    };
    char tmpbuf[256];
    snprintf(tmpbuf, sizeof tmpbuf, "/tmp/fmb_tok_malformed_%d.json", (int)getpid());
    const char *tmp = tmpbuf;
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        json_t *j = json_deep_copy(base);
        json_t *model = json_object_get(j, "model");
        json_t *pts = json_object_get(json_object_get(j, "pre_tokenizer"), "pretokenizers");
        const char *nm = cs[i].name;
        char *text = NULL;
        if (!strcmp(nm, "missing_vocab"))
            json_object_del(model, "vocab");
        else if (!strcmp(nm, "merge_unknown"))
            json_array_append_new(json_object_get(model, "merges"), json_string("zzqq \xC4\xA0"));
        else if (!strcmp(nm, "merge_bad_form"))
            json_array_append_new(json_object_get(model, "merges"), json_string("a b c"));
        else if (!strcmp(nm, "unknown_pretok"))
            json_object_set_new(json_array_get(pts, 1), "type", json_string("Whitespacey"));
        else if (!strcmp(nm, "normalizer"))
            json_object_set_new(j, "normalizer", json_pack("{s:s}", "type", "NFKC"));
        else if (!strcmp(nm, "model_type"))
            json_object_set_new(model, "type", json_string("WordPiece"));
        else if (!strcmp(nm, "decoder"))
            json_object_set_new(j, "decoder", json_pack("{s:s}", "type", "Metaspace"));
        else if (!strcmp(nm, "split_regex"))
            json_object_set_new(json_object_get(json_array_get(pts, 3), "pattern"), "Regex",
                                json_string("[0-9"));
        else if (!strcmp(nm, "added_id"))
            json_object_set_new(json_array_get(json_object_get(j, "added_tokens"), 0), "id",
                                json_integer(77));
        else if (!strcmp(nm, "behavior"))
            json_object_set_new(json_array_get(pts, 0), "behavior", json_string("Sometimes"));
        else if (!strcmp(nm, "vocab_id"))
            json_object_set_new(json_object_get(model, "vocab"), "Ġx", json_string("3"));
        else if (!strcmp(nm, "post_processor"))
            json_object_set_new(j, "post_processor", json_pack("{s:s}", "type", "BertProcessing"));
        if (!strcmp(nm, "bad_json"))
            text = strdup("{\"model\": {\"vocab\": {\"a\": 1,}}");
        else
            text = json_dumps(j, 0);
        json_decref(j);
        const char *path = tmp;
        if (!strcmp(nm, "missing_file"))
            path = "tests/fixtures/no-such-tokenizer.json";
        else
            check_write_file(tmp, text, strlen(text));
        free(text);
        fmb_tok *t = NULL;
        fmb_err err = {{0}};
        fmb_status s = fmb_tok_load(path, &t, &err);
        char name[64];
        snprintf(name, sizeof name, "tok_malformed_%s", nm);
        check(s == cs[i].want && !t && strstr(err.msg, cs[i].field) && strstr(err.msg, path), name,
              "status %d, message '%s' (want field '%s')", s, err.msg, cs[i].field);
        fmb_tok_free(t);
    }
    remove(tmp);
    json_decref(base);
}

int main(void)
{
    fmb_tok *tok = NULL;
    fmb_err err = {{0}};
    if (!check(!fmb_tok_load(TOK_JSON, &tok, &err), "tok_load", "%s", err.msg))
        return check_exit();
    check(fmb_tok_vocab_size(tok) == 30084, "tok_vocab_size", "%d", fmb_tok_vocab_size(tok));
    test_cases(tok);
    test_special(tok);
    test_offsets(tok);
    test_lossy(tok);
    test_streaming(tok);
    test_random_bytes(tok);
    test_pathological(tok);
    test_threads(tok);
    fmb_tok_free(tok);
    test_tiny();
    test_malformed();
    return check_exit();
}
