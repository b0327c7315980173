/*
 * k_conv: the causal depthwise conv1d + SiLU over a varlen chunk, continuing from each
 * sequence's conv state (decode is the case of one token per sequence). kcpu twin:
 * fmb_kcpu_conv1d. Conv state per sequence and layer: [E, K-1] f32, oldest first.
 */
#include "kernels/k_common.cuh"

#define CONV_KMAX 8

// One thread per (token, channel): y[t,e] = silu(b[e] + Σ_j w[e,j] · x[t-K+1+j, e]), where
// positions before the sequence start come from its conv state (zeros when fresh).
template <typename X>
static __global__ void conv_kernel(const X *x,
                                   size_t ldx,
                                   X *y,
                                   size_t ldy,
                                   const float *w,
                                   const float *b,
                                   int E,
                                   int K,
                                   fmb_kplan p,
                                   size_t conv_off)
{
    int e = blockIdx.x * blockDim.x + threadIdx.x;
    size_t t = blockIdx.y;
    if (e >= E)
        return;
    int s = p.tok_seq[t];
    int32_t t0 = p.seq_start[s];
    const float *st = p.state[s] + conv_off + (size_t)e * (K - 1);
    int has = p.has_state[s];
    float acc = b ? b[e] : 0.0f;
    for (int j = 0; j < K; j++) {
        int64_t tt = (int64_t)t - (K - 1) + j;
        float v;
        if (tt >= t0)
            v = fmb_ld(x + (size_t)tt * ldx + e);
        else
            v = has ? st[tt - t0 + (K - 1)] : 0.0f;
        acc += w[(size_t)e * K + j] * v;
    }
    fmb_st(y + t * ldy + e, fmb_silu(acc));
}

// One thread per (sequence, channel): the state becomes the last K-1 inputs.
template <typename X>
static __global__ void
conv_state_kernel(const X *x, size_t ldx, int E, int K, fmb_kplan p, size_t conv_off)
{
    int e = blockIdx.x * blockDim.x + threadIdx.x;
    int s = blockIdx.y;
    if (e >= E)
        return;
    int32_t t0 = p.seq_start[s], t1 = p.seq_start[s + 1];
    float *st = p.state[s] + conv_off + (size_t)e * (K - 1);
    int has = p.has_state[s];
    float nw[CONV_KMAX];
    for (int j = 0; j < K - 1; j++) {
        int64_t pos = (int64_t)t1 - (K - 1) + j;
        if (pos >= t0)
            nw[j] = fmb_ld(x + (size_t)pos * ldx + e);
        else
            nw[j] = has ? st[pos - t0 + (K - 1)] : 0.0f;
    }
    for (int j = 0; j < K - 1; j++)
        st[j] = nw[j];
}

extern "C" void fmb_k_conv1d(const fmb_cuda_ctx *c,
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
                             size_t conv_off)
{
    FMB_ASSERT(K >= 1 && K <= CONV_KMAX && E <= INT32_MAX);
    FMB_ASSERT(p->T <= 65535 && p->nseq <= 65535);
    if (p->T > 0) {
        dim3 g(fmb_cdiv(E, 128), (unsigned)p->T);
        FMB_DISPATCH_ACT(xt, X,
                         conv_kernel<<<g, 128, 0, FMB_STREAM(c)>>>(
                             (const X *)x, ldx, (X *)y, ldy, w, b, (int)E, (int)K, *p, conv_off));
        FMB_LAUNCH_CHECK(c);
    }
    if (K > 1) {
        dim3 g2(fmb_cdiv(E, 128), (unsigned)p->nseq);
        FMB_DISPATCH_ACT(xt, X,
                         conv_state_kernel<<<g2, 128, 0, FMB_STREAM(c)>>>((const X *)x, ldx, (int)E,
                                                                          (int)K, *p, conv_off));
        FMB_LAUNCH_CHECK(c);
    }
}
