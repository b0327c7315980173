/*
 * model: resolves a checkpoint's tensors against its config. See model.h.
 */
#include "engine/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/kcpu.h"

void fmb_model_free(fmb_model *m)
{
    if (!m)
        return;
    fmb_st_close(m->st);
    free(m->layers);
    free(m);
}

/* Finds name (or alt) and checks its shape; sets *used[index] so unexpected tensors can be
 * reported. want[] lists ndim sizes. */
static fmb_status need(const fmb_model *m,
                       char *used,
                       const char *name,
                       const char *alt,
                       int optional,
                       int ndim,
                       const int64_t *want,
                       const fmb_tensor **out,
                       fmb_err *err)
{
    const fmb_tensor *t = fmb_st_find(m->st, name);
    if (!t && alt)
        t = fmb_st_find(m->st, alt);
    *out = t;
    if (!t) {
        if (optional)
            return FMB_OK;
        return fmb_fail(err, FMB_EINVAL, "%s: missing tensor \"%s\"", fmb_st_source(m->st), name);
    }
    used[t - fmb_st_at(m->st, 0)] = 1;
    if (t->dtype != FMB_DT_F32 && t->dtype != FMB_DT_BF16 && t->dtype != FMB_DT_F16)
        return fmb_fail(err, FMB_EUNSUP,
                        "%s: tensor \"%s\" has dtype %s; weights must be F32, BF16 or F16", t->file,
                        t->name, fmb_dtype_name(t->dtype));
    int ok = t->ndim == ndim;
    for (int d = 0; ok && d < ndim; d++)
        ok = t->shape[d] == want[d];
    if (!ok) {
        char got[128] = "", exp[128] = "";
        for (int d = 0; d < t->ndim; d++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? ", " : "",
                     (long long)t->shape[d]);
        for (int d = 0; d < ndim; d++)
            snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "%s%lld", d ? ", " : "",
                     (long long)want[d]);
        return fmb_fail(err, FMB_EINVAL,
                        "%s: tensor \"%s\" has shape [%s], config.json implies [%s]", t->file,
                        t->name, got, exp);
    }
    return FMB_OK;
}

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})

fmb_status fmb_model_open(const char *dir, fmb_model **out, fmb_err *err)
{
    fmb_model *m = fmb_xcalloc(1, sizeof *m);
    snprintf(m->dir, sizeof m->dir, "%s", dir);
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *used = NULL;
    fmb_status s = fmb_config_load(path, &m->cfg, err);
    if (s)
        goto fail;
    if ((s = fmb_st_open_dir(dir, &m->st, err)))
        goto fail;
    const fmb_config *c = &m->cfg;
    size_t nt = fmb_st_count(m->st);
    used = fmb_xcalloc(nt ? nt : 1, 1);

    // d_inner: config.json's intermediate_size must agree with in_proj's rows.
    const fmb_tensor *ip = fmb_st_find(m->st, "backbone.layers.0.mixer.in_proj.weight");
    if (ip && ip->ndim == 2 && ip->shape[0] != 2 * c->E) {
        s = fmb_fail(err, FMB_EINVAL,
                     "%s: tensor \"%s\" has %lld rows but config.json's intermediate_size = %lld "
                     "needs 2 × %lld",
                     ip->file, ip->name, (long long)ip->shape[0], (long long)c->E, (long long)c->E);
        goto fail;
    }

    if ((s = need(m, used, "backbone.embeddings.weight", "backbone.embedding.weight", 0, 2,
                  SHAPE(c->V, c->D), &m->embed, err)) ||
        (s = need(m, used, "backbone.norm_f.weight", NULL, 0, 1, SHAPE(c->D), &m->norm_f, err)) ||
        (s = need(m, used, "lm_head.weight", NULL, 1, 2, SHAPE(c->V, c->D), &m->lm_head, err)))
        goto fail;
    if (!m->lm_head) {
        if (!c->tie_embeddings) {
            s = fmb_fail(err, FMB_EINVAL,
                         "%s: missing tensor \"lm_head.weight\" (config.json says "
                         "tie_word_embeddings: false)",
                         fmb_st_source(m->st));
            goto fail;
        }
        m->lm_head = m->embed;
    }

    m->layers = fmb_xcalloc((size_t)c->L, sizeof *m->layers);
    for (int64_t l = 0; l < c->L; l++) {
        fmb_layer_weights *w = &m->layers[l];
        char n[160];
#define P(field, suffix, optional, nd, ...)                                                        \
    snprintf(n, sizeof n, "backbone.layers.%lld.%s", (long long)l, suffix);                        \
    if ((s = need(m, used, n, NULL, optional, nd, SHAPE(__VA_ARGS__), &w->field, err)))            \
        goto fail;
        P(norm, "norm.weight", 0, 1, c->D);
        P(in_proj, "mixer.in_proj.weight", 0, 2, 2 * c->E, c->D);
        P(in_proj_bias, "mixer.in_proj.bias", !c->use_bias, 1, 2 * c->E);
        P(conv_w, "mixer.conv1d.weight", 0, 3, c->E, 1, c->K);
        P(conv_b, "mixer.conv1d.bias", !c->use_conv_bias, 1, c->E);
        P(x_proj, "mixer.x_proj.weight", 0, 2, c->R + 2 * c->N, c->E);
        P(dt_proj, "mixer.dt_proj.weight", 0, 2, c->E, c->R);
        P(dt_bias, "mixer.dt_proj.bias", 0, 1, c->E);
        P(A_log, "mixer.A_log", 0, 2, c->E, c->N);
        P(D, "mixer.D", 0, 1, c->E);
        P(out_proj, "mixer.out_proj.weight", 0, 2, c->D, c->E);
        P(out_proj_bias, "mixer.out_proj.bias", !c->use_bias, 1, c->D);
#undef P
    }
    for (size_t i = 0; i < nt; i++) {
        if (!used[i]) {
            const fmb_tensor *t = fmb_st_at(m->st, i);
            s = fmb_fail(err, FMB_EINVAL,
                         "%s: unexpected tensor \"%s\" (not part of a FalconMamba model with "
                         "this config.json)",
                         t->file, t->name);
            goto fail;
        }
    }
    free(used);
    *out = m;
    return FMB_OK;
fail:
    free(used);
    fmb_model_free(m);
    return s;
}

void fmb_tensor_slice_to_f32(const fmb_tensor *t, size_t off, size_t n, float *dst)
{
    FMB_ASSERT(off + n <= t->numel);
    switch (t->dtype) {
    case FMB_DT_F32:
        memcpy(dst, (const float *)t->data + off, n * sizeof(float));
        break;
    case FMB_DT_BF16:
        fmb_kcpu_bf16_to_f32((const uint16_t *)t->data + off, dst, n);
        break;
    case FMB_DT_F16:
        fmb_kcpu_f16_to_f32((const uint16_t *)t->data + off, dst, n);
        break;
    default:
        FMB_ASSERTF(0, "tensor %s: dtype %s is not a weight dtype", t->name,
                    fmb_dtype_name(t->dtype));
    }
}

void fmb_tensor_to_f32(const fmb_tensor *t, float *dst)
{
    fmb_tensor_slice_to_f32(t, 0, t->numel, dst);
}
