/*
 * k_matvec: the decode-time product y[b, :] = W · x[b, :] (+ y) for any number B ≥ 1 of rows
 * of x, bf16 W and x, fp32 accumulation on tensor cores (mma.sync m16n8k16), batch-invariant:
 * the bits of y[b, m] depend on W[m, :], x[b, :], the old y[b, m] (accumulate), M and Kd only,
 * never on B, on the other rows of x or on b's position in the batch, so that a sequence's
 * decode results do not depend on which sequences share its step (docs/DECISIONS.md).
 *
 * Two kernels, chosen by M alone: the wide matrices (M ≥ MV_CHAIN_M: in_proj, dt_proj, out_proj,
 * lm_head) take the chain kernel below, one sum per output over all of K, whose tiling is free
 * in the batch too (fast at 1 and at 256 rows); the narrow ones (x_proj, M = 288), where one
 * sum per output would leave too few warps to stream W, take the split kernel described here.
 *
 * The split kernel's reduction of one output, fixed by (M, Kd) alone:
 *   - K is cut into steps of 32 (8 per thread of a quad; the last step zero-padded past Kd);
 *   - NW = mv_warps(M) parts: part w holds the steps w, w + NW, w + 2·NW, ... and sums them in
 *     that order into an mma accumulator starting at +0, two mmas a step (elements 0..3 of each
 *     thread's 8, then 4..7, with the fixed k permutation below);
 *   - y = ((0 + part 0) + part 1) + ... + part NW-1, then (accumulate) y = that + old y;
 *     rounded once to y's type.
 * Everything else is free and may be tuned from B without changing a bit: which 16-row tiles
 * (MT) and 8-row batch tiles (NT) a block holds, how many steps are loaded ahead (U), how the
 * batch is cut into groups of NT·8 rows. That rests on the mma computing each output element
 * from its own row of A, column of B and accumulator only, the same way in every column (a
 * zero or any other value in another column changes nothing): NVIDIA's tensor cores do (the
 * kernel test checks it bitwise: every row at B = 1 and at B = 200 in a shuffled position).
 * Steps past the end (a warp's last round of U) skip their mma rather than add zeros.
 *
 * Decode at small batch is bound by reading W once: W is streamed with 16-byte non-caching
 * loads, U steps (2·MT loads of 16 B each) in flight per thread, x read through L1/L2. Above
 * NT·8 = 64 batch rows the batch is cut into groups, one block per (row tile, group), the
 * groups of a row tile adjacent in the grid so that they run together and W's re-reads hit L2.
 */
#include "kernels/k_common.cuh"

__device__ __forceinline__ uint4 ld_stream(const uint4 *p)
{
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}

