/*
 * task: score, choice and generate over one document with one shared prefill per distinct
 * template prefix. See task.h.
 */
#include "batch/task.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch/extract.h"
#include "engine/generate.h"
#include "engine/sample.h"
#include "engine/score.h"

typedef struct {
    const char *before; /* template text before {document} (borrowed from the job) */
    fmb_ids before_ids;
    int has_score;
    size_t *tasks; /* indices into job->tasks of the choice/generate tasks of this group */
    size_t n_tasks;
} group;

typedef struct {
    fmb_ids rest;     /* choice/generate: text after {document} */
    fmb_ids *cands;   /* choice: [n_choices] */
    fmb_extract *ext; /* generate with extract */
} task_prep;

struct fmb_tasks {
    const fmb_job *job;
    fmb_engine *eng;
    const fmb_tok *tok;
    int32_t ctx; /* the model's EOS: context of the first document token */
    group *groups;
    size_t n_groups;
    task_prep *prep;
    fmb_state *snap, *work;
    fmb_result_row *rows;
    /* per-document allocations the rows point to, freed at the next run */
    void **owned;
    size_t n_owned, cap_owned;
    int need_offsets, per_token, top_k_tokens;
};

static void *own(fmb_tasks *t, void *p)
{
    if (t->n_owned == t->cap_owned) {
        t->cap_owned = t->cap_owned ? t->cap_owned * 2 : 32;
        t->owned = realloc(t->owned, t->cap_owned * sizeof *t->owned);
        FMB_ASSERT(t->owned);
    }
    t->owned[t->n_owned++] = p;
    return p;
}

static void free_owned(fmb_tasks *t)
{
    for (size_t i = 0; i < t->n_owned; i++)
        free(t->owned[i]);
    t->n_owned = 0;
}

int64_t fmb_task_item_seed(uint64_t seed, const char *key, const char *task_name)
{
    unsigned char le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (unsigned char)(seed >> (8 * i));
    uint64_t h = fmb_hash64(0, le, 8);
    h = fmb_hash64(h, key, strlen(key) + 1); /* the NUL separates key and task name */
    h = fmb_hash64(h, task_name, strlen(task_name));
    return (int64_t)(h & (uint64_t)INT64_MAX);
}

void fmb_tasks_free(fmb_tasks *t)
{
    if (!t)
        return;
    for (size_t g = 0; g < t->n_groups; g++) {
        fmb_ids_free(&t->groups[g].before_ids);
        free(t->groups[g].tasks);
    }
    free(t->groups);
    for (size_t i = 0; t->prep && i < t->job->n_tasks; i++) {
        fmb_ids_free(&t->prep[i].rest);
        for (size_t c = 0; t->prep[i].cands && c < t->job->tasks[i].n_choices; c++)
            fmb_ids_free(&t->prep[i].cands[c]);
        free(t->prep[i].cands);
        fmb_extract_free(t->prep[i].ext);
    }
    free(t->prep);
    fmb_state_free(t->snap);
    fmb_state_free(t->work);
    free(t->rows);
    free_owned(t);
    free(t->owned);
    free(t);
}

static group *group_for(fmb_tasks *t, const char *before)
{
    for (size_t g = 0; g < t->n_groups; g++)
        if (!strcmp(t->groups[g].before, before))
            return &t->groups[g];
    group *g = &t->groups[t->n_groups++];
    memset(g, 0, sizeof *g);
    g->before = before;
    g->tasks = fmb_xcalloc(t->job->n_tasks, sizeof *g->tasks);
    return g;
}

