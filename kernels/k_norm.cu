/*
 * k_norm: the block pre-norm fused with the residual add, and the weightless RMS norms of
 * the x_proj output (B, C, and dt's per-token scale). kcpu twins: fmb_kcpu_add_rmsnorm,
 * fmb_kcpu_rms_rows.
 */
#include "kernels/k_common.cuh"

// One block per token row: resid += add, then out = w ⊙ resid · 1/sqrt(mean(resid²) + eps).
//
// The arithmetic of a row is fixed by D alone, never by T or by the variant that runs, so a
// token's result does not depend on the chunk it falls in: the row is cut into groups of four
// elements (g = 0 .. G-1, G = ceil(D/4), elements 4g .. 4g+3 below D, the missing ones 0);
// the block has NT threads (norm_threads: from D only) and thread j owns groups j, j + NT,
// j + 2·NT, ...; its sum of squares runs over its groups in that order and over each group's
// four elements in order, as ss = fmaf(v, v, ss); then fmb_block_sum. Variants: Q > 0 holds
// the row (at most Q groups a thread) in registers between the two passes; Q = 0 (very wide
// rows) streams it twice as before. V4: 16-byte loads (D % 4 == 0 and aligned pointers), else
// scalar loads; the same values in the same order either way.
//
// PDL (k_common.cuh): the norm gains w are loaded before fmb_pdl_wait(); resid, add and out
// after it.
template <bool V4> __device__ __forceinline__ void ld_group(const float *p, int g, int D, float *v)
{
    if constexpr (V4) {
        float4 f = *((const float4 *)p + g);
        v[0] = f.x, v[1] = f.y, v[2] = f.z, v[3] = f.w;
    } else {
#pragma unroll
        for (int e = 0; e < 4; e++)
            v[e] = 4 * g + e < D ? p[4 * g + e] : 0.0f;
    }
}

template <bool V4> __device__ __forceinline__ void st_group(float *p, int g, int D, const float *v)
{
    if constexpr (V4) {
        *((float4 *)p + g) = make_float4(v[0], v[1], v[2], v[3]);
    } else {
#pragma unroll
        for (int e = 0; e < 4; e++)
            if (4 * g + e < D)
                p[4 * g + e] = v[e];
    }
}

// out[4g .. 4g+3] = w · (r · inv)
template <bool V4>
__device__ __forceinline__ void
st_out(float *o, int g, int D, const float *w, const float *r, float inv)
{
    float v[4];
#pragma unroll
    for (int e = 0; e < 4; e++)
        v[e] = w[e] * (r[e] * inv);
    st_group<V4>(o, g, D, v);
}

template <bool V4>
__device__ __forceinline__ void
st_out(__nv_bfloat16 *o, int g, int D, const float *w, const float *r, float inv)
{
    float v[4];
#pragma unroll
    for (int e = 0; e < 4; e++)
        v[e] = w[e] * (r[e] * inv);
    if constexpr (V4) {
        __nv_bfloat162 lo = __floats2bfloat162_rn(v[0], v[1]),
                       hi = __floats2bfloat162_rn(v[2], v[3]);
        uint2 u;
        u.x = *(const uint32_t *)&lo;
        u.y = *(const uint32_t *)&hi;
        *((uint2 *)o + g) = u;
    } else {
#pragma unroll
        for (int e = 0; e < 4; e++)
            if (4 * g + e < D)
                o[4 * g + e] = __float2bfloat16_rn(v[e]);
    }
}

template <typename O, int Q, bool V4>
static __global__ void __launch_bounds__(1024)
    add_rmsnorm_kernel(float *resid, const float *add, const float *w, float eps, O *out, int D)
{
    __shared__ float sh[32];
    const int G = (D + 3) / 4, nt = blockDim.x;
    const size_t t = blockIdx.x;
    float *r = resid + t * (size_t)D;
    const float *a = add ? add + t * (size_t)D : NULL;
    O *o = out + t * (size_t)D;
    float ss = 0.0f;
    if constexpr (Q > 0) {
        float wv[Q][4], rv[Q][4];
#pragma unroll
        for (int q = 0; q < Q; q++) {
            const int g = threadIdx.x + q * nt;
            if (g < G)
                ld_group<V4>(w, g, D, wv[q]);
        }
        fmb_pdl_wait();
        fmb_pdl_trigger();
#pragma unroll
        for (int q = 0; q < Q; q++) {
            const int g = threadIdx.x + q * nt;
            if (g < G) {
                ld_group<V4>(r, g, D, rv[q]);
                if (a) {
                    float av[4];
                    ld_group<V4>(a, g, D, av);
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        rv[q][e] += av[e]; // residual = residual + hidden_states (fp32)
                    st_group<V4>(r, g, D, rv[q]);
                }
#pragma unroll
                for (int e = 0; e < 4; e++)
                    ss = fmaf(rv[q][e], rv[q][e], ss);
            }
        }
        ss = fmb_block_sum(ss, sh);
        const float inv = 1.0f / sqrtf(ss / (float)D + eps);
#pragma unroll
        for (int q = 0; q < Q; q++) {
            const int g = threadIdx.x + q * nt;
            if (g < G)
                st_out<V4>(o, g, D, wv[q], rv[q], inv);
        }
    } else {
        fmb_pdl_wait();
        fmb_pdl_trigger();
        for (int g = threadIdx.x; g < G; g += nt) {
            float rv[4];
            ld_group<V4>(r, g, D, rv);
            if (a) {
                float av[4];
                ld_group<V4>(a, g, D, av);
#pragma unroll
                for (int e = 0; e < 4; e++)
                    rv[e] += av[e];
                st_group<V4>(r, g, D, rv);
            }
#pragma unroll
            for (int e = 0; e < 4; e++)
                ss = fmaf(rv[e], rv[e], ss);
        }
        ss = fmb_block_sum(ss, sh);
        const float inv = 1.0f / sqrtf(ss / (float)D + eps);
        for (int g = threadIdx.x; g < G; g += nt) {
            float rv[4], wv[4];
            ld_group<V4>(r, g, D, rv); // this thread's own stores of the first pass
            ld_group<V4>(w, g, D, wv);
            st_out<V4>(o, g, D, wv, rv, inv);
        }
    }
}