// y[b, m] = Σ_k W[m, k] x[b, k] with mma.sync m16n8k16 (bf16 in, fp32 accumulate): W is the
// A operand (16 rows of a tile), x the B operand (n8 tiles of 8 batch rows). A thread (group
// g = lane/4, t = lane%4) loads 16 contiguous bytes (8 k) of W rows g and g+8 and of x row g
// of each n-tile, so a warp reads 64 contiguous bytes of each row (whole sectors). The dot
// product does not depend on the order of k, so the fragments use a permuted k: mma #1 takes
// elements 0..3 of the 8 (a0/b0 = elements 0,1 as logical k 2t,2t+1; a2/b1 = elements 2,3 as
// logical k 2t+8,2t+9), mma #2 elements 4..7; A and B use the same mapping.
__device__ __forceinline__ void mma_bf16_16816(
    float *d, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* Warps a block splits K over: the number of parts of every output's sum. A function of M
 * only (with Kd, through the steps, it fixes every output's reduction). H200: 16-row blocks of
 * 8 warps for the big matrices; few rows (x_proj, M = 288): 16 warps so that the few blocks
 * keep more loads in flight. */
static int mv_warps(size_t M)
{
    return M >= 1024 ? 8 : 16;
}

/* n-tiles per slice of the shared-memory reduction: the buffer red[NW][32][4·MT·NS + 1]
 * stays ≤ 18.5 KB (NW·MT·NS ≤ 32). */
template <int MT, int NT, int NW> struct mv_slice {
    static constexpr int ns0 = 32 / (NW * MT);
    static constexpr int NS = ns0 < 1 ? 1 : ns0 > NT ? NT : ns0;
    static_assert(NT % NS == 0, "slices must cut NT evenly");
};

// A block of NW warps owns MT·16 rows of W (row tile rt) and NT·8 rows of x (group gi):
// blockIdx.x = rt · ngroups + gi. Warp w runs the steps of part w. Missing rows, batch rows
// and k (past M, B, Kd) load zeros. PDL (k_common.cuh): the first U steps of W (which no
// kernel writes) are loaded before fmb_pdl_wait(); x and y after it; every thread waits, none
// returns early.
template <int MT, int NT, int U, int NW, typename Y>
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
                      int ngroups,
                      int accumulate)
{
    constexpr int NS = mv_slice<MT, NT, NW>::NS, SV = MT * NS * 4; // floats per slice a thread
    __shared__ float red[NW][32][SV + 1];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int rt = blockIdx.x / ngroups, gi = blockIdx.x % ngroups;
    const int m0 = rt * (MT * 16), n0 = gi * (NT * 8);
    const uint4 *wr[2 * MT];
    bool wok[2 * MT];
#pragma unroll
    for (int r = 0; r < 2 * MT; r++) { // r = mt·2 + hh: row m0 + mt·16 + hh·8 + g
        const int row = m0 + (r >> 1) * 16 + (r & 1) * 8 + g;
        wok[r] = row < M;
        wr[r] = (const uint4 *)(W + (size_t)(wok[r] ? row : 0) * ldw);
    }
    // this thread's x row of n-tile nt is n0 + nt·8 + g, a real row where nt·8 < nvalid (none
    // when nvalid ≤ 0; the base is then clamped to row 0 and never read)
    const int nvalid = B - n0 - g;
    const __nv_bfloat16 *xg = x + (size_t)(nvalid > 0 ? n0 + g : 0) * ldx;
    float acc[MT][NT][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int r = 0; r < 4; r++)
                acc[mt][nt][r] = 0.0f;
    const int K8 = Kd / 8, nsteps = (K8 + 3) / 4;
    const uint4 zero = make_uint4(0, 0, 0, 0);
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
    // Few batch rows (NT <= 2: x_proj's decode): the next round's W is loaded while this round
    // computes, and the round's x before its first mma, so that neither latency is paid once a
    // round (a part has only 16 steps of x_proj's 8192 k: a wait a round was most of its time).
    // The same loads and the same mmas in the same order: the same bits as the plain loop.
    constexpr bool PIPE = NT <= 2;
    uint4 wn[PIPE ? U : 1][2 * MT];
    uint4 xr[PIPE ? U : 1][PIPE ? NT : 1];
    for (int s = warp; s < nsteps; s += U * NW) {
        if constexpr (PIPE) {
            if (s + U * NW < nsteps)
#pragma unroll
                for (int u = 0; u < U; u++) {
                    const int ss = s + U * NW + u * NW, k8 = ss * 4 + t;
                    const bool ok = ss < nsteps && k8 < K8;
#pragma unroll
                    for (int r = 0; r < 2 * MT; r++)
                        wn[u][r] = (ok && wok[r]) ? ld_stream(wr[r] + k8) : zero;
                }
#pragma unroll
            for (int u = 0; u < U; u++) {
                const int ss = s + u * NW, k8 = ss * 4 + t;
                const bool kok = ss < nsteps && k8 < K8;
#pragma unroll
                for (int nt = 0; nt < NT; nt++)
                    xr[u][nt] = (kok && nt * 8 < nvalid)
                                    ? __ldg((const uint4 *)(xg + (size_t)nt * 8 * ldx) + k8)
                                    : zero;
            }
        } else if (s != warp) { // the first steps' W is already loaded
#pragma unroll
            for (int u = 0; u < U; u++) {
                const int ss = s + u * NW, k8 = ss * 4 + t;
                const bool ok = ss < nsteps && k8 < K8;
#pragma unroll
                for (int r = 0; r < 2 * MT; r++)
                    wv[u][r] = (ok && wok[r]) ? ld_stream(wr[r] + k8) : zero;
            }
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int ss = s + u * NW, k8 = ss * 4 + t;
            if (ss >= nsteps) // warp-uniform: past this part's last step, no mma
                break;
            const bool kok = k8 < K8;
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                uint4 xb;
                if constexpr (PIPE)
                    xb = xr[u][nt];
                else
                    xb = (kok && nt * 8 < nvalid)
                             ? __ldg((const uint4 *)(xg + (size_t)nt * 8 * ldx) + k8)
                             : zero;
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    const uint4 lo = wv[u][2 * mt], hi = wv[u][2 * mt + 1];
                    mma_bf16_16816(acc[mt][nt], lo.x, hi.x, lo.y, hi.y, xb.x, xb.y);
                    mma_bf16_16816(acc[mt][nt], lo.z, hi.z, lo.w, hi.w, xb.z, xb.w);
                }
            }
        }
        if constexpr (PIPE)
#pragma unroll
            for (int u = 0; u < U; u++)
#pragma unroll
                for (int r = 0; r < 2 * MT; r++)
                    wv[u][r] = wn[u][r];
    }
    // the NW parts of every output summed in order 0..NW-1, NS n-tiles at a time
