/*
 * k_common: internal helpers shared by the kernels/k_*.cu files (not part of the C facade):
 * the launch check, Programmatic Dependent Launch, type conversions between fmb_kdt element
 * types, and small reductions.
 */
#ifndef FMB_K_COMMON_CUH
#define FMB_K_COMMON_CUH

#include <cstdio>
#include <cstdlib>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <utility>

#include "kernels/kernels.h"

#define FMB_STREAM(c) ((cudaStream_t)(c)->stream)

/* After every launch: the launch error, and with debug_sync a synchronisation so that an
 * asynchronous fault is reported here (skipped while the stream is being captured). */
void fmb_k_after_launch(const fmb_cuda_ctx *c, const char *file, int line, const char *func);
#define FMB_LAUNCH_CHECK(c) fmb_k_after_launch((c), __FILE__, __LINE__, __func__)

/* Frees the row-invariant GEMM plan cache c->gemm_plans (k_gemm.cu); fmb_cuda_ctx_free calls it. */
void fmb_k_gemm_plans_free(fmb_cuda_ctx *c);

/* --- Programmatic Dependent Launch (PDL, sm_90+) ---------------------------------------------
 *
 * A kernel launched through FMB_LAUNCH_PDL while c->pdl is set (cc >= 9.0, kernels built for
 * sm_90+, not turned off by the kernel option pdl=off; k_ctx.cu) may start before the kernel ahead
 * of it in the stream has finished: its blocks get resident and run up to fmb_pdl_wait(), which
 * returns once every prerequisite grid has completed and its memory is visible. That hides the
 * launch latency, and what a kernel does before the wait (e.g. a matvec's first weight loads)
 * overlaps the tail of the kernel before it. The rules, for every kernel launched this way:
 *
 *  1. Call fmb_pdl_wait() before reading or writing any memory that another kernel, memcpy or
 *     memset of the stream writes or reads (activations, states, outputs, the plan, ids). Only
 *     data that no operation still in flight writes may be read before it: weights and norm
 *     gains, written at load time and followed by a stream synchronisation. (Tests that make
 *     weights with a kernel must synchronise before the first PDL kernel that reads them.)
 *  2. Every thread calls fmb_pdl_wait(), before any early return. The wait covers only the
 *     grid immediately ahead; this grid's completion then implies that grid's completion, so
 *     the ordering stays transitive along the stream (A -> B -> C: C's wait on B covers A).
 *  3. fmb_pdl_trigger() may be called anywhere, as early as wanted: the next PDL kernel is
 *     launched only when all blocks of this grid have triggered or exited, and its own
 *     fmb_pdl_wait() still waits for this grid's completion and memory flush, so correctness
 *     never depends on where (or whether) the trigger is; only the overlap does.
 *
 * Kernels launched the plain way (<<<>>>, cuBLAS) are unaffected: a plain launch after a PDL
 * kernel waits for its completion as usual, and a PDL kernel after a plain one is held in
 * fmb_pdl_wait() until that one completes (a plain kernel triggers implicitly as its blocks
 * exit). Memcpy and memset nodes always fully serialise. So adoption can be partial: each
 * kernel converted on its own, provided it follows rules 1 and 2. In CUDA graph capture the
 * attribute becomes a programmatic edge between the two kernel nodes (CUDA 12.3+).
 * On sm_80..89 both helpers compile to nothing (and c->pdl is 0 there). */
__device__ __forceinline__ void fmb_pdl_wait()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void fmb_pdl_trigger()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

/* Launches kernel<<<grid, block, smem, c's stream>>>(args...) through cudaLaunchKernelEx, with
 * cudaLaunchAttributeProgrammaticStreamSerialization = 1 when c->pdl, else without attributes
 * (an ordinary launch). Arguments are converted to the kernel's parameter types as with
 * <<<>>>. A launch error aborts here; the caller still runs FMB_LAUNCH_CHECK (debug sync). */
/* smem-cap (kopts.h): aborts at file:line, naming the kernel, when its static shared memory
 * plus dyn bytes exceed c->smem_cap (a test of the 24 GB cards' 99 KB a block on a larger
 * GPU: every kernel must pick a path that fits). Nothing when there is no cap. */
