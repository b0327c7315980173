/*
 * engine: opens a model folder and dispatches to a backend (backend.h). Owns the model
 * mapping (fmb_model) for the backend's lifetime; checks inputs common to all backends.
 */
#include "engine/engine.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/backend.h"

struct fmb_engine {
    const fmb_stop_flag *cancel; /* checked between chunks; NULL: none */
    fmb_progress_fn progress;    /* called after each chunk; NULL: none */
    void *progress_ctx;
    fmb_model *model;
    const fmb_backend_ops *ops;
    void *impl;
};

struct fmb_state {
    fmb_engine *eng;
    void *impl;
};

fmb_status
fmb_engine_open(const char *model_dir, const fmb_engine_opts *opts, fmb_engine **out, fmb_err *err)
{
    fmb_engine_opts o = opts ? *opts : (fmb_engine_opts){0};
    const fmb_backend_ops *ops = &fmb_backend_cpu;
    if (o.backend == FMB_BACKEND_CUDA || o.backend == FMB_BACKEND_AUTO) {
#ifdef FMB_HAVE_CUDA
        if (fmb_cuda_available())
            ops = &fmb_backend_cuda;
        else if (o.backend == FMB_BACKEND_CUDA)
            return fmb_fail(err, FMB_EUNSUP, "--backend cuda: no usable CUDA device");
#else
        if (o.backend == FMB_BACKEND_CUDA)
            return fmb_fail(err, FMB_EUNSUP,
                            "--backend cuda: this fmbatch was built without CUDA (CUDA=0)");
#endif
    }
    fmb_engine *e = fmb_xcalloc(1, sizeof *e);
    fmb_status s = fmb_model_open(model_dir, &e->model, err);
    if (s) {
        free(e);
        return s;
    }
    e->ops = ops;
    if ((s = ops->open(e->model, &o, &e->impl, err))) {
        fmb_model_free(e->model);
        free(e);
        return s;
    }
    *out = e;
    return FMB_OK;
}

void fmb_engine_free(fmb_engine *eng)
{
    if (!eng)
        return;
    eng->ops->free(eng->impl);
    fmb_model_free(eng->model);
    free(eng);
}

const fmb_config *fmb_engine_config(const fmb_engine *eng)
{
    return &eng->model->cfg;
}

const char *fmb_engine_backend_name(const fmb_engine *eng)
{
    return eng->ops->name;
}

const char *fmb_engine_device_name(const fmb_engine *eng)
{
    return eng->ops->device_name(eng->impl);
}

size_t fmb_engine_chunk_tokens(const fmb_engine *eng)
{
    return eng->ops->chunk_tokens(eng->impl);
}

fmb_status fmb_state_new(fmb_engine *eng, fmb_state **out, fmb_err *err)
{
    fmb_state *st = fmb_xcalloc(1, sizeof *st);
    st->eng = eng;
    fmb_status s = eng->ops->state_new(eng->impl, &st->impl, err);
    if (s) {
        free(st);
        return s;
    }
    *out = st;
    return FMB_OK;
}

void fmb_state_free(fmb_state *st)
{
    if (!st)
        return;
    st->eng->ops->state_free(st->eng->impl, st->impl);
    free(st);
}

void fmb_state_reset(fmb_state *st)
{
    st->eng->ops->state_reset(st->eng->impl, st->impl);
}

void fmb_state_copy(fmb_state *dst, const fmb_state *src)
{
    FMB_ASSERT(dst->eng == src->eng);
    dst->eng->ops->state_copy(dst->eng->impl, dst->impl, src->impl);
}

void fmb_state_read(const fmb_state *st, float *conv, float *ssm)
{
    st->eng->ops->state_read(st->eng->impl, st->impl, conv, ssm);
}

void fmb_state_write(fmb_state *st, const float *conv, const float *ssm)
{
    st->eng->ops->state_write(st->eng->impl, st->impl, conv, ssm);
}

