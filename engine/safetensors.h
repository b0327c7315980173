/*
 * safetensors: mmapped, validated safetensors files (one file or a sharded set with
 * model.safetensors.index.json).
 *
 * Every header is checked before any tensor byte is used: header length within the file,
 * JSON well-formed, known dtype, shape × dtype size = byte span, offsets inside the data
 * area and not overlapping, no duplicate names (across shards too), and for a sharded set
 * every tensor named in the index lives in the shard the index says.
 */
#ifndef FMB_SAFETENSORS_H
#define FMB_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/base.h"

/* Weights are F32, BF16 or F16; the others are read (reference fixtures hold F64 and I32)
 * but rejected by the model loader. */
typedef enum {
    FMB_DT_F32 = 0,
    FMB_DT_BF16,
    FMB_DT_F16,
    FMB_DT_F64,
    FMB_DT_I32,
    FMB_DT_I64
} fmb_dtype;

size_t fmb_dtype_size(fmb_dtype dt);
const char *fmb_dtype_name(fmb_dtype dt);

#define FMB_MAX_DIMS 8

/* A view of one tensor in a mapped file. Borrowed from the fmb_st that owns the mapping. */
typedef struct {
    const char *name;
    const char *file; /* path of the shard it lives in */
    fmb_dtype dtype;
    int ndim;
    int64_t shape[FMB_MAX_DIMS];
    size_t numel;
    size_t nbytes;
    const void *data; /* inside the mmap; not necessarily aligned beyond 1 byte */
} fmb_tensor;

typedef struct fmb_st fmb_st;

/* Opens dir/model.safetensors, or the shards listed in dir/model.safetensors.index.json.
 * Caller frees with fmb_st_close. */
FMB_NODISCARD fmb_status fmb_st_open_dir(const char *dir, fmb_st **out, fmb_err *err);
/* Opens one file. */
FMB_NODISCARD fmb_status fmb_st_open_file(const char *path, fmb_st **out, fmb_err *err);
void fmb_st_close(fmb_st *st);

size_t fmb_st_count(const fmb_st *st);
const fmb_tensor *fmb_st_at(const fmb_st *st, size_t i);
const fmb_tensor *fmb_st_find(const fmb_st *st, const char *name); /* NULL if absent */
size_t fmb_st_file_bytes(const fmb_st *st); /* total bytes of the mapped files */
/* The file that lists the tensors: model.safetensors or the index (for messages). */
const char *fmb_st_source(const fmb_st *st);

/* NaN and ±Inf values of a floating-point tensor (F32, BF16, F16, F64; 0 for integers), by
 * their exponent bits, in one pass over the mapped bytes (parallel for large tensors). *first
 * receives the flat index of the first such value (SIZE_MAX when none). */
size_t fmb_tensor_count_nonfinite(const fmb_tensor *t, size_t *first);

#endif
