/*
 * report: see report.h. Gathering (queries, source pass for snippets) first, then two writers
 * over the gathered data: text and HTML.
 */
#include "batch/report.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "batch/source.h"
#include "engine/hash.h"

#define HIST_BINS    12
#define SNIPPET_LEN  60  /* characters of a document shown */
#define KEY_LEN      200 /* characters of a key kept (the writers cut further) */
#define GEN_TEXT_LEN 400 /* characters of a generated text kept */

/* ---------------------------------------------------------------------------------------- */
/* text cleaning */

/* s[0..n) as valid UTF-8 of at most max characters: bytes of no valid sequence become U+FFFD;
 * with collapse, runs of whitespace and control characters become one space (and none at the
 * ends), else control characters other than '\n' and '\t' become a space. "…" ends a cut
 * text (one more character). Caller frees. */
static char *clean(const char *s, size_t n, size_t max, int collapse)
{
    fmb_sb b = {0};
    fmb_sb_puts(&b, "");
    const unsigned char *p = (const unsigned char *)s;
    size_t chars = 0;
    int space = 0;
    for (size_t i = 0; p && i < n;) {
        size_t l = fmb_utf8_seq(p + i, n - i);
        int ctl = l == 1 && (p[i] < 0x20 || p[i] == 0x7f);
        if (collapse && (ctl || (l == 1 && p[i] == ' '))) {
            space = chars > 0;
            i++;
            continue;
        }
        if (chars + (size_t)space >= max) {
            fmb_sb_puts(&b, "\xe2\x80\xa6"); /* more follows */
            break;
        }
        if (space) {
            fmb_sb_putc(&b, ' ');
            chars++;
            space = 0;
        }
        if (ctl)
            fmb_sb_putc(&b, p[i] == '\n' || p[i] == '\t' ? (char)p[i] : ' ');
        else if (l)
            fmb_sb_add(&b, p + i, l);
        else
            fmb_sb_puts(&b, "\xef\xbf\xbd");
        chars++;
        i += l ? l : 1;
    }
    return fmb_sb_take(&b);
}

/* Characters (code points) of valid UTF-8 s. */
static size_t u8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xc0) != 0x80;
    return n;
}

/* Prints s cut to at most w characters (the last one "…" when cut), padded to w when pad. */
static void put_cut(FILE *f, const char *s, size_t w, int pad)
{
    size_t n = u8_chars(s);
    if (n <= w) {
        fputs(s, f);
        for (size_t i = n; pad && i < w; i++)
            fputc(' ', f);
        return;
    }
    size_t chars = 0;
    const char *p = s;
    for (; *p; p++) {
        if (((unsigned char)*p & 0xc0) != 0x80) {
            if (chars == w - 1)
                break;
            chars++;
        }
    }
    fwrite(s, 1, (size_t)(p - s), f);
    fputs("\xe2\x80\xa6", f);
}

/* ---------------------------------------------------------------------------------------- */
/* gathered data */

typedef enum { SNIP_UNREAD = 0, SNIP_FOUND, SNIP_CHANGED, SNIP_MISSING } snip_state;

typedef struct {
    char *key;  /* the item key as stored */
    char *hash; /* its content hash at the run */
    char *text; /* the snippet (clean UTF-8) once found */
    snip_state state;
} snip;

typedef struct {
    char *reason, *example, *detail; /* clean text */
    int64_t count;
} failure;

typedef struct {
    const fmb_task_cfg *cfg;
    char id[80]; /* the task's part of element ids: [A-Za-z0-9_-] */
    fmb_queue_task_sum sum;
    /* score */
    fmb_queue_stats bpb, ppl;
    int bins;
    double lo, hi;
    int64_t hist[HIST_BINS];
    fmb_queue_doc *best, *worst;
    size_t n_best, n_worst;
    /* choice (by best) and generate (by finish reason, by extract outcome) */
    fmb_queue_group *groups, *extract;
    size_t n_groups, n_extract;
    /* generate */
    fmb_queue_doc *gen;
    size_t n_gen;
} task_rep;

struct fmb_report {
    fmb_report_opts opts;
    char *name, *model, *output;
    fmb_queue_counts counts;
    task_rep *tasks;
    size_t n_tasks;
    failure *fails;
    size_t n_fails;
    int64_t n_failed_items;
    snip *snips; /* sorted by key */
    size_t n_snips;
    char *source_note; /* why snippets are missing (NULL: none is) */
};

static int snip_cmp(const void *a, const void *b)
{
    return strcmp(((const snip *)a)->key, ((const snip *)b)->key);
}

static snip *snip_find(const fmb_report *r, const char *key)
{
    if (!r->n_snips || !key)
        return NULL;
    snip k = {.key = (char *)key};
    return bsearch(&k, r->snips, r->n_snips, sizeof *r->snips, snip_cmp);
}

static void want_docs(fmb_report *r, size_t *cap, const fmb_queue_doc *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!d[i].key)
            continue;
        if (r->n_snips == *cap) {
            *cap = *cap ? 2 * *cap : 16;
            r->snips = fmb_xrealloc(r->snips, *cap, sizeof *r->snips);
        }
        r->snips[r->n_snips++] =
            (snip){fmb_xstrdup(d[i].key), d[i].content_hash ? fmb_xstrdup(d[i].content_hash) : NULL,
                   NULL, SNIP_UNREAD};
    }
}

