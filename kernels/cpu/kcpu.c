/* kcpu: float32 CPU reference kernels. See kcpu.h for shapes and semantics. */
#include "kernels/cpu/kcpu.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "kernels/base.h"

// --- elementary functions ----------------------------------------------------------------

/* exp(x) for float, vectorisable (no branches, no calls), within 2 ulp of glibc's expf for
 * results above FLT_MIN, and 0 below exp(-87.3) where expf gives subnormals (a decay that small
 * leaves nothing of the state either way). Range reduction x = k ln2 + r with ln2 split in two,
 * then a degree-6 polynomial (Cephes' coefficients) on |r| <= ln2/2 and 2^k put into the exponent
 * bits. tests/test_engine_units.c checks it against expf over [-100, 88].
 * Defined for every float: the reduction runs on xc, x clamped to [-87.34, 88.38] with a NaN
 * sent to the low end (the comparisons are false for NaN), so k is in [-126, 127] and the
 * exponent bits are in [1, 254]; the result is then selected like expf's: NaN for NaN, +Inf
 * above 88.72 (where expf overflows), 0 below -87.34 (which covers -Inf). */
static inline float fmb_expf(float x)
{
    float xc = x >= -87.3365447505531f ? x : -87.3365447505531f;
    xc = xc <= 88.3762626647949f ? xc : 88.3762626647949f;
    // k = round(x / ln2) by the 1.5·2^23 trick: plain adds, so SSE2 vectorises it (floorf
    // needs SSE4.1); exact for |x / ln2| < 2^22
    float k = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = xc - k * 0.693359375f + k * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union {
        uint32_t i;
        float f;
    } sc;
    sc.i = (uint32_t)((int32_t)k + 127) << 23;
    float res = p * sc.f;
    res = x < -87.3365447505531f ? 0.0f : res;
    res = x > 88.7228391116729f ? INFINITY : res;
    return x != x ? x : res;
}

float fmb_kcpu_expf(float x)
{
    return fmb_expf(x);
}

/* log(u) for a normal u > 0, within 1 ulp of logf: u = m·2^e with m in [sqrt(1/2), sqrt(2)),
 * then Cephes' degree-9 polynomial for log(1 + x), x = m - 1, with ln2 split in two. */
static inline float fmb_logf(float u)
{
    union {
        float f;
        int32_t i;
    } v = {u};
    int32_t e = ((v.i >> 23) & 0xff) - 126;
    v.i = (v.i & 0x007fffff) | 0x3f000000; // m in [0.5, 1)
    float m = v.f;
    int lt = m < 0.707106781186547524f;
    e -= lt;
    float x = lt ? m + m - 1.0f : m - 1.0f;
    float z = x * x;
    float y = 7.0376836292e-2f;
    y = y * x - 1.1514610310e-1f;
    y = y * x + 1.1676998740e-1f;
    y = y * x - 1.2420140846e-1f;
    y = y * x + 1.4249322787e-1f;
    y = y * x - 1.6668057665e-1f;
    y = y * x + 2.0000714765e-1f;
    y = y * x - 2.4999993993e-1f;
    y = y * x + 3.3333331174e-1f;
    y = y * x * z;
    float fe = (float)e;
    y += -2.12194440e-4f * fe;
    y += -0.5f * z;
    return x + y + 0.693359375f * fe;
}

/* log(1 + y) for y >= 0: log(u)·y/(u - 1) with u = 1 + y recovers the bits lost in 1 + y. */
static inline float fmb_log1pf(float y)
{
    float u = 1.0f + y;
    return u == 1.0f ? y : fmb_logf(u) * (y / (u - 1.0f));
}

/* nn.functional.softplus(x), beta = 1, threshold = 20 */
static inline float softplus(float x)
{
    return x > 20.0f ? x : fmb_log1pf(fmb_expf(x));
}

/* SiLU: x·sigmoid(x) */
static inline float silu(float x)
{
    return x / (1.0f + fmb_expf(-x));
}

float fmb_kcpu_softplus(float x)
{
    return softplus(x);
}

float fmb_kcpu_silu(float x)
{
    return silu(x);
}

// --- GEMM ---------------------------------------------------------------------------------

