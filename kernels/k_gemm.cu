/*
 * k_gemm: the cuBLAS GEMM wrapper (fmb_k_gemm) and the row-invariant GEMM (fmb_k_gemm_inv):
 * one cublasLt algorithm per shape, chosen once without split-K, kept in a small plan cache
 * the context owns (c->gemm_plans). Chunk-invariant prefill scores rest on it (kernels.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/k_blas.cuh"
#include "kernels/k_common.cuh"

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
    FMB_CUBLAS_CHECK(FMB_BLAS(c)->cublasGemmEx(
        (cublasHandle_t)c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)M, (int)T, (int)Kd, &alpha, W,
        cuda_type(ab), (int)ldw, A, cuda_type(ab), (int)lda, &beta, C, cuda_type(ct), (int)ldc,
        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (c->debug_sync)
        FMB_LAUNCH_CHECK(c);
}

// Row-invariant GEMM (kernels.h explains why). A plan holds the operation, the three layouts
// (their column count is set to T per call) and the one algorithm every T runs with.
#define GEMM_PLANS_MAX 32
struct gemm_plan {
    size_t M, Kd, lda, ldw, ldc, rows; /* rows: the plan rows it was chosen for */
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

void fmb_k_gemm_plans_free(fmb_cuda_ctx *c)
{
    gemm_plans *ps = (gemm_plans *)c->gemm_plans;
    if (!ps)
        return;
    for (int i = 0; i < ps->n; i++) {
        gemm_plan *g = &ps->e[i];
        FMB_CUBLAS_CHECK(FMB_BLAS(c)->cublasLtMatmulDescDestroy(g->op));
        FMB_CUBLAS_CHECK(FMB_BLAS(c)->cublasLtMatrixLayoutDestroy(g->lw));
        FMB_CUBLAS_CHECK(FMB_BLAS(c)->cublasLtMatrixLayoutDestroy(g->la));
        FMB_CUBLAS_CHECK(FMB_BLAS(c)->cublasLtMatrixLayoutDestroy(g->lc));
    }
    free(ps);
    c->gemm_plans = NULL;
}

