/*
 * k_scan: the chunked parallel selective scan over a varlen chunk, continuing from each
 * sequence's ssm state, with the elementwise work fused (dt scale and bias, softplus, the
 * discretisation, the C contraction, the D skip and the SiLU gate). kcpu twin: fmb_kcpu_scan.
 *
 * Parallel over time by segments (a chunked carry, since h_t = a_t h_{t-1} + b_t composes):
 *   pass A  every segment but a sequence's last is scanned from h = 0 by one thread per
 *           (segment, channel) holding the N states in registers; it keeps its end state and
 *           Σ dt (the segment's decay is exp(A · Σ dt), so one scalar per channel suffices);
 *   combine one thread per (sequence, channel, state) walks the segments in order from the
 *           carried state: h_in[g] = h, h = exp(A Σdt_g) h + h_end[g];
 *   pass C  every segment is rescanned from its h_in and writes y; a sequence's last segment
 *           writes the final state.
 * When every sequence fits in one segment (decode: one token each), pass C alone runs,
 * reading the carried state directly. Exponentials as exp2 with A pre-scaled by log2(e).
 * Workspace: h [nsegs, N, E] f32 (pass A's end states, overwritten by the combine's start
 * states), sdt [nsegs, E] f32.
 * Two one-pass kernels need no workspace: QUAD (4 lanes per channel, decode) and TILE (8 lanes
 * per channel, N = 16, staged 64-token tiles; prefill's default). fmb_k_scan picks.
 */
#include "kernels/k_common.cuh"

#define SCAN_THREADS               128
#define SCAN_TILE                  64 /* multiple of 4: the quad kernel's prefetch relies on it */
#define FMB_STATIC_SCAN_TILE_CHECK static_assert(SCAN_TILE % 4 == 0, "SCAN_TILE % 4")
#define LOG2E_F                    1.4426950408889634f

/* 2^x on the special-function unit, denormal results flushed to zero (a decayed state under
 * 1e-38 contributes nothing measurable); exp2f without -ftz adds three instructions around
 * the same MUFU.EX2 to produce denormals. */
__device__ __forceinline__ float ex2_ftz(float x)
{
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
}

/* silu with the fast reciprocal division (2 ulp; 0 when 1 + e^-z overflows, the limit). */
__device__ __forceinline__ float silu_fast(float z)
{
    return __fdividef(z, 1.0f + expf(-z));
}

template <typename AT, int NN, bool MASK, bool FINAL>
static __global__ void __launch_bounds__(SCAN_THREADS) scan_seg_kernel(const AT *u,
                                                                       size_t ldu,
                                                                       const AT *dtp,
                                                                       size_t lddt,
                                                                       const float *dtscale,
                                                                       const float *dt_bias,
                                                                       const float *A,
                                                                       const float *BC,
                                                                       size_t ldbc,
                                                                       const float *Dskip,
                                                                       const AT *z,
                                                                       size_t ldz,
                                                                       AT *y,
                                                                       size_t ldy,
                                                                       int E,
                                                                       int N,
                                                                       fmb_kplan p,
                                                                       size_t ssm_off,
                                                                       float *hbuf,
                                                                       float *sdt)
{
    __shared__ __align__(16) float sbc[SCAN_TILE * 2 * NN];
    __shared__ float sds[SCAN_TILE];
    const int g = blockIdx.y;
    const fmb_kseg sg = p.segs[g];
    if (!FINAL && (sg.flags & FMB_SEG_LAST))
        return; // the last segment's end state is never needed (uniform over the block)
    const int e = blockIdx.x * SCAN_THREADS + threadIdx.x;
    const bool act = e < E;
    const int ec = act ? e : E - 1; // inactive lanes compute on a valid channel, store nothing
    const int n2 = 2 * N;

    float a2[NN], h[NN];
#pragma unroll
    for (int n = 0; n < NN; n++)
        a2[n] = (!MASK || n < N) ? A[(size_t)ec * N + n] * LOG2E_F : 0.0f;
    if (!FINAL) {
#pragma unroll
        for (int n = 0; n < NN; n++)
            h[n] = 0.0f;
    } else if ((sg.flags & FMB_SEG_FIRST) && (sg.flags & FMB_SEG_LAST)) {
        // one segment: start from the carried state (zeros when fresh)
        const float *hs = p.state[sg.seq] + ssm_off + (size_t)ec * N;
#pragma unroll
        for (int n = 0; n < NN; n++)
            h[n] = ((!MASK || n < N) && !(sg.flags & FMB_SEG_FRESH)) ? hs[n] : 0.0f;
    } else {
#pragma unroll
        for (int n = 0; n < NN; n++)
            h[n] = (!MASK || n < N) ? hbuf[((size_t)g * N + n) * E + ec] : 0.0f;
    }
    const float bias = dt_bias[ec];
    const float dsk = FINAL ? Dskip[ec] : 0.0f;
    float sumdt = 0.0f;

    for (int32_t tb = sg.t0; tb < sg.t1; tb += SCAN_TILE) {
        int nt = sg.t1 - tb < SCAN_TILE ? sg.t1 - tb : SCAN_TILE;
        __syncthreads();
        for (int i = threadIdx.x; i < nt * n2; i += SCAN_THREADS) {
            int k = i / n2, j = i - k * n2;
            sbc[k * 2 * NN + (j < N ? j : NN + j - N)] = BC[(size_t)(tb + k) * ldbc + j];
        }
        for (int i = threadIdx.x; i < nt; i += SCAN_THREADS)
            sds[i] = dtscale ? dtscale[tb + i] : 1.0f;
        __syncthreads();
        // software pipeline: the next token's u, dt, z are loaded before this token's math
        size_t t = (size_t)tb;
        float ndp = fmb_ld(dtp + t * lddt + ec), nut = fmb_ld(u + t * ldu + ec);
        float nzt = FINAL ? fmb_ld(z + t * ldz + ec) : 0.0f;
        for (int k = 0; k < nt; k++, t++) {
            float dp = ndp, ut = nut, zt = nzt;
            if (k + 1 < nt) {
                ndp = fmb_ld(dtp + (t + 1) * lddt + ec);
                nut = fmb_ld(u + (t + 1) * ldu + ec);
                if (FINAL)
                    nzt = fmb_ld(z + (t + 1) * ldz + ec);
            }
            // discrete_time_step = softplus(dt_proj(rms(time_step)) + dt_proj.bias)
            float dt = fmb_softplus(dp * sds[k] + bias);
            float dtu = dt * ut;
            const float *bk = sbc + k * 2 * NN;
            float acc = 0.0f;
#pragma unroll
            for (int n = 0; n < NN; n++) {
                if (MASK && n >= N)
                    break;
                // h = exp(A dt) h + dt B u ;  y = Σ h C
                float dA = ex2_ftz(a2[n] * dt);
                h[n] = dA * h[n] + bk[n] * dtu;
                if (FINAL)
                    acc += h[n] * bk[NN + n];
            }
            if (FINAL) {
                // scan_output = (scan_output + hidden_states * D) * act(gate)
                float out = (acc + ut * dsk) * silu_fast(zt);
                if (act)
                    fmb_st(y + t * ldy + e, out);
            } else {
                sumdt += dt;
            }
        }
    }
    if (!act)
        return;
    if (!FINAL) {
#pragma unroll
        for (int n = 0; n < NN; n++)
            if (!MASK || n < N)
                hbuf[((size_t)g * N + n) * E + e] = h[n];
        sdt[(size_t)g * E + e] = sumdt;
    } else if (sg.flags & FMB_SEG_LAST) {
        float *hs = p.state[sg.seq] + ssm_off + (size_t)e * N;
#pragma unroll
        for (int n = 0; n < NN; n++)
            if (!MASK || n < N)
                hs[n] = h[n];
    }
}