/* One pass over the source, stopped once every wanted key was seen. A source that cannot be
 * opened or read leaves the rest unread with a note (the report goes on). */
static void read_snippets(fmb_report *r, const fmb_job *job)
{
    /* sort, drop duplicates (a document can be among the best of two tasks) */
    qsort(r->snips, r->n_snips, sizeof *r->snips, snip_cmp);
    size_t k = 0;
    for (size_t i = 0; i < r->n_snips; i++) {
        if (k && !strcmp(r->snips[k - 1].key, r->snips[i].key)) {
            free(r->snips[i].key);
            free(r->snips[i].hash);
            continue;
        }
        r->snips[k++] = r->snips[i];
    }
    r->n_snips = k;
    if (!k)
        return;
    if (!r->opts.snippets) {
        r->source_note = fmb_xstrdup("snippets not read (--no-snippets)");
        return;
    }
    fmb_err err;
    fmb_source *src = NULL;
    if (fmb_src_open(job, &src, &err)) {
        fmb_sb b = {0};
        fmb_sb_printf(&b, "snippets not read: the source cannot be opened: %s", err.msg);
        r->source_note = fmb_sb_take(&b);
        return;
    }
    size_t left = k;
    while (left) {
        fmb_doc doc;
        int eof;
        if (fmb_src_next(src, &doc, &eof, &err)) {
            fmb_sb b = {0};
            fmb_sb_printf(&b, "snippets partly read: the source failed: %s", err.msg);
            r->source_note = fmb_sb_take(&b);
            break;
        }
        if (eof)
            break;
        snip *s = doc.data ? snip_find(r, doc.key) : NULL;
        if (!s || s->state != SNIP_UNREAD)
            continue;
        char h[33];
        fmb_hash_content(doc.data, doc.len, h);
        s->state = s->hash && strcmp(h, s->hash) ? SNIP_CHANGED : SNIP_FOUND;
        s->text = clean(doc.data, doc.len, SNIPPET_LEN, 1);
        left--;
    }
    fmb_src_close(src);
    for (size_t i = 0; i < k; i++)
        if (r->snips[i].state == SNIP_UNREAD && !r->source_note)
            r->snips[i].state = SNIP_MISSING;
}

/* The failure groups of `status` (fmb_queue_failures_json), each with its example's error. */
static fmb_status gather_failures(fmb_report *r, fmb_queue *q, fmb_err *err)
{
    char *json = NULL;
    fmb_status s = fmb_queue_failures_json(q, &json, err);
    if (s)
        return s;
    json_t *a = json_loads(json, 0, NULL);
    free(json);
    FMB_ASSERT(json_is_array(a));
    r->n_fails = json_array_size(a);
    r->fails = fmb_xcalloc(r->n_fails ? r->n_fails : 1, sizeof *r->fails);
    for (size_t i = 0; i < r->n_fails && !s; i++) {
        json_t *o = json_array_get(a, i);
        failure *fl = &r->fails[i];
        const char *reason = json_string_value(json_object_get(o, "reason"));
        const char *example = json_string_value(json_object_get(o, "example"));
        fl->count = json_integer_value(json_object_get(o, "count"));
        r->n_failed_items += fl->count;
        fl->reason = clean(reason, reason ? strlen(reason) : 0, KEY_LEN, 1);
        fl->example = clean(example, example ? strlen(example) : 0, KEY_LEN, 1);
        /* the example's key as stored (the JSON form is escaped when it is not UTF-8) */
        json_t *hex = json_object_get(o, "example_hex");
        char *error = NULL;
        if (!hex && example)
            s = fmb_queue_item_error(q, example, &error, err);
        if (error) {
            const char *colon = strchr(error, ':');
            const char *d = colon ? colon + 1 : error;
            fl->detail = clean(d, strlen(d), KEY_LEN, 1);
        }
        free(error);
    }
    json_decref(a);
    return s;
}

static void make_id(fmb_report *r, size_t t)
{
    char *id = r->tasks[t].id;
    size_t n = 0;
    for (const char *p = r->tasks[t].cfg->name; *p && n < 60; p++) {
        char c = *p;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '_';
        id[n++] = ok ? c : '_';
    }
    id[n] = 0;
    for (size_t u = 0; u < t; u++)
        if (!strcmp(r->tasks[u].id, id)) {
            snprintf(id + n, sizeof r->tasks[t].id - n, "-%zu", t + 1);
            break;
        }
}

