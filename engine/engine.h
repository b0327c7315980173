/*
 * engine: the FalconMamba forward pass behind one interface, two backends.
 *
 *   cpu   float32 throughout, OpenBLAS GEMMs, OpenMP over channels. The numeric oracle.
 *   cuda  bf16 weights, cuBLAS GEMMs with fp32 accumulation, fused kernels (or f32).
 *
 * A forward pass consumes n tokens from a recurrent state (fmb_state) and advances it. It runs
 * token-chunk major: chunks of at most opts.chunk_tokens tokens, all layers per chunk, so that
 * memory never depends on n. Per-position outputs (the log-probability of a target token, its
 * rank, the argmax, top-k, raw logits) are computed from bounded vocabulary tiles; nothing of
 * size [n x V] is allocated unless the caller asks for raw logits.
 */
#ifndef FMB_ENGINE_H
#define FMB_ENGINE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/config.h"
#include "kernels/base.h"
#include "kernels/kopts.h"

/* A stop flag that a signal handler sets (to the signal) and other threads read: a lock-free
 * atomic, which C11 lets a handler write and any thread read (a volatile sig_atomic_t is safe
 * only within the handler's own thread: the runner's engine runs on a thread of its own). */
typedef atomic_int fmb_stop_flag;
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "a signal handler may only write lock-free atomics");

/* *f, or 0 when f is NULL (a relaxed load: the flag publishes no other data). */
static inline int fmb_stopped(const fmb_stop_flag *f)
{
    return f ? atomic_load_explicit(f, memory_order_relaxed) : 0;
}

typedef enum { FMB_BACKEND_AUTO = 0, FMB_BACKEND_CPU, FMB_BACKEND_CUDA } fmb_backend_kind;
typedef enum { FMB_COMPUTE_DEFAULT = 0, FMB_COMPUTE_BF16, FMB_COMPUTE_F32 } fmb_compute_kind;

typedef struct {
    fmb_backend_kind backend;
    fmb_compute_kind compute; /* cpu: always f32; cuda: bf16 by default */
    size_t chunk_tokens;      /* prefill chunk length T (0: backend default) */
    size_t max_batch;         /* decode batch the scratch is sized for (0: 1) */
    size_t mem_limit;         /* bytes of device memory to stay under (0: no limit) */
    int threads;              /* cpu threads (0: all cores) */
    int verbose;
    fmb_kernel_opts kernel; /* cuda: the kernel choices (zeroed: defaults); cpu: unused */
    int device;             /* cuda: the device ordinal, among the visible ones; cpu: unused */
} fmb_engine_opts;

typedef struct fmb_engine fmb_engine;
typedef struct fmb_state fmb_state; /* one sequence's conv + ssm state, all layers */

/* Loads model_dir (config.json + safetensors, validated) onto the chosen backend. */
FMB_NODISCARD fmb_status fmb_engine_open(const char *model_dir,
                                         const fmb_engine_opts *opts,
                                         fmb_engine **out,
                                         fmb_err *err);
void fmb_engine_free(fmb_engine *eng);

const fmb_config *fmb_engine_config(const fmb_engine *eng);
const char *fmb_engine_backend_name(const fmb_engine *eng); /* "cpu", "cuda" */
const char *fmb_engine_device_name(const fmb_engine *eng);  /* CPU model or GPU name */
size_t fmb_engine_chunk_tokens(const fmb_engine *eng);
/* The kernel choices in effect (pdl resolved to on/off, graphs off under debug-sync): returns 1
 * and fills *out on a backend that has them (cuda), 0 on one that has none (cpu). */
int fmb_engine_kernel_choices(const fmb_engine *eng, fmb_kernel_opts *out);

/* What the engine holds, in bytes (a backend that cannot tell reports 0). */
typedef struct {
    size_t weights_bytes; /* weights resident in the backend's own memory (not the mmap) */
    size_t mapped_bytes;  /* checkpoint files mapped (page cache, read on demand) */
    size_t scratch_bytes; /* chunk-sized activations, layer buffers, the logits tile */
    size_t state_bytes;   /* one sequence's conv + ssm state */
    size_t device_total;  /* device memory, CUDA only */
    size_t device_free;
} fmb_engine_mem;

void fmb_engine_memory(const fmb_engine *eng, fmb_engine_mem *m);

/* States: created zeroed (the start of a sequence). Free accepts NULL. */
FMB_NODISCARD fmb_status fmb_state_new(fmb_engine *eng, fmb_state **out, fmb_err *err);
void fmb_state_free(fmb_state *st);
void fmb_state_reset(fmb_state *st);
void fmb_state_copy(fmb_state *dst, const fmb_state *src); /* same engine */
/* Host float32 copies, for tests and snapshots: conv [L, E, K-1] (oldest first), ssm
 * [L, E, N]. Either pointer may be NULL. */