// --- quad single-pass kernel ----------------------------------------------------------------
//
// One block = 32 channels × 4 lanes (128 threads), one sequence (blockIdx.y). In a warp,
// lane = j·8 + c: channel c of 8, state group j of 4 (states j·NQ .. j·NQ+NQ-1). Tokens go
// four at a time: lane j loads token k+j's u, dt and z and does its softplus and SiLU, so
// that per-channel work is not repeated by the four lanes; dt and dt·u are broadcast with
// shuffles, each lane advances its NQ states over the four tokens, partial C contractions
// are summed across the four lanes (xor 8, 16), and lane j stores token k+j's output.
// A missing token (past the end) has dt = 0: exp(0) = 1 and no input, so h is unchanged.
template <typename AT, int NQ>
static __global__ void __launch_bounds__(SCAN_THREADS) scan_quad_kernel(const AT *u,
                                                                        size_t ldu,
                                                                        const AT *dtp,
                                                                        size_t lddt,
                                                                        const float *dtscale,
                                                                        const float *dt_bias,
                                                                        const float *A,
                                                                        const float *BC,
                                                                        size_t ldbc,
                                                                        const float *Dskip,
                                                                        const AT *z,
                                                                        size_t ldz,
                                                                        AT *y,
                                                                        size_t ldy,
                                                                        int E,
                                                                        int N,
                                                                        fmb_kplan p,
                                                                        size_t ssm_off)
{
    __shared__ __align__(16) float sbc[SCAN_TILE * 32];
    __shared__ float sds[SCAN_TILE];
    const int s = blockIdx.y;
    const int32_t t0 = p.seq_start[s], t1 = p.seq_start[s + 1];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int c = lane & 7, j = lane >> 3;
    const int e = blockIdx.x * 32 + warp * 8 + c;
    const bool act = e < E;
    const int ec = act ? e : E - 1;
    const int n0 = j * NQ;
    float *hs = p.state[s] + ssm_off + (size_t)ec * N + n0;
    const bool has = p.has_state[s];
    float a2[NQ], h[NQ];
#pragma unroll
    for (int n = 0; n < NQ; n++) {
        a2[n] = A[(size_t)ec * N + n0 + n] * LOG2E_F;
        h[n] = has ? hs[n] : 0.0f;
    }
    const float bias = dt_bias[ec], dsk = Dskip[ec];
    const int n2 = 2 * N;
    // software pipeline: this lane's token of the next quad is loaded a quad ahead (the tile
    // length is a multiple of 4, so that token is always t + 4)
    float nu = 0.0f, ndp = 0.0f, nz = 0.0f;
    if (t0 + j < t1) {
        size_t t = (size_t)t0 + j;
        nu = fmb_ld(u + t * ldu + ec), ndp = fmb_ld(dtp + t * lddt + ec);
        nz = fmb_ld(z + t * ldz + ec);
    }
    for (int32_t tb = t0; tb < t1; tb += SCAN_TILE) {
        const int nt = t1 - tb < SCAN_TILE ? t1 - tb : SCAN_TILE;
        __syncthreads();
        for (int i = threadIdx.x; i < nt * n2; i += SCAN_THREADS) {
            int k = i / n2, jj = i - k * n2;
            sbc[k * 32 + (jj < N ? jj : 16 + jj - N)] = BC[(size_t)(tb + k) * ldbc + jj];
        }
        for (int i = threadIdx.x; i < nt; i += SCAN_THREADS)
            sds[i] = dtscale ? dtscale[tb + i] : 1.0f;
        __syncthreads();
        for (int k = 0; k < nt; k += 4) {
            const bool mine = k + j < nt;
            const size_t t = (size_t)tb + k + j;
            float ut = nu, dp = ndp, zt = nz, dt = 0.0f, gz = 0.0f;
            if (t + 4 < (size_t)t1) {
                nu = fmb_ld(u + (t + 4) * ldu + ec), ndp = fmb_ld(dtp + (t + 4) * lddt + ec);
                nz = fmb_ld(z + (t + 4) * ldz + ec);
            }
            if (mine) {
                // discrete_time_step = softplus(dt_proj(rms(time_step)) + dt_proj.bias)
                dt = fmb_softplus(dp * sds[k + j] + bias);
                gz = silu_fast(zt);
            }
            const float dtu = dt * ut;
            float ymine = 0.0f;
#pragma unroll
            for (int q = 0; q < 4; q++) {
                float dq = __shfl_sync(0xffffffffu, dt, q * 8 + c);
                float dUq = __shfl_sync(0xffffffffu, dtu, q * 8 + c);
                float acc = 0.0f;
                if (k + q < nt) { // uniform over the block
                    const float *bq = sbc + (k + q) * 32 + n0;
#pragma unroll
                    for (int n = 0; n < NQ; n++) {
                        // h = exp(A dt) h + dt B u ;  y = Σ h C
                        float dA = ex2_ftz(a2[n] * dq);
                        h[n] = dA * h[n] + bq[n] * dUq;
                        acc += h[n] * bq[16 + n];
                    }
                }
                acc += __shfl_xor_sync(0xffffffffu, acc, 8);
                acc += __shfl_xor_sync(0xffffffffu, acc, 16);
                if (q == j)
                    ymine = acc;
            }
            if (mine && act) {
                // scan_output = (scan_output + hidden_states * D) * act(gate)
                fmb_st(y + t * ldy + e, (ymine + ut * dsk) * gz);
            }
        }
    }
    if (act) {
#pragma unroll
        for (int n = 0; n < NQ; n++)
            hs[n] = h[n];
    }
}

