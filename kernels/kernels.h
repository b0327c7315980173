/*
 * kernels: the CUDA kernels behind a plain-C11 facade. One .cu per op family
 * (kernels/k_*.cu; the context, memory and graphs in k_ctx.cu, GEMM in k_gemm.cu, small
 * elementwise kernels in k_elementwise.cu, the host-side varlen plan in k_plan.c); each
 * launcher takes raw device pointers, dimensions, strides and the context whose stream it runs
 * on, asserts its shape preconditions, checks the launch (FMB_CUDA_CHECK on cudaGetLastError)
 * and, with the kernel option debug-sync=on (or -DFMB_DEBUG_SYNC at compile time),
 * synchronises so that an asynchronous fault is reported at the launch that caused it.
 *
 * Every kernel has a float32 CPU twin in kernels/cpu/kcpu.h; tests/gpu/ diffs them.
 *
 * Activations are float32 or bf16 (fmb_kdt); small per-channel parameters (norm gains, conv
 * weights, biases, A, D) are always float32 on the device; large matrices are bf16 (or f32 in
 * --dtype f32 mode). Residual stream, conv and ssm states, B/C and all accumulations: float32.
 *
 * Letters: T tokens, D d_model, E d_inner, N d_state, K d_conv, R dt_rank, V vocab.
 *
 * No hidden globals: everything a launcher needs comes through fmb_cuda_ctx (stream, cuBLAS
 * handle and workspace, device limits, the kernel choices of kernels/kopts.h given at init).
 */
#ifndef FMB_KERNELS_H
#define FMB_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/base.h"
#include "kernels/kopts.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Element type of an activation or weight buffer. */
typedef enum { FMB_KDT_F32 = 0, FMB_KDT_BF16 = 1, FMB_KDT_F16 = 2 } fmb_kdt;

size_t fmb_kdt_size(fmb_kdt t);

/* The per-device context. Created by fmb_cuda_ctx_init, freed by fmb_cuda_ctx_free (accepts
 * NULL, idempotent). stream and cublas are opaque here (cudaStream_t, cublasHandle_t). */
typedef struct {
    int device;
    void *stream;    /* cudaStream_t, non-blocking, owned */
    void *cublas;    /* cublasHandle_t bound to stream, owned */
    void *cublas_ws; /* cuBLAS workspace (device), owned */
    size_t cublas_ws_bytes;
    int sm_count;
    int cc_major, cc_minor;
    size_t smem_per_block_optin; /* largest dynamic shared memory a block may opt into */
    size_t total_mem;
    /* The kernel choices (kernels/kopts.h), from the fmb_kernel_opts given to init. Tests may
     * change scan_algo, matvec_algo and gemm_algo between launches. */
    int debug_sync;   /* 1: synchronise after every launch */
    int scan_algo;    /* FMB_SCAN_* */
    int matvec_algo;  /* FMB_MATVEC_* */
    int gemm_algo;    /* FMB_GEMM_* */
    int gemm_verbose; /* 1: fmb_k_gemm_inv prints each plan it makes to stderr */
    size_t smem_cap;  /* 0, or the shared memory a block may take (smem-cap): a launch over it
                       * aborts naming the kernel (fmb_k_smem_check in k_common.cuh) */
    int pdl;          /* 1: kernels that support it are launched with Programmatic Dependent
                       * Launch (k_common.cuh): cc >= 9.0 and the kernels run sm_90+ code,
                       * unless pdl=off. May be cleared (not set) between launches */
    void *lt;         /* cublasLtHandle_t, owned */
    void *blas;       /* fmb_blas_api (k_blas.cuh): cuBLAS loaded at run time, owned */
    void *gemm_plans; /* fmb_k_gemm_inv's algorithm cache (k_gemm.cu), owned */
    char name[256];
} fmb_cuda_ctx;

/* Loads cuBLAS and cublasLt as fmb_cuda_ctx_init does (k_blas.cuh; dir NULL: the loader's
 * search path, else that folder) and says whether it worked: for tests and diagnostics. */
FMB_NODISCARD fmb_status fmb_cuda_blas_probe(const char *dir, fmb_err *err);

/* Number of usable CUDA devices; 0 (never aborts) when there is no driver or device. */
int fmb_cuda_device_count(void);

/* Tier 1: fails (FMB_EUNSUP) when the device cannot be used. opts: the kernel choices (NULL:
 * every default); copied, not kept. */
FMB_NODISCARD fmb_status fmb_cuda_ctx_init(fmb_cuda_ctx *c,
                                           int device,
                                           const fmb_kernel_opts *opts,
                                           fmb_err *err);
