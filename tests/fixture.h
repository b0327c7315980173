/*
 * fixture: reading the HF reference tensors in tests/fixtures/tiny-X/ref.safetensors (see
 * ref.json beside each). A missing tensor prints a FAIL line and exits: the fixture is broken.
 */
#ifndef FMB_TEST_FIXTURE_H
#define FMB_TEST_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include "engine/safetensors.h"
#include "kernels/kopts.h"

/* The tensor called name (borrowed from st). */
const fmb_tensor *fixture_ref(const fmb_st *st, const char *name);
/* A copy of an I32 tensor (caller frees); *n receives its length. */
int32_t *fixture_ids(const fmb_st *st, const char *name, size_t *n);
/* Element i of an F32 or F64 tensor, as double. */
double fixture_at(const fmb_tensor *t, size_t i);
/* The kernel choices of the environment as `fmbatch` reads them (FMB_SCAN, FMB_MATVEC,
 * FMB_GEMM, FMB_PDL=0, FMB_CUDA_GRAPHS=0, FMB_DEBUG_SYNC=1, FMB_GEMM_VERBOSE=1; and, tests
 * only, FMB_SMEM_CAP=sm86), for the GPU tests that tools/gpu-*.sh run under variants. A bad
 * value prints a FAIL line and exits. */
fmb_kernel_opts fixture_kernel_env(void);

#endif
