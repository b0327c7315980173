/* synth: random FalconMamba checkpoints in the HF layout. See synth.h. */
#include "engine/synth.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/hash.h"
#include "kernels/cpu/kcpu.h"

fmb_status fmb_synth_shape(const char *spec, fmb_config *c, fmb_err *err)
{
    memset(c, 0, sizeof *c);
    snprintf(c->model_type, sizeof c->model_type, "falcon_mamba");
    c->norm_eps = 1e-5f;
    c->mixer_eps = 1e-6f;
    c->use_conv_bias = true;
    c->mixer_norm = true;
    c->bos_id = 0;
    c->pad_id = 0;
    c->n_eos = 1;
    c->eos_ids[0] = 11;
    c->K = 4;
    c->N = 16;
    if (!strcmp(spec, "7b")) {
        c->D = 4096, c->L = 64, c->V = 65024, c->E = 8192;
    } else if (!strcmp(spec, "100m")) {
        c->D = 640, c->L = 24, c->V = 65024, c->E = 1280, c->tie_embeddings = true;
    } else if (!strcmp(spec, "tiny")) {
        c->D = 64, c->L = 2, c->V = 512, c->E = 128, c->eos_ids[0] = 0;
    } else {
        char buf[256];
        snprintf(buf, sizeof buf, "%s", spec);
        for (char *save = NULL, *kv = strtok_r(buf, ",", &save); kv;
             kv = strtok_r(NULL, ",", &save)) {
            char *eq = strchr(kv, '=');
            char *end = NULL;
            long long v = eq ? strtoll(eq + 1, &end, 10) : 0;
            if (!eq || eq == kv + strlen(kv) - 1 || *end || v <= 0 || v > (1 << 24) ||
                eq - kv != 1 || !strchr("DLVENRK", kv[0]))
                return fmb_fail(err, FMB_EINVAL,
                                "--shape: '%s' is not KEY=N with KEY one of D, L, V, E, N, R, K "
                                "(or use 7b, 100m, tiny)",
                                kv);
            int64_t *f = kv[0] == 'D'   ? &c->D
                         : kv[0] == 'L' ? &c->L
                         : kv[0] == 'V' ? &c->V
                         : kv[0] == 'E' ? &c->E
                         : kv[0] == 'N' ? &c->N
                         : kv[0] == 'R' ? &c->R
                                        : &c->K;
            *f = v;
        }
        if (!c->D || !c->L || !c->V)
            return fmb_fail(err, FMB_EINVAL, "--shape: D, L and V are required");
        if (!c->E)
            c->E = 2 * c->D;
        if (c->K > 16 || c->N > 256)
            return fmb_fail(err, FMB_EINVAL, "--shape: K must be <= 16 and N <= 256");
        if (c->eos_ids[0] >= c->V)
            c->eos_ids[0] = 0;
    }
    if (!c->R)
        c->R = (c->D + 15) / 16;
    return FMB_OK;
}

// --- tensor table ------------------------------------------------------------------------

enum { INIT_NORMAL, INIT_UNIFORM, INIT_NORM, INIT_ALOG, INIT_DTBIAS, INIT_ONE };

typedef struct {
    char name[96];
    int ndim;
    int64_t shape[3];
    size_t numel;
    int init;
    float scale;
    int shard;
    size_t offset; /* within its shard's data area */
} synth_tensor;