// --- tile single-pass kernel (N = 16) -------------------------------------------------------
//
// One block = 16 channels × 8 lanes (128 threads), one sequence (blockIdx.y); lane j of a
// channel owns states 2j and 2j+1, so every exp(A·dt) is computed exactly once and there are
// 8·E threads (64K at E = 8192: about 16 warps per SM), without the segment passes of SEG.
// Tokens go in tiles of TL_T staged in shared memory by all 128 threads with coalesced loads
// (16 channels of a row are one 32-byte sector in bf16); staging also does the per-(channel,
// token) work once: dt = softplus(...), dt·u, u·D and silu(z). B and C of a tile are staged
// once for the block's 16 channels. The next tile's raw inputs are loaded into registers
// while the current tile is scanned. Per token a lane advances its 2 states and keeps its
// partial C contraction; every 8 tokens the 8 partials of each token are summed by a
// reduce-scatter over the 8 lanes (xor 4, 2, 1: 7 shuffles for 8 tokens), after which lane j
// holds token k+j's sum and writes the gated output to shared memory; the output tile goes to
// global memory at the next tile's staging, by the thread that staged the same element.
// Missing tokens (past the sequence) and channels (past E) stage dt = dt·u = B = C = 0:
// exp(0) = 1 and no input, so h is unchanged; nothing is stored for them.
#define TL_CH  16 /* channels per block */
#define TL_T   64 /* tokens per tile, multiple of TL_LPC */
#define TL_LPC 8  /* lanes per channel (N / 2) */
#define TL_YLD 20 /* padded row of sy / sg: lane j's row k+j lands in distinct banks */

/* Eight tokens (rows k..k+7 of a staged tile) of the tile scan for lane j of channel c, which
 * owns states 2j, 2j+1: advances h0, h1 with dd = (dt, dt·u) rows of TL_CH channels and the
 * pairs (B_2j, B_2j+1) at bq[q·qs + j·js], (C_2j, C_2j+1) at cq[q·qs + j·js] for row k+q, and
 * returns token k+j's C contraction summed over the channel's 8 lanes (a reduce-scatter: xor
 * 4, 2, 1, 7 shuffles for 8 tokens). Shared by TILE (B and C pairs interleaved in one row) and
 * TILE2 (separate B and C rows: two 8-byte loads, which the shared memory serves as one
 * wavefront each when 4 channels of a warp read the same pair, where one 16-byte load of both
 * took 4: ncu, H200). */
__device__ __forceinline__ float tile_group8(const float2 *dd,
                                             const float2 *bq,
                                             const float2 *cq,
                                             int qs,
                                             int js,
                                             int c,
                                             int j,
                                             float a0,
                                             float a1,
                                             float &h0,
                                             float &h1)
{
    float acc[TL_LPC];
#pragma unroll
    for (int q = 0; q < TL_LPC; q++) {
        // h = exp(A dt) h + dt B u ;  y = Σ h C  (this lane's two states)
        const float2 d = dd[q * TL_CH + c];
        const float2 b = bq[q * qs + j * js], cc = cq[q * qs + j * js];
        const float d0 = ex2_ftz(a0 * d.x), d1 = ex2_ftz(a1 * d.x);
        h0 = fmaf(d0, h0, b.x * d.y);
        h1 = fmaf(d1, h1, b.y * d.y);
        acc[q] = fmaf(h0, cc.x, h1 * cc.y);
    }
#pragma unroll
    for (int q = 0; q < 4; q++) {
        const bool hi = j & 4;
        const float send = hi ? acc[q] : acc[q + 4], keep = hi ? acc[q + 4] : acc[q];
        acc[q] = keep + __shfl_xor_sync(0xffffffffu, send, 4);
    }
#pragma unroll
    for (int q = 0; q < 2; q++) {
        const bool hi = j & 2;
        const float send = hi ? acc[q] : acc[q + 2], keep = hi ? acc[q + 2] : acc[q];
        acc[q] = keep + __shfl_xor_sync(0xffffffffu, send, 2);
    }
    const bool hi = j & 1;
    const float send = hi ? acc[0] : acc[1], keep = hi ? acc[1] : acc[0];
    return keep + __shfl_xor_sync(0xffffffffu, send, 1);
}

