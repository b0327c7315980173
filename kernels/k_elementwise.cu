/*
 * k_elementwise: element-type conversion, the device-side initialisation used by synthetic
 * weights and tests (counter-hash uniform fills, A_log, A = -exp(A_log)), the embedding gather
 * and the bias add after a GEMM. Grid-stride loops; every launch is checked.
 */
#include "kernels/k_common.cuh"

// --- conversion and initialisation ----------------------------------------------------------

template <typename S, typename D>
static __global__ void convert_kernel(const S *src, D *dst, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        fmb_st(dst + i, fmb_ld(src + i));
}

template <typename S>
static void convert_to(const fmb_cuda_ctx *c, const S *src, void *dst, fmb_kdt dt, size_t n)
{
    unsigned g = fmb_cdiv(n, 256);
    if (g > 65536)
        g = 65536;
    switch (dt) {
    case FMB_KDT_F32:
        convert_kernel<<<g, 256, 0, FMB_STREAM(c)>>>(src, (float *)dst, n);
        break;
    case FMB_KDT_BF16:
        convert_kernel<<<g, 256, 0, FMB_STREAM(c)>>>(src, (__nv_bfloat16 *)dst, n);
        break;
    case FMB_KDT_F16:
        convert_kernel<<<g, 256, 0, FMB_STREAM(c)>>>(src, (__half *)dst, n);
        break;
    }
    FMB_LAUNCH_CHECK(c);
}

extern "C" void
fmb_k_convert(const fmb_cuda_ctx *c, const void *src, fmb_kdt st, void *dst, fmb_kdt dt, size_t n)
{
    if (n == 0)
        return;
    if (st == dt) {
        fmb_cuda_d2d(c, dst, src, n * fmb_kdt_size(st));
        return;
    }
    switch (st) {
    case FMB_KDT_F32:
        convert_to(c, (const float *)src, dst, dt, n);
        break;
    case FMB_KDT_BF16:
        convert_to(c, (const __nv_bfloat16 *)src, dst, dt, n);
        break;
    case FMB_KDT_F16:
        convert_to(c, (const __half *)src, dst, dt, n);
        break;
    }
}

/* splitmix64 of (seed, i) → uniform in [-1, 1). */
__device__ __forceinline__ float hash_uniform(uint64_t seed, uint64_t i)
{
    uint64_t z = seed * 0x9E3779B97F4A7C15ull + i * 0xBF58476D1CE4E5B9ull + 0x94D049BB133111EBull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

template <typename D>
static __global__ void
fill_uniform_kernel(D *dst, size_t n, uint64_t seed, float scale, float offset)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        fmb_st(dst + i, offset + scale * hash_uniform(seed, i));
}

extern "C" void fmb_k_fill_uniform(const fmb_cuda_ctx *c,
                                   void *dst,
                                   fmb_kdt dt,
                                   size_t n,
                                   uint64_t seed,
                                   float scale,
                                   float offset)
{
    if (n == 0)
        return;
    unsigned g = fmb_cdiv(n, 256);
    if (g > 65536)
        g = 65536;
    FMB_DISPATCH_ACT(
        dt, T, fill_uniform_kernel<<<g, 256, 0, FMB_STREAM(c)>>>((T *)dst, n, seed, scale, offset));
    FMB_LAUNCH_CHECK(c);
}

static __global__ void fill_alog_kernel(float *dst, size_t E, size_t N, uint64_t seed, float noise)
{
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < E * N)
        dst[i] = logf((float)(i % N) + 1.0f) + noise * hash_uniform(seed, i);
}

extern "C" void
fmb_k_fill_alog(const fmb_cuda_ctx *c, float *dst, size_t E, size_t N, uint64_t seed, float noise)
{
    fill_alog_kernel<<<fmb_cdiv(E * N, 256), 256, 0, FMB_STREAM(c)>>>(dst, E, N, seed, noise);
    FMB_LAUNCH_CHECK(c);
}

static __global__ void neg_exp_kernel(const float *src, float *dst, size_t n)
{
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n)
        dst[i] = -expf(src[i]); // A = -torch.exp(self.A_log.float())
}

extern "C" void fmb_k_neg_exp(const fmb_cuda_ctx *c, const float *src, float *dst, size_t n)
{
    if (n == 0)
        return;
    neg_exp_kernel<<<fmb_cdiv(n, 256), 256, 0, FMB_STREAM(c)>>>(src, dst, n);
    FMB_LAUNCH_CHECK(c);
}

// --- embedding ------------------------------------------------------------------------------

template <typename E>
static __global__ void embed_kernel(const E *emb, const int32_t *ids, size_t D, float *resid)
{
    fmb_pdl_wait(); // ids come from a copy, resid is read by the previous step's kernels
    fmb_pdl_trigger();
    size_t t = blockIdx.y;
    const E *row = emb + (size_t)ids[t] * D;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < D;
         i += (size_t)gridDim.x * blockDim.x)
        resid[t * D + i] = fmb_ld(row + i);
}

extern "C" void fmb_k_embed(const fmb_cuda_ctx *c,
                            const void *emb,
                            fmb_kdt et,
                            const int32_t *ids,
                            size_t T,
                            size_t D,
                            float *resid)
{
    if (T == 0)
        return;
    FMB_ASSERT(T <= 65535 * 1024);
    dim3 g(fmb_cdiv(D, 256) > 8 ? 8 : fmb_cdiv(D, 256), (unsigned)T);
    FMB_ASSERT(T <= 65535);
    FMB_DISPATCH_ACT(
        et, TT,
        FMB_LAUNCH_PDL(c, embed_kernel<TT>, g, dim3(256), 0, (const TT *)emb, ids, D, resid));
    FMB_LAUNCH_CHECK(c);
}

template <typename Y>
static __global__ void add_bias_kernel(Y *y, size_t ldy, size_t M, const float *bias)
{
    size_t t = blockIdx.y;
    for (size_t m = blockIdx.x * (size_t)blockDim.x + threadIdx.x; m < M;
         m += (size_t)gridDim.x * blockDim.x)
        fmb_st(y + t * ldy + m, fmb_ld(y + t * ldy + m) + bias[m]);
}

extern "C" void fmb_k_add_bias(
    const fmb_cuda_ctx *c, void *y, size_t ldy, fmb_kdt yt, size_t T, size_t M, const float *bias)
{
    if (T == 0 || M == 0)
        return;
    FMB_ASSERT(T <= 65535);
    dim3 g(fmb_cdiv(M, 256) > 64 ? 64 : fmb_cdiv(M, 256), (unsigned)T);
    FMB_DISPATCH_ACT(yt, Y, add_bias_kernel<<<g, 256, 0, FMB_STREAM(c)>>>((Y *)y, ldy, M, bias));
    FMB_LAUNCH_CHECK(c);
}
