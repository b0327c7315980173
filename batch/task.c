/*
 * task: score, choice and generate over a batch of documents, with one shared prefill per
 * distinct template prefix of each document, packed across documents. See task.h.
 *
 * A batch runs in three phases, each a few engine calls for all its documents:
 *   prefill   one piece per (document, prefix group) into that document's snapshot state of
 *             the group (fmb_engine_forward_many); a score group's piece carries the scoring
 *             outputs (fmb_score_begin/end).
 *   choices   one piece per (document, choice task, candidate), each from a copy of its
 *             snapshot in a work state, packed in rounds of at most plan.max_seqs pieces.
 *   generate  a continuous batch of at most plan.max_seqs generations: free slots take the
 *             next generation (its prompt rest prefilled, packed with the other newcomers),
 *             then one fmb_engine_step advances every active one; a finished one frees its
 *             slot at once.
 * Every engine call is batch-invariant (engine.h), so a document's rows do not depend on the
 * batch it was in, the order, or max_batch.
 */
#include "batch/task.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch/extract.h"
#include "batch/prompt.h"
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
    fmb_tasks_plan plan;
    fmb_tasks_stats stats;
    fmb_state **snap; /* [max_docs · n_groups]: document d's group g at d · n_groups + g */
    fmb_state **work; /* [max_seqs] */
    int need_offsets, per_token, top_k_tokens;
    void (*step_fn)(void *); /* fmb_tasks_set_step_hook; NULL: none */
    void *step_ctx;
};

static void *own(fmb_task_output *o, void *p)
{
    if (o->n_owned == o->cap_owned) {
        o->cap_owned = o->cap_owned ? o->cap_owned * 2 : 32;
        o->owned = fmb_xrealloc(o->owned, o->cap_owned, sizeof *o->owned);
    }
    o->owned[o->n_owned++] = p;
    return p;
}

void fmb_task_output_free(fmb_task_output *o)
{
    for (size_t i = 0; i < o->n_owned; i++)
        free(o->owned[i]);
    free(o->owned);
    memset(o, 0, sizeof *o);
}

void fmb_tasks_set_step_hook(fmb_tasks *t, void (*fn)(void *ctx), void *ctx)
{
    t->step_fn = fn;
    t->step_ctx = ctx;
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

static void free_states(fmb_state **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        fmb_state_free(v[i]);
    free(v);
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
    free_states(t->snap, t->plan.max_docs * t->n_groups);
    free_states(t->work, t->plan.max_seqs);
    free(t);
}

const fmb_tasks_stats *fmb_tasks_stats_get(const fmb_tasks *t)
{
    return &t->stats;
}

/* fmb_engine_forward_many, timed into the stats. */
static fmb_status forward_many(fmb_tasks *t, const fmb_piece *pcs, size_t n, fmb_err *err)
{
    double t0 = fmb_now();
    fmb_status s = fmb_engine_forward_many(t->eng, pcs, n, err);
    t->stats.prefill_seconds += fmb_now() - t0;
    for (size_t i = 0; i < n; i++)
        t->stats.prefill_tokens += (int64_t)pcs[i].n;
    return s;
}

const fmb_tasks_plan *fmb_tasks_plan_get(const fmb_tasks *t)
{
    return &t->plan;
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

/* The plan: max_batch documents and as many work sequences, fewer when the states do not
 * fit the device (its free memory, or what mem_limit leaves after weights and scratch). */
static fmb_status plan_states(fmb_tasks *t, size_t max_batch, size_t mem_limit, fmb_err *err)
{
    fmb_engine_mem m;
    fmb_engine_memory(t->eng, &m);
    size_t G = t->n_groups, B = max_batch ? max_batch : 1;
    size_t fit = SIZE_MAX;
    if (m.device_total && m.state_bytes) {
        size_t margin = (size_t)256 << 20; /* cuBLAS workspaces, graphs, fragmentation */
        size_t avail = m.device_free > margin ? m.device_free - margin : 0;
        if (mem_limit) {
            size_t used = m.weights_bytes + m.scratch_bytes + ((size_t)600 << 20);
            size_t left = mem_limit > used ? mem_limit - used : 0;
            if (left < avail)
                avail = left;
        }
        fit = avail / m.state_bytes;
    }
    // each document needs G snapshots, each work sequence one state
    if (fit < G + 1)
        return fmb_fail(err, FMB_ENOMEM,
                        "the device holds %zu recurrent states of %.1f MiB, a document needs %zu",
                        fit, (double)m.state_bytes / 1048576.0, G + 1);
    if (B * (G + 1) > fit)
        B = fit / (G + 1);
    t->plan.max_docs = B;
    t->plan.max_seqs = B;
    t->plan.states = B * G + B;
    t->plan.state_bytes = m.state_bytes;
    return FMB_OK;
}

fmb_status fmb_tasks_new(const fmb_job *job,
                         fmb_engine *eng,
                         const fmb_tok *tok,
                         size_t max_batch,
                         size_t mem_limit,
                         fmb_tasks **out,
                         fmb_err *err)
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
        if (tc->kind == FMB_TASK_GENERATE && tc->logprobs > cfg->V) {
            s = fmb_fail(
                err, FMB_EINVAL,
                "%s: task '%s': logprobs = %lld is more than the model's vocabulary (%lld)",
                job->path, tc->name, (long long)tc->logprobs, (long long)cfg->V);
            goto fail;
        }
    }
    for (size_t g = 0; g < t->n_groups; g++) {
        const char *b = t->groups[g].before;
        if (b[0] && (s = fmb_tok_encode(tok, b, strlen(b), 1, &t->groups[g].before_ids, err)))
            goto fail;
    }
    if ((s = plan_states(t, max_batch, mem_limit, err)))
        goto fail;
    size_t ns = t->plan.max_docs * t->n_groups;
    t->snap = fmb_xcalloc(ns ? ns : 1, sizeof *t->snap);
    t->work = fmb_xcalloc(t->plan.max_seqs, sizeof *t->work);
    for (size_t i = 0; i < ns; i++)
        if ((s = fmb_state_new(eng, &t->snap[i], err)))
            goto fail;
    for (size_t i = 0; i < t->plan.max_seqs; i++)
        if ((s = fmb_state_new(eng, &t->work[i], err)))
            goto fail;
    *out = t;
    return FMB_OK;
fail:
    fmb_tasks_free(t);
    return s;
}