#pragma unroll
    for (int sl = 0; sl < NT / NS; sl++) {
        if (sl)
            __syncthreads(); // the previous slice has been read
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int j = 0; j < NS; j++)
#pragma unroll
                for (int r = 0; r < 4; r++)
                    red[warp][lane][(mt * NS + j) * 4 + r] = acc[mt][sl * NS + j][r];
        __syncthreads();
        for (int i = threadIdx.x; i < 32 * SV; i += NW * 32) {
            const int l = i / SV, v = i % SV;
            float sum = 0.0f;
#pragma unroll
            for (int w = 0; w < NW; w++)
                sum += red[w][l][v];
            // accumulator layout (m16n8 f32): r 0,1 row g, r 2,3 row g+8; column 2t + (r & 1)
            const int mt = v / (NS * 4), nt = sl * NS + (v / 4) % NS, r = v % 4;
            const int row = m0 + mt * 16 + (l >> 2) + (r >> 1) * 8;
            const int n = n0 + nt * 8 + 2 * (l & 3) + (r & 1);
            if (row < M && n < B) {
                Y *p = y + (size_t)n * ldy + row;
                if (accumulate)
                    sum += fmb_ld(p);
                fmb_st(p, sum);
            }
        }
    }
}

/* ---- the chain kernel: one sum per output, for the wide matrices (M ≥ MV_CHAIN_M) ----------
 *
 * The reduction of one output y[b, m], fixed by Kd alone: K is cut into S = ⌈Kd/32⌉ steps of
 * 32 (the last zero-padded past Kd); the sum starts at +0 and takes the steps in order 0..S-1,
 * two mmas a step (the same k permutation as above, x the A operand and W the B operand), then
 * (accumulate) y = that + old y, rounded once to y's type. No part is summed apart, so no
 * warp or block ever needs another's results, and the tiling is free in both directions: a
 * block may hold any number of batch rows (reusing each W load across them) without changing
 * a bit. That rests on the mma computing each output element from its own row of A, column
 * of B and accumulator only, the same way at every row and column of the tile (the kernel test
 * checks it bitwise: every row at B = 1 and at B = 200 in a shuffled position).
 *
 * Roles: x is the A operand (m16: 16 batch rows a tile), W the B operand (n8: 8 rows of W a
 * tile), so that the smallest unit of W a warp streams is 8 rows (at B = 1 the 4096 rows of
 * out_proj are 512 warps). A thread (g = lane/4, t = lane%4) takes 16 contiguous bytes (8 k)
 * of W row g of each n-tile and of x rows g and g+8 of each m-tile: mma #1 takes elements 0..3
 * (a0/b0 = elements 0,1 as logical k 2t,2t+1; a2/b1 = elements 2,3 as logical k 2t+8,2t+9),
 * mma #2 elements 4..7. Two kernels compute these sums: matvec_rows_kernel for B ≤ 16 (bound
 * by reading W once) and matvec_chain_kernel above (each W load reused over up to 128 batch
 * rows). Missing rows, batch rows and k (past M, B, Kd) take zeros. Both copy global → shared
 * with cp.async, whose commit groups make the pipeline's depth exact (a ring of register loads
 * shares the warp's few scoreboards: measured, it waited on the newest load and ran at 1-3
 * TB/s). PDL: the first stages of W (which no kernel writes) are copied before fmb_pdl_wait(),
 * x and y read after it. */
#define MV_CHAIN_M 1024