static uint32_t algo_cfg_u32(const fmb_cuda_ctx *c,
                             const cublasLtMatmulAlgo_t *a,
                             cublasLtMatmulAlgoConfigAttributes_t at)
{
    // attributes are 2 or 4 bytes wide: ask for the width, read into a zeroed uint32
    // (little-endian, so a uint16 lands in the low half)
    uint32_t v = 0;
    size_t w = 0;
    FMB_CUBLAS_CHECK(FMB_BLAS(c)->cublasLtMatmulAlgoConfigGetAttribute(a, at, NULL, 0, &w));
    FMB_ASSERT(w <= sizeof v);
    FMB_CUBLAS_CHECK(FMB_BLAS(c)->cublasLtMatmulAlgoConfigGetAttribute(a, at, &v, w, &w));
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
            g->ab == ab && g->ct == ct && g->beta_nz == beta_nz && g->rows == plan_rows)
            return g;
    }
    FMB_ASSERTF(ps->n < GEMM_PLANS_MAX, "fmb_k_gemm_inv: more than %d GEMM shapes", GEMM_PLANS_MAX);
    gemm_plan *g = &ps->e[ps->n++];
    memset(g, 0, sizeof *g);
    g->M = M, g->Kd = Kd, g->lda = lda, g->ldw = ldw, g->ldc = ldc, g->rows = plan_rows;
    g->ab = ab, g->ct = ct, g->beta_nz = beta_nz;
    // column-major view as in fmb_k_gemm: Cᵀ[M, T] = (W as [Kd, M])ᵀ · (A as [Kd, T])
    FMB_CUBLAS_CHECK(FMB_BLAS(c)->cublasLtMatmulDescCreate(&g->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    FMB_CUBLAS_CHECK(FMB_BLAS(c)->cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_TRANSA,
                                                                 &ta, sizeof ta));
    FMB_CUBLAS_CHECK(FMB_BLAS(c)->cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_TRANSB,
                                                                 &tb, sizeof tb));
    FMB_CUBLAS_CHECK(
        FMB_BLAS(c)->cublasLtMatrixLayoutCreate(&g->lw, cuda_type(ab), Kd, M, (int64_t)ldw));
    FMB_CUBLAS_CHECK(FMB_BLAS(c)->cublasLtMatrixLayoutCreate(&g->la, cuda_type(ab), Kd, plan_rows,
                                                             (int64_t)lda));
    FMB_CUBLAS_CHECK(
        FMB_BLAS(c)->cublasLtMatrixLayoutCreate(&g->lc, cuda_type(ct), M, plan_rows, (int64_t)ldc));
    cublasLtMatmulPreference_t pref;
    FMB_CUBLAS_CHECK(FMB_BLAS(c)->cublasLtMatmulPreferenceCreate(&pref));
    uint64_t ws = c->gemm_algo == FMB_GEMM_FIXEDWS ? (uint64_t)c->cublas_ws_bytes : 0;
    uint32_t red = CUBLASLT_REDUCTION_SCHEME_NONE, al = 16;
    FMB_CUBLAS_CHECK(FMB_BLAS(c)->cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    FMB_CUBLAS_CHECK(FMB_BLAS(c)->cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &red, sizeof red));
    // the calls' pointers are only promised 16-byte aligned (head tiles, column offsets)
    const cublasLtMatmulPreferenceAttributes_t als[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (int i = 0; i < 4; i++)
        FMB_CUBLAS_CHECK(
            FMB_BLAS(c)->cublasLtMatmulPreferenceSetAttribute(pref, als[i], &al, sizeof al));
    cublasLtMatmulHeuristicResult_t r[8];
    int nr = 0;
    FMB_CUBLAS_CHECK(FMB_BLAS(c)->cublasLtMatmulAlgoGetHeuristic(
        (cublasLtHandle_t)c->lt, g->op, g->lw, g->la, g->lc, g->lc, pref, 8, r, &nr));
    FMB_CUBLAS_CHECK(FMB_BLAS(c)->cublasLtMatmulPreferenceDestroy(pref));
    for (int i = 0; i < nr && !g->lt_ok; i++) {
        // the mask already excludes split-K; checked again so that a library whose heuristic
        // ignores the mask cannot bring back a T-dependent reduction
        if (r[i].state != CUBLAS_STATUS_SUCCESS ||
            algo_cfg_u32(c, &r[i].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM) > 1 ||
            algo_cfg_u32(c, &r[i].algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME) !=
                CUBLASLT_REDUCTION_SCHEME_NONE)
            continue;
        g->algo = r[i].algo;
        g->lt_ok = 1;
    }
    if (c->gemm_verbose) {
        if (g->lt_ok)
            fprintf(stderr,
                    "gemm_inv M=%zu K=%zu ld=%zu/%zu/%zu ab=%d ct=%d rows=%zu: %d candidates; "
                    "algo id %u tile %u splitk %u red %u swizzle %u custom %u stages %u "
                    "cluster %u\n",
                    M, Kd, lda, ldw, ldc, (int)ab, (int)ct, plan_rows, nr,
                    algo_cfg_u32(c, &g->algo, CUBLASLT_ALGO_CONFIG_ID),
                    algo_cfg_u32(c, &g->algo, CUBLASLT_ALGO_CONFIG_TILE_ID),
                    algo_cfg_u32(c, &g->algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM),
                    algo_cfg_u32(c, &g->algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME),
                    algo_cfg_u32(c, &g->algo, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING),
                    algo_cfg_u32(c, &g->algo, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION),
                    algo_cfg_u32(c, &g->algo, CUBLASLT_ALGO_CONFIG_STAGES_ID),
                    algo_cfg_u32(c, &g->algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID));
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
    FMB_CUBLAS_CHECK(FMB_BLAS(c)->cublasLtMatrixLayoutSetAttribute(
        g->la, CUBLASLT_MATRIX_LAYOUT_COLS, &cols, sizeof cols));
    FMB_CUBLAS_CHECK(FMB_BLAS(c)->cublasLtMatrixLayoutSetAttribute(
        g->lc, CUBLASLT_MATRIX_LAYOUT_COLS, &cols, sizeof cols));
    float alpha = 1.0f;
    FMB_CUBLAS_CHECK(FMB_BLAS(c)->cublasLtMatmul((cublasLtHandle_t)c->lt, g->op, &alpha, W, g->lw,
                                                 A, g->la, &beta, C, g->lc, C, g->lc, &g->algo,
                                                 c->cublas_ws, c->cublas_ws_bytes, FMB_STREAM(c)));
    if (c->debug_sync)
        FMB_LAUNCH_CHECK(c);
}
