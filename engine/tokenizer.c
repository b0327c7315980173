/*
 * tokenizer: an exact C port of Hugging Face tokenizers for byte-level BPE tokenizer.json files
 * (the Falcon pipeline). See tokenizer.h for the contract and docs/NUMERICS.md (Tokenizer) for
 * the semantics reproduced here.
 *
 * Layout of an encode call (all state is per call, in enc_ctx; the loaded fmb_tok is read-only):
 *   1. Invalid UTF-8 is replaced by U+FFFD exactly as Rust's String::from_utf8_lossy does.
 *   2. Added tokens are cut out, leftmost-longest (first the normalized:false tokens, then in
 *      what is left the normalized:true ones, as HF's two tries do).
 *   3. Each remaining segment runs depth-first through the pre-tokenizer stages: a stage turns a
 *      piece into match/gap events, a small state machine folds them by the split behaviour,
 *      and every finished piece goes straight down to the next stage. So no stage keeps a list
 *      of pieces and memory stays linear in the longest piece, not in the piece count.
 *   4. The last stage hands each piece to BPE (pair-rank cache for short words, a binary heap
 *      for long ones: O(n log n) on a 10 MB piece).
 *
 * Pieces are always byte ranges of the lossy text. After the ByteLevel stage a piece's chars are
 * its single bytes seen through the GPT-2 byte map ("byte domain"): predicates there are
 * 256-entry tables, and a Split regex runs on a mapped copy of the piece whose match offsets
 * are mapped back.
 *
 * Character classes come from PCRE2 (UTF+UCP) corrected by tok_unicode.h, which records where
 * HF's Unicode tables (Oniguruma, Rust std, unicode_categories) differ from PCRE2's.
 *
 * Supported: model BPE (vocab, merges "a b" or ["a","b"], unk_token, fuse_unk, ignore_merges);
 * added tokens with special/lstrip/rstrip/single_word/normalized; normalizer null; pre-tokenizers
 * Sequence, Punctuation, ByteLevel (add_prefix_space false), Digits, Split (Regex or String, all
 * behaviours, invert); post-processor null, ByteLevel or TemplateProcessing (single); decoder
 * ByteLevel. Anything else is rejected at load with the field named.
 *
 * Known limit: a Split Regex from the file runs on PCRE2 (Perl syntax, Unicode 14), not on
 * Oniguruma (Ruby syntax, the newer Unicode of HF's build). Ordinary patterns agree (Falcon's
 * "[0-9][0-9][0-9]" exactly); Ruby-only escapes (\h = hex digit) and \s, \w, \d, \p{..} on
 * code points that the two Unicode versions classify differently may not. The ByteLevel regex
 * itself is built here with corrected classes and is exact.
 */
#include "engine/tokenizer.h"

#include "engine/tok_unicode.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------------------------------------
// Small helpers

enum { MAX_STAGES = 16 };

/* Split behaviours (HF SplitDelimiterBehavior). */
enum { B_REMOVED, B_ISOLATED, B_MERGED_PREV, B_MERGED_NEXT, B_CONTIGUOUS };
enum { ST_PUNCT, ST_BYTELEVEL, ST_DIGITS, ST_SPLIT };

static uint32_t hash_bytes(const char *s, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n)
        c *= 2;
    return c;
}

/* GPT-2 byte map: byte -> code point. Bytes 0x21-0x7E, 0xA1-0xAC, 0xAE-0xFF map to themselves,
 * the other 68 to U+0100.. in increasing order. */
static uint32_t byte_to_cp(unsigned b)
{
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE))
        return b;
    unsigned n = 0;
    for (unsigned x = 0; x < b; x++)
        if (!((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE)))
            n++;
    return 0x100 + n;
}

static size_t utf8_put(uint32_t c, char *b)
{
    if (c < 0x80) {
        b[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        b[0] = (char)(0xC0 | (c >> 6));
        b[1] = (char)(0x80 | (c & 63));
        return 2;
    }
    if (c < 0x10000) {
        b[0] = (char)(0xE0 | (c >> 12));
        b[1] = (char)(0x80 | ((c >> 6) & 63));
        b[2] = (char)(0x80 | (c & 63));
        return 3;
    }
    b[0] = (char)(0xF0 | (c >> 18));
    b[1] = (char)(0x80 | ((c >> 12) & 63));
    b[2] = (char)(0x80 | ((c >> 6) & 63));
    b[3] = (char)(0x80 | (c & 63));
    return 4;
}

/* Length of the UTF-8 char starting at s[0] in valid UTF-8. */
static size_t utf8_len(unsigned char c)
{
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

/* Decodes one char of valid UTF-8. */
static uint32_t utf8_get(const unsigned char *s, size_t *n)
{
    unsigned c = s[0];
    if (c < 0x80) {
        *n = 1;
        return c;
    }
    if (c < 0xE0) {
        *n = 2;
        return ((c & 0x1Fu) << 6) | (s[1] & 0x3Fu);
    }
    if (c < 0xF0) {
        *n = 3;
        return ((c & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3Fu);
    }
    *n = 4;
    return ((c & 0x07u) << 18) | ((s[1] & 0x3Fu) << 12) | ((s[2] & 0x3Fu) << 6) | (s[3] & 0x3Fu);
}

/* Length of a valid UTF-8 sequence at s[0..n), 0 if it is complete-invalid; for an invalid or
 * truncated one, *bad gets the length of its maximal valid prefix (at least 1), the unit that
 * Rust's from_utf8_lossy replaces with one U+FFFD. */
static size_t utf8_check(const unsigned char *s, size_t n, size_t *bad)
{
    unsigned c = s[0];
    size_t need;
    unsigned lo = 0x80, hi = 0xBF;
    *bad = 1;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        need = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    for (size_t i = 1; i < need; i++) {
        if (i >= n)
            return 0;
        unsigned x = s[i];
        if (x < (i == 1 ? lo : 0x80) || x > (i == 1 ? hi : 0xBF))
            return 0;
        *bad = i + 1;
    }
    return need;
}

size_t fmb_tok_utf8_complete(const char *s, size_t len)
{
    /* The last char may start at most 3 bytes back. */
    size_t from = len > 3 ? len - 3 : 0;
    for (size_t i = len; i-- > from;) {
        unsigned c = (unsigned char)s[i];
        if (c < 0x80)
            return len;
        if (c >= 0xC0) {
            size_t bad;
            size_t ok = utf8_check((const unsigned char *)s + i, len - i, &bad);
            /* Truncated but valid so far: hold it back. */
            if (!ok && bad == len - i && utf8_len((unsigned char)c) > len - i && c >= 0xC2 &&
                c <= 0xF4)
                return i;
            return len;
        }
    }
    return len;
}

/* One replacement made by the lossy decode: out[at..at+3) is U+FFFD for in[in_at..+in_n). */
typedef struct {
    size_t at, in_at, in_n;
} repl;

/* Lossy UTF-8 (Rust from_utf8_lossy). If s is valid, *out = NULL. Else *out is a malloc'ed copy
 * and, if reps != NULL, the replacements are appended (malloc'ed array). */
static fmb_status lossy_utf8(
    const char *s, size_t n, char **out, size_t *out_n, repl **reps, size_t *n_reps, fmb_err *err)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, bad;
    *out = NULL;
    *out_n = n;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = utf8_check(u + i, n - i, &bad);
        if (!k)
            break;
        i += k;
    }
    if (i == n)
        return FMB_OK;
    /* Worst case: every byte becomes 3 bytes. */
    if (n > (SIZE_MAX - 1) / 3)
        return fmb_fail(err, FMB_ENOMEM, "tokenizer: input too large");
    char *o = malloc(3 * n + 1);
    if (!o)
        return fmb_fail(err, FMB_ENOMEM, "tokenizer: out of memory (%zu bytes)", 3 * n + 1);
    size_t cap_r = 0, nr = 0;
    repl *r = NULL;
    memcpy(o, s, i);
    size_t w = i;
    while (i < n) {
        size_t k = u[i] < 0x80 ? 1 : utf8_check(u + i, n - i, &bad);
        if (k) {
            memcpy(o + w, s + i, k);
            w += k;
            i += k;
            continue;
        }
        if (reps) {
            if (nr == cap_r) {
                cap_r = cap_r ? 2 * cap_r : 64;
                repl *nrp = realloc(r, cap_r * sizeof *r);
                if (!nrp) {
                    free(r);
                    free(o);
                    return fmb_fail(err, FMB_ENOMEM, "tokenizer: out of memory");
                }
                r = nrp;
            }
            r[nr].at = w;
            r[nr].in_at = i;
            r[nr].in_n = bad;
            nr++;
        }
        memcpy(o + w, "\xEF\xBF\xBD", 3);
        w += 3;
        i += bad;
    }
    o[w] = 0;
    *out = o;
    *out_n = w;
    if (reps) {
        *reps = r;
        *n_reps = nr;
    }
    return FMB_OK;
}

// ---------------------------------------------------------------------------------------------
// Hash tables: string -> id (vocab, added tokens) and (id, id) -> (rank, new id) (merges)

typedef struct {
    const char *s; /* borrowed from the tokenizer's arena */
    uint32_t len, hash;
    int32_t id;
} str_ent;

typedef struct {
    str_ent *ents; /* [n] */
    size_t n, cap_ents;
    int32_t *slots; /* [mask + 1], index into ents or -1 */
    size_t mask;
} str_map;

static void str_map_init(str_map *m, size_t n_expected)
{
    memset(m, 0, sizeof *m);
    size_t cap = pow2_at_least(n_expected * 2 + 16);
    m->slots = fmb_xmalloc(cap * sizeof *m->slots);
    memset(m->slots, 0xFF, cap * sizeof *m->slots);
    m->mask = cap - 1;
    m->cap_ents = n_expected + 16;
    m->ents = fmb_xmalloc(m->cap_ents * sizeof *m->ents);
}

static void str_map_free(str_map *m)
{
    free(m->ents);
    free(m->slots);
    memset(m, 0, sizeof *m);
}

static int32_t str_map_get(const str_map *m, const char *s, size_t len)
{
    if (!m->slots)
        return -1;
    uint32_t h = hash_bytes(s, len);
    for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
        int32_t e = m->slots[i];
        if (e < 0)
            return -1;
        const str_ent *x = &m->ents[e];
        if (x->hash == h && x->len == len && !memcmp(x->s, s, len))
            return x->id;
    }
}

