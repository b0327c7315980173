/*
 * cpu_backend: the float32 CPU forward pass, the numeric oracle of fmbatch.
 *
 * Token-chunk major: for each chunk of at most `chunk` tokens, embeddings, then all L layers
 * (each carrying its conv and ssm state into the next chunk), then norm_f and the lm_head in
 * bounded tiles. Every step is a kcpu kernel (the same ones the CUDA kernels are tested
 * against), and GEMMs go through OpenBLAS.
 *
 * Weights: when the whole model fits the cache budget in float32 it is converted once at
 * open (F32 tensors are used in place from the mmap when aligned). Otherwise (a 7B bf16
 * checkpoint on a 24 GB machine) the small per-layer vectors are converted once and the four
 * big matrices of a layer are converted into one layer buffer when the layer runs, and the
 * lm_head a vocabulary tile at a time: anonymous memory stays at about one layer (0.4 GiB at
 * 7B) plus the lm_head tile and the chunk's activations.
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/backend.h"
#include "kernels/cpu/kcpu.h"

void openblas_set_num_threads(int n); /* OpenBLAS extension (cblas.h declares it too) */

typedef struct {
    /* small vectors, always float32-resident */
    const float *norm, *in_proj_bias, *conv_w, *conv_b, *dt_bias, *A, *D, *out_proj_bias;
    /* big matrices: resident when cached, else NULL (converted per use) */
    const float *in_proj, *x_proj, *dt_proj, *out_proj;
} cpu_layer;

typedef struct {
    const fmb_model *m;
    fmb_config c;
    size_t chunk;     /* T: tokens per chunk */
    size_t head_rows; /* rows of the logits tile */
    size_t head_vt;   /* vocabulary rows per lm_head tile when not cached */
    int cached;
    cpu_layer *layers;
    const float *norm_f;
    const float *lm_head; /* [V, D] when cached, else NULL */
    float **owned;        /* buffers to free */
    size_t n_owned;
    size_t owned_bytes;  /* all of them */
    size_t weight_bytes; /* the part holding converted weights */
    float *layer_buf;    /* [2ED + (R+2N)E + ER + DE] when not cached */
    float *head_buf;     /* [head_vt, D] when not cached */
    /* activations, [T, ...] */
    float *resid, *normed, *proj, *xc, *dbc, *dt, *y, *out, *logits;
    char device[128];
} cpu_impl;

typedef struct {
    float *conv; /* [L, E, K-1] */
    float *ssm;  /* [L, E, N] */
} cpu_state;

static float *own_alloc(cpu_impl *p, size_t n)
{
    float *b = malloc((n ? n : 1) * sizeof(float));
    if (!b)
        return NULL;
    p->owned = fmb_xrealloc(p->owned, p->n_owned + 1, sizeof *p->owned);
    p->owned[p->n_owned++] = b;
    p->owned_bytes += (n ? n : 1) * sizeof(float);
    return b;
}

/* A float32 view of t: in place when F32 and aligned, else a converted owned copy. */
static const float *resident(cpu_impl *p, const fmb_tensor *t)
{
    if (!t)
        return NULL;
    if (t->dtype == FMB_DT_F32 && ((uintptr_t)t->data % sizeof(float)) == 0)
        return t->data;
    float *b = own_alloc(p, t->numel);
    if (!b)
        return NULL;
    fmb_tensor_to_f32(t, b);
    return b;
}

static void cpu_free(void *impl)
{
    cpu_impl *p = impl;
    if (!p)
        return;
    for (size_t i = 0; i < p->n_owned; i++)
        free(p->owned[i]);
    free(p->owned);
    free(p->layers);
    free(p);
}

static size_t layer_big_floats(const fmb_config *c)
{
    return (size_t)(2 * c->E * c->D + (c->R + 2 * c->N) * c->E + c->E * c->R + c->D * c->E);
}