void fmb_kcpu_gemm_nt(size_t T,
                      size_t M,
                      size_t Kd,
                      const float *A,
                      size_t lda,
                      const float *W,
                      size_t ldw,
                      float *C,
                      size_t ldc,
                      int accumulate)
{
    if (T == 0 || M == 0)
        return;
    FMB_ASSERT(T <= INT32_MAX && M <= INT32_MAX && Kd <= INT32_MAX);
    // One thread pool: OpenBLAS runs single-threaded (the engine sets it) and the output
    // columns are split over the OpenMP threads in blocks, so BLAS threads never spin
    // against OpenMP threads. Each output element is one sgemm dot product whatever the split.
    // Block width depends on M only (never on the thread count, so neither do the results):
    // wide blocks for the lm_head so A is packed fewer times.
    size_t bw = M > 8192 ? 512 : 64, blocks = (M + bw - 1) / bw;
#pragma omp parallel for schedule(static) if (blocks > 1 && T * M * Kd > 32768)
    for (size_t b = 0; b < blocks; b++) {
        size_t m0 = b * bw, m1 = m0 + bw < M ? m0 + bw : M;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)(m1 - m0), (int)Kd, 1.0f,
                    A, (int)lda, W + m0 * ldw, (int)ldw, accumulate ? 1.0f : 0.0f, C + m0,
                    (int)ldc);
    }
}

// --- norms -------------------------------------------------------------------------------

void fmb_kcpu_add_rmsnorm(
    float *resid, const float *add, const float *w, float eps, float *out, size_t T, size_t D)
{
#pragma omp parallel for schedule(static)
    for (size_t t = 0; t < T; t++) {
        float *r = resid + t * D;
        // residual = residual + hidden_states (fp32)
        if (add)
            for (size_t i = 0; i < D; i++)
                r[i] += add[t * D + i];
        // variance = hidden_states.pow(2).mean(-1, keepdim=True)
        float ss = 0.0f;
        for (size_t i = 0; i < D; i++)
            ss += r[i] * r[i];
        // hidden_states * torch.rsqrt(variance + variance_epsilon), then weight *
        float inv = 1.0f / sqrtf(ss / (float)D + eps);
        for (size_t i = 0; i < D; i++)
            out[t * D + i] = w[i] * (r[i] * inv);
    }
}

void fmb_kcpu_rms_rows(float *x, size_t ld, size_t T, size_t n, float eps)
{
#pragma omp parallel for schedule(static)
    for (size_t t = 0; t < T; t++) {
        float *r = x + t * ld;
        float ss = 0.0f;
        for (size_t i = 0; i < n; i++)
            ss += r[i] * r[i];
        // rms_forward: hidden_states * torch.rsqrt(variance + variance_epsilon)  (no weight)
        float inv = 1.0f / sqrtf(ss / (float)n + eps);
        for (size_t i = 0; i < n; i++)
            r[i] = r[i] * inv;
    }
}

// --- conv --------------------------------------------------------------------------------

void fmb_kcpu_conv1d(const float *x,
                     size_t ldx,
                     float *y,
                     size_t ldy,
                     const float *w,
                     const float *b,
                     size_t E,
                     size_t K,
                     float *state,
                     size_t state_stride,
                     const fmb_varlen *vl)
{
    FMB_ASSERT(K >= 1 && K <= 16);
    for (int s = 0; s < vl->nseq; s++) {
        size_t t0 = (size_t)vl->seq_start[s], t1 = (size_t)vl->seq_start[s + 1];
        float *st = state + (size_t)vl->slot[s] * state_stride; // [E, K-1]
        int fresh = !vl->has_state[s];
        // Blocks of CB channels, tokens outer inside a block: rows are read contiguously
        // (one cache line serves 16 channels) instead of one line per channel and token.
        enum { CB = 16 };
        size_t nb = (E + CB - 1) / CB;
#pragma omp parallel for schedule(static)
        for (size_t bi = 0; bi < nb; bi++) {
            size_t e0 = bi * CB, e1 = e0 + CB < E ? e0 + CB : E;
            // win[c] holds the K-1 previous inputs then the current one: x[t-K+1 .. t]
            float win[CB][16];
            for (size_t e = e0; e < e1; e++)
                for (size_t j = 0; j + 1 < K; j++)
                    win[e - e0][j] = fresh ? 0.0f : st[e * (K - 1) + j];
            for (size_t t = t0; t < t1; t++) {
                for (size_t e = e0; e < e1; e++) {
                    float *wn = win[e - e0];
                    const float *we = w + e * K;
                    wn[K - 1] = x[t * ldx + e];
                    // self.act(self.conv1d(hidden_states)[..., :seq_len]): b + Σ_j w[j] x[t-K+1+j]
                    float acc = b ? b[e] : 0.0f;
                    for (size_t j = 0; j < K; j++)
                        acc += we[j] * wn[j];
                    y[t * ldy + e] = silu(acc);
                    for (size_t j = 0; j + 1 < K; j++)
                        wn[j] = wn[j + 1];
                }
            }
            // conv_state = the last K-1 inputs (older state values shift through win)
            for (size_t e = e0; e < e1; e++)
                for (size_t j = 0; j + 1 < K; j++)
                    st[e * (K - 1) + j] = win[e - e0][j];
        }
    }
}

