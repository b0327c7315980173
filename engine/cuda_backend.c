/*
 * cuda_backend: the FalconMamba forward pass on one CUDA device (kernels/kernels.h).
 *
 * Memory, allocated once at open from size functions, never in the token loop:
 *   weights  one block: the four big matrices per layer, the embeddings and lm_head in bf16
 *            (f32 with --dtype f32), converted on the device from the checkpoint's F32, F16
 *            or BF16 through pinned staging buffers; small per-channel vectors in f32.
 *   arena    activations for one chunk of T tokens (T = max(chunk, decode batch)), the scan
 *            workspace, the lm_head logits tile [head_rows, V] f32, per-position outputs and
 *            the varlen plan. Sized by chunk and batch, never by document length.
 *   states   one device block per fmb_state: conv [L, E, K-1] then ssm [L, E, N], f32 (the
 *            host layout of state_read/state_write), allocated by state_new.
 *
 * Per chunk: embeddings → for each layer: add+rmsnorm (fp32 residual), in_proj GEMM, conv,
 * x_proj GEMM, x_proj norms, dt_proj GEMM, chunked scan (y written over the conv output),
 * out_proj GEMM (f32) → final norm → lm_head in tiles of head_rows rows + one reduction
 * kernel. Decode (step) is the same pass over a plan of nseq one-token sequences, with the
 * batch-invariant bf16 matrix-vector kernel (f32: the row-invariant GEMM) at every batch size,
 * captured once per batch size in a CUDA graph and replayed.
 *
 * --synthetic: a model whose tensor views are NULL (fmb_engine_open_synthetic) gets random
 * bf16 weights generated on the device (seed from the model's dir "synthetic:SEED").
 */
#ifdef FMB_HAVE_CUDA
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/backend.h"
#include "kernels/cpu/kcpu.h"
#include "kernels/kernels.h"

#define CU_MAX_GRAPHS     16
#define FMB_CU_MAX_PIECES 256 /* pieces in one packed chunk (engine.c packs at most this) */
#define CU_STEP_MAXB      256 /* sequences per decode step (cu_step's plan arrays) */
#define CU_STAGE          ((size_t)64 << 20) /* bytes per pinned/device staging buffer */

typedef struct {
    float *norm, *in_proj_bias, *conv_w, *conv_b, *dt_bias, *A, *D, *out_proj_bias; /* f32 */
    void *in_proj, *x_proj, *dt_proj, *out_proj;                                    /* wt */
} cu_layer;

typedef struct {
    size_t B;
    void *exec;
} cu_graph;

typedef struct {
    fmb_cuda_ctx ctx;
    int ctx_ok;
    fmb_config c;
    fmb_kdt wt; /* big matrices and activations: bf16, or f32 with --dtype f32 */
    size_t chunk, max_batch, rows, head_rows;
    char device[320];

    void *wblock;
    size_t wbytes;
    cu_layer *layers;
    void *embed, *lm_head;
    float *norm_f;

    void *arena;
    size_t arena_bytes;
    float *resid, *mo, *BC, *dtscale, *logits, *lp_d, *topk_lp_d;
    void *u, *xz, *xc, *S, *dtp, *scan_ws;
    int32_t *ids_d, *tgt_d, *rank_d, *am_d, *topk_ids_d;
    void *plan_d;
    /* pinned host mirrors */
    void *plan_h;
    int32_t *ids_h, *tgt_h, *rank_h, *am_h, *topk_ids_h;
    float *lp_h, *topk_lp_h, *logits_h;
    size_t logits_h_rows;

    cu_graph graphs[CU_MAX_GRAPHS];
    int use_graphs;
} cu_impl;

typedef struct {
    float *d; /* conv [L, E, K-1] then ssm [L, E, N] */
} cu_state;

int fmb_cuda_available(void)
{
    return fmb_cuda_device_count() > 0;
}

// --- sizes ----------------------------------------------------------------------------------

static size_t al256(size_t x)
{
    return (x + 255) & ~(size_t)255;
}

static size_t conv_floats(const fmb_config *c)
{
    return (size_t)(c->L * c->E * (c->K - 1));
}

static size_t state_floats(const fmb_config *c)
{
    return conv_floats(c) + (size_t)(c->L * c->E * c->N);
}

/* Bytes of the weight block (matching assign_weights' carving). */
static size_t weights_bytes(const fmb_config *c, fmb_kdt wt, int tied)
{
    size_t ws = fmb_kdt_size(wt), E = (size_t)c->E, D = (size_t)c->D, N = (size_t)c->N;
    size_t K = (size_t)c->K;
    size_t per = al256(2 * E * D * ws) + al256((size_t)(c->R + 2 * c->N) * E * ws) +
                 al256(E * (size_t)c->R * ws) + al256(D * E * ws);
    per += al256(D * 4) + al256(2 * E * 4) + al256(E * K * 4) + al256(E * 4) * 3 +
           al256(E * N * 4) + al256(D * 4);
    size_t b = per * (size_t)c->L + al256((size_t)c->V * D * ws) + al256(D * 4);
    if (!tied)
        b += al256((size_t)c->V * D * ws);
    return b;
}

// --- weights --------------------------------------------------------------------------------

typedef struct {
    void *pin[2], *dst[2];
    unsigned which;
} stager;

static fmb_kdt kdt_of(fmb_dtype d)
{
    return d == FMB_DT_F32 ? FMB_KDT_F32 : d == FMB_DT_BF16 ? FMB_KDT_BF16 : FMB_KDT_F16;
}

