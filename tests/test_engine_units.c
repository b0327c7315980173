/*
 * Unit tests of the engine's small parts: config.json parsing (the 7B's expand: 16, "auto"
 * rank, defaults, bad fields), the parameter count of the 7B shape, dtype conversions, the
 * sampler (greedy ties, determinism of the counter-based RNG, top-k/top-p support) and the
 * reference kernels' varlen handling (several sequences in one chunk equal separate runs).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/config.h"
#include "engine/sample.h"
#include "engine/synth.h"
#include "kernels/base.h"
#include "kernels/cpu/kcpu.h"
#include "tests/check.h"

static int parse(const char *json, fmb_config *c, fmb_err *e)
{
    return fmb_config_parse(json, strlen(json), "config.json", c, e);
}

static void test_config(void)
{
    fmb_config c;
    fmb_err e;
    // The real 7B config.json: expand 16 (wrong) and intermediate_size 8192, no mixer_rms_eps.
    const char *real =
        "{\"model_type\":\"falcon_mamba\",\"hidden_size\":4096,\"num_hidden_layers\":64,"
        "\"vocab_size\":65024,\"state_size\":16,\"expand\":16,\"intermediate_size\":8192,"
        "\"conv_kernel\":4,\"time_step_rank\":256,\"use_bias\":false,\"use_conv_bias\":true,"
        "\"layer_norm_epsilon\":1e-05,\"tie_word_embeddings\":false,\"bos_token_id\":0,"
        "\"eos_token_id\":11,\"pad_token_id\":0}";
    int ok = parse(real, &c, &e) == FMB_OK;
    check(ok && c.E == 8192 && c.R == 256 && c.N == 16 && c.K == 4 && c.L == 64,
          "config: 7B d_inner from intermediate_size, not expand", "E=%lld", (long long)c.E);
    check(ok && fabsf(c.mixer_eps - 1e-6f) < 1e-12f && fabsf(c.norm_eps - 1e-5f) < 1e-12f,
          "config: mixer_rms_eps defaults to 1e-6", "mixer_eps=%g", c.mixer_eps);
    check(ok && c.n_eos == 1 && c.eos_ids[0] == 11 && !c.tie_embeddings && c.mixer_norm,
          "config: eos, tie, mixer norm", "n_eos=%d", c.n_eos);
    check(fmb_config_param_count(&c) == 7272665088LL, "config: 7B parameter count 7,272,665,088",
          "got %lld", (long long)fmb_config_param_count(&c));
    fmb_config s;
    int sok = fmb_synth_shape("7b", &s, &e) == FMB_OK;
    long long sn = sok ? (long long)fmb_config_param_count(&s) : -1;
    check(sn == 7272665088LL, "synth: 7b shape", "got %lld", sn);

    ok = parse("{\"model_type\":\"falcon_mamba\",\"hidden_size\":100,\"num_hidden_layers\":2,"
               "\"vocab_size\":10,\"time_step_rank\":\"auto\",\"eos_token_id\":[3,4]}",
               &c, &e) == FMB_OK;
    check(ok && c.R == 7 && c.E == 200 && c.tie_embeddings && c.n_eos == 2 && c.eos_ids[1] == 4,
          "config: auto rank = ceil(D/16), expand fallback, HF defaults, eos list", "R=%lld",
          (long long)c.R);
    ok = parse("{\"model_type\":\"mamba\",\"hidden_size\":8,\"num_hidden_layers\":1,"
               "\"vocab_size\":10}",
               &c, &e) == FMB_OK;
    check(ok && !c.mixer_norm, "config: plain mamba has no mixer norm", "mixer_norm=%d",
          c.mixer_norm);

    struct {
        const char *json, *want;
    } bad[] = {
        {"{\"model_type\":\"llama\",\"hidden_size\":8,\"num_hidden_layers\":1,\"vocab_size\":9}",
         "\"model_type\""},
        {"{\"model_type\":\"falcon_mamba\",\"num_hidden_layers\":1,\"vocab_size\":9}",
         "\"hidden_size\""},
        {"{\"model_type\":\"falcon_mamba\",\"hidden_size\":\"8\",\"num_hidden_layers\":1,"
         "\"vocab_size\":9}",
         "\"hidden_size\" must be an integer"},
        {"{\"model_type\":\"falcon_mamba\",\"hidden_size\":8,\"num_hidden_layers\":1,"
         "\"vocab_size\":9,\"time_step_rank\":\"big\"}",
         "\"time_step_rank\""},
        {"{\"model_type\":\"falcon_mamba\",\"hidden_size\":8,\"num_hidden_layers\":1,"
         "\"vocab_size\":9,\"eos_token_id\":9}",
         "\"eos_token_id\""},
        {"{\"model_type\":\"falcon_mamba\",\"hidden_size\":8,\"hidden_size\":9}", "malformed JSON"},
        {"[1,2", "config.json:1:"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "config: bad case %zu names the field", i);
        int rc = parse(bad[i].json, &c, &e);
        check(rc != FMB_OK && strstr(e.msg, bad[i].want) && strstr(e.msg, "config.json"), name,
              "rc=%d msg='%s' want '%s'", rc, rc ? e.msg : "", bad[i].want);
    }
}

static void test_dtypes(void)
{
    int ok = 1;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = fmb_bf16_to_f32((uint16_t)h);
        if (!isnan(f) && fmb_f32_to_bf16(f) != h)
            ok = 0;
    }
    check(ok, "bf16 round trip of all 65536 values", "mismatch");
    check(fmb_f32_to_bf16(1.00390625f) == 0x3f80 && fmb_f32_to_bf16(1.01171875f) == 0x3f82,
          "bf16 rounds to nearest even", "got %04x %04x", fmb_f32_to_bf16(1.00390625f),
          fmb_f32_to_bf16(1.01171875f));
    check(fmb_f16_to_f32(0x3c00) == 1.0f && fmb_f16_to_f32(0xc000) == -2.0f &&
              fmb_f16_to_f32(0x0001) == ldexpf(1.0f, -24) && isinf(fmb_f16_to_f32(0x7c00)) &&
              fmb_f16_to_f32(0x7bff) == 65504.0f,
          "f16 decode: normal, subnormal, inf, max", "bad value");
}

static void test_sampler(void)
{
    float l[6] = {1.0f, 3.0f, 3.0f, -2.0f, 0.5f, 2.9f};
    fmb_sample_params g = {0};
    check(fmb_sample(l, 6, &g, 0, NULL, NULL) == 1, "greedy ties go to the lowest id", "%s",
          "mismatch");
    fmb_sample_params p = {.temperature = 0.8f, .top_k = 0, .top_p = 1.0f, .seed = 42, .stream = 7};
    int same = 1, counts[6] = {0};
    for (uint64_t s = 0; s < 4000; s++) {
        int32_t a = fmb_sample(l, 6, &p, s, NULL, NULL), b = fmb_sample(l, 6, &p, s, NULL, NULL);
        same &= a == b;
        counts[a]++;
    }
    check(same, "sampling is a function of (seed, stream, step)", "%s", "mismatch");
    check(counts[1] > 800 && counts[2] > 800 && counts[5] > 500 && counts[3] < 40,
          "sampling follows softmax(l/T)", "counts %d %d %d %d %d %d", counts[0], counts[1],
          counts[2], counts[3], counts[4], counts[5]);
    fmb_sample_params k = {.temperature = 1.0f, .top_k = 2, .top_p = 1.0f, .seed = 1, .stream = 2};
    int only = 1;
    for (uint64_t s = 0; s < 500; s++) {
        int32_t a = fmb_sample(l, 6, &k, s, NULL, NULL);
        only &= a == 1 || a == 2;
    }
    check(only, "top-k keeps the k best", "%s", "mismatch");
    fmb_sample_params tp = {.temperature = 1.0f, .top_k = 0, .top_p = 0.5f, .seed = 1, .stream = 3};
    only = 1;
    for (uint64_t s = 0; s < 500; s++) {
        int32_t a = fmb_sample(l, 6, &tp, s, NULL, NULL);
        only &= a == 1 || a == 2;
    }
    check(only, "top-p keeps the smallest prefix reaching p", "%s", "mismatch");
    float lp;
    fmb_sample(l, 6, &g, 0, NULL, &lp);
    check(fabs(lp - fmb_logprob_of(l, 6, 1)) < 1e-6 && lp < 0, "logprob of the chosen token", "%g",
          lp);
    check(fmb_rng_uniform(1, 2, 3) != fmb_rng_uniform(1, 2, 4) &&
              fmb_rng_uniform(1, 2, 3) == fmb_rng_uniform(1, 2, 3),
          "counter RNG", "%s", "mismatch");
}

/* Several sequences in one chunk (varlen) equal each sequence run alone; a continued chunk
 * equals one long run. */