/* ---------------------------------------------------------------------------------------- */
/* small JSON writers for the row's text columns */

static void sb_num(fmb_sb *b, double x)
{
    if (isfinite(x))
        fmb_sb_printf(b, "%.9g", x);
    else
        fmb_sb_puts(b, "null");
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

/* ---------------------------------------------------------------------------------------- */
/* one batch */

/* A document of the batch while it runs. */
typedef struct {
    const fmb_task_doc *doc;
    fmb_task_output *out;
    fmb_ids ids;         /* the document's tokens (offsets when needed) */
    size_t n_doc;        /* tokens used (after truncation) */
    size_t bytes;        /* bytes those tokens cover */
    int live;            /* 0: failed or skipped, nothing more to run */
    double *totals;      /* [Σ choice candidates]: total log-probability of each candidate */
    unsigned char *skip; /* [n_tasks]: 1 = not to run (fmb_task_doc.skip) */
} bdoc;

static void doc_fail(bdoc *d, fmb_status s, const char *fmt, ...) FMB_PRINTF_LIKE(3, 4);
static void doc_fail(bdoc *d, fmb_status s, const char *fmt, ...)
{
    if (!d->live)
        return;
    d->live = 0;
    d->out->status = s;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->out->error, sizeof d->out->error, fmt, ap);
    va_end(ap);
}

/* Tokenizes a document and applies max_document_tokens (truncate or skip). */
static void doc_begin(fmb_tasks *t, bdoc *d)
{
    const fmb_job *job = t->job;
    fmb_task_output *o = d->out;
    o->rows = own(o, fmb_xcalloc(job->n_tasks ? job->n_tasks : 1, sizeof *o->rows));
    o->n = job->n_tasks;
    for (size_t i = 0; i < job->n_tasks; i++) {
        o->rows[i] = fmb_result_row_empty();
        o->rows[i].task = job->tasks[i].name;
        o->rows[i].kind = fmb_task_kind_name(job->tasks[i].kind);
        o->rows[i].status = "ok";
    }
    d->live = 1;
    d->skip = own(o, fmb_xcalloc(job->n_tasks ? job->n_tasks : 1, 1));
    for (size_t i = 0; i < job->n_tasks; i++)
        for (size_t k = 0; k < d->doc->n_skip; k++)
            if (!strcmp(d->doc->skip[k], job->tasks[i].name))
                d->skip[i] = 1;
    d->ids.want_offsets = t->need_offsets;
    fmb_err err;
    fmb_status s = fmb_tok_encode(t->tok, d->doc->data, d->doc->len, 0, &d->ids, &err);
    if (s) {
        doc_fail(d, s, "%s", err.msg);
        return;
    }
    size_t len = d->doc->len;
    d->n_doc = d->ids.n;
    d->bytes = len;
    int truncated = 0;
    char *note = NULL;
    if (job->max_document_tokens > 0 && d->ids.n > (size_t)job->max_document_tokens) {
        char buf[200];
        if (job->too_long == FMB_TOO_LONG_SKIP) {
            snprintf(buf, sizeof buf,
                     "skipped: the document has %zu tokens, over "
                     "max_document_tokens %lld",
                     d->ids.n, (long long)job->max_document_tokens);
            note = own(o, fmb_xstrdup(buf));
            for (size_t i = 0; i < job->n_tasks; i++) {
                o->rows[i].status = "skipped";
                o->rows[i].note = note;
                o->rows[i].doc_tokens = (int64_t)d->ids.n;
            }
            d->live = 0;
            return;
        }
        d->n_doc = (size_t)job->max_document_tokens;
        d->bytes = d->ids.offsets[d->n_doc];
        truncated = 1;
        snprintf(buf, sizeof buf,
                 "truncated: the document has %zu tokens, the first %zu were "
                 "used (%zu of %zu bytes)",
                 d->ids.n, d->n_doc, d->bytes, len);
        note = own(o, fmb_xstrdup(buf));
    }
    // NUL bytes say the document is probably binary: it is scored all the same, and its rows
    // say so (a filter can drop them by the note)
    if (len && memchr(d->doc->data, 0, len)) {
        fmb_sb nb = {0};
        fmb_sb_printf(&nb, "%s%sbinary: the document holds NUL bytes", note ? note : "",
                      note ? "; " : "");
        note = own(o, fmb_sb_take(&nb));
    }
    o->doc_tokens = (int64_t)d->n_doc;
    for (size_t i = 0; i < job->n_tasks; i++) {
        o->rows[i].doc_tokens = (int64_t)d->n_doc;
        o->rows[i].truncated = truncated;
        o->rows[i].note = note;
    }
}