/* Shared memory of one chain block: each warp's W ring, then the block's x ring. */
template <int MT, int NT, int D, int NW> struct chain_smem {
    static constexpr size_t w_warp = (size_t)D * NT * 32;  /* uint4 a warp */
    static constexpr size_t x_stage = (size_t)MT * 16 * 4; /* uint4 a stage */
    static constexpr size_t bytes = (NW * w_warp + D * x_stage) * 16;
    static_assert(bytes <= 48 * 1024, "a chain block fits the default 48 KB (and sm_86's 99)");
};

/* The batch kernel: a block of NW warps owns NW·NT·8 rows of W (warp w: NT n-tiles of its own)
 * and MT·16 rows of x (group gi): blockIdx.x = rt · ngroups + gi, the groups of a row tile
 * adjacent so that W's re-reads hit L2. A stage is one step; D stages in flight. W lands in a
 * ring of the warp's own, each thread's 16-byte pieces in a slot only it reads; x in a ring of
 * the block's, which every warp reads (a barrier a stage). Group order: W's first D-1 stages
 * (before the wait, a group each), x's first D-1 (a group each), then a group a stage with
 * both: waiting until D-2 groups are pending always leaves stage st landed. */
template <int MT, int NT, int D, int NW, typename Y>
static __global__ void __launch_bounds__(NW * 32)
    matvec_chain_kernel(const __nv_bfloat16 *__restrict__ W,
                        size_t ldw,
                        const __nv_bfloat16 *__restrict__ x,
                        size_t ldx,
                        Y *y,
                        size_t ldy,
                        int M,
                        int Kd,
                        int B,
                        int ngroups,
                        int accumulate)
{
    using SM = chain_smem<MT, NT, D, NW>;
    extern __shared__ __align__(16) unsigned char mv_smem[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int rt = blockIdx.x / ngroups, gi = blockIdx.x % ngroups;
    const int m0 = (rt * NW + warp) * (NT * 8), n0 = gi * (MT * 16);
    uint4 *wring = (uint4 *)mv_smem + warp * SM::w_warp; // [D][NT][32]
    uint4 *xring = (uint4 *)mv_smem + NW * SM::w_warp;   // [D][MT·16][4]
    const uint4 *wr[NT];
    bool wok[NT];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        const int row = m0 + nt * 8 + g;
        wok[nt] = row < M;
        wr[nt] = (const uint4 *)(W + (size_t)(wok[nt] ? row : 0) * ldw);
    }
    const int K8 = Kd / 8, S = (K8 + 3) / 4;
    auto w_stage = [&](int st) { // this thread's pieces of W for step st
        uint4 *dst = wring + (size_t)(st % D) * (NT * 32);
        const int k8 = st * 4 + t;
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            const bool ok = k8 < K8 && wok[nt];
            cp_async<16>(dst + nt * 32 + lane, wr[nt] + (ok ? k8 : 0), ok);
        }
    };
    auto x_stage = [&](int st) { // the block's x rows for step st
        uint4 *dst = xring + (size_t)(st % D) * SM::x_stage;
        for (int i = threadIdx.x; i < (int)SM::x_stage; i += NW * 32) {
            const int k8 = st * 4 + (i & 3), b = n0 + i / 4;
            const bool ok = b < B && k8 < K8;
            cp_async<16>(dst + i, x + (size_t)(ok ? b : 0) * ldx + (size_t)(ok ? k8 : 0) * 8, ok);
        }
    };
    for (int st = 0; st < D - 1; st++) { // W is not written by any kernel: before the wait
        w_stage(st);
        cp_async_commit();
    }
    fmb_pdl_wait();
    fmb_pdl_trigger();
    float acc[MT][NT][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int r = 0; r < 4; r++)
                acc[mt][nt][r] = 0.0f;
    for (int st = 0; st < D - 1; st++) {
        x_stage(st);
        cp_async_commit();
    }
    for (int st = 0; st < S; st++) {
        cp_async_wait<D - 2>(); // step st has landed (this thread's copies)
        __syncthreads();        // ... everyone's; and the slot of step st - 1 is free again
        w_stage(st + D - 1);
        x_stage(st + D - 1);
        cp_async_commit();
        const uint4 *wst = wring + (size_t)(st % D) * (NT * 32);
        const uint4 *xst = xring + (size_t)(st % D) * SM::x_stage;
        uint4 w[NT];
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
            w[nt] = wst[nt * 32 + lane];
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            const uint4 xa = xst[(mt * 16 + g) * 4 + t], xb = xst[(mt * 16 + 8 + g) * 4 + t];
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                mma_bf16_16816(acc[mt][nt], xa.x, xb.x, xa.y, xb.y, w[nt].x, w[nt].y);
                mma_bf16_16816(acc[mt][nt], xa.z, xb.z, xa.w, xb.w, w[nt].z, w[nt].w);
            }
        }
    }
    cp_async_wait_all(); // no copy left in flight at exit
    // accumulator layout (m16n8 f32): r 0,1 batch row g, r 2,3 batch row g+8; W row 2t + (r & 1)
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int r = 0; r < 4; r++) {
                const int b = n0 + mt * 16 + g + (r >> 1) * 8, row = m0 + nt * 8 + 2 * t + (r & 1);
                if (row < M && b < B) {
                    Y *p = y + (size_t)b * ldy + row;
                    float v = acc[mt][nt][r];
                    if (accumulate)
                        v += fmb_ld(p);
                    fmb_st(p, v);
                }
            }
}