void fmb_cuda_ctx_free(fmb_cuda_ctx *c);
/* The calling thread's current device becomes c's (cudaSetDevice: per host thread). */
void fmb_cuda_ctx_bind(const fmb_cuda_ctx *c);
void fmb_cuda_sync(const fmb_cuda_ctx *c);
/* Driver's view of device memory (cudaMemGetInfo). */
void fmb_cuda_mem_info(size_t *free_bytes, size_t *total_bytes);

/* Memory helpers that abort with file:line on failure (tier 2), except fmb_cuda_try_malloc
 * which returns NULL (tier 1 out-of-memory for the big up-front allocations). */
void *fmb_cuda_try_malloc(size_t bytes);
void *fmb_cuda_malloc(size_t bytes);
void fmb_cuda_free(void *p);             /* accepts NULL */
void *fmb_cuda_host_alloc(size_t bytes); /* pinned host memory */
void fmb_cuda_host_free(void *p);
void fmb_cuda_h2d(const fmb_cuda_ctx *c, void *dst, const void *src, size_t bytes); /* async */
void fmb_cuda_d2h(const fmb_cuda_ctx *c, void *dst, const void *src, size_t bytes); /* async */
void fmb_cuda_d2d(const fmb_cuda_ctx *c, void *dst, const void *src, size_t bytes); /* async */
void fmb_cuda_memset(const fmb_cuda_ctx *c, void *dst, int v, size_t bytes);        /* async */

/* CUDA graphs of the context's stream (decode step). Handles are opaque. */
void fmb_cuda_graph_begin(const fmb_cuda_ctx *c);
void *fmb_cuda_graph_end(const fmb_cuda_ctx *c); /* returns an instantiated cudaGraphExec_t */
void fmb_cuda_graph_launch(const fmb_cuda_ctx *c, void *exec);
void fmb_cuda_graph_free(void *exec);

/* Events for timing: elapsed ms between two recorded events. */
void *fmb_cuda_event_new(void);
void fmb_cuda_event_free(void *ev);
void fmb_cuda_event_record(const fmb_cuda_ctx *c, void *ev);
float fmb_cuda_event_ms(void *start, void *stop); /* synchronises on stop */

// --- conversion and initialisation ----------------------------------------------------------

/* dst[i] = convert(src[i]) for n elements between any two fmb_kdt (bf16/f16 → f32 exact;
 * f32 → bf16 round to nearest even). */
void fmb_k_convert(
    const fmb_cuda_ctx *c, const void *src, fmb_kdt st, void *dst, fmb_kdt dt, size_t n);
/* dst[i] = offset + scale * u, u uniform in [-1, 1) from a counter-based hash of (seed, i). */
void fmb_k_fill_uniform(const fmb_cuda_ctx *c,
                        void *dst,
                        fmb_kdt dt,
                        size_t n,
                        uint64_t seed,
                        float scale,
                        float offset);
/* A_log-like init: dst[e * N + n] = log(n + 1) + noise * u (u as above). f32. */
void fmb_k_fill_alog(
    const fmb_cuda_ctx *c, float *dst, size_t E, size_t N, uint64_t seed, float noise);
/* A = -exp(A_log), float32, n elements (in place allowed). */
void fmb_k_neg_exp(const fmb_cuda_ctx *c, const float *src, float *dst, size_t n);

/* resid[t, :] = float32(emb[ids[t], :]); emb: [V, D] of type et. ids: device [T]. */
void fmb_k_embed(const fmb_cuda_ctx *c,
                 const void *emb,
                 fmb_kdt et,
                 const int32_t *ids,
                 size_t T,
                 size_t D,
                 float *resid);

// --- GEMM (cuBLAS) --------------------------------------------------------------------------

/* C[T, M] = A[T, Kd] · W[M, Kd]ᵀ (+ beta·C), row-major, leading dimensions in elements.
 * A and W share one type (bf16 or f32); C is f32 or that type. Accumulation is fp32 (f32
 * operands: true fp32, no TF32). */
void fmb_k_gemm(const fmb_cuda_ctx *c,
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
                float beta);