static void *blob_copy(fmb_task_output *o, const void *p, size_t n)
{
    void *b = fmb_xmalloc(n ? n : 1);
    if (n)
        memcpy(b, p, n);
    return own(o, b);
}

/* The score rows of a document from its score result. */
static void score_rows(fmb_tasks *t, bdoc *d, const fmb_score_result *sr, double dt)
{
    const fmb_job *job = t->job;
    fmb_task_output *o = d->out;
    if (!isfinite(sr->sum_nll)) {
        doc_fail(d, FMB_EINVAL, "score: the model gave a non-finite log-probability");
        return;
    }
    for (size_t i = 0; i < job->n_tasks; i++) {
        const fmb_task_cfg *tc = &job->tasks[i];
        if (tc->kind != FMB_TASK_SCORE)
            continue;
        fmb_result_row *row = &o->rows[i];
        row->tokens = (int64_t)sr->tokens;
        row->sum_nll = sr->sum_nll;
        row->mean_nll = sr->mean_nll;
        row->ppl = sr->ppl;
        row->bits_per_byte = sr->bits_per_byte;
        row->prefill_seconds = dt;
        row->task_seconds = dt;
        if (!tc->per_token || !sr->nll)
            continue;
        size_t m = sr->scored, n_doc = d->n_doc;
        row->token_nll = blob_copy(o, sr->nll, m * sizeof(float));
        row->token_nll_bytes = m * sizeof(float);
        row->token_rank = blob_copy(o, sr->rank, m * sizeof(int32_t));
        row->token_rank_bytes = m * sizeof(int32_t);
        uint32_t *offs = own(o, fmb_xmalloc((n_doc ? n_doc : 1) * sizeof *offs));
        for (size_t k = 0; k < n_doc; k++)
            offs[k] = d->ids.offsets[k] > UINT32_MAX ? UINT32_MAX : (uint32_t)d->ids.offsets[k];
        row->token_offset = offs;
        row->token_offset_bytes = n_doc * sizeof *offs;
        if (tc->top_k_tokens && sr->topk_ids) {
            /* the shared scoring used the largest top-k of all score tasks */
            size_t K = (size_t)t->top_k_tokens, k = (size_t)tc->top_k_tokens;
            int32_t *ti = own(o, fmb_xmalloc((m ? m : 1) * k * sizeof *ti));
            float *tl = own(o, fmb_xmalloc((m ? m : 1) * k * sizeof *tl));
            for (size_t q = 0; q < m; q++)
                for (size_t j = 0; j < k; j++) {
                    ti[q * k + j] = sr->topk_ids[q * K + j];
                    tl[q * k + j] = sr->topk_logprobs[q * K + j];
                }
            row->token_topk_ids = ti;
            row->token_topk_ids_bytes = m * k * sizeof *ti;
            row->token_topk_logprobs = tl;
            row->token_topk_logprobs_bytes = m * k * sizeof *tl;
        }
    }
}

/* Phase 1: every live document's prefix groups in one packed forward. */
static fmb_status phase_prefill(fmb_tasks *t, bdoc *docs, size_t n, fmb_err *err)
{
    size_t G = t->n_groups;
    fmb_piece *pcs = fmb_xcalloc(n * G + 1, sizeof *pcs);
    fmb_ids *pre = fmb_xcalloc(n * G + 1, sizeof *pre);
    fmb_score_job *sj = fmb_xcalloc(n + 1, sizeof *sj);
    size_t np = 0;
    fmb_score_opts so = {t->ctx, t->per_token, t->top_k_tokens};
    fmb_status s = FMB_OK;
    for (size_t i = 0; i < n; i++) {
        bdoc *d = &docs[i];
        for (size_t g = 0; d->live && g < G; g++) {
            fmb_state *st = t->snap[i * G + g];
            fmb_state_reset(st);
            fmb_piece *p = &pcs[np];
            p->st = st;
            if (t->groups[g].has_score) {
                // [EOS] + document: fmb_prompt_prefix with an empty template part, which is
                // also the prefix of the templates that start with {document}
                fmb_status s2 = fmb_score_begin(&sj[i], d->ids.ids, d->n_doc, &so, err);
                if (s2) {
                    doc_fail(d, s2, "%s", err->msg);
                    break;
                }
                p->ids = sj[i].seq;
                p->n = sj[i].m;
                p->out = &sj[i].o;
            } else {
                const fmb_ids *b = &t->groups[g].before_ids;
                fmb_prompt_prefix(t->ctx, b->ids, b->n, d->ids.ids, NULL, d->n_doc, &pre[np]);
                p->ids = pre[np].ids;
                p->n = pre[np].n;
            }
            if (p->n)
                np++;
        }
    }
    double t0 = fmb_now();
    if (np)
        s = forward_many(t, pcs, np, err);
    double dt = fmb_now() - t0;
    for (size_t i = 0; i < n; i++) {
        bdoc *d = &docs[i];
        if (!s && d->live && G && t->groups[0].has_score) {
            fmb_score_result sr;
            fmb_status s2 = fmb_score_end(&sj[i], d->bytes, &sr, err);
            if (s2)
                doc_fail(d, s2, "%s", err->msg);
            else
                score_rows(t, d, &sr, dt);
            fmb_score_result_free(&sr);
        }
        fmb_score_job_free(&sj[i]);
        for (size_t k = 0; k < t->job->n_tasks; k++)
            d->out->rows[k].prefill_seconds = dt;
    }
    if (s && s != FMB_EINTR)
        for (size_t i = 0; i < n; i++)
            doc_fail(&docs[i], s, "%s", err->msg);
    for (size_t i = 0; i < np; i++)
        fmb_ids_free(&pre[i]);
    free(pre);
    free(pcs);
    free(sj);
    return s == FMB_EINTR ? s : FMB_OK;
}