/* Copies tensor t (any dtype) to dst as type dt through pinned double buffers. */
static void upload(cu_impl *p, stager *sg, const fmb_tensor *t, void *dst, fmb_kdt dt)
{
    fmb_kdt st = kdt_of(t->dtype);
    size_t es = fmb_kdt_size(st), ds = fmb_kdt_size(dt);
    size_t per = CU_STAGE / es;
    for (size_t off = 0; off < t->numel; off += per) {
        size_t n = t->numel - off < per ? t->numel - off : per;
        int i = (int)(sg->which++ & 1);
        fmb_cuda_sync(&p->ctx); /* the stage buffer's previous copy has finished */
        memcpy(sg->pin[i], (const char *)t->data + off * es, n * es);
        if (st == dt) {
            fmb_cuda_h2d(&p->ctx, (char *)dst + off * ds, sg->pin[i], n * es);
        } else {
            fmb_cuda_h2d(&p->ctx, sg->dst[i], sg->pin[i], n * es);
            fmb_k_convert(&p->ctx, sg->dst[i], st, (char *)dst + off * ds, dt, n);
        }
    }
}

/* Carves the weight block; returns the end offset. */
static size_t assign_weights(cu_impl *p, int tied)
{
    const fmb_config *c = &p->c;
    size_t ws = fmb_kdt_size(p->wt), E = (size_t)c->E, D = (size_t)c->D, N = (size_t)c->N;
    size_t K = (size_t)c->K, R = (size_t)c->R;
    char *b = p->wblock;
    size_t off = 0;
#define TAKE(bytes) ((void *)(b + (off += al256(bytes)) - al256(bytes)))
    for (int64_t l = 0; l < c->L; l++) {
        cu_layer *y = &p->layers[l];
        y->in_proj = TAKE(2 * E * D * ws);
        y->x_proj = TAKE((R + 2 * N) * E * ws);
        y->dt_proj = TAKE(E * R * ws);
        y->out_proj = TAKE(D * E * ws);
        y->norm = TAKE(D * 4);
        y->in_proj_bias = TAKE(2 * E * 4);
        y->conv_w = TAKE(E * K * 4);
        y->conv_b = TAKE(E * 4);
        y->dt_bias = TAKE(E * 4);
        y->D = TAKE(E * 4);
        y->A = TAKE(E * N * 4);
        y->out_proj_bias = TAKE(D * 4);
    }
    p->embed = TAKE((size_t)c->V * D * ws);
    p->norm_f = TAKE(D * 4);
    p->lm_head = tied ? p->embed : TAKE((size_t)c->V * D * ws);
#undef TAKE
    return off;
}

static void load_weights(cu_impl *p, const fmb_model *m)
{
    const fmb_config *c = &p->c;
    stager sg = {{NULL, NULL}, {NULL, NULL}, 0};
    for (int i = 0; i < 2; i++) {
        sg.pin[i] = fmb_cuda_host_alloc(CU_STAGE);
        sg.dst[i] = fmb_cuda_malloc(CU_STAGE);
    }
    size_t E = (size_t)c->E, N = (size_t)c->N;
    for (int64_t l = 0; l < c->L; l++) {
        const fmb_layer_weights *w = &m->layers[l];
        cu_layer *y = &p->layers[l];
        upload(p, &sg, w->in_proj, y->in_proj, p->wt);
        upload(p, &sg, w->x_proj, y->x_proj, p->wt);
        upload(p, &sg, w->dt_proj, y->dt_proj, p->wt);
        upload(p, &sg, w->out_proj, y->out_proj, p->wt);
        upload(p, &sg, w->norm, y->norm, FMB_KDT_F32);
        if (w->in_proj_bias)
            upload(p, &sg, w->in_proj_bias, y->in_proj_bias, FMB_KDT_F32);
        else
            y->in_proj_bias = NULL;
        upload(p, &sg, w->conv_w, y->conv_w, FMB_KDT_F32); /* [E, 1, K] == [E, K] */
        if (w->conv_b)
            upload(p, &sg, w->conv_b, y->conv_b, FMB_KDT_F32);
        else
            y->conv_b = NULL;
        upload(p, &sg, w->dt_bias, y->dt_bias, FMB_KDT_F32);
        upload(p, &sg, w->D, y->D, FMB_KDT_F32);
        upload(p, &sg, w->A_log, y->A, FMB_KDT_F32);
        fmb_k_neg_exp(&p->ctx, y->A, y->A, E * N); /* A = -torch.exp(self.A_log.float()) */
        if (w->out_proj_bias)
            upload(p, &sg, w->out_proj_bias, y->out_proj_bias, FMB_KDT_F32);
        else
            y->out_proj_bias = NULL;
    }
    upload(p, &sg, m->embed, p->embed, p->wt);
    upload(p, &sg, m->norm_f, p->norm_f, FMB_KDT_F32);
    if (p->lm_head != p->embed)
        upload(p, &sg, m->lm_head, p->lm_head, p->wt);
    fmb_cuda_sync(&p->ctx);
    for (int i = 0; i < 2; i++) {
        fmb_cuda_host_free(sg.pin[i]);
        fmb_cuda_free(sg.dst[i]);
    }
}

/* Random weights in the spirit of HF's initialisation (engine/synth.h), made on the device. */
static void synth_weights(cu_impl *p, uint64_t seed)
{
    const fmb_config *c = &p->c;
    size_t E = (size_t)c->E, D = (size_t)c->D, N = (size_t)c->N, K = (size_t)c->K;
    size_t R = (size_t)c->R, V = (size_t)c->V;
    fmb_cuda_ctx *x = &p->ctx;
    uint64_t s = seed * 1000003u;
    for (int64_t l = 0; l < c->L; l++) {
        cu_layer *y = &p->layers[l];
        fmb_k_fill_uniform(x, y->in_proj, p->wt, 2 * E * D, s++, 1.0f / sqrtf((float)D), 0);
        fmb_k_fill_uniform(x, y->x_proj, p->wt, (R + 2 * N) * E, s++, 1.0f / sqrtf((float)E), 0);
        fmb_k_fill_uniform(x, y->dt_proj, p->wt, E * R, s++, 1.0f / sqrtf((float)R), 0);
        fmb_k_fill_uniform(x, y->out_proj, p->wt, D * E, s++, 1.0f / sqrtf((float)E), 0);
        fmb_k_fill_uniform(x, y->norm, FMB_KDT_F32, D, s++, 0.1f, 1.0f);
        y->in_proj_bias = NULL;
        y->out_proj_bias = NULL;
        fmb_k_fill_uniform(x, y->conv_w, FMB_KDT_F32, E * K, s++, 1.0f / sqrtf((float)K), 0);
        fmb_k_fill_uniform(x, y->conv_b, FMB_KDT_F32, E, s++, 0.1f, 0);
        /* softplus⁻¹ of dt in ~[1e-3, 0.1]: bias in about [-6.9, -2.3] */
        fmb_k_fill_uniform(x, y->dt_bias, FMB_KDT_F32, E, s++, 2.3f, -4.6f);
        fmb_k_fill_uniform(x, y->D, FMB_KDT_F32, E, s++, 0.1f, 1.0f);
        fmb_k_fill_alog(x, y->A, E, N, s++, 0.1f);
        fmb_k_neg_exp(x, y->A, y->A, E * N);
    }
    fmb_k_fill_uniform(x, p->embed, p->wt, V * D, s++, 1.0f, 0);
    fmb_k_fill_uniform(x, p->norm_f, FMB_KDT_F32, D, s++, 0.1f, 1.0f);
    if (p->lm_head != p->embed)
        fmb_k_fill_uniform(x, p->lm_head, p->wt, V * D, s++, 1.0f / sqrtf((float)D), 0);
    fmb_cuda_sync(x);
}

