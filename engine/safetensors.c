/*
 * safetensors: mmapped, validated safetensors files. See safetensors.h.
 *
 * File layout: u64 little-endian header length H, H bytes of JSON
 * {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {}},
 * then the data area; offsets are relative to the data area.
 */
#include "engine/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    char *path;
    void *map;
    size_t size;
} st_file;

struct fmb_st {
    st_file *files;
    size_t n_files;
    fmb_tensor *tensors;
    size_t n_tensors, cap_tensors;
    char **names; /* owned copies of the tensor names and file paths */
    size_t n_names;
    char source[4200]; /* model.safetensors or model.safetensors.index.json */
};

size_t fmb_dtype_size(fmb_dtype dt)
{
    switch (dt) {
    case FMB_DT_BF16:
    case FMB_DT_F16:
        return 2;
    case FMB_DT_F32:
    case FMB_DT_I32:
        return 4;
    case FMB_DT_F64:
    case FMB_DT_I64:
        return 8;
    }
    return 0;
}

const char *fmb_dtype_name(fmb_dtype dt)
{
    switch (dt) {
    case FMB_DT_F32:
        return "F32";
    case FMB_DT_BF16:
        return "BF16";
    case FMB_DT_F16:
        return "F16";
    case FMB_DT_F64:
        return "F64";
    case FMB_DT_I32:
        return "I32";
    case FMB_DT_I64:
        return "I64";
    }
    return "?";
}

static char *own(fmb_st *st, const char *s)
{
    st->names = fmb_xrealloc(st->names, st->n_names + 1, sizeof *st->names);
    return st->names[st->n_names++] = fmb_xstrdup(s);
}

void fmb_st_close(fmb_st *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < st->n_files; i++) {
        if (st->files[i].map && st->files[i].size)
            munmap(st->files[i].map, st->files[i].size);
        free(st->files[i].path);
    }
    for (size_t i = 0; i < st->n_names; i++)
        free(st->names[i]);
    free(st->names);
    free(st->files);
    free(st->tensors);
    free(st);
}

static int cmp_offset(const void *a, const void *b)
{
    const fmb_tensor *x = *(const fmb_tensor *const *)a, *y = *(const fmb_tensor *const *)b;
    const char *px = x->data, *py = y->data;
    return px < py ? -1 : px > py;
}