/* The group of task i. */
static size_t group_of(const fmb_tasks *t, size_t i)
{
    for (size_t g = 0; g < t->n_groups; g++)
        for (size_t k = 0; k < t->groups[g].n_tasks; k++)
            if (t->groups[g].tasks[k] == i)
                return g;
    FMB_ASSERTF(0, "task %zu is in no group", i);
    return 0;
}

/* One candidate of a choice task of a document: (doc, task, candidate, slot in totals). */
typedef struct {
    size_t doc, task, cand, slot;
} cand_ref;

/* Phase 2: every candidate of every choice task of every live document, packed in rounds of
 * plan.max_seqs pieces (each from a copy of its document's snapshot). */
static fmb_status phase_choices(fmb_tasks *t, bdoc *docs, size_t n, fmb_err *err)
{
    const fmb_job *job = t->job;
    size_t nc = 0, per_doc = 0;
    for (size_t i = 0; i < job->n_tasks; i++)
        if (job->tasks[i].kind == FMB_TASK_CHOICE)
            per_doc += job->tasks[i].n_choices;
    if (!per_doc)
        return FMB_OK;
    cand_ref *refs = fmb_xcalloc(n * per_doc, sizeof *refs);
    for (size_t d = 0; d < n; d++) {
        if (!docs[d].live)
            continue;
        docs[d].totals = own(docs[d].out, fmb_xcalloc(per_doc, sizeof(double)));
        size_t slot = 0;
        for (size_t i = 0; i < job->n_tasks; i++)
            for (size_t c = 0; job->tasks[i].kind == FMB_TASK_CHOICE && c < job->tasks[i].n_choices;
                 c++, slot++)
                if (!docs[d].skip[i])
                    refs[nc++] = (cand_ref){d, i, c, slot};
    }
    size_t B = t->plan.max_seqs;
    fmb_piece *pcs = fmb_xcalloc(B, sizeof *pcs);
    fmb_outputs *os = fmb_xcalloc(B, sizeof *os);
    int32_t **bufs = fmb_xcalloc(B * 2, sizeof *bufs);
    float **lps = fmb_xcalloc(B, sizeof *lps);
    fmb_status s = FMB_OK;
    double t0 = fmb_now();
    for (size_t r0 = 0; r0 < nc && !s; r0 += B) {
        size_t m = nc - r0 < B ? nc - r0 : B;
        for (size_t q = 0; q < m; q++) {
            const cand_ref *r = &refs[r0 + q];
            const task_prep *p = &t->prep[r->task];
            const fmb_ids *cd = &p->cands[r->cand];
            size_t nr = p->rest.n, len = nr + cd->n - 1;
            FMB_ASSERT(nr > 0);
            int32_t *ids = bufs[2 * q] = fmb_xmalloc(len * sizeof *ids);
            int32_t *tg = bufs[2 * q + 1] = fmb_xmalloc(len * sizeof *tg);
            lps[q] = fmb_xmalloc(len * sizeof *lps[q]);
            memcpy(ids, p->rest.ids, nr * sizeof *ids);
            memcpy(ids + nr, cd->ids, (cd->n - 1) * sizeof *ids);
            for (size_t k = 0; k < len; k++)
                tg[k] = k + 1 < nr ? -1 : cd->ids[k + 1 - nr];
            memset(&os[q], 0, sizeof os[q]);
            os[q].targets = tg;
            os[q].logprob = lps[q];
            fmb_state_copy(t->work[q], t->snap[r->doc * t->n_groups + group_of(t, r->task)]);
            pcs[q] = (fmb_piece){t->work[q], ids, len, &os[q]};
        }
        s = forward_many(t, pcs, m, err);
        for (size_t q = 0; q < m; q++) {
            const cand_ref *r = &refs[r0 + q];
            size_t nr = t->prep[r->task].rest.n;
            double total = 0;
            for (size_t k = nr - 1; !s && k < pcs[q].n; k++)
                total += lps[q][k];
            docs[r->doc].totals[r->slot] = total;
            free(bufs[2 * q]);
            free(bufs[2 * q + 1]);
            free(lps[q]);
        }
    }
    double dt = fmb_now() - t0;
    free(pcs);
    free(os);
    free(bufs);
    free(lps);
    free(refs);
    if (s && s != FMB_EINTR)
        for (size_t d = 0; d < n; d++)
            doc_fail(&docs[d], s, "%s", err->msg);
    if (s)
        return s == FMB_EINTR ? s : FMB_OK;
    // the rows: best by total (or mean, or total per byte), first candidate on ties, as one
    // document alone
    for (size_t d = 0; d < n; d++) {
        bdoc *bd = &docs[d];
        size_t slot = 0;
        for (size_t i = 0; bd->live && i < job->n_tasks; i++) {
            const fmb_task_cfg *tc = &job->tasks[i];
            if (tc->kind != FMB_TASK_CHOICE)
                continue;
            if (bd->skip[i]) {
                slot += tc->n_choices;
                continue;
            }
            const task_prep *p = &t->prep[i];
            fmb_result_row *row = &bd->out->rows[i];
            fmb_sb js = {0};
            fmb_sb_printf(&js, "[");
            double best = -INFINITY;
            int64_t best_i = 0;
            for (size_t c = 0; c < tc->n_choices; c++) {
                double total = bd->totals[slot++];
                if (!isfinite(total)) {
                    doc_fail(bd, FMB_EINVAL,
                             "task '%s': the model gave a non-finite log-probability for "
                             "choice %zu",
                             tc->name, c);
                    break;
                }
                double mean = total / (double)p->cands[c].n;
                size_t nb = strlen(tc->choices[c]); /* > 0: the job refuses empty choices */
                // lm-eval's acc_norm: the total over the candidate's length (bytes here)
                double key = tc->choice_by_mean    ? mean
                             : tc->choice_by_bytes ? total / (double)nb
                                                   : total;
                if (key > best) {
                    best = key;
                    best_i = (int64_t)c;
                }
                json_t *txt = json_string(tc->choices[c]);
                char *ts = json_dumps(txt, JSON_ENCODE_ANY);
                json_decref(txt);
                fmb_sb_printf(&js, "%s{\"text\":%s,\"tokens\":%zu,\"total\":", c ? "," : "", ts,
                              p->cands[c].n);
                free(ts);
                sb_num(&js, total);
                fmb_sb_printf(&js, ",\"mean\":");
                sb_num(&js, mean);
                fmb_sb_printf(&js, ",\"bytes\":%zu}", nb);
            }
            fmb_sb_printf(&js, "]");
            row->choices_json = own(bd->out, fmb_sb_take(&js));
            row->best = tc->choices[best_i];
            row->best_index = best_i;
            row->prompt_tokens = (int64_t)p->rest.n;
            row->task_seconds = dt;
        }
    }
    return FMB_OK;
}