template <int MT, int NT, int D, int NW, typename Y>
static void chain_launch(const fmb_cuda_ctx *c,
                         size_t B,
                         size_t M,
                         size_t Kd,
                         const __nv_bfloat16 *W,
                         size_t ldw,
                         const __nv_bfloat16 *x,
                         size_t ldx,
                         Y *y,
                         size_t ldy,
                         int accumulate)
{
    const size_t ng = (B + MT * 16 - 1) / (MT * 16), rts = (M + NW * NT * 8 - 1) / (NW * NT * 8);
    FMB_ASSERT(ng <= INT32_MAX && rts * ng <= 0x7fffffffu);
    FMB_LAUNCH_PDL(c, matvec_chain_kernel<MT, NT, D, NW, Y>, dim3((unsigned)(rts * ng)),
                   dim3(NW * 32), chain_smem<MT, NT, D, NW>::bytes, W, ldw, x, ldx, y, ldy, (int)M,
                   (int)Kd, (int)B, (int)ng, accumulate);
}

/* The chain for small batches (B ≤ 16: one m-tile), bound by reading W once: one warp a block,
 * 8·NT rows of W a warp, copied into the warp's shared ring a row at a time (32 lanes × 16
 * bytes = 512 contiguous bytes, 8 steps, of one row a copy instruction), D stages of 8 steps
 * in flight; rows 576 bytes apart in the ring, so that a quarter warp's 16-byte fragment
 * reads of rows g and g+1 fall in different banks. x (16 rows at most) is read from global
 * through L1 into registers a whole stage ahead: read a step ahead, x's L2 latency (every warp
 * reads all of x, each at its own pace) was what bound the kernel (H200: out_proj at 1.0 TB/s,
 * 2.1-2.4 with the stage ahead). The same sums as matvec_chain_kernel. */
template <int NT, int D, typename Y>
static __global__ void __launch_bounds__(32) matvec_rows_kernel(const __nv_bfloat16 *__restrict__ W,
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
    constexpr int RS = 36;          // ring row stride in uint4 (576 bytes)
    constexpr int ST = NT * 8 * RS; // uint4 a stage
    __shared__ uint4 ring[D * ST];
    const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
    const int m0 = blockIdx.x * (NT * 8);
    const int K8 = Kd / 8, S = (K8 + 3) / 4, NS = (S + 7) / 8;
    auto w_stage = [&](int st) { // stage st = steps 8st..8st+7 = pieces 32st..32st+31 a row
        uint4 *dst = ring + (st % D) * ST;
        const int k8 = st * 32 + lane;
#pragma unroll
        for (int r = 0; r < NT * 8; r++) {
            const int row = m0 + r;
            const bool ok = row < M && k8 < K8;
            cp_async<16>(dst + r * RS + lane,
                         (const uint4 *)(W + (size_t)(ok ? row : 0) * ldw) + (ok ? k8 : 0), ok);
        }
        cp_async_commit();
    };
    for (int st = 0; st < D - 1; st++) // W is not written by any kernel: before the wait
        w_stage(st);
    fmb_pdl_wait();
    fmb_pdl_trigger();
    float acc[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int r = 0; r < 4; r++)
            acc[nt][r] = 0.0f;
    const uint4 zero = make_uint4(0, 0, 0, 0);
    const bool xok0 = g < B, xok1 = g + 8 < B;
    const uint4 *xr0 = (const uint4 *)(x + (size_t)(xok0 ? g : 0) * ldx);
    const uint4 *xr1 = (const uint4 *)(x + (size_t)(xok1 ? g + 8 : 0) * ldx);
    // x a whole stage ahead (8 steps, ~1 µs): a step ahead left an L2 miss of x exposed every
    // step (x is read by every warp, each at its own pace)
    uint4 xc[8][2], xn[8][2];
    auto x_regs = [&](int st, uint4(&xv)[8][2]) {
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const int k8 = (st * 8 + j) * 4 + t;
            xv[j][0] = (k8 < K8 && xok0) ? __ldg(xr0 + k8) : zero;
            xv[j][1] = (k8 < K8 && xok1) ? __ldg(xr1 + k8) : zero;
        }
    };
    x_regs(0, xc);
    for (int st = 0; st < NS; st++) {
        cp_async_wait<D - 2>(); // stage st: this lane's copies have landed
        __syncwarp();           // ... and every lane's; the slot of stage st - 1 is read
        w_stage(st + D - 1);
        x_regs(st + 1, xn);
        const uint4 *ws = ring + (st % D) * ST;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            if (st * 8 + j >= S) // warp-uniform: past the last step, no mma
                break;
            const uint4 xa = xc[j][0], xb = xc[j][1];
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                const uint4 w = ws[(nt * 8 + g) * RS + j * 4 + t];
                mma_bf16_16816(acc[nt], xa.x, xb.x, xa.y, xb.y, w.x, w.y);
                mma_bf16_16816(acc[nt], xa.z, xb.z, xa.w, xb.w, w.z, w.w);
            }
        }
