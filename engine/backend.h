/*
 * backend: the interface each engine backend implements (engine-internal; callers use
 * engine.h). A backend owns its weights copy (or views), its scratch and its state format.
 */
#ifndef FMB_BACKEND_H
#define FMB_BACKEND_H

#include "engine/engine.h"
#include "engine/model.h"

/* A piece as the backend sees it: st is the backend's own state (fmb_state's impl). */
typedef struct {
    void *st;
    const int32_t *ids;
    size_t n;
    const fmb_outputs *out;
} fmb_bpiece;

typedef struct {
    const char *name;
    /* Creates the backend for model m (which outlives it) and options o. */
    fmb_status (*open)(const fmb_model *m, const fmb_engine_opts *o, void **impl, fmb_err *err);
    void (*free)(void *impl);
    const char *(*device_name)(void *impl);
    size_t (*chunk_tokens)(void *impl);
    fmb_status (*state_new)(void *impl, void **st, fmb_err *err);
    void (*state_free)(void *impl, void *st);
    void (*state_reset)(void *impl, void *st);
    void (*state_copy)(void *impl, void *dst, const void *src);
    void (*state_read)(void *impl, const void *st, float *conv, float *ssm);
    void (*state_write)(void *impl, void *st, const float *conv, const float *ssm);
    fmb_status (*forward)(
        void *impl, void *st, const int32_t *ids, size_t n, const fmb_outputs *out, fmb_err *err);
    fmb_status (*step)(
        void *impl, void *const *sts, const int32_t *ids, size_t nseq, float *logits, fmb_err *err);
    /* Optional: one packed chunk of several pieces (distinct states, at most chunk_tokens
     * tokens in all, every piece at least one token), with bitwise the results forward gives
     * each piece alone. NULL: engine.c runs the pieces one by one through forward. */
    fmb_status (*forward_chunk)(void *impl, const fmb_bpiece *pieces, size_t n, fmb_err *err);
    /* Optional (NULL: only what engine.c can compute is reported). */
    void (*memory)(void *impl, fmb_engine_mem *m);
    /* Optional (NULL: the backend has no kernel choices): the choices in effect. */
    void (*kernel_choices)(void *impl, fmb_kernel_opts *out);
    /* Optional: the calling thread works on the backend's device from now on. */
    void (*bind_thread)(void *impl);
} fmb_backend_ops;

/* The outputs of positions [p0, p0 + m) of out as a view written into *o (NULL when out is
 * NULL): every per-position array offset by p0, logits/logits_from rebased (engine.c). */
const fmb_outputs *
fmb_outputs_slice(const fmb_outputs *out, size_t p0, size_t m, size_t V, fmb_outputs *o);

extern const fmb_backend_ops fmb_backend_cpu;
#ifdef FMB_HAVE_CUDA
extern const fmb_backend_ops fmb_backend_cuda;
/* 1 when a CUDA device can be used (driver present, at least one device). */
int fmb_cuda_available(void);
#endif

#endif
