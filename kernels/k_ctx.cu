/*
 * k_ctx: the CUDA context (stream, cuBLAS handle and workspace, device limits), memory and
 * graph helpers, element-type conversion and initialisation kernels, the embedding gather,
 * the cuBLAS GEMM wrappers (and the row-invariant cublasLt one) and the varlen chunk plan. Every
 * CUDA call is checked.
 */
#include <cublasLt.h>
#include <cublas_v2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/k_common.cuh"

// --- errors ---------------------------------------------------------------------------------

extern "C" void
fmb_cuda_die(const char *file, int line, const char *func, const char *stmt, int rc, int is_cublas)
{
    const char *msg =
        is_cublas ? cublasGetStatusString((cublasStatus_t)rc) : cudaGetErrorString((cudaError_t)rc);
    fmb_die(file, line, func, "%s failed: %s (%d)", stmt, msg, rc);
}

void fmb_k_after_launch(const fmb_cuda_ctx *c, const char *file, int line, const char *func)
{
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        fmb_cuda_die(file, line, func, "kernel launch", (int)e, 0);
    if (c->debug_sync) {
        cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
        FMB_CUDA_CHECK(cudaStreamIsCapturing(FMB_STREAM(c), &cs));
        if (cs == cudaStreamCaptureStatusNone) {
            e = cudaStreamSynchronize(FMB_STREAM(c));
            if (e != cudaSuccess)
                fmb_cuda_die(file, line, func, "kernel (FMB_DEBUG_SYNC)", (int)e, 0);
        }
    }
}

extern "C" size_t fmb_kdt_size(fmb_kdt t)
{
    return t == FMB_KDT_F32 ? 4 : 2;
}

// --- context --------------------------------------------------------------------------------

extern "C" int fmb_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError(); // clear the sticky-free error of a missing driver
        return 0;
    }
    return n;
}

// Writes 1 when the code that runs on this device was compiled for sm_90+ (so fmb_pdl_wait is
// a real griddepcontrol.wait), 0 when it is sm_80..89 code (e.g. JIT from older PTX).
static __global__ void pdl_probe_kernel(int *out)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    *out = 1;
#else
    *out = 0;
#endif
}

// PDL is safe only when the kernels really wait (k_common.cuh): a cc 9.0+ device running code
// built for sm_90+. A device without a matching kernel image leaves it off (the first real
// launch then reports the missing image as before).
static int pdl_supported(const fmb_cuda_ctx *c)
{
    if (c->cc_major < 9)
        return 0;
    int *d = (int *)c->cublas_ws, h = 0;
    pdl_probe_kernel<<<1, 1, 0, FMB_STREAM(c)>>>(d);
    if (cudaGetLastError() != cudaSuccess)
        return 0;
    FMB_CUDA_CHECK(cudaMemcpyAsync(&h, d, sizeof h, cudaMemcpyDeviceToHost, FMB_STREAM(c)));
    FMB_CUDA_CHECK(cudaStreamSynchronize(FMB_STREAM(c)));
    return h == 1;
}

