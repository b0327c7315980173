/*
 * config: reads a FalconMamba config.json with jansson and checks every field it uses.
 *
 * d_inner comes from intermediate_size (the 7B config says expand: 16, which is wrong; HF
 * overwrites expand·hidden with intermediate_size), falling back to expand·hidden only when
 * intermediate_size is absent. time_step_rank "auto" = ceil(hidden/16). HF's defaults apply to
 * absent keys: mixer_rms_eps 1e-6, tie_word_embeddings true, use_conv_bias true.
 */
#include "engine/config.h"

#include <jansson.h>
#include <math.h>
#include <string.h>

static fmb_status get_int(json_t *root,
                          const char *path,
                          const char *key,
                          int required,
                          int64_t def,
                          int64_t lo,
                          int64_t hi,
                          int64_t *out,
                          fmb_err *err)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (required)
            return fmb_fail(err, FMB_EINVAL, "%s: missing field \"%s\"", path, key);
        *out = def;
        return FMB_OK;
    }
    if (!json_is_integer(v))
        return fmb_fail(err, FMB_EINVAL, "%s: field \"%s\" must be an integer", path, key);
    int64_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return fmb_fail(err, FMB_EINVAL, "%s: field \"%s\" = %lld is out of range [%lld, %lld]",
                        path, key, (long long)x, (long long)lo, (long long)hi);
    *out = x;
    return FMB_OK;
}

static fmb_status
get_float(json_t *root, const char *path, const char *key, double def, float *out, fmb_err *err)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        *out = (float)def;
        return FMB_OK;
    }
    if (!json_is_number(v))
        return fmb_fail(err, FMB_EINVAL, "%s: field \"%s\" must be a number", path, key);
    double x = json_number_value(v);
    if (!(x > 0 && x < 1))
        return fmb_fail(err, FMB_EINVAL, "%s: field \"%s\" = %g must be in (0, 1)", path, key, x);
    *out = (float)x;
    return FMB_OK;
}

static fmb_status
get_bool(json_t *root, const char *path, const char *key, bool def, bool *out, fmb_err *err)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return FMB_OK;
    }
    if (!json_is_boolean(v))
        return fmb_fail(err, FMB_EINVAL, "%s: field \"%s\" must be true or false", path, key);
    *out = json_is_true(v);
    return FMB_OK;
}

static fmb_status
get_token_id(json_t *root, const char *path, const char *key, int32_t *out, fmb_err *err)
{
    json_t *v = json_object_get(root, key);
    *out = -1;
    if (!v || json_is_null(v))
        return FMB_OK;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
        return fmb_fail(err, FMB_EINVAL, "%s: field \"%s\" must be a token id", path, key);
    *out = (int32_t)json_integer_value(v);
    return FMB_OK;
}