static fmb_status check_ids(const fmb_config *c, const int32_t *ids, size_t n, fmb_err *err)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->V)
            return fmb_fail(err, FMB_EINVAL,
                            "token id %d at position %zu is outside the vocabulary [0, %lld)",
                            ids[i], i, (long long)c->V);
    return FMB_OK;
}

/* The inputs every forward call checks: ids in the vocabulary, targets too, top-k bounds. */
static fmb_status check_forward(
    const fmb_config *c, const int32_t *ids, size_t n, const fmb_outputs *out, fmb_err *err)
{
    fmb_status s = check_ids(c, ids, n, err);
    if (s)
        return s;
    if (out && out->targets)
        for (size_t i = 0; i < n; i++)
            if (out->targets[i] >= c->V)
                return fmb_fail(err, FMB_EINVAL,
                                "target id %d at position %zu is outside the vocabulary",
                                out->targets[i], i);
    if (out && out->top_k > 64)
        return fmb_fail(err, FMB_EINVAL, "top-k of %d is over the limit of 64", out->top_k);
    return FMB_OK;
}

const fmb_outputs *
fmb_outputs_slice(const fmb_outputs *out, size_t p0, size_t m, size_t V, fmb_outputs *o)
{
    if (!out)
        return NULL;
    size_t k = out->top_k > 0 ? (size_t)out->top_k : 0;
    *o = *out;
    o->targets = out->targets ? out->targets + p0 : NULL;
    o->logprob = out->logprob ? out->logprob + p0 : NULL;
    o->rank = out->rank ? out->rank + p0 : NULL;
    o->argmax = out->argmax ? out->argmax + p0 : NULL;
    o->topk_ids = out->topk_ids ? out->topk_ids + p0 * k : NULL;
    o->topk_logprobs = out->topk_logprobs ? out->topk_logprobs + p0 * k : NULL;
    if (!out->logits || p0 + m <= out->logits_from) {
        o->logits = NULL;
        o->logits_from = 0;
    } else if (p0 >= out->logits_from) {
        o->logits = out->logits + (p0 - out->logits_from) * V;
        o->logits_from = 0;
    } else {
        o->logits_from = out->logits_from - p0;
    }
    return o;
}

/* A NaN or Inf in an output means the weights or the state hold non-finite values (a bad
 * checkpoint, or an overflow): the numbers would be invented (a NaN target logit ranks 0, an
 * argmax over NaNs is id 0, a choice among NaN scores picks the first), so the call fails and
 * the caller fails the item with this reason. Checked: the log-probability of every position
 * with a target (finite whenever the logits row is: logit - max - log Σ exp), and every raw
 * logits row (NaN or +Inf; -Inf is a probability of zero). O(rows × V) at most, next to the
 * rows × V × D of the lm_head that made them. p0: position of o's first row in the call. */
static fmb_status check_finite(const fmb_outputs *o, size_t n, size_t V, size_t p0, fmb_err *err)
{
    static const char why[] = "the model's weights or state hold NaN or Inf (`fmbatch check` "
                              "scans the weights)";
    if (o->logprob && o->targets)
        for (size_t t = 0; t < n; t++)
            if (o->targets[t] >= 0 && !isfinite(o->logprob[t]))
                return fmb_fail(err, FMB_EINVAL,
                                "non-finite log-probability (%g) at position %zu: %s",
                                (double)o->logprob[t], p0 + t, why);
    if (o->logits)
        for (size_t t = o->logits_from; t < n; t++) {
            const float *row = o->logits + (t - o->logits_from) * V;
            for (size_t v = 0; v < V; v++)
                if (isnan(row[v]) || row[v] == INFINITY)
                    return fmb_fail(err, FMB_EINVAL,
                                    "non-finite logit (%g) for id %zu at position %zu: %s",
                                    (double)row[v], v, p0 + t, why);
        }
    return FMB_OK;
}