// --- selective scan ----------------------------------------------------------------------

/* Channels [e0, e0 + cb) (cb <= SCAN_CB) of one sequence over tokens [t0, t1). h: [N, SCAN_CB]
 * (state-major, so a state of all the block's channels is one vector), At: A transposed the
 * same way. Tokens outer; inside a token the channels are the SIMD lanes, and each channel's
 * sum over states runs in state order, as the plain loop would. Cloned for AVX2 without FMA, so
 * both clones round identically and results do not depend on the CPU. */
enum { SCAN_CB = 16 };
/* ThreadSanitizer's runtime is not up when the dynamic loader runs an ifunc resolver (the
 * process dies before main): its builds take the default clone alone. gcc says
 * __SANITIZE_THREAD__, clang __has_feature(thread_sanitizer). */
#if defined(__SANITIZE_THREAD__)
#define SCAN_CLONES
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SCAN_CLONES
#endif
#endif
#ifndef SCAN_CLONES
#define SCAN_CLONES __attribute__((target_clones("avx2", "default")))
#endif
SCAN_CLONES static void scan_block(size_t e0,
                                   size_t cb,
                                   size_t t0,
                                   size_t t1,
                                   float *h,
                                   const float *At,
                                   const float *u,
                                   size_t ldu,
                                   const float *dt_pre,
                                   size_t lddt,
                                   const float *dt_bias,
                                   const float *B,
                                   const float *C,
                                   size_t ldbc,
                                   const float *Dskip,
                                   const float *z,
                                   size_t ldz,
                                   float *y,
                                   size_t ldy,
                                   size_t N)
{
    float dt[SCAN_CB], ut[SCAN_CB], acc[SCAN_CB];
    for (size_t t = t0; t < t1; t++) {
        const float *Bt = B + t * ldbc, *Ct = C + t * ldbc;
        // discrete_time_step = softplus(dt_proj(time_step) + bias)
#pragma omp simd
        for (size_t c = 0; c < cb; c++) {
            dt[c] = softplus(dt_pre[t * lddt + e0 + c] + dt_bias[e0 + c]);
            ut[c] = u[t * ldu + e0 + c];
            acc[c] = 0.0f;
        }
        for (size_t n = 0; n < N; n++) {
            float *hn = h + n * SCAN_CB;
            const float *An = At + n * SCAN_CB;
            float bn = Bt[n], cn = Ct[n];
#pragma omp simd
            for (size_t c = 0; c < cb; c++) {
                // discrete_A = exp(A * dt); deltaB_u = (dt * B) * u; h = discrete_A * h + deltaB_u
                float dA = fmb_expf(An[c] * dt[c]);
                hn[c] = dA * hn[c] + (dt[c] * bn) * ut[c];
                // scan_output = ssm_state @ C, summed in state order
                acc[c] += hn[c] * cn;
            }
        }
        // scan_output = (scan_output + hidden_states * D) * act(gate)
#pragma omp simd
        for (size_t c = 0; c < cb; c++)
            y[t * ldy + e0 + c] = (acc[c] + ut[c] * Dskip[e0 + c]) * silu(z[t * ldz + e0 + c]);
    }
}

