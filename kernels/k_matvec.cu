/*
 * k_matvec: the decode-time product y[b, :] = W · x[b, :] for a few rows of x (B ≤ 8) with
 * bf16 W and x, fp32 accumulation (B ≤ 16: batches above 8 go to cuBLAS by default, or to
 * the tensor-core kernel below with the kernel option matvec=mma; see fmb_k_matvec). Decode at
 * small batch is bound by reading W once; this kernel streams W with 16-byte non-caching loads,
 * several in flight per thread, while the small x stays in L1/L2. A row of W is shared by tpr
 * threads (tpr = 32..256 chosen from Kd so that short rows, e.g. dt_proj's 256, still use whole
 * warps).
 */
#include "kernels/k_common.cuh"

#define MV_THREADS 256

__device__ __forceinline__ uint4 ld_stream(const uint4 *p)
{
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}

__device__ __forceinline__ void unpack8(uint4 v, float *f)
{
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&v;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        float2 p = __bfloat1622float2(h[j]);
        f[2 * j] = p.x;
        f[2 * j + 1] = p.y;
    }
}

/* acc[b] += Σ_j W[m, 8·k8 + j] · x[b, 8·k8 + j] for one 16-byte chunk wv of the row. */
template <int B>
__device__ __forceinline__ void
mv_chunk(uint4 wv, const __nv_bfloat16 *__restrict__ x, size_t ldx, int k8, float *acc)
{
    float wf[8];
    unpack8(wv, wf);
#pragma unroll
    for (int b = 0; b < B; b++) {
        float xf[8];
        unpack8(__ldg((const uint4 *)(x + (size_t)b * ldx) + k8), xf);
#pragma unroll
        for (int j = 0; j < 8; j++)
            acc[b] = fmaf(wf[j], xf[j], acc[b]);
    }
}

// A thread of row m handles the 16-byte chunks k8 = lt, lt + tpr, lt + 2·tpr, ... in that
// order, four at a time while four remain, then one at a time. PDL (k_common.cuh): the
// thread's first chunks of W (which no kernel writes) are loaded before fmb_pdl_wait(): the
// first group of four, or the first single chunk when there is no group (at the 7B shapes
// that is all of a thread's W: four chunks for Kd = 4096 and 8192, one for Kd = 256), so they
// are in flight while the previous kernel finishes; x is read after the wait. The sums run in
// the same order as without PDL.
template <int B, typename Y>
static __global__ void __launch_bounds__(MV_THREADS)
    matvec_kernel(const __nv_bfloat16 *__restrict__ W,
                  size_t ldw,
                  const __nv_bfloat16 *__restrict__ x,
                  size_t ldx,
                  Y *y,
                  size_t ldy,
                  int M,
                  int Kd,
                  int tpr,
                  int accumulate)
{
    __shared__ float red[B][MV_THREADS / 32];
    const int rpb = MV_THREADS / tpr;
    const int r = threadIdx.x / tpr, lt = threadIdx.x % tpr;
    const int m = blockIdx.x * rpb + r;
    const int K8 = Kd / 8;
    const uint4 *wr = (const uint4 *)(W + (size_t)(m < M ? m : 0) * ldw);
    uint4 wv[4];
    if (m < M) {
        if (lt + 3 * tpr < K8) {
#pragma unroll
            for (int q = 0; q < 4; q++)
                wv[q] = ld_stream(wr + lt + q * tpr);
        } else if (lt < K8) {
            wv[0] = ld_stream(wr + lt);
        }
    }
    fmb_pdl_wait();
    fmb_pdl_trigger();
    float acc[B];
#pragma unroll
    for (int b = 0; b < B; b++)
        acc[b] = 0.0f;
    if (m < M) {
        int k8 = lt;
        // four 16-byte loads of W in flight per thread
        for (; k8 + 3 * tpr < K8; k8 += 4 * tpr) {
            if (k8 != lt) // the first group is already loaded
#pragma unroll
                for (int q = 0; q < 4; q++)
                    wv[q] = ld_stream(wr + k8 + q * tpr);
#pragma unroll
            for (int q = 0; q < 4; q++)
                mv_chunk<B>(wv[q], x, ldx, k8 + q * tpr, acc);
        }
        for (; k8 < K8; k8 += tpr) // k8 == lt: no group ran, wv[0] holds this chunk
            mv_chunk<B>(k8 == lt ? wv[0] : ld_stream(wr + k8), x, ldx, k8, acc);
    }
    // reduce over the tpr threads of the row: within each warp, then across its warps
#pragma unroll
    for (int b = 0; b < B; b++)
        acc[b] = fmb_warp_sum(acc[b]);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, wpr = tpr / 32;
    if (wpr > 1) {
        if (lane == 0)
#pragma unroll
            for (int b = 0; b < B; b++)
                red[b][warp] = acc[b];
        __syncthreads();
        if (lt == 0)
#pragma unroll
            for (int b = 0; b < B; b++) {
                float s = 0.0f;
                for (int q = 0; q < wpr; q++)
                    s += red[b][warp + q];
                acc[b] = s;
            }
    }
    if (lt == 0 && m < M)
#pragma unroll
        for (int b = 0; b < B; b++) {
            Y *p = y + (size_t)b * ldy + m;
            float v = acc[b];
            if (accumulate)
                v += fmb_ld(p);
            fmb_st(p, v);
        }
}