fmb_status fmb_report_gather(
    const fmb_job *job, fmb_queue *q, const fmb_report_opts *opts, fmb_report **out, fmb_err *err)
{
    *out = NULL;
    fmb_report *r = fmb_xcalloc(1, sizeof *r);
    r->opts = *opts;
    r->name = fmb_xstrdup(job->name);
    r->model = fmb_xstrdup(job->model);
    r->output = fmb_xstrdup(job->output);
    fmb_status s = fmb_queue_counts_get(q, &r->counts, err);
    r->n_tasks = job->n_tasks;
    r->tasks = fmb_xcalloc(job->n_tasks ? job->n_tasks : 1, sizeof *r->tasks);
    size_t cap = 0;
    for (size_t i = 0; i < job->n_tasks && !s; i++) {
        task_rep *t = &r->tasks[i];
        const char *name = job->tasks[i].name;
        t->cfg = &job->tasks[i];
        make_id(r, i);
        s = fmb_queue_task_sum_get(q, name, &t->sum, err);
        if (s)
            break;
        switch (t->cfg->kind) {
        case FMB_TASK_SCORE:
            if ((s = fmb_queue_score_stats(q, name, FMB_QUEUE_BPB, &t->bpb, err)) ||
                (s = fmb_queue_score_stats(q, name, FMB_QUEUE_PPL, &t->ppl, err)))
                break;
            t->bins = t->bpb.n ? HIST_BINS : 0;
            t->lo = t->bpb.min;
            t->hi = t->bpb.max;
            if (t->bpb.n && t->hi <= t->lo)
                t->bins = 1;
            if (t->bins &&
                ((s = fmb_queue_score_hist(q, name, t->lo, t->hi, t->bins, t->hist, err)) ||
                 (s = fmb_queue_score_top(q, name, 0, opts->top, &t->best, &t->n_best, err)) ||
                 (s = fmb_queue_score_top(q, name, 1, opts->top, &t->worst, &t->n_worst, err))))
                break;
            want_docs(r, &cap, t->best, t->n_best);
            want_docs(r, &cap, t->worst, t->n_worst);
            break;
        case FMB_TASK_CHOICE:
            s = fmb_queue_groups(q, name, FMB_QUEUE_BY_BEST, &t->groups, &t->n_groups, err);
            break;
        case FMB_TASK_GENERATE:
            if ((s = fmb_queue_groups(q, name, FMB_QUEUE_BY_FINISH, &t->groups, &t->n_groups,
                                      err)) ||
                (s = fmb_queue_groups(q, name, FMB_QUEUE_BY_EXTRACT, &t->extract, &t->n_extract,
                                      err)) ||
                (s = fmb_queue_generate_rows(q, name, opts->top, &t->gen, &t->n_gen, err)))
                break;
            want_docs(r, &cap, t->gen, t->n_gen);
            break;
        }
    }
    if (!s)
        s = gather_failures(r, q, err);
    if (s) {
        fmb_report_free(r);
        return s;
    }
    read_snippets(r, job);
    *out = r;
    return FMB_OK;
}

void fmb_report_free(fmb_report *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_tasks; i++) {
        task_rep *t = &r->tasks[i];
        fmb_queue_docs_free(t->best, t->n_best);
        fmb_queue_docs_free(t->worst, t->n_worst);
        fmb_queue_docs_free(t->gen, t->n_gen);
        fmb_queue_groups_free(t->groups, t->n_groups);
        fmb_queue_groups_free(t->extract, t->n_extract);
    }
    free(r->tasks);
    for (size_t i = 0; i < r->n_fails; i++) {
        free(r->fails[i].reason);
        free(r->fails[i].example);
        free(r->fails[i].detail);
    }
    free(r->fails);
    for (size_t i = 0; i < r->n_snips; i++) {
        free(r->snips[i].key);
        free(r->snips[i].hash);
        free(r->snips[i].text);
    }
    free(r->snips);
    free(r->source_note);
    free(r->name);
    free(r->model);
    free(r->output);
    free(r);
}

/* ---------------------------------------------------------------------------------------- */
/* shared by the writers */

/* The snippet line of a document: the text in quotes, or why there is none. Caller frees. */
static char *snippet_of(const fmb_report *r, const char *key)
{
    const snip *s = snip_find(r, key);
    fmb_sb b = {0};
    if (!s || s->state == SNIP_UNREAD)
        fmb_sb_puts(&b, "(no snippet)");
    else if (s->state == SNIP_MISSING)
        fmb_sb_puts(&b, "(not in the source any more)");
    else
        fmb_sb_printf(&b, "\"%s\"%s", s->text, s->state == SNIP_CHANGED ? " (changed since)" : "");
    return fmb_sb_take(&b);
}

/* The extracted fields of a generate row, "name=value, ..." (clean text). Caller frees. */
static char *fields_of(const fmb_queue_doc *d)
{
    fmb_sb b = {0};
    fmb_sb_puts(&b, "");
    json_t *o = d->extract ? json_loads(d->extract, 0, NULL) : NULL;
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        if (!strcmp(k, "ok"))
            continue;
        fmb_sb_printf(&b, "%s%s=", b.len ? ", " : "", k);
        if (json_is_string(v))
            fmb_sb_printf(&b, "\"%s\"", json_string_value(v));
        else
            fmb_sb_puts(&b, "null");
    }
    json_decref(o);
    char *c = clean(b.buf, b.len, KEY_LEN, 1);
    fmb_sb_free(&b);
    return c;
}

static char *key_of(const char *key)
{
    return clean(key, key ? strlen(key) : 0, KEY_LEN, 1);
}

static int64_t choice_total(const task_rep *t)
{
    int64_t n = 0;
    for (size_t i = 0; i < t->n_groups; i++)
        n += t->groups[i].count;
    return n;
}

/* The count of choice c of t (the rows whose best_index is c). */
static int64_t choice_count(const task_rep *t, size_t c)
{
    for (size_t i = 0; i < t->n_groups; i++)
        if (t->groups[i].index == (int64_t)c)
            return t->groups[i].count;
    return 0;
}