static void test_varlen(void)
{
    uint64_t rs = 9;
    const size_t E = 37, N = 5, K = 4, T = 23;
    float *x = malloc(T * E * 4), *dt = malloc(T * E * 4), *z = malloc(T * E * 4),
          *bc = malloc(T * 2 * N * 4), *A = malloc(E * N * 4), *bias = malloc(E * 4),
          *Dv = malloc(E * 4), *w = malloc(E * K * 4), *cb = malloc(E * 4);
    for (size_t i = 0; i < T * E; i++) {
        x[i] = check_rand_normal(&rs);
        dt[i] = 3 * check_rand_normal(&rs) + (i % 7 == 0 ? 25.0f : 0.0f);
        z[i] = check_rand_normal(&rs);
    }
    for (size_t i = 0; i < T * 2 * N; i++)
        bc[i] = check_rand_normal(&rs);
    for (size_t i = 0; i < E * N; i++)
        A[i] = -expf(logf((float)(i % N + 1)) + 0.1f * check_rand_normal(&rs));
    for (size_t i = 0; i < E; i++) {
        bias[i] = check_rand_normal(&rs);
        Dv[i] = check_rand_normal(&rs);
        cb[i] = check_rand_normal(&rs);
    }
    for (size_t i = 0; i < E * K; i++)
        w[i] = check_rand_normal(&rs);
    float *y1 = malloc(T * E * 4), *y2 = malloc(T * E * 4), *c1 = malloc(T * E * 4),
          *c2 = malloc(T * E * 4);
    float *cs = calloc(3 * E * (K - 1), 4), *hs = calloc(3 * E * N, 4);
    float *cs1 = calloc(E * (K - 1), 4), *hs1 = calloc(E * N, 4);
    // three sequences in slots 2, 0, 1: rows [0,1), [1,10), [10,23)
    int32_t st[4] = {0, 1, 10, 23}, slot[3] = {2, 0, 1};
    uint8_t has[3] = {0, 0, 0};
    fmb_varlen vl = {3, st, slot, has};
    fmb_kcpu_conv1d(x, E, c1, E, w, cb, E, K, cs, E * (K - 1), &vl);
    fmb_kcpu_scan(c1, E, dt, E, bias, A, bc, bc + N, 2 * N, Dv, z, E, y1, E, E, N, hs, E * N, &vl);
    double worst = 0;
    for (int s = 0; s < 3; s++) {
        int32_t st1[2] = {0, st[s + 1] - st[s]}, s0 = 0;
        uint8_t h0 = 0;
        fmb_varlen v1 = {1, st1, &s0, &h0};
        size_t o = (size_t)st[s];
        fmb_kcpu_conv1d(x + o * E, E, c2 + o * E, E, w, cb, E, K, cs1, E * (K - 1), &v1);
        fmb_kcpu_scan(c2 + o * E, E, dt + o * E, E, bias, A, bc + o * 2 * N, bc + o * 2 * N + N,
                      2 * N, Dv, z + o * E, E, y2 + o * E, E, E, N, hs1, E * N, &v1);
        for (size_t i = 0; i < E * N; i++)
            worst = fmax(worst, fabs(hs1[i] - hs[(size_t)slot[s] * E * N + i]));
    }
    for (size_t i = 0; i < T * E; i++)
        worst = fmax(worst, fabs(y1[i] - y2[i]));
    check(worst == 0, "varlen: three sequences in one chunk equal separate runs", "max diff %g",
          worst);
    // continuation: rows [0,10) then [10,23) from the carried state equal one run of 23
    int32_t a[2] = {0, 10}, b[2] = {0, 13}, all[2] = {0, 23}, s0 = 0;
    uint8_t fresh = 0, cont = 1;
    fmb_varlen va = {1, a, &s0, &fresh}, vb = {1, b, &s0, &cont}, vall = {1, all, &s0, &fresh};
    memset(cs1, 0, E * (K - 1) * 4);
    memset(hs1, 0, E * N * 4);
    fmb_kcpu_conv1d(x, E, c1, E, w, cb, E, K, cs1, E * (K - 1), &vall);
    fmb_kcpu_scan(c1, E, dt, E, bias, A, bc, bc + N, 2 * N, Dv, z, E, y1, E, E, N, hs1, E * N,
                  &vall);
    fmb_kcpu_conv1d(x, E, c2, E, w, cb, E, K, cs, E * (K - 1), &va);
    fmb_kcpu_scan(c2, E, dt, E, bias, A, bc, bc + N, 2 * N, Dv, z, E, y2, E, E, N, hs, E * N, &va);
    fmb_kcpu_conv1d(x + 10 * E, E, c2 + 10 * E, E, w, cb, E, K, cs, E * (K - 1), &vb);
    fmb_kcpu_scan(c2 + 10 * E, E, dt + 10 * E, E, bias, A, bc + 20 * N, bc + 20 * N + N, 2 * N, Dv,
                  z + 10 * E, E, y2 + 10 * E, E, E, N, hs, E * N, &vb);
    worst = 0;
    for (size_t i = 0; i < T * E; i++)
        worst = fmax(worst, fabs(y1[i] - y2[i]));
    check(worst == 0, "varlen: a chunk continued from the carried state equals one run",
          "max diff %g", worst);
    float *ptrs[] = {x, dt, z, bc, A, bias, Dv, w, cb, y1, y2, c1, c2, cs, hs, cs1, hs1};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++)
        free(ptrs[i]);
}

