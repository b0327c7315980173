/*
 * k_matvec: the decode-time product y[b, :] = W · x[b, :] for a few rows of x (B ≤ 8) with
 * bf16 W and x, fp32 accumulation. Decode at small batch is bound by reading W once; this
 * kernel streams W with 16-byte non-caching loads, several in flight per thread, while the
 * small x stays in L1/L2. A row of W is shared by tpr threads (tpr = 32..256 chosen from Kd
 * so that short rows, e.g. dt_proj's 256, still use whole warps).
 */
#include "kernels/k_common.cuh"

#define MV_THREADS 256

__device__ __forceinline__ uint4 ld_stream(const uint4 *p)
{
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}

__device__ __forceinline__ void unpack8(uint4 v, float *f)
{
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&v;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        float2 p = __bfloat1622float2(h[j]);
        f[2 * j] = p.x;
        f[2 * j + 1] = p.y;
    }
}

template <int B, typename Y>
static __global__ void __launch_bounds__(MV_THREADS)
    matvec_kernel(const __nv_bfloat16 *__restrict__ W,
                  size_t ldw,
                  const __nv_bfloat16 *__restrict__ x,
                  size_t ldx,
                  Y *y,
                  size_t ldy,
                  int M,
                  int Kd,
                  int tpr,
                  int accumulate)
{
    __shared__ float red[B][MV_THREADS / 32];
    const int rpb = MV_THREADS / tpr;
    const int r = threadIdx.x / tpr, lt = threadIdx.x % tpr;
    const int m = blockIdx.x * rpb + r;
    float acc[B];
#pragma unroll
    for (int b = 0; b < B; b++)
        acc[b] = 0.0f;
    if (m < M) {
        const uint4 *wr = (const uint4 *)(W + (size_t)m * ldw);
        const int K8 = Kd / 8;
        int k8 = lt;
        // four 16-byte loads of W in flight per thread
        for (; k8 + 3 * tpr < K8; k8 += 4 * tpr) {
            uint4 wv[4];
#pragma unroll
            for (int q = 0; q < 4; q++)
                wv[q] = ld_stream(wr + k8 + q * tpr);
#pragma unroll
            for (int q = 0; q < 4; q++) {
                float wf[8];
                unpack8(wv[q], wf);
#pragma unroll
                for (int b = 0; b < B; b++) {
                    float xf[8];
                    unpack8(__ldg((const uint4 *)(x + (size_t)b * ldx) + k8 + q * tpr), xf);
#pragma unroll
                    for (int j = 0; j < 8; j++)
                        acc[b] = fmaf(wf[j], xf[j], acc[b]);
                }
            }
        }
        for (; k8 < K8; k8 += tpr) {
            float wf[8];
            unpack8(ld_stream(wr + k8), wf);
#pragma unroll
            for (int b = 0; b < B; b++) {
                float xf[8];
                unpack8(__ldg((const uint4 *)(x + (size_t)b * ldx) + k8), xf);
#pragma unroll
                for (int j = 0; j < 8; j++)
                    acc[b] = fmaf(wf[j], xf[j], acc[b]);
            }
        }
    }
    // reduce over the tpr threads of the row: within each warp, then across its warps
#pragma unroll
    for (int b = 0; b < B; b++)
        acc[b] = fmb_warp_sum(acc[b]);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, wpr = tpr / 32;
    if (wpr > 1) {
        if (lane == 0)
#pragma unroll
            for (int b = 0; b < B; b++)
                red[b][warp] = acc[b];
        __syncthreads();
        if (lt == 0)
#pragma unroll
            for (int b = 0; b < B; b++) {
                float s = 0.0f;
                for (int q = 0; q < wpr; q++)
                    s += red[b][warp + q];
                acc[b] = s;
            }
    }
    if (lt == 0 && m < M)
#pragma unroll
        for (int b = 0; b < B; b++) {
            Y *p = y + (size_t)b * ldy + m;
            float v = acc[b];
            if (accumulate)
                v += fmb_ld(p);
            fmb_st(p, v);
        }
}

extern "C" int fmb_k_matvec_supported(size_t B, size_t Kd, size_t ldw, fmb_kdt xt)
{
    return B >= 1 && B <= FMB_MATVEC_MAXB && Kd % 8 == 0 && ldw % 8 == 0 && Kd >= 8 &&
           xt == FMB_KDT_BF16;
}

template <typename Y>
static void matvec_launch(const fmb_cuda_ctx *c,
                          size_t B,
                          size_t M,
                          size_t Kd,
                          const void *W,
                          size_t ldw,
                          const void *x,
                          size_t ldx,
                          void *y,
                          size_t ldy,
                          int accumulate)
{
    size_t k8 = Kd / 8;
    int tpr = k8 >= 1024 ? 256 : k8 >= 512 ? 128 : k8 >= 128 ? 64 : 32;
    unsigned g = fmb_cdiv(M, MV_THREADS / tpr);
    const __nv_bfloat16 *w = (const __nv_bfloat16 *)W, *xx = (const __nv_bfloat16 *)x;
    Y *yy = (Y *)y;
    cudaStream_t s = FMB_STREAM(c);
    switch (B) {
#define MV_CASE(BB)                                                                                \
    case BB:                                                                                       \
        matvec_kernel<BB, Y>                                                                       \
            <<<g, MV_THREADS, 0, s>>>(w, ldw, xx, ldx, yy, ldy, (int)M, (int)Kd, tpr, accumulate); \
        break;
        MV_CASE(1)
        MV_CASE(2)
        MV_CASE(3)
        MV_CASE(4)
        MV_CASE(5)
        MV_CASE(6)
        MV_CASE(7)
        MV_CASE(8)
#undef MV_CASE
    }
    FMB_LAUNCH_CHECK(c);
}

extern "C" void fmb_k_matvec(const fmb_cuda_ctx *c,
                             size_t B,
                             size_t M,
                             size_t Kd,
                             const void *W,
                             size_t ldw,
                             const void *x,
                             size_t ldx,
                             fmb_kdt xt,
                             void *y,
                             size_t ldy,
                             fmb_kdt yt,
                             int accumulate)
{
    FMB_ASSERT(fmb_k_matvec_supported(B, Kd, ldw, xt));
    FMB_ASSERT(ldx % 8 == 0 && ((uintptr_t)W & 15) == 0 && ((uintptr_t)x & 15) == 0);
    FMB_ASSERT(M <= INT32_MAX && Kd <= INT32_MAX);
    if (M == 0)
        return;
    if (yt == FMB_KDT_F32)
        matvec_launch<float>(c, B, M, Kd, W, ldw, x, ldx, y, ldy, accumulate);
    else if (yt == FMB_KDT_BF16)
        matvec_launch<__nv_bfloat16>(c, B, M, Kd, W, ldw, x, ldx, y, ldy, accumulate);
    else
        FMB_ASSERTF(0, "fmb_k_matvec: unsupported output type %d", (int)yt);
}
