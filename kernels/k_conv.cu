/*
 * k_conv: the causal depthwise conv1d + SiLU over a varlen chunk, continuing from each
 * sequence's conv state (decode is the case of one token per sequence), and the state update
 * (each sequence's last K-1 inputs). kcpu twin: fmb_kcpu_conv1d. Conv state per sequence and
 * layer: [E, K-1] f32, oldest first.
 *
 * Kernels, as fmb_k_conv1d picks them:
 *  - conv_seq_kernel (T ≤ 4·nseq: decode, batches of short pieces): one thread per (sequence,
 *    channel) walks the sequence's tokens with the last K-1 inputs in registers and writes the
 *    new state itself; one launch.
 *  - conv_tile_kernel (prefill; E, ldx, ldy multiples of 8, x and y 16-byte aligned,
 *    2 ≤ K ≤ 4): one thread per 8 consecutive channels and a run of CONV_TT consecutive
 *    tokens of the chunk; one 16-byte load per row (bf16; two for f32), one 16-byte store per
 *    output row, the last K-1 inputs of its channels in registers as a sliding window, so each
 *    input is read once (plus the K-1 rows before the run); the block's weights and biases are
 *    staged through shared memory. A run may cross sequence boundaries: at a sequence's first
 *    token the window is rebuilt from that sequence's state.
 *  - conv_kernel (prefill otherwise: odd strides, K > 4 or K = 1): one thread per (token,
 *    channel), scalar loads, the window re-read from x for every token.
 *  - conv_state_kernel (after conv_tile_kernel or conv_kernel): one thread per (sequence,
 *    channel) sets the state. A separate launch because the output kernels read states that
 *    would otherwise be overwritten under them.
 *
 * Every kernel computes an output the same way, bit for bit: acc = bias (0 without), then
 * acc = fmaf(w[e, j], v_j, acc) for j = 0..K-1 in that order (v_j = x[t-K+1+j], oldest first,
 * from the state before the sequence start), then fmb_silu(acc). The engine relies on this: a
 * token's result must not depend on which kernel, and so which chunk length or batch, computed
 * it (prefill chunks vs decode steps; scores independent of how a document is chunked). The
 * fmaf are explicit so that this does not hang on the compiler's contraction of a*b + c.
 */
#include <stdint.h>

#include "kernels/k_common.cuh"

#define CONV_KMAX         8
#define CONV_TILE_KMAX    4
#define CONV_TILE_THREADS 128
/* Tokens per thread of conv_tile_kernel. At the 7B prefill shape (E = 8192, T = 4096), 32
 * gives 1024 channel groups × 128 runs = 131K threads in 1024 blocks of 128. At 127 registers
 * (bf16, K = 4) an SM holds 4 blocks (512 threads, each with up to 4 16-byte row loads in
 * flight), so that is ~2 waves of 528 blocks. A longer run amortises the per-run costs: the
 * K-1 rows re-read before it, the staging of the block's weights (8·(K+1) floats per thread)
 * and the chain of dependent loads before the first output (tok_seq, seq_start, the state).
 * 32 was the fastest of 16/32/64 across T = 2048..8192 (bench/RESULTS.md, "Kernel
 * measurements behind constants"). */
#define CONV_TT 32

// One thread per (token, channel): y[t,e] = silu(b[e] + Σ_j w[e,j] · x[t-K+1+j, e]), where
// positions before the sequence start come from its conv state (zeros when fresh). The sum is
// the explicit fmaf chain shared by every kernel here (see the header).
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
    fmb_pdl_wait(); // PDL: everything below reads the kernels' data
    fmb_pdl_trigger();
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
        acc = fmaf(w[(size_t)e * K + j], v, acc);
    }
    fmb_st(y + t * ldy + e, fmb_silu(acc));
}

// 8 consecutive channels of a row as 16-byte words: Q words, unpacked to / packed from 8
// floats (bf16 ↔ f32 exactly as fmb_ld / fmb_st convert: a shift, round to nearest even).
template <typename X> struct conv_vec;

template <> struct conv_vec<float> {
    enum { Q = 2 };
    static __device__ __forceinline__ void unpack(const uint4 *q, float *v)
    {
        v[0] = __uint_as_float(q[0].x), v[1] = __uint_as_float(q[0].y);
        v[2] = __uint_as_float(q[0].z), v[3] = __uint_as_float(q[0].w);
        v[4] = __uint_as_float(q[1].x), v[5] = __uint_as_float(q[1].y);
        v[6] = __uint_as_float(q[1].z), v[7] = __uint_as_float(q[1].w);
    }
    static __device__ __forceinline__ void pack(const float *v, uint4 *q)
    {
        q[0] = make_uint4(__float_as_uint(v[0]), __float_as_uint(v[1]), __float_as_uint(v[2]),
                          __float_as_uint(v[3]));
        q[1] = make_uint4(__float_as_uint(v[4]), __float_as_uint(v[5]), __float_as_uint(v[6]),
                          __float_as_uint(v[7]));
    }
};