static void test_head(void)
{
    float l[2][7] = {{0, 5, 5, 1, -1, 4, 5}, {2, 2, 2, 2, 2, 2, 2}};
    int32_t tg[2] = {5, 3}, rank[2], am[2], tk[6];
    float lp[2], tkl[6];
    fmb_kcpu_head_reduce(&l[0][0], 7, 2, 7, tg, lp, rank, am, 3, tk, tkl);
    double lse = 5 + log(3 + exp(-5) + exp(-4) + exp(-6) + exp(-1));
    check(am[0] == 1 && rank[0] == 3 && fabs(lp[0] - (4 - lse)) < 1e-6,
          "head: argmax, rank, logprob", "am %d rank %d lp %g", am[0], rank[0], lp[0]);
    check(tk[0] == 1 && tk[1] == 2 && tk[2] == 6 && tk[3] == 0 && tk[4] == 1 && tk[5] == 2 &&
              rank[1] == 0 && am[1] == 0,
          "head: top-k ties to the lowest id", "%d %d %d / %d %d %d", tk[0], tk[1], tk[2], tk[3],
          tk[4], tk[5]);
}

static void test_expf(void)
{
    double worst = 0;
    float at = 0;
    int zero_ok = 1;
    for (float x = -100.0f; x < 88.3f; x += 0.00173f) {
        float a = fmb_kcpu_expf(x), b = expf(x);
        if (b > 1.17549435e-38f) {
            double rel = fabs((double)a - (double)b) / (double)b;
            if (rel > worst) {
                worst = rel;
                at = x;
            }
        } else if (a != 0.0f && fabs(a - b) > 1.2e-38f) {
            zero_ok = 0;
        }
    }
    // 2 ulp of float is 2.4e-7 relative
    check(worst <= 2.4e-7 && zero_ok, "scan exp within 2 ulp of expf", "worst %.3g at %g", worst,
          (double)at);
    check_note("scan exp: worst relative error %.3g (at x = %g)", worst, (double)at);
    double ws = 0, wsi = 0;
    for (float x = -100.0f; x < 30.0f; x += 0.00071f) {
        double sp = x > 20.0f ? x : log1p(exp((double)x));
        double si = (double)x / (1.0 + exp(-(double)x));
        if (sp > 1.2e-38) // below FLT_MIN the scan's exp flushes to 0 (see kcpu.c)
            ws = fmax(ws, fabs(fmb_kcpu_softplus(x) - sp) / sp);
        if (fabs(si) > 1e-30)
            wsi = fmax(wsi, fabs(fmb_kcpu_silu(x) - si) / fabs(si));
    }
    // against float64 references: 4 ulp of float is 4.8e-7
    check(ws <= 4.8e-7, "softplus within 4 ulp", "worst %.3g", ws);
    check(wsi <= 4.8e-7, "silu within 4 ulp", "worst %.3g", wsi);
    check_note("softplus worst relative error %.3g, silu %.3g (vs float64)", ws, wsi);
}

