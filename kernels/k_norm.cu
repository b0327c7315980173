/*
 * k_norm: the block pre-norm fused with the residual add, and the weightless RMS norms of
 * the x_proj output (B, C, and dt's per-token scale). kcpu twins: fmb_kcpu_add_rmsnorm,
 * fmb_kcpu_rms_rows.
 */
#include "kernels/k_common.cuh"

// One block per token row of D: resid += add, then out = w ⊙ resid · rsqrt(mean(resid²)+eps).
template <typename O>
static __global__ void
add_rmsnorm_kernel(float *resid, const float *add, const float *w, float eps, O *out, size_t D)
{
    __shared__ float sh[32];
    size_t t = blockIdx.x;
    float *r = resid + t * D;
    const float *a = add ? add + t * D : NULL;
    float ss = 0.0f;
    for (size_t i = threadIdx.x; i < D; i += blockDim.x) {
        float v = r[i];
        if (a) {
            v += a[i]; // residual = residual + hidden_states (fp32)
            r[i] = v;
        }
        ss += v * v;
    }
    ss = fmb_block_sum(ss, sh);
    float inv = 1.0f / sqrtf(ss / (float)D + eps);
    for (size_t i = threadIdx.x; i < D; i += blockDim.x)
        fmb_st(out + t * D + i, w[i] * (r[i] * inv));
}

extern "C" void fmb_k_add_rmsnorm(const fmb_cuda_ctx *c,
                                  float *resid,
                                  const float *add,
                                  const float *w,
                                  float eps,
                                  void *out,
                                  fmb_kdt ot,
                                  size_t T,
                                  size_t D)
{
    if (T == 0)
        return;
    FMB_ASSERT(T <= INT32_MAX && D > 0);
    int threads = D >= 1024 ? 512 : D >= 256 ? 256 : 64;
    FMB_DISPATCH_ACT(ot, O,
                     add_rmsnorm_kernel<<<(unsigned)T, threads, 0, FMB_STREAM(c)>>>(
                         resid, add, w, eps, (O *)out, D));
    FMB_LAUNCH_CHECK(c);
}

// One warp per token: S row = [δ (R) | B (N) | C (N)].
template <typename S>
static __global__ void ssm_params_kernel(
    const S *Sm, size_t lds, size_t T, int R, int N, float eps, int norm, float *BC, float *dtscale)
{
    size_t t = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (t >= T)
        return;
    const S *row = Sm + t * lds;
    float ss = 0.0f;
    for (int i = lane; i < R; i += 32) {
        float v = fmb_ld(row + i);
        ss += v * v;
    }
    ss = fmb_warp_sum(ss);
    if (lane == 0)
        dtscale[t] = norm ? 1.0f / sqrtf(ss / (float)R + eps) : 1.0f; // rms_forward(time_step)
    // B in lanes 0..N-1, C in lanes 16..16+N-1 (N ≤ 16)
    int half = lane >> 4, j = lane & 15;
    float v = j < N ? fmb_ld(row + R + half * N + j) : 0.0f;
    float s2 = v * v;
    for (int o = 8; o > 0; o >>= 1)
        s2 += __shfl_xor_sync(0xffffffffu, s2, o);
    float inv = norm ? 1.0f / sqrtf(s2 / (float)N + eps) : 1.0f; // rms_forward(B), (C)
    if (j < N)
        BC[t * 2 * N + half * N + j] = v * inv;
}

extern "C" void fmb_k_ssm_params(const fmb_cuda_ctx *c,
                                 const void *S,
                                 size_t lds,
                                 fmb_kdt st,
                                 size_t T,
                                 size_t R,
                                 size_t N,
                                 float eps,
                                 int norm,
                                 float *BC,
                                 float *dtscale)
{
    if (T == 0)
        return;
    FMB_ASSERT(N >= 1 && N <= 16 && lds >= R + 2 * N);
    FMB_DISPATCH_ACT(st, ST,
                     ssm_params_kernel<<<fmb_cdiv(T * 32, 256), 256, 0, FMB_STREAM(c)>>>(
                         (const ST *)S, lds, T, (int)R, (int)N, eps, norm, BC, dtscale));
    FMB_LAUNCH_CHECK(c);
}
