/*
 * k_head: per-row reductions of an lm_head logits tile (the tile is bounded: rows × V f32,
 * reused for every sub-chunk). One block per row: max and argmax (first max), log-sum-exp,
 * the target's log-probability and rank (ids with a strictly larger logit) in one pass over
 * the row, and top-k by k selection rounds (descending, ties to the lowest id). kcpu twin:
 * fmb_kcpu_head_reduce. Non-finite logits: a NaN or +Inf anywhere in a row makes its
 * log-probabilities NaN on both (the engine then fails the item); argmax and top-k skip NaNs
 * here while kcpu's start from element 0, a difference that never reaches a result row.
 */
#include <math.h>

#include "kernels/k_common.cuh"

#define HEAD_THREADS 512

// (v, i) better than (bv, bi): larger value, then lower id.
__device__ __forceinline__ bool better(float v, int i, float bv, int bi)
{
    return v > bv || (v == bv && i < bi);
}

__device__ __forceinline__ void block_best(float &v, int &i, float *shv, int *shi)
{
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, v, o);
        int oi = __shfl_xor_sync(0xffffffffu, i, o);
        if (better(ov, oi, v, i)) {
            v = ov;
            i = oi;
        }
    }
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) {
        shv[w] = v;
        shi[w] = i;
    }
    __syncthreads();
    v = lane < nw ? shv[lane] : -INFINITY;
    i = lane < nw ? shi[lane] : 0x7fffffff;
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, v, o);
        int oi = __shfl_xor_sync(0xffffffffu, i, o);
        if (better(ov, oi, v, i)) {
            v = ov;
            i = oi;
        }
    }
}

static __global__ void __launch_bounds__(HEAD_THREADS) head_kernel(const float *logits,
                                                                   size_t ld,
                                                                   int V,
                                                                   const int32_t *targets,
                                                                   float *logprob,
                                                                   int32_t *rank,
                                                                   int32_t *argmax,
                                                                   int top_k,
                                                                   int32_t *topk_ids,
                                                                   float *topk_lp)
{
    __shared__ float shv[32];
    __shared__ int shi[32];
    __shared__ double shd[32];
    fmb_pdl_wait(); // the logits come from the kernel before (k_common.cuh)
    fmb_pdl_trigger();
    size_t t = blockIdx.x;
    const float *l = logits + t * ld;
    const int32_t tgt = targets ? targets[t] : -1;
    const float lt = tgt >= 0 ? l[tgt] : INFINITY; /* rank: ids with a strictly larger logit */
    // One pass over the row (it was three: max, Σ exp, rank): per thread the running max and
    // its first id, Σ exp(x - running max) rescaled when the max grows, and the rank count.
    // A thread's ids only grow, so "x > max" keeps the first of equal maxima.
    float bv = -INFINITY, se = 0.0f;
    int bi = 0x7fffffff, cnt = 0;
    for (int v = threadIdx.x; v < V; v += HEAD_THREADS) {
        const float x = l[v];
        if (x > bv) {
            // while bv is -Inf, se is 0 or NaN (a NaN seen): kept as it is, so that a NaN
            // anywhere in the row makes the log-probability NaN, as in the kcpu twin
            se = bv == -INFINITY ? se : se * expf(bv - x);
            bv = x;
            bi = v;
        }
        se += x == -INFINITY ? 0.0f : expf(x - bv);
        cnt += x > lt;
    }
    const float tmax = bv;
    block_best(bv, bi, shv, shi); // every thread: the row's max and its first id
    const float mx = bv;
    const int am = bi;
    // log-sum-exp: the threads' sums brought to the row's max and summed in double
    double sd = tmax == -INFINITY ? (double)se : (double)se * exp((double)tmax - (double)mx);
    for (int o = 16; o > 0; o >>= 1)
        sd += __shfl_xor_sync(0xffffffffu, sd, o);
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0)
        shd[w] = sd;
    __syncthreads();
    sd = lane < HEAD_THREADS / 32 ? shd[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1)
        sd += __shfl_xor_sync(0xffffffffu, sd, o);
    const double lse = (double)mx + log(sd);

    if (rank) {
        float fc = fmb_block_sum((float)cnt, shv); // exact: counts < 2^24
        if (threadIdx.x == 0)
            rank[t] = tgt >= 0 ? (int32_t)fc : -1;
    }
    if (threadIdx.x == 0) {
        if (argmax)
            argmax[t] = am;
        if (logprob)
            logprob[t] = tgt >= 0 ? (float)((double)l[tgt] - lse) : NAN;
    }
    if (top_k > 0 && topk_ids) {
        float pv = INFINITY;
        int pi = -1;
        for (int r = 0; r < top_k; r++) {
            float cv = -INFINITY;
            int ci = 0x7fffffff;
            for (int v = threadIdx.x; v < V; v += HEAD_THREADS) {
                float x = l[v];
                // strictly after (pv, pi) in the order (value desc, id asc)
                bool after = x < pv || (x == pv && v > pi);
                if (after && better(x, v, cv, ci)) {
                    cv = x;
                    ci = v;
                }
            }
            block_best(cv, ci, shv, shi);
            bool found = ci != 0x7fffffff;
            if (threadIdx.x == 0) {
                topk_ids[t * (size_t)top_k + r] = found ? ci : -1;
                if (topk_lp)
                    topk_lp[t * (size_t)top_k + r] = found ? (float)((double)cv - lse) : NAN;
            }
            pv = cv;
            pi = ci;
        }
    }
}

extern "C" void fmb_k_head_reduce(const fmb_cuda_ctx *c,
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
                                  float *topk_logprobs)
{
    if (T == 0)
        return;
    FMB_ASSERT(V >= 1 && V <= INT32_MAX && T <= INT32_MAX && top_k <= 64);
    FMB_LAUNCH_PDL(c, head_kernel, dim3((unsigned)T), dim3(HEAD_THREADS), 0, logits, ld, (int)V,
                   targets, logprob, rank, argmax, top_k, topk_ids, topk_logprobs);
    FMB_LAUNCH_CHECK(c);
}