// --- batches 9..16: tensor cores ------------------------------------------------------------
//
// y[b, m] = Σ_k W[m, k] x[b, k] with mma.sync m16n8k16 (bf16 in, fp32 accumulate): W is the
// A operand (16 rows of a tile), x the B operand (two n8 tiles: batch rows 0..7, 8..15). A
// thread (group g = lane/4, t = lane%4) loads 16 contiguous bytes (8 k) of W rows g and g+8
// and of x rows g and 8+g, so a warp reads 64 contiguous bytes of each row (whole sectors).
// The dot product does not depend on the order of k, so the fragments use a permuted k:
// mma #1 takes elements 0..3 of the 8 (a0/b0 = elements 0,1 as logical k 2t,2t+1; a2/b1 =
// elements 2,3 as logical k 2t+8,2t+9), mma #2 elements 4..7; A and B use the same mapping.
// A block (NW warps) owns MT·16 rows; its warps split K by 32-k steps (U steps in flight
// each) and sum their fragments through shared memory. Missing rows, batch rows and k
// (past M, B, Kd) load zeros.
__device__ __forceinline__ void mma_bf16_16816(
    float *d, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

template <int MT, int U, int NW, typename Y>
static __global__ void __launch_bounds__(NW * 32)
    matvec_mma_kernel(const __nv_bfloat16 *__restrict__ W,
                      size_t ldw,
                      const __nv_bfloat16 *__restrict__ x,
                      size_t ldx,
                      Y *y,
                      size_t ldy,
                      int M,
                      int Kd,
                      int B,
                      int accumulate)
{
    constexpr int NV = MT * 2 * 4; // accumulator floats per thread: MT m-tiles × 2 n-tiles
    __shared__ float red[NW][32][NV + 1];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int m0 = blockIdx.x * (MT * 16);
    const uint4 *wr[2 * MT];
    bool wok[2 * MT];
#pragma unroll
    for (int r = 0; r < 2 * MT; r++) { // r = mt·2 + hh: row m0 + mt·16 + hh·8 + g
        const int row = m0 + (r >> 1) * 16 + (r & 1) * 8 + g;
        wok[r] = row < M;
        wr[r] = (const uint4 *)(W + (size_t)(wok[r] ? row : 0) * ldw);
    }
    const uint4 *xr[2];
    bool xok[2];
#pragma unroll
    for (int nt = 0; nt < 2; nt++) {
        const int n = nt * 8 + g;
        xok[nt] = n < B;
        xr[nt] = (const uint4 *)(x + (size_t)(xok[nt] ? n : 0) * ldx);
    }
    float acc[MT][2][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
#pragma unroll
            for (int r = 0; r < 4; r++)
                acc[mt][nt][r] = 0.0f;
    const int K8 = Kd / 8, nsteps = (K8 + 3) / 4;
    const uint4 zero = make_uint4(0, 0, 0, 0);
    // PDL (k_common.cuh): the first U steps of W (which no kernel writes) are loaded before
    // fmb_pdl_wait(); x after it
    uint4 wv[U][2 * MT];
#pragma unroll
    for (int u = 0; u < U; u++) {
        const int ss = warp + u * NW, k8 = ss * 4 + t;
        const bool ok = ss < nsteps && k8 < K8;
#pragma unroll
        for (int r = 0; r < 2 * MT; r++)
            wv[u][r] = (ok && wok[r]) ? ld_stream(wr[r] + k8) : zero;
    }
    fmb_pdl_wait();
    fmb_pdl_trigger();
    for (int s = warp; s < nsteps; s += U * NW) {
        uint4 xv[U][2];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int ss = s + u * NW, k8 = ss * 4 + t;
            const bool ok = ss < nsteps && k8 < K8;
            if (s != warp) // the first steps' W is already loaded
#pragma unroll
                for (int r = 0; r < 2 * MT; r++)
                    wv[u][r] = (ok && wok[r]) ? ld_stream(wr[r] + k8) : zero;
#pragma unroll
            for (int nt = 0; nt < 2; nt++)
                xv[u][nt] = (ok && xok[nt]) ? __ldg(xr[nt] + k8) : zero;
        }
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int nt = 0; nt < 2; nt++) {
                    const uint4 lo = wv[u][2 * mt], hi = wv[u][2 * mt + 1], xb = xv[u][nt];
                    mma_bf16_16816(acc[mt][nt], lo.x, hi.x, lo.y, hi.y, xb.x, xb.y);
                    mma_bf16_16816(acc[mt][nt], lo.z, hi.z, lo.w, hi.w, xb.z, xb.w);
                }
    }
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
#pragma unroll
            for (int r = 0; r < 4; r++)
                red[warp][lane][(mt * 2 + nt) * 4 + r] = acc[mt][nt][r];
    __syncthreads();
    for (int i = threadIdx.x; i < 32 * NV; i += NW * 32) {
        const int l = i / NV, v = i % NV;
        float sum = 0.0f;
#pragma unroll
        for (int w = 0; w < NW; w++)
            sum += red[w][l][v];
        // accumulator layout (m16n8 f32): r 0,1 row g, r 2,3 row g+8; column 2t + (r & 1)
        const int mt = v / 8, nt = (v / 4) % 2, r = v % 4;
        const int row = m0 + mt * 16 + (l >> 2) + (r >> 1) * 8, n = nt * 8 + 2 * (l & 3) + (r & 1);
        if (row < M && n < B) {
            Y *p = y + (size_t)n * ldy + row;
            if (accumulate)
                sum += fmb_ld(p);
            fmb_st(p, sum);
        }
    }
}