fmb_status fmb_engine_forward(fmb_engine *eng,
                              fmb_state *st,
                              const int32_t *ids,
                              size_t n,
                              const fmb_outputs *out,
                              fmb_err *err)
{
    FMB_ASSERT(st->eng == eng);
    fmb_status s = check_forward(&eng->model->cfg, ids, n, out, err);
    if (s)
        return s;
    if (n == 0)
        return FMB_OK;
    size_t T = eng->ops->chunk_tokens(eng->impl), V = (size_t)eng->model->cfg.V;
    if (fmb_stopped(eng->cancel))
        return fmb_fail(err, FMB_EINTR, "interrupted");
    if ((!eng->cancel && !eng->progress) || n <= T) {
        s = eng->ops->forward(eng->impl, st->impl, ids, n, out, err);
        return s || !out ? s : check_finite(out, n, V, 0, err);
    }
    // With a cancel flag or a progress callback: one backend call per chunk (the backend
    // splits at the same boundaries, so results are unchanged), the flag checked before each
    // and progress reported after each.
    for (size_t p0 = 0; p0 < n; p0 += T) {
        if (fmb_stopped(eng->cancel))
            return fmb_fail(err, FMB_EINTR, "interrupted");
        size_t m = n - p0 < T ? n - p0 : T;
        fmb_outputs o;
        const fmb_outputs *o2 = fmb_outputs_slice(out, p0, m, V, &o);
        fmb_status s2 = eng->ops->forward(eng->impl, st->impl, ids + p0, m, o2, err);
        if (!s2 && o2)
            s2 = check_finite(o2, m, V, p0, err);
        if (s2)
            return s2;
        if (eng->progress)
            eng->progress(eng->progress_ctx, p0 + m, n);
    }
    return FMB_OK;
}

/* Pieces per packed chunk: the plan of a chunk holds at most this many sequences. */
#define FMB_CHUNK_MAX_PIECES 256

fmb_status
fmb_engine_forward_many(fmb_engine *eng, const fmb_piece *pieces, size_t n_pieces, fmb_err *err)
{
    size_t total = 0;
    for (size_t i = 0; i < n_pieces; i++) {
        FMB_ASSERT(pieces[i].st && pieces[i].st->eng == eng);
        for (size_t j = 0; j < i; j++)
            FMB_ASSERTF(pieces[j].st != pieces[i].st, "a state appears in two pieces");
        fmb_status s =
            check_forward(&eng->model->cfg, pieces[i].ids, pieces[i].n, pieces[i].out, err);
        if (s)
            return fmb_fail(err, s, "piece %zu: %s", i, err->msg);
        total += pieces[i].n;
    }
    if (!eng->ops->forward_chunk) {
        // One by one (the CPU backend): the same results by definition.
        for (size_t i = 0; i < n_pieces; i++) {
            fmb_status s = fmb_engine_forward(eng, pieces[i].st, pieces[i].ids, pieces[i].n,
                                              pieces[i].out, err);
            if (s)
                return s;
        }
        return FMB_OK;
    }
    // Packed: each chunk takes the next T tokens of the pieces in order, slicing the piece
    // that crosses the chunk's end (its state carries into the next chunk).
    size_t T = eng->ops->chunk_tokens(eng->impl), V = (size_t)eng->model->cfg.V;
    fmb_bpiece sl[FMB_CHUNK_MAX_PIECES];
    fmb_outputs so[FMB_CHUNK_MAX_PIECES];
    size_t pi = 0, off = 0, done = 0;
    while (pi < n_pieces) {
        if (fmb_stopped(eng->cancel))
            return fmb_fail(err, FMB_EINTR, "interrupted");
        size_t ns = 0, rows = 0;
        while (pi < n_pieces && rows < T && ns < FMB_CHUNK_MAX_PIECES) {
            const fmb_piece *p = &pieces[pi];
            size_t m = p->n - off < T - rows ? p->n - off : T - rows;
            if (m > 0) {
                sl[ns].st = p->st->impl;
                sl[ns].ids = p->ids + off;
                sl[ns].n = m;
                sl[ns].out = fmb_outputs_slice(p->out, off, m, V, &so[ns]);
                ns++;
                rows += m;
                off += m;
            }
            if (off == p->n) {
                pi++;
                off = 0;
            }
        }
        if (ns) {
            fmb_status s = eng->ops->forward_chunk(eng->impl, sl, ns, err);
            if (s)
                return s;
        }
        done += rows;
        if (eng->progress && total > T)
            eng->progress(eng->progress_ctx, done, total);
    }
    return FMB_OK;
}