// --- open / free ----------------------------------------------------------------------------

static void cu_free(void *impl)
{
    cu_impl *p = impl;
    if (!p)
        return;
    if (p->ctx_ok) {
        fmb_cuda_sync(&p->ctx);
        for (int i = 0; i < CU_MAX_GRAPHS; i++)
            fmb_cuda_graph_free(p->graphs[i].exec);
        fmb_cuda_free(p->wblock);
        fmb_cuda_free(p->arena);
        fmb_cuda_host_free(p->plan_h);
        fmb_cuda_host_free(p->ids_h);
        fmb_cuda_host_free(p->logits_h);
        fmb_cuda_ctx_free(&p->ctx);
    }
    free(p->layers);
    free(p);
}

/* Lays out the scratch arena for p->rows tokens per pass and a logits tile of head_rows rows
 * at base (NULL: only measure). Returns its bytes. The scan workspace covers a one-sequence
 * chunk plan (segments ≥ 128 tokens); decode plans never use it. */
static size_t carve_arena(cu_impl *p, char *base)
{
    const fmb_config *c = &p->c;
    size_t as = fmb_kdt_size(p->wt), E = (size_t)c->E, D = (size_t)c->D, N = (size_t)c->N;
    size_t S = (size_t)(c->R + 2 * c->N), T = p->rows;
    size_t segs = fmb_k_plan_max_segs(T, 1, 128);
    size_t off = 0;
#define TAKE(bytes) ((void *)(base + (off += al256(bytes)) - al256(bytes)))
    p->resid = TAKE(T * D * 4);
    p->mo = TAKE(T * D * 4);
    p->u = TAKE(T * D * as);
    p->xz = TAKE(T * 2 * E * as);
    p->xc = TAKE(T * E * as);
    p->S = TAKE(T * S * as);
    p->dtp = TAKE(T * E * as);
    p->BC = TAKE(T * 2 * N * 4);
    p->dtscale = TAKE(T * 4);
    p->scan_ws = TAKE(fmb_k_scan_ws_bytes(segs, E, N));
    p->logits = TAKE(p->head_rows * (size_t)c->V * 4);
    p->ids_d = TAKE(T * 4);
    p->tgt_d = TAKE(T * 4);
    p->lp_d = TAKE(T * 4);
    p->rank_d = TAKE(T * 4);
    p->am_d = TAKE(T * 4);
    p->topk_ids_d = TAKE(T * 64 * 4);
    p->topk_lp_d = TAKE(T * 64 * 4);
    p->plan_d = TAKE(fmb_k_plan_bytes(T, T));
#undef TAKE
    return off;
}