fmb_status
fmb_config_parse(const char *text, size_t len, const char *path, fmb_config *cfg, fmb_err *err)
{
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return fmb_fail(err, FMB_EINVAL, "%s:%d:%d: malformed JSON: %s", path, je.line, je.column,
                        je.text);
    fmb_status s = FMB_OK;
    memset(cfg, 0, sizeof *cfg);
    int64_t expand = 2;
    json_t *v;
    if (!json_is_object(root)) {
        s = fmb_fail(err, FMB_EINVAL, "%s: expected a JSON object", path);
        goto out;
    }

    v = json_object_get(root, "model_type");
    if (!json_is_string(v)) {
        s = fmb_fail(err, FMB_EINVAL, "%s: missing field \"model_type\" (a string)", path);
        goto out;
    }
    const char *mt = json_string_value(v);
    if (strcmp(mt, "falcon_mamba") && strcmp(mt, "mamba")) {
        s = fmb_fail(err, FMB_EUNSUP,
                     "%s: field \"model_type\" is \"%s\"; fmbatch runs \"falcon_mamba\" (or "
                     "\"mamba\") models",
                     path, mt);
        goto out;
    }
    snprintf(cfg->model_type, sizeof cfg->model_type, "%s", mt);

    if ((s = get_int(root, path, "hidden_size", 1, 0, 1, 1 << 16, &cfg->D, err)) ||
        (s = get_int(root, path, "num_hidden_layers", 1, 0, 1, 1024, &cfg->L, err)) ||
        (s = get_int(root, path, "vocab_size", 1, 0, 1, 1 << 24, &cfg->V, err)) ||
        (s = get_int(root, path, "state_size", 0, 16, 1, 256, &cfg->N, err)) ||
        (s = get_int(root, path, "conv_kernel", 0, 4, 1, 16, &cfg->K, err)) ||
        (s = get_int(root, path, "expand", 0, 2, 1, 64, &expand, err)) ||
        (s = get_int(root, path, "intermediate_size", 0, expand * cfg->D, 1, 1 << 20, &cfg->E,
                     err)))
        goto out;

    v = json_object_get(root, "time_step_rank");
    if (!v || json_is_null(v) || (json_is_string(v) && !strcmp(json_string_value(v), "auto"))) {
        cfg->R = (cfg->D + 15) / 16;
    } else if (json_is_integer(v) && json_integer_value(v) >= 1 && json_integer_value(v) <= 65536) {
        cfg->R = json_integer_value(v);
    } else {
        s = fmb_fail(err, FMB_EINVAL,
                     "%s: field \"time_step_rank\" must be a positive integer or \"auto\"", path);
        goto out;
    }

    if ((s = get_float(root, path, "layer_norm_epsilon", 1e-5, &cfg->norm_eps, err)) ||
        (s = get_float(root, path, "mixer_rms_eps", 1e-6, &cfg->mixer_eps, err)) ||
        (s = get_bool(root, path, "tie_word_embeddings", true, &cfg->tie_embeddings, err)) ||
        (s = get_bool(root, path, "use_bias", false, &cfg->use_bias, err)) ||
        (s = get_bool(root, path, "use_conv_bias", true, &cfg->use_conv_bias, err)) ||
        (s = get_token_id(root, path, "bos_token_id", &cfg->bos_id, err)) ||
        (s = get_token_id(root, path, "pad_token_id", &cfg->pad_id, err)))
        goto out;

    // FalconMamba normalises dt, B and C; a plain Mamba config does not, unless it is an early
    // Falcon Mamba revision published with model_type "mamba" (it names mixer_rms_eps or a
    // Falcon architecture).
    cfg->mixer_norm = !strcmp(mt, "falcon_mamba") || json_object_get(root, "mixer_rms_eps");
    json_t *arch = json_object_get(root, "architectures");
    if (json_is_array(arch)) {
        size_t i;
        json_t *a;
        json_array_foreach(arch, i, a)
        {
            if (json_is_string(a) && strstr(json_string_value(a), "Falcon"))
                cfg->mixer_norm = true;
        }
    }

    v = json_object_get(root, "eos_token_id");
    if (json_is_integer(v)) {
        if (json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX) {
            s = fmb_fail(err, FMB_EINVAL, "%s: field \"eos_token_id\" must be a token id", path);
            goto out;
        }
        cfg->eos_ids[cfg->n_eos++] = (int32_t)json_integer_value(v);
    } else if (json_is_array(v)) {
        size_t i;
        json_t *a;
        json_array_foreach(v, i, a)
        {
            if (!json_is_integer(a) || json_integer_value(a) < 0 ||
                json_integer_value(a) > INT32_MAX || cfg->n_eos == FMB_MAX_EOS) {
                s = fmb_fail(err, FMB_EINVAL,
                             "%s: field \"eos_token_id\" must be a token id or a list of at "
                             "most %d ids",
                             path, FMB_MAX_EOS);
                goto out;
            }
            cfg->eos_ids[cfg->n_eos++] = (int32_t)json_integer_value(a);
        }
    } else if (v && !json_is_null(v)) {
        s = fmb_fail(err, FMB_EINVAL, "%s: field \"eos_token_id\" must be a token id or a list",
                     path);
        goto out;
    }
    for (int i = 0; i < cfg->n_eos; i++)
        if (cfg->eos_ids[i] >= cfg->V) {
            s = fmb_fail(err, FMB_EINVAL,
                         "%s: field \"eos_token_id\" = %d is not below vocab_size %lld", path,
                         cfg->eos_ids[i], (long long)cfg->V);
            goto out;
        }
out:
    json_decref(root);
    return s;
}

fmb_status fmb_config_load(const char *path, fmb_config *cfg, fmb_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return fmb_fail(err, FMB_EIO, "%s: cannot open (%s)", path, "no such file or unreadable");
    char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    int big = !feof(f);
    fclose(f);
    if (big)
        return fmb_fail(err, FMB_EINVAL, "%s: larger than 64 KiB; not a model config", path);
    return fmb_config_parse(buf, n, path, cfg, err);
}

int64_t fmb_config_param_count(const fmb_config *c)
{
    int64_t D = c->D, E = c->E, N = c->N, K = c->K, R = c->R, V = c->V;
    int64_t layer = D                                                                /* norm */
                    + 2 * E * D                                                      /* in_proj */
                    + (c->use_bias ? 2 * E : 0) + E * K + (c->use_conv_bias ? E : 0) /* conv */
                    + (R + 2 * N) * E                                                /* x_proj */
                    + E * R + E                      /* dt_proj + bias */
                    + E * N + E                      /* A_log, D */
                    + D * E + (c->use_bias ? D : 0); /* out_proj */
    return c->L * layer + V * D + D + (c->tie_embeddings ? 0 : V * D);
}