static void add(synth_tensor **v,
                size_t *n,
                const char *name,
                int ndim,
                int64_t a,
                int64_t b,
                int64_t c,
                int init,
                float scale)
{
    *v = fmb_xrealloc(*v, *n + 1, sizeof **v);
    synth_tensor *t = &(*v)[(*n)++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->shape[0] = a, t->shape[1] = b, t->shape[2] = c;
    t->numel = (size_t)a * (size_t)(ndim > 1 ? b : 1) * (size_t)(ndim > 2 ? c : 1);
    t->init = init;
    t->scale = scale;
}

static size_t build_table(const fmb_config *c, synth_tensor **v)
{
    size_t n = 0;
    char nm[96];
    add(v, &n, "backbone.embeddings.weight", 2, c->V, c->D, 0, INIT_NORMAL, 0.02f);
    for (int64_t l = 0; l < c->L; l++) {
#define L_(suffix) (snprintf(nm, sizeof nm, "backbone.layers.%lld.%s", (long long)l, suffix), nm)
        add(v, &n, L_("norm.weight"), 1, c->D, 0, 0, INIT_NORM, 0.1f);
        add(v, &n, L_("mixer.in_proj.weight"), 2, 2 * c->E, c->D, 0, INIT_UNIFORM,
            1.0f / sqrtf((float)c->D));
        add(v, &n, L_("mixer.conv1d.weight"), 3, c->E, 1, c->K, INIT_UNIFORM,
            1.0f / sqrtf((float)c->K));
        add(v, &n, L_("mixer.conv1d.bias"), 1, c->E, 0, 0, INIT_UNIFORM, 1.0f / sqrtf((float)c->K));
        add(v, &n, L_("mixer.x_proj.weight"), 2, c->R + 2 * c->N, c->E, 0, INIT_UNIFORM,
            1.0f / sqrtf((float)c->E));
        add(v, &n, L_("mixer.dt_proj.weight"), 2, c->E, c->R, 0, INIT_UNIFORM,
            1.0f / sqrtf((float)c->R));
        add(v, &n, L_("mixer.dt_proj.bias"), 1, c->E, 0, 0, INIT_DTBIAS, 0);
        add(v, &n, L_("mixer.A_log"), 2, c->E, c->N, 0, INIT_ALOG, 0.1f);
        add(v, &n, L_("mixer.D"), 1, c->E, 0, 0, INIT_ONE, 0.1f);
        add(v, &n, L_("mixer.out_proj.weight"), 2, c->D, c->E, 0, INIT_UNIFORM,
            1.0f / sqrtf((float)c->E) / sqrtf((float)c->L));
#undef L_
    }
    add(v, &n, "backbone.norm_f.weight", 1, c->D, 0, 0, INIT_NORM, 0.1f);
    if (!c->tie_embeddings)
        add(v, &n, "lm_head.weight", 2, c->V, c->D, 0, INIT_NORMAL, 0.02f);
    return n;
}

static uint64_t xs(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static float unif(uint64_t *s) /* [-1, 1) */
{
    return (float)(xs(s) >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

/* Elements [i0, i0 + n) of tensor t, as float. */
static void gen(const synth_tensor *t, uint64_t seed, size_t i0, size_t n, float *out)
{
    uint64_t s = fmb_hash64(seed * 0x9E3779B97F4A7C15ull + 1, t->name, strlen(t->name)) ^
                 (i0 * 0xD1B54A32D192ED03ull);
    if (!s)
        s = 1;
    for (size_t i = 0; i < n; i++) {
        size_t idx = i0 + i;
        switch (t->init) {
        case INIT_NORMAL: { // sum of 4 uniforms: close to normal, cheap
            float u = unif(&s) + unif(&s) + unif(&s) + unif(&s);
            out[i] = u * 0.866f * t->scale;
            break;
        }
        case INIT_UNIFORM:
            out[i] = unif(&s) * t->scale;
            break;
        case INIT_NORM:
            out[i] = 1.0f + t->scale * unif(&s);
            break;
        case INIT_ALOG: // A_log = log(1..N) (+ noise), as S4D-real
            out[i] = logf((float)(idx % (size_t)t->shape[1] + 1)) + t->scale * unif(&s);
            break;
        case INIT_DTBIAS: { // inverse softplus of dt ~ log-uniform [1e-3, 1e-1]
            float u = 0.5f * (unif(&s) + 1.0f);
            float dt = expf(logf(1e-3f) + u * (logf(1e-1f) - logf(1e-3f)));
            out[i] = dt + logf(-expm1f(-dt));
            break;
        }
        case INIT_ONE:
            out[i] = 1.0f + t->scale * unif(&s);
            break;
        }
    }
}

static fmb_status
write_config(const fmb_config *c, const char *dir, const fmb_synth_opts *o, fmb_err *err)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return fmb_fail(err, FMB_EIO, "%s: %s", path, strerror(errno));
    fprintf(f,
            "{\n  \"architectures\": [\"FalconMambaForCausalLM\"],\n  \"model_type\": "
            "\"falcon_mamba\",\n  \"torch_dtype\": \"%s\",\n  \"hidden_size\": %lld,\n  "
            "\"num_hidden_layers\": %lld,\n  \"vocab_size\": %lld,\n  \"state_size\": %lld,\n  "
            "\"expand\": %lld,\n  \"intermediate_size\": %lld,\n  \"conv_kernel\": %lld,\n  "
            "\"time_step_rank\": %lld,\n  \"use_bias\": false,\n  \"use_conv_bias\": true,\n  "
            "\"hidden_act\": \"silu\",\n  \"layer_norm_epsilon\": 1e-05,\n  "
            "\"residual_in_fp32\": true,\n  \"tie_word_embeddings\": %s,\n  "
            "\"rescale_prenorm_residual\": false,\n  \"bos_token_id\": 0,\n  \"eos_token_id\": "
            "%d,\n  \"pad_token_id\": 0,\n  \"use_cache\": true,\n  \"time_step_floor\": 0.0001,\n "
            " \"time_step_init_scheme\": \"random\",\n  \"time_step_max\": 0.1,\n  "
            "\"time_step_min\": 0.001,\n  \"time_step_scale\": 1.0,\n  \"initializer_range\": "
            "0.1,\n",
            o->dtype == FMB_DT_BF16 ? "bfloat16" : "float32", (long long)c->D, (long long)c->L,
            (long long)c->V, (long long)c->N,
            // the real 7B config says expand 16 (wrong; intermediate_size is what counts)
            o->like_7b_config ? 16LL : (long long)(c->E / c->D), (long long)c->E, (long long)c->K,
            (long long)c->R, c->tie_embeddings ? "true" : "false", c->eos_ids[0]);
    if (!o->like_7b_config)
        fprintf(f, "  \"mixer_rms_eps\": %g,\n", c->mixer_eps);
    fprintf(f, "  \"transformers_version\": \"4.43.0.dev0\"\n}\n");
    if (fclose(f) != 0)
        return fmb_fail(err, FMB_EIO, "%s: write failed", path);
    return FMB_OK;
}

fmb_status fmb_synth_write(
    const fmb_config *c, const char *dir, const fmb_synth_opts *o, int verbose, fmb_err *err)
{
    if (o->dtype != FMB_DT_BF16 && o->dtype != FMB_DT_F32)
        return fmb_fail(err, FMB_EINVAL, "synth: dtype must be bf16 or f32");
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return fmb_fail(err, FMB_EIO, "%s: cannot create: %s", dir, strerror(errno));
    fmb_status s = write_config(c, dir, o, err);
    if (s)
        return s;
    synth_tensor *tv = NULL;
    size_t nt = build_table(c, &tv), esz = fmb_dtype_size(o->dtype), total = 0;
    for (size_t i = 0; i < nt; i++)
        total += tv[i].numel * esz;
    int shards = o->shards < 1 ? 1 : o->shards;
    // Assign tensors to shards in order, each shard taking about total/shards bytes.
    size_t acc = 0;
    for (size_t i = 0; i < nt; i++) {
        int sh = (int)((acc * (size_t)shards) / (total ? total : 1));
        tv[i].shard = sh < shards ? sh : shards - 1;
        acc += tv[i].numel * esz;
    }
    size_t bufn = (size_t)4 << 20;
    float *fb = fmb_xmalloc(bufn * sizeof *fb);
    uint16_t *hb = fmb_xmalloc(bufn * sizeof *hb);
    FILE *idx = NULL;
    char path[4300];
    if (shards > 1) {
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        idx = fopen(path, "w");
        if (!idx) {
            s = fmb_fail(err, FMB_EIO, "%s: %s", path, strerror(errno));
            goto out;
        }
        fprintf(idx, "{\n  \"metadata\": {\"total_size\": %zu},\n  \"weight_map\": {\n", total);
    }
    int first_idx = 1;
    for (int sh = 0; sh < shards; sh++) {
        char fname[64];
        if (shards == 1)
            snprintf(fname, sizeof fname, "model.safetensors");
        else
            snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", sh + 1, shards);
        // header JSON
        size_t off = 0;
        fmb_sb hdr = {0};
        fmb_sb_puts(&hdr, "{\"__metadata__\":{\"format\":\"pt\"}");
        for (size_t i = 0; i < nt; i++) {
            if (tv[i].shard != sh)
                continue;
            tv[i].offset = off;
            size_t nb = tv[i].numel * esz;
            fmb_sb_printf(&hdr, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", tv[i].name,
                          o->dtype == FMB_DT_BF16 ? "BF16" : "F32");
            for (int d = 0; d < tv[i].ndim; d++)
                fmb_sb_printf(&hdr, d ? ",%lld" : "%lld", (long long)tv[i].shape[d]);
            fmb_sb_printf(&hdr, "],\"data_offsets\":[%zu,%zu]}", off, off + nb);
            off += nb;
            if (idx) {
                fprintf(idx, "%s    \"%s\": \"%s\"", first_idx ? "" : ",\n", tv[i].name, fname);
                first_idx = 0;
            }
        }
        fmb_sb_putc(&hdr, '}');
        while (hdr.len % 8) // data area aligned to 8 bytes, as HF writes it
            fmb_sb_putc(&hdr, ' ');
        size_t hl = hdr.len;
        snprintf(path, sizeof path, "%s/%s", dir, fname);
        FILE *f = fopen(path, "wb");
        if (!f) {
            fmb_sb_free(&hdr);
            s = fmb_fail(err, FMB_EIO, "%s: %s", path, strerror(errno));
            goto out;
        }
        unsigned char len8[8];
        for (int b = 0; b < 8; b++)
            len8[b] = (unsigned char)((uint64_t)hl >> (8 * b));
        int bad = fwrite(len8, 1, 8, f) != 8 || fwrite(hdr.buf, 1, hl, f) != hl;
        fmb_sb_free(&hdr);
        for (size_t i = 0; i < nt && !bad; i++) {
            if (tv[i].shard != sh)
                continue;
            for (size_t i0 = 0; i0 < tv[i].numel && !bad; i0 += bufn) {
                size_t n = tv[i].numel - i0 < bufn ? tv[i].numel - i0 : bufn;
                gen(&tv[i], o->seed, i0, n, fb);
                if (o->dtype == FMB_DT_BF16) {
                    for (size_t k = 0; k < n; k++)
                        hb[k] = fmb_f32_to_bf16(fb[k]);
                    bad = fwrite(hb, 2, n, f) != n;
                } else {
                    bad = fwrite(fb, 4, n, f) != n;
                }
            }
        }
        if (fclose(f) != 0 || bad) {
            s = fmb_fail(err, FMB_EIO, "%s: write failed (disk full?)", path);
            goto out;
        }
        if (verbose)
            fprintf(stderr, "synth: wrote %s (%.2f GB)\n", path, (double)off / 1e9);
    }
    if (idx) {
        fprintf(idx, "\n  }\n}\n");
        if (fclose(idx) != 0)
            s = fmb_fail(err, FMB_EIO, "%s/model.safetensors.index.json: write failed", dir);
        idx = NULL;
    }
out:
    if (idx)
        fclose(idx);
    free(fb);
    free(hb);
    free(tv);
    return s;
}