static __device__ __forceinline__ uint32_t conv_bf16x2(float lo, float hi)
{
    return (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(lo)) |
           ((uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(hi)) << 16);
}

template <> struct conv_vec<__nv_bfloat16> {
    enum { Q = 1 };
    static __device__ __forceinline__ float lo(uint32_t u)
    {
        return __uint_as_float(u << 16);
    }
    static __device__ __forceinline__ float hi(uint32_t u)
    {
        return __uint_as_float(u & 0xffff0000u);
    }
    static __device__ __forceinline__ void unpack(const uint4 *q, float *v)
    {
        v[0] = lo(q[0].x), v[1] = hi(q[0].x), v[2] = lo(q[0].y), v[3] = hi(q[0].y);
        v[4] = lo(q[0].z), v[5] = hi(q[0].z), v[6] = lo(q[0].w), v[7] = hi(q[0].w);
    }
    static __device__ __forceinline__ void pack(const float *v, uint4 *q)
    {
        q[0] = make_uint4(conv_bf16x2(v[0], v[1]), conv_bf16x2(v[2], v[3]), conv_bf16x2(v[4], v[5]),
                          conv_bf16x2(v[6], v[7]));
    }
};

// One thread per (8 channels e0..e0+7, run of CONV_TT tokens r0..r1-1 of the chunk). The
// window (x[t-K+1 .. t-1] of the next token t, oldest first) is built at the run's start from
// the rows before it that belong to r0's sequence and from that sequence's state (zeros when
// fresh) for the positions before the sequence start; at each later sequence start inside the
// run it is rebuilt from the new sequence's state alone. Each row is loaded once, U rows at a
// time (several 16-byte loads in flight per thread); outputs use the same fmaf chain as
// conv_kernel. The loads that depend on nothing (the window rows, the first U rows, r0's
// sequence) are issued before the weights are staged, so that their latencies overlap. Every
// thread of a block has the same run, so all token-level branches are uniform. x and y must
// not overlap (they never do: the state kernel reads x afterwards).
template <typename X, int KC>
static __global__ void __launch_bounds__(CONV_TILE_THREADS)
    conv_tile_kernel(const X *__restrict__ x,
                     size_t ldx,
                     X *__restrict__ y,
                     size_t ldy,
                     const float *__restrict__ w,
                     const float *__restrict__ b,
                     int E,
                     fmb_kplan p,
                     size_t conv_off)
{
    typedef conv_vec<X> V;
    // SW: a thread's row of sw, [bias(8), w(8·K)] of its channels, + 1 so that the rows of a
    // warp's threads start in distinct banks (SW is odd)
    enum { Q = V::Q, U = 4 / V::Q, SW = 8 * KC + 9 };
    __shared__ float sw[CONV_TILE_THREADS * SW];
    const int g = blockIdx.x * CONV_TILE_THREADS + threadIdx.x;
    const bool active = g < E / 8; // the others only help stage the weights
    const int e0 = active ? g * 8 : 0;
    const int32_t r0 = (int32_t)blockIdx.y * CONV_TT;
    const int32_t r1 = min(r0 + CONV_TT, (int32_t)p.T);
    const X *xe = x + e0;
    X *ye = y + e0;
    // The block's biases and weights (1024 channels) through shared memory: loaded coalesced,
    // each thread then reads its own row. Loading them straight from global memory would cost
    // a cache line per thread and per float (the threads' weights are 8·K floats apart).
    const int eb = blockIdx.x * CONV_TILE_THREADS * 8, nb = min(CONV_TILE_THREADS * 8, E - eb);
    // Unrolled, so that all 8·(K+1) loads of a thread are in flight at once (a loop that
    // waits for each load before the next store takes a latency per float).
    float bl[8], wl[8 * KC];
#pragma unroll
    for (int k = 0; k < 8; k++) {
        const int i = threadIdx.x + k * CONV_TILE_THREADS; // channel eb + i
        bl[k] = b && i < nb ? b[eb + i] : 0.0f;
    }
#pragma unroll
    for (int k = 0; k < 8 * KC; k++) {
        const int i = threadIdx.x + k * CONV_TILE_THREADS; // weight eb·K + i
        wl[k] = i < nb * KC ? w[(size_t)eb * KC + i] : 0.0f;
    }
    // PDL: the weights above may be read early; x, the plan and the states only after this
    fmb_pdl_wait();
    fmb_pdl_trigger();
    // rows r0-K+1 .. r0-1 (those ≥ 0) and r0 .. r0+U-1 (those < r1), r0's sequence
    uint4 qw[KC - 1][Q], q[U][Q];
#pragma unroll
    for (int j = 0; j < KC - 1; j++)
#pragma unroll
        for (int k = 0; k < Q; k++)
            qw[j][k] = active && r0 - (KC - 1) + j >= 0
                           ? __ldg((const uint4 *)(xe + (size_t)(r0 - (KC - 1) + j) * ldx) + k)
                           : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
        for (int k = 0; k < Q; k++)
            q[u][k] = active && r0 + u < r1
                          ? __ldg((const uint4 *)(xe + (size_t)(r0 + u) * ldx) + k)
                          : make_uint4(0, 0, 0, 0);
    int s = p.tok_seq[r0];
#pragma unroll
    for (int k = 0; k < 8; k++) {
        const int i = threadIdx.x + k * CONV_TILE_THREADS;
        sw[(i / 8) * SW + i % 8] = bl[k];
    }
#pragma unroll
    for (int k = 0; k < 8 * KC; k++) {
        const int i = threadIdx.x + k * CONV_TILE_THREADS;
        sw[(i / (8 * KC)) * SW + 8 + i % (8 * KC)] = wl[k];
    }
    __syncthreads();
    if (!active)
        return;
    float wt[8][KC], bias[8], win[8][KC - 1];
    const float *my = sw + threadIdx.x * SW;
#pragma unroll
    for (int c = 0; c < 8; c++) {
        bias[c] = my[c];
#pragma unroll
        for (int j = 0; j < KC; j++)
            wt[c][j] = my[8 + c * KC + j];
    }
    // the window at r0: rows of s, or its state's slot pos - t0 + K-1 (in [0, K-2]) before t0
    int32_t t0 = p.seq_start[s], tn = p.seq_start[s + 1]; // tn: where the next sequence starts
    {
        const float *st = p.state[s] + conv_off + (size_t)e0 * (KC - 1);
        const int has = p.has_state[s];
#pragma unroll
        for (int j = 0; j < KC - 1; j++) {
            const int32_t pos = r0 - (KC - 1) + j;
            float v[8];
            V::unpack(qw[j], v);
#pragma unroll
            for (int c = 0; c < 8; c++)
                win[c][j] = pos >= t0 ? v[c]
                            : has     ? st[(size_t)c * (KC - 1) + (pos - t0 + (KC - 1))]
                                      : 0.0f;
        }
    }
    for (int32_t tb = r0; tb < r1; tb += U) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int32_t t = tb + u;
            if (t >= r1)
                break;
            if (t == tn) {
                // t starts the next (non-empty) sequence: the window is its state, slots 0..K-2
                s = p.tok_seq[t];
                tn = p.seq_start[s + 1];
                const float *st = p.state[s] + conv_off + (size_t)e0 * (KC - 1);
                const int has = p.has_state[s];
#pragma unroll
                for (int c = 0; c < 8; c++)
#pragma unroll
                    for (int j = 0; j < KC - 1; j++)
                        win[c][j] = has ? st[(size_t)c * (KC - 1) + j] : 0.0f;
            }
            float v[8], o[8];
            V::unpack(q[u], v);
#pragma unroll
            for (int c = 0; c < 8; c++) {
                float acc = bias[c];
#pragma unroll
                for (int j = 0; j < KC - 1; j++)
                    acc = fmaf(wt[c][j], win[c][j], acc);
                acc = fmaf(wt[c][KC - 1], v[c], acc);
                o[c] = fmb_silu(acc);
#pragma unroll
                for (int j = 0; j + 1 < KC - 1; j++)
                    win[c][j] = win[c][j + 1];
                win[c][KC - 2] = v[c];
            }
            uint4 r[Q];
            V::pack(o, r);
#pragma unroll
            for (int k = 0; k < Q; k++)
                *((uint4 *)(ye + (size_t)t * ldy) + k) = r[k];
        }
        // the next U rows
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int k = 0; k < Q; k++)
                q[u][k] = tb + U + u < r1
                              ? __ldg((const uint4 *)(xe + (size_t)(tb + U + u) * ldx) + k)
                              : make_uint4(0, 0, 0, 0);
    }
}