/* kernels/base.h: the string builder grows, keeps NUL bytes, stays NUL-terminated. */
static void test_string_builder(void)
{
    fmb_sb b = {0};
    char *empty = fmb_sb_take(&b);
    check(empty && !empty[0], "sb: take of nothing is an empty string", "%p", (void *)empty);
    free(empty);
    for (int i = 0; i < 1000; i++)
        fmb_sb_printf(&b, "%d,", i);
    fmb_sb_add(&b, "a\0b", 3);
    fmb_sb_putc(&b, 'z');
    size_t want = 0;
    for (int i = 0; i < 1000; i++)
        want += (size_t)snprintf(NULL, 0, "%d,", i);
    check(b.len == want + 4 && !memcmp(b.buf, "0,1,2,", 6) && !memcmp(b.buf + want, "a\0bz", 5) &&
              b.buf[b.len] == 0,
          "sb: printf/add/putc append in order, NUL bytes kept", "len %zu want %zu", b.len,
          want + 4);
    fmb_sb_clear(&b);
    fmb_sb_puts(&b, "x");
    check(b.len == 1 && !strcmp(b.buf, "x"), "sb: clear then reuse", "%s", b.buf);
    fmb_sb_free(&b);
    int *v = NULL;
    for (int n = 1; n <= 100; n++) {
        v = fmb_xrealloc(v, (size_t)n, sizeof *v);
        v[n - 1] = n;
    }
    check(v[0] == 1 && v[99] == 100, "xrealloc keeps the contents", "%d %d", v[0], v[99]);
    free(v);
}