#pragma unroll
        for (int j = 0; j < 8; j++)
            xc[j][0] = xn[j][0], xc[j][1] = xn[j][1];
    }
    cp_async_wait_all(); // no copy left in flight at exit
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int r = 0; r < 4; r++) {
            const int b = g + (r >> 1) * 8, row = m0 + nt * 8 + 2 * t + (r & 1);
            if (row < M && b < B) {
                Y *p = y + (size_t)b * ldy + row;
                float v = acc[nt][r];
                if (accumulate)
                    v += fmb_ld(p);
                fmb_st(p, v);
            }
        }
}

template <int NT, int D, typename Y>
static void rows_launch(const fmb_cuda_ctx *c,
                        size_t B,
                        size_t M,
                        size_t Kd,
                        const __nv_bfloat16 *W,
                        size_t ldw,
                        const __nv_bfloat16 *x,
                        size_t ldx,
                        Y *y,
                        size_t ldy,
                        int accumulate)
{
    const size_t blocks = (M + NT * 8 - 1) / (NT * 8);
    FMB_ASSERT(B <= 16 && blocks <= 0x7fffffffu);
    FMB_LAUNCH_PDL(c, matvec_rows_kernel<NT, D, Y>, dim3((unsigned)blocks), dim3(32), 0, W, ldw, x,
                   ldx, y, ldy, (int)M, (int)Kd, (int)B, accumulate);
}

/* The kernel and tile shape from B, M and Kd (any choice gives the same bits). Up to 16 batch
 * rows the product is bound by reading W once: the rows kernel, with enough of W in flight
 * (in_proj's 16384 rows: 1,024 warps of 16 rows, all resident at once, 16 steps ahead each;
 * out_proj's 4096: 512 warps of 8 rows, 40 steps ahead). Above that, the batch kernel. */
template <typename Y>
static void chain_dispatch(const fmb_cuda_ctx *c,
                           size_t B,
                           size_t M,
                           size_t Kd,
                           const __nv_bfloat16 *W,
                           size_t ldw,
                           const __nv_bfloat16 *x,
                           size_t ldx,
                           Y *y,
                           size_t ldy,
                           int accumulate)
{
#define ROWS(NT, D) rows_launch<NT, D, Y>(c, B, M, Kd, W, ldw, x, ldx, y, ldy, accumulate)
#define CH(MT, NT, D, NW)                                                                          \
    chain_launch<MT, NT, D, NW, Y>(c, B, M, Kd, W, ldw, x, ldx, y, ldy, accumulate)
    if (B <= 16) {
        if (Kd <= 256) // one stage holds the rows
            ROWS(1, 2);
        else if (M >= 12288) // in_proj, lm_head
            ROWS(2, 3);
        else // out_proj
            ROWS(1, 6);
    } else if (B <= 32)
        CH(2, 4, 4, 4);
    else if (B <= 64)
        CH(4, 4, 4, 4);
    else
        CH(8, 4, 3, 4);
#undef ROWS
#undef CH
}