/* A generation of the batch: (doc, task, sample), its options and generator while it runs,
 * then its result. The samples of a (doc, task) are consecutive, sample 0 first. */
typedef struct {
    size_t doc, task, sample;
    fmb_gen_opts go;
    int64_t seed;
    fmb_gen *g;
    int32_t next;
    int ended;          /* res holds the result */
    fmb_gen_result res; /* owned until the row is made */
    double dt;
} gen_ref;

static void gen_opts(fmb_tasks *t, const char *key, const fmb_task_cfg *tc, gen_ref *r)
{
    const fmb_config *cfg = fmb_engine_config(t->eng);
    fmb_gen_opts *go = &r->go;
    memset(go, 0, sizeof *go);
    go->max_new_tokens = (size_t)tc->max_new_tokens;
    go->sample.temperature = (float)tc->temperature;
    go->sample.top_k = (int)tc->top_k;
    go->sample.top_p = (float)tc->top_p;
    go->sample.min_p = (float)tc->min_p;
    go->sample.repetition_penalty = (float)tc->repetition_penalty;
    go->sample.presence_penalty = (float)tc->presence_penalty;
    go->sample.frequency_penalty = (float)tc->frequency_penalty;
    r->seed = fmb_task_item_seed(tc->has_seed ? tc->seed : t->job->seed, key, tc->name);
    go->sample.seed = (uint64_t)r->seed;
    go->sample.stream = (uint64_t)r->sample; /* sample j draws from stream j: 0 as n = 1 */
    go->eos_ids = tc->n_eos ? tc->eos : cfg->eos_ids;
    go->n_eos = tc->n_eos ? tc->n_eos : cfg->n_eos;
    go->ignore_eos = tc->ignore_eos;
    go->stop = (const char *const *)tc->stop;
    go->n_stop = (int)tc->n_stop;
    go->logprobs = (int)tc->logprobs;
}

/* A generation ended: its result into r->res (or the document fails). */
static void gen_end(fmb_tasks *t, bdoc *d, gen_ref *r, double dt)
{
    const fmb_task_cfg *tc = &t->job->tasks[r->task];
    fmb_err err;
    fmb_status s = fmb_gen_finish(r->g, &r->res, &err);
    r->g = NULL;
    r->dt = dt;
    if (s) {
        doc_fail(d, s, "task '%s': %s", tc->name, err.msg);
        return;
    }
    r->ended = 1;
    for (size_t i = 0; i < r->res.n; i++)
        if (!isfinite(r->res.logprobs[i])) {
            doc_fail(d, FMB_EINVAL, "task '%s': the model gave a non-finite log-probability",
                     tc->name);
            return;
        }
}

static void sb_ids(fmb_sb *b, const int32_t *v, size_t n)
{
    fmb_sb_puts(b, "[");
    for (size_t i = 0; i < n; i++)
        fmb_sb_printf(b, "%s%d", i ? "," : "", v[i]);
    fmb_sb_puts(b, "]");
}

static void sb_nums(fmb_sb *b, const float *v, size_t n)
{
    fmb_sb_puts(b, "[");
    for (size_t i = 0; i < n; i++) {
        fmb_sb_printf(b, "%s", i ? "," : "");
        sb_num(b, v[i]);
    }
    fmb_sb_puts(b, "]");
}