static int64_t hist_max(const task_rep *t)
{
    int64_t m = 0;
    for (int b = 0; b < t->bins; b++)
        m = t->hist[b] > m ? t->hist[b] : m;
    return m;
}

static double bin_edge(const task_rep *t, int b)
{
    return t->bins <= 1 ? (b ? t->hi : t->lo) : t->lo + (t->hi - t->lo) * b / t->bins;
}

/* ---------------------------------------------------------------------------------------- */
/* text */

static void head(const fmb_report *r, FILE *f, const char *fmt, const char *arg)
{
    fputs(r->opts.bold ? "\n\033[1m" : "\n", f);
    char *a = arg ? clean(arg, strlen(arg), 50, 1) : NULL;
    fprintf(f, fmt, a ? a : "");
    free(a);
    fputs(r->opts.bold ? "\033[0m\n" : "\n", f);
}

static void bar(FILE *f, int64_t n, int64_t max, int width)
{
    int w = max > 0 ? (int)((double)n * width / (double)max + 0.5) : 0;
    if (n > 0 && w == 0)
        w = 1;
    for (int i = 0; i < w; i++)
        fputc('#', f);
}

static void text_doc_table(const fmb_report *r, FILE *f, const fmb_queue_doc *d, size_t n)
{
    fprintf(f, "    %9s %11s %7s  %s\n", "bits/byte", "perplexity", "tokens", "key");
    for (size_t i = 0; i < n; i++) {
        char *k = key_of(d[i].key), *sn = snippet_of(r, d[i].key);
        fprintf(f, "    %9.4f %11.4g %7lld  ", d[i].bits_per_byte, d[i].ppl,
                (long long)d[i].tokens);
        put_cut(f, k, 43, 0);
        fputs("\n      ", f);
        put_cut(f, sn, 74, 0);
        fputc('\n', f);
        free(k);
        free(sn);
    }
}

static void text_score(const fmb_report *r, const task_rep *t, FILE *f)
{
    head(r, f, "Score task '%s': bits per byte (lower is better)", t->cfg->name);
    if (!t->bpb.n) {
        fprintf(f, "  no scored documents yet\n");
        return;
    }
    fprintf(f, "  %-12s %11s %11s %11s %11s\n", "", "min", "median", "mean", "max");
    fprintf(f, "  %-12s %11.4f %11.4f %11.4f %11.4f\n", "bits/byte", t->bpb.min, t->bpb.median,
            t->bpb.mean, t->bpb.max);
    fprintf(f, "  %-12s %11.4g %11.4g %11.4g %11.4g\n", "perplexity", t->ppl.min, t->ppl.median,
            t->ppl.mean, t->ppl.max);
    fprintf(f, "  %lld documents scored", (long long)t->bpb.n);
    if (t->sum.ok > t->bpb.n)
        fprintf(f, ", %lld without a finite value", (long long)(t->sum.ok - t->bpb.n));
    fprintf(f, "\n\n  histogram of bits per byte (%d bins)\n", t->bins);
    int64_t m = hist_max(t);
    for (int b = 0; b < t->bins; b++) {
        fprintf(f, "  %8.4f - %8.4f %c %7lld%s", bin_edge(t, b), bin_edge(t, b + 1),
                b == t->bins - 1 ? ']' : ')', (long long)t->hist[b], t->hist[b] ? "  " : "");
        bar(f, t->hist[b], m, 40);
        fputc('\n', f);
    }
    fprintf(f, "\n  best %zu (lowest bits per byte)\n", t->n_best);
    text_doc_table(r, f, t->best, t->n_best);
    fprintf(f, "\n  worst %zu (highest bits per byte)\n", t->n_worst);
    text_doc_table(r, f, t->worst, t->n_worst);
}

static void text_choice(const fmb_report *r, const task_rep *t, FILE *f)
{
    head(r, f, "Choice task '%s': answers chosen", t->cfg->name);
    int64_t total = choice_total(t), m = 0;
    for (size_t c = 0; c < t->cfg->n_choices; c++) {
        int64_t n = choice_count(t, c);
        m = n > m ? n : m;
    }
    fprintf(f, "  %-22s %7s %7s\n", "answer", "count", "%");
    for (size_t c = 0; c < t->cfg->n_choices; c++) {
        const char *ch = t->cfg->choices[c];
        char *a = clean(ch, strlen(ch), KEY_LEN, 1);
        int64_t n = choice_count(t, c);
        fputs("  ", f);
        put_cut(f, a, 22, 1);
        fprintf(f, " %7lld %6.1f%%%s", (long long)n, total ? 100.0 * (double)n / (double)total : 0,
                n ? "  " : "");
        bar(f, n, m, 36);
        fputc('\n', f);
        free(a);
    }
    fprintf(f, "  %-22s %7lld\n", "(all)", (long long)total);
}

static void text_groups(FILE *f, const char *what, const fmb_queue_group *g, size_t n)
{
    fprintf(f, "  %s:", what);
    for (size_t i = 0; i < n; i++) {
        char *v =
            clean(g[i].value ? g[i].value : "none", g[i].value ? strlen(g[i].value) : 4, 20, 1);
        fprintf(f, "%s %s %lld", i ? "," : "", v, (long long)g[i].count);
        free(v);
    }
    fputs(n ? "\n" : " none\n", f);
}