static fmb_status cpu_open(const fmb_model *m, const fmb_engine_opts *o, void **out, fmb_err *err)
{
    cpu_impl *p = fmb_xcalloc(1, sizeof *p);
    p->m = m;
    p->c = m->cfg;
    const fmb_config *c = &p->c;
    // OpenMP threads split the GEMMs (kcpu.h); OpenBLAS itself stays single-threaded so the
    // two pools never compete for cores. Process-wide settings: the engine is the only user.
    openblas_set_num_threads(1);
    if (o->threads > 0)
        omp_set_num_threads(o->threads);
    p->chunk = o->chunk_tokens ? o->chunk_tokens : 512;
    size_t V = (size_t)c->V, D = (size_t)c->D, E = (size_t)c->E;
    // Logits tile: at most ~64 MiB of rows, never more rows than a chunk.
    p->head_rows = (64u << 20) / (V * sizeof(float));
    if (p->head_rows < 1)
        p->head_rows = 1;
    if (p->head_rows > p->chunk)
        p->head_rows = p->chunk;

    // Cache everything in float32 when it fits: the budget is --mem-limit, else 40% of RAM.
    size_t total = (size_t)fmb_config_param_count(c) * sizeof(float);
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    size_t budget = o->mem_limit ? o->mem_limit
                                 : (pages > 0 && psz > 0 ? (size_t)pages * (size_t)psz / 10 * 4
                                                         : (size_t)4 << 30);
    p->cached = total <= budget;
    snprintf(p->device, sizeof p->device, "cpu (%d threads)", omp_get_max_threads());

    p->layers = fmb_xcalloc((size_t)c->L, sizeof *p->layers);
    for (int64_t l = 0; l < c->L; l++) {
        const fmb_layer_weights *w = &m->layers[l];
        cpu_layer *cl = &p->layers[l];
        cl->norm = resident(p, w->norm);
        cl->in_proj_bias = resident(p, w->in_proj_bias);
        cl->conv_w = resident(p, w->conv_w); // [E, 1, K] == [E, K]
        cl->conv_b = resident(p, w->conv_b);
        cl->dt_bias = resident(p, w->dt_bias);
        cl->D = resident(p, w->D);
        cl->out_proj_bias = resident(p, w->out_proj_bias);
        // A = -torch.exp(self.A_log.float())
        float *A = own_alloc(p, E * (size_t)c->N);
        if (!A)
            goto oom;
        fmb_tensor_to_f32(w->A_log, A);
        for (size_t i = 0; i < E * (size_t)c->N; i++)
            A[i] = -expf(A[i]);
        cl->A = A;
        if (p->cached) {
            cl->in_proj = resident(p, w->in_proj);
            cl->x_proj = resident(p, w->x_proj);
            cl->dt_proj = resident(p, w->dt_proj);
            cl->out_proj = resident(p, w->out_proj);
            if (!cl->in_proj || !cl->x_proj || !cl->dt_proj || !cl->out_proj)
                goto oom;
        }
        if (!cl->norm || !cl->conv_w || !cl->dt_bias || !cl->D)
            goto oom;
    }
    p->norm_f = resident(p, m->norm_f);
    if (!p->norm_f)
        goto oom;
    if (p->cached) {
        p->lm_head = resident(p, m->lm_head);
        if (!p->lm_head)
            goto oom;
        p->weight_bytes = p->owned_bytes;
    } else {
        p->weight_bytes = p->owned_bytes;
        p->layer_buf = own_alloc(p, layer_big_floats(c));
        p->head_vt = ((size_t)128 << 20) / (D * sizeof(float));
        if (p->head_vt > V)
            p->head_vt = V;
        p->head_buf = own_alloc(p, p->head_vt * D);
        if (!p->layer_buf || !p->head_buf)
            goto oom;
    }
    size_t T = p->chunk, R = (size_t)c->R, N = (size_t)c->N;
    if (!(p->resid = own_alloc(p, T * D)) || !(p->normed = own_alloc(p, T * D)) ||
        !(p->proj = own_alloc(p, T * 2 * E)) || !(p->xc = own_alloc(p, T * E)) ||
        !(p->dbc = own_alloc(p, T * (R + 2 * N))) || !(p->dt = own_alloc(p, T * E)) ||
        !(p->y = own_alloc(p, T * E)) || !(p->out = own_alloc(p, T * D)) ||
        !(p->logits = own_alloc(p, p->head_rows * V)))
        goto oom;
    *out = p;
    return FMB_OK;
oom:
    cpu_free(p);
    return fmb_fail(err, FMB_ENOMEM, "cpu backend: out of memory for weights or scratch");
}

