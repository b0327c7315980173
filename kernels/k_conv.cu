/*
 * k_conv: the causal depthwise conv1d + SiLU over a varlen chunk, continuing from each
 * sequence's conv state (decode is the case of one token per sequence). kcpu twin:
 * fmb_kcpu_conv1d. Conv state per sequence and layer: [E, K-1] f32, oldest first. Short
 * sequences (T ≤ 4·nseq, decode) take one fused launch, long ones two (outputs, then states).
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

// One thread per (sequence, channel) walking its tokens with the last K-1 inputs in
// registers: outputs and the new state in one launch (short sequences: decode). The thread
// reads its state before writing it and no other thread touches that (sequence, channel).
// Same products and order as conv_kernel: acc = b + Σ_j w[e,j] · window[j].
template <typename X>
static __global__ void conv_seq_kernel(const X *x,
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
    int s = blockIdx.y;
    if (e >= E)
        return;
    int32_t t0 = p.seq_start[s], t1 = p.seq_start[s + 1];
    float *st = p.state[s] + conv_off + (size_t)e * (K - 1);
    int has = p.has_state[s];
    float win[CONV_KMAX], wj[CONV_KMAX];
#pragma unroll
    for (int j = 0; j < CONV_KMAX; j++) {
        win[j] = (j < K - 1 && has) ? st[j] : 0.0f;
        wj[j] = j < K ? w[(size_t)e * K + j] : 0.0f;
    }
    const float bias = b ? b[e] : 0.0f;
    for (int32_t t = t0; t < t1; t++) {
        const float xv = fmb_ld(x + (size_t)t * ldx + e);
        float acc = bias;
#pragma unroll
        for (int j = 0; j < CONV_KMAX; j++)
            if (j < K - 1)
                acc += wj[j] * win[j];
#pragma unroll
        for (int j = 0; j < CONV_KMAX; j++)
            if (j == K - 1)
                acc += wj[j] * xv;
        fmb_st(y + (size_t)t * ldy + e, fmb_silu(acc));
#pragma unroll
        for (int j = 0; j + 1 < CONV_KMAX; j++)
            if (j < K - 2)
                win[j] = win[j + 1];
#pragma unroll
        for (int j = 0; j < CONV_KMAX; j++)
            if (j == K - 2)
                win[j] = xv;
    }
#pragma unroll
    for (int j = 0; j < CONV_KMAX; j++)
        if (j < K - 1)
            st[j] = win[j];
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
    if (p->T <= 4 * (size_t)p->nseq) {
        // short sequences (decode): one launch, one thread per (sequence, channel)
        dim3 g(fmb_cdiv(E, 128), (unsigned)p->nseq);
        FMB_DISPATCH_ACT(xt, X,
                         conv_seq_kernel<<<g, 128, 0, FMB_STREAM(c)>>>(
                             (const X *)x, ldx, (X *)y, ldy, w, b, (int)E, (int)K, *p, conv_off));
        FMB_LAUNCH_CHECK(c);
        return;
    }
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