#define NORM_Q 4

/* Threads per row block for D: enough that each owns at most NORM_Q groups of 4 (a multiple of
 * 32, at least 32, at most 1024). A function of D only (see add_rmsnorm_kernel). */
static int norm_threads(size_t D)
{
    size_t G = (D + 3) / 4, nt = (G + NORM_Q - 1) / NORM_Q;
    nt = (nt + 31) / 32 * 32;
    return nt < 32 ? 32 : nt > 1024 ? 1024 : (int)nt;
}

template <typename O>
static void add_rmsnorm_launch(const fmb_cuda_ctx *c,
                               float *resid,
                               const float *add,
                               const float *w,
                               float eps,
                               O *out,
                               size_t T,
                               size_t D)
{
    const int nt = norm_threads(D);
    const size_t G = (D + 3) / 4;
    // 16-byte loads need every row aligned: D % 4 == 0 and aligned bases (out: 4 elements)
    const bool v4 = D % 4 == 0 && (((uintptr_t)resid | (uintptr_t)add | (uintptr_t)w) & 15) == 0 &&
                    ((uintptr_t)out & (4 * sizeof(O) - 1)) == 0;
    const dim3 g((unsigned)T), b((unsigned)nt);
    if (G > (size_t)nt * NORM_Q)
        FMB_LAUNCH_PDL(c, add_rmsnorm_kernel<O, 0, false>, g, b, 0, resid, add, w, eps, out,
                       (int)D);
    else if (v4)
        FMB_LAUNCH_PDL(c, add_rmsnorm_kernel<O, NORM_Q, true>, g, b, 0, resid, add, w, eps, out,
                       (int)D);
    else
        FMB_LAUNCH_PDL(c, add_rmsnorm_kernel<O, NORM_Q, false>, g, b, 0, resid, add, w, eps, out,
                       (int)D);
    FMB_LAUNCH_CHECK(c);
}

extern "C" void fmb_k_add_rmsnorm(const fmb_cuda_ctx *c,
                                  float *resid,
                                  const float *add,
                                  const float *w,
                                  float eps,
                                  void *out,
                                  fmb_kdt ot,
                                  size_t T,
                                  size_t D)
{
    if (T == 0)
        return;
    FMB_ASSERT(T <= INT32_MAX && D > 0 && D <= INT32_MAX - 3);
    FMB_DISPATCH_ACT(ot, O, add_rmsnorm_launch<O>(c, resid, add, w, eps, (O *)out, T, D));
}

// One warp per token: S row = [δ (R) | B (N) | C (N)].
template <typename S>
static __global__ void ssm_params_kernel(
    const S *Sm, size_t lds, size_t T, int R, int N, float eps, int norm, float *BC, float *dtscale)
{
    fmb_pdl_wait(); // every thread, before the early return (k_common.cuh, rule 2)
    fmb_pdl_trigger();
    size_t t = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (t >= T)
        return;
    float bc;
    const float dsc = fmb_ssm_row(Sm + t * lds, R, N, eps, norm, lane, &bc);
    if (lane == 0)
        dtscale[t] = dsc;
    // B in lanes 0..N-1, C in lanes 16..16+N-1 (N ≤ 16)
    int half = lane >> 4, j = lane & 15;
    if (j < N)
        BC[t * 2 * N + half * N + j] = bc;
}

extern "C" void fmb_k_ssm_params(const fmb_cuda_ctx *c,
                                 const void *S,
                                 size_t lds,
                                 fmb_kdt st,
                                 size_t T,
                                 size_t R,
                                 size_t N,
                                 float eps,
                                 int norm,
                                 float *BC,
                                 float *dtscale)
{
    if (T == 0)
        return;
    FMB_ASSERT(N >= 1 && N <= 16 && lds >= R + 2 * N);
    FMB_DISPATCH_ACT(st, ST,
                     FMB_LAUNCH_PDL(c, ssm_params_kernel<ST>, dim3(fmb_cdiv(T * 32, 256)),
                                    dim3(256), 0, (const ST *)S, lds, T, (int)R, (int)N, eps, norm,
                                    BC, dtscale));
    FMB_LAUNCH_CHECK(c);
}