static void cpu_memory(void *impl, fmb_engine_mem *m)
{
    cpu_impl *p = impl;
    m->weights_bytes = p->weight_bytes;
    m->scratch_bytes = p->owned_bytes - p->weight_bytes;
}

static const char *cpu_device_name(void *impl)
{
    return ((cpu_impl *)impl)->device;
}

static size_t cpu_chunk_tokens(void *impl)
{
    return ((cpu_impl *)impl)->chunk;
}

// --- states ------------------------------------------------------------------------------

static size_t conv_floats(const fmb_config *c)
{
    return (size_t)(c->L * c->E * (c->K - 1));
}

static size_t ssm_floats(const fmb_config *c)
{
    return (size_t)(c->L * c->E * c->N);
}

static fmb_status cpu_state_new(void *impl, void **out, fmb_err *err)
{
    cpu_impl *p = impl;
    cpu_state *s = calloc(1, sizeof *s);
    if (s) {
        s->conv = calloc(conv_floats(&p->c) + 1, sizeof(float));
        s->ssm = calloc(ssm_floats(&p->c), sizeof(float));
    }
    if (!s || !s->conv || !s->ssm) {
        if (s) {
            free(s->conv);
            free(s->ssm);
        }
        free(s);
        return fmb_fail(err, FMB_ENOMEM, "cpu backend: out of memory for a state");
    }
    *out = s;
    return FMB_OK;
}

static void cpu_state_free(void *impl, void *st)
{
    (void)impl;
    cpu_state *s = st;
    if (!s)
        return;
    free(s->conv);
    free(s->ssm);
    free(s);
}

static void cpu_state_reset(void *impl, void *st)
{
    cpu_impl *p = impl;
    cpu_state *s = st;
    memset(s->conv, 0, conv_floats(&p->c) * sizeof(float));
    memset(s->ssm, 0, ssm_floats(&p->c) * sizeof(float));
}

static void cpu_state_copy(void *impl, void *dst, const void *src)
{
    cpu_impl *p = impl;
    cpu_state *d = dst;
    const cpu_state *s = src;
    memcpy(d->conv, s->conv, conv_floats(&p->c) * sizeof(float));
    memcpy(d->ssm, s->ssm, ssm_floats(&p->c) * sizeof(float));
}

static void cpu_state_read(void *impl, const void *st, float *conv, float *ssm)
{
    cpu_impl *p = impl;
    const cpu_state *s = st;
    if (conv)
        memcpy(conv, s->conv, conv_floats(&p->c) * sizeof(float));
    if (ssm)
        memcpy(ssm, s->ssm, ssm_floats(&p->c) * sizeof(float));
}

static void cpu_state_write(void *impl, void *st, const float *conv, const float *ssm)
{
    cpu_impl *p = impl;
    cpu_state *s = st;
    if (conv)
        memcpy(s->conv, conv, conv_floats(&p->c) * sizeof(float));
    if (ssm)
        memcpy(s->ssm, ssm, ssm_floats(&p->c) * sizeof(float));
}

// --- forward -----------------------------------------------------------------------------

static void add_bias_rows(float *x, size_t ld, size_t T, size_t n, const float *b)
{
    if (!b)
        return;
#pragma omp parallel for schedule(static)
    for (size_t t = 0; t < T; t++)
        for (size_t i = 0; i < n; i++)
            x[t * ld + i] += b[i];
}

