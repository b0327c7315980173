/*
 * k_blas: cuBLAS and cublasLt loaded at run time (dlopen), not linked. A CUDA build then starts
 * and runs on the CPU where the CUDA libraries are absent, and commands that never open the
 * CUDA backend (`--version`, `status`, a CPU run) do not map ~200 MB of cuBLAS. The table is
 * loaded once per fmb_cuda_ctx (fmb_cuda_ctx_init; dlopen keeps its own reference count) and
 * every call goes through it: FMB_BLAS(c)->cublasLtMatmul(...). Member names are the
 * functions' names as cublas_v2.h maps them (cublasCreate is cublasCreate_v2), so a call reads
 * like the direct one.
 */
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>

#include "kernels/kernels.h"

// The C entry point of cublasGemmEx (C++ also sees an inline overload taking cudaDataType).
typedef cublasStatus_t (*fmb_blas_gemmex_fn)(cublasHandle_t,
                                             cublasOperation_t,
                                             cublasOperation_t,
                                             int,
                                             int,
                                             int,
                                             const void *,
                                             const void *,
                                             cudaDataType,
                                             int,
                                             const void *,
                                             cudaDataType,
                                             int,
                                             const void *,
                                             void *,
                                             cudaDataType,
                                             int,
                                             cublasComputeType_t,
                                             cublasGemmAlgo_t);

// X(library, function, type): library 0 = libcublas, 1 = libcublasLt.
#define FMB_BLAS_FUNCS(X)                                                                          \
    X(0, cublasCreate, decltype(&::cublasCreate))                                                  \
    X(0, cublasDestroy, decltype(&::cublasDestroy))                                                \
    X(0, cublasSetStream, decltype(&::cublasSetStream))                                            \
    X(0, cublasSetMathMode, decltype(&::cublasSetMathMode))                                        \
    X(0, cublasSetWorkspace, decltype(&::cublasSetWorkspace))                                      \
    X(0, cublasGemmEx, fmb_blas_gemmex_fn)                                                         \
    X(1, cublasLtCreate, decltype(&::cublasLtCreate))                                              \
    X(1, cublasLtDestroy, decltype(&::cublasLtDestroy))                                            \
    X(1, cublasLtMatmul, decltype(&::cublasLtMatmul))                                              \
    X(1, cublasLtMatmulDescCreate, decltype(&::cublasLtMatmulDescCreate))                          \
    X(1, cublasLtMatmulDescDestroy, decltype(&::cublasLtMatmulDescDestroy))                        \
    X(1, cublasLtMatmulDescSetAttribute, decltype(&::cublasLtMatmulDescSetAttribute))              \
    X(1, cublasLtMatrixLayoutCreate, decltype(&::cublasLtMatrixLayoutCreate))                      \
    X(1, cublasLtMatrixLayoutDestroy, decltype(&::cublasLtMatrixLayoutDestroy))                    \
    X(1, cublasLtMatrixLayoutSetAttribute, decltype(&::cublasLtMatrixLayoutSetAttribute))          \
    X(1, cublasLtMatmulPreferenceCreate, decltype(&::cublasLtMatmulPreferenceCreate))              \
    X(1, cublasLtMatmulPreferenceDestroy, decltype(&::cublasLtMatmulPreferenceDestroy))            \
    X(1, cublasLtMatmulPreferenceSetAttribute, decltype(&::cublasLtMatmulPreferenceSetAttribute))  \
    X(1, cublasLtMatmulAlgoGetHeuristic, decltype(&::cublasLtMatmulAlgoGetHeuristic))              \
    X(1, cublasLtMatmulAlgoConfigGetAttribute, decltype(&::cublasLtMatmulAlgoConfigGetAttribute))

struct fmb_blas_api {
    void *lib[2]; // dlopen handles, never closed (cuBLAS keeps process-wide state)
#define FMB_BLAS_MEMBER(l, f, t) t f;
    FMB_BLAS_FUNCS(FMB_BLAS_MEMBER)
#undef FMB_BLAS_MEMBER
};

#define FMB_BLAS(c) ((const fmb_blas_api *)(c)->blas)

// Tier 1: fails (FMB_EUNSUP) naming the library or symbol that could not be loaded. dir: NULL
// searches as the dynamic loader does (LD_LIBRARY_PATH, ld.so.cache); else the folder to load
// the two libraries from.
fmb_status fmb_blas_load(fmb_blas_api *a, const char *dir, fmb_err *err);