/* The row of a generate task from its n samples rs[0..n) (all ended): sample 0 fills the
 * columns (text, ids, logprobs, finish_reason, extract, tokens, and with logprobs = K the
 * token_topk_* arrays, [tokens · K]); with n > 1 the choices column holds every sample. */
static void gen_row(fmb_tasks *t, bdoc *d, gen_ref *rs, size_t n)
{
    const fmb_task_cfg *tc = &t->job->tasks[rs[0].task];
    const task_prep *p = &t->prep[rs[0].task];
    fmb_task_output *o = d->out;
    fmb_result_row *row = &o->rows[rs[0].task];
    fmb_err err;
    fmb_sb all = {0};
    fmb_sb_puts(&all, "[");
    double dt = 0;
    for (size_t j = 0; j < n && d->live; j++) {
        fmb_gen_result *res = &rs[j].res;
        dt = fmax(dt, rs[j].dt);
        char *ext = NULL;
        if (p->ext && (fmb_extract_run(p->ext, res->text ? res->text : "",
                                       res->text ? res->text_len : 0, &ext, &err))) {
            doc_fail(d, FMB_EINVAL, "task '%s': %s", tc->name, err.msg);
            break;
        }
        size_t K = (size_t)res->top_k;
        if (j == 0) {
            fmb_sb ids = {0}, lps = {0};
            sb_ids(&ids, res->ids, res->n);
            sb_nums(&lps, res->logprobs, res->n);
            row->ids_json = own(o, fmb_sb_take(&ids));
            row->logprobs_json = own(o, fmb_sb_take(&lps));
            row->finish_reason = res->finish_reason; /* static */
            row->tokens = (int64_t)res->n;
            if (res->text) {
                row->text = blob_copy(o, res->text, res->text_len + 1); /* may hold NULs */
                row->text_len = res->text_len;
            }
            if (ext)
                row->extract_json = own(o, fmb_xstrdup(ext));
            if (K) {
                row->token_topk_ids = blob_copy(o, res->top_ids, res->n * K * sizeof(int32_t));
                row->token_topk_ids_bytes = res->n * K * sizeof(int32_t);
                row->token_topk_logprobs =
                    blob_copy(o, res->top_logprobs, res->n * K * sizeof(float));
                row->token_topk_logprobs_bytes = res->n * K * sizeof(float);
            }
        }
        if (n > 1) {
            fmb_sb_printf(&all, "%s{\"index\":%zu,\"text\":", j ? "," : "", j);
            json_t *txt = res->text ? json_stringn(res->text, res->text_len) : NULL;
            char *ts = txt ? json_dumps(txt, JSON_ENCODE_ANY) : NULL;
            fmb_sb_puts(&all, ts ? ts : "null");
            free(ts);
            json_decref(txt);
            fmb_sb_printf(&all,
                          ",\"finish_reason\":\"%s\",\"tokens\":%zu,\"ids\":", res->finish_reason,
                          res->n);
            sb_ids(&all, res->ids, res->n);
            fmb_sb_puts(&all, ",\"logprobs\":");
            sb_nums(&all, res->logprobs, res->n);
            if (ext)
                fmb_sb_printf(&all, ",\"extract\":%s", ext);
            if (K) {
                // [[[id, logprob], ... K], ... tokens], as `fmbatch score --top-k` prints them
                fmb_sb_puts(&all, ",\"top_logprobs\":[");
                for (size_t i = 0; i < res->n; i++) {
                    fmb_sb_puts(&all, i ? ",[" : "[");
                    for (size_t k = 0; k < K; k++) {
                        fmb_sb_printf(&all, "%s[%d,", k ? "," : "", res->top_ids[i * K + k]);
                        sb_num(&all, res->top_logprobs[i * K + k]);
                        fmb_sb_puts(&all, "]");
                    }
                    fmb_sb_puts(&all, "]");
                }
                fmb_sb_puts(&all, "]");
            }
            fmb_sb_puts(&all, "}");
        }
        free(ext);
    }
    fmb_sb_puts(&all, "]");
    if (n > 1 && d->live)
        row->choices_json = own(o, fmb_sb_take(&all));
    fmb_sb_free(&all);
    if (!d->live)
        return;
    row->prompt_tokens = (int64_t)p->rest.n;
    row->seed = rs[0].seed;
    row->task_seconds = dt;
    /* sampling settings as recorded provenance (the issue-13 controls only when set, so rows
     * without them are as before) */
    fmb_sb sm = {0};
    char *stop = json_str_list(tc->stop, tc->n_stop);
    fmb_sb_printf(&sm, "{\"max_new_tokens\":%lld,\"temperature\":", (long long)tc->max_new_tokens);
    sb_num(&sm, tc->temperature);
    fmb_sb_printf(&sm, ",\"top_k\":%lld,\"top_p\":", (long long)tc->top_k);
    sb_num(&sm, tc->top_p);
    fmb_sb_printf(&sm, ",\"seed\":%lld,\"stream\":0,\"stop\":%s,\"eos\":[", (long long)rs[0].seed,
                  stop ? stop : "[]");
    free(stop);
    for (int i = 0; i < rs[0].go.n_eos; i++)
        fmb_sb_printf(&sm, "%s%d", i ? "," : "", rs[0].go.eos_ids[i]);
    fmb_sb_printf(&sm, "],\"ignore_eos\":%s", tc->ignore_eos ? "true" : "false");
    if (tc->repetition_penalty != 1.0) {
        fmb_sb_puts(&sm, ",\"repetition_penalty\":");
        sb_num(&sm, tc->repetition_penalty);
    }
    if (tc->presence_penalty != 0.0) {
        fmb_sb_puts(&sm, ",\"presence_penalty\":");
        sb_num(&sm, tc->presence_penalty);
    }
    if (tc->frequency_penalty != 0.0) {
        fmb_sb_puts(&sm, ",\"frequency_penalty\":");
        sb_num(&sm, tc->frequency_penalty);
    }
    if (tc->min_p != 0.0) {
        fmb_sb_puts(&sm, ",\"min_p\":");
        sb_num(&sm, tc->min_p);
    }
    if (tc->n != 1)
        fmb_sb_printf(&sm, ",\"n\":%lld", (long long)tc->n);
    if (tc->logprobs)
        fmb_sb_printf(&sm, ",\"logprobs\":%lld", (long long)tc->logprobs);
    fmb_sb_puts(&sm, "}");
    row->sampling_json = own(o, fmb_sb_take(&sm));
}