// One thread per (sequence, channel): the state becomes the last K-1 inputs.
template <typename X>
static __global__ void
conv_state_kernel(const X *x, size_t ldx, int E, int K, fmb_kplan p, size_t conv_off)
{
    fmb_pdl_wait(); // PDL: everything below reads or writes the kernels' data
    fmb_pdl_trigger();
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
// Same fmaf chain as conv_kernel: acc = b, then acc = fmaf(w[e,j], window[j], acc) in order.
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
    const int ec = e < E ? e : E - 1;
    // PDL: the weights may be read before the wait, x, the plan and the states after it
    float win[CONV_KMAX], wj[CONV_KMAX];
#pragma unroll
    for (int j = 0; j < CONV_KMAX; j++)
        wj[j] = j < K ? w[(size_t)ec * K + j] : 0.0f;
    const float bias = b ? b[ec] : 0.0f;
    fmb_pdl_wait();
    fmb_pdl_trigger();
    int s = blockIdx.y;
    if (e >= E)
        return;
    int32_t t0 = p.seq_start[s], t1 = p.seq_start[s + 1];
    float *st = p.state[s] + conv_off + (size_t)e * (K - 1);
    int has = p.has_state[s];
#pragma unroll
    for (int j = 0; j < CONV_KMAX; j++)
        win[j] = (j < K - 1 && has) ? st[j] : 0.0f;
    for (int32_t t = t0; t < t1; t++) {
        const float xv = fmb_ld(x + (size_t)t * ldx + e);
        float acc = bias;
#pragma unroll
        for (int j = 0; j < CONV_KMAX; j++)
            if (j < K - 1)
                acc = fmaf(wj[j], win[j], acc);
#pragma unroll
        for (int j = 0; j < CONV_KMAX; j++)
            if (j == K - 1)
                acc = fmaf(wj[j], xv, acc);
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

// conv_tile_kernel's preconditions: whole 16-byte words for every row's 8-channel groups.
static int conv_tile_ok(const void *x, size_t ldx, const void *y, size_t ldy, size_t E, size_t K)
{
    return K >= 2 && K <= CONV_TILE_KMAX && E % 8 == 0 && ldx % 8 == 0 && ldy % 8 == 0 &&
           ((uintptr_t)x & 15) == 0 && ((uintptr_t)y & 15) == 0;
}

template <typename X>
static void conv_tile_launch(const fmb_cuda_ctx *c,
                             const X *x,
                             size_t ldx,
                             X *y,
                             size_t ldy,
                             const float *w,
                             const float *b,
                             size_t E,
                             size_t K,
                             const fmb_kplan *p,
                             size_t conv_off)
{
    dim3 g(fmb_cdiv(E / 8, CONV_TILE_THREADS), fmb_cdiv(p->T, CONV_TT));
    switch (K) {
    case 2:
        FMB_LAUNCH_PDL(c, conv_tile_kernel<X, 2>, g, dim3(CONV_TILE_THREADS), 0, x, ldx, y, ldy, w,
                       b, (int)E, *p, conv_off);
        break;
    case 3:
        FMB_LAUNCH_PDL(c, conv_tile_kernel<X, 3>, g, dim3(CONV_TILE_THREADS), 0, x, ldx, y, ldy, w,
                       b, (int)E, *p, conv_off);
        break;
    case 4:
        FMB_LAUNCH_PDL(c, conv_tile_kernel<X, 4>, g, dim3(CONV_TILE_THREADS), 0, x, ldx, y, ldy, w,
                       b, (int)E, *p, conv_off);
        break;
    default:
        FMB_ASSERTF(0, "conv_tile_kernel: K = %zu", K);
    }
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
                         FMB_LAUNCH_PDL(c, conv_seq_kernel<X>, g, dim3(128), 0, (const X *)x, ldx,
                                        (X *)y, ldy, w, b, (int)E, (int)K, *p, conv_off));
        FMB_LAUNCH_CHECK(c);
        return;
    }
    if (p->T > 0 && conv_tile_ok(x, ldx, y, ldy, E, K)) {
        // prefill: 8 channels × CONV_TT tokens per thread, 16-byte loads and stores
        FMB_DISPATCH_ACT(
            xt, X, conv_tile_launch<X>(c, (const X *)x, ldx, (X *)y, ldy, w, b, E, K, p, conv_off));
        FMB_LAUNCH_CHECK(c);
    } else if (p->T > 0) {
        dim3 g(fmb_cdiv(E, 128), (unsigned)p->T);
        FMB_DISPATCH_ACT(xt, X,
                         FMB_LAUNCH_PDL(c, conv_kernel<X>, g, dim3(128), 0, (const X *)x, ldx,
                                        (X *)y, ldy, w, b, (int)E, (int)K, *p, conv_off));
        FMB_LAUNCH_CHECK(c);
    }
    // the states after every output kernel (same stream): no thread reads a state that
    // another one has already overwritten
    if (K > 1) {
        dim3 g2(fmb_cdiv(E, 128), (unsigned)p->nseq);
        FMB_DISPATCH_ACT(xt, X,
                         FMB_LAUNCH_PDL(c, conv_state_kernel<X>, g2, dim3(128), 0, (const X *)x,
                                        ldx, (int)E, (int)K, *p, conv_off));
        FMB_LAUNCH_CHECK(c);
    }
}