/* Maps path and appends its tensors to st, validating the header. */
static fmb_status add_file(fmb_st *st, const char *path, fmb_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fmb_fail(err, FMB_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return fmb_fail(err, FMB_EIO, "%s: not a regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    if (size < 8) {
        close(fd);
        return fmb_fail(err, FMB_EINVAL,
                        "%s: truncated: %zu bytes, shorter than the 8-byte header length", path,
                        size);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return fmb_fail(err, FMB_EIO, "%s: mmap failed: %s", path, strerror(errno));
    st->files = fmb_xrealloc(st->files, st->n_files + 1, sizeof *st->files);
    st->files[st->n_files++] = (st_file){fmb_xstrdup(path), map, size};
    const char *fpath = own(st, path);

    const unsigned char *p = map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | p[i];
    if (hlen > size - 8)
        return fmb_fail(err, FMB_EINVAL,
                        "%s: header length %llu runs past the end of the file (%zu bytes): "
                        "truncated or not a safetensors file",
                        path, (unsigned long long)hlen, size);
    if (hlen > (100u << 20))
        return fmb_fail(err, FMB_EINVAL, "%s: header length %llu is over 100 MiB", path,
                        (unsigned long long)hlen);
    const char *data = (const char *)p + 8 + hlen;
    size_t data_size = size - 8 - (size_t)hlen;

    json_error_t je;
    json_t *root = json_loadb((const char *)p + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return fmb_fail(err, FMB_EINVAL, "%s: malformed JSON header (line %d column %d): %s", path,
                        je.line, je.column, je.text);
    fmb_status s = FMB_OK;
    size_t first = st->n_tensors;
    if (!json_is_object(root)) {
        s = fmb_fail(err, FMB_EINVAL, "%s: header is not a JSON object", path);
        goto out;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        if (!strcmp(key, "__metadata__"))
            continue;
        if (fmb_st_find(st, key)) {
            s = fmb_fail(err, FMB_EINVAL, "%s: tensor \"%s\" appears twice", path, key);
            goto out;
        }
        json_t *jd = json_object_get(val, "dtype"), *js = json_object_get(val, "shape"),
               *jo = json_object_get(val, "data_offsets");
        if (!json_is_string(jd) || !json_is_array(js) || !json_is_array(jo) ||
            json_array_size(jo) != 2) {
            s = fmb_fail(err, FMB_EINVAL,
                         "%s: tensor \"%s\": entry needs \"dtype\", \"shape\" and a two-element "
                         "\"data_offsets\"",
                         path, key);
            goto out;
        }
        fmb_tensor t;
        memset(&t, 0, sizeof t);
        const char *dts = json_string_value(jd);
        if (!strcmp(dts, "F32"))
            t.dtype = FMB_DT_F32;
        else if (!strcmp(dts, "BF16"))
            t.dtype = FMB_DT_BF16;
        else if (!strcmp(dts, "F16"))
            t.dtype = FMB_DT_F16;
        else if (!strcmp(dts, "F64"))
            t.dtype = FMB_DT_F64;
        else if (!strcmp(dts, "I32"))
            t.dtype = FMB_DT_I32;
        else if (!strcmp(dts, "I64"))
            t.dtype = FMB_DT_I64;
        else {
            s = fmb_fail(err, FMB_EUNSUP,
                         "%s: tensor \"%s\": unknown or unsupported dtype \"%s\" (weights must be "
                         "F32, BF16 or F16)",
                         path, key, dts);
            goto out;
        }
        if (json_array_size(js) > FMB_MAX_DIMS) {
            s = fmb_fail(err, FMB_EINVAL, "%s: tensor \"%s\": more than %d dimensions", path, key,
                         FMB_MAX_DIMS);
            goto out;
        }
        t.ndim = (int)json_array_size(js);
        t.numel = 1;
        for (int d = 0; d < t.ndim; d++) {
            json_t *x = json_array_get(js, (size_t)d);
            if (!json_is_integer(x) || json_integer_value(x) < 0 ||
                json_integer_value(x) > ((int64_t)1 << 40)) {
                s = fmb_fail(err, FMB_EINVAL, "%s: tensor \"%s\": bad shape", path, key);
                goto out;
            }
            t.shape[d] = json_integer_value(x);
            if (t.shape[d] && t.numel > SIZE_MAX / (size_t)t.shape[d] / 4) {
                s = fmb_fail(err, FMB_EINVAL, "%s: tensor \"%s\": shape overflows", path, key);
                goto out;
            }
            t.numel *= (size_t)t.shape[d];
        }
        json_t *jb = json_array_get(jo, 0), *je2 = json_array_get(jo, 1);
        if (!json_is_integer(jb) || !json_is_integer(je2) || json_integer_value(jb) < 0 ||
            json_integer_value(je2) < json_integer_value(jb)) {
            s = fmb_fail(err, FMB_EINVAL, "%s: tensor \"%s\": bad data_offsets", path, key);
            goto out;
        }
        uint64_t b = (uint64_t)json_integer_value(jb), e = (uint64_t)json_integer_value(je2);
        if (e > data_size) {
            s = fmb_fail(err, FMB_EINVAL,
                         "%s: tensor \"%s\": data_offsets [%llu, %llu] run past the end of the "
                         "data (%zu bytes): the file is truncated",
                         path, key, (unsigned long long)b, (unsigned long long)e, data_size);
            goto out;
        }
        t.nbytes = t.numel * fmb_dtype_size(t.dtype);
        if (e - b != t.nbytes) {
            s = fmb_fail(err, FMB_EINVAL,
                         "%s: tensor \"%s\": %llu bytes of data but shape × %s needs %zu", path,
                         key, (unsigned long long)(e - b), dts, t.nbytes);
            goto out;
        }
        t.data = data + b;
        t.name = own(st, key);
        t.file = fpath;
        if (st->n_tensors == st->cap_tensors) {
            st->cap_tensors = st->cap_tensors ? 2 * st->cap_tensors : 256;
            st->tensors = fmb_xrealloc(st->tensors, st->cap_tensors, sizeof *st->tensors);
        }
        st->tensors[st->n_tensors++] = t;
    }
    // Overlap check: sort this file's tensors by offset; each must end before the next starts.
    size_t cnt = st->n_tensors - first;
    if (cnt > 1) {
        const fmb_tensor **order = fmb_xmalloc(cnt * sizeof *order);
        for (size_t i = 0; i < cnt; i++)
            order[i] = &st->tensors[first + i];
        qsort(order, cnt, sizeof *order, cmp_offset);
        for (size_t i = 1; i < cnt; i++) {
            const char *prev_end = (const char *)order[i - 1]->data + order[i - 1]->nbytes;
            if ((const char *)order[i]->data < prev_end) {
                s = fmb_fail(err, FMB_EINVAL, "%s: tensors \"%s\" and \"%s\" overlap", path,
                             order[i - 1]->name, order[i]->name);
                break;
            }
        }
        free(order);
    }
out:
    json_decref(root);
    return s;
}

fmb_status fmb_st_open_file(const char *path, fmb_st **out, fmb_err *err)
{
    fmb_st *st = fmb_xcalloc(1, sizeof *st);
    snprintf(st->source, sizeof st->source, "%s", path);
    fmb_status s = add_file(st, path, err);
    if (s) {
        fmb_st_close(st);
        return s;
    }
    *out = st;
    return FMB_OK;
}

fmb_status fmb_st_open_dir(const char *dir, fmb_st **out, fmb_err *err)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (access(path, F_OK) != 0) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        if (access(path, F_OK) != 0)
            return fmb_fail(err, FMB_EIO,
                            "%s: no model.safetensors or model.safetensors.index.json", dir);
        return fmb_st_open_file(path, out, err);
    }
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return fmb_fail(err, FMB_EINVAL, "%s:%d:%d: malformed JSON: %s", path, je.line, je.column,
                        je.text);
    fmb_status s = FMB_OK;
    fmb_st *st = fmb_xcalloc(1, sizeof *st);
    snprintf(st->source, sizeof st->source, "%s", path);
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm) || json_object_size(wm) == 0) {
        s = fmb_fail(err, FMB_EINVAL, "%s: missing field \"weight_map\" (an object)", path);
        goto out;
    }
    // Open each distinct shard once, in the order first named.
    const char *key;
    json_t *val;
    json_object_foreach(wm, key, val)
    {
        if (!json_is_string(val)) {
            s = fmb_fail(err, FMB_EINVAL, "%s: weight_map[\"%s\"] must be a file name", path, key);
            goto out;
        }
        const char *shard = json_string_value(val);
        if (strchr(shard, '/') || !strcmp(shard, "..")) {
            s = fmb_fail(err, FMB_EINVAL, "%s: weight_map[\"%s\"] = \"%s\" is not a file name",
                         path, key, shard);
            goto out;
        }
        char sp[4200];
        snprintf(sp, sizeof sp, "%s/%s", dir, shard);
        int seen = 0;
        for (size_t i = 0; i < st->n_files; i++)
            seen |= !strcmp(st->files[i].path, sp);
        if (!seen && (s = add_file(st, sp, err)))
            goto out;
    }
    json_object_foreach(wm, key, val)
    {
        const fmb_tensor *t = fmb_st_find(st, key);
        char sp[4200];
        snprintf(sp, sizeof sp, "%s/%s", dir, json_string_value(val));
        if (!t) {
            s = fmb_fail(err, FMB_EINVAL,
                         "%s: tensor \"%s\" is listed in the index but missing from %s", path, key,
                         sp);
            goto out;
        }
        if (strcmp(t->file, sp)) {
            s = fmb_fail(err, FMB_EINVAL, "%s: tensor \"%s\" is in %s, the index says %s", path,
                         key, t->file, sp);
            goto out;
        }
    }