template <typename Y>
static void matvec_mma_launch(const fmb_cuda_ctx *c,
                              size_t B,
                              size_t M,
                              size_t Kd,
                              const void *W,
                              size_t ldw,
                              const void *x,
                              size_t ldx,
                              void *y,
                              size_t ldy,
                              int accumulate)
{
    const __nv_bfloat16 *w = (const __nv_bfloat16 *)W, *xx = (const __nv_bfloat16 *)x;
    // 16-row blocks (MT = 1; H200: 32-row blocks left a 1.3-wave tail on in_proj, 2.1 TB/s);
    // few rows (x_proj, M = 288): 16 warps a block so that the few blocks keep more loads in
    // flight. Both keep 4 steps (8 W loads of 16 B) in flight a thread.
    if (M >= 1024)
        FMB_LAUNCH_PDL(c, matvec_mma_kernel<1, 4, 8, Y>, dim3(fmb_cdiv(M, 16)), dim3(8 * 32), 0, w,
                       ldw, xx, ldx, (Y *)y, ldy, (int)M, (int)Kd, (int)B, accumulate);
    else
        FMB_LAUNCH_PDL(c, matvec_mma_kernel<1, 4, 16, Y>, dim3(fmb_cdiv(M, 16)), dim3(16 * 32), 0,
                       w, ldw, xx, ldx, (Y *)y, ldy, (int)M, (int)Kd, (int)B, accumulate);
    FMB_LAUNCH_CHECK(c);
}