void fmb_state_read(const fmb_state *st, float *conv, float *ssm);
void fmb_state_write(fmb_state *st, const float *conv, const float *ssm);

/* What a forward pass reports per position t in [0, n). Every pointer may be NULL; a NULL
 * struct (or all-NULL outputs) skips the lm_head entirely (a prefix prefill). */
typedef struct {
    const int32_t *targets; /* [n] id whose log-probability to take at t, or -1 */
    float *logprob;         /* [n] log p(targets[t] | ids[..t]); NAN where targets[t] < 0 */
    int32_t *rank;          /* [n] ids with a strictly larger logit than the target (0 = top) */
    int32_t *argmax;        /* [n] argmax of the logits, ties to the lowest id */
    int top_k;              /* > 0: fill topk_* with the k best, descending, ties lowest id */
    int32_t *topk_ids;      /* [n, top_k] */
    float *topk_logprobs;   /* [n, top_k] */
    float *logits;          /* [n - logits_from, V] raw logits of positions >= logits_from */
    size_t logits_from;
} fmb_outputs;

/* Runs ids[0..n) from st (advanced in place). Fails with FMB_EINVAL ("non-finite ...") when a
 * log-probability of a position with a target, or a raw logit, is NaN or +Inf: the weights or
 * the state hold non-finite values, and no output of the call is to be used. */
FMB_NODISCARD fmb_status fmb_engine_forward(fmb_engine *eng,
                                            fmb_state *st,
                                            const int32_t *ids,
                                            size_t n,
                                            const fmb_outputs *out,
                                            fmb_err *err);

/* One sequence's part of a multi-sequence forward pass: n ids continuing st (advanced in
 * place), with per-position outputs as in fmb_engine_forward (NULL: none, a prefix prefill).
 * Everything is borrowed for the call. */
typedef struct {
    fmb_state *st;
    const int32_t *ids;
    size_t n;
    const fmb_outputs *out;
} fmb_piece;

/* Runs every piece as fmb_engine_forward would run it alone, packed: the backend fills each
 * chunk of chunk_tokens rows with the next pieces' tokens (a piece may span chunks; its state
 * carries), so that many short documents share one GEMM instead of running one small GEMM
 * each. Batch-invariant: every output of a piece is bitwise the same as fmb_engine_forward
 * gives for that piece alone, whatever the other pieces, their order or their lengths. The
 * pieces' states must be distinct. The cancel flag is checked before each chunk; progress
 * reports tokens done of all pieces' tokens. */
FMB_NODISCARD fmb_status fmb_engine_forward_many(fmb_engine *eng,
                                                 const fmb_piece *pieces,
                                                 size_t n_pieces,
                                                 fmb_err *err);

/* Makes fmb_engine_forward check *flag before each chunk and return FMB_EINTR once it is
 * non-zero (a signal handler's flag: a long document stops within one chunk). The flag is
 * borrowed; NULL removes it. fmb_engine_step and generation check it once per token. */
void fmb_engine_set_cancel(fmb_engine *eng, const fmb_stop_flag *flag);

/* Makes the calling thread's device the engine's (CUDA keeps a current device per thread): a
 * thread other than the one that opened the engine calls it before its first engine call. A
 * no-op on the CPU. */
void fmb_engine_bind_thread(fmb_engine *eng);

/* Calls fn(ctx, done, total) after each chunk of every fmb_engine_forward call of more than
 * one chunk (long-document progress). fn runs on the calling thread; NULL removes it. */
typedef void (*fmb_progress_fn)(void *ctx, size_t done, size_t total);
void fmb_engine_set_progress(fmb_engine *eng, fmb_progress_fn fn, void *ctx);

/* One decode step for nseq independent sequences: token ids[i] continues states[i]; writes
 * logits [nseq, V] (float32). Batch-invariant, bitwise: a sequence's logits do not depend on
 * nseq, on the other sequences or on its position among them.
 * Rows are returned as computed, NaN or Inf included: each sequence's consumer checks its own
 * row (fmb_gen_push fails that generation alone), so that one sequence gone non-finite does
 * not fail the others of its batch. */
FMB_NODISCARD fmb_status fmb_engine_step(fmb_engine *eng,
                                         fmb_state *const *states,
                                         const int32_t *ids,
                                         size_t nseq,
                                         float *logits,
                                         fmb_err *err);

/* A model with random weights generated on the device (no checkpoint): for `fmbatch bench
 * --synthetic`. cfg gives the shape (e.g. from fmb_synth_shape("7b")); the weights depend only
 * on seed. Needs the CUDA backend (FMB_EUNSUP otherwise). Added by the CUDA backend work. */
FMB_NODISCARD fmb_status fmb_engine_open_synthetic(const fmb_config *cfg,
                                                   const fmb_engine_opts *opts,
                                                   uint64_t seed,
                                                   fmb_engine **out,
                                                   fmb_err *err);

#endif