static fmb_status cu_open(const fmb_model *m, const fmb_engine_opts *o, void **out, fmb_err *err)
{
    cu_impl *p = fmb_xcalloc(1, sizeof *p);
    fmb_status s = fmb_cuda_ctx_init(&p->ctx, o->device, &o->kernel, err);
    if (s) {
        free(p);
        return s;
    }
    p->ctx_ok = 1;
    p->c = m->cfg;
    const fmb_config *c = &p->c;
    if (c->N > 16 || c->K > 8 || c->K < 1) {
        cu_free(p);
        return fmb_fail(err, FMB_EUNSUP,
                        "cuda backend: d_state %lld (max 16) or d_conv %lld (max 8)",
                        (long long)c->N, (long long)c->K);
    }
    p->wt = o->compute == FMB_COMPUTE_F32 ? FMB_KDT_F32 : FMB_KDT_BF16;
    int synthetic = m->embed == NULL;
    int tied = !synthetic && m->lm_head == m->embed;
    p->max_batch = o->max_batch ? o->max_batch : 16;
    p->layers = fmb_xcalloc((size_t)c->L, sizeof *p->layers);
    p->wbytes = weights_bytes(c, p->wt, tied);
    p->use_graphs = !o->kernel.no_graphs;

    // Chunk: the option, else 4096; under --mem-limit the largest that fits.
    size_t state_b = state_floats(c) * 4;
    size_t chunk = o->chunk_tokens ? o->chunk_tokens : 4096;
    size_t ctx_reserve = (size_t)600 << 20; /* CUDA context, cuBLAS workspace, kernels */
    for (;;) {
        p->chunk = chunk;
        p->rows = chunk > p->max_batch ? chunk : p->max_batch;
        p->head_rows = p->rows < 256 ? p->rows : 256;
        p->arena_bytes = carve_arena(p, NULL);
        size_t need = p->wbytes + p->arena_bytes + 2 * state_b + ctx_reserve;
        if (!o->mem_limit || need <= o->mem_limit)
            break;
        if (o->chunk_tokens || chunk <= 64) {
            size_t smallest = need;
            cu_free(p);
            return fmb_fail(
                err, FMB_EINVAL,
                "--mem-limit %.2f GiB is too small: weights %.2f GiB + scratch %.2f GiB "
                "+ 2 states + context need at least %.2f GiB",
                o->mem_limit / 1073741824.0, (double)p->wbytes / 1073741824.0,
                (double)p->arena_bytes / 1073741824.0, smallest / 1073741824.0);
        }
        chunk /= 2;
    }
    p->wblock = fmb_cuda_try_malloc(p->wbytes);
    p->arena = p->wblock ? fmb_cuda_try_malloc(p->arena_bytes) : NULL;
    if (!p->wblock || !p->arena) {
        size_t fr = 0, tot = 0;
        fmb_cuda_mem_info(&fr, &tot);
        size_t wb = p->wbytes, ab = p->arena_bytes;
        cu_free(p);
        return fmb_fail(err, FMB_ENOMEM,
                        "cuda backend: %.2f GiB of weights + %.2f GiB of scratch do not fit in "
                        "the device's %.2f GiB free",
                        wb / 1073741824.0, ab / 1073741824.0, fr / 1073741824.0);
    }
    size_t used = assign_weights(p, tied);
    FMB_ASSERT(used <= p->wbytes);
    FMB_ASSERT(carve_arena(p, p->arena) == p->arena_bytes);
    p->plan_h = fmb_cuda_host_alloc(fmb_k_plan_bytes(p->rows, p->rows));
    /* pinned mirrors of the per-position outputs: ids, tgt, rank, am [rows]; topk ids [rows·64];
     * lp [rows]; topk lp [rows·64] */
    size_t T = p->rows;
    p->ids_h = fmb_cuda_host_alloc(T * 4 * 5 + T * 64 * 8);
    p->tgt_h = p->ids_h + T;
    p->rank_h = p->tgt_h + T;
    p->am_h = p->rank_h + T;
    p->lp_h = (float *)(p->am_h + T);
    p->topk_ids_h = (int32_t *)(p->lp_h + T);
    p->topk_lp_h = (float *)(p->topk_ids_h + T * 64);
    p->logits_h_rows = p->max_batch < p->head_rows ? p->head_rows : p->max_batch;
    p->logits_h = fmb_cuda_host_alloc(p->logits_h_rows * (size_t)c->V * 4);

    if (synthetic) {
        unsigned long long seed = 1;
        sscanf(m->dir, "synthetic:%llu", &seed);
        synth_weights(p, (uint64_t)seed);
    } else {
        load_weights(p, m);
    }
    snprintf(p->device, sizeof p->device, "%s (%s, chunk %zu)", p->ctx.name,
             p->wt == FMB_KDT_F32 ? "f32" : "bf16", p->chunk);
    if (o->verbose)
        fprintf(stderr, "cuda: %s: weights %.2f GiB, scratch %.2f GiB (chunk %zu, batch %zu)\n",
                p->ctx.name, p->wbytes / 1073741824.0, p->arena_bytes / 1073741824.0, p->chunk,
                p->max_batch);
    *out = p;
    return FMB_OK;
}

static const char *cu_device_name(void *impl)
{
    return ((cu_impl *)impl)->device;
}

static void cu_bind_thread(void *impl)
{
    fmb_cuda_ctx_bind(&((cu_impl *)impl)->ctx);
}

static size_t cu_chunk_tokens(void *impl)
{
    return ((cu_impl *)impl)->chunk;
}

// --- states ---------------------------------------------------------------------------------

static fmb_status cu_state_new(void *impl, void **out, fmb_err *err)
{
    cu_impl *p = impl;
    size_t b = state_floats(&p->c) * 4;
    cu_state *s = fmb_xcalloc(1, sizeof *s);
    s->d = fmb_cuda_try_malloc(b);
    if (!s->d) {
        free(s);
        return fmb_fail(err, FMB_ENOMEM, "cuda backend: no device memory for a %.1f MiB state",
                        b / 1048576.0);
    }
    fmb_cuda_memset(&p->ctx, s->d, 0, b);
    fmb_cuda_sync(&p->ctx);
    *out = s;
    return FMB_OK;
}

static void cu_state_free(void *impl, void *st)
{
    cu_impl *p = impl;
    cu_state *s = st;
    if (!s)
        return;
    fmb_cuda_sync(&p->ctx);
    fmb_cuda_free(s->d);
    free(s);
}

static void cu_state_reset(void *impl, void *st)
{
    cu_impl *p = impl;
    fmb_cuda_memset(&p->ctx, ((cu_state *)st)->d, 0, state_floats(&p->c) * 4);
    fmb_cuda_sync(&p->ctx);
}

static void cu_state_copy(void *impl, void *dst, const void *src)
{
    cu_impl *p = impl;
    fmb_cuda_d2d(&p->ctx, ((cu_state *)dst)->d, ((const cu_state *)src)->d,
                 state_floats(&p->c) * 4);
    fmb_cuda_sync(&p->ctx);
}

static void cu_state_read(void *impl, const void *st, float *conv, float *ssm)
{
    cu_impl *p = impl;
    const cu_state *s = st;
    size_t cf = conv_floats(&p->c), sf = state_floats(&p->c) - cf;
    if (conv)
        fmb_cuda_d2h(&p->ctx, conv, s->d, cf * 4);
    if (ssm)
        fmb_cuda_d2h(&p->ctx, ssm, s->d + cf, sf * 4);
    fmb_cuda_sync(&p->ctx);
}

static void cu_state_write(void *impl, void *st, const float *conv, const float *ssm)
{
    cu_impl *p = impl;
    cu_state *s = st;
    size_t cf = conv_floats(&p->c), sf = state_floats(&p->c) - cf;
    if (conv)
        fmb_cuda_h2d(&p->ctx, s->d, conv, cf * 4);
    if (ssm)
        fmb_cuda_h2d(&p->ctx, s->d + cf, ssm, sf * 4);
    fmb_cuda_sync(&p->ctx);
}

// --- forward --------------------------------------------------------------------------------