out:
    json_decref(root);
    if (s) {
        fmb_st_close(st);
        return s;
    }
    *out = st;
    return FMB_OK;
}

size_t fmb_st_count(const fmb_st *st)
{
    return st->n_tensors;
}

const fmb_tensor *fmb_st_at(const fmb_st *st, size_t i)
{
    FMB_ASSERT(i < st->n_tensors);
    return &st->tensors[i];
}

const fmb_tensor *fmb_st_find(const fmb_st *st, const char *name)
{
    // Linear: a 7B checkpoint has 771 tensors and lookups happen once, at load.
    for (size_t i = 0; i < st->n_tensors; i++)
        if (!strcmp(st->tensors[i].name, name))
            return &st->tensors[i];
    return NULL;
}

size_t fmb_st_file_bytes(const fmb_st *st)
{
    size_t n = 0;
    for (size_t i = 0; i < st->n_files; i++)
        n += st->files[i].size;
    return n;
}

const char *fmb_st_source(const fmb_st *st)
{
    return st->source;
}

/* An element is NaN or ±Inf when its exponent bits are all ones (mask = those bits). One
 * function per element width; unaligned loads through memcpy (the views are 1-byte aligned). */
// clang-format off
#define NONFINITE_SCAN_FN(NAME, TYPE)                                                           \
    static size_t NAME(const unsigned char *p, size_t numel, TYPE mask, size_t *first)          \
    {                                                                                          \
        size_t n = 0, lo = SIZE_MAX;                                                           \
        _Pragma("omp parallel for reduction(+ : n) reduction(min : lo) if (numel > (1 << 20))") \
        for (size_t i = 0; i < numel; i++) {                                                   \
            TYPE u;                                                                            \
            memcpy(&u, p + i * sizeof u, sizeof u);                                            \
            if ((u & mask) == mask) {                                                          \
                n++;                                                                           \
                lo = i < lo ? i : lo;                                                          \
            }                                                                                  \
        }                                                                                      \
        *first = lo;                                                                           \
        return n;                                                                              \
    }
NONFINITE_SCAN_FN(nonfinite16, uint16_t)
NONFINITE_SCAN_FN(nonfinite32, uint32_t)
NONFINITE_SCAN_FN(nonfinite64, uint64_t)
// clang-format on

size_t fmb_tensor_count_nonfinite(const fmb_tensor *t, size_t *first)
{
    size_t lo = SIZE_MAX, n = 0;
    switch (t->dtype) {
    case FMB_DT_F32:
        n = nonfinite32(t->data, t->numel, 0x7f800000u, &lo);
        break;
    case FMB_DT_BF16:
        n = nonfinite16(t->data, t->numel, 0x7f80u, &lo);
        break;
    case FMB_DT_F16:
        n = nonfinite16(t->data, t->numel, 0x7c00u, &lo);
        break;
    case FMB_DT_F64:
        n = nonfinite64(t->data, t->numel, 0x7ff0000000000000ull, &lo);
        break;
    default:
        break;
    }
    if (first)
        *first = lo;
    return n;
}