/* Phase 3: every generation of every live document in one continuous batch of at most
 * plan.max_seqs sequences. */
static fmb_status phase_generate(fmb_tasks *t, bdoc *docs, size_t n, fmb_err *err)
{
    const fmb_job *job = t->job;
    size_t ng = 0; /* generations per document: Σ n over the generate tasks */
    for (size_t i = 0; i < job->n_tasks; i++)
        if (job->tasks[i].kind == FMB_TASK_GENERATE)
            ng += (size_t)job->tasks[i].n;
    if (!ng)
        return FMB_OK;
    gen_ref *refs = fmb_xcalloc(n * ng, sizeof *refs);
    size_t nr = 0;
    for (size_t d = 0; d < n; d++)
        for (size_t i = 0; docs[d].live && i < job->n_tasks; i++)
            for (size_t j = 0; job->tasks[i].kind == FMB_TASK_GENERATE && !docs[d].skip[i] &&
                               j < (size_t)job->tasks[i].n;
                 j++) {
                refs[nr].doc = d;
                refs[nr].task = i;
                refs[nr].sample = j;
                gen_opts(t, docs[d].doc->key, &job->tasks[i], &refs[nr]);
                nr++;
            }
    size_t B = t->plan.max_seqs, V = (size_t)fmb_engine_config(t->eng)->V;
    gen_ref **slot = fmb_xcalloc(B, sizeof *slot); /* slot q runs in t->work[q] */
    // logits: a newcomer's prompt logits in its slot's row of plog, a step's in the step's
    // (compacted) row of slog; from[q] points at the row slot q samples from next
    float *plog = fmb_xmalloc(B * V * sizeof *plog), *slog = fmb_xmalloc(B * V * sizeof *slog);
    const float **from = fmb_xcalloc(B, sizeof *from);
    int *more = fmb_xcalloc(B, sizeof *more);
    fmb_piece *pcs = fmb_xcalloc(B, sizeof *pcs);
    fmb_outputs *os = fmb_xcalloc(B, sizeof *os);
    fmb_state **sts = fmb_xcalloc(B, sizeof *sts);
    int32_t *ids = fmb_xcalloc(B, sizeof *ids);
    size_t *idx = fmb_xcalloc(B, sizeof *idx);
    size_t next = 0, active = 0;
    fmb_status s = FMB_OK;
    double t0 = fmb_now();
    while (!s && (next < nr || active)) {
        // admit: free slots take the next generations; their prompt rests prefill together
        size_t np = 0;
        for (size_t q = 0; q < B && next < nr; q++) {
            if (slot[q])
                continue;
            gen_ref *r = &refs[next++];
            if (!docs[r->doc].live)
                continue;
            const task_prep *p = &t->prep[r->task];
            fmb_status s2 = fmb_gen_new(t->eng, t->tok, p->rest.n, &r->go, &r->g, err);
            if (s2) {
                doc_fail(&docs[r->doc], s2, "task '%s': %s", job->tasks[r->task].name, err->msg);
                continue;
            }
            // the repetition penalty sees what the model was fed: [EOS] + template before
            // {document} + the document + the prompt rest (HF's input_ids)
            size_t gi = group_of(t, r->task);
            const bdoc *bd = &docs[r->doc];
            if (t->ctx >= 0)
                fmb_gen_seen(r->g, &t->ctx, 1);
            fmb_gen_seen(r->g, t->groups[gi].before_ids.ids, t->groups[gi].before_ids.n);
            fmb_gen_seen(r->g, bd->ids.ids, bd->n_doc);
            fmb_gen_seen(r->g, p->rest.ids, p->rest.n);
            fmb_state_copy(t->work[q], t->snap[r->doc * t->n_groups + gi]);
            memset(&os[np], 0, sizeof os[np]);
            os[np].logits = plog + q * V;
            os[np].logits_from = p->rest.n - 1;
            pcs[np] = (fmb_piece){t->work[q], p->rest.ids, p->rest.n, &os[np]};
            np++;
            from[q] = plog + q * V;
            slot[q] = r;
            active++;
        }
        if (np && (s = forward_many(t, pcs, np, err)))
            break;
            // sample every slot's next token, in parallel: each generation has its own state,
            // scratch and counter-based RNG, so the threads change no result (a 65K-vocabulary
            // softmax and top-p sort per token would otherwise keep the GPU waiting)
#pragma omp parallel for schedule(dynamic, 1)
        for (size_t q = 0; q < B; q++) {
            gen_ref *r = slot[q];
            more[q] = r && r->g && !fmb_gen_done(r->g) && fmb_gen_push(r->g, from[q], &r->next);
        }
        // the ones that go on step together; a finished one frees its slot
        size_t nb = 0;
        for (size_t q = 0; q < B; q++) {
            gen_ref *r = slot[q];
            if (!r)
                continue;
            if (more[q]) {
                sts[nb] = t->work[q];
                ids[nb] = r->next;
                idx[nb++] = q;
                continue;
            }
            gen_end(t, &docs[r->doc], r, fmb_now() - t0);
            slot[q] = NULL;
            active--;
        }
        if (!nb)
            continue;
        // one decode step for every active generation
        double ts = fmb_now();
        if ((s = fmb_engine_step(t->eng, sts, ids, nb, slog, err)))
            break;
        t->stats.decode_seconds += fmb_now() - ts;
        t->stats.decode_tokens += (int64_t)nb;
        t->stats.decode_steps++;
        if (t->step_fn)
            t->step_fn(t->step_ctx);
        for (size_t k = 0; k < nb; k++)
            from[idx[k]] = slog + k * V;
    }
    for (size_t q = 0; q < B; q++)
        if (slot[q] && slot[q]->g) {
            fmb_gen_free(slot[q]->g);
            slot[q]->g = NULL;
        }
    if (s && s != FMB_EINTR)
        for (size_t d = 0; d < n; d++)
            doc_fail(&docs[d], s, "%s", err->msg);
    // the rows, once every sample of a (doc, task) has ended
    for (size_t k = 0; !s && k < nr;) {
        size_t m = (size_t)job->tasks[refs[k].task].n, all = 1;
        for (size_t j = 0; j < m; j++)
            all &= (size_t)refs[k + j].ended;
        FMB_ASSERT(all || !docs[refs[k].doc].live);
        if (docs[refs[k].doc].live)
            gen_row(t, &docs[refs[k].doc], &refs[k], m);
        k += m;
    }
    for (size_t k = 0; k < nr; k++)
        fmb_gen_result_free(&refs[k].res);
    free(refs);
    free(slot);
    free(plog);
    free(slog);
    free(from);
    free(more);
    free(pcs);
    free(os);
    free(sts);
    free(ids);
    free(idx);
    return s == FMB_EINTR ? s : FMB_OK;
}