extern "C" fmb_status fmb_cuda_ctx_init(fmb_cuda_ctx *c, int device, fmb_err *err)
{
    memset(c, 0, sizeof *c);
    int n = fmb_cuda_device_count();
    if (device < 0 || device >= n)
        return fmb_fail(err, FMB_EUNSUP, "no CUDA device %d (%d found)", device, n);
    cudaDeviceProp pr;
    FMB_CUDA_CHECK(cudaGetDeviceProperties(&pr, device));
    if (pr.major < 8)
        return fmb_fail(err, FMB_EUNSUP, "CUDA device %s has compute capability %d.%d; 8.0+ needed",
                        pr.name, pr.major, pr.minor);
    FMB_CUDA_CHECK(cudaSetDevice(device));
    c->device = device;
    c->sm_count = pr.multiProcessorCount;
    c->cc_major = pr.major;
    c->cc_minor = pr.minor;
    c->smem_per_block_optin = pr.sharedMemPerBlockOptin;
    c->total_mem = pr.totalGlobalMem;
    snprintf(c->name, sizeof c->name, "%s", pr.name);
    const char *ds = getenv("FMB_DEBUG_SYNC");
    c->debug_sync = ds && *ds && strcmp(ds, "0") != 0;
#ifdef FMB_DEBUG_SYNC
    c->debug_sync = 1;
#endif
    const char *sa = getenv("FMB_SCAN");
    c->scan_algo = !sa                        ? FMB_SCAN_AUTO
                   : strcmp(sa, "seg") == 0   ? FMB_SCAN_SEG
                   : strcmp(sa, "quad") == 0  ? FMB_SCAN_QUAD
                   : strcmp(sa, "tile") == 0  ? FMB_SCAN_TILE
                   : strcmp(sa, "tile1") == 0 ? FMB_SCAN_TILE1
                                              : FMB_SCAN_AUTO;
    const char *mv = getenv("FMB_MATVEC");
    c->matvec_algo = !mv                      ? FMB_MATVEC_AUTO
                     : strcmp(mv, "cc") == 0  ? FMB_MATVEC_CC
                     : strcmp(mv, "mma") == 0 ? FMB_MATVEC_MMA
                                              : FMB_MATVEC_AUTO;
    const char *gm = getenv("FMB_GEMM");
    c->gemm_algo = !gm                          ? FMB_GEMM_FIXED
                   : strcmp(gm, "cublas") == 0  ? FMB_GEMM_CUBLAS
                   : strcmp(gm, "fixedws") == 0 ? FMB_GEMM_FIXEDWS
                                                : FMB_GEMM_FIXED;
    cudaStream_t s;
    FMB_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    c->stream = s;
    cublasHandle_t h;
    FMB_CUBLAS_CHECK(cublasCreate(&h));
    FMB_CUBLAS_CHECK(cublasSetStream(h, s));
    // fp32 GEMMs stay fp32 (no TF32): --dtype f32 exists for tight comparisons.
    FMB_CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
    c->cublas = h;
    c->cublas_ws_bytes = (size_t)32 << 20; // Hopper: 32 MiB recommended by cuBLAS docs
    c->cublas_ws = fmb_cuda_malloc(c->cublas_ws_bytes);
    FMB_CUBLAS_CHECK(cublasSetWorkspace(h, c->cublas_ws, c->cublas_ws_bytes));
    cublasLtHandle_t lt;
    FMB_CUBLAS_CHECK(cublasLtCreate(&lt));
    c->lt = lt;
    // Programmatic Dependent Launch (k_common.cuh): on where it works, FMB_PDL=0 turns it off
    const char *pd = getenv("FMB_PDL");
    c->pdl = (pd && strcmp(pd, "0") == 0) ? 0 : pdl_supported(c);
    return FMB_OK;
}

static void gemm_plans_free(fmb_cuda_ctx *c);

extern "C" void fmb_cuda_ctx_free(fmb_cuda_ctx *c)
{
    if (!c)
        return;
    if (c->stream)
        FMB_CUDA_CHECK(cudaStreamSynchronize(FMB_STREAM(c)));
    if (c->cublas)
        FMB_CUBLAS_CHECK(cublasDestroy((cublasHandle_t)c->cublas));
    c->cublas = NULL;
    gemm_plans_free(c);
    if (c->lt)
        FMB_CUBLAS_CHECK(cublasLtDestroy((cublasLtHandle_t)c->lt));
    c->lt = NULL;
    fmb_cuda_free(c->cublas_ws);
    c->cublas_ws = NULL;
    if (c->stream)
        FMB_CUDA_CHECK(cudaStreamDestroy(FMB_STREAM(c)));
    c->stream = NULL;
}

extern "C" void fmb_cuda_sync(const fmb_cuda_ctx *c)
{
    FMB_CUDA_CHECK(cudaStreamSynchronize(FMB_STREAM(c)));
}