template <typename... KArgs>
static inline void fmb_k_smem_check(const fmb_cuda_ctx *c,
                                    const char *file,
                                    int line,
                                    const char *func,
                                    void (*kernel)(KArgs...),
                                    size_t dyn)
{
    if (!c->smem_cap)
        return;
    cudaFuncAttributes fa;
    cudaError_t e = cudaFuncGetAttributes(&fa, (const void *)kernel);
    if (e != cudaSuccess)
        fmb_cuda_die(file, line, func, "cudaFuncGetAttributes", (int)e, 0);
    if (fa.sharedSizeBytes + dyn > c->smem_cap) {
        fprintf(stderr,
                "%s:%d: %s: a kernel takes %zu + %zu bytes of shared memory a block, over "
                "the cap of %zu (smem-cap)\n",
                file, line, func, (size_t)fa.sharedSizeBytes, dyn, c->smem_cap);
        abort();
    }
}
/* FMB_SMEM_CHECK(c, kernel, dyn): the same check before a <<<>>> launch. */
#define FMB_SMEM_CHECK(c, kernel, dyn)                                                             \
    fmb_k_smem_check((c), __FILE__, __LINE__, __func__, (kernel), (dyn))

template <typename... KArgs, typename... Args>
static inline void fmb_k_launch(const fmb_cuda_ctx *c,
                                const char *file,
                                int line,
                                const char *func,
                                void (*kernel)(KArgs...),
                                dim3 grid,
                                dim3 block,
                                size_t smem,
                                Args &&...args)
{
    fmb_k_smem_check(c, file, line, func, kernel, smem);
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = FMB_STREAM(c);
    cfg.attrs = c->pdl ? at : NULL;
    cfg.numAttrs = c->pdl ? 1 : 0;
    cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
    if (e != cudaSuccess)
        fmb_cuda_die(file, line, func, "kernel launch (cudaLaunchKernelEx)", (int)e, 0);
}

/* FMB_LAUNCH_PDL(c, kernel, grid, block, smem, args...): the kernel must follow the rules above
 * (template kernels may be named with their commas: the macro forwards everything). */
#define FMB_LAUNCH_PDL(c, ...) fmb_k_launch((c), __FILE__, __LINE__, __func__, __VA_ARGS__)

/* cp.async global → shared of 16, 8 or 4 bytes; when !ok nothing is read and zeros land. */
template <int BYTES> __device__ __forceinline__ void cp_async(void *sdst, const void *gsrc, bool ok)
{
    const unsigned s = (unsigned)__cvta_generic_to_shared(sdst);
    if (BYTES == 16)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gsrc),
                     "r"(ok ? 16 : 0));
    else
        asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(s), "l"(gsrc),
                     "n"(BYTES), "r"(ok ? BYTES : 0));
}
__device__ __forceinline__ void cp_async_commit()
{
    asm volatile("cp.async.commit_group;\n" ::);
}
__device__ __forceinline__ void cp_async_wait_all()
{
    asm volatile("cp.async.wait_all;\n" ::: "memory");
}
/* Waits until at most N of this thread's committed cp.async groups are still in flight. */
template <int N> __device__ __forceinline__ void cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

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

/* silu(x) = x / (1 + e^-x) with exp2 on the special-function unit and the fast reciprocal
 * division (a few ulp; 0 where e^-x overflows, its limit). The conv kernels all use it, so
 * their results stay bit-identical to each other (why not expf: docs/DECISIONS.md). */
__device__ __forceinline__ float fmb_silu(float x)
{
    float e;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(e) : "f"(-x * 1.4426950408889634f));
    return __fdividef(x, 1.0f + e);
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

/* The weightless rms norms of one x_proj row S = [δ (R) | B (N) | C (N)], N ≤ 16, by one warp
 * (every lane calls it): returns dt's per-token scale 1/rms(δ) (1 without norm) in every lane,
 * and sets *bc in lane 16·half + j to the normalised B_j (half 0) or C_j (half 1), 0 for
 * j ≥ N. ssm_params_kernel (k_norm.cu) and the decode scan step (k_scan.cu) both call it, so
 * they give the same bits. */
template <typename S>
__device__ __forceinline__ float
fmb_ssm_row(const S *row, int R, int N, float eps, int norm, int lane, float *bc)
{
    float ss = 0.0f;
    for (int i = lane; i < R; i += 32) {
        float v = fmb_ld(row + i);
        ss += v * v;
    }
    ss = fmb_warp_sum(ss);
    const float dsc = norm ? 1.0f / sqrtf(ss / (float)R + eps) : 1.0f; // rms_forward(time_step)
    int half = lane >> 4, j = lane & 15;
    float v = j < N ? fmb_ld(row + R + half * N + j) : 0.0f;
    float s2 = v * v;
    for (int o = 8; o > 0; o >>= 1)
        s2 += __shfl_xor_sync(0xffffffffu, s2, o);
    float inv = norm ? 1.0f / sqrtf(s2 / (float)N + eps) : 1.0f; // rms_forward(B), (C)
    *bc = v * inv;
    return dsc;
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