fmb_status fmb_tasks_new(
    const fmb_job *job, fmb_engine *eng, const fmb_tok *tok, fmb_tasks **out, fmb_err *err)
{
    *out = NULL;
    fmb_tasks *t = fmb_xcalloc(1, sizeof *t);
    t->job = job;
    t->eng = eng;
    t->tok = tok;
    const fmb_config *cfg = fmb_engine_config(eng);
    t->ctx = cfg->n_eos ? cfg->eos_ids[0] : -1;
    t->groups = fmb_xcalloc(job->n_tasks + 1, sizeof *t->groups);
    t->prep = fmb_xcalloc(job->n_tasks, sizeof *t->prep);
    t->rows = fmb_xcalloc(job->n_tasks, sizeof *t->rows);
    t->need_offsets = job->max_document_tokens > 0;
    fmb_status s;
    for (size_t i = 0; i < job->n_tasks; i++) {
        const fmb_task_cfg *tc = &job->tasks[i];
        task_prep *p = &t->prep[i];
        if (tc->kind == FMB_TASK_SCORE) {
            group_for(t, "")->has_score = 1;
            if (tc->per_token) {
                t->per_token = 1;
                t->need_offsets = 1;
                if (tc->top_k_tokens > t->top_k_tokens)
                    t->top_k_tokens = tc->top_k_tokens;
            }
            continue;
        }
        group *g = group_for(t, tc->prefix);
        g->tasks[g->n_tasks++] = i;
        if ((s = fmb_tok_encode(tok, tc->suffix, strlen(tc->suffix), 1, &p->rest, err)))
            goto fail;
        if (tc->kind == FMB_TASK_CHOICE) {
            p->cands = fmb_xcalloc(tc->n_choices, sizeof *p->cands);
            for (size_t c = 0; c < tc->n_choices; c++) {
                if ((s = fmb_tok_encode(tok, tc->choices[c], strlen(tc->choices[c]), 1,
                                        &p->cands[c], err)))
                    goto fail;
                if (p->cands[c].n == 0) {
                    s = fmb_fail(err, FMB_EINVAL, "%s: task '%s': choice %zu encodes to no token",
                                 job->path, tc->name, c);
                    goto fail;
                }
            }
        }
        if (tc->n_extract && (s = fmb_extract_new(tc, job->path, &p->ext, err)))
            goto fail;
    }
    for (size_t g = 0; g < t->n_groups; g++) {
        const char *b = t->groups[g].before;
        if (b[0] && (s = fmb_tok_encode(tok, b, strlen(b), 1, &t->groups[g].before_ids, err)))
            goto fail;
    }
    if ((s = fmb_state_new(eng, &t->snap, err)) || (s = fmb_state_new(eng, &t->work, err)))
        goto fail;
    *out = t;
    return FMB_OK;
fail:
    fmb_tasks_free(t);
    return s;
}

/* ---------------------------------------------------------------------------------------- */
/* small JSON writers for the row's text columns */

typedef struct {
    char *p;
    size_t n, cap;
} sbuf;

static void sb(sbuf *b, const char *fmt, ...) FMB_PRINTF_LIKE(2, 3);
static void sb(sbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        FMB_ASSERT(k >= 0);
        if (b->p && (size_t)k < b->cap - b->n) {
            b->n += (size_t)k;
            return;
        }
        b->cap = b->cap * 2 + (size_t)k + 256;
        b->p = realloc(b->p, b->cap);
        FMB_ASSERT(b->p);
    }
}

static void sb_num(sbuf *b, double x)
{
    if (isfinite(x))
        sb(b, "%.9g", x);
    else
        sb(b, "null");
}

static char *json_str_list(char **v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    char *s = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return s;
}

/* ---------------------------------------------------------------------------------------- */

