/*
 * synth: random FalconMamba checkpoints in the Hugging Face layout (config.json, safetensors
 * in one file or shards with model.safetensors.index.json), at any shape, so that 7B-sized
 * runs, benchmarks and HF comparisons need no download.
 *
 * Values follow HF's initialisation in spirit (A_log = log(1..N), dt bias = softplus⁻¹ of a
 * log-uniform dt in [1e-3, 0.1], D = 1, linear weights uniform ±1/sqrt(fan_in)), with norms
 * perturbed so that every parameter matters. Each tensor's values depend only on (seed, name).
 */
#ifndef FMB_SYNTH_H
#define FMB_SYNTH_H

#include "engine/config.h"
#include "engine/safetensors.h"

typedef struct {
    fmb_dtype dtype; /* FMB_DT_BF16 or FMB_DT_F32 */
    int shards;      /* 1: model.safetensors; >1: model-0000k-of-0000n + index */
    uint64_t seed;
    int like_7b_config; /* write config.json as the real 7B's: expand 16, no mixer_rms_eps */
} fmb_synth_opts;

/* Fills cfg for a named shape: "7b", "100m", "tiny", or "D=..,L=..,V=..[,E=..,N=..,R=..,K=..]".
 * Returns FMB_EINVAL naming the bad part. */
FMB_NODISCARD fmb_status fmb_synth_shape(const char *spec, fmb_config *cfg, fmb_err *err);

/* Writes the checkpoint into dir (created if absent). Progress lines go to stderr when
 * verbose. */
FMB_NODISCARD fmb_status fmb_synth_write(
    const fmb_config *cfg, const char *dir, const fmb_synth_opts *o, int verbose, fmb_err *err);

#endif
