/*
 * config: a FalconMamba config.json, read and checked.
 *
 * Dimension letters used throughout fmbatch (fixed here once):
 *   B batch (sequences), T tokens, D d_model (hidden_size), E d_inner (intermediate_size),
 *   N d_state, K d_conv, R dt_rank, V vocab, L layers.
 */
#ifndef FMB_CONFIG_H
#define FMB_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/base.h"

#define FMB_MAX_EOS 8

typedef struct {
    char model_type[32]; /* "falcon_mamba" or "mamba" */
    int64_t V, D, E, N, K, R, L;
    float norm_eps;  /* layer_norm_epsilon: block norms and norm_f */
    float mixer_eps; /* mixer_rms_eps: the weightless norms of dt, B, C (default 1e-6) */
    bool tie_embeddings;
    bool use_bias;      /* in_proj/out_proj bias */
    bool use_conv_bias; /* conv1d bias */
    bool mixer_norm;    /* weightless RMS norm of dt, B, C (FalconMamba; off for plain Mamba) */
    int32_t bos_id;     /* -1 when absent */
    int32_t pad_id;     /* -1 when absent */
    int32_t eos_ids[FMB_MAX_EOS];
    int n_eos;
} fmb_config;

/* Parses config.json text; path is used in messages only. */
FMB_NODISCARD fmb_status
fmb_config_parse(const char *text, size_t len, const char *path, fmb_config *cfg, fmb_err *err);
FMB_NODISCARD fmb_status fmb_config_load(const char *path, fmb_config *cfg, fmb_err *err);

/* Parameter count implied by the config (lm_head counted only when untied). */
int64_t fmb_config_param_count(const fmb_config *cfg);

#endif