/* Inserts or overwrites (s is borrowed and must outlive the map). */
static void str_map_put(str_map *m, const char *s, size_t len, int32_t id)
{
    uint32_t h = hash_bytes(s, len);
    if ((m->n + 1) * 2 > m->mask + 1) {
        size_t cap = (m->mask + 1) * 2;
        free(m->slots);
        m->slots = fmb_xmalloc(cap * sizeof *m->slots);
        memset(m->slots, 0xFF, cap * sizeof *m->slots);
        m->mask = cap - 1;
        for (size_t k = 0; k < m->n; k++) {
            size_t i = m->ents[k].hash & m->mask;
            while (m->slots[i] >= 0)
                i = (i + 1) & m->mask;
            m->slots[i] = (int32_t)k;
        }
    }
    size_t i = h & m->mask;
    for (;; i = (i + 1) & m->mask) {
        int32_t e = m->slots[i];
        if (e < 0)
            break;
        str_ent *x = &m->ents[e];
        if (x->hash == h && x->len == len && !memcmp(x->s, s, len)) {
            x->id = id;
            return;
        }
    }
    if (m->n == m->cap_ents) {
        m->cap_ents *= 2;
        m->ents = fmb_xrealloc(m->ents, m->cap_ents, sizeof *m->ents);
    }
    m->ents[m->n] = (str_ent){s, (uint32_t)len, h, id};
    m->slots[i] = (int32_t)m->n++;
}

typedef struct {
    uint64_t key; /* (a << 32) | b */
    uint32_t rank;
    int32_t new_id; /* -1: empty slot */
} merge_ent;

static uint64_t pair_key(int32_t a, int32_t b)
{
    return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
}

static size_t pair_slot(uint64_t k, size_t mask)
{
    k *= 0x9E3779B97F4A7C15ull;
    return (size_t)(k >> 29) & mask;
}

// ---------------------------------------------------------------------------------------------
// The loaded tokenizer

typedef struct {
    char *content; /* in the arena */
    size_t len;
    int32_t id;
    uint8_t special, lstrip, rstrip, single_word, normalized;
} added_tok;

typedef struct {
    int kind;      /* ST_* */
    int behavior;  /* B_* */
    int invert;    /* Split: swap matches and gaps */
    int byte_dom;  /* runs after ByteLevel: chars are bytes seen through the byte map */
    int use_regex; /* ByteLevel */
    pcre2_code *re;
    uint8_t pred[256]; /* byte domain predicate (Punctuation, Digits) */
} stage;

struct fmb_tok {
    char *path;
    char *arena; /* all token strings, NUL-separated */
    size_t arena_n;
    int32_t n_ids;    /* max id + 1 */
    const char **str; /* [n_ids] token string as in the file (added content wins), or NULL */
    uint32_t *str_len;
    char *bytes;         /* decoded bytes of every id, concatenated */
    size_t *bytes_off;   /* [n_ids + 1] */
    uint8_t *is_special; /* [n_ids] */
    uint8_t *is_hole;    /* [n_ids] no token has this id */

    str_map vocab; /* model vocab */
    str_map added; /* added token content -> id */
    merge_ent *merges;
    size_t merges_mask;
    int32_t byte_id[256]; /* vocab id of the byte-level char of each byte, or -1 */
    int32_t unk_id;       /* -1: none */
    int fuse_unk, ignore_merges;
    size_t max_tok_len; /* ignore_merges: longest vocab token in bytes (capped at 1024) */

    added_tok *atoks; /* in HF's matching order: specials first, then the others */
    size_t n_atoks;
    /* Per pass (0: normalized:false, 1: normalized:true), per first byte: indices into atoks,
     * longest first, -1 terminated. */
    int32_t *first[2][256];
    pcre2_code *re_word;  /* Rust regex \w, for single_word */
    pcre2_code *re_space; /* Rust \s, for lstrip/rstrip */
    int has_pass[2];      /* some token is matched in this pass */

    stage stages[MAX_STAGES];
    size_t n_stages;

    int32_t *tpl_pre, *tpl_post; /* TemplateProcessing single: ids before/after the sequence */
    size_t n_tpl_pre, n_tpl_post;
};

static void stage_free(stage *s)
{
    if (s->re)
        pcre2_code_free(s->re);
    s->re = NULL;
}

void fmb_tok_free(fmb_tok *t)
{
    if (!t)
        return;
    free(t->path);
    free(t->arena);
    free(t->str);
    free(t->str_len);
    free(t->bytes);
    free(t->bytes_off);
    free(t->is_special);
    free(t->is_hole);
    str_map_free(&t->vocab);
    str_map_free(&t->added);
    free(t->merges);
    free(t->atoks);
    for (int p = 0; p < 2; p++)
        for (int b = 0; b < 256; b++)
            free(t->first[p][b]);
    if (t->re_word)
        pcre2_code_free(t->re_word);
    if (t->re_space)
        pcre2_code_free(t->re_space);
    for (size_t i = 0; i < t->n_stages; i++)
        stage_free(&t->stages[i]);
    free(t->tpl_pre);
    free(t->tpl_post);
    free(t);
}

int32_t fmb_tok_vocab_size(const fmb_tok *t)
{
    return t->n_ids;
}

int32_t fmb_tok_token_id(const fmb_tok *t, const char *token)
{
    size_t n = strlen(token);
    int32_t id = str_map_get(&t->added, token, n);
    return id >= 0 ? id : str_map_get(&t->vocab, token, n);
}

const char *fmb_tok_token_bytes(const fmb_tok *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_ids || t->is_hole[id]) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = t->bytes_off[id + 1] - t->bytes_off[id];
    return t->bytes + t->bytes_off[id];
}

int fmb_tok_is_special(const fmb_tok *t, int32_t id)
{
    return id >= 0 && id < t->n_ids && t->is_special[id];
}

void fmb_ids_free(fmb_ids *v)
{
    if (!v)
        return;
    free(v->ids);
    free(v->offsets);
    v->ids = NULL;
    v->offsets = NULL;
    v->n = v->cap = 0;
}

void fmb_ids_push(fmb_ids *v, int32_t id, size_t offset)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 256;
        v->ids = fmb_xrealloc(v->ids, cap, sizeof *v->ids);
        if (v->want_offsets)
            v->offsets = fmb_xrealloc(v->offsets, cap, sizeof *v->offsets);
        v->cap = cap;
    }
    v->ids[v->n] = id;
    if (v->want_offsets)
        v->offsets[v->n] = offset;
    v->n++;
}

// ---------------------------------------------------------------------------------------------
// Loading

typedef struct {
    const char *path;
    fmb_err *err;
} load_ctx;

static fmb_status bad(const load_ctx *lc, fmb_status code, const char *fmt, ...)
    FMB_PRINTF_LIKE(3, 4);