template <typename AT>
static __global__ void __launch_bounds__(SCAN_THREADS) scan_tile_kernel(const AT *u,
                                                                        size_t ldu,
                                                                        const AT *dtp,
                                                                        size_t lddt,
                                                                        const float *dtscale,
                                                                        const float *dt_bias,
                                                                        const float *A,
                                                                        const float *BC,
                                                                        size_t ldbc,
                                                                        const float *Dskip,
                                                                        const AT *z,
                                                                        size_t ldz,
                                                                        AT *y,
                                                                        size_t ldy,
                                                                        int E,
                                                                        fmb_kplan p,
                                                                        size_t ssm_off)
{
    const int N = 16;
    __shared__ __align__(16) float4 sbc[TL_T][TL_LPC]; /* (B_2j, B_2j+1, C_2j, C_2j+1) */
    __shared__ __align__(16) float2 sdd[TL_T][TL_CH];  /* (dt, dt·u) */
    __shared__ float sy[TL_T][TL_YLD];                 /* u·D, then the gated output */
    __shared__ float sg[TL_T][TL_YLD];                 /* silu(z) */
    const int s = blockIdx.y;
    const int32_t t0 = p.seq_start[s], t1 = p.seq_start[s + 1];
    const int e0 = blockIdx.x * TL_CH;
    // staging role: column sc (fixed), rows sr0 + 8·r for r = 0..7
    const int sc = threadIdx.x % TL_CH, sr0 = threadIdx.x / TL_CH;
    const int se = e0 + sc;
    const bool sact = se < E;
    const float sbias = sact ? dt_bias[se] : 0.0f, sD = sact ? Dskip[se] : 0.0f;
    // scan role: channel c of the block, lane j (states 2j, 2j+1)
    const int lane = threadIdx.x & 31;
    const int c = (threadIdx.x >> 5) * 4 + (lane >> 3), j = lane & 7;
    const int e = e0 + c;
    const bool act = e < E;
    const int ec = act ? e : E - 1;
    float *hs = p.state[s] + ssm_off + (size_t)ec * N + 2 * j;
    const bool has = p.has_state[s];
    const float a0 = A[(size_t)ec * N + 2 * j] * LOG2E_F,
                a1 = A[(size_t)ec * N + 2 * j + 1] * LOG2E_F;
    float h0 = has ? hs[0] : 0.0f, h1 = has ? hs[1] : 0.0f;

    // raw inputs of one tile (registers): u, dt_pre, z, dtscale for 8 rows; 16 of B/C
    float ru[8], rd[8], rz[8], rs[8], rb[16];
    auto load_tile = [&](int32_t tb) {
#pragma unroll
        for (int r = 0; r < 8; r++) {
            const int32_t t = tb + sr0 + 8 * r;
            const bool ok = t < t1 && sact;
            ru[r] = ok ? fmb_ld(u + (size_t)t * ldu + se) : 0.0f;
            rd[r] = ok ? fmb_ld(dtp + (size_t)t * lddt + se) : 0.0f;
            rz[r] = ok ? fmb_ld(z + (size_t)t * ldz + se) : 0.0f;
            rs[r] = (t < t1 && dtscale) ? dtscale[t] : 1.0f;
        }
#pragma unroll
        for (int r = 0; r < 16; r++) {
            const int i = threadIdx.x + r * SCAN_THREADS, row = i / (2 * N), jj = i % (2 * N);
            const int32_t t = tb + row;
            rb[r] = t < t1 ? BC[(size_t)t * ldbc + jj] : 0.0f;
        }
    };
    load_tile(t0);
    for (int32_t tb = t0; tb < t1; tb += TL_T) {
        __syncthreads(); // the previous tile's scan is done: sy holds its outputs
#pragma unroll
        for (int r = 0; r < 8; r++) {
            const int row = sr0 + 8 * r;
            if (tb > t0 && sact) // the previous tile was full (only the last one is partial)
                fmb_st(y + (size_t)(tb - TL_T + row) * ldy + se, sy[row][sc]);
            const bool ok = tb + row < t1 && sact;
            // discrete_time_step = softplus(dt_proj(rms(time_step)) + dt_proj.bias)
            const float dt = ok ? fmb_softplus(rd[r] * rs[r] + sbias) : 0.0f;
            sdd[row][sc] = make_float2(dt, dt * ru[r]);
            sy[row][sc] = ru[r] * sD;
            sg[row][sc] = ok ? silu_fast(rz[r]) : 0.0f;
        }
#pragma unroll
        for (int r = 0; r < 16; r++) {
            const int i = threadIdx.x + r * SCAN_THREADS, row = i / (2 * N), jj = i % (2 * N);
            const int n = jj % N, isC = jj / N;
            ((float *)sbc)[row * 2 * N + (n >> 1) * 4 + isC * 2 + (n & 1)] = rb[r];
        }
        __syncthreads();
        const int nt = t1 - tb < TL_T ? t1 - tb : TL_T;
        if (tb + TL_T < t1)
            load_tile(tb + TL_T); // in flight during this tile's scan
        for (int k = 0; k < nt; k += TL_LPC) {
            const float2 *bq = (const float2 *)&sbc[k][0]; /* (B pair, C pair) per lane */
            const float yk =
                tile_group8(&sdd[k][0], bq, bq + 1, 2 * TL_LPC, 2, c, j, a0, a1, h0, h1);
            // scan_output = (scan_output + hidden_states * D) * act(gate)
            sy[k + j][c] = (yk + sy[k + j][c]) * sg[k + j][c];
        }
    }
    __syncthreads();
    {
        const int32_t tb = t0 + ((t1 - t0 - 1) / TL_T) * TL_T; // the last tile
#pragma unroll
        for (int r = 0; r < 8; r++) {
            const int row = sr0 + 8 * r;
            if (tb + row < t1 && sact)
                fmb_st(y + (size_t)(tb + row) * ldy + se, sy[row][sc]);
        }
    }
    if (act) {
        hs[0] = h0;
        hs[1] = h1;
    }
}

// --- tile kernel with asynchronous staging (N = 16; prefill's default) ----------------------
//
// TILE's scan with its staging reworked after ncu (H200, E = 8192, bf16): TILE executed ~40
// instructions per lane-token where its scan needs ~15. The rest was staging: scalar 2-byte
// loads with 64-bit address arithmetic per element, log1pf(expf(x)) for softplus (~80
// instructions per (channel, token)), and conversions of the prefetched tile that stalled on
// its loads right after issuing them. TILE2:
//  - copies the raw tiles of u, dt_pre, z (16 channels × TT tokens, one 16-byte piece per
//    thread and array), dtscale and B/C from global to shared memory with cp.async, double
//    buffered: tile i+1 is in flight during tile i's scan and costs no registers. B/C land in
//    16-byte pieces directly in the rows of pairs (B_2j, B_2j+1) and (C_2j, C_2j+1) that lane
//    j reads (two 8-byte loads: one shared-memory wavefront each, where one 16-byte load of
//    the interleaved four took 4 and was 55% of the kernel's wavefronts);
//  - turns a raw tile into (dt, dt·u), u·D and silu(z) in a process step, two adjacent
//    channels per thread (paired loads and stores); softplus = max(x, 0) + log1p(e^-|x|) with
//    log1p by the atanh series (within 2e-6 relative of log1p(exp(x)) everywhere, 15 ops);
//  - scans and reduces the C contraction exactly as TILE does.
// Needs E % 16 == 0, row strides of u, dt, z, y that are multiples of 8 elements, 16-byte
// aligned bases, and B/C rows (ldbc a multiple of 4) at 16-byte alignment; fmb_k_scan checks and
// falls back to TILE. TT: 64 tokens per tile in bf16, 32 in f32 (both keep the static shared memory
// under 48 KB: 46.5 and 29.3 KB).
__device__ __forceinline__ float softplus_fast(float x)
{
    // torch.nn.functional.softplus(x) = x > 20 ? x : log1p(exp(x)) = max(x, 0) + log1p(e)
    // with e = exp(-|x|) in (0, 1]; log1p(e) = 2 atanh(s), s = e / (2 + e) in (0, 1/3], whose
    // series in w = s² ≤ 1/9 is below float rounding after the w⁶ term.
    const float e = ex2_ftz(-fabsf(x) * LOG2E_F);
    const float s = __fdividef(e, 2.0f + e), w = s * s;
    float q = 1.0f / 13.0f;
    q = fmaf(q, w, 1.0f / 11.0f);
    q = fmaf(q, w, 1.0f / 9.0f);
    q = fmaf(q, w, 1.0f / 7.0f);
    q = fmaf(q, w, 1.0f / 5.0f);
    q = fmaf(q, w, 1.0f / 3.0f);
    q = fmaf(q, w, 1.0f);
    const float r = fmaxf(x, 0.0f) + 2.0f * s * q;
    return x > 20.0f ? x : r;
}

/* silu(z) = z / (1 + e^-z) with ex2 and the fast division (0 where e^-z overflows). */
__device__ __forceinline__ float silu_ex2(float z)
{
    return __fdividef(z, 1.0f + ex2_ftz(-z * LOG2E_F));
}

__device__ __forceinline__ float2 ld_pair(const float *p)
{
    return *(const float2 *)p;
}
__device__ __forceinline__ float2 ld_pair(const __nv_bfloat16 *p)
{
    return __bfloat1622float2(*(const __nv_bfloat162 *)p);
}
__device__ __forceinline__ void st_pair(float *p, float2 v)
{
    *(float2 *)p = v;
}
__device__ __forceinline__ void st_pair(__nv_bfloat16 *p, float2 v)
{
    *(__nv_bfloat162 *)p = __float22bfloat162_rn(v); /* each half as __float2bfloat16_rn */
}