extern "C" void fmb_cuda_mem_info(size_t *free_bytes, size_t *total_bytes)
{
    size_t f = 0, t = 0;
    FMB_CUDA_CHECK(cudaMemGetInfo(&f, &t));
    if (free_bytes)
        *free_bytes = f;
    if (total_bytes)
        *total_bytes = t;
}

// --- memory ---------------------------------------------------------------------------------

extern "C" void *fmb_cuda_try_malloc(size_t bytes)
{
    void *p = NULL;
    if (bytes == 0)
        bytes = 256;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
        (void)cudaGetLastError();
        return NULL;
    }
    return p;
}

extern "C" void *fmb_cuda_malloc(size_t bytes)
{
    void *p = NULL;
    FMB_CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 256));
    return p;
}

extern "C" void fmb_cuda_free(void *p)
{
    if (p)
        FMB_CUDA_CHECK(cudaFree(p));
}

extern "C" void *fmb_cuda_host_alloc(size_t bytes)
{
    void *p = NULL;
    FMB_CUDA_CHECK(cudaMallocHost(&p, bytes ? bytes : 256));
    return p;
}

extern "C" void fmb_cuda_host_free(void *p)
{
    if (p)
        FMB_CUDA_CHECK(cudaFreeHost(p));
}

extern "C" void fmb_cuda_h2d(const fmb_cuda_ctx *c, void *dst, const void *src, size_t bytes)
{
    if (bytes)
        FMB_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, FMB_STREAM(c)));
}

extern "C" void fmb_cuda_d2h(const fmb_cuda_ctx *c, void *dst, const void *src, size_t bytes)
{
    if (bytes)
        FMB_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, FMB_STREAM(c)));
}

extern "C" void fmb_cuda_d2d(const fmb_cuda_ctx *c, void *dst, const void *src, size_t bytes)
{
    if (bytes)
        FMB_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, FMB_STREAM(c)));
}

extern "C" void fmb_cuda_memset(const fmb_cuda_ctx *c, void *dst, int v, size_t bytes)
{
    if (bytes)
        FMB_CUDA_CHECK(cudaMemsetAsync(dst, v, bytes, FMB_STREAM(c)));
}

// --- graphs and events ----------------------------------------------------------------------

extern "C" void fmb_cuda_graph_begin(const fmb_cuda_ctx *c)
{
    FMB_CUDA_CHECK(cudaStreamBeginCapture(FMB_STREAM(c), cudaStreamCaptureModeThreadLocal));
}

extern "C" void *fmb_cuda_graph_end(const fmb_cuda_ctx *c)
{
    cudaGraph_t g;
    cudaGraphExec_t ex;
    FMB_CUDA_CHECK(cudaStreamEndCapture(FMB_STREAM(c), &g));
    FMB_CUDA_CHECK(cudaGraphInstantiate(&ex, g, 0));
    FMB_CUDA_CHECK(cudaGraphDestroy(g));
    return (void *)ex;
}

extern "C" void fmb_cuda_graph_launch(const fmb_cuda_ctx *c, void *exec)
{
    FMB_CUDA_CHECK(cudaGraphLaunch((cudaGraphExec_t)exec, FMB_STREAM(c)));
    if (c->debug_sync)
        FMB_CUDA_CHECK(cudaStreamSynchronize(FMB_STREAM(c)));
}

extern "C" void fmb_cuda_graph_free(void *exec)
{
    if (exec)
        FMB_CUDA_CHECK(cudaGraphExecDestroy((cudaGraphExec_t)exec));
}

extern "C" void *fmb_cuda_event_new(void)
{
    cudaEvent_t e;
    FMB_CUDA_CHECK(cudaEventCreate(&e));
    return (void *)e;
}

extern "C" void fmb_cuda_event_free(void *ev)
{
    if (ev)
        FMB_CUDA_CHECK(cudaEventDestroy((cudaEvent_t)ev));
}

extern "C" void fmb_cuda_event_record(const fmb_cuda_ctx *c, void *ev)
{
    FMB_CUDA_CHECK(cudaEventRecord((cudaEvent_t)ev, FMB_STREAM(c)));
}