static fmb_status
run_choice(fmb_tasks *t, const fmb_task_cfg *tc, task_prep *p, fmb_result_row *row, fmb_err *err)
{
    size_t nr = p->rest.n;
    FMB_ASSERT(nr > 0);
    sbuf js = {0};
    sb(&js, "[");
    double best = -INFINITY;
    int64_t best_i = 0;
    for (size_t c = 0; c < tc->n_choices; c++) {
        const fmb_ids *cd = &p->cands[c];
        size_t n = nr + cd->n - 1;
        int32_t *ids = fmb_xmalloc(n * sizeof *ids);
        int32_t *tg = fmb_xmalloc(n * sizeof *tg);
        float *lp = fmb_xmalloc(n * sizeof *lp);
        memcpy(ids, p->rest.ids, nr * sizeof *ids);
        memcpy(ids + nr, cd->ids, (cd->n - 1) * sizeof *ids);
        for (size_t i = 0; i < n; i++)
            tg[i] = i + 1 < nr ? -1 : cd->ids[i + 1 - nr];
        fmb_outputs o;
        memset(&o, 0, sizeof o);
        o.targets = tg;
        o.logprob = lp;
        fmb_state_copy(t->work, t->snap);
        fmb_status s = fmb_engine_forward(t->eng, t->work, ids, n, &o, err);
        double total = 0;
        for (size_t i = nr - 1; !s && i < n; i++)
            total += lp[i];
        free(ids);
        free(tg);
        free(lp);
        if (s) {
            free(js.p);
            return s;
        }
        double mean = total / (double)cd->n;
        double key = tc->choice_by_mean ? mean : total;
        if (key > best) {
            best = key;
            best_i = (int64_t)c;
        }
        json_t *txt = json_string(tc->choices[c]);
        char *ts = json_dumps(txt, JSON_ENCODE_ANY);
        json_decref(txt);
        sb(&js, "%s{\"text\":%s,\"tokens\":%zu,\"total\":", c ? "," : "", ts, cd->n);
        free(ts);
        sb_num(&js, total);
        sb(&js, ",\"mean\":");
        sb_num(&js, mean);
        sb(&js, "}");
    }
    sb(&js, "]");
    row->choices_json = own(t, js.p);
    row->best = tc->choices[best_i];
    row->best_index = best_i;
    row->prompt_tokens = (int64_t)nr;
    return FMB_OK;
}

static fmb_status run_generate(fmb_tasks *t,
                               const char *key,
                               const fmb_task_cfg *tc,
                               task_prep *p,
                               fmb_result_row *row,
                               fmb_err *err)
{
    const fmb_config *cfg = fmb_engine_config(t->eng);
    fmb_gen_opts go;
    memset(&go, 0, sizeof go);
    go.max_new_tokens = (size_t)tc->max_new_tokens;
    go.sample.temperature = (float)tc->temperature;
    go.sample.top_k = (int)tc->top_k;
    go.sample.top_p = (float)tc->top_p;
    int64_t seed = fmb_task_item_seed(tc->has_seed ? tc->seed : t->job->seed, key, tc->name);
    go.sample.seed = (uint64_t)seed;
    go.sample.stream = 0;
    go.eos_ids = tc->n_eos ? tc->eos : cfg->eos_ids;
    go.n_eos = tc->n_eos ? tc->n_eos : cfg->n_eos;
    go.ignore_eos = tc->ignore_eos;
    go.stop = (const char *const *)tc->stop;
    go.n_stop = (int)tc->n_stop;
    fmb_state_copy(t->work, t->snap);
    fmb_gen_result r;
    memset(&r, 0, sizeof r);
    fmb_status s = fmb_generate(t->eng, t->work, t->tok, p->rest.ids, p->rest.n, &go, &r, err);
    if (s) {
        fmb_gen_result_free(&r);
        return s;
    }
    sbuf ids = {0}, lps = {0};
    sb(&ids, "[");
    sb(&lps, "[");
    for (size_t i = 0; i < r.n; i++) {
        sb(&ids, "%s%d", i ? "," : "", r.ids[i]);
        sb(&lps, "%s", i ? "," : "");
        sb_num(&lps, r.logprobs[i]);
    }
    sb(&ids, "]");
    sb(&lps, "]");
    row->ids_json = own(t, ids.p);
    row->logprobs_json = own(t, lps.p);
    row->finish_reason = r.finish_reason; /* static */
    row->prompt_tokens = (int64_t)p->rest.n;
    row->seed = seed;
    row->tokens = (int64_t)r.n;
    if (r.text) {
        row->text = own(t, r.text);
        row->text_len = r.text_len;
        r.text = NULL;
    }
    /* sampling settings as recorded provenance */
    sbuf sm = {0};
    char *stop = json_str_list(tc->stop, tc->n_stop);
    sb(&sm, "{\"max_new_tokens\":%lld,\"temperature\":", (long long)tc->max_new_tokens);
    sb_num(&sm, tc->temperature);
    sb(&sm, ",\"top_k\":%lld,\"top_p\":", (long long)tc->top_k);
    sb_num(&sm, tc->top_p);
    sb(&sm, ",\"seed\":%lld,\"stream\":0,\"stop\":%s,\"eos\":[", (long long)seed,
       stop ? stop : "[]");
    free(stop);
    for (int i = 0; i < go.n_eos; i++)
        sb(&sm, "%s%d", i ? "," : "", go.eos_ids[i]);
    sb(&sm, "],\"ignore_eos\":%s}", tc->ignore_eos ? "true" : "false");
    row->sampling_json = own(t, sm.p);
    if (p->ext) {
        char *json = NULL;
        s = fmb_extract_run(p->ext, row->text ? row->text : "", row->text ? row->text_len : 0,
                            &json, err);
        if (s) {
            char msg[sizeof err->msg];
            snprintf(msg, sizeof msg, "%s", err->msg);
            fmb_gen_result_free(&r);
            return fmb_fail(err, s, "%s", msg);
        }
        row->extract_json = own(t, json);
    }
    fmb_gen_result_free(&r);
    return FMB_OK;
}

