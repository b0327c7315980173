/*
 * k_plan: the varlen chunk plan (fmb_kplan), built on the host into one blob that the caller
 * copies to the device, and the scan segment length. Plain C: no kernel here.
 */
#include <string.h>

#include "kernels/kernels.h"

static size_t al8(size_t x)
{
    return (x + 7) & ~(size_t)7;
}

size_t fmb_k_plan_max_segs(size_t T, size_t nseq, size_t seg_len)
{
    return T / (seg_len ? seg_len : 1) + nseq + 1;
}

size_t fmb_k_plan_bytes(size_t T, size_t nseq)
{
    // worst case seg_len = 1: T + nseq segments
    return al8((nseq + 1) * 4) * 2 + al8(T * 4) + al8(nseq) + nseq * sizeof(float *) +
           (T + nseq + 1) * sizeof(fmb_kseg) + 64;
}

size_t fmb_k_scan_seg_len(const fmb_cuda_ctx *c, size_t T, size_t E, size_t nseq)
{
    (void)nseq;
    // Aim at ~1024 threads per SM (one thread = one channel × one segment); segments
    // shorter than 128 tokens spend more on per-segment setup and the combine than they gain
    // (bench/RESULTS.md, "Kernel measurements behind constants").
    size_t target = (size_t)(c ? c->sm_count : 132) * 1024;
    size_t L = E ? (T * E + target - 1) / target : T;
    L = (L + 63) & ~(size_t)63;
    if (L < 128)
        L = 128;
    if (L > 512)
        L = 512;
    return L;
}

void fmb_k_plan_build(fmb_kplan *p,
                      void *hblob,
                      void *dblob,
                      size_t T,
                      int nseq,
                      const int32_t *seq_start,
                      const uint8_t *has_state,
                      float *const *state,
                      size_t seg_len)
{
    FMB_ASSERT(nseq >= 1 && seg_len >= 1);
    FMB_ASSERT(seq_start[0] == 0 && (size_t)seq_start[nseq] == T);
    char *h = (char *)hblob, *d = (char *)dblob;
    size_t off = 0;
    int32_t *h_start = (int32_t *)(h + off);
    p->seq_start = (const int32_t *)(d + off);
    off += al8(((size_t)nseq + 1) * 4);
    int32_t *h_seg0 = (int32_t *)(h + off);
    p->seq_seg0 = (const int32_t *)(d + off);
    off += al8(((size_t)nseq + 1) * 4);
    int32_t *h_tok = (int32_t *)(h + off);
    p->tok_seq = (const int32_t *)(d + off);
    off += al8(T * 4);
    uint8_t *h_has = (uint8_t *)(h + off);
    p->has_state = (const uint8_t *)(d + off);
    off += al8((size_t)nseq);
    float **h_state = (float **)(h + off);
    p->state = (float *const *)(d + off);
    off += (size_t)nseq * sizeof(float *);
    fmb_kseg *h_segs = (fmb_kseg *)(h + off);
    p->segs = (const fmb_kseg *)(d + off);
    int nsegs = 0, multi = 0;
    p->state_al16 = 1;
    for (int s = 0; s < nseq; s++) {
        int32_t t0 = seq_start[s], t1 = seq_start[s + 1];
        FMB_ASSERT(t1 >= t0);
        if ((uintptr_t)state[s] & 15)
            p->state_al16 = 0;
        h_start[s] = t0;
        h_has[s] = has_state[s] ? 1 : 0;
        h_state[s] = state[s];
        h_seg0[s] = nsegs;
        for (int32_t t = t0; t < t1; t++)
            h_tok[t] = s;
        int32_t len = t1 - t0;
        int first = nsegs;
        for (int32_t a = t0; a < t1 || (len == 0 && a == t0); a += (int32_t)seg_len) {
            int32_t b = a + (int32_t)seg_len < t1 ? a + (int32_t)seg_len : t1;
            fmb_kseg sg = {a, b, s, 0};
            if (nsegs == first)
                sg.flags |= FMB_SEG_FIRST;
            if (b == t1)
                sg.flags |= FMB_SEG_LAST;
            if (!has_state[s])
                sg.flags |= FMB_SEG_FRESH;
            h_segs[nsegs++] = sg;
            if (len == 0)
                break;
        }
        if (nsegs - first > 1)
            multi = 1;
    }
    h_start[nseq] = (int32_t)T;
    h_seg0[nseq] = nsegs;
    p->nseq = nseq;
    p->nsegs = nsegs;
    p->T = T;
    p->multi_seg = multi;
    p->chunk_inv = 0;
    p->bytes = off + (size_t)nsegs * sizeof(fmb_kseg);
    FMB_ASSERT(off + (size_t)nsegs * sizeof(fmb_kseg) <= fmb_k_plan_bytes(T, (size_t)nseq));
}
