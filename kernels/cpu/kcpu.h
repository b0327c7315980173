/*
 * kcpu: the float32 CPU reference kernels. Each one is the oracle for a CUDA kernel
 * (the .cu files in kernels/) and the building block of the CPU engine. Plain loops (OpenMP over
 * independent rows or channels; the order of every sum is fixed, so results do not depend
 * on the thread count), no fast-math. Above each step: the modeling_falcon_mamba.py line it
 * reproduces.
 *
 * Layout: row-major, one row per token. A chunk of T tokens may hold pieces of several
 * sequences (varlen): fmb_varlen says where each starts, which state slot it uses and whether
 * it continues from that slot's state. One document in one chunk is nseq = 1; a batched
 * decode step is nseq = B with one token each.
 *
 * Letters: T tokens, D d_model, E d_inner, N d_state, K d_conv, R dt_rank, V vocab.
 */
#ifndef FMB_KCPU_H
#define FMB_KCPU_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int nseq;
    const int32_t *seq_start; /* [nseq + 1] token offsets; seq s is rows [start[s], start[s+1]) */
    const int32_t *slot;      /* [nseq] state slot of each sequence */
    const uint8_t *has_state; /* [nseq] 1: continue from the slot's state; 0: start from zeros */
} fmb_varlen;

/* C[T, M] = A[T, Kd] · W[M, Kd]ᵀ (+ C if accumulate). Leading dimensions in elements. BLAS. */
void fmb_kcpu_gemm_nt(size_t T,
                      size_t M,
                      size_t Kd,
                      const float *A,
                      size_t lda,
                      const float *W,
                      size_t ldw,
                      float *C,
                      size_t ldc,
                      int accumulate);

/* Block pre-norm with the residual add fused in:
 *   resid += add                      (h' = residual + Mixer(u); skipped when add == NULL)
 *   out = w ⊙ resid / sqrt(mean(resid²) + eps)      (FalconMambaRMSNorm)
 * resid, add, out: [T, D]. w: [D]. */
void fmb_kcpu_add_rmsnorm(
    float *resid, const float *add, const float *w, float eps, float *out, size_t T, size_t D);

/* Weightless RMS norm in place over n columns of each of T rows (ld apart):
 *   rms_forward(v, variance_epsilon=mixer_rms_eps)  for dt (n = R), B and C (n = N). */
void fmb_kcpu_rms_rows(float *x, size_t ld, size_t T, size_t n, float eps);

/* Causal depthwise conv + SiLU over a chunk, continuing from each sequence's conv state:
 *   x_c = silu(conv1d(x)[..., :T])   with x[<0] taken from the state (zeros if fresh)
 * x: [T, E] (ld ldx), y: [T, E] (ld ldy), w: [E, K] (w[e, K-1] multiplies the current token),
 * b: [E] or NULL. state: slots of [E, K-1] floats (the last K-1 inputs, oldest first),
 * state_stride floats apart; updated to the last K-1 inputs of each sequence. */
void fmb_kcpu_conv1d(const float *x,
                     size_t ldx,
                     float *y,
                     size_t ldy,
                     const float *w,
                     const float *b,
                     size_t E,
                     size_t K,
                     float *state,
                     size_t state_stride,
                     const fmb_varlen *vl);

/* The selective scan with its elementwise work fused, continuing from each sequence's state:
 *   dt = softplus(dt_pre + dt_bias)                    (threshold 20, as torch)
 *   h_t = exp(A ⊙ dt_t) ⊙ h_{t-1} + dt_t · B_t · u_t     h: [E, N], fp32
 *   y_t = (Σ_n h_t[:, n] · C_t[n] + D ⊙ u_t) ⊙ silu(z_t)
 * u, dt_pre, z, y: [T, E] with their leading dims; B, C: [T, N] rows ldbc apart (the x_proj
 * output after the weightless norms); A = -exp(A_log): [E, N]; dt_bias, Dskip: [E].
 * ssm: slots of [E, N] floats, ssm_stride apart, left holding h at each sequence's end. */
void fmb_kcpu_scan(const float *u,
                   size_t ldu,
                   const float *dt_pre,
                   size_t lddt,
                   const float *dt_bias,
                   const float *A,
                   const float *B,
                   const float *C,
                   size_t ldbc,
                   const float *Dskip,
                   const float *z,
                   size_t ldz,
                   float *y,
                   size_t ldy,
                   size_t E,
                   size_t N,
                   float *ssm,
                   size_t ssm_stride,
                   const fmb_varlen *vl);

/* Per-row reductions of logits [T, V] (ld apart), in double where it sums:
 *   logprob[t] = logits[t, tgt] - logsumexp(logits[t, :])   (NAN when targets[t] < 0)
 *   rank[t]    = #{v : logits[t, v] > logits[t, tgt]}       (-1 when no target)
 *   argmax[t]  = the first v with the largest logit
 *   top-k      = the k largest, descending, ties to the lowest id, as log-probabilities
 * Every output pointer may be NULL. */
void fmb_kcpu_head_reduce(const float *logits,
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

/* The scan's exp: within 2 ulp of expf above FLT_MIN, 0 below exp(-87.34). Exposed for tests. */
float fmb_kcpu_expf(float x);
/* softplus (threshold 20) and SiLU as the kernels compute them (through fmb_kcpu_expf and an
 * inline log1p, within a few ulp of libm's). Exposed for tests. */
float fmb_kcpu_softplus(float x);
float fmb_kcpu_silu(float x);

/* bf16 / f16 → f32 conversion of n elements (exact). */
void fmb_kcpu_bf16_to_f32(const uint16_t *src, float *dst, size_t n);
void fmb_kcpu_f16_to_f32(const uint16_t *src, float *dst, size_t n);
float fmb_bf16_to_f32(uint16_t h);
float fmb_f16_to_f32(uint16_t h);
/* f32 → bf16, round to nearest even (NaN stays NaN). */
uint16_t fmb_f32_to_bf16(float f);

#ifdef __cplusplus
}
#endif

#endif
