/*
 * k_ctx: the CUDA context (stream, cuBLAS and cublasLt handles, workspace, device limits, the
 * kernel choices), the error reports, memory, graph and event helpers. Every CUDA call is
 * checked. The kernels live by family in the other k_*.cu files; GEMM in k_gemm.cu.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/k_blas.cuh"
#include "kernels/k_common.cuh"

// --- errors ---------------------------------------------------------------------------------

// cublasGetStatusString lives in the library, which may be what failed to load.
static const char *blas_status_name(int rc)
{
    switch (rc) {
    case CUBLAS_STATUS_NOT_INITIALIZED:
        return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED:
        return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE:
        return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH:
        return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR:
        return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED:
        return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR:
        return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED:
        return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR:
        return "CUBLAS_STATUS_LICENSE_ERROR";
    default:
        return "cuBLAS error";
    }
}

extern "C" void
fmb_cuda_die(const char *file, int line, const char *func, const char *stmt, int rc, int is_cublas)
{
    const char *msg = is_cublas ? blas_status_name(rc) : cudaGetErrorString((cudaError_t)rc);
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
                fmb_cuda_die(file, line, func, "kernel (debug-sync)", (int)e, 0);
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

extern "C" void fmb_cuda_ctx_bind(const fmb_cuda_ctx *c)
{
    FMB_CUDA_CHECK(cudaSetDevice(c->device));
}

extern "C" fmb_status
fmb_cuda_ctx_init(fmb_cuda_ctx *c, int device, const fmb_kernel_opts *opts, fmb_err *err)
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
    fmb_blas_api *blas = (fmb_blas_api *)malloc(sizeof *blas);
    FMB_ASSERT(blas);
    fmb_status bs = fmb_blas_load(blas, NULL, err);
    if (bs) {
        free(blas);
        return bs;
    }
    c->blas = blas;
    FMB_CUDA_CHECK(cudaSetDevice(device));
    c->device = device;
    c->sm_count = pr.multiProcessorCount;
    c->cc_major = pr.major;
    c->cc_minor = pr.minor;
    c->smem_per_block_optin = pr.sharedMemPerBlockOptin;
    c->total_mem = pr.totalGlobalMem;
    snprintf(c->name, sizeof c->name, "%s", pr.name);
    const fmb_kernel_opts ko = opts ? *opts : (fmb_kernel_opts){0};
    c->debug_sync = ko.debug_sync != 0;
#ifdef FMB_DEBUG_SYNC
    c->debug_sync = 1;
#endif
    c->scan_algo = ko.scan;
    c->matvec_algo = ko.matvec;
    c->gemm_algo = ko.gemm;
    c->gemm_verbose = ko.gemm_verbose;
    c->smem_cap = ko.smem_cap == FMB_SMEM_CAP_SM86 ? FMB_SMEM_SM86_BYTES : 0;
    cudaStream_t s;
    FMB_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    c->stream = s;
    cublasHandle_t h;
    FMB_CUBLAS_CHECK(FMB_BLAS(c)->cublasCreate(&h));
    FMB_CUBLAS_CHECK(FMB_BLAS(c)->cublasSetStream(h, s));
    // fp32 GEMMs stay fp32 (no TF32): --dtype f32 exists for tight comparisons.
    FMB_CUBLAS_CHECK(FMB_BLAS(c)->cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
    c->cublas = h;
    c->cublas_ws_bytes = (size_t)32 << 20; // Hopper: 32 MiB recommended by cuBLAS docs
    c->cublas_ws = fmb_cuda_malloc(c->cublas_ws_bytes);
    FMB_CUBLAS_CHECK(FMB_BLAS(c)->cublasSetWorkspace(h, c->cublas_ws, c->cublas_ws_bytes));
    cublasLtHandle_t lt;
    FMB_CUBLAS_CHECK(FMB_BLAS(c)->cublasLtCreate(&lt));
    c->lt = lt;
    // Programmatic Dependent Launch (k_common.cuh): on where it works unless turned off
    c->pdl = ko.pdl == FMB_PDL_OFF ? 0 : pdl_supported(c);
    return FMB_OK;
}

extern "C" void fmb_cuda_ctx_free(fmb_cuda_ctx *c)
{
    if (!c)
        return;
    if (c->stream)
        FMB_CUDA_CHECK(cudaStreamSynchronize(FMB_STREAM(c)));
    if (c->cublas)
        FMB_CUBLAS_CHECK(FMB_BLAS(c)->cublasDestroy((cublasHandle_t)c->cublas));
    c->cublas = NULL;
    fmb_k_gemm_plans_free(c);
    if (c->lt)
        FMB_CUBLAS_CHECK(FMB_BLAS(c)->cublasLtDestroy((cublasLtHandle_t)c->lt));
    c->lt = NULL;
    fmb_cuda_free(c->cublas_ws);
    c->cublas_ws = NULL;
    free(c->blas);
    c->blas = NULL;
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