/* Rows at which fmb_k_gemm_inv chooses its algorithms: the default chunk for the layers, the
 * head tile for lm_head. Constants, so that the choice (and so every result) is the same
 * whatever --chunk-tokens says. */
#define CU_GEMM_PLAN_ROWS 4096
#define CU_HEAD_PLAN_ROWS 256
/* Rows at which the decode step's GEMMs (matvec=auto|gemm: in_proj, out_proj, lm_head) choose
 * their algorithm, which then runs for every step of 1 to CU_STEP_MAXB sequences. Until
 * 0.3.0 the plan cache ignored the rows, so decode ran prefill's 4096-row plans (256 x 128
 * tiles: 32 blocks for out_proj at 1 sequence, 78 µs). H200, 7B step at 1 / 16 / 64 / 256
 * sequences: plans at 256 rows 8.2 / 8.4 / 12.5 / 23.5 ms, at 64 rows 5.5 / 6.5 / 10.9 / 25.8,
 * at 16 rows 4.9 / 6.3 / 15.2 / 45.9 (bench/RESULTS.md): 64 is fast at both ends. */
#define CU_DECODE_PLAN_ROWS 64

/* C[T, M] = A[T, K] · W[M, K]ᵀ (acc: C += A · Wᵀ, one fp32 rounding of acc + C). Prefill (plan_rows
 * > 0): the row-invariant GEMM for every T, so that a token's results do not depend on the chunk it
 * falls in. Decode (plan_rows = 0): batch-invariant as well, so that a sequence's logits do not
 * depend on the other sequences of its step or on their number (docs/DECISIONS.md): bf16, the
 * tensor-core matrix-vector kernel for every B (its sums fixed by M and K alone); f32 (and
 * bf16 shapes the matvec does not take), the row-invariant GEMM with the plan rows the forward
 * pass uses for the same matrix (lm_head's tile, else the layers'), so decode shares
 * prefill's algorithms. */
static void mm(cu_impl *p,
               size_t plan_rows,
               size_t T,
               size_t M,
               size_t K,
               const void *A,
               size_t lda,
               const void *W,
               size_t ldw,
               void *C,
               size_t ldc,
               fmb_kdt ct,
               int acc)
{
    float beta = acc ? 1.0f : 0.0f;
    // matvec=auto|gemm: the wide matrices (in_proj, out_proj, lm_head: M ≥ 4096 outputs, and
    // for auto K ≥ 1024 as well, which leaves dt_proj's K = R to the matvec, 4.6 µs a layer
    // against cuBLAS's 14.8 at 1 sequence) through the row-invariant GEMM with a plan fixed at
    // CU_DECODE_PLAN_ROWS (the choice depends on the matrix alone, never on T; its figures are
    // there); matvec=mma (the tensor-core chain kernels): 5.7 ms at 1 sequence, 7.6 at 16, 24.6
    // at 64, 46.7 at 256 (bench/RESULTS.md, docs/DECISIONS.md).
    const int ma = p->ctx.matvec_algo;
    if (!plan_rows && M >= 4096 &&
        (ma == FMB_MATVEC_GEMM || (ma == FMB_MATVEC_AUTO && K >= 1024))) {
        fmb_k_gemm_inv(&p->ctx, T, M, K, A, lda, W, ldw, p->wt, C, ldc, ct, beta,
                       CU_DECODE_PLAN_ROWS);
        return;
    }
    if (!plan_rows && p->wt == FMB_KDT_BF16 && fmb_k_matvec_supported(T, K, ldw, p->wt) &&
        lda % 8 == 0 && ((uintptr_t)A & 15) == 0 && ((uintptr_t)W & 15) == 0) {
        fmb_k_matvec(&p->ctx, T, M, K, W, ldw, A, lda, p->wt, C, ldc, ct, acc);
        return;
    }
    // f32, or a bf16 shape the matvec does not take (K or lda not a multiple of 8: the tiny
    // test models' dt_proj): the row-invariant GEMM, batch-invariant too. Whether the matvec
    // runs depends on the shape and the arena's layout, never on T.
    if (!plan_rows)
        plan_rows = W == p->lm_head ? CU_HEAD_PLAN_ROWS : CU_GEMM_PLAN_ROWS;
    fmb_k_gemm_inv(&p->ctx, T, M, K, A, lda, W, ldw, p->wt, C, ldc, ct, beta, plan_rows);
}

/* All layers and the final norm over T tokens whose ids are in ids_d, under plan pl.
 * Leaves the normed final hidden states in p->u ([T, D], activation type). prefill: the
 * chunk-length-independent GEMMs (mm's plan_rows). */