/* Row-invariant GEMM, same contract as fmb_k_gemm, for prefill: row t of C is bitwise the
 * same whatever T (and whichever rows surround it), so scoring results do not depend on the
 * chunk length. cuBLAS's default heuristic picks a kernel per (T, M, Kd): at small T it
 * splits the K reduction (split-K), which changes the order of the fp32 sums, and bf16
 * rounding of the activations then turns those last-bit differences into visible NLL
 * differences (measured at 7B: bench/RESULTS.md). Here one cublasLt algorithm per
 * (M, Kd, leading dimensions, types, beta, plan_rows) is chosen once, at plan_rows rows (a
 * constant of the caller, never the chunk length; part of the plan's key, so that decode's
 * plan is not whichever one prefill made first for the same matrix), among those without split-K
 * (reduction scheme NONE) and, for FMB_GEMM_FIXED, without workspace (which also rules out
 * stream-K's partial-tile fix-ups); the same algorithm then runs for every T, so each output
 * element sees the same tile and K loop. c->gemm_algo = FMB_GEMM_CUBLAS falls back to fmb_k_gemm
 * (the old, T-dependent choice). The FMB_GEMM_* values are in kernels/kopts.h. */
void fmb_k_gemm_inv(const fmb_cuda_ctx *c,
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
                    size_t plan_rows);

/* The decode matrix-vector product, batch-invariant (k_matvec.cu), for any B ≥ 1 rows of x:
 * y[b, m] = Σ_k W[m, k] x[b, k] (+ y[b, m] if accumulate) on tensor cores with fp32
 * accumulation, each output's sum in an order fixed by (M, Kd) alone, so y[b, :] is bitwise
 * the same whatever B, the other rows of x and b's position. W: bf16 [M, Kd] (ld ldw,
 * 16-byte aligned rows, Kd % 8 == 0); x: bf16 [B, Kd] (ld ldx % 8 == 0, 16-byte aligned);
 * y: f32 or bf16 [B, M] (ld ldy). */
/* c->matvec_algo (kernels/kopts.h) selects nothing any more: AUTO, CC and MMA all run
 * the batch-invariant tensor-core kernel (the CUDA-core kernel for B ≤ 8 and the cuBLAS path
 * for B > 8 are gone: their results depended on B). The values stay for the context's
 * option parsing. */
int fmb_k_matvec_supported(size_t B, size_t Kd, size_t ldw, fmb_kdt xt);
void fmb_k_matvec(const fmb_cuda_ctx *c,
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
                  int accumulate);

/* y[t, m] += bias[m] (f32 bias) over T rows of M, type yt. */
void fmb_k_add_bias(
    const fmb_cuda_ctx *c, void *y, size_t ldy, fmb_kdt yt, size_t T, size_t M, const float *bias);

// --- norms ----------------------------------------------------------------------------------

/* Block pre-norm fused with the residual add (kcpu twin: fmb_kcpu_add_rmsnorm):
 *   resid += add (skipped when add == NULL); out = w ⊙ resid / sqrt(mean(resid²) + eps)
 * resid, add: f32 [T, D]; w: f32 [D]; out: ot [T, D]. */
void fmb_k_add_rmsnorm(const fmb_cuda_ctx *c,
                       float *resid,
                       const float *add,
                       const float *w,
                       float eps,
                       void *out,
                       fmb_kdt ot,
                       size_t T,
                       size_t D);

/* The x_proj output S [T, R + 2N] (type st, ld lds) → the scan's per-token inputs:
 *   BC[t, 0:N] = rms(B_t), BC[t, N:2N] = rms(C_t)    (weightless norms, f32, ld 2N)
 *   dtscale[t] = 1 / sqrt(mean(δ_t²) + eps)           (δ's norm is a per-token scalar that
 *                                                      commutes with dt_proj)
 * norm == 0 (plain Mamba): BC is B and C copied, dtscale = 1.
 * kcpu twin: fmb_kcpu_rms_rows on each part. */
void fmb_k_ssm_params(const fmb_cuda_ctx *c,
                      const void *S,
                      size_t lds,
                      fmb_kdt st,
                      size_t T,
                      size_t R,
                      size_t N,
                      float eps,
                      int norm,
                      float *BC,
                      float *dtscale);

// --- varlen chunk plan ----------------------------------------------------------------------

/* A chunk of T tokens holding pieces of nseq sequences (kcpu's fmb_varlen, on the device).
 * Built on the host by fmb_k_plan_build into one blob, copied to the device once per chunk
 * and shared by every layer. state[s] is the base of sequence s's state block; a layer's
 * conv state is at state[s] + conv_off ([E, K-1] f32, oldest first) and its ssm state at
 * state[s] + ssm_off ([E, N] f32). */
typedef struct {
    int32_t t0, t1; /* token range */
    int32_t seq;    /* sequence index */
    int32_t flags;  /* FMB_SEG_* */
} fmb_kseg;

enum {
    FMB_SEG_FIRST = 1, /* first segment of its sequence */
    FMB_SEG_LAST = 2,  /* last segment: writes the sequence's final ssm state */
    FMB_SEG_FRESH = 4, /* the sequence starts from zeros (else from its state) */
};