static void text_generate(const fmb_report *r, const task_rep *t, FILE *f)
{
    head(r, f, "Generate task '%s': answers", t->cfg->name);
    text_groups(f, "finish", t->groups, t->n_groups);
    if (t->cfg->n_extract)
        text_groups(f, "extract", t->extract, t->n_extract);
    fprintf(f, "  first %zu by key:\n", t->n_gen);
    for (size_t i = 0; i < t->n_gen; i++) {
        const fmb_queue_doc *d = &t->gen[i];
        char *k = key_of(d->key), *sn = snippet_of(r, d->key), *fl = fields_of(d);
        char *tx = clean(d->text, d->text_len, GEN_TEXT_LEN, 1);
        fputs("    ", f);
        put_cut(f, k, 60, 0);
        fprintf(f, " [%s]\n      doc:    ", d->finish_reason ? d->finish_reason : "?");
        put_cut(f, sn, 66, 0);
        fputs("\n      text:   \"", f);
        put_cut(f, tx, 64, 0);
        fputs("\"\n", f);
        if (t->cfg->n_extract) {
            fputs("      fields: ", f);
            put_cut(f, fl, 66, 0);
            fputc('\n', f);
        }
        free(k);
        free(sn);
        free(fl);
        free(tx);
    }
}

static void text_throughput(const fmb_report *r, FILE *f)
{
    const fmb_queue_counts *c = &r->counts;
    double wall = c->last_finished - c->first_started;
    head(r, f, "Throughput%s", NULL);
    if (!(wall > 0)) {
        fprintf(f, "  no item finished yet\n");
        return;
    }
    fprintf(f, "  %-22s %12.2f s (first start to last finish)\n", "wall time", wall);
    fprintf(f, "  %-22s %12lld  %10.3f per second\n", "documents done", (long long)c->done,
            (double)c->done / wall);
    fprintf(f, "  %-22s %12lld  %10.1f per second\n", "tokens", (long long)c->tokens,
            (double)c->tokens / wall);
    fprintf(f, "  %-22s %12.2f s (summed over items)\n", "item time", c->seconds);
}

void fmb_report_text(const fmb_report *r, FILE *f)
{
    const fmb_queue_counts *c = &r->counts;
    fputs(r->opts.bold ? "\033[1m" : "", f);
    fputs("fmbatch report: ", f);
    char *n = clean(r->name, strlen(r->name), 60, 1);
    fputs(n, f);
    free(n);
    fputs(r->opts.bold ? "\033[0m\n" : "\n", f);
    const char *paths[2][2] = {{"model", r->model}, {"output", r->output}};
    for (int i = 0; i < 2; i++) {
        char *p = clean(paths[i][1], strlen(paths[i][1]), KEY_LEN, 1);
        fprintf(f, "  %-7s ", paths[i][0]);
        put_cut(f, p, 70, 0);
        fputc('\n', f);
        free(p);
    }
    head(r, f, "Items%s", NULL);
    fprintf(f, "  %9s %9s %9s %9s %9s %9s\n", "pending", "running", "done", "failed", "dead",
            "total");
    fprintf(f, "  %9lld %9lld %9lld %9lld %9lld %9lld\n", (long long)c->pending,
            (long long)c->running, (long long)c->done, (long long)c->failed, (long long)c->dead,
            (long long)(c->pending + c->running + c->done + c->failed + c->dead));
    head(r, f, "Results by task%s", NULL);
    fprintf(f, "  %-20s %-8s %9s %9s %9s %10s\n", "task", "kind", "ok", "skipped", "truncated",
            "seconds");
    for (size_t i = 0; i < r->n_tasks; i++) {
        const task_rep *t = &r->tasks[i];
        char *tn = clean(t->cfg->name, strlen(t->cfg->name), 20, 1);
        fputs("  ", f);
        put_cut(f, tn, 20, 1);
        fprintf(f, " %-8s %9lld %9lld %9lld %10.2f\n", fmb_task_kind_name(t->cfg->kind),
                (long long)t->sum.ok, (long long)t->sum.skipped, (long long)t->sum.truncated,
                t->sum.seconds);
        free(tn);
    }
    for (size_t i = 0; i < r->n_tasks; i++) {
        const task_rep *t = &r->tasks[i];
        if (t->cfg->kind == FMB_TASK_SCORE)
            text_score(r, t, f);
        else if (t->cfg->kind == FMB_TASK_CHOICE)
            text_choice(r, t, f);
        else
            text_generate(r, t, f);
    }
    head(r, f, "Failures by kind%s", NULL);
    if (!r->n_fails)
        fprintf(f, "  none\n");
    else
        fprintf(f, "  %7s  %s\n", "count", "reason (one example)");
    for (size_t i = 0; i < r->n_fails; i++) {
        const failure *fl = &r->fails[i];
        fprintf(f, "  %7lld  ", (long long)fl->count);
        put_cut(f, fl->reason[0] ? fl->reason : "(no reason)", 68, 0);
        fputs("\n           e.g. ", f);
        put_cut(f, fl->example, 62, 0);
        if (fl->detail) {
            fputs("\n               ", f);
            put_cut(f, fl->detail, 63, 0);
        }
        fputc('\n', f);
    }
    text_throughput(r, f);
    if (r->source_note) {
        char *sn = clean(r->source_note, strlen(r->source_note), 300, 1);
        fputs("\nnote: ", f);
        put_cut(f, sn, 300, 0);
        fputc('\n', f);
        free(sn);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* HTML */

/* Escapes clean UTF-8 text for element content and attribute values. */
static void esc(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&':
            fputs("&amp;", f);
            break;
        case '<':
            fputs("&lt;", f);
            break;
        case '>':
            fputs("&gt;", f);
            break;
        case '"':
            fputs("&quot;", f);
            break;
        case '\'':
            fputs("&#39;", f);
            break;
        default:
            fputc(*s, f);
        }
    }
}