extern "C" float fmb_cuda_event_ms(void *start, void *stop)
{
    float ms = 0;
    FMB_CUDA_CHECK(cudaEventSynchronize((cudaEvent_t)stop));
    FMB_CUDA_CHECK(cudaEventElapsedTime(&ms, (cudaEvent_t)start, (cudaEvent_t)stop));
    return ms;
}

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

// --- GEMM -----------------------------------------------------------------------------------

static cudaDataType_t cuda_type(fmb_kdt t)
{
    switch (t) {
    case FMB_KDT_F32:
        return CUDA_R_32F;
    case FMB_KDT_BF16:
        return CUDA_R_16BF;
    case FMB_KDT_F16:
        return CUDA_R_16F;
    }
    return CUDA_R_32F;
}

extern "C" void fmb_k_gemm(const fmb_cuda_ctx *c,
                           size_t T,
                           size_t M,
                           size_t Kd,
                           const void *A,
                           size_t lda,
                           const void *W,
                           size_t ldw,
                           fmb_kdt ab,
                           void *C,
                           size_t ldc,
                           fmb_kdt ct,
                           float beta)
{
    if (T == 0 || M == 0)
        return;
    FMB_ASSERT(T <= INT32_MAX && M <= INT32_MAX && Kd <= INT32_MAX);
    FMB_ASSERT(lda >= Kd && ldw >= Kd && ldc >= M);
    float alpha = 1.0f;
    // Row-major C[T,M] = A[T,K]·W[M,K]ᵀ is column-major Cᵀ[M,T] = Wᵀ'·A' with W read as a
    // column-major [K,M] matrix (transposed) and A as a column-major [K,T] one.
    FMB_CUBLAS_CHECK(cublasGemmEx((cublasHandle_t)c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)M,
                                  (int)T, (int)Kd, &alpha, W, cuda_type(ab), (int)ldw, A,
                                  cuda_type(ab), (int)lda, &beta, C, cuda_type(ct), (int)ldc,
                                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (c->debug_sync)
        FMB_LAUNCH_CHECK(c);
}

// Row-invariant GEMM (kernels.h explains why). A plan holds the operation, the three layouts
// (their column count is set to T per call) and the one algorithm every T runs with.
#define GEMM_PLANS_MAX 32
struct gemm_plan {
    size_t M, Kd, lda, ldw, ldc;
    fmb_kdt ab, ct;
    int beta_nz;
    int lt_ok; /* 0: no split-K-free algorithm was found; fmb_k_gemm is used instead */
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t lw, la, lc;
    cublasLtMatmulAlgo_t algo;
};
struct gemm_plans {
    int n;
    gemm_plan e[GEMM_PLANS_MAX];
};

static void gemm_plans_free(fmb_cuda_ctx *c)
{
    gemm_plans *ps = (gemm_plans *)c->gemm_plans;
    if (!ps)
        return;
    for (int i = 0; i < ps->n; i++) {
        gemm_plan *g = &ps->e[i];
        FMB_CUBLAS_CHECK(cublasLtMatmulDescDestroy(g->op));
        FMB_CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(g->lw));
        FMB_CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(g->la));
        FMB_CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(g->lc));
    }
    free(ps);
    c->gemm_plans = NULL;
}

static uint32_t algo_cfg_u32(const cublasLtMatmulAlgo_t *a, cublasLtMatmulAlgoConfigAttributes_t at)
{
    // attributes are 2 or 4 bytes wide: ask for the width, read into a zeroed uint32
    // (little-endian, so a uint16 lands in the low half)
    uint32_t v = 0;
    size_t w = 0;
    FMB_CUBLAS_CHECK(cublasLtMatmulAlgoConfigGetAttribute(a, at, NULL, 0, &w));
    FMB_ASSERT(w <= sizeof v);
    FMB_CUBLAS_CHECK(cublasLtMatmulAlgoConfigGetAttribute(a, at, &v, w, &w));
    return v;
}