/* Every float input is defined (no UB under UBSan: a NaN used to reach a shift of a negative
 * value) and non-finite inputs give expf's answers, so a NaN or Inf in a checkpoint propagates
 * to the logits instead of turning into finite values. */
static void test_nonfinite(void)
{
    volatile float nan = NAN, inf = INFINITY;
    float xs[] = {nan, -nan, inf, -inf, 1e30f, -1e30f, 88.8f, 3.4e38f, -3.4e38f};
    float want[] = {NAN, NAN, INFINITY, 0.0f, INFINITY, 0.0f, INFINITY, INFINITY, 0.0f};
    int ok = 1;
    char got[256] = "";
    for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++) {
        float a = fmb_kcpu_expf(xs[i]);
        int same = isnan(want[i]) ? isnan(a) : a == want[i];
        if (!same) {
            ok = 0;
            size_t l = strlen(got);
            snprintf(got + l, sizeof got - l, " exp(%g) = %g", (double)xs[i], (double)a);
        }
    }
    check(ok, "scan exp of NaN/Inf/huge inputs is expf's", "%s", got);
    check(isnan(fmb_kcpu_softplus(nan)) && isnan(fmb_kcpu_silu(nan)) &&
              fmb_kcpu_softplus(inf) == inf && fmb_kcpu_softplus(-inf) == 0.0f,
          "softplus/silu propagate NaN", "softplus %g silu %g", (double)fmb_kcpu_softplus(nan),
          (double)fmb_kcpu_silu(nan));
    /* head reduce: a NaN anywhere in the row makes the log-probability NaN (the engine then
     * fails the item); +Inf too (Inf - Inf) */
    float l[3][4] = {{0, 1, nan, 2}, {nan, nan, nan, nan}, {0, inf, 1, 2}};
    int32_t tg[3] = {3, 1, 0}, rank[3], am[3];
    float lp[3];
    fmb_kcpu_head_reduce(&l[0][0], 4, 3, 4, tg, lp, rank, am, 0, NULL, NULL);
    check(isnan(lp[0]) && isnan(lp[1]) && !isfinite(lp[2]), "head: NaN/Inf logits give NaN logprob",
          "%g %g %g", (double)lp[0], (double)lp[1], (double)lp[2]);
}

/* The oracle for fmb_sample's top-k/top-p path: the textbook algorithm, a comparison sort
 * (descending value, ascending id), then the same sums. fmb_sample sorts by radix; the picks
 * must be the same on every input, ties, signed zeros and -Inf included. */
typedef struct {
    float val;
    int32_t id;
} ref_cand;
static int ref_cmp(const void *a, const void *b)
{
    const ref_cand *x = a, *y = b;
    if (x->val != y->val)
        return x->val > y->val ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}