static fmb_status bad(const load_ctx *lc, fmb_status code, const char *fmt, ...)
{
    char msg[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return fmb_fail(lc->err, code, "%s: %s", lc->path, msg);
}

/* Compiles pattern with UTF|UCP (+extra) and JIT; names field in errors. */
static fmb_status compile_re(const load_ctx *lc,
                             const char *field,
                             const char *pat,
                             size_t n,
                             uint32_t extra,
                             pcre2_code **out)
{
    int ec;
    PCRE2_SIZE eo;
    /* PCRE2_LITERAL admits no UCP (nothing to classify in a literal). */
    uint32_t opts = PCRE2_UTF | extra | ((extra & PCRE2_LITERAL) ? 0 : PCRE2_UCP);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, n, opts, &ec, &eo, NULL);
    if (!re) {
        PCRE2_UCHAR buf[256];
        pcre2_get_error_message(ec, buf, sizeof buf);
        return bad(lc, FMB_EINVAL, "%s: regex does not compile at offset %zu: %s", field,
                   (size_t)eo, (const char *)buf);
    }
    /* No JIT (unsupported platform) is fine: the interpreter gives the same matches. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    *out = re;
    return FMB_OK;
}

/* A PCRE2 class for HF's version of a Unicode class: (?:(?![REM])[BASE ADD]). neg builds the
 * complement: any char not in the class. */
static void class_re(char *buf, size_t cap, const char *base, const char *add, const char *rem)
{
    if (*rem)
        snprintf(buf, cap, "(?:(?![%s])[%s%s])", rem, base, add);
    else
        snprintf(buf, cap, "[%s%s]", base, add);
}

#define ASCII_PUNCT "\\x{21}-\\x{2F}\\x{3A}-\\x{40}\\x{5B}-\\x{60}\\x{7B}-\\x{7E}"

static fmb_status get_behavior(const load_ctx *lc, const char *field, json_t *v, int dflt, int *out)
{
    if (!v || json_is_null(v)) {
        *out = dflt;
        return FMB_OK;
    }
    const char *s = json_string_value(v);
    static const char *const names[] = {"Removed", "Isolated", "MergedWithPrevious",
                                        "MergedWithNext", "Contiguous"};
    if (s)
        for (int i = 0; i < 5; i++)
            if (!strcmp(s, names[i])) {
                *out = i;
                return FMB_OK;
            }
    return bad(lc, FMB_EINVAL, "%s: unknown behavior '%s'", field, s ? s : "(not a string)");
}

static int json_flag(json_t *obj, const char *key, int dflt)
{
    json_t *v = json_object_get(obj, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

/* Adds one pre-tokenizer (flattening Sequence). */
static fmb_status
add_pretok(fmb_tok *t, const load_ctx *lc, json_t *pt, const char *field, int *seen_bytelevel)
{
    char f[256], buf[8192];
    fmb_status s;
    if (!json_is_object(pt))
        return bad(lc, FMB_EINVAL, "%s: not an object", field);
    const char *type = json_string_value(json_object_get(pt, "type"));
    if (!type)
        return bad(lc, FMB_EINVAL, "%s.type: missing", field);
    if (!strcmp(type, "Sequence")) {
        json_t *arr = json_object_get(pt, "pretokenizers");
        if (!json_is_array(arr))
            return bad(lc, FMB_EINVAL, "%s.pretokenizers: missing or not an array", field);
        for (size_t i = 0; i < json_array_size(arr); i++) {
            snprintf(f, sizeof f, "%s.pretokenizers[%zu]", field, i);
            if ((s = add_pretok(t, lc, json_array_get(arr, i), f, seen_bytelevel)))
                return s;
        }
        return FMB_OK;
    }
    if (t->n_stages == MAX_STAGES)
        return bad(lc, FMB_EUNSUP, "%s: more than %d pre-tokenizer stages", field, MAX_STAGES);
    stage *st = &t->stages[t->n_stages];
    memset(st, 0, sizeof *st);
    st->byte_dom = *seen_bytelevel;
    if (!strcmp(type, "Punctuation")) {
        st->kind = ST_PUNCT;
        snprintf(f, sizeof f, "%s.behavior", field);
        if ((s = get_behavior(lc, f, json_object_get(pt, "behavior"), B_ISOLATED, &st->behavior)))
            return s;
        char cls[2048];
        class_re(cls, sizeof cls, "\\p{P}" ASCII_PUNCT, FMB_TOK_UNI_P_ADD, FMB_TOK_UNI_P_REM);
        snprintf(buf, sizeof buf, "%s", cls);
    } else if (!strcmp(type, "Digits")) {
        st->kind = ST_DIGITS;
        st->behavior = json_flag(pt, "individual_digits", 0) ? B_ISOLATED : B_CONTIGUOUS;
        char cls[2048];
        class_re(cls, sizeof cls, "\\p{N}", FMB_TOK_UNI_D_ADD, FMB_TOK_UNI_D_REM);
        snprintf(buf, sizeof buf, "%s", cls);
    } else if (!strcmp(type, "ByteLevel")) {
        if (*seen_bytelevel)
            return bad(lc, FMB_EUNSUP, "%s: a second ByteLevel stage is not supported", field);
        st->kind = ST_BYTELEVEL;
        st->behavior = B_ISOLATED;
        st->byte_dom = 0;
        *seen_bytelevel = 1;
        if (json_flag(pt, "add_prefix_space", 0))
            return bad(lc, FMB_EUNSUP, "%s.add_prefix_space: true is not supported", field);
        st->use_regex = json_flag(pt, "use_regex", 1);
        /* HF's ByteLevel regex (GPT-2's, run by Oniguruma), with its classes corrected to
         * Oniguruma's Unicode: L, N, whitespace WS (listed in full) and O, the complement of
         * all three. All four are plain classes when L and N only gain code points, so the
         * repeats need no JIT stack per char (a group under + would, and a 10 MB run of
         * punctuation would exhaust it). */
        char L[1024], N[1024], WS[256], O[4096];
        class_re(L, sizeof L, "\\p{L}", FMB_TOK_UNI_L_ADD, FMB_TOK_UNI_L_REM);
        class_re(N, sizeof N, "\\p{N}", FMB_TOK_UNI_N_ADD, FMB_TOK_UNI_N_REM);
        snprintf(WS, sizeof WS, "[%s]", FMB_TOK_UNI_S_ALL);
        if (*FMB_TOK_UNI_L_REM || *FMB_TOK_UNI_N_REM)
            snprintf(O, sizeof O, "(?:(?!%s|%s|%s)[\\s\\S])", WS, L, N);
        else
            snprintf(O, sizeof O, "[^%s\\p{L}\\p{N}%s%s]", FMB_TOK_UNI_S_ALL, FMB_TOK_UNI_L_ADD,
                     FMB_TOK_UNI_N_ADD);
        snprintf(buf, sizeof buf, "'s|'t|'re|'ve|'m|'ll|'d| ?%s+| ?%s+| ?%s+|%s+(?=%s|\\z)|%s+", L,
                 N, O, WS, WS, WS);
        if (!st->use_regex)
            buf[0] = 0;
    } else if (!strcmp(type, "Split")) {
        st->kind = ST_SPLIT;
        snprintf(f, sizeof f, "%s.behavior", field);
        if ((s = get_behavior(lc, f, json_object_get(pt, "behavior"), -1, &st->behavior)))
            return s;
        if (st->behavior < 0)
            return bad(lc, FMB_EINVAL, "%s.behavior: missing", field);
        st->invert = json_flag(pt, "invert", 0);
        json_t *pat = json_object_get(pt, "pattern");
        json_t *rx = json_object_get(pat, "Regex"), *str = json_object_get(pat, "String");
        snprintf(f, sizeof f, "%s.pattern", field);
        if (json_is_string(rx)) {
            /* Oniguruma's Ruby syntax: ^ and $ are line anchors. */
            if ((s = compile_re(lc, f, json_string_value(rx), json_string_length(rx),
                                PCRE2_MULTILINE, &st->re)))
                return s;
        } else if (json_is_string(str)) {
            if ((s = compile_re(lc, f, json_string_value(str), json_string_length(str),
                                PCRE2_LITERAL, &st->re)))
                return s;
        } else
            return bad(lc, FMB_EINVAL, "%s: needs a Regex or String", f);
        t->n_stages++;
        return FMB_OK;
    } else {
        return bad(lc, FMB_EUNSUP, "%s.type: unsupported pre-tokenizer '%s'", field, type);
    }
    if (buf[0] && (s = compile_re(lc, field, buf, PCRE2_ZERO_TERMINATED, 0, &st->re)))
        return s;
    /* Byte domain predicates: the class applied to each byte's mapped char. */
    if (st->byte_dom && (st->kind == ST_PUNCT || st->kind == ST_DIGITS)) {
        pcre2_match_data *md = pcre2_match_data_create(2, NULL);
        FMB_ASSERT(md);
        for (unsigned b = 0; b < 256; b++) {
            char ch[4];
            size_t n = utf8_put(byte_to_cp(b), ch);
            st->pred[b] = pcre2_match(st->re, (PCRE2_SPTR)ch, n, 0, PCRE2_ANCHORED, md, NULL) > 0 &&
                          pcre2_get_ovector_pointer(md)[1] == n;
        }
        pcre2_match_data_free(md);
    }
    t->n_stages++;
    return FMB_OK;
}

static fmb_status load_model(fmb_tok *t, const load_ctx *lc, json_t *model)
{
    if (!json_is_object(model))
        return bad(lc, FMB_EINVAL, "model: missing or not an object");
    const char *type = json_string_value(json_object_get(model, "type"));
    if (type && strcmp(type, "BPE"))
        return bad(lc, FMB_EUNSUP, "model.type: unsupported model '%s' (only BPE)", type);
    json_t *v;
    if ((v = json_object_get(model, "dropout")) && !json_is_null(v) &&
        !(json_is_number(v) && json_number_value(v) == 0.0))
        return bad(lc, FMB_EUNSUP, "model.dropout: BPE dropout is not supported");
    const char *fields[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++)
        if ((v = json_object_get(model, fields[i])) && !json_is_null(v) &&
            !(json_is_string(v) && !json_string_length(v)))
            return bad(lc, FMB_EUNSUP, "model.%s: not supported (byte-level BPE only)", fields[i]);
    if (json_flag(model, "byte_fallback", 0))
        return bad(lc, FMB_EUNSUP, "model.byte_fallback: true is not supported");
    t->fuse_unk = json_flag(model, "fuse_unk", 0);
    t->ignore_merges = json_flag(model, "ignore_merges", 0);

    json_t *vocab = json_object_get(model, "vocab");
    if (!json_is_object(vocab))
        return bad(lc, FMB_EINVAL, "model.vocab: missing or not an object");
    json_t *merges = json_object_get(model, "merges");
    if (merges && !json_is_null(merges) && !json_is_array(merges))
        return bad(lc, FMB_EINVAL, "model.merges: not an array");
    return FMB_OK;
}

/* Token strings go into one arena: counts bytes first. */
static size_t count_strings(json_t *root)
{
    size_t n = 0;
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(json_object_get(root, "model"), "vocab"), k, v) n +=
        strlen(k) + 1;
    json_t *a = json_object_get(root, "added_tokens");
    for (size_t i = 0; i < json_array_size(a); i++)
        n += json_string_length(json_object_get(json_array_get(a, i), "content")) + 1;
    return n;
}

static char *arena_put(fmb_tok *t, const char *s, size_t n)
{
    char *p = t->arena + t->arena_n;
    memcpy(p, s, n);
    p[n] = 0;
    t->arena_n += n + 1;
    return p;
}

static fmb_status parse_merge(const load_ctx *lc,
                              json_t *m,
                              size_t i,
                              const char **a,
                              size_t *an,
                              const char **b,
                              size_t *bn,
                              int *skip)
{
    *skip = 0;
    if (json_is_string(m)) {
        const char *s = json_string_value(m);
        size_t n = json_string_length(m);
        if (n >= 8 && !memcmp(s, "#version", 8)) {
            *skip = 1;
            return FMB_OK;
        }
        const char *sp = memchr(s, ' ', n);
        if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp + 1 - s)))
            return bad(lc, FMB_EINVAL, "model.merges[%zu]: '%s' is not two tokens split by a space",
                       i, s);
        *a = s;
        *an = (size_t)(sp - s);
        *b = sp + 1;
        *bn = n - *an - 1;
        return FMB_OK;
    }
    if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
        json_is_string(json_array_get(m, 1))) {
        *a = json_string_value(json_array_get(m, 0));
        *an = json_string_length(json_array_get(m, 0));
        *b = json_string_value(json_array_get(m, 1));
        *bn = json_string_length(json_array_get(m, 1));
        return FMB_OK;
    }
    return bad(lc, FMB_EINVAL, "model.merges[%zu]: neither \"a b\" nor [\"a\", \"b\"]", i);
}