static void run_layers(cu_impl *p, const fmb_kplan *pl, size_t T, int prefill)
{
    size_t pr = prefill ? CU_GEMM_PLAN_ROWS : 0;
    const fmb_config *c = &p->c;
    fmb_cuda_ctx *x = &p->ctx;
    size_t D = (size_t)c->D, E = (size_t)c->E, N = (size_t)c->N, K = (size_t)c->K;
    size_t R = (size_t)c->R, S = R + 2 * N, as = fmb_kdt_size(p->wt);
    fmb_kdt at = p->wt;
    size_t conv_total = conv_floats(c);
    // hidden_states = self.embeddings(input_ids)
    fmb_k_embed(x, p->embed, at, p->ids_d, T, D, p->resid);
    // Without an out_proj bias the out_proj GEMM adds its product into the residual stream
    // itself (fp32: the same single rounding of residual + product as a separate add), which
    // saves the norm one read of a [T, D] f32 tensor; with a bias (added after the product, as
    // HF does) the product goes to mo and the norm adds it.
    const float *pending = NULL; /* mo when the previous layer left its output there */
    for (int64_t l = 0; l < c->L; l++) {
        const cu_layer *w = &p->layers[l];
        // residual += previous mixer output; hidden_states = self.norm(residual)
        fmb_k_add_rmsnorm(x, p->resid, pending, w->norm, c->norm_eps, p->u, at, T, D);
        // projected_states = self.in_proj(hidden_states): x = cols 0..E-1, z = E..2E-1
        mm(p, pr, T, 2 * E, D, p->u, D, w->in_proj, D, p->xz, 2 * E, at, 0);
        if (w->in_proj_bias)
            fmb_k_add_bias(x, p->xz, 2 * E, at, T, 2 * E, w->in_proj_bias);
        // hidden_states = act(conv1d(x)) continuing from the conv state
        fmb_k_conv1d(x, p->xz, 2 * E, p->xc, E, at, w->conv_w, w->conv_b, E, K, pl,
                     (size_t)l * E * (K - 1));
        // ssm_parameters = self.x_proj(hidden_states) = (δ | B | C)
        mm(p, pr, T, S, E, p->xc, E, w->x_proj, E, p->S, S, at, 0);
        size_t ssm_off = conv_total + (size_t)l * E * N;
        void *zp = (char *)p->xz + E * as; /* the gate: columns E..2E-1 of xz */
        if (!prefill) {
            // decode: dt_proj(δ), then the one-token scan with the rms of δ, B, C fused in
            mm(p, pr, T, E, R, p->S, S, w->dt_proj, R, p->dtp, E, at, 0);
            fmb_k_scan_step(x, at, p->xc, E, p->dtp, E, p->S, S, R, c->mixer_eps, c->mixer_norm,
                            w->dt_bias, w->A, w->D, zp, 2 * E, p->xc, E, E, N, pl, ssm_off);
        } else {
            // B, C = rms(B), rms(C); δ's rms is a per-token scale applied after dt_proj
            fmb_k_ssm_params(x, p->S, S, at, T, R, N, c->mixer_eps, c->mixer_norm, p->BC,
                             p->dtscale);
            // dt_proj(δ) without its bias (added inside the scan before softplus)
            mm(p, pr, T, E, R, p->S, S, w->dt_proj, R, p->dtp, E, at, 0);
            // the selective scan; y overwrites the conv output (read then written per element)
            fmb_k_scan(x, at, p->xc, E, p->dtp, E, p->dtscale, w->dt_bias, w->A, p->BC, 2 * N, w->D,
                       zp, 2 * E, p->xc, E, E, N, pl, ssm_off, p->scan_ws);
        }
        // contextualized_states = self.out_proj(scan_output), f32
        if (w->out_proj_bias) {
            mm(p, pr, T, D, E, p->xc, E, w->out_proj, E, p->mo, D, FMB_KDT_F32, 0);
            fmb_k_add_bias(x, p->mo, D, FMB_KDT_F32, T, D, w->out_proj_bias);
            pending = p->mo;
        } else {
            mm(p, pr, T, D, E, p->xc, E, w->out_proj, E, p->resid, D, FMB_KDT_F32, 1);
            pending = NULL;
        }
    }
    // hidden_states = self.norm_f(residual + last mixer output)
    fmb_k_add_rmsnorm(x, p->resid, pending, p->norm_f, c->norm_eps, p->u, at, T, D);
}

/* 1 when piece positions [t0, t0 + T) of o need the lm_head. */
static int wants_head(const fmb_outputs *o, size_t t0, size_t T)
{
    if (!o)
        return 0;
    if (o->logprob || o->rank || o->argmax || (o->top_k > 0 && o->topk_ids))
        return 1;
    return o->logits && o->logits_from < t0 + T;
}

static void build_plan(cu_impl *p,
                       fmb_kplan *pl,
                       size_t T,
                       int nseq,
                       const int32_t *starts,
                       const uint8_t *has,
                       float *const *st,
                       size_t seg)
{
    fmb_k_plan_build(pl, p->plan_h, p->plan_d, T, nseq, starts, has, st, seg);
    fmb_cuda_h2d(&p->ctx, p->plan_d, p->plan_h, pl->bytes);
}

/* One prefill chunk of np pieces packed into T = Σ n rows (T ≤ p->chunk, np ≤ p->rows):
 * one varlen plan (each piece a sequence continuing its own state), the layers over all rows,
 * then the lm_head over the row tiles some piece wants, its per-row outputs routed back to
 * the pieces. Every per-row computation is independent of the other rows (row-invariant GEMM
 * plans, a time-sequential scan per sequence, per-row norms and head reductions), so a
 * piece's results do not depend on what shares its chunk. */