/* The big matrices of layer l: resident, or converted into layer_buf now. */
static void layer_mats(cpu_impl *p,
                       int64_t l,
                       const float **in_proj,
                       const float **x_proj,
                       const float **dt_proj,
                       const float **out_proj)
{
    const cpu_layer *cl = &p->layers[l];
    if (p->cached) {
        *in_proj = cl->in_proj;
        *x_proj = cl->x_proj;
        *dt_proj = cl->dt_proj;
        *out_proj = cl->out_proj;
        return;
    }
    const fmb_layer_weights *w = &p->m->layers[l];
    float *b = p->layer_buf;
    fmb_tensor_to_f32(w->in_proj, b);
    *in_proj = b;
    b += w->in_proj->numel;
    fmb_tensor_to_f32(w->x_proj, b);
    *x_proj = b;
    b += w->x_proj->numel;
    fmb_tensor_to_f32(w->dt_proj, b);
    *dt_proj = b;
    b += w->dt_proj->numel;
    fmb_tensor_to_f32(w->out_proj, b);
    *out_proj = b;
}

/* One layer over T tokens: reads normed [T, D], writes out [T, D] (the mixer output). */
static void run_layer(cpu_impl *p, cpu_state *s, int64_t l, size_t T)
{
    const fmb_config *c = &p->c;
    const cpu_layer *cl = &p->layers[l];
    size_t D = (size_t)c->D, E = (size_t)c->E, N = (size_t)c->N, K = (size_t)c->K, R = (size_t)c->R,
           S = R + 2 * N;
    const float *in_proj, *x_proj, *dt_proj, *out_proj;
    layer_mats(p, l, &in_proj, &x_proj, &dt_proj, &out_proj);
    int32_t starts[2] = {0, (int32_t)T}, slot = 0;
    uint8_t has = 1; // states are zeroed at creation: "continue" from zeros is a fresh start
    fmb_varlen vl = {1, starts, &slot, &has};

    // projected_states = self.in_proj(hidden_states): [T, 2E]; x = cols 0..E-1, z = E..2E-1
    fmb_kcpu_gemm_nt(T, 2 * E, D, p->normed, D, in_proj, D, p->proj, 2 * E, 0);
    add_bias_rows(p->proj, 2 * E, T, 2 * E, cl->in_proj_bias);
    // hidden_states = self.act(self.conv1d(hidden_states)[..., :seq_len]) from the conv state
    fmb_kcpu_conv1d(p->proj, 2 * E, p->xc, E, cl->conv_w, cl->conv_b, E, K,
                    s->conv + (size_t)l * E * (K - 1), E * (K - 1), &vl);
    // ssm_parameters = self.x_proj(hidden_states): [T, R + 2N] = (dt | B | C)
    fmb_kcpu_gemm_nt(T, S, E, p->xc, E, x_proj, E, p->dbc, S, 0);
    if (c->mixer_norm) {
        // B = rms_forward(B), C = rms_forward(C), time_step = rms_forward(time_step)
        fmb_kcpu_rms_rows(p->dbc, S, T, R, c->mixer_eps);
        fmb_kcpu_rms_rows(p->dbc + R, S, T, N, c->mixer_eps);
        fmb_kcpu_rms_rows(p->dbc + R + N, S, T, N, c->mixer_eps);
    }
    // discrete_time_step = self.dt_proj(time_step) (bias added inside the scan, before softplus)
    fmb_kcpu_gemm_nt(T, E, R, p->dbc, S, dt_proj, R, p->dt, E, 0);
    fmb_kcpu_scan(p->xc, E, p->dt, E, cl->dt_bias, cl->A, p->dbc + R, p->dbc + R + N, S, cl->D,
                  p->proj + E, 2 * E, p->y, E, E, N, s->ssm + (size_t)l * E * N, E * N, &vl);
    // contextualized_states = self.out_proj(scan_output)
    fmb_kcpu_gemm_nt(T, D, E, p->y, E, out_proj, E, p->out, D, 0);
    add_bias_rows(p->out, D, T, D, cl->out_proj_bias);
}