static fmb_status load_merges(fmb_tok *t, const load_ctx *lc, json_t *merges)
{
    size_t n = json_array_size(merges);
    size_t cap = pow2_at_least(2 * n + 16);
    t->merges = malloc(cap * sizeof *t->merges);
    if (!t->merges)
        return bad(lc, FMB_ENOMEM, "model.merges: out of memory");
    for (size_t i = 0; i < cap; i++)
        t->merges[i].new_id = -1;
    t->merges_mask = cap - 1;
    char *cat = NULL;
    size_t cat_cap = 0;
    uint32_t rank = 0;
    fmb_status s = FMB_OK;
    for (size_t i = 0; i < n; i++) {
        const char *a = NULL, *b = NULL;
        size_t an = 0, bn = 0;
        int skip;
        if ((s = parse_merge(lc, json_array_get(merges, i), i, &a, &an, &b, &bn, &skip)))
            break;
        if (skip)
            continue;
        int32_t ia = str_map_get(&t->vocab, a, an), ib = str_map_get(&t->vocab, b, bn);
        if (ia < 0 || ib < 0) {
            s = bad(lc, FMB_EINVAL, "model.merges[%zu]: token '%.*s' is not in model.vocab", i,
                    (int)(ia < 0 ? an : bn), ia < 0 ? a : b);
            break;
        }
        if (an + bn + 1 > cat_cap) {
            cat_cap = 2 * (an + bn + 1);
            cat = fmb_xrealloc(cat, cat_cap, 1);
        }
        memcpy(cat, a, an);
        memcpy(cat + an, b, bn);
        int32_t nid = str_map_get(&t->vocab, cat, an + bn);
        if (nid < 0) {
            s = bad(lc, FMB_EINVAL, "model.merges[%zu]: merged token '%.*s' is not in model.vocab",
                    i, (int)(an + bn), cat);
            break;
        }
        /* HF collects the merges into a map: a repeated pair keeps its last rank. */
        uint64_t k = pair_key(ia, ib);
        size_t j = pair_slot(k, t->merges_mask);
        while (t->merges[j].new_id >= 0 && t->merges[j].key != k)
            j = (j + 1) & t->merges_mask;
        t->merges[j] = (merge_ent){k, rank, nid};
        rank++;
    }
    free(cat);
    return s;
}

static fmb_status load_added(fmb_tok *t, const load_ctx *lc, json_t *arr, size_t model_n)
{
    if (arr && !json_is_null(arr) && !json_is_array(arr))
        return bad(lc, FMB_EINVAL, "added_tokens: not an array");
    size_t n = json_array_size(arr);
    t->atoks = fmb_xcalloc(n + 1, sizeof *t->atoks);
    str_map_init(&t->added, n);
    /* HF ignores the ids in the file and numbers the tokens itself (vocab id if the content is
     * in the model, else the next free id). A file that disagrees is rejected, not guessed. */
    int64_t max_added = -1;
    added_tok *tmp = fmb_xcalloc(n + 1, sizeof *tmp);
    size_t nt = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(arr, i);
        json_t *c = json_object_get(o, "content"), *idv = json_object_get(o, "id");
        if (!json_is_string(c) || !json_is_integer(idv)) {
            free(tmp);
            return bad(lc, FMB_EINVAL, "added_tokens[%zu]: needs a string content and an id", i);
        }
        size_t len = json_string_length(c);
        const char *cs = json_string_value(c);
        if (!len)
            continue; /* HF ignores empty tokens */
        if (str_map_get(&t->added, cs, len) >= 0) {
            free(tmp);
            return bad(lc, FMB_EUNSUP, "added_tokens[%zu].content: '%s' is listed twice", i, cs);
        }
        int64_t want = json_integer_value(idv);
        int32_t vid = str_map_get(&t->vocab, cs, len);
        int64_t hf;
        if (vid >= 0)
            hf = vid;
        else if (max_added < 0)
            hf = (int64_t)model_n;
        else
            hf = (max_added >= (int64_t)model_n || model_n == 0) ? max_added + 1 : (int64_t)model_n;
        if (want != hf) {
            free(tmp);
            return bad(lc, FMB_EUNSUP,
                       "added_tokens[%zu].id: %lld, but HF tokenizers would number '%s' %lld", i,
                       (long long)want, cs, (long long)hf);
        }
        if (hf > max_added)
            max_added = hf;
        added_tok *a = &tmp[nt++];
        a->content = arena_put(t, cs, len);
        a->len = len;
        a->id = (int32_t)hf;
        a->special = (uint8_t)json_flag(o, "special", 0);
        a->lstrip = (uint8_t)json_flag(o, "lstrip", 0);
        a->rstrip = (uint8_t)json_flag(o, "rstrip", 0);
        a->single_word = (uint8_t)json_flag(o, "single_word", 0);
        a->normalized = (uint8_t)json_flag(o, "normalized", !a->special);
        str_map_put(&t->added, a->content, len, a->id);
    }
    /* HF's tries list the special tokens first, then the others (order only matters for
     * identical contents, which are rejected above, but keep it). */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < nt; i++)
            if (tmp[i].special == (pass == 0))
                t->atoks[t->n_atoks++] = tmp[i];
    free(tmp);
    /* First-byte buckets, longest first: the first hit at a position is the longest. */
    for (int p = 0; p < 2; p++) {
        for (int b = 0; b < 256; b++) {
            size_t cnt = 0;
            for (size_t i = 0; i < t->n_atoks; i++)
                if (t->atoks[i].normalized == p && (unsigned char)t->atoks[i].content[0] == b)
                    cnt++;
            if (!cnt)
                continue;
            int32_t *l = fmb_xmalloc((cnt + 1) * sizeof *l);
            size_t k = 0;
            for (size_t i = 0; i < t->n_atoks; i++)
                if (t->atoks[i].normalized == p && (unsigned char)t->atoks[i].content[0] == b)
                    l[k++] = (int32_t)i;
            for (size_t x = 1; x < k; x++) /* insertion sort by length, stable */
                for (size_t y = x; y > 0 && t->atoks[l[y]].len > t->atoks[l[y - 1]].len; y--) {
                    int32_t tv = l[y];
                    l[y] = l[y - 1];
                    l[y - 1] = tv;
                }
            l[k] = -1;
            t->first[p][b] = l;
            t->has_pass[p] = 1;
        }
    }
    return FMB_OK;
}