static int32_t ref_sample(const float *l, int32_t V, const fmb_sample_params *p, uint64_t step)
{
    ref_cand *c = malloc((size_t)V * sizeof *c);
    for (int32_t v = 0; v < V; v++)
        c[v] = (ref_cand){l[v] / p->temperature, v};
    size_t n = (size_t)V;
    int use_p = p->top_p > 0.0f && p->top_p < 1.0f;
    if ((p->top_k > 0 && p->top_k < V) || use_p) {
        qsort(c, n, sizeof *c, ref_cmp);
        if (p->top_k > 0 && (size_t)p->top_k < n)
            n = (size_t)p->top_k;
    }
    double mx = c[0].val, total = 0, acc = 0;
    for (size_t i = 1; i < n; i++)
        mx = fmax(mx, c[i].val);
    for (size_t i = 0; i < n; i++)
        total += exp((double)c[i].val - mx);
    if (use_p) {
        size_t keep = 0;
        while (keep < n) {
            acc += exp((double)c[keep].val - mx) / total;
            keep++;
            if (acc >= p->top_p)
                break;
        }
        n = keep;
        total = 0;
        for (size_t i = 0; i < n; i++)
            total += exp((double)c[i].val - mx);
        acc = 0;
    }
    double u = fmb_rng_uniform(p->seed, p->stream, step) * total;
    int32_t pick = c[n - 1].id;
    for (size_t i = 0; i < n; i++) {
        acc += exp((double)c[i].val - mx);
        if (u < acc) {
            pick = c[i].id;
            break;
        }
    }
    free(c);
    return pick;
}

static void test_sampler_oracle(void)
{
    uint64_t r = 12345;
    int bad = 0, cases = 0;
    for (int it = 0; it < 300 && !bad; it++) {
        int32_t V = 1 + (int32_t)(it * 37 % 3000);
        float *l = malloc((size_t)V * sizeof *l);
        for (int32_t v = 0; v < V; v++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            uint32_t x = (uint32_t)(r >> 33);
            // few distinct values (ties), signed zeros, -Inf, and a spread
            l[v] = x % 7 == 0    ? (float)(x % 5) - 2.0f
                   : x % 11 == 0 ? (x & 1 ? 0.0f : -0.0f)
                   : x % 29 == 0 ? -INFINITY
                                 : ((float)(x % 20000) - 10000.0f) / 700.0f;
        }
        fmb_sample_params p = {.temperature = 0.3f + (float)(it % 9) * 0.25f,
                               .top_k = it % 3 ? (int)(it % 50) : 0,
                               .top_p = it % 4 ? 0.05f + (float)(it % 19) * 0.05f : 1.0f,
                               .seed = (uint64_t)it,
                               .stream = (uint64_t)it * 7};
        for (uint64_t st = 0; st < 8 && !bad; st++, cases++)
            if (fmb_sample(l, V, &p, st, NULL, NULL) != ref_sample(l, V, &p, st))
                bad = it + 1;
        free(l);
    }
    // signed zeros only: equal values, so the top-3 are the three lowest ids whatever the signs
    float z[8] = {-0.0f, 0.0f, -0.0f, 0.0f, 0.0f, -0.0f, 0.0f, -0.0f};
    fmb_sample_params pz = {.temperature = 1.0f, .top_k = 3, .top_p = 1.0f, .seed = 5, .stream = 1};
    for (uint64_t st = 0; st < 64 && !bad; st++, cases++)
        if (fmb_sample(z, 8, &pz, st, NULL, NULL) != ref_sample(z, 8, &pz, st))
            bad = 1000;
    check(!bad, "sampler: radix-sorted top-k/top-p picks = the comparison-sort oracle's",
          "first difference in case %d of %d", bad - 1, cases);
}

/* The logits processors on hand-computed values, and the sampler with penalties and min_p
 * against an oracle that applies them in the documented order (its own code: HF's repetition
 * penalty, vLLM's frequency then presence, temperature, comparison-sorted top-k and top-p,
 * then min-p on p / p_max). */
static void ref_penalize(const float *l,
                         int32_t V,
                         const fmb_sample_params *p,
                         const uint8_t *seen,
                         const uint32_t *counts,
                         float *out)
{
    for (int32_t v = 0; v < V; v++) {
        float x = l[v];
        int in = seen && (seen[v / 8] & (1u << (v % 8)));
        if (in && p->repetition_penalty > 0.0f)
            x = x < 0.0f ? x * p->repetition_penalty : x / p->repetition_penalty;
        if (counts && counts[v] > 0)
            x = (x - p->frequency_penalty * (float)counts[v]) - p->presence_penalty;
        out[v] = x;
    }
}