/* Cleans then escapes s[0..n). */
static void esc_n(FILE *f, const char *s, size_t n, size_t max, int collapse)
{
    char *c = clean(s, n, max, collapse);
    esc(f, c);
    free(c);
}

static void esc_s(FILE *f, const char *s)
{
    esc_n(f, s, s ? strlen(s) : 0, KEY_LEN, 1);
}

static const char css[] =
    "body{font-family:sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}"
    "h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ccc}"
    "h3{font-size:1.05em}"
    "table{border-collapse:collapse;margin:.5em 0}"
    "th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}"
    "th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}"
    ".snip,.gen{font-family:monospace;white-space:pre-wrap;word-break:break-word}"
    ".key{font-family:monospace;word-break:break-all}"
    "svg.chart{display:block;margin:.5em 0;background:#fff}"
    "svg.chart .bar{fill:#3b73b9}svg.chart .axis{stroke:#444;stroke-width:1}"
    "svg.chart text{font-family:sans-serif;font-size:11px;fill:#333}"
    ".note{color:#666}";

static void num_cell(FILE *f, const char *fmt, double x)
{
    fputs("<td class=\"n\">", f);
    if (isfinite(x))
        fprintf(f, fmt, x);
    else
        fputs("&ndash;", f);
    fputs("</td>", f);
}

static void int_cell(FILE *f, int64_t x)
{
    fprintf(f, "<td class=\"n\">%lld</td>", (long long)x);
}

/* The histogram: one bar per bin, the bin edges below, the counts above. */
static void html_hist(FILE *f, const task_rep *t)
{
    const int W = 760, H = 260, ml = 50, mr = 20, mt = 20, mb = 50;
    int pw = W - ml - mr, ph = H - mt - mb;
    int64_t m = hist_max(t);
    fprintf(f,
            "<svg class=\"chart hist\" id=\"hist-%s\" "
            "width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\">",
            t->id, W, H, W, H);
    fputs("<title>bits per byte of ", f);
    esc_s(f, t->cfg->name);
    fputs("</title>", f);
    double bw = (double)pw / t->bins;
    for (int b = 0; b < t->bins; b++) {
        double h = m ? (double)t->hist[b] * ph / (double)m : 0;
        double x = ml + b * bw, y = mt + ph - h;
        fprintf(f,
                "<rect class=\"bar\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                "data-count=\"%lld\"/>",
                x + 1, y, bw - 2, h, (long long)t->hist[b]);
        if (t->hist[b])
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%lld</text>", x + bw / 2,
                    y - 4, (long long)t->hist[b]);
    }
    for (int b = 0; b <= t->bins; b++)
        if (t->bins <= 12 || b % 2 == 0)
            fprintf(f,
                    "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%.3f</text>"
                    "<line class=\"axis\" x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\"/>",
                    ml + b * bw, mt + ph + 16, bin_edge(t, b), ml + b * bw, mt + ph, ml + b * bw,
                    mt + ph + 4);
    fprintf(f,
            "<line class=\"axis\" x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\"/>"
            "<line class=\"axis\" x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\"/>"
            "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%lld</text>"
            "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">0</text>"
            "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">bits per byte</text></svg>\n",
            ml, mt + ph, ml + pw, mt + ph, ml, mt, ml, mt + ph, ml - 6, mt + 4, (long long)m,
            ml - 6, mt + ph, ml + pw / 2, H - 8);
}

/* Horizontal bars, one per label. */
static void
html_bars(FILE *f, const char *cls, const char *id, char **labels, const int64_t *n, size_t k)
{
    const int W = 760, row = 26, ml = 200, mr = 90;
    int H = (int)k * row + 10, pw = W - ml - mr;
    int64_t m = 0, total = 0;
    for (size_t i = 0; i < k; i++) {
        m = n[i] > m ? n[i] : m;
        total += n[i];
    }
    fprintf(f,
            "<svg class=\"chart %s\" id=\"%s\" width=\"%d\" "
            "height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\">",
            cls, id, W, H, W, H);
    for (size_t i = 0; i < k; i++) {
        double w = m ? (double)n[i] * pw / (double)m : 0;
        int y = 5 + (int)i * row;
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">", ml - 8, y + 16);
        esc_n(f, labels[i], strlen(labels[i]), 30, 1);
        fprintf(f,
                "</text><rect class=\"bar\" x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"%d\" "
                "data-count=\"%lld\"/><text x=\"%.1f\" y=\"%d\">%lld (%.1f%%)</text>",
                ml, y + 2, w, row - 6, (long long)n[i], ml + w + 6, y + 16, (long long)n[i],
                total ? 100.0 * (double)n[i] / (double)total : 0);
    }
    fprintf(f, "<line class=\"axis\" x1=\"%d\" y1=\"0\" x2=\"%d\" y2=\"%d\"/></svg>\n", ml, ml, H);
}

