/*
 * k_common: internal helpers shared by the kernels/k_*.cu files (not part of the C facade):
 * the launch check, type conversions between fmb_kdt element types, and small reductions.
 */
#ifndef FMB_K_COMMON_CUH
#define FMB_K_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels/kernels.h"

#define FMB_STREAM(c) ((cudaStream_t)(c)->stream)

/* After every launch: the launch error, and with debug_sync a synchronisation so that an
 * asynchronous fault is reported here (skipped while the stream is being captured). */
void fmb_k_after_launch(const fmb_cuda_ctx *c, const char *file, int line, const char *func);
#define FMB_LAUNCH_CHECK(c) fmb_k_after_launch((c), __FILE__, __LINE__, __func__)

__device__ __forceinline__ float fmb_ld(const float *p)
{
    return *p;
}
__device__ __forceinline__ float fmb_ld(const __nv_bfloat16 *p)
{
    return __bfloat162float(*p);
}
__device__ __forceinline__ float fmb_ld(const __half *p)
{
    return __half2float(*p);
}
__device__ __forceinline__ void fmb_st(float *p, float v)
{
    *p = v;
}
__device__ __forceinline__ void fmb_st(__nv_bfloat16 *p, float v)
{
    *p = __float2bfloat16_rn(v);
}
__device__ __forceinline__ void fmb_st(__half *p, float v)
{
    *p = __float2half_rn(v);
}

__device__ __forceinline__ float fmb_silu(float x)
{
    return x / (1.0f + expf(-x));
}

/* torch.nn.functional.softplus(x) with beta 1, threshold 20. */
__device__ __forceinline__ float fmb_softplus(float x)
{
    return x > 20.0f ? x : log1pf(expf(x));
}

__device__ __forceinline__ float fmb_warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Sum over a block of blockDim.x (multiple of 32, ≤ 1024) threads; every thread gets it.
 * sh: 32 floats of shared memory. */
__device__ __forceinline__ float fmb_block_sum(float v, float *sh)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = fmb_warp_sum(v);
    __syncthreads();
    if (lane == 0)
        sh[w] = v;
    __syncthreads();
    float r = lane < nw ? sh[lane] : 0.0f;
    return fmb_warp_sum(r);
}

/* Dispatch an fmb_kdt to a C++ type T inside a lambda-free switch. */
#define FMB_DISPATCH_ACT(dt, T, ...)                                                               \
    do {                                                                                           \
        switch (dt) {                                                                              \
        case FMB_KDT_F32: {                                                                        \
            typedef float T;                                                                       \
            __VA_ARGS__;                                                                           \
        } break;                                                                                   \
        case FMB_KDT_BF16: {                                                                       \
            typedef __nv_bfloat16 T;                                                               \
            __VA_ARGS__;                                                                           \
        } break;                                                                                   \
        default:                                                                                   \
            FMB_ASSERTF(0, "unsupported activation type %d", (int)(dt));                           \
        }                                                                                          \
    } while (0)

static inline unsigned fmb_cdiv(size_t a, size_t b)
{
    size_t r = (a + b - 1) / b;
    FMB_ASSERT(r <= 0x7fffffffu);
    return (unsigned)r;
}

#endif
