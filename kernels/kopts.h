/*
 * kopts: the kernel choices of the CUDA backend as one plain value (fmb_kernel_opts), its text
 * form and the parser of that text. Plain C, built with and without CUDA, no state: the
 * engine options carry a copy (engine.h), the CUDA context takes it at creation
 * (fmb_cuda_ctx_init) and the launchers read their context, never the environment.
 *
 * Text form: comma-separated key=value items, e.g. "scan=tile1,gemm=cublas,pdl=off":
 *   scan=auto|quad|seg|tile|tile1   the selective-scan kernel (fmb_k_scan, kernels.h)
 *   matvec=auto|cc|mma|gemm         the decode products, batch-invariant either way: the
 *                                   row-invariant GEMM for the wide matrices (auto: in_proj,
 *                                   out_proj, lm_head; gemm: dt_proj too), our tensor-core
 *                                   kernels (mma; cc: the split one for all)
 *   gemm=fixed|fixedws|cublas       the prefill GEMM algorithm choice (fmb_k_gemm_inv)
 *   pdl=auto|off                    Programmatic Dependent Launch (auto: where it works)
 *   graphs=on|off                   CUDA graphs for the decode step
 *   debug-sync=on|off               synchronise after every launch (report faults where made)
 *   gemm-verbose=on|off             print each row-invariant GEMM plan to stderr
 *   smem-cap=off|sm86               (tests) abort, naming the kernel, where a launch would take
 *                                   more shared memory a block than the cap (sm86: the 99 KB
 *                                   of sm_86/sm_89, the 24 GB cards), to prove the path fits
 * on/off also accept 1/0. A zeroed struct is the default of every key.
 *
 * Which keys change numbers: scan, matvec and gemm pick other kernels or algorithms, whose
 * fp32 sums round differently. pdl, graphs and debug-sync change only when and how the same
 * kernels are launched; gemm-verbose only prints; smem-cap only checks. FMB_KOPTS_NUMERIC formats
 * the former.
 */
#ifndef FMB_KOPTS_H
#define FMB_KOPTS_H

#include <stddef.h>

#include "kernels/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Scan kernels (fmb_k_scan in kernels.h says what each is and what AUTO picks). */
enum {
    FMB_SCAN_AUTO = 0,
    FMB_SCAN_QUAD = 1,
    FMB_SCAN_SEG = 2,
    FMB_SCAN_TILE = 3,
    FMB_SCAN_TILE1 = 4
};
/* Decode products, each batch-invariant (a sequence's bits do not depend on the batch):
 * AUTO = GEMM: fmb_k_gemm_inv with a plan fixed at 256 rows for the matrices of ≥ 4096 outputs
 * (in_proj, out_proj, dt_proj, lm_head: cuBLAS tensor-core kernels that keep up at large
 * batches) and fmb_k_matvec for x_proj; MMA: fmb_k_matvec for every matrix (its chain kernels
 * for M ≥ 1024: 2x faster than GEMM at 1 sequence, 1.5x at 16, 1.6-1.8x slower at 64-256);
 * CC: fmb_k_matvec's split kernel for every matrix (the kernel before the chain ones, for
 * comparison). (CC once chose a CUDA-core kernel and a cuBLAS switch whose results depended
 * on the batch.) */
enum { FMB_MATVEC_AUTO = 0, FMB_MATVEC_CC = 1, FMB_MATVEC_MMA = 2, FMB_MATVEC_GEMM = 3 };
/* Prefill GEMM (fmb_k_gemm_inv): FIXED one split-K-free algorithm per shape without workspace,
 * FIXEDWS the same with workspace allowed, CUBLAS cuBLAS's per-T choice (chunk-dependent). */
enum { FMB_GEMM_FIXED = 0, FMB_GEMM_FIXEDWS = 1, FMB_GEMM_CUBLAS = 2 };
/* Shared-memory cap a block (a test of the smaller cards' limit on a larger one): OFF, or SM86
 * = FMB_SMEM_SM86_BYTES (sharedMemPerBlockOptin of sm_86 and sm_89). */
enum { FMB_SMEM_CAP_OFF = 0, FMB_SMEM_CAP_SM86 = 1 };
#define FMB_SMEM_SM86_BYTES ((size_t)99 * 1024)
/* PDL: AUTO (on where the device and the kernel image support it), OFF; ON is only reported
 * (fmb_engine_kernel_choices: AUTO resolved on a device). */
enum { FMB_PDL_AUTO = 0, FMB_PDL_OFF = 1, FMB_PDL_ON = 2 };

typedef struct {
    int scan;         /* FMB_SCAN_* */
    int matvec;       /* FMB_MATVEC_* */
    int gemm;         /* FMB_GEMM_* */
    int pdl;          /* FMB_PDL_* */
    int no_graphs;    /* 1: decode steps launch their kernels one by one */
    int debug_sync;   /* 1: synchronise after every launch */
    int gemm_verbose; /* 1: print each row-invariant GEMM plan */
    int smem_cap;     /* FMB_SMEM_CAP_* */
} fmb_kernel_opts;

/* Applies the items of text (as above) on top of *o; keys not named keep their value. NULL or
 * "" changes nothing. FMB_EINVAL names the bad item; *o is then unchanged. */
FMB_NODISCARD fmb_status fmb_kernel_opts_parse(const char *text, fmb_kernel_opts *o, fmb_err *err);

/* Fills the keys of *o that are at their default with dflt's (a lower-priority source). */
void fmb_kernel_opts_fill(fmb_kernel_opts *o, const fmb_kernel_opts *dflt);

/* What fmb_kernel_opts_format writes: every key, the keys not at their default, or the keys
 * that change numbers and are not at their default ("" when there is none). */
enum { FMB_KOPTS_ALL = 0, FMB_KOPTS_NONDEFAULT = 1, FMB_KOPTS_NUMERIC = 2 };
/* The text form in the fixed key order above (parses back to *o). Returns buf. n ≥ 128. */
char *fmb_kernel_opts_format(const fmb_kernel_opts *o, int which, char *buf, size_t n);

#ifdef __cplusplus
}
#endif

#endif