static void *blob_copy(fmb_tasks *t, const void *p, size_t n)
{
    void *b = fmb_xmalloc(n ? n : 1);
    if (n)
        memcpy(b, p, n);
    return own(t, b);
}

fmb_status fmb_tasks_run(fmb_tasks *t,
                         const char *key,
                         const char *doc,
                         size_t len,
                         const volatile sig_atomic_t *stop,
                         fmb_task_output *out,
                         fmb_err *err)
{
    const fmb_job *job = t->job;
    free_owned(t);
    out->rows = t->rows;
    out->n = job->n_tasks;
    out->doc_tokens = 0;
    for (size_t i = 0; i < job->n_tasks; i++) {
        t->rows[i] = fmb_result_row_empty();
        t->rows[i].task = job->tasks[i].name;
        t->rows[i].kind = fmb_task_kind_name(job->tasks[i].kind);
        t->rows[i].status = "ok";
    }
    fmb_ids d;
    memset(&d, 0, sizeof d);
    d.want_offsets = t->need_offsets;
    fmb_status s = fmb_tok_encode(t->tok, doc, len, 0, &d, err);
    if (s) {
        fmb_ids_free(&d);
        return s;
    }
    size_t n_doc = d.n, bytes = len;
    int truncated = 0;
    char *note = NULL;
    if (job->max_document_tokens > 0 && d.n > (size_t)job->max_document_tokens) {
        char buf[200];
        if (job->too_long == FMB_TOO_LONG_SKIP) {
            snprintf(buf, sizeof buf,
                     "skipped: the document has %zu tokens, over "
                     "max_document_tokens %lld",
                     d.n, (long long)job->max_document_tokens);
            note = own(t, fmb_xstrdup(buf));
            for (size_t i = 0; i < job->n_tasks; i++) {
                t->rows[i].status = "skipped";
                t->rows[i].note = note;
                t->rows[i].doc_tokens = (int64_t)d.n;
            }
            fmb_ids_free(&d);
            return FMB_OK;
        }
        n_doc = (size_t)job->max_document_tokens;
        bytes = d.offsets[n_doc];
        truncated = 1;
        snprintf(buf, sizeof buf,
                 "truncated: the document has %zu tokens, the first %zu were "
                 "used (%zu of %zu bytes)",
                 d.n, n_doc, bytes, len);
        note = own(t, fmb_xstrdup(buf));
    }
    out->doc_tokens = (int64_t)n_doc;
    for (size_t i = 0; i < job->n_tasks; i++) {
        t->rows[i].doc_tokens = (int64_t)n_doc;
        t->rows[i].truncated = truncated;
        t->rows[i].note = note;
    }
    for (size_t g = 0; g < t->n_groups && !s; g++) {
        group *gr = &t->groups[g];
        if (*stop) {
            s = FMB_EINTR;
            break;
        }
        double t0 = fmb_now();
        fmb_state_reset(t->snap);
        if (gr->has_score) {
            fmb_score_opts so = {t->ctx, t->per_token, t->top_k_tokens};
            fmb_score_result sr;
            memset(&sr, 0, sizeof sr);
            s = fmb_score(t->eng, t->snap, d.ids, n_doc, bytes, &so, &sr, err);
            double dt = fmb_now() - t0;
            for (size_t i = 0; !s && i < job->n_tasks; i++) {
                const fmb_task_cfg *tc = &job->tasks[i];
                if (tc->kind != FMB_TASK_SCORE)
                    continue;
                fmb_result_row *row = &t->rows[i];
                row->tokens = (int64_t)sr.tokens;
                row->sum_nll = sr.sum_nll;
                row->mean_nll = sr.mean_nll;
                row->ppl = sr.ppl;
                row->bits_per_byte = sr.bits_per_byte;
                row->prefill_seconds = dt;
                row->task_seconds = dt;
                if (tc->per_token && sr.nll) {
                    size_t m = sr.scored;
                    row->token_nll = blob_copy(t, sr.nll, m * sizeof(float));
                    row->token_nll_bytes = m * sizeof(float);
                    row->token_rank = blob_copy(t, sr.rank, m * sizeof(int32_t));
                    row->token_rank_bytes = m * sizeof(int32_t);
                    uint32_t *offs = own(t, fmb_xmalloc((n_doc ? n_doc : 1) * sizeof *offs));
                    for (size_t k = 0; k < n_doc; k++)
                        offs[k] = d.offsets[k] > UINT32_MAX ? UINT32_MAX : (uint32_t)d.offsets[k];
                    row->token_offset = offs;
                    row->token_offset_bytes = n_doc * sizeof *offs;
                    if (tc->top_k_tokens && sr.topk_ids) {
                        /* the shared scoring used the largest top-k of all score tasks */
                        size_t K = (size_t)t->top_k_tokens, k = (size_t)tc->top_k_tokens;
                        int32_t *ti = own(t, fmb_xmalloc((m ? m : 1) * k * sizeof *ti));
                        float *tl = own(t, fmb_xmalloc((m ? m : 1) * k * sizeof *tl));
                        for (size_t q = 0; q < m; q++)
                            for (size_t j = 0; j < k; j++) {
                                ti[q * k + j] = sr.topk_ids[q * K + j];
                                tl[q * k + j] = sr.topk_logprobs[q * K + j];
                            }
                        row->token_topk_ids = ti;
                        row->token_topk_ids_bytes = m * k * sizeof *ti;
                        row->token_topk_logprobs = tl;
                        row->token_topk_logprobs_bytes = m * k * sizeof *tl;
                    }
                }
            }
            fmb_score_result_free(&sr);
        } else {
            fmb_ids pre;
            memset(&pre, 0, sizeof pre);
            if (t->ctx >= 0)
                fmb_ids_push(&pre, t->ctx, 0);
            for (size_t k = 0; k < gr->before_ids.n; k++)
                fmb_ids_push(&pre, gr->before_ids.ids[k], 0);
            for (size_t k = 0; k < n_doc; k++)
                fmb_ids_push(&pre, d.ids[k], 0);
            s = fmb_engine_forward(t->eng, t->snap, pre.ids, pre.n, NULL, err);
            fmb_ids_free(&pre);
        }
        double prefill = fmb_now() - t0;
        for (size_t k = 0; !s && k < gr->n_tasks; k++) {
            if (*stop) {
                s = FMB_EINTR;
                break;
            }
            size_t i = gr->tasks[k];
            const fmb_task_cfg *tc = &job->tasks[i];
            double t1 = fmb_now();
            if (tc->kind == FMB_TASK_CHOICE)
                s = run_choice(t, tc, &t->prep[i], &t->rows[i], err);
            else
                s = run_generate(t, key, tc, &t->prep[i], &t->rows[i], err);
            if (s) {
                char msg[sizeof err->msg];
                snprintf(msg, sizeof msg, "%s", err->msg);
                s = fmb_fail(err, s, "task '%s': %s", tc->name, msg);
            }
            t->rows[i].prefill_seconds = prefill;
            t->rows[i].task_seconds = fmb_now() - t1;
        }
    }
    fmb_ids_free(&d);
    if (s == FMB_EINTR)
        fmb_fail(err, FMB_EINTR, "interrupted");
    return s;
}