static gemm_plan *gemm_plan_get(const fmb_cuda_ctx *c,
                                size_t M,
                                size_t Kd,
                                size_t lda,
                                size_t ldw,
                                size_t ldc,
                                fmb_kdt ab,
                                fmb_kdt ct,
                                int beta_nz,
                                size_t plan_rows)
{
    // the context is const for the launchers; the cache it owns is not
    fmb_cuda_ctx *mc = (fmb_cuda_ctx *)c;
    if (!mc->gemm_plans)
        mc->gemm_plans = fmb_xcalloc(1, sizeof(gemm_plans));
    gemm_plans *ps = (gemm_plans *)mc->gemm_plans;
    for (int i = 0; i < ps->n; i++) {
        gemm_plan *g = &ps->e[i];
        if (g->M == M && g->Kd == Kd && g->lda == lda && g->ldw == ldw && g->ldc == ldc &&
            g->ab == ab && g->ct == ct && g->beta_nz == beta_nz)
            return g;
    }
    FMB_ASSERTF(ps->n < GEMM_PLANS_MAX, "fmb_k_gemm_inv: more than %d GEMM shapes", GEMM_PLANS_MAX);
    gemm_plan *g = &ps->e[ps->n++];
    memset(g, 0, sizeof *g);
    g->M = M, g->Kd = Kd, g->lda = lda, g->ldw = ldw, g->ldc = ldc;
    g->ab = ab, g->ct = ct, g->beta_nz = beta_nz;
    // column-major view as in fmb_k_gemm: Cᵀ[M, T] = (W as [Kd, M])ᵀ · (A as [Kd, T])
    FMB_CUBLAS_CHECK(cublasLtMatmulDescCreate(&g->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    FMB_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    FMB_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    FMB_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&g->lw, cuda_type(ab), Kd, M, (int64_t)ldw));
    FMB_CUBLAS_CHECK(
        cublasLtMatrixLayoutCreate(&g->la, cuda_type(ab), Kd, plan_rows, (int64_t)lda));
    FMB_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&g->lc, cuda_type(ct), M, plan_rows, (int64_t)ldc));
    cublasLtMatmulPreference_t pref;
    FMB_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t ws = c->gemm_algo == FMB_GEMM_FIXEDWS ? (uint64_t)c->cublas_ws_bytes : 0;
    uint32_t red = CUBLASLT_REDUCTION_SCHEME_NONE, al = 16;
    FMB_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    FMB_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &red, sizeof red));
    // the calls' pointers are only promised 16-byte aligned (head tiles, column offsets)
    const cublasLtMatmulPreferenceAttributes_t als[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (int i = 0; i < 4; i++)
        FMB_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, als[i], &al, sizeof al));
    cublasLtMatmulHeuristicResult_t r[8];
    int nr = 0;
    FMB_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic((cublasLtHandle_t)c->lt, g->op, g->lw, g->la,
                                                    g->lc, g->lc, pref, 8, r, &nr));
    FMB_CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    for (int i = 0; i < nr && !g->lt_ok; i++) {
        // the mask already excludes split-K; checked again so that a library whose heuristic
        // ignores the mask cannot bring back a T-dependent reduction
        if (r[i].state != CUBLAS_STATUS_SUCCESS ||
            algo_cfg_u32(&r[i].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM) > 1 ||
            algo_cfg_u32(&r[i].algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME) !=
                CUBLASLT_REDUCTION_SCHEME_NONE)
            continue;
        g->algo = r[i].algo;
        g->lt_ok = 1;
    }
    const char *v = getenv("FMB_GEMM_VERBOSE");
    if (v && *v && strcmp(v, "0") != 0) {
        if (g->lt_ok)
            fprintf(stderr,
                    "gemm_inv M=%zu K=%zu ld=%zu/%zu/%zu ab=%d ct=%d rows=%zu: %d candidates; "
                    "algo id %u tile %u splitk %u red %u swizzle %u custom %u stages %u "
                    "cluster %u\n",
                    M, Kd, lda, ldw, ldc, (int)ab, (int)ct, plan_rows, nr,
                    algo_cfg_u32(&g->algo, CUBLASLT_ALGO_CONFIG_ID),
                    algo_cfg_u32(&g->algo, CUBLASLT_ALGO_CONFIG_TILE_ID),
                    algo_cfg_u32(&g->algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM),
                    algo_cfg_u32(&g->algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME),
                    algo_cfg_u32(&g->algo, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING),
                    algo_cfg_u32(&g->algo, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION),
                    algo_cfg_u32(&g->algo, CUBLASLT_ALGO_CONFIG_STAGES_ID),
                    algo_cfg_u32(&g->algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID));
        else
            fprintf(stderr, "gemm_inv M=%zu K=%zu: no split-K-free algorithm (%d candidates)\n", M,
                    Kd, nr);
    }
    if (!g->lt_ok)
        fprintf(stderr,
                "fmbatch: cublasLt offers no split-K-free GEMM for M=%zu K=%zu; using cuBLAS's "
                "default choice (results may depend on the chunk length)\n",
                M, Kd);
    return g;
}