struct fmb_task_batch {
    bdoc *bd; /* [n] */
    size_t n;
    fmb_task_output *outs; /* borrowed */
    double prepare_seconds;
};

fmb_task_batch *
fmb_tasks_batch_prepare(fmb_tasks *t, const fmb_task_doc *docs, size_t n, fmb_task_output *outs)
{
    FMB_ASSERT(n <= t->plan.max_docs);
    double t0 = fmb_now();
    fmb_task_batch *b = fmb_xcalloc(1, sizeof *b);
    b->bd = fmb_xcalloc(n ? n : 1, sizeof *b->bd);
    b->n = n;
    b->outs = outs;
    // Tokenized one after another: the pipelined runner prepares a batch while the engine
    // runs the previous one, so this is off the engine's path; a second OpenMP team beside the
    // engine's would only take its cores (libgomp's idle threads spin: 4x the CPU time on 2
    // cores, measured).
    for (size_t i = 0; i < n; i++) {
        memset(&outs[i], 0, sizeof outs[i]);
        b->bd[i].doc = &docs[i];
        b->bd[i].out = &outs[i];
        doc_begin(t, &b->bd[i]);
    }
    b->prepare_seconds = fmb_now() - t0;
    return b;
}

fmb_status
fmb_tasks_batch_run(fmb_tasks *t, fmb_task_batch *b, const fmb_stop_flag *stop, fmb_err *err)
{
    double t0 = fmb_now();
    bdoc *bd = b->bd;
    size_t n = b->n;
    fmb_status s = FMB_OK;
    if (fmb_stopped(stop) || (s = phase_prefill(t, bd, n, err)) || fmb_stopped(stop) ||
        (s = phase_choices(t, bd, n, err)) || fmb_stopped(stop) ||
        (s = phase_generate(t, bd, n, err)))
        s = FMB_EINTR;
    // the batch's wall time, shared out by tokens
    double dt = fmb_now() - t0 + b->prepare_seconds, tokens = 0;
    for (size_t i = 0; i < n; i++)
        tokens += (double)bd[i].n_doc + 1;
    for (size_t i = 0; i < n; i++)
        b->outs[i].seconds = dt * ((double)bd[i].n_doc + 1) / tokens;
    if (s == FMB_EINTR)
        return fmb_fail(err, FMB_EINTR, "interrupted");
    return FMB_OK;
}

void fmb_tasks_batch_free(fmb_task_batch *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n; i++)
        fmb_ids_free(&b->bd[i].ids);
    free(b->bd);
    free(b);
}

fmb_status fmb_tasks_run_many(fmb_tasks *t,
                              const fmb_task_doc *docs,
                              size_t n,
                              const fmb_stop_flag *stop,
                              fmb_task_output *outs,
                              fmb_err *err)
{
    fmb_task_batch *b = fmb_tasks_batch_prepare(t, docs, n, outs);
    fmb_status s = fmb_tasks_batch_run(t, b, stop, err);
    fmb_tasks_batch_free(b);
    return s;
}