static fmb_status load_template(fmb_tok *t, const load_ctx *lc, json_t *pp)
{
    const char *type = json_string_value(json_object_get(pp, "type"));
    if (!type)
        return bad(lc, FMB_EINVAL, "post_processor.type: missing");
    if (!strcmp(type, "ByteLevel"))
        return FMB_OK; /* only moves offsets (trim_offsets); ids are unchanged */
    if (strcmp(type, "TemplateProcessing"))
        return bad(lc, FMB_EUNSUP, "post_processor.type: unsupported post-processor '%s'", type);
    json_t *single = json_object_get(pp, "single"), *sp = json_object_get(pp, "special_tokens");
    if (!json_is_array(single))
        return bad(lc, FMB_EINVAL, "post_processor.single: missing or not an array");
    int seen_a = 0;
    size_t n = json_array_size(single);
    t->tpl_pre = fmb_xcalloc(64 + 1, sizeof(int32_t));
    t->tpl_post = fmb_xcalloc(64 + 1, sizeof(int32_t));
    for (size_t i = 0; i < n; i++) {
        json_t *it = json_array_get(single, i);
        json_t *seq = json_object_get(it, "Sequence"), *spt = json_object_get(it, "SpecialToken");
        if (seq) {
            const char *id = json_string_value(json_object_get(seq, "id"));
            if (!id || strcmp(id, "A") || seen_a)
                return bad(lc, FMB_EINVAL, "post_processor.single[%zu]: expected one Sequence A",
                           i);
            seen_a = 1;
        } else if (spt) {
            const char *name = json_string_value(json_object_get(spt, "id"));
            json_t *ids = json_object_get(json_object_get(sp, name ? name : ""), "ids");
            if (!name || !json_is_array(ids))
                return bad(lc, FMB_EINVAL,
                           "post_processor.special_tokens: no ids for '%s' (single[%zu])",
                           name ? name : "?", i);
            for (size_t k = 0; k < json_array_size(ids); k++) {
                json_t *x = json_array_get(ids, k);
                if (!json_is_integer(x))
                    return bad(lc, FMB_EINVAL, "post_processor.special_tokens.%s.ids: bad id",
                               name);
                int32_t *dst = seen_a ? t->tpl_post : t->tpl_pre;
                size_t *dn = seen_a ? &t->n_tpl_post : &t->n_tpl_pre;
                if (*dn == 64)
                    return bad(lc, FMB_EUNSUP, "post_processor: more than 64 template ids");
                dst[(*dn)++] = (int32_t)json_integer_value(x);
            }
        } else
            return bad(lc, FMB_EINVAL, "post_processor.single[%zu]: unknown item", i);
    }
    if (!seen_a)
        return bad(lc, FMB_EINVAL, "post_processor.single: no Sequence A");
    return FMB_OK;
}

/* The decoded bytes of a token: every char through the inverse byte map, or, if one char is not
 * in the map, the token's own UTF-8 (HF ByteLevel decoder). */
static size_t token_to_bytes(const char *s, size_t n, const int16_t *inv, char *dst)
{
    size_t i = 0, w = 0;
    while (i < n) {
        size_t k;
        uint32_t cp = utf8_get((const unsigned char *)s + i, &k);
        if (cp > 0x143 || inv[cp] < 0) {
            memcpy(dst, s, n);
            return n;
        }
        dst[w++] = (char)inv[cp];
        i += k;
    }
    return w;
}

static fmb_status build_tables(fmb_tok *t, const load_ctx *lc)
{
    int16_t inv[0x144];
    for (int i = 0; i < 0x144; i++)
        inv[i] = -1;
    for (unsigned b = 0; b < 256; b++) {
        uint32_t cp = byte_to_cp(b);
        inv[cp] = (int16_t)b;
        char ch[4];
        size_t n = utf8_put(cp, ch);
        t->byte_id[b] = str_map_get(&t->vocab, ch, n);
    }
    size_t n = (size_t)t->n_ids;
    t->str = fmb_xcalloc(n, sizeof *t->str);
    t->str_len = fmb_xcalloc(n, sizeof *t->str_len);
    t->is_special = fmb_xcalloc(n, 1);
    t->is_hole = fmb_xcalloc(n, 1);
    for (size_t i = 0; i < t->vocab.n; i++) {
        const str_ent *e = &t->vocab.ents[i];
        if (t->str[e->id])
            return bad(lc, FMB_EUNSUP, "model.vocab: id %d is used by '%s' and '%s'", e->id,
                       t->str[e->id], e->s);
        t->str[e->id] = e->s;
        t->str_len[e->id] = e->len;
        if (e->len / 2 + 1 > t->max_tok_len)
            t->max_tok_len = e->len / 2 + 1 > 1024 ? 1024 : e->len / 2 + 1;
    }
    for (size_t i = 0; i < t->n_atoks; i++) {
        const added_tok *a = &t->atoks[i];
        t->str[a->id] = a->content;
        t->str_len[a->id] = (uint32_t)a->len;
        t->is_special[a->id] = a->special;
    }
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        t->is_hole[i] = !t->str[i];
        total += t->str_len[i];
    }
    t->bytes = fmb_xmalloc(total + 1);
    t->bytes_off = fmb_xmalloc((n + 1) * sizeof *t->bytes_off);
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        t->bytes_off[i] = w;
        if (t->str[i])
            w += token_to_bytes(t->str[i], t->str_len[i], inv, t->bytes + w);
    }
    t->bytes_off[n] = w;
    return FMB_OK;
}