template <typename AT, int TT> struct tile2_smem {
    float2 bq[2][TT][TL_LPC]; /* (B_2j, B_2j+1) of lane j, double-buffered */
    float2 cq[2][TT][TL_LPC]; /* (C_2j, C_2j+1) */
    float2 dd[TT][TL_CH];     /* (dt, dt·u) */
    AT u[2][TT][TL_CH];       /* raw tiles, double-buffered */
    AT d[2][TT][TL_CH];
    AT z[2][TT][TL_CH];
    float sc[2][TT];     /* dtscale */
    float y[TT][TL_YLD]; /* u·D, then the gated output */
    float g[TT][TL_YLD]; /* silu(z) */
};

template <typename AT, int TT>
static __global__ void __launch_bounds__(SCAN_THREADS) scan_tile2_kernel(const AT *u,
                                                                         size_t ldu,
                                                                         const AT *dtp,
                                                                         size_t lddt,
                                                                         const float *dtscale,
                                                                         const float *dt_bias,
                                                                         const float *A,
                                                                         const float *BC,
                                                                         size_t ldbc,
                                                                         const float *Dskip,
                                                                         const AT *z,
                                                                         size_t ldz,
                                                                         AT *y,
                                                                         size_t ldy,
                                                                         fmb_kplan p,
                                                                         size_t ssm_off)
{
    const int N = 16;
    constexpr int VEC = 16 / (int)sizeof(AT); /* elements per 16-byte piece */
    constexpr int PPR = TL_CH / VEC;          /* pieces per raw row: 2 (bf16) or 4 (f32) */
    static_assert(TT * PPR == SCAN_THREADS, "one raw piece per thread and array");
    static_assert(TT % 16 == 0 && (TT * 16) % SCAN_THREADS == 0, "tile shape");
    constexpr int BCR = SCAN_THREADS / 8; /* B/C rows per pass: 8 pieces of 16 bytes a row */
    __shared__ __align__(16) tile2_smem<AT, TT> sm;
    const int tid = threadIdx.x;
    const int e0 = blockIdx.x * TL_CH;
    // weights first (never written after load), then wait for the kernels ahead (PDL)
    const int pc = tid % 8, pr = tid / 8; /* process role: channels 2pc, 2pc+1, rows pr + 16k */
    const int pe = e0 + 2 * pc;
    const float bias0 = dt_bias[pe], bias1 = dt_bias[pe + 1];
    const float D0 = Dskip[pe], D1 = Dskip[pe + 1];
    const int lane = tid & 31; /* scan role: channel c of the block, lane j (states 2j, 2j+1) */
    const int c = (tid >> 5) * 4 + (lane >> 3), j = lane & 7;
    const int e = e0 + c;
    const float a0 = A[(size_t)e * N + 2 * j] * LOG2E_F,
                a1 = A[(size_t)e * N + 2 * j + 1] * LOG2E_F;
    fmb_pdl_wait();
    fmb_pdl_trigger();
    const int s = blockIdx.y;
    const int32_t t0 = p.seq_start[s], t1 = p.seq_start[s + 1];

    // load role: raw row lr, piece lp of u/dt/z; B/C piece bp (16 bytes) of rows br + BCR·i
    const int lr = tid / PPR, lp = tid % PPR;
    const int bp = tid % 8, br = tid / 8;
    const int bl = 2 * (bp & 3); /* piece bp: B pairs bl, bl + 1 (bp < 4) or those of C */
    const bool has_sc = dtscale != NULL;
    auto issue = [&](int buf, int32_t tb) {
        const int32_t t = tb + lr;
        const bool ok = t < t1;
        const size_t tt = ok ? (size_t)t : (size_t)t0; /* a valid address when nothing is read */
        cp_async<16>(&sm.u[buf][lr][lp * VEC], u + tt * ldu + e0 + lp * VEC, ok);
        cp_async<16>(&sm.d[buf][lr][lp * VEC], dtp + tt * lddt + e0 + lp * VEC, ok);
        cp_async<16>(&sm.z[buf][lr][lp * VEC], z + tt * ldz + e0 + lp * VEC, ok);
        if (has_sc && tid < TT) {
            const bool oks = tb + tid < t1;
            cp_async<4>(&sm.sc[buf][tid], dtscale + (oks ? tb + tid : t0), oks);
        }
#pragma unroll
        for (int i = 0; i < TT / BCR; i++) {
            const int row = br + BCR * i;
            const bool okb = tb + row < t1;
            const size_t tr = okb ? (size_t)(tb + row) : (size_t)t0;
            float2 *dst = bp < 4 ? &sm.bq[buf][row][bl] : &sm.cq[buf][row][bl];
            cp_async<16>(dst, BC + tr * ldbc + 4 * bp, okb);
        }
        cp_async_commit();
    };

    float *hs = p.state[s] + ssm_off + (size_t)e * N + 2 * j;
    const bool has = p.has_state[s];
    float h0 = has ? hs[0] : 0.0f, h1 = has ? hs[1] : 0.0f;

    const int ntiles = (t1 - t0 + TT - 1) / TT;
    if (ntiles > 0)
        issue(0, t0);
    for (int it = 0; it < ntiles; it++) {
        const int b = it & 1;
        const int32_t tb = t0 + it * TT;
        cp_async_wait_all();
        __syncthreads(); // tile it has landed; the previous tile's scan is done
#pragma unroll
        for (int k = 0; k < TT / 16; k++) {
            const int row = pr + 16 * k;
            if (it > 0) // the previous tile was full (only the last one is partial)
                st_pair(y + (size_t)(tb - TT + row) * ldy + pe,
                        make_float2(sm.y[row][2 * pc], sm.y[row][2 * pc + 1]));
            const float2 uu = ld_pair(&sm.u[b][row][2 * pc]);
            const float2 dr = ld_pair(&sm.d[b][row][2 * pc]);
            const float2 zz = ld_pair(&sm.z[b][row][2 * pc]);
            const float sc = has_sc ? sm.sc[b][row] : 1.0f;
            const bool ok = tb + row < t1;
            // discrete_time_step = softplus(dt_proj(rms(time_step)) + dt_proj.bias)
            const float dt0 = ok ? softplus_fast(fmaf(dr.x, sc, bias0)) : 0.0f;
            const float dt1 = ok ? softplus_fast(fmaf(dr.y, sc, bias1)) : 0.0f;
            *(float4 *)&sm.dd[row][2 * pc] = make_float4(dt0, dt0 * uu.x, dt1, dt1 * uu.y);
            *(float2 *)&sm.y[row][2 * pc] = make_float2(uu.x * D0, uu.y * D1);
            *(float2 *)&sm.g[row][2 * pc] = make_float2(silu_ex2(zz.x), silu_ex2(zz.y));
        }
        if (it + 1 < ntiles)
            issue(b ^ 1, tb + TT); // in flight during this tile's scan
        __syncthreads();
        const int nt = t1 - tb < TT ? t1 - tb : TT;
#pragma unroll 2
        for (int k = 0; k < nt; k += TL_LPC) {
            const float yk = tile_group8(&sm.dd[k][0], &sm.bq[b][k][0], &sm.cq[b][k][0], TL_LPC, 1,
                                         c, j, a0, a1, h0, h1);
            // scan_output = (scan_output + hidden_states * D) * act(gate)
            sm.y[k + j][c] = (yk + sm.y[k + j][c]) * sm.g[k + j][c];
        }
    }
    if (ntiles > 0) {
        __syncthreads();
        const int32_t tb = t0 + (ntiles - 1) * TT; // the last tile
#pragma unroll
        for (int k = 0; k < TT / 16; k++) {
            const int row = pr + 16 * k;
            if (tb + row < t1)
                st_pair(y + (size_t)(tb + row) * ldy + pe,
                        make_float2(sm.y[row][2 * pc], sm.y[row][2 * pc + 1]));
        }
    }
    hs[0] = h0;
    hs[1] = h1;
}