static void run_chunk(cu_impl *p, const fmb_bpiece *pc, size_t np)
{
    const fmb_config *c = &p->c;
    size_t V = (size_t)c->V, D = (size_t)c->D, as = fmb_kdt_size(p->wt);
    int32_t starts[FMB_CU_MAX_PIECES + 1];
    uint8_t has[FMB_CU_MAX_PIECES];
    float *sp[FMB_CU_MAX_PIECES];
    FMB_ASSERT(np >= 1 && np <= FMB_CU_MAX_PIECES && np <= p->rows);
    size_t T = 0;
    int k = 0, need_red = 0, need_logits = 0;
    fmb_cuda_sync(&p->ctx); /* pinned mirrors are free again */
    for (size_t i = 0; i < np; i++) {
        const fmb_outputs *o = pc[i].out;
        starts[i] = (int32_t)T;
        has[i] = 1; /* states are zeroed at creation: continuing from zeros = fresh */
        sp[i] = ((cu_state *)pc[i].st)->d;
        memcpy(p->ids_h + T, pc[i].ids, pc[i].n * 4);
        for (size_t t = 0; t < pc[i].n; t++)
            p->tgt_h[T + t] = o && o->targets ? o->targets[t] : -1;
        if (o && (o->logprob || o->rank || o->argmax || (o->top_k > 0 && o->topk_ids)))
            need_red = 1;
        if (o && o->topk_ids && o->top_k > k)
            k = o->top_k;
        if (o && o->logits)
            need_logits = 1;
        T += pc[i].n;
    }
    starts[np] = (int32_t)T;
    FMB_ASSERT(T >= 1 && T <= p->chunk);
    fmb_kplan pl;
    build_plan(p, &pl, T, (int)np, starts, has, sp,
               fmb_k_scan_seg_len(&p->ctx, T, (size_t)c->E, np));
    pl.chunk_inv = 1; /* kernel-side only: the device blob does not hold it */
    fmb_cuda_h2d(&p->ctx, p->ids_d, p->ids_h, T * 4);
    run_layers(p, &pl, T, 1);
    if (need_red)
        fmb_cuda_h2d(&p->ctx, p->tgt_d, p->tgt_h, T * 4);
    size_t pi = 0; /* the first piece that may overlap the current tile */
    for (size_t r0 = 0; r0 < T; r0 += p->head_rows) {
        size_t rows = T - r0 < p->head_rows ? T - r0 : p->head_rows;
        while (pi < np && (size_t)starts[pi + 1] <= r0)
            pi++;
        int want = 0;
        for (size_t i = pi; i < np && (size_t)starts[i] < r0 + rows && !want; i++) {
            size_t a = r0 > (size_t)starts[i] ? r0 - (size_t)starts[i] : 0;
            size_t b = (size_t)starts[i + 1] < r0 + rows ? pc[i].n : r0 + rows - (size_t)starts[i];
            want = wants_head(pc[i].out, a, b - a);
        }
        if (!want)
            continue;
        // logits = self.lm_head(hidden_states): [rows, V] f32
        mm(p, CU_HEAD_PLAN_ROWS, rows, V, D, (char *)p->u + r0 * D * as, D, p->lm_head, D,
           p->logits, V, FMB_KDT_F32, 0);
        if (need_red)
            fmb_k_head_reduce(&p->ctx, p->logits, V, rows, V, p->tgt_d + r0, p->lp_d + r0,
                              p->rank_d + r0, p->am_d + r0, k,
                              k ? p->topk_ids_d + r0 * (size_t)k : NULL,
                              k ? p->topk_lp_d + r0 * (size_t)k : NULL);
        if (!need_logits)
            continue;
        // raw logits of the positions at or after each piece's logits_from
        int synced = 0;
        for (size_t i = pi; i < np && (size_t)starts[i] < r0 + rows; i++) {
            const fmb_outputs *o = pc[i].out;
            if (!o || !o->logits)
                continue;
            size_t s0 = (size_t)starts[i], s1 = (size_t)starts[i + 1];
            size_t a = r0 > s0 ? r0 : s0, b = s1 < r0 + rows ? s1 : r0 + rows;
            if (a < s0 + o->logits_from)
                a = s0 + o->logits_from;
            if (a >= b)
                continue;
            if (!synced) {
                fmb_cuda_d2h(&p->ctx, p->logits_h, p->logits, rows * V * 4);
                fmb_cuda_sync(&p->ctx);
                synced = 1;
            }
            memcpy(o->logits + (a - s0 - o->logits_from) * V, p->logits_h + (a - r0) * V,
                   (b - a) * V * 4);
        }
    }
    if (need_red) {
        fmb_cuda_d2h(&p->ctx, p->lp_h, p->lp_d, T * 4);
        fmb_cuda_d2h(&p->ctx, p->rank_h, p->rank_d, T * 4);
        fmb_cuda_d2h(&p->ctx, p->am_h, p->am_d, T * 4);
        if (k) {
            fmb_cuda_d2h(&p->ctx, p->topk_ids_h, p->topk_ids_d, T * (size_t)k * 4);
            fmb_cuda_d2h(&p->ctx, p->topk_lp_h, p->topk_lp_d, T * (size_t)k * 4);
        }
        fmb_cuda_sync(&p->ctx);
        for (size_t i = 0; i < np; i++) {
            const fmb_outputs *o = pc[i].out;
            size_t t0 = (size_t)starts[i], n = pc[i].n;
            if (!o)
                continue;
            if (o->logprob)
                memcpy(o->logprob, p->lp_h + t0, n * 4);
            if (o->rank)
                memcpy(o->rank, p->rank_h + t0, n * 4);
            if (o->argmax)
                memcpy(o->argmax, p->am_h + t0, n * 4);
            if (o->top_k > 0 && o->topk_ids) {
                // the chunk's top-k is the largest any piece asked for; its first top_k
                // entries are this piece's top-k (sorted, ties to the lowest id)
                size_t kk = (size_t)o->top_k;
                for (size_t t = 0; t < n; t++) {
                    memcpy(o->topk_ids + t * kk, p->topk_ids_h + (t0 + t) * (size_t)k, kk * 4);
                    if (o->topk_logprobs)
                        memcpy(o->topk_logprobs + t * kk, p->topk_lp_h + (t0 + t) * (size_t)k,
                               kk * 4);
                }
            }
        }
    }
}

static fmb_status
cu_forward(void *impl, void *st, const int32_t *ids, size_t n, const fmb_outputs *o, fmb_err *err)
{
    (void)err;
    cu_impl *p = impl;
    size_t V = (size_t)p->c.V;
    for (size_t t0 = 0; t0 < n; t0 += p->chunk) {
        size_t T = n - t0 < p->chunk ? n - t0 : p->chunk;
        fmb_bpiece pc = {st, ids + t0, T, NULL};
        fmb_outputs so;
        pc.out = fmb_outputs_slice(o, t0, T, V, &so);
        run_chunk(p, &pc, 1);
    }
    fmb_cuda_sync(&p->ctx);
    return FMB_OK;
}

static fmb_status cu_forward_chunk(void *impl, const fmb_bpiece *pc, size_t np, fmb_err *err)
{
    cu_impl *p = impl;
    // The packed scan is TILE (N = 16) or QUAD (N % 4 == 0), both time-sequential per
    // sequence; other N would need SEG, whose workspace is sized for one sequence: run those
    // pieces one by one.
    if (!(p->c.N == 16 || p->c.N % 4 == 0) || np > p->rows) {
        for (size_t i = 0; i < np; i++) {
            fmb_status s = cu_forward(impl, pc[i].st, pc[i].ids, pc[i].n, pc[i].out, err);
            if (s)
                return s;
        }
        return FMB_OK;
    }
    run_chunk(p, pc, np);
    fmb_cuda_sync(&p->ctx);
    return FMB_OK;
}