static int32_t ref_sample_full(const float *l,
                               int32_t V,
                               const fmb_sample_params *p,
                               const uint8_t *seen,
                               const uint32_t *counts,
                               uint64_t step)
{
    float *pl = malloc((size_t)V * sizeof *pl);
    ref_penalize(l, V, p, seen, counts, pl);
    int32_t pick = 0;
    if (p->temperature <= 0.0f) {
        for (int32_t v = 1; v < V; v++)
            if (pl[v] > pl[pick])
                pick = v;
        free(pl);
        return pick;
    }
    ref_cand *c = malloc((size_t)V * sizeof *c);
    for (int32_t v = 0; v < V; v++)
        c[v] = (ref_cand){pl[v] / p->temperature, v};
    // the draw walks the candidates sorted when top-k or top-p cut, in id order otherwise
    if ((p->top_k > 0 && p->top_k < V) || (p->top_p > 0.0f && p->top_p < 1.0f))
        qsort(c, (size_t)V, sizeof *c, ref_cmp);
    size_t n = (size_t)V;
    if (p->top_k > 0 && (size_t)p->top_k < n)
        n = (size_t)p->top_k;
    double mx = c[0].val, total = 0;
    for (size_t i = 1; i < n; i++)
        mx = fmax(mx, c[i].val);
    for (size_t i = 0; i < n; i++)
        total += exp((double)c[i].val - mx);
    if (p->top_p > 0.0f && p->top_p < 1.0f) {
        double acc = 0;
        size_t keep = 0;
        while (keep < n) {
            acc += exp((double)c[keep].val - mx) / total;
            keep++;
            if (acc >= p->top_p)
                break;
        }
        n = keep;
    }
    // min-p: drop the candidates whose probability is below min_p times the top one's
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (!(p->min_p > 0.0f) || exp((double)c[i].val - mx) >= (double)p->min_p)
            c[m++] = c[i];
    total = 0;
    for (size_t i = 0; i < m; i++)
        total += exp((double)c[i].val - mx);
    double u = fmb_rng_uniform(p->seed, p->stream, step) * total, acc = 0;
    pick = c[m - 1].id;
    for (size_t i = 0; i < m; i++) {
        acc += exp((double)c[i].val - mx);
        if (u < acc) {
            pick = c[i].id;
            break;
        }
    }
    free(c);
    free(pl);
    return pick;
}