fmb_status fmb_tok_load(const char *path, fmb_tok **out, fmb_err *err)
{
    load_ctx lc = {path, err};
    json_error_t je;
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return fmb_fail(err, FMB_EIO, "%s: cannot open", path);
    json_t *root = json_loadf(f, 0, &je);
    fclose(f);
    if (!root)
        return bad(&lc, FMB_EINVAL, "bad JSON at line %d column %d: %s", je.line, je.column,
                   je.text);
    fmb_tok *t = fmb_xcalloc(1, sizeof *t);
    t->path = fmb_xstrdup(path);
    t->unk_id = -1;
    fmb_status s = FMB_OK;
    json_t *v;
    const char *k;
    int seen_bl = 0;
    if (!json_is_object(root)) {
        s = bad(&lc, FMB_EINVAL, "top level: not a JSON object");
        goto fail;
    }
    /* The model first: everything else refers to its vocab. */
    json_t *model = json_object_get(root, "model");
    if ((s = load_model(t, &lc, model)))
        goto fail;
    json_t *vocab = json_object_get(model, "vocab");
    t->arena = fmb_xmalloc(count_strings(root) + 1);
    str_map_init(&t->vocab, json_object_size(vocab));
    int64_t max_id = -1;
    json_object_foreach(vocab, k, v)
    {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) >= INT32_MAX - 1) {
            s = bad(&lc, FMB_EINVAL, "model.vocab: '%s' has no valid id", k);
            goto fail;
        }
        size_t n = strlen(k);
        str_map_put(&t->vocab, arena_put(t, k, n), n, (int32_t)json_integer_value(v));
        if (json_integer_value(v) > max_id)
            max_id = json_integer_value(v);
    }
    json_t *merges = json_object_get(model, "merges");
    if ((s = load_merges(t, &lc, merges)))
        goto fail;
    json_t *unk = json_object_get(model, "unk_token");
    if (json_is_string(unk)) {
        t->unk_id = str_map_get(&t->vocab, json_string_value(unk), json_string_length(unk));
        if (t->unk_id < 0) {
            s = bad(&lc, FMB_EINVAL, "model.unk_token: '%s' is not in model.vocab",
                    json_string_value(unk));
            goto fail;
        }
    } else if (unk && !json_is_null(unk)) {
        s = bad(&lc, FMB_EINVAL, "model.unk_token: not a string");
        goto fail;
    }
    if ((s = load_added(t, &lc, json_object_get(root, "added_tokens"), t->vocab.n)))
        goto fail;
    for (size_t i = 0; i < t->n_atoks; i++)
        if (t->atoks[i].id > max_id)
            max_id = t->atoks[i].id;
    t->n_ids = (int32_t)(max_id + 1);

    v = json_object_get(root, "normalizer");
    if (v && !json_is_null(v)) {
        const char *nt = json_string_value(json_object_get(v, "type"));
        s = bad(&lc, FMB_EUNSUP, "normalizer: '%s' is not supported (only null)", nt ? nt : "?");
        goto fail;
    }
    v = json_object_get(root, "pre_tokenizer");
    if (v && !json_is_null(v) && (s = add_pretok(t, &lc, v, "pre_tokenizer", &seen_bl)))
        goto fail;
    if (!seen_bl) {
        s = bad(&lc, FMB_EUNSUP,
                "pre_tokenizer: no ByteLevel stage (only byte-level BPE is "
                "supported)");
        goto fail;
    }
    v = json_object_get(root, "decoder");
    const char *dt = json_string_value(json_object_get(v, "type"));
    if (!dt || strcmp(dt, "ByteLevel")) {
        s = bad(&lc, FMB_EUNSUP, "decoder: '%s' is not supported (only ByteLevel)",
                dt ? dt : (v && !json_is_null(v) ? "?" : "null"));
        goto fail;
    }
    v = json_object_get(root, "post_processor");
    if (v && !json_is_null(v) && (s = load_template(t, &lc, v)))
        goto fail;
    for (size_t i = 0; i < t->n_tpl_pre + t->n_tpl_post; i++) {
        int32_t id = i < t->n_tpl_pre ? t->tpl_pre[i] : t->tpl_post[i - t->n_tpl_pre];
        if (id < 0 || id >= t->n_ids) {
            s = bad(&lc, FMB_EINVAL, "post_processor.special_tokens: id %d out of range", id);
            goto fail;
        }
    }
    v = json_object_get(root, "truncation");
    if (v && !json_is_null(v)) {
        s = bad(&lc, FMB_EUNSUP, "truncation: not supported (only null)");
        goto fail;
    }
    v = json_object_get(root, "padding");
    if (v && !json_is_null(v)) {
        s = bad(&lc, FMB_EUNSUP, "padding: not supported (only null)");
        goto fail;
    }
    /* Rust regex \w and \s for single_word / lstrip / rstrip. */
    if ((s = compile_re(&lc, "(\\w)", "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]",
                        PCRE2_ZERO_TERMINATED, 0, &t->re_word)))
        goto fail;
    {
        char ws[256];
        snprintf(ws, sizeof ws, "[%s]", FMB_TOK_UNI_S_ALL);
        if ((s = compile_re(&lc, "(\\s)", ws, PCRE2_ZERO_TERMINATED, 0, &t->re_space)))
            goto fail;
    }
    if ((s = build_tables(t, &lc)))
        goto fail;
    json_decref(root);
    *out = t;
    return FMB_OK;
fail:
    json_decref(root);
    fmb_tok_free(t);
    return s;
}

// ---------------------------------------------------------------------------------------------
// Encoding

typedef struct {
    size_t s, e;
    int m;
} event;

/* Folds events by behaviour and passes finished pieces on (one per pipeline level). */
typedef struct {
    int behavior;
    int have; /* a pending piece [ps, pe) */
    size_t ps, pe;
    int prev_m;
    int have_la; /* MergedWithNext: one event of lookahead */
    event la;
    int have_carry; /* MergedWithNext: a match waiting to join the next gap */
    size_t carry;
} fold;

typedef struct {
    char *map; /* byte domain Split: the piece through the byte map */
    size_t map_cap;
    uint32_t *map_off; /* [map bytes + 1]: mapped offset -> piece offset */
    size_t off_cap;
} level;

typedef struct {
    const fmb_tok *t;
    const char *text; /* lossy text (valid UTF-8) */
    size_t len;
    fmb_ids *out;
    fmb_err *err;
    fmb_status st;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jstack;
    level lv[MAX_STAGES];
    /* BPE scratch */
    int32_t *sid;
    uint32_t *slen;
    uint32_t *srank;
    int32_t *sprev, *snext;
    size_t scap;
    uint64_t *heap;
    size_t hcap;
    /* offsets back to the caller's bytes */
    const repl *reps;
    size_t n_reps;
} enc_ctx;

static size_t orig_offset(const enc_ctx *c, size_t x)
{
    if (!c->n_reps || x < c->reps[0].at)
        return x;
    size_t lo = 0, hi = c->n_reps; /* last rep with at <= x */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (c->reps[mid].at <= x)
            lo = mid;
        else
            hi = mid;
    }
    const repl *r = &c->reps[lo];
    return x < r->at + 3 ? r->in_at : r->in_at + r->in_n + (x - r->at - 3);
}

static void emit(enc_ctx *c, int32_t id, size_t at)
{
    fmb_ids_push(c->out, id, c->out->want_offsets ? orig_offset(c, at) : 0);
}

static fmb_status grow(enc_ctx *c, void **p, size_t *cap, size_t need, size_t elt)
{
    if (need <= *cap)
        return FMB_OK;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    void *q = realloc(*p, n * elt);
    if (!q)
        return fmb_fail(c->err, FMB_ENOMEM, "tokenizer: out of memory (%zu bytes)", n * elt);
    *p = q;
    *cap = n;
    return FMB_OK;
}

// --- BPE

static int merge_get(const fmb_tok *t, int32_t a, int32_t b, uint32_t *rank, int32_t *nid)
{
    uint64_t k = pair_key(a, b);
    for (size_t j = pair_slot(k, t->merges_mask);; j = (j + 1) & t->merges_mask) {
        const merge_ent *m = &t->merges[j];
        if (m->new_id < 0)
            return 0;
        if (m->key == k) {
            *rank = m->rank;
            *nid = m->new_id;
            return 1;
        }
    }
}

/* Heap entries: rank in the high 32 bits, position in the low: pops lowest rank, leftmost. */
static void heap_push(uint64_t *h, size_t *n, uint64_t v)
{
    size_t i = (*n)++;
    while (i) {
        size_t p = (i - 1) / 2;
        if (h[p] <= v)
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = v;
}

static uint64_t heap_pop(uint64_t *h, size_t *n)
{
    uint64_t top = h[0], v = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= *n)
            break;
        if (l + 1 < *n && h[l + 1] < h[l])
            l++;
        if (v <= h[l])
            break;
        h[i] = h[l];
        i = l;
    }
    if (*n)
        h[i] = v;
    return top;
}

enum { BPE_SMALL = 48 };

/* BPE on text[s, e) (byte domain). Repeatedly merges the lowest-rank pair, leftmost first, as
 * HF's word.rs does with its heap. */