template <int MT, int NT, int U, int NW, typename Y>
static void mv_launch(const fmb_cuda_ctx *c,
                      size_t B,
                      size_t M,
                      size_t Kd,
                      const __nv_bfloat16 *W,
                      size_t ldw,
                      const __nv_bfloat16 *x,
                      size_t ldx,
                      Y *y,
                      size_t ldy,
                      int accumulate)
{
    const size_t ng = (B + NT * 8 - 1) / (NT * 8), rts = (M + MT * 16 - 1) / (MT * 16);
    FMB_ASSERT(ng <= INT32_MAX && rts * ng <= 0x7fffffffu);
    FMB_LAUNCH_PDL(c, matvec_mma_kernel<MT, NT, U, NW, Y>, dim3((unsigned)(rts * ng)),
                   dim3(NW * 32), 0, W, ldw, x, ldx, y, ldy, (int)M, (int)Kd, (int)B, (int)ng,
                   accumulate);
}

/* The tile shape from B (any choice gives the same bits): the smallest n-tile count that
 * holds the batch, up to 8 (64 rows) and groups of 64 above. NT = 8 with 8 warps takes two
 * row tiles a block (MT = 2) so that x is re-read from L2 half as often, with 2 steps ahead
 * (4 W loads of 16 B a thread) to stay in registers; the rest keep 4 steps ahead. */
template <int NW, typename Y>
static void mv_dispatch(const fmb_cuda_ctx *c,
                        size_t B,
                        size_t M,
                        size_t Kd,
                        const __nv_bfloat16 *W,
                        size_t ldw,
                        const __nv_bfloat16 *x,
                        size_t ldx,
                        Y *y,
                        size_t ldy,
                        int accumulate)
{
    if (B <= 8)
        mv_launch<1, 1, 4, NW, Y>(c, B, M, Kd, W, ldw, x, ldx, y, ldy, accumulate);
    else if (B <= 16)
        mv_launch<1, 2, 4, NW, Y>(c, B, M, Kd, W, ldw, x, ldx, y, ldy, accumulate);
    else if (B <= 32)
        mv_launch<1, 4, 4, NW, Y>(c, B, M, Kd, W, ldw, x, ldx, y, ldy, accumulate);
    else if constexpr (NW <= 8)
        mv_launch<2, 8, 2, NW, Y>(c, B, M, Kd, W, ldw, x, ldx, y, ldy, accumulate);
    else
        mv_launch<1, 8, 2, NW, Y>(c, B, M, Kd, W, ldw, x, ldx, y, ldy, accumulate);
}

template <typename Y>
static void matvec_run(const fmb_cuda_ctx *c,
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
    if (M >= MV_CHAIN_M && c->matvec_algo != FMB_MATVEC_CC)
        chain_dispatch<Y>(c, B, M, Kd, w, ldw, xx, ldx, (Y *)y, ldy, accumulate);
    else if (mv_warps(M) == 8)
        mv_dispatch<8, Y>(c, B, M, Kd, w, ldw, xx, ldx, (Y *)y, ldy, accumulate);
    else
        mv_dispatch<16, Y>(c, B, M, Kd, w, ldw, xx, ldx, (Y *)y, ldy, accumulate);
    FMB_LAUNCH_CHECK(c);
}

extern "C" int fmb_k_matvec_supported(size_t B, size_t Kd, size_t ldw, fmb_kdt xt)
{
    return B >= 1 && Kd % 8 == 0 && ldw % 8 == 0 && Kd >= 8 && xt == FMB_KDT_BF16;
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
    FMB_ASSERT(M <= INT32_MAX && Kd <= INT32_MAX && B <= INT32_MAX && ldy >= M);
    if (M == 0)
        return;
    FMB_ASSERTF(yt == FMB_KDT_F32 || yt == FMB_KDT_BF16, "fmb_k_matvec: unsupported output type %d",
                (int)yt);
    // c->matvec_algo: CC runs the split kernel for every M (the kernel before the chain one, for
    // comparison); every other value the kernel M picks
    if (yt == FMB_KDT_F32)
        matvec_run<float>(c, B, M, Kd, W, ldw, x, ldx, y, ldy, accumulate);
    else
        matvec_run<__nv_bfloat16>(c, B, M, Kd, W, ldw, x, ldx, y, ldy, accumulate);
}