static void
html_doc_table(const fmb_report *r, FILE *f, const char *cls, const fmb_queue_doc *d, size_t n)
{
    fprintf(f,
            "<table class=\"docs %s\"><tr><th>bits/byte</th><th>perplexity</th><th>tokens</th>"
            "<th>key</th><th>document</th></tr>\n",
            cls);
    for (size_t i = 0; i < n; i++) {
        char *sn = snippet_of(r, d[i].key);
        fputs("<tr>", f);
        num_cell(f, "%.4f", d[i].bits_per_byte);
        num_cell(f, "%.4g", d[i].ppl);
        int_cell(f, d[i].tokens);
        fputs("<td class=\"key\">", f);
        esc_s(f, d[i].key);
        fputs("</td><td class=\"snip\">", f);
        esc(f, sn);
        fputs("</td></tr>\n", f);
        free(sn);
    }
    fputs("</table>\n", f);
}

static void html_score(const fmb_report *r, const task_rep *t, FILE *f)
{
    if (!t->bpb.n) {
        fputs("<p>No scored documents yet.</p>\n", f);
        return;
    }
    fputs("<table class=\"stats\"><tr><th></th><th>min</th><th>median</th><th>mean</th>"
          "<th>max</th></tr>\n<tr><th>bits per byte</th>",
          f);
    const fmb_queue_stats *s[2] = {&t->bpb, &t->ppl};
    for (int i = 0; i < 2; i++) {
        const char *fmt = i ? "%.4g" : "%.4f";
        if (i)
            fputs("<tr><th>perplexity</th>", f);
        num_cell(f, fmt, s[i]->min);
        num_cell(f, fmt, s[i]->median);
        num_cell(f, fmt, s[i]->mean);
        num_cell(f, fmt, s[i]->max);
        fputs("</tr>\n", f);
    }
    fprintf(f,
            "</table>\n<p>%lld documents scored; bits per byte in %d bins (lower is "
            "better).</p>\n",
            (long long)t->bpb.n, t->bins);
    html_hist(f, t);
    fprintf(f, "<h3>Best %zu (lowest bits per byte)</h3>\n", t->n_best);
    html_doc_table(r, f, "best", t->best, t->n_best);
    fprintf(f, "<h3>Worst %zu (highest bits per byte)</h3>\n", t->n_worst);
    html_doc_table(r, f, "worst", t->worst, t->n_worst);
}

static void html_choice(const task_rep *t, FILE *f)
{
    size_t k = t->cfg->n_choices;
    int64_t *n = fmb_xcalloc(k ? k : 1, sizeof *n), total = choice_total(t);
    for (size_t c = 0; c < k; c++)
        n[c] = choice_count(t, c);
    char id[96];
    snprintf(id, sizeof id, "choice-%s", t->id);
    html_bars(f, "bars", id, t->cfg->choices, n, k);
    fputs("<table class=\"choices\"><tr><th>answer</th><th>count</th><th>%</th></tr>\n", f);
    for (size_t c = 0; c < k; c++) {
        fputs("<tr><td class=\"snip\">", f);
        esc_s(f, t->cfg->choices[c]);
        fputs("</td>", f);
        int_cell(f, n[c]);
        num_cell(f, "%.1f", total ? 100.0 * (double)n[c] / (double)total : NAN);
        fputs("</tr>\n", f);
    }
    fprintf(f, "<tr><th>all</th><td class=\"n\">%lld</td><td></td></tr></table>\n",
            (long long)total);
    free(n);
}

static void html_groups(FILE *f, const char *what, const fmb_queue_group *g, size_t n)
{
    fprintf(f, "<table class=\"groups\"><tr><th>%s</th><th>count</th></tr>\n", what);
    for (size_t i = 0; i < n; i++) {
        fputs("<tr><td>", f);
        esc_s(f, g[i].value ? g[i].value : "none");
        fputs("</td>", f);
        int_cell(f, g[i].count);
        fputs("</tr>\n", f);
    }
    fputs("</table>\n", f);
}

static void html_generate(const fmb_report *r, const task_rep *t, FILE *f)
{
    html_groups(f, "finish reason", t->groups, t->n_groups);
    if (t->cfg->n_extract)
        html_groups(f, "extract", t->extract, t->n_extract);
    fprintf(f,
            "<h3>First %zu answers by key</h3>\n<table class=\"answers\"><tr><th>key</th>"
            "<th>document</th><th>finish</th>%s<th>generated text</th></tr>\n",
            t->n_gen, t->cfg->n_extract ? "<th>fields</th>" : "");
    for (size_t i = 0; i < t->n_gen; i++) {
        const fmb_queue_doc *d = &t->gen[i];
        char *sn = snippet_of(r, d->key);
        fputs("<tr><td class=\"key\">", f);
        esc_s(f, d->key);
        fputs("</td><td class=\"snip\">", f);
        esc(f, sn);
        fputs("</td><td>", f);
        esc_s(f, d->finish_reason);
        fputs("</td>", f);
        if (t->cfg->n_extract) {
            char *fl = fields_of(d);
            fputs("<td class=\"snip\">", f);
            esc(f, fl);
            fputs("</td>", f);
            free(fl);
        }
        fputs("<td class=\"gen\">", f);
        esc_n(f, d->text, d->text_len, GEN_TEXT_LEN, 0);
        fputs("</td></tr>\n", f);
        free(sn);
    }
    fputs("</table>\n", f);
}