// --- decode step: ssm_params fused with the scan of one token per sequence ----------------
//
// Decode runs the scan on one token per sequence. QUAD (4 lanes per channel) then needs
// 4·E·B threads: two waves at B = 16 (11.6 µs a layer on the H200, where moving the 16 MB of
// state takes ~4) behind a separate ssm_params launch. Here one thread owns a channel of a
// sequence with its N states in registers (E·B threads: one wave at B = 16), and the block's
// first warp computes the token's rms scales of δ, B and C from the x_proj row with
// fmb_ssm_row, the function ssm_params_kernel uses (so the same bits), which saves
// that launch. A block = SCAN_THREADS channels of one sequence (blockIdx.y).
template <typename AT, int NN, bool VEC>
static __global__ void __launch_bounds__(SCAN_THREADS) scan_step_kernel(const AT *u,
                                                                        size_t ldu,
                                                                        const AT *dtp,
                                                                        size_t lddt,
                                                                        const AT *Sm,
                                                                        size_t lds,
                                                                        int R,
                                                                        float eps,
                                                                        int norm,
                                                                        const float *dt_bias,
                                                                        const float *A,
                                                                        const float *Dskip,
                                                                        const AT *z,
                                                                        size_t ldz,
                                                                        AT *y,
                                                                        size_t ldy,
                                                                        int E,
                                                                        int N,
                                                                        fmb_kplan p,
                                                                        size_t ssm_off)
{
    __shared__ float sbc[2 * NN];
    __shared__ float sdsc;
    const int e = blockIdx.x * SCAN_THREADS + threadIdx.x;
    const bool act = e < E;
    const int ec = act ? e : E - 1;
    // weights first (never written after load), then wait for the kernels ahead (PDL)
    float h[NN], a2[NN];
    if (VEC) {
#pragma unroll
        for (int q = 0; q < NN / 4; q++) {
            const float4 av = ((const float4 *)(A + (size_t)ec * N))[q];
            a2[4 * q] = av.x * LOG2E_F, a2[4 * q + 1] = av.y * LOG2E_F;
            a2[4 * q + 2] = av.z * LOG2E_F, a2[4 * q + 3] = av.w * LOG2E_F;
        }
    } else {
#pragma unroll
        for (int n = 0; n < NN; n++)
            a2[n] = n < N ? A[(size_t)ec * N + n] * LOG2E_F : 0.0f;
    }
    const float bias = dt_bias[ec], dsk = Dskip[ec];
    fmb_pdl_wait();
    fmb_pdl_trigger();
    const int s = blockIdx.y;
    const size_t t = (size_t)p.seq_start[s]; /* the sequence's one token */
    if (threadIdx.x < 32) { // ssm_params_kernel's arithmetic for row t (k_common.cuh)
        const int lane = threadIdx.x, half = lane >> 4, j = lane & 15;
        float bc;
        const float dsc = fmb_ssm_row(Sm + t * lds, R, N, eps, norm, lane, &bc);
        if (lane == 0)
            sdsc = dsc;
        if (j < NN)
            sbc[half * NN + j] = bc;
    }
    float *hs = p.state[s] + ssm_off + (size_t)ec * N;
    const bool has = p.has_state[s];
    if (VEC) { // N == NN, 16-byte aligned rows of state and A
#pragma unroll
        for (int q = 0; q < NN / 4; q++) {
            const float4 hv = has ? ((const float4 *)hs)[q] : make_float4(0.f, 0.f, 0.f, 0.f);
            h[4 * q] = hv.x, h[4 * q + 1] = hv.y, h[4 * q + 2] = hv.z, h[4 * q + 3] = hv.w;
        }
    } else {
#pragma unroll
        for (int n = 0; n < NN; n++)
            h[n] = (n < N && has) ? hs[n] : 0.0f;
    }
    const float ut = fmb_ld(u + t * ldu + ec), dp = fmb_ld(dtp + t * lddt + ec);
    const float zt = fmb_ld(z + t * ldz + ec);
    __syncthreads();
    // discrete_time_step = softplus(dt_proj(rms(time_step)) + dt_proj.bias)
    const float dt = softplus_fast(fmaf(dp, sdsc, bias)), dtu = dt * ut;
    float acc = 0.0f;
#pragma unroll
    for (int n = 0; n < NN; n++) {
        // h = exp(A dt) h + dt B u ;  y = Σ h C  (missing states: a = B = C = 0, h stays 0)
        h[n] = fmaf(ex2_ftz(a2[n] * dt), h[n], sbc[n] * dtu);
        acc = fmaf(h[n], sbc[NN + n], acc);
    }
    if (!act)
        return;
    // scan_output = (scan_output + hidden_states * D) * act(gate)
    fmb_st(y + t * ldy + e, (acc + ut * dsk) * silu_ex2(zt));
    if (VEC) {
#pragma unroll
        for (int q = 0; q < NN / 4; q++)
            ((float4 *)hs)[q] = make_float4(h[4 * q], h[4 * q + 1], h[4 * q + 2], h[4 * q + 3]);
    } else {
#pragma unroll
        for (int n = 0; n < NN; n++)
            if (n < N)
                hs[n] = h[n];
    }
}