typedef struct {
    int nseq;
    int nsegs;
    size_t T;
    /* device pointers into the plan blob */
    const int32_t *seq_start; /* [nseq + 1] */
    const int32_t *tok_seq;   /* [T] sequence of each token */
    const uint8_t *has_state; /* [nseq] */
    float *const *state;      /* [nseq] state block base of each sequence */
    const fmb_kseg *segs;     /* [nsegs] scan segments, grouped by sequence, in order */
    const int32_t *seq_seg0;  /* [nseq + 1] first segment of each sequence */
    int multi_seg;            /* 1 when some sequence spans more than one segment */
    int state_al16;           /* 1 when every state base is 16-byte aligned */
    int chunk_inv; /* 1 (set by the caller, after building): prefill, where results must not
                    * depend on how a document is cut into chunks, so the scan uses a
                    * time-sequential one-pass kernel (TILE, or QUAD for N != 16) for every T,
                    * never SEG (whose segment boundaries depend on T) */
    size_t bytes;  /* used bytes of the blob (what to copy to the device) */
} fmb_kplan;

/* Bytes of the host/device plan blob for at most T tokens and nseq sequences. */
size_t fmb_k_plan_bytes(size_t T, size_t nseq);
/* Scan segment length used by fmb_k_plan_build for E channels on this device: long enough
 * that the segment scan is efficient, short enough to fill the device. */
size_t fmb_k_scan_seg_len(const fmb_cuda_ctx *c, size_t T, size_t E, size_t nseq);
/* Builds the plan in host (pinned) memory hblob and fills *p with pointers into dblob (the
 * device copy; the caller copies hblob → dblob with fmb_cuda_h2d before the first launch).
 * seq_start [nseq+1], has_state [nseq] and state [nseq] are host arrays. */
void fmb_k_plan_build(fmb_kplan *p,
                      void *hblob,
                      void *dblob,
                      size_t T,
                      int nseq,
                      const int32_t *seq_start,
                      const uint8_t *has_state,
                      float *const *state,
                      size_t seg_len);

// --- conv -----------------------------------------------------------------------------------

/* Causal depthwise conv + SiLU over a chunk, continuing from each sequence's conv state
 * (kcpu twin: fmb_kcpu_conv1d); also updates the state to each sequence's last K-1 inputs.
 * x: [T, E] type xt (ld ldx); y: [T, E] type xt (ld ldy); w: f32 [E, K]; b: f32 [E] or NULL.
 * Two launches (outputs, then states) so that no thread reads a state another overwrites;
 * one (a thread per sequence and channel walking its tokens) when T ≤ 4·nseq (decode). */
void fmb_k_conv1d(const fmb_cuda_ctx *c,
                  const void *x,
                  size_t ldx,
                  void *y,
                  size_t ldy,
                  fmb_kdt xt,
                  const float *w,
                  const float *b,
                  size_t E,
                  size_t K,
                  const fmb_kplan *p,
                  size_t conv_off);

// --- selective scan -------------------------------------------------------------------------

/* Scan algorithms (c->scan_algo, FMB_SCAN_* in kernels/kopts.h): QUAD: one pass per
 * sequence, four lanes per channel each holding N/4 states, dt/softplus/gate work spread over
 * the four lanes' tokens (N % 4 == 0); fastest when sequences are short (decode),
 * latency-bound on long ones (only 4·E threads).
 * SEG: segments scanned in parallel from zero, combined, rescanned (two passes); fastest on
 * long chunks. TILE (N = 16 only; other N fall back as AUTO): one pass, 8 lanes per channel
 * each holding 2 states (every exp once, 8·E threads), tiles of 64 tokens staged in shared
 * memory with the per-token softplus/SiLU done once at staging; where E % 16 == 0 and the
 * rows are 16-byte aligned TILE runs as TILE2 (cp.async double-buffered staging, a cheaper
 * softplus); TILE1 forces the first tile kernel. AUTO (default): TILE when N = 16 and the
 * sequences average ≥ 16 tokens (T ≥ 16·nseq) or the plan is a prefill chunk, else QUAD when
 * no sequence spans more than one segment, else SEG. (The engine's decode step uses
 * fmb_k_scan_step instead.) Their measured speeds: bench/RESULTS.md. */

/* Decode: the scan of one token per sequence (p->T == p->nseq) with fmb_k_ssm_params fused
 * in: S is the x_proj output [T, R + 2N] (ld lds, type at) from which the token's rms scales
 * of δ (applied to dt_pre), B and C are computed with fmb_k_ssm_params's arithmetic (norm,
 * eps as there); the other operands as in fmb_k_scan. N ≤ 16. kcpu twin: fmb_kcpu_rms_rows
 * on each part of S, then fmb_kcpu_scan. */