static void bpe(enc_ctx *c, size_t s, size_t e)
{
    const fmb_tok *t = c->t;
    const unsigned char *u = (const unsigned char *)c->text;
    if (t->ignore_merges && e - s <= t->max_tok_len) {
        /* HF looks the whole piece up as its mapped string first. */
        char buf[2 * 1024];
        size_t w = 0;
        for (size_t i = s; i < e; i++)
            w += utf8_put(byte_to_cp(u[i]), buf + w);
        int32_t id = str_map_get(&t->vocab, buf, w);
        if (id >= 0) {
            emit(c, id, s);
            return;
        }
    }
    size_t n = e - s;
    if (n + 1 > c->scap) {
        /* All symbol arrays share one capacity. */
        size_t cap = c->scap ? c->scap : 64;
        while (cap < n + 1)
            cap *= 2;
        if (n + 1 > (1u << 20))
            cap = n + 1; /* a huge piece: no doubling slack (5 arrays of 4 bytes per byte) */
        int32_t *a1 = realloc(c->sid, cap * sizeof *a1);
        if (a1)
            c->sid = a1;
        uint32_t *a2 = realloc(c->slen, cap * sizeof *a2);
        if (a2)
            c->slen = a2;
        uint32_t *a3 = realloc(c->srank, cap * sizeof *a3);
        if (a3)
            c->srank = a3;
        int32_t *a4 = realloc(c->sprev, cap * sizeof *a4);
        if (a4)
            c->sprev = a4;
        int32_t *a5 = realloc(c->snext, cap * sizeof *a5);
        if (a5)
            c->snext = a5;
        if (!a1 || !a2 || !a3 || !a4 || !a5)
            goto oom;
        c->scap = cap;
    }
    int32_t *nsid = c->sid;
    size_t lead = 0; /* dropped bytes before the first symbol */
    /* Symbols: the bytes' ids; unknown bytes become unk (fused if asked) or are dropped. */
    size_t m = 0;
    int unk_open = 0;
    for (size_t i = s; i < e; i++) {
        int32_t id = t->byte_id[u[i]];
        if (id >= 0) {
            nsid[m] = id;
            c->slen[m++] = 1;
            unk_open = 0;
        } else if (t->unk_id >= 0) {
            if (unk_open && t->fuse_unk)
                c->slen[m - 1]++;
            else {
                nsid[m] = t->unk_id;
                c->slen[m++] = 1;
            }
            unk_open = 1;
        } else if (m) {
            c->slen[m - 1]++; /* a dropped byte: offsets stay on the byte grid */
        } else {
            lead++;
        }
    }
    if (m <= BPE_SMALL) {
        /* Short words: pair ranks cached in srank[i] for (i, i+1); a linear min scan. */
        int32_t *id = nsid;
        uint32_t *rk = c->srank;
        int32_t nid = 0;
        for (size_t i = 0; i + 1 < m; i++)
            if (!merge_get(t, id[i], id[i + 1], &rk[i], &nid))
                rk[i] = UINT32_MAX;
        while (m > 1) {
            size_t best = 0;
            uint32_t br = UINT32_MAX;
            for (size_t i = 0; i + 1 < m; i++)
                if (rk[i] < br) {
                    br = rk[i];
                    best = i;
                }
            if (br == UINT32_MAX)
                break;
            uint32_t r;
            merge_get(t, id[best], id[best + 1], &r, &nid);
            id[best] = nid;
            c->slen[best] += c->slen[best + 1];
            memmove(id + best + 1, id + best + 2, (m - best - 2) * sizeof *id);
            memmove(c->slen + best + 1, c->slen + best + 2, (m - best - 2) * sizeof *c->slen);
            memmove(rk + best + 1, rk + best + 2, (m - best - 2) * sizeof *rk);
            m--;
            if (best + 1 < m && !merge_get(t, id[best], id[best + 1], &rk[best], &nid))
                rk[best] = UINT32_MAX;
            if (best > 0 && !merge_get(t, id[best - 1], id[best], &rk[best - 1], &nid))
                rk[best - 1] = UINT32_MAX;
        }
        size_t at = s + lead;
        for (size_t i = 0; i < m; i++) {
            emit(c, id[i], at);
            at += c->slen[i];
        }
        return;
    }
    /* Long words: linked list + heap of (rank, left position); stale entries are skipped. */
    {
        int32_t *pv = c->sprev, *nx = c->snext;
        if (m > UINT32_MAX - 1) {
            c->st = fmb_fail(c->err, FMB_ELIMIT, "tokenizer: piece of %zu bytes is too long", m);
            return;
        }
        if (grow(c, (void **)&c->heap, &c->hcap, m + 2, sizeof *c->heap))
            goto oom;
        int32_t *id = nsid;
        uint32_t *ln = c->slen;
        size_t hn = 0;
        int32_t nid = 0;
        uint32_t r;
        for (size_t i = 0; i < m; i++) {
            pv[i] = (int32_t)i - 1;
            nx[i] = i + 1 < m ? (int32_t)i + 1 : -1;
            if (i + 1 < m && merge_get(t, id[i], id[i + 1], &r, &nid))
                heap_push(c->heap, &hn, ((uint64_t)r << 32) | i);
        }
        while (hn) {
            uint64_t top = heap_pop(c->heap, &hn);
            uint32_t rank = (uint32_t)(top >> 32);
            size_t p = (size_t)(uint32_t)top;
            if (!ln[p] || nx[p] < 0)
                continue;
            size_t q = (size_t)nx[p];
            if (!merge_get(t, id[p], id[q], &r, &nid) || r != rank)
                continue; /* stale: the pair changed since it was pushed */
            id[p] = nid;
            ln[p] += ln[q];
            ln[q] = 0;
            nx[p] = nx[q];
            if (nx[q] >= 0)
                pv[nx[q]] = (int32_t)p;
            if (hn + 2 > c->hcap && grow(c, (void **)&c->heap, &c->hcap, hn + 2, sizeof *c->heap))
                goto oom;
            if (pv[p] >= 0 && merge_get(t, id[pv[p]], id[p], &r, &nid))
                heap_push(c->heap, &hn, ((uint64_t)r << 32) | (uint32_t)pv[p]);
            if (nx[p] >= 0 && merge_get(t, id[p], id[nx[p]], &r, &nid))
                heap_push(c->heap, &hn, ((uint64_t)r << 32) | p);
        }
        size_t at = s + lead;
        for (int32_t i = m ? 0 : -1; i >= 0; i = nx[i]) {
            emit(c, id[i], at);
            at += ln[i];
        }
    }
    return;
oom:
    c->st = fmb_fail(c->err, FMB_ENOMEM, "tokenizer: out of memory for a %zu-byte piece", n);
}

// --- pre-tokenizer pipeline

static void run_stage(enc_ctx *c, size_t k, size_t s, size_t e);

static void fold_init(fold *f, int behavior)
{
    memset(f, 0, sizeof *f);
    f->behavior = behavior;
}

static void piece_out(enc_ctx *c, size_t k, size_t s, size_t e)
{
    if (s < e && !c->st)
        run_stage(c, k + 1, s, e);
}

static void mwn_process(enc_ctx *c, size_t k, fold *f, event x, const event *next)
{
    if (x.m) {
        if (next && !next->m) {
            f->have_carry = 1;
            f->carry = x.s;
        } else
            piece_out(c, k, x.s, x.e);
    } else {
        piece_out(c, k, f->have_carry ? f->carry : x.s, x.e);
        f->have_carry = 0;
    }
}

/* HF normalizer.rs split(): the same folds, one event at a time. */
static void fold_push(enc_ctx *c, size_t k, fold *f, event x)
{
    switch (f->behavior) {
    case B_ISOLATED:
        piece_out(c, k, x.s, x.e);
        break;
    case B_REMOVED:
        if (!x.m)
            piece_out(c, k, x.s, x.e);
        break;
    case B_MERGED_PREV:
        if (x.m && !f->prev_m && f->have)
            f->pe = x.e;
        else {
            if (f->have)
                piece_out(c, k, f->ps, f->pe);
            f->have = 1;
            f->ps = x.s;
            f->pe = x.e;
        }
        f->prev_m = x.m;
        break;
    case B_CONTIGUOUS:
        if (f->have && x.m == f->prev_m)
            f->pe = x.e;
        else {
            if (f->have)
                piece_out(c, k, f->ps, f->pe);
            f->have = 1;
            f->ps = x.s;
            f->pe = x.e;
        }
        f->prev_m = x.m;
        break;
    case B_MERGED_NEXT:
        if (f->have_la)
            mwn_process(c, k, f, f->la, &x);
        f->la = x;
        f->have_la = 1;
        break;
    }
}

static void fold_end(enc_ctx *c, size_t k, fold *f)
{
    if (f->behavior == B_MERGED_NEXT && f->have_la)
        mwn_process(c, k, f, f->la, NULL);
    if ((f->behavior == B_MERGED_PREV || f->behavior == B_CONTIGUOUS) && f->have)
        piece_out(c, k, f->ps, f->pe);
}

/* Next regex match in subj[0..n) at or after *from, with Oniguruma's find_iter rule for empty
 * matches (an empty match right where the previous one ended is skipped by one char).
 * Returns 1 and [*ms, *me), 0 when done, -1 on a matcher error (c->st set). */
static int re_next(enc_ctx *c,
                   const pcre2_code *re,
                   const char *subj,
                   size_t n,
                   size_t *from,
                   long *last_end,
                   size_t *ms,
                   size_t *me)
{
    for (;;) {
        if (*from > n)
            return 0;
        int rc = pcre2_match(re, (PCRE2_SPTR)subj, n, *from, PCRE2_NO_UTF_CHECK, c->md, c->mctx);
        if (rc == PCRE2_ERROR_NOMATCH)
            return 0;
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !c->jstack) {
            /* Rare: a user Split pattern that needs a deep JIT stack. Retry with 8 MiB. */
            c->jstack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
            if (!c->mctx)
                c->mctx = pcre2_match_context_create(NULL);
            if (!c->jstack || !c->mctx) {
                c->st = fmb_fail(c->err, FMB_ENOMEM, "tokenizer: out of memory (JIT stack)");
                return -1;
            }
            pcre2_jit_stack_assign(c->mctx, NULL, c->jstack);
            continue;
        }
        if (rc < 0) {
            PCRE2_UCHAR buf[200];
            pcre2_get_error_message(rc, buf, sizeof buf);
            c->st = fmb_fail(c->err, FMB_ELIMIT, "tokenizer: regex match failed: %s",
                             (const char *)buf);
            return -1;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        size_t s = ov[0], e = ov[1];
        if (s == e && *last_end == (long)e) {
            *from += *from < n ? utf8_len((unsigned char)subj[*from]) : 1;
            continue;
        }
        *from = e;
        *last_end = (long)e;
        *ms = s;
        *me = e;
        return 1;
    }
}

/* Maps text[s, e) through the byte map into lv->map, with lv->map_off[mapped] = piece offset. */
static int map_piece(enc_ctx *c, level *lv, size_t s, size_t e, size_t *mapped)
{
    size_t n = e - s;
    if (grow(c, (void **)&lv->map, &lv->map_cap, 2 * n + 1, 1) ||
        grow(c, (void **)&lv->map_off, &lv->off_cap, 2 * n + 1, sizeof *lv->map_off)) {
        c->st = FMB_ENOMEM;
        return -1;
    }
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = utf8_put(byte_to_cp((unsigned char)c->text[s + i]), lv->map + w);
        for (size_t j = 0; j < k; j++)
            lv->map_off[w + j] = (uint32_t)i;
        w += k;
    }
    lv->map_off[w] = (uint32_t)n;
    *mapped = w;
    return 0;
}