extern "C" void fmb_k_scan_step(const fmb_cuda_ctx *c,
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
                                size_t ssm_off)
{
    FMB_ASSERT(N >= 1 && N <= 16 && E >= 1 && E <= INT32_MAX && lds >= R + 2 * N);
    FMB_ASSERT(p->T == (size_t)p->nseq && p->nseq >= 1 && p->nseq <= 65535);
    if (p->T == 0)
        return;
    // float4 state and A rows when N = 16 and every sequence's layer block is 16-byte aligned
    // (state bases are allocation-aligned; ssm_off in floats)
    const bool vec = N == 16 && ssm_off % 4 == 0 && p->state_al16 && ((uintptr_t)A & 15) == 0;
    dim3 g(fmb_cdiv(E, SCAN_THREADS), (unsigned)p->nseq);
#define FMB_STEP_CASE(AT)                                                                          \
    do {                                                                                           \
        if (vec)                                                                                   \
            FMB_LAUNCH_PDL(c, scan_step_kernel<AT, 16, true>, g, dim3(SCAN_THREADS), 0,            \
                           (const AT *)u, ldu, (const AT *)dt_pre, lddt, (const AT *)S, lds,       \
                           (int)R, eps, norm, dt_bias, A, Dskip, (const AT *)z, ldz, (AT *)y, ldy, \
                           (int)E, (int)N, *p, ssm_off);                                           \
        else                                                                                       \
            FMB_LAUNCH_PDL(c, scan_step_kernel<AT, 16, false>, g, dim3(SCAN_THREADS), 0,           \
                           (const AT *)u, ldu, (const AT *)dt_pre, lddt, (const AT *)S, lds,       \
                           (int)R, eps, norm, dt_bias, A, Dskip, (const AT *)z, ldz, (AT *)y, ldy, \
                           (int)E, (int)N, *p, ssm_off);                                           \
    } while (0)
    if (at == FMB_KDT_F32)
        FMB_STEP_CASE(float);
    else if (at == FMB_KDT_BF16)
        FMB_STEP_CASE(__nv_bfloat16);
    else
        FMB_ASSERTF(0, "fmb_k_scan_step: unsupported activation type %d", (int)at);
#undef FMB_STEP_CASE
    FMB_LAUNCH_CHECK(c);
}

// One thread per (state n, channel e) of one sequence: the serial walk over its segments.
static __global__ void scan_combine_kernel(
    const float *A, int E, int N, fmb_kplan p, size_t ssm_off, float *hbuf, const float *sdt)
{
    int s = blockIdx.y;
    size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (idx >= (size_t)E * N)
        return;
    int g0 = p.seq_seg0[s], g1 = p.seq_seg0[s + 1];
    if (g1 - g0 <= 1)
        return;
    int n = (int)(idx / E), e = (int)(idx % E);
    float a2 = A[(size_t)e * N + n] * LOG2E_F;
    float h = p.has_state[s] ? p.state[s][ssm_off + (size_t)e * N + n] : 0.0f;
    for (int g = g0; g < g1; g++) {
        size_t i = ((size_t)g * N + n) * E + e;
        float hend = g < g1 - 1 ? hbuf[i] : 0.0f;
        hbuf[i] = h;
        if (g < g1 - 1)
            h = ex2_ftz(a2 * sdt[(size_t)g * E + e]) * h + hend;
    }
}

extern "C" size_t fmb_k_scan_ws_bytes(size_t nsegs, size_t E, size_t N)
{
    return nsegs * E * (N + 1) * sizeof(float) + 256;
}

template <typename AT, int NN, bool MASK>
static void scan_launch(const fmb_cuda_ctx *c,
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
                        void *ws)
{
    float *hbuf = (float *)ws;
    float *sdt = hbuf + (size_t)p->nsegs * N * E;
    dim3 g(fmb_cdiv(E, SCAN_THREADS), (unsigned)p->nsegs);
    if (p->multi_seg) {
        FMB_SMEM_CHECK(c, (scan_seg_kernel<AT, NN, MASK, false>), 0);
        scan_seg_kernel<AT, NN, MASK, false><<<g, SCAN_THREADS, 0, FMB_STREAM(c)>>>(
            (const AT *)u, ldu, (const AT *)dt_pre, lddt, dtscale, dt_bias, A, BC, ldbc, Dskip,
            (const AT *)z, ldz, (AT *)y, ldy, (int)E, (int)N, *p, ssm_off, hbuf, sdt);
        FMB_LAUNCH_CHECK(c);
        dim3 gc(fmb_cdiv(E * N, 256), (unsigned)p->nseq);
        FMB_SMEM_CHECK(c, (scan_combine_kernel), 0);
        scan_combine_kernel<<<gc, 256, 0, FMB_STREAM(c)>>>(A, (int)E, (int)N, *p, ssm_off, hbuf,
                                                           sdt);
        FMB_LAUNCH_CHECK(c);
    }
    FMB_SMEM_CHECK(c, (scan_seg_kernel<AT, NN, MASK, true>), 0);
    scan_seg_kernel<AT, NN, MASK, true><<<g, SCAN_THREADS, 0, FMB_STREAM(c)>>>(
        (const AT *)u, ldu, (const AT *)dt_pre, lddt, dtscale, dt_bias, A, BC, ldbc, Dskip,
        (const AT *)z, ldz, (AT *)y, ldy, (int)E, (int)N, *p, ssm_off, hbuf, sdt);
    FMB_LAUNCH_CHECK(c);
}