void fmb_report_html(const fmb_report *r, FILE *f)
{
    const fmb_queue_counts *c = &r->counts;
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>fmbatch "
          "report: ",
          f);
    esc_s(f, r->name);
    fprintf(f, "</title>\n<style>%s</style>\n</head>\n<body>\n<h1>fmbatch report: ", css);
    esc_s(f, r->name);
    fputs("</h1>\n<table class=\"meta\"><tr><th>model</th><td class=\"key\">", f);
    esc_s(f, r->model);
    fputs("</td></tr><tr><th>output</th><td class=\"key\">", f);
    esc_s(f, r->output);
    fputs("</td></tr></table>\n", f);

    fputs("<h2>Items</h2>\n", f);
    const char *names[5] = {"pending", "running", "done", "failed", "dead"};
    int64_t counts[5] = {c->pending, c->running, c->done, c->failed, c->dead};
    char *labels[5];
    for (int i = 0; i < 5; i++)
        labels[i] = (char *)names[i];
    html_bars(f, "bars", "items", labels, counts, 5);
    fputs("<table class=\"counts\"><tr>", f);
    for (int i = 0; i < 5; i++)
        fprintf(f, "<th>%s</th>", names[i]);
    fputs("<th>total</th></tr>\n<tr>", f);
    for (int i = 0; i < 5; i++)
        int_cell(f, counts[i]);
    int_cell(f, c->pending + c->running + c->done + c->failed + c->dead);
    fputs("</tr></table>\n", f);

    fputs("<h2>Results by task</h2>\n<table class=\"tasks\"><tr><th>task</th><th>kind</th>"
          "<th>ok</th><th>skipped</th><th>truncated</th><th>seconds</th></tr>\n",
          f);
    for (size_t i = 0; i < r->n_tasks; i++) {
        const task_rep *t = &r->tasks[i];
        fputs("<tr><td>", f);
        esc_s(f, t->cfg->name);
        fprintf(f, "</td><td>%s</td>", fmb_task_kind_name(t->cfg->kind));
        int_cell(f, t->sum.ok);
        int_cell(f, t->sum.skipped);
        int_cell(f, t->sum.truncated);
        num_cell(f, "%.2f", t->sum.seconds);
        fputs("</tr>\n", f);
    }
    fputs("</table>\n", f);

    for (size_t i = 0; i < r->n_tasks; i++) {
        const task_rep *t = &r->tasks[i];
        const char *kind = fmb_task_kind_name(t->cfg->kind);
        fprintf(f, "<section class=\"task %s\" id=\"task-%s\">\n<h2>%c%s task &lsquo;", kind, t->id,
                kind[0] - 'a' + 'A', kind + 1);
        esc_s(f, t->cfg->name);
        fputs("&rsquo;</h2>\n", f);
        if (t->cfg->kind == FMB_TASK_SCORE)
            html_score(r, t, f);
        else if (t->cfg->kind == FMB_TASK_CHOICE)
            html_choice(t, f);
        else
            html_generate(r, t, f);
        fputs("</section>\n", f);
    }

    fputs("<h2>Failures by kind</h2>\n", f);
    if (!r->n_fails)
        fputs("<p>None.</p>\n", f);
    else
        fputs("<table class=\"failures\"><tr><th>count</th><th>reason</th><th>example</th>"
              "<th>its error</th></tr>\n",
              f);
    for (size_t i = 0; i < r->n_fails; i++) {
        const failure *fl = &r->fails[i];
        fputs("<tr>", f);
        int_cell(f, fl->count);
        fputs("<td>", f);
        esc(f, fl->reason);
        fputs("</td><td class=\"key\">", f);
        esc(f, fl->example);
        fputs("</td><td>", f);
        esc(f, fl->detail);
        fputs("</td></tr>\n", f);
    }
    if (r->n_fails)
        fputs("</table>\n", f);

    fputs("<h2>Throughput</h2>\n", f);
    double wall = c->last_finished - c->first_started;
    if (!(wall > 0)) {
        fputs("<p>No item finished yet.</p>\n", f);
    } else {
        fputs("<table class=\"throughput\"><tr><th>wall time (s)</th>", f);
        num_cell(f, "%.2f", wall);
        fputs("<td>first start to last finish</td></tr>\n<tr><th>documents done</th>", f);
        int_cell(f, c->done);
        fprintf(f, "<td>%.3f per second</td></tr>\n<tr><th>tokens</th>", (double)c->done / wall);
        int_cell(f, c->tokens);
        fprintf(f, "<td>%.1f per second</td></tr>\n<tr><th>item time (s)</th>",
                (double)c->tokens / wall);
        num_cell(f, "%.2f", c->seconds);
        fputs("<td>summed over items</td></tr></table>\n", f);
    }
    if (r->source_note) {
        fputs("<p class=\"note\">", f);
        esc_s(f, r->source_note);
        fputs("</p>\n", f);
    }
    fputs("</body>\n</html>\n", f);
}