static void run_stage(enc_ctx *c, size_t k, size_t s, size_t e)
{
    const fmb_tok *t = c->t;
    if (k == t->n_stages) {
        bpe(c, s, e);
        return;
    }
    const stage *st = &t->stages[k];
    fold f;
    fold_init(&f, st->behavior);
    size_t prev = s;
    if (st->kind == ST_BYTELEVEL && !st->use_regex) {
        piece_out(c, k, s, e);
        return;
    }
    if (st->byte_dom && st->kind != ST_SPLIT) {
        /* Predicate on bytes: each matching byte is a match, runs between are gaps. */
        const unsigned char *u = (const unsigned char *)c->text;
        for (size_t i = s; i < e && !c->st; i++) {
            if (!st->pred[u[i]])
                continue;
            if (prev < i)
                fold_push(c, k, &f, (event){prev, i, 0});
            fold_push(c, k, &f, (event){i, i + 1, 1});
            prev = i + 1;
        }
        if (prev < e && !c->st)
            fold_push(c, k, &f, (event){prev, e, 0});
        if (!c->st)
            fold_end(c, k, &f);
        return;
    }
    /* Regex (or class-as-regex) matches. In the byte domain the regex runs on the mapped piece
     * and its offsets come back through map_off. */
    const char *subj = c->text + s;
    size_t n = e - s;
    level *lv = &c->lv[k];
    if (st->byte_dom) {
        if (map_piece(c, lv, s, e, &n))
            return;
        subj = lv->map;
    }
    size_t from = 0, ms, me;
    long last_end = -1;
    int rc;
    size_t pp = 0; /* previous match end, in subject offsets */
    while (!c->st && (rc = re_next(c, st->re, subj, n, &from, &last_end, &ms, &me)) == 1) {
        size_t a = ms, b = me;
        if (st->byte_dom) {
            a = lv->map_off[ms];
            b = lv->map_off[me];
        }
        if (pp != ms)
            fold_push(c, k, &f,
                      (event){s + (st->byte_dom ? lv->map_off[pp] : pp), s + a, st->invert});
        fold_push(c, k, &f, (event){s + a, s + b, !st->invert});
        pp = me;
    }
    if (c->st)
        return;
    if (pp != n)
        fold_push(c, k, &f, (event){s + (st->byte_dom ? lv->map_off[pp] : pp), e, st->invert});
    if (!c->st)
        fold_end(c, k, &f);
}

/* Added-token segmentation (HF added_vocabulary.rs find_matches), then the pipeline on the gaps.
 * pass 0 matches the normalized:false tokens on text[s, e); its gaps go to pass 1 (the
 * normalized:true tokens; the normalizer is null so the text is the same), whose gaps go to the
 * pre-tokenizers. */
static int is_class_char(const enc_ctx *c, const pcre2_code *re, size_t at)
{
    int rc = pcre2_match(re, (PCRE2_SPTR)c->text, c->len, at, PCRE2_ANCHORED | PCRE2_NO_UTF_CHECK,
                         c->md, NULL);
    return rc > 0;
}

static void segment(enc_ctx *c, int pass, size_t s, size_t e, int special)
{
    const fmb_tok *t = c->t;
    if (s >= e || c->st)
        return;
    if (pass == 2) {
        run_stage(c, 0, s, e);
        return;
    }
    if (!t->has_pass[pass]) {
        segment(c, pass + 1, s, e, special);
        return;
    }
    const unsigned char *u = (const unsigned char *)c->text;
    size_t start_off = s;
    size_t p = s;
    while (p < e && !c->st) {
        /* Leftmost-longest: the first position with any match, its longest token. */
        const int32_t *l = t->first[pass][u[p]];
        const added_tok *a = NULL;
        if (l)
            for (; *l >= 0; l++) {
                const added_tok *x = &t->atoks[*l];
                if (x->len <= e - p && !memcmp(c->text + p, x->content, x->len)) {
                    a = x;
                    break;
                }
            }
        if (!a) {
            p++;
            continue;
        }
        size_t ms = p, me = p + a->len;
        p = me; /* the matcher resumes after this match, even if it is skipped below */
        if (!special && a->special)
            continue;
        if (a->single_word) {
            /* Word chars (Rust regex \w) must not touch the match on either side. */
            int left = 0, right = 0;
            if (ms > s) {
                size_t q = ms - 1;
                while (q > s && (u[q] & 0xC0) == 0x80)
                    q--;
                left = is_class_char(c, t->re_word, q);
            }
            if (me < e)
                right = is_class_char(c, t->re_word, me);
            if (left || right)
                continue;
        }
        if (a->lstrip) {
            size_t q = ms;
            while (q > s) {
                size_t r = q - 1;
                while (r > s && (u[r] & 0xC0) == 0x80)
                    r--;
                if (!is_class_char(c, t->re_space, r))
                    break;
                q = r;
            }
            ms = q > start_off ? q : start_off;
        }
        if (a->rstrip) {
            while (me < e && is_class_char(c, t->re_space, me))
                me += utf8_len(u[me]);
        }
        if (start_off < ms)
            segment(c, pass + 1, start_off, ms, special);
        emit(c, a->id, ms);
        start_off = me;
    }
    if (start_off < e)
        segment(c, pass + 1, start_off, e, special);
}

fmb_status fmb_tok_encode(
    const fmb_tok *t, const char *text, size_t len, int special, fmb_ids *out, fmb_err *err)
{
    enc_ctx c;
    memset(&c, 0, sizeof c);
    c.t = t;
    c.out = out;
    c.err = err;
    char *fixed = NULL;
    repl *reps = NULL;
    size_t n_reps = 0, flen;
    fmb_status s =
        lossy_utf8(text, len, &fixed, &flen, out->want_offsets ? &reps : NULL, &n_reps, err);
    if (s)
        return s;
    c.text = fixed ? fixed : text;
    c.len = flen;
    c.reps = reps;
    c.n_reps = n_reps;
    if (flen > UINT32_MAX - 1) {
        free(fixed);
        free(reps);
        return fmb_fail(err, FMB_ELIMIT, "tokenizer: input of %zu bytes is over 4 GiB", flen);
    }
    c.md = pcre2_match_data_create(4, NULL);
    if (!c.md) {
        free(fixed);
        free(reps);
        return fmb_fail(err, FMB_ENOMEM, "tokenizer: out of memory");
    }
    for (size_t i = 0; i < t->n_tpl_pre; i++)
        fmb_ids_push(out, t->tpl_pre[i], 0);
    segment(&c, 0, 0, flen, special);
    for (size_t i = 0; i < t->n_tpl_post && !c.st; i++)
        fmb_ids_push(out, t->tpl_post[i], len);
    s = c.st;
    if (s == FMB_ENOMEM && err && !err->msg[0])
        fmb_fail(err, FMB_ENOMEM, "tokenizer: out of memory");
    for (size_t i = 0; i < MAX_STAGES; i++) {
        free(c.lv[i].map);
        free(c.lv[i].map_off);
    }
    free(c.sid);
    free(c.slen);
    free(c.srank);
    free(c.sprev);
    free(c.snext);
    free(c.heap);
    pcre2_match_data_free(c.md);
    if (c.mctx)
        pcre2_match_context_free(c.mctx);
    if (c.jstack)
        pcre2_jit_stack_free(c.jstack);
    free(fixed);
    free(reps);
    return s;
}

// ---------------------------------------------------------------------------------------------
// Decoding

fmb_status fmb_tok_decode(const fmb_tok *t,
                          const int32_t *ids,
                          size_t n,
                          int skip_special,
                          char **out,
                          size_t *out_len,
                          fmb_err *err)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l;
        if (fmb_tok_token_bytes(t, ids[i], &l))
            total += l;
    }
    char *raw = malloc(total + 1);
    if (!raw)
        return fmb_fail(err, FMB_ENOMEM, "tokenizer: out of memory (%zu bytes)", total + 1);
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l;
        const char *b = fmb_tok_token_bytes(t, ids[i], &l);
        if (!b || (skip_special && t->is_special[ids[i]]))
            continue; /* HF skips unknown ids */
        memcpy(raw + w, b, l);
        w += l;
    }
    raw[w] = 0;
    char *fixed;
    size_t flen;
    fmb_status s = lossy_utf8(raw, w, &fixed, &flen, NULL, NULL, err);
    if (s) {
        free(raw);
        return s;
    }
    if (fixed) {
        free(raw);
        raw = fixed;
    }
    *out = raw;
    *out_len = flen;
    return FMB_OK;
}