/* lm_head over rows [0, T) of normed, reduced per the outputs; t0 is the chunk's offset. */
static void run_head(cpu_impl *p, size_t T, size_t t0, const fmb_outputs *o)
{
    size_t V = (size_t)p->c.V, D = (size_t)p->c.D;
    for (size_t r0 = 0; r0 < T; r0 += p->head_rows) {
        size_t rows = T - r0 < p->head_rows ? T - r0 : p->head_rows;
        const float *h = p->normed + r0 * D;
        // logits = self.lm_head(hidden_states): [rows, V]
        if (p->lm_head) {
            fmb_kcpu_gemm_nt(rows, V, D, h, D, p->lm_head, D, p->logits, V, 0);
        } else {
            for (size_t v0 = 0; v0 < V; v0 += p->head_vt) {
                size_t vt = V - v0 < p->head_vt ? V - v0 : p->head_vt;
                fmb_tensor_slice_to_f32(p->m->lm_head, v0 * D, vt * D, p->head_buf);
                fmb_kcpu_gemm_nt(rows, vt, D, h, D, p->head_buf, D, p->logits + v0, V, 0);
            }
        }
        size_t g = t0 + r0; // global position of row 0 of this tile
        int k = o->topk_ids ? o->top_k : 0;
        fmb_kcpu_head_reduce(p->logits, V, rows, V, o->targets ? o->targets + g : NULL,
                             o->logprob ? o->logprob + g : NULL, o->rank ? o->rank + g : NULL,
                             o->argmax ? o->argmax + g : NULL, k,
                             k ? o->topk_ids + g * (size_t)k : NULL,
                             k && o->topk_logprobs ? o->topk_logprobs + g * (size_t)k : NULL);
        if (o->logits) {
            for (size_t r = 0; r < rows; r++)
                if (g + r >= o->logits_from)
                    memcpy(o->logits + (g + r - o->logits_from) * V, p->logits + r * V,
                           V * sizeof(float));
        }
    }
}

static int wants_head(const fmb_outputs *o, size_t t0, size_t T)
{
    if (!o)
        return 0;
    if (o->logprob || o->rank || o->argmax || (o->top_k > 0 && o->topk_ids))
        return 1;
    return o->logits && o->logits_from < t0 + T;
}

static fmb_status
cpu_forward(void *impl, void *st, const int32_t *ids, size_t n, const fmb_outputs *o, fmb_err *err)
{
    (void)err;
    cpu_impl *p = impl;
    cpu_state *s = st;
    const fmb_config *c = &p->c;
    size_t D = (size_t)c->D;
    for (size_t t0 = 0; t0 < n; t0 += p->chunk) {
        size_t T = n - t0 < p->chunk ? n - t0 : p->chunk;
        // hidden_states = self.embeddings(input_ids)
        for (size_t t = 0; t < T; t++)
            fmb_tensor_slice_to_f32(p->m->embed, (size_t)ids[t0 + t] * D, D, p->resid + t * D);
        for (int64_t l = 0; l < c->L; l++) {
            // hidden_states = self.norm(hidden_states); residual + mixer output of layer l-1
            fmb_kcpu_add_rmsnorm(p->resid, l ? p->out : NULL, p->layers[l].norm, c->norm_eps,
                                 p->normed, T, D);
            run_layer(p, s, l, T);
        }
        // hidden_states = self.norm_f(residual + last mixer output)
        fmb_kcpu_add_rmsnorm(p->resid, p->out, p->norm_f, c->norm_eps, p->normed, T, D);
        if (wants_head(o, t0, T))
            run_head(p, T, t0, o);
    }
    return FMB_OK;
}

static fmb_status
cpu_step(void *impl, void *const *sts, const int32_t *ids, size_t nseq, float *logits, fmb_err *err)
{
    cpu_impl *p = impl;
    for (size_t i = 0; i < nseq; i++) {
        fmb_outputs o = {0};
        o.logits = logits + i * (size_t)p->c.V;
        fmb_status s = cpu_forward(impl, sts[i], ids + i, 1, &o, err);
        if (s)
            return s;
    }
    return FMB_OK;
}

const fmb_backend_ops fmb_backend_cpu = {
    .name = "cpu",
    .open = cpu_open,
    .free = cpu_free,
    .device_name = cpu_device_name,
    .chunk_tokens = cpu_chunk_tokens,
    .state_new = cpu_state_new,
    .state_free = cpu_state_free,
    .state_reset = cpu_state_reset,
    .state_copy = cpu_state_copy,
    .state_read = cpu_state_read,
    .state_write = cpu_state_write,
    .forward = cpu_forward,
    .step = cpu_step,
    .memory = cpu_memory,
};