extern "C" void fmb_k_gemm_inv(const fmb_cuda_ctx *c,
                               size_t T,
                               size_t M,
                               size_t Kd,
                               const void *A,
                               size_t lda,
                               const void *W,
                               size_t ldw,
                               fmb_kdt ab,
                               void *C,
                               size_t ldc,
                               fmb_kdt ct,
                               float beta,
                               size_t plan_rows)
{
    if (T == 0 || M == 0)
        return;
    FMB_ASSERT(T <= INT32_MAX && M <= INT32_MAX && Kd <= INT32_MAX && plan_rows >= 1);
    FMB_ASSERT(lda >= Kd && ldw >= Kd && ldc >= M);
    // pointers below the 16-byte alignment the plans were chosen for: the T-dependent path
    int aligned = (((uintptr_t)A | (uintptr_t)W | (uintptr_t)C) & 15) == 0;
    gemm_plan *g = c->gemm_algo == FMB_GEMM_CUBLAS || !aligned
                       ? NULL
                       : gemm_plan_get(c, M, Kd, lda, ldw, ldc, ab, ct, beta != 0.0f, plan_rows);
    if (!g || !g->lt_ok) {
        fmb_k_gemm(c, T, M, Kd, A, lda, W, ldw, ab, C, ldc, ct, beta);
        return;
    }
    uint64_t cols = T;
    FMB_CUBLAS_CHECK(
        cublasLtMatrixLayoutSetAttribute(g->la, CUBLASLT_MATRIX_LAYOUT_COLS, &cols, sizeof cols));
    FMB_CUBLAS_CHECK(
        cublasLtMatrixLayoutSetAttribute(g->lc, CUBLASLT_MATRIX_LAYOUT_COLS, &cols, sizeof cols));
    float alpha = 1.0f;
    FMB_CUBLAS_CHECK(cublasLtMatmul((cublasLtHandle_t)c->lt, g->op, &alpha, W, g->lw, A, g->la,
                                    &beta, C, g->lc, C, g->lc, &g->algo, c->cublas_ws,
                                    c->cublas_ws_bytes, FMB_STREAM(c)));
    if (c->debug_sync)
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

// --- varlen plan ----------------------------------------------------------------------------

static size_t al8(size_t x)
{
    return (x + 7) & ~(size_t)7;
}

extern "C" size_t fmb_k_plan_max_segs(size_t T, size_t nseq, size_t seg_len)
{
    return T / (seg_len ? seg_len : 1) + nseq + 1;
}

extern "C" size_t fmb_k_plan_bytes(size_t T, size_t nseq)
{
    // worst case seg_len = 1: T + nseq segments
    return al8((nseq + 1) * 4) * 2 + al8(T * 4) + al8(nseq) + nseq * sizeof(float *) +
           (T + nseq + 1) * sizeof(fmb_kseg) + 64;
}

extern "C" size_t fmb_k_scan_seg_len(const fmb_cuda_ctx *c, size_t T, size_t E, size_t nseq)
{
    (void)nseq;
    // Aim at ~1024 threads per SM (one thread = one channel × one segment); segments
    // shorter than 128 tokens spend more on per-segment setup and the combine than they gain
    // (H200, E = 8192, T = 4096: 32-token segments 28.5 µs/token, 128: 11.5, 256: 10.2).
    size_t target = (size_t)(c ? c->sm_count : 132) * 1024;
    size_t L = E ? (T * E + target - 1) / target : T;
    L = (L + 63) & ~(size_t)63;
    if (L < 128)
        L = 128;
    if (L > 512)
        L = 512;
    return L;
}

extern "C" void fmb_k_plan_build(fmb_kplan *p,
                                 void *hblob,
                                 void *dblob,
                                 size_t T,
                                 int nseq,
                                 const int32_t *seq_start,
                                 const uint8_t *has_state,
                                 float *const *state,
                                 size_t seg_len)
{
    FMB_ASSERT(nseq >= 1 && seg_len >= 1);
    FMB_ASSERT(seq_start[0] == 0 && (size_t)seq_start[nseq] == T);
    char *h = (char *)hblob, *d = (char *)dblob;
    size_t off = 0;
    int32_t *h_start = (int32_t *)(h + off);
    p->seq_start = (const int32_t *)(d + off);
    off += al8(((size_t)nseq + 1) * 4);
    int32_t *h_seg0 = (int32_t *)(h + off);
    p->seq_seg0 = (const int32_t *)(d + off);
    off += al8(((size_t)nseq + 1) * 4);
    int32_t *h_tok = (int32_t *)(h + off);
    p->tok_seq = (const int32_t *)(d + off);
    off += al8(T * 4);
    uint8_t *h_has = (uint8_t *)(h + off);
    p->has_state = (const uint8_t *)(d + off);
    off += al8((size_t)nseq);
    float **h_state = (float **)(h + off);
    p->state = (float *const *)(d + off);
    off += (size_t)nseq * sizeof(float *);
    fmb_kseg *h_segs = (fmb_kseg *)(h + off);
    p->segs = (const fmb_kseg *)(d + off);
    int nsegs = 0, multi = 0;
    p->state_al16 = 1;
    for (int s = 0; s < nseq; s++) {
        int32_t t0 = seq_start[s], t1 = seq_start[s + 1];
        FMB_ASSERT(t1 >= t0);
        if ((uintptr_t)state[s] & 15)
            p->state_al16 = 0;
        h_start[s] = t0;
        h_has[s] = has_state[s] ? 1 : 0;
        h_state[s] = state[s];
        h_seg0[s] = nsegs;
        for (int32_t t = t0; t < t1; t++)
            h_tok[t] = s;
        int32_t len = t1 - t0;
        int first = nsegs;
        for (int32_t a = t0; a < t1 || (len == 0 && a == t0); a += (int32_t)seg_len) {
            int32_t b = a + (int32_t)seg_len < t1 ? a + (int32_t)seg_len : t1;
            fmb_kseg sg = {a, b, s, 0};
            if (nsegs == first)
                sg.flags |= FMB_SEG_FIRST;
            if (b == t1)
                sg.flags |= FMB_SEG_LAST;
            if (!has_state[s])
                sg.flags |= FMB_SEG_FRESH;
            h_segs[nsegs++] = sg;
            if (len == 0)
                break;
        }
        if (nsegs - first > 1)
            multi = 1;
    }
    h_start[nseq] = (int32_t)T;
    h_seg0[nseq] = nsegs;
    p->nseq = nseq;
    p->nsegs = nsegs;
    p->T = T;
    p->multi_seg = multi;
    p->chunk_inv = 0;
    p->bytes = off + (size_t)nsegs * sizeof(fmb_kseg);
    FMB_ASSERT(off + (size_t)nsegs * sizeof(fmb_kseg) <= fmb_k_plan_bytes(T, (size_t)nseq));
}
