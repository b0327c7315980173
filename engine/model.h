/*
 * model: a FalconMamba checkpoint folder, opened and checked against its config.
 *
 * Resolves every tensor the forward pass needs to a view in the mapped safetensors, checks
 * its shape against the config (d_inner against in_proj's rows too), and reports missing or
 * unexpected tensors naming the file and the tensor. Accepts HF Mamba's `backbone.embedding.`
 * as well as `backbone.embeddings.`; lm_head falls back to the embeddings when tied or absent.
 * Nothing is copied: the views point into the mmaps.
 */
#ifndef FMB_MODEL_H
#define FMB_MODEL_H

#include "engine/config.h"
#include "engine/safetensors.h"

typedef struct {
    const fmb_tensor *norm;          /* [D] */
    const fmb_tensor *in_proj;       /* [2E, D] rows 0..E-1 → x, E..2E-1 → z */
    const fmb_tensor *in_proj_bias;  /* [2E] or NULL */
    const fmb_tensor *conv_w;        /* [E, 1, K] */
    const fmb_tensor *conv_b;        /* [E] or NULL */
    const fmb_tensor *x_proj;        /* [R + 2N, E] */
    const fmb_tensor *dt_proj;       /* [E, R] */
    const fmb_tensor *dt_bias;       /* [E] */
    const fmb_tensor *A_log;         /* [E, N] */
    const fmb_tensor *D;             /* [E] */
    const fmb_tensor *out_proj;      /* [D, E] */
    const fmb_tensor *out_proj_bias; /* [D] or NULL */
} fmb_layer_weights;

typedef struct {
    fmb_config cfg;
    fmb_st *st;                /* owns the mappings */
    const fmb_tensor *embed;   /* [V, D] */
    const fmb_tensor *norm_f;  /* [D] */
    const fmb_tensor *lm_head; /* [V, D] (the embeddings when tied) */
    fmb_layer_weights *layers; /* [L] */
    char dir[4096];
} fmb_model;

/* Opens dir (config.json + safetensors). Caller frees with fmb_model_free. */
FMB_NODISCARD fmb_status fmb_model_open(const char *dir, fmb_model **out, fmb_err *err);
void fmb_model_free(fmb_model *m);

/* Copies a tensor (any dtype) to float32: dst holds t->numel floats. */
void fmb_tensor_to_f32(const fmb_tensor *t, float *dst);
/* Copies elements [off, off + n) of a tensor to float32. */
void fmb_tensor_slice_to_f32(const fmb_tensor *t, size_t off, size_t n, float *dst);

#endif