void fmb_k_scan_step(const fmb_cuda_ctx *c,
                     fmb_kdt at,
                     const void *u,
                     size_t ldu,
                     const void *dt_pre,
                     size_t lddt,
                     const void *S,
                     size_t lds,
                     size_t R,
                     float eps,
                     int norm,
                     const float *dt_bias,
                     const float *A,
                     const float *Dskip,
                     const void *z,
                     size_t ldz,
                     void *y,
                     size_t ldy,
                     size_t E,
                     size_t N,
                     const fmb_kplan *p,
                     size_t ssm_off);

/* Workspace bytes of fmb_k_scan for a plan of at most nsegs segments and E, N. */
size_t fmb_k_scan_ws_bytes(size_t nsegs, size_t E, size_t N);
/* Max number of segments a plan of T tokens and nseq sequences may have at seg_len. */
size_t fmb_k_plan_max_segs(size_t T, size_t nseq, size_t seg_len);

/* The chunked parallel selective scan with its elementwise work fused, continuing from each
 * sequence's ssm state (kcpu twin: fmb_kcpu_scan, with dt_pre·dtscale in place of dt_pre):
 *   dt = softplus(dt_pre[t, e] · dtscale[t] + dt_bias[e])          (threshold 20)
 *   h_t = exp(A ⊙ dt_t) ⊙ h_{t-1} + dt_t · B_t · u_t;  y_t = (Σ_n h_t C_t + D u_t) silu(z_t)
 * Segments of a sequence are scanned in parallel from zero, their end states combined in
 * order from the carried state, then rescanned from their true start state (3 launches; 1
 * when no sequence spans more than one segment, as in decode).
 * u, dt_pre, z, y: type at, [T, E] with their leading dims; dtscale: f32 [T] or NULL (1);
 * BC: f32 [T, 2N] (B then C, ld ldbc); A: f32 [E, N] (= -exp(A_log)); dt_bias, Dskip: f32
 * [E]. N ≤ 16. ws: fmb_k_scan_ws_bytes(p->nsegs, E, N) bytes of device memory. */
void fmb_k_scan(const fmb_cuda_ctx *c,
                fmb_kdt at,
                const void *u,
                size_t ldu,
                const void *dt_pre,
                size_t lddt,
                const float *dtscale,
                const float *dt_bias,
                const float *A,
                const float *BC,
                size_t ldbc,
                const float *Dskip,
                const void *z,
                size_t ldz,
                void *y,
                size_t ldy,
                size_t E,
                size_t N,
                const fmb_kplan *p,
                size_t ssm_off,
                void *ws);

// --- lm_head reduction ----------------------------------------------------------------------

/* Per-row reductions of a logits tile [T, V] f32 (ld apart), kcpu twin fmb_kcpu_head_reduce:
 * logprob (NAN without target), rank (-1 without target), argmax (first max), top-k
 * (descending, ties to the lowest id; top_k ≤ 64). All pointers device, each may be NULL. */
void fmb_k_head_reduce(const fmb_cuda_ctx *c,
                       const float *logits,
                       size_t ld,
                       size_t T,
                       size_t V,
                       const int32_t *targets,
                       float *logprob,
                       int32_t *rank,
                       int32_t *argmax,
                       int top_k,
                       int32_t *topk_ids,
                       float *topk_logprobs);

#ifdef __cplusplus
}
#endif

/* Tier-2 checks for CUDA and cuBLAS calls; C and CUDA code alike. */
#define FMB_CUDA_CHECK(call)                                                                       \
    do {                                                                                           \
        int fmb_rc_ = (int)(call);                                                                 \
        if (fmb_rc_ != 0)                                                                          \
            fmb_cuda_die(__FILE__, __LINE__, __func__, #call, fmb_rc_, 0);                         \
    } while (0)
#define FMB_CUBLAS_CHECK(call)                                                                     \
    do {                                                                                           \
        int fmb_rc_ = (int)(call);                                                                 \
        if (fmb_rc_ != 0)                                                                          \
            fmb_cuda_die(__FILE__, __LINE__, __func__, #call, fmb_rc_, 1);                         \
    } while (0)

#ifdef __cplusplus
extern "C" {
#endif
/* Prints the statement, function, file:line and the library's error string; aborts. */
FMB_NORETURN void
fmb_cuda_die(const char *file, int line, const char *func, const char *stmt, int rc, int is_cublas);
#ifdef __cplusplus
}
#endif

#endif