static void test_sampler_processors(void)
{
    // the penalties by hand: ids 0, 1 seen; id 2 generated 3 times, id 3 once
    float l[4] = {2.0f, -1.0f, 0.5f, 3.0f}, out[4];
    uint8_t seen[1] = {0x3};
    uint32_t counts[4] = {0, 0, 3, 1};
    fmb_sample_params p = {0};
    p.repetition_penalty = 2.0f;
    p.frequency_penalty = 0.5f;
    p.presence_penalty = 1.0f;
    fmb_sample_history h = {seen, counts};
    fmb_sample_penalize(l, 4, &p, &h, out);
    check(out[0] == 1.0f && out[1] == -2.0f && out[2] == -2.0f && out[3] == 1.5f,
          "penalties: > 0 divided, < 0 multiplied; -= frequency * count + presence", "%g %g %g %g",
          out[0], out[1], out[2], out[3]);
    check(fmb_sample_has_penalty(&p) && !fmb_sample_has_penalty(&(fmb_sample_params){0}),
          "penalties: zero-initialised params are off", "%s", "mismatch");
    // greedy takes the argmax of the penalised logits
    fmb_sample_params g = {0};
    g.repetition_penalty = 4.0f;
    uint8_t s3[1] = {0x8};
    fmb_sample_history h3 = {s3, NULL};
    float lp;
    int32_t a = fmb_sample_hist(l, 4, &g, &h3, 0, NULL, &lp);
    check(a == 0 && fmb_sample(l, 4, &g, 0, NULL, NULL) == 3 &&
              fabs(lp - fmb_logprob_of(l, 4, 0)) < 1e-6,
          "greedy with a repetition penalty: argmax of the penalised logits, raw logprob",
          "picked %d", a);
    // min-p: probabilities 1 : 0.5 : 0.09 : 0.2 at T = 1 (id 2 below 0.1 · p_max);
    // at T = 2 they are 1 : 0.71 : 0.3 : 0.45, so min_p 0.25 keeps id 2
    float m[4] = {0.0f, logf(0.5f), logf(0.09f), logf(0.2f)};
    fmb_sample_params mp = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 3, .stream = 4};
    mp.min_p = 0.1f;
    int cnt[4] = {0};
    for (uint64_t st = 0; st < 3000; st++)
        cnt[fmb_sample(m, 4, &mp, st, NULL, NULL)]++;
    check(cnt[2] == 0 && cnt[0] > 1500 && cnt[1] > 700 && cnt[3] > 250,
          "min_p drops p < min_p * p_max and renormalises the rest", "%d %d %d %d", cnt[0], cnt[1],
          cnt[2], cnt[3]);
    mp.temperature = 2.0f;
    mp.min_p = 0.25f;
    int c2 = 0;
    for (uint64_t st = 0; st < 3000; st++)
        c2 += fmb_sample(m, 4, &mp, st, NULL, NULL) == 2;
    mp.temperature = 1.0f;
    int c1 = 0;
    for (uint64_t st = 0; st < 3000; st++)
        c1 += fmb_sample(m, 4, &mp, st, NULL, NULL) == 2;
    check(c2 > 200 && c1 == 0, "min_p applies after temperature", "T=2: %d, T=1: %d", c2, c1);
    // against the oracle, random logits and histories, every processor mixed
    uint64_t r = 777;
    int bad = 0, cases = 0;
    for (int it = 0; it < 200 && !bad; it++) {
        int32_t V = 2 + (int32_t)(it * 53 % 2000);
        float *x = malloc((size_t)V * sizeof *x);
        uint8_t *sn = calloc(((size_t)V + 7) / 8, 1);
        uint32_t *cn = calloc((size_t)V, sizeof *cn);
        for (int32_t v = 0; v < V; v++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            uint32_t y = (uint32_t)(r >> 33);
            x[v] = y % 13 == 0 ? 0.0f : ((float)(y % 20000) - 10000.0f) / 900.0f;
            if (y % 5 == 0)
                sn[v / 8] |= (uint8_t)(1u << (v % 8));
            if (y % 7 == 0)
                cn[v] = 1 + y % 4;
        }
        fmb_sample_params q = {.temperature = it % 5 ? 0.4f + (float)(it % 7) * 0.3f : 0.0f,
                               .top_k = it % 3 ? (int)(it % 40) : 0,
                               .top_p = it % 4 ? 0.2f + (float)(it % 15) * 0.05f : 1.0f,
                               .seed = (uint64_t)it,
                               .stream = (uint64_t)it * 3};
        q.min_p = it % 2 ? (float)(it % 10) * 0.05f : 0.0f;
        q.repetition_penalty = it % 3 != 1 ? 1.0f + (float)(it % 6) * 0.3f : 1.0f;
        q.frequency_penalty = (float)(it % 5) * 0.4f - 0.8f;
        q.presence_penalty = (float)(it % 4) * 0.5f - 0.5f;
        fmb_sample_history hh = {sn, cn};
        for (uint64_t st = 0; st < 6 && !bad; st++, cases++)
            if (fmb_sample_hist(x, V, &q, &hh, st, NULL, NULL) !=
                ref_sample_full(x, V, &q, sn, cn, st))
                bad = it + 1;
        free(x);
        free(sn);
        free(cn);
    }
    check(!bad, "sampler: penalties + temperature + top-k/top-p + min-p = the oracle's picks",
          "first difference in case %d of %d", bad - 1, cases);
    // top-k log-probabilities of the raw distribution: sorted, ties to the lowest id
    float t[5] = {1.0f, 3.0f, 3.0f, -2.0f, 2.0f};
    int32_t ti[6];
    float tl[6];
    fmb_topk_logprobs(t, 5, 3, ti, tl);
    check(ti[0] == 1 && ti[1] == 2 && ti[2] == 4 && fabs(tl[0] - fmb_logprob_of(t, 5, 1)) < 1e-6 &&
              fabs(tl[2] - fmb_logprob_of(t, 5, 4)) < 1e-6,
          "top-k logprobs: descending, lowest id on ties", "%d %d %d", ti[0], ti[1], ti[2]);
    fmb_topk_logprobs(t, 5, 6, ti, tl);
    check(ti[5] == -1 && isnan(tl[5]) && ti[4] == 3, "top-k logprobs past V: -1 and NaN", "%d",
          ti[5]);
}

int main(void)
{
    test_string_builder();
    test_expf();
    test_nonfinite();
    test_config();
    test_dtypes();
    test_sampler();
    test_sampler_oracle();
    test_sampler_processors();
    test_varlen();
    test_head();
    return check_exit();
}