void fmb_engine_bind_thread(fmb_engine *eng)
{
    if (eng->ops->bind_thread)
        eng->ops->bind_thread(eng->impl);
}

void fmb_engine_set_progress(fmb_engine *eng, fmb_progress_fn fn, void *ctx)
{
    eng->progress = fn;
    eng->progress_ctx = ctx;
}

void fmb_engine_set_cancel(fmb_engine *eng, const fmb_stop_flag *flag)
{
    eng->cancel = flag;
}

fmb_status fmb_engine_step(fmb_engine *eng,
                           fmb_state *const *states,
                           const int32_t *ids,
                           size_t nseq,
                           float *logits,
                           fmb_err *err)
{
    if (fmb_stopped(eng->cancel))
        return fmb_fail(err, FMB_EINTR, "interrupted");
    fmb_status s = check_ids(&eng->model->cfg, ids, nseq, err);
    if (s)
        return s;
    if (nseq == 0)
        return FMB_OK;
    void *impls[256] = {0};
    void **v = nseq <= 256 ? impls : fmb_xmalloc(nseq * sizeof *v);
    for (size_t i = 0; i < nseq; i++) {
        FMB_ASSERT(states[i]->eng == eng);
        v[i] = states[i]->impl;
    }
    s = eng->ops->step(eng->impl, v, ids, nseq, logits, err);
    if (v != impls)
        free(v);
    return s;
}

/* Added by the CUDA backend work (see engine.h): a model whose tensor views are NULL tells
 * the CUDA backend to generate its weights on the device; the seed travels in the dir. */
fmb_status fmb_engine_open_synthetic(const fmb_config *cfg,
                                     const fmb_engine_opts *opts,
                                     uint64_t seed,
                                     fmb_engine **out,
                                     fmb_err *err)
{
#ifdef FMB_HAVE_CUDA
    if (!fmb_cuda_available())
        return fmb_fail(err, FMB_EUNSUP, "--synthetic needs a CUDA device; none is usable");
    fmb_engine_opts o = opts ? *opts : (fmb_engine_opts){0};
    fmb_engine *e = fmb_xcalloc(1, sizeof *e);
    e->model = fmb_xcalloc(1, sizeof *e->model);
    e->model->cfg = *cfg;
    e->model->layers = fmb_xcalloc((size_t)cfg->L, sizeof *e->model->layers);
    snprintf(e->model->dir, sizeof e->model->dir, "synthetic:%llu", (unsigned long long)seed);
    e->ops = &fmb_backend_cuda;
    fmb_status s = e->ops->open(e->model, &o, &e->impl, err);
    if (s) {
        fmb_model_free(e->model);
        free(e);
        return s;
    }
    *out = e;
    return FMB_OK;
#else
    (void)cfg, (void)opts, (void)seed, (void)out;
    return fmb_fail(err, FMB_EUNSUP, "--synthetic needs the CUDA backend (built without CUDA)");
#endif
}

int fmb_engine_kernel_choices(const fmb_engine *eng, fmb_kernel_opts *out)
{
    memset(out, 0, sizeof *out);
    if (!eng->ops->kernel_choices)
        return 0;
    eng->ops->kernel_choices(eng->impl, out);
    return 1;
}

void fmb_engine_memory(const fmb_engine *eng, fmb_engine_mem *m)
{
    memset(m, 0, sizeof *m);
    const fmb_config *c = &eng->model->cfg;
    m->state_bytes = (size_t)(c->L * c->E * (c->K - 1 + c->N)) * sizeof(float);
    if (eng->model->st)
        m->mapped_bytes = fmb_st_file_bytes(eng->model->st);
    if (eng->ops->memory)
        eng->ops->memory(eng->impl, m);
}