extern "C" void fmb_k_scan(const fmb_cuda_ctx *c,
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
                           void *ws)
{
    FMB_ASSERT(N >= 1 && N <= 16 && E >= 1 && E <= INT32_MAX);
    FMB_STATIC_SCAN_TILE_CHECK;
    FMB_ASSERT(ldbc >= 2 * N && p->nsegs >= 1 && p->nsegs <= 65535 && p->nseq <= 65535);
    if (p->T == 0)
        return;
    // AUTO: TILE when sequences average at least 16 tokens or the plan is a prefill chunk
    // (N = 16 only), else QUAD when no sequence spans several segments (decode) or the plan is
    // a prefill chunk, else SEG (TILE and TILE1 forced take QUAD where N != 16, as AUTO does,
    // so that they stay chunk-invariant there too). TILE and QUAD walk each (channel, state)
    // through time in order, with per-token arithmetic that does not depend on where a chunk
    // starts; SEG splits a chunk into T-dependent segments and recombines them (other fp32
    // rounding).
    const bool aut = c->scan_algo == FMB_SCAN_AUTO;
    const bool t1 = c->scan_algo == FMB_SCAN_TILE1;
    int tile = N == 16 && (c->scan_algo == FMB_SCAN_TILE || t1 ||
                           (aut && (p->T >= 16 * (size_t)p->nseq || p->chunk_inv)));
    // TILE2 needs whole 16-channel blocks, 16-byte pieces of u/dt/z/y and B/C rows
    const bool al = E % 16 == 0 && ldu % 8 == 0 && lddt % 8 == 0 && ldz % 8 == 0 && ldy % 8 == 0 &&
                    ldbc % 4 == 0 && ((uintptr_t)u & 15) == 0 && ((uintptr_t)dt_pre & 15) == 0 &&
                    ((uintptr_t)z & 15) == 0 && ((uintptr_t)y & 15) == 0 &&
                    ((uintptr_t)BC & 15) == 0 && ((uintptr_t)dtscale & 3) == 0;
    if (tile && al && !t1 && (at == FMB_KDT_BF16 || at == FMB_KDT_F32)) {
        dim3 g((unsigned)(E / TL_CH), (unsigned)p->nseq);
        if (at == FMB_KDT_F32)
            FMB_LAUNCH_PDL(c, scan_tile2_kernel<float, 32>, g, dim3(SCAN_THREADS), 0,
                           (const float *)u, ldu, (const float *)dt_pre, lddt, dtscale, dt_bias, A,
                           BC, ldbc, Dskip, (const float *)z, ldz, (float *)y, ldy, *p, ssm_off);
        else
            FMB_LAUNCH_PDL(c, scan_tile2_kernel<__nv_bfloat16, 64>, g, dim3(SCAN_THREADS), 0,
                           (const __nv_bfloat16 *)u, ldu, (const __nv_bfloat16 *)dt_pre, lddt,
                           dtscale, dt_bias, A, BC, ldbc, Dskip, (const __nv_bfloat16 *)z, ldz,
                           (__nv_bfloat16 *)y, ldy, *p, ssm_off);
        FMB_LAUNCH_CHECK(c);
        return;
    }
    if (tile) {
        dim3 g(fmb_cdiv(E, TL_CH), (unsigned)p->nseq);
        FMB_SMEM_CHECK(c, (scan_tile_kernel<float>), 0); /* f32: the larger */
        if (at == FMB_KDT_F32)
            scan_tile_kernel<float><<<g, SCAN_THREADS, 0, FMB_STREAM(c)>>>(
                (const float *)u, ldu, (const float *)dt_pre, lddt, dtscale, dt_bias, A, BC, ldbc,
                Dskip, (const float *)z, ldz, (float *)y, ldy, (int)E, *p, ssm_off);
        else if (at == FMB_KDT_BF16)
            scan_tile_kernel<__nv_bfloat16><<<g, SCAN_THREADS, 0, FMB_STREAM(c)>>>(
                (const __nv_bfloat16 *)u, ldu, (const __nv_bfloat16 *)dt_pre, lddt, dtscale,
                dt_bias, A, BC, ldbc, Dskip, (const __nv_bfloat16 *)z, ldz, (__nv_bfloat16 *)y, ldy,
                (int)E, *p, ssm_off);
        else
            FMB_ASSERTF(0, "fmb_k_scan: unsupported activation type %d", (int)at);
        FMB_LAUNCH_CHECK(c);
        return;
    }
    int quad = c->scan_algo == FMB_SCAN_QUAD ||
               ((aut || c->scan_algo == FMB_SCAN_TILE || t1) && (!p->multi_seg || p->chunk_inv));
    if (quad && N % 4 == 0) {
        dim3 g(fmb_cdiv(E, 32), (unsigned)p->nseq);
#define FMB_QUAD_CASE(AT)                                                                          \
    do {                                                                                           \
        FMB_SMEM_CHECK(c, (scan_quad_kernel<AT, 4>), 0); /* the largest of the four */             \
        if (N == 16)                                                                               \
            scan_quad_kernel<AT, 4><<<g, SCAN_THREADS, 0, FMB_STREAM(c)>>>(                        \
                (const AT *)u, ldu, (const AT *)dt_pre, lddt, dtscale, dt_bias, A, BC, ldbc,       \
                Dskip, (const AT *)z, ldz, (AT *)y, ldy, (int)E, (int)N, *p, ssm_off);             \
        else if (N == 8)                                                                           \
            scan_quad_kernel<AT, 2><<<g, SCAN_THREADS, 0, FMB_STREAM(c)>>>(                        \
                (const AT *)u, ldu, (const AT *)dt_pre, lddt, dtscale, dt_bias, A, BC, ldbc,       \
                Dskip, (const AT *)z, ldz, (AT *)y, ldy, (int)E, (int)N, *p, ssm_off);             \
        else if (N == 12)                                                                          \
            scan_quad_kernel<AT, 3><<<g, SCAN_THREADS, 0, FMB_STREAM(c)>>>(                        \
                (const AT *)u, ldu, (const AT *)dt_pre, lddt, dtscale, dt_bias, A, BC, ldbc,       \
                Dskip, (const AT *)z, ldz, (AT *)y, ldy, (int)E, (int)N, *p, ssm_off);             \
        else                                                                                       \
            scan_quad_kernel<AT, 1><<<g, SCAN_THREADS, 0, FMB_STREAM(c)>>>(                        \
                (const AT *)u, ldu, (const AT *)dt_pre, lddt, dtscale, dt_bias, A, BC, ldbc,       \
                Dskip, (const AT *)z, ldz, (AT *)y, ldy, (int)E, (int)N, *p, ssm_off);             \
    } while (0)
        if (at == FMB_KDT_F32)
            FMB_QUAD_CASE(float);
        else if (at == FMB_KDT_BF16)
            FMB_QUAD_CASE(__nv_bfloat16);
        else
            FMB_ASSERTF(0, "fmb_k_scan: unsupported activation type %d", (int)at);
#undef FMB_QUAD_CASE
        FMB_LAUNCH_CHECK(c);
        return;
    }
#define FMB_SCAN_CASE(AT)                                                                          \
    do {                                                                                           \
        if (N == 16)                                                                               \
            scan_launch<AT, 16, false>(c, u, ldu, dt_pre, lddt, dtscale, dt_bias, A, BC, ldbc,     \
                                       Dskip, z, ldz, y, ldy, E, N, p, ssm_off, ws);               \
        else if (N == 8)                                                                           \
            scan_launch<AT, 8, false>(c, u, ldu, dt_pre, lddt, dtscale, dt_bias, A, BC, ldbc,      \
                                      Dskip, z, ldz, y, ldy, E, N, p, ssm_off, ws);                \
        else                                                                                       \
            scan_launch<AT, 16, true>(c, u, ldu, dt_pre, lddt, dtscale, dt_bias, A, BC, ldbc,      \
                                      Dskip, z, ldz, y, ldy, E, N, p, ssm_off, ws);                \
    } while (0)
    if (at == FMB_KDT_F32)
        FMB_SCAN_CASE(float);
    else if (at == FMB_KDT_BF16)
        FMB_SCAN_CASE(__nv_bfloat16);
    else
        FMB_ASSERTF(0, "fmb_k_scan: unsupported activation type %d", (int)at);
#undef FMB_SCAN_CASE
}