/* The device work of one decode step of B sequences whose plan and ids are in the pinned
 * mirrors: uploads, layers, lm_head, logits to pinned memory. Captured into a graph. */
static void step_body(cu_impl *p, const fmb_kplan *pl, size_t B)
{
    size_t V = (size_t)p->c.V, D = (size_t)p->c.D;
    fmb_cuda_h2d(&p->ctx, p->plan_d, p->plan_h, pl->bytes);
    fmb_cuda_h2d(&p->ctx, p->ids_d, p->ids_h, B * 4);
    run_layers(p, pl, B, 0);
    for (size_t r0 = 0; r0 < B; r0 += p->head_rows) {
        size_t rows = B - r0 < p->head_rows ? B - r0 : p->head_rows;
        mm(p, 0, rows, V, D, (char *)p->u + r0 * D * fmb_kdt_size(p->wt), D, p->lm_head, D,
           p->logits, V, FMB_KDT_F32, 0);
        fmb_cuda_d2h(&p->ctx, p->logits_h + r0 * V, p->logits, rows * V * 4);
    }
}

static fmb_status
cu_step(void *impl, void *const *sts, const int32_t *ids, size_t nseq, float *logits, fmb_err *err)
{
    (void)err;
    cu_impl *p = impl;
    size_t V = (size_t)p->c.V;
    // steps of at most max_batch sequences (what the arena holds) and CU_STEP_MAXB (the plan
    // arrays below); each sequence's logits are the same whichever step it falls in
    size_t maxb = p->max_batch < p->logits_h_rows ? p->max_batch : p->logits_h_rows;
    maxb = maxb < CU_STEP_MAXB ? maxb : CU_STEP_MAXB;
    for (size_t b0 = 0; b0 < nseq; b0 += maxb) {
        size_t B = nseq - b0 < maxb ? nseq - b0 : maxb;
        int32_t starts[CU_STEP_MAXB + 1];
        uint8_t has[CU_STEP_MAXB];
        float *sp[CU_STEP_MAXB];
        FMB_ASSERT(B >= 1 && B <= CU_STEP_MAXB);
        for (size_t i = 0; i <= B; i++)
            starts[i] = (int32_t)i;
        for (size_t i = 0; i < B; i++) {
            has[i] = 1;
            sp[i] = ((cu_state *)sts[b0 + i])->d;
            for (size_t j = 0; j < i; j++)
                FMB_ASSERTF(sp[j] != sp[i], "a state appears twice in one decode step");
        }
        fmb_cuda_sync(&p->ctx);
        fmb_kplan pl;
        fmb_k_plan_build(&pl, p->plan_h, p->plan_d, B, (int)B, starts, has, sp, 1);
        memcpy(p->ids_h, ids + b0, B * 4);
        cu_graph *g = NULL;
        if (p->use_graphs && !p->ctx.debug_sync) {
            for (int i = 0; i < CU_MAX_GRAPHS && !g; i++)
                if (p->graphs[i].exec && p->graphs[i].B == B)
                    g = &p->graphs[i];
            for (int i = 0; i < CU_MAX_GRAPHS && !g; i++)
                if (!p->graphs[i].exec) {
                    fmb_cuda_graph_begin(&p->ctx);
                    step_body(p, &pl, B);
                    p->graphs[i].exec = fmb_cuda_graph_end(&p->ctx);
                    p->graphs[i].B = B;
                    g = &p->graphs[i];
                }
        }
        if (g)
            fmb_cuda_graph_launch(&p->ctx, g->exec);
        else
            step_body(p, &pl, B);
        fmb_cuda_sync(&p->ctx);
        // out of the pinned buffer: 66 MB at 256 sequences, a row per thread (one memcpy
        // thread took ~8 ms of a 36 ms step)
#pragma omp parallel for schedule(static) if (B >= 8)
        for (size_t r = 0; r < B; r++)
            memcpy(logits + (b0 + r) * V, p->logits_h + r * V, V * 4);
    }
    return FMB_OK;
}

static void cu_kernel_choices(void *impl, fmb_kernel_opts *k)
{
    const cu_impl *p = impl;
    memset(k, 0, sizeof *k);
    k->scan = p->ctx.scan_algo;
    k->matvec = p->ctx.matvec_algo;
    k->gemm = p->ctx.gemm_algo;
    k->pdl = p->ctx.pdl ? FMB_PDL_ON : FMB_PDL_OFF;
    k->no_graphs = !p->use_graphs || p->ctx.debug_sync; /* as cu_step decides */
    k->debug_sync = p->ctx.debug_sync;
    k->gemm_verbose = p->ctx.gemm_verbose;
    k->smem_cap = p->ctx.smem_cap ? FMB_SMEM_CAP_SM86 : FMB_SMEM_CAP_OFF;
}

/* Device figures: the weight block, the arena (activations, logits tile, plan) and the
 * device's own total and free memory now (after every allocation made so far). */
static void cu_memory(void *impl, fmb_engine_mem *m)
{
    cu_impl *p = impl;
    m->weights_bytes = p->wbytes;
    m->scratch_bytes = p->arena_bytes;
    size_t fr = 0, tot = 0;
    fmb_cuda_mem_info(&fr, &tot);
    m->device_total = tot;
    m->device_free = fr;
}

const fmb_backend_ops fmb_backend_cuda = {
    .name = "cuda",
    .open = cu_open,
    .free = cu_free,
    .device_name = cu_device_name,
    .chunk_tokens = cu_chunk_tokens,
    .state_new = cu_state_new,
    .state_free = cu_state_free,
    .state_reset = cu_state_reset,
    .state_copy = cu_state_copy,
    .state_read = cu_state_read,
    .state_write = cu_state_write,
    .forward = cu_forward,
    .forward_chunk = cu_forward_chunk,
    .memory = cu_memory,
    .step = cu_step,
    .kernel_choices = cu_kernel_choices,
    .bind_thread = cu_bind_thread,
};

#endif