void fmb_kcpu_scan(const float *u,
                   size_t ldu,
                   const float *dt_pre,
                   size_t lddt,
                   const float *dt_bias,
                   const float *A,
                   const float *B,
                   const float *C,
                   size_t ldbc,
                   const float *Dskip,
                   const float *z,
                   size_t ldz,
                   float *y,
                   size_t ldy,
                   size_t E,
                   size_t N,
                   float *ssm,
                   size_t ssm_stride,
                   const fmb_varlen *vl)
{
    FMB_ASSERT(N >= 1 && N <= 256);
    for (int s = 0; s < vl->nseq; s++) {
        size_t t0 = (size_t)vl->seq_start[s], t1 = (size_t)vl->seq_start[s + 1];
        float *hs = ssm + (size_t)vl->slot[s] * ssm_stride; // [E, N]
        int fresh = !vl->has_state[s];
        size_t nb = (E + SCAN_CB - 1) / SCAN_CB;
#pragma omp parallel for schedule(static)
        for (size_t bi = 0; bi < nb; bi++) {
            size_t e0 = bi * SCAN_CB, cb = E - e0 < SCAN_CB ? E - e0 : SCAN_CB;
            float h[256 * SCAN_CB], At[256 * SCAN_CB]; // [N, SCAN_CB]
            for (size_t c = 0; c < cb; c++)
                for (size_t n = 0; n < N; n++) {
                    h[n * SCAN_CB + c] = fresh ? 0.0f : hs[(e0 + c) * N + n];
                    At[n * SCAN_CB + c] = A[(e0 + c) * N + n];
                }
            scan_block(e0, cb, t0, t1, h, At, u, ldu, dt_pre, lddt, dt_bias, B, C, ldbc, Dskip, z,
                       ldz, y, ldy, N);
            for (size_t c = 0; c < cb; c++)
                for (size_t n = 0; n < N; n++)
                    hs[(e0 + c) * N + n] = h[n * SCAN_CB + c];
        }
    }
}

// --- lm_head reductions ------------------------------------------------------------------

void fmb_kcpu_head_reduce(const float *logits,
                          size_t ld,
                          size_t T,
                          size_t V,
                          const int32_t *targets,
                          float *logprob,
                          int32_t *rank,
                          int32_t *argmax,
                          int top_k,
                          int32_t *topk_ids,
                          float *topk_logprobs)
{
    FMB_ASSERT(top_k <= 0 || top_k <= 64);
#pragma omp parallel for schedule(static)
    for (size_t t = 0; t < T; t++) {
        const float *l = logits + t * ld;
        size_t am = 0;
        float mx = l[0];
        for (size_t v = 1; v < V; v++)
            if (l[v] > mx) {
                mx = l[v];
                am = v;
            }
        // Σ exp(l - max): float exps (within 2 ulp), summed in double, 8 lanes at a time
        double se = 0.0;
#pragma omp simd reduction(+ : se)
        for (size_t v = 0; v < V; v++)
            se += (double)fmb_expf(l[v] - mx);
        double lse = (double)mx + log(se);
        int32_t tgt = targets ? targets[t] : -1;
        if (argmax)
            argmax[t] = (int32_t)am;
        if (logprob)
            logprob[t] = tgt >= 0 ? (float)((double)l[tgt] - lse) : NAN;
        if (rank) {
            int32_t r = -1;
            if (tgt >= 0) {
                r = 0;
                for (size_t v = 0; v < V; v++)
                    r += l[v] > l[tgt];
            }
            rank[t] = r;
        }
        if (top_k > 0 && topk_ids) {
            // insertion into a sorted list of the k best; strict > keeps the lowest id on ties
            int32_t ids[64];
            int cnt = 0;
            for (size_t v = 0; v < V; v++) {
                if (cnt == top_k && !(l[v] > l[ids[cnt - 1]]))
                    continue;
                int i = cnt < top_k ? cnt++ : cnt - 1;
                while (i > 0 && l[v] > l[ids[i - 1]]) {
                    ids[i] = ids[i - 1];
                    i--;
                }
                ids[i] = (int32_t)v;
            }
            for (int i = 0; i < top_k; i++) {
                topk_ids[t * (size_t)top_k + i] = i < cnt ? ids[i] : -1;
                if (topk_logprobs)
                    topk_logprobs[t * (size_t)top_k + i] =
                        i < cnt ? (float)((double)l[ids[i]] - lse) : NAN;
            }
        }
    }
}

// --- dtype conversion --------------------------------------------------------------------

float fmb_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float fmb_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    uint32_t u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { // subnormal: normalise
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t fmb_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40); // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

void fmb_kcpu_bf16_to_f32(const uint16_t *src, float *dst, size_t n)
{
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++)
        dst[i] = fmb_bf16_to_f32(src[i]);
}

void fmb_kcpu_f16_to_f32(const uint16_t *src, float *dst, size_t n)
{
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++)
        dst[i] = fmb_f16_to_f32(src[i]);
}