extern "C" int fmb_k_matvec_supported(size_t B, size_t Kd, size_t ldw, fmb_kdt xt)
{
    return B >= 1 && B <= FMB_MATVEC_MAXB && Kd % 8 == 0 && ldw % 8 == 0 && Kd >= 8 &&
           xt == FMB_KDT_BF16;
}

template <typename Y>
static void matvec_launch(const fmb_cuda_ctx *c,
                          size_t B,
                          size_t M,
                          size_t Kd,
                          const void *W,
                          size_t ldw,
                          const void *x,
                          size_t ldx,
                          void *y,
                          size_t ldy,
                          int accumulate)
{
    size_t k8 = Kd / 8;
    int tpr = k8 >= 1024 ? 256 : k8 >= 512 ? 128 : k8 >= 128 ? 64 : 32;
    unsigned g = fmb_cdiv(M, MV_THREADS / tpr);
    const __nv_bfloat16 *w = (const __nv_bfloat16 *)W, *xx = (const __nv_bfloat16 *)x;
    Y *yy = (Y *)y;
    switch (B) {
#define MV_CASE(BB)                                                                                \
    case BB:                                                                                       \
        FMB_LAUNCH_PDL(c, matvec_kernel<BB, Y>, dim3(g), dim3(MV_THREADS), 0, w, ldw, xx, ldx, yy, \
                       ldy, (int)M, (int)Kd, tpr, accumulate);                                     \
        break;
        MV_CASE(1)
        MV_CASE(2)
        MV_CASE(3)
        MV_CASE(4)
        MV_CASE(5)
        MV_CASE(6)
        MV_CASE(7)
        MV_CASE(8)
#undef MV_CASE
    }
    FMB_LAUNCH_CHECK(c);
}

extern "C" void fmb_k_matvec(const fmb_cuda_ctx *c,
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
                             int accumulate)
{
    FMB_ASSERT(fmb_k_matvec_supported(B, Kd, ldw, xt));
    FMB_ASSERT(ldx % 8 == 0 && ((uintptr_t)W & 15) == 0 && ((uintptr_t)x & 15) == 0);
    FMB_ASSERT(M <= INT32_MAX && Kd <= INT32_MAX);
    if (M == 0)
        return;
    FMB_ASSERTF(yt == FMB_KDT_F32 || yt == FMB_KDT_BF16, "fmb_k_matvec: unsupported output type %d",
                (int)yt);
    // c->matvec_algo: auto = cc (CUDA cores for B ≤ 8, cuBLAS above), mma (tensor cores for
    // every B; slower at the 7B shape so far, bench/RESULTS.md).
    if (c->matvec_algo == FMB_MATVEC_MMA) {
        // tensor cores: W read once for all B rows
        if (yt == FMB_KDT_F32)
            matvec_mma_launch<float>(c, B, M, Kd, W, ldw, x, ldx, y, ldy, accumulate);
        else
            matvec_mma_launch<__nv_bfloat16>(c, B, M, Kd, W, ldw, x, ldx, y, ldy, accumulate);
        return;
    }
    if (B > 8) {
        fmb_k_gemm(c, B, M, Kd, x, ldx, W, ldw, FMB_KDT_BF16, y, ldy, yt, accumulate ? 1.0f : 0.0f);
        return;
    }
    if (yt == FMB_KDT_F32)
        matvec_launch<float>(c, B, M, Kd, W, ldw, x, ldx, y, ldy, accumulate);
    else
        matvec_launch<__nv_bfloat16>(c, B, M, Kd, W, ldw, x, ldx, y, ldy, accumulate);
}
