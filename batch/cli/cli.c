/* cli: helpers shared by the commands. See cli.h. */
#include "batch/cli/cli.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "batch/job.h"

int fmb_cli_exit_code(fmb_status s)
{
    switch (s) {
    case FMB_OK:
        return FMB_EXIT_OK;
    case FMB_EINVAL:
    case FMB_EUNSUP:
    case FMB_EIO:
    case FMB_ELIMIT:
        return FMB_EXIT_USAGE;
    case FMB_EINTR:
        return 130;
    default:
        return FMB_EXIT_FATAL;
    }
}

void fmb_cli_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "fmbatch %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int fmb_cli_parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s || !isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

int fmb_cli_parse_float(const char *s, double *out)
{
    if (!s || !*s)
        return -1;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

int fmb_cli_parse_size(const char *s, size_t *out)
{
    return fmb_job_parse_size(s, out); /* one parser for --mem-limit and [job].mem_limit */
}

int fmb_cli_engine_opt(const char *name, const char *value, fmb_engine_opts *o, int *bad)
{
    uint64_t u;
    *bad = 0;
    if (!strcmp(name, "backend")) {
        if (!strcmp(value, "auto"))
            o->backend = FMB_BACKEND_AUTO;
        else if (!strcmp(value, "cpu"))
            o->backend = FMB_BACKEND_CPU;
        else if (!strcmp(value, "cuda"))
            o->backend = FMB_BACKEND_CUDA;
        else
            *bad = 1;
        return 1;
    }
    if (!strcmp(name, "dtype")) {
        if (!strcmp(value, "bf16"))
            o->compute = FMB_COMPUTE_BF16;
        else if (!strcmp(value, "f32"))
            o->compute = FMB_COMPUTE_F32;
        else
            *bad = 1;
        return 1;
    }
    if (!strcmp(name, "chunk-tokens")) {
        if (fmb_cli_parse_u64(value, &u) || u == 0)
            *bad = 1;
        else
            o->chunk_tokens = (size_t)u;
        return 1;
    }
    if (!strcmp(name, "max-batch")) {
        if (fmb_cli_parse_u64(value, &u) || u == 0 || u > 4096)
            *bad = 1;
        else
            o->max_batch = (size_t)u;
        return 1;
    }
    if (!strcmp(name, "mem-limit")) {
        size_t sz;
        if (fmb_cli_parse_size(value, &sz))
            *bad = 1;
        else
            o->mem_limit = sz;
        return 1;
    }
    if (!strcmp(name, "kernel")) {
        fmb_err err;
        if (fmb_kernel_opts_parse(value, &o->kernel, &err))
            *bad = 1;
        return 1;
    }
    if (!strcmp(name, "threads")) {
        if (fmb_cli_parse_u64(value, &u) || u > 4096)
            *bad = 1;
        else
            o->threads = (int)u;
        return 1;
    }
    return 0;
}

/* A boolean variable as the old getenv calls read it: set, non-empty and not "0" is on. */
static int env_on(const char *v)
{
    return v && *v && strcmp(v, "0") != 0;
}

int fmb_cli_engine_env(const char *cmd, fmb_engine_opts *o)
{
    static const struct {
        const char *var, *key;
    } named[] = {{"FMB_SCAN", "scan"}, {"FMB_MATVEC", "matvec"}, {"FMB_GEMM", "gemm"}};
    fmb_kernel_opts k = o->kernel;
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++) {
        const char *v = getenv(named[i].var);
        if (!v || !*v)
            continue;
        char item[128];
        fmb_err err;
        snprintf(item, sizeof item, "%s=%s", named[i].key, v);
        if (strchr(v, ',') || strchr(v, '=') || fmb_kernel_opts_parse(item, &k, &err)) {
            fmb_cli_error(cmd, "environment %s='%s': not a %s choice (see --kernel)", named[i].var,
                          v, named[i].key);
            return -1;
        }
    }
    const char *pdl = getenv("FMB_PDL"), *graphs = getenv("FMB_CUDA_GRAPHS");
    if (pdl && !strcmp(pdl, "0"))
        k.pdl = FMB_PDL_OFF;
    if (graphs && !strcmp(graphs, "0"))
        k.no_graphs = 1;
    if (env_on(getenv("FMB_DEBUG_SYNC")))
        k.debug_sync = 1;
    if (env_on(getenv("FMB_GEMM_VERBOSE")))
        k.gemm_verbose = 1;
    o->kernel = k;
    return 0;
}

const char *fmb_cli_kernel_report(const fmb_engine *eng, char *buf, size_t n)
{
    fmb_kernel_opts k;
    if (!fmb_engine_kernel_choices(eng, &k)) {
        snprintf(buf, n, "n/a (cpu backend)");
        return buf;
    }
    return fmb_kernel_opts_format(&k, FMB_KOPTS_ALL, buf, n);
}

fmb_status fmb_cli_read_file(const char *path, char **out, size_t *len, fmb_err *err)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f)
        return fmb_fail(err, FMB_EIO, "%s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf) {
        if (f != stdin)
            fclose(f);
        return fmb_fail(err, FMB_ENOMEM, "%s: out of memory", path);
    }
    for (;;) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                if (f != stdin)
                    fclose(f);
                return fmb_fail(err, FMB_ENOMEM, "%s: out of memory", path);
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0)
            break;
    }
    int bad = ferror(f);
    if (f != stdin)
        fclose(f);
    if (bad) {
        free(buf);
        return fmb_fail(err, FMB_EIO, "%s: read error", path);
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return FMB_OK;
}

fmb_status fmb_cli_read_ids(const char *path, int32_t **ids, size_t *n, fmb_err *err)
{
    char *text;
    size_t len;
    fmb_status s = fmb_cli_read_file(path, &text, &len, err);
    if (s)
        return s;
    size_t cap = 1024, cnt = 0;
    char *p = text;
    while (*p && isspace((unsigned char)*p))
        p++;
    if (*p == '[') { /* a JSON array, as `fmbatch tokenize` prints */
        json_error_t je;
        json_t *a = json_loadb(text, len, 0, &je);
        if (!a || !json_is_array(a)) {
            json_decref(a);
            free(text);
            return fmb_fail(err, FMB_EINVAL, "%s:%d:%d: not a JSON array of token ids: %s", path,
                            je.line, je.column, a ? "not an array" : je.text);
        }
        size_t na = json_array_size(a);
        int32_t *w = fmb_xmalloc((na ? na : 1) * sizeof *w);
        for (size_t i = 0; i < na; i++) {
            json_t *x = json_array_get(a, i);
            json_int_t xi = json_is_integer(x) ? json_integer_value(x) : -1;
            if (xi < 0 || xi > INT32_MAX) {
                json_decref(a);
                free(w);
                free(text);
                return fmb_fail(err, FMB_EINVAL, "%s: element %zu is not a token id", path, i);
            }
            w[i] = (int32_t)xi;
        }
        json_decref(a);
        free(text);
        *ids = w;
        *n = na;
        return FMB_OK;
    }
    int32_t *v = fmb_xmalloc(cap * sizeof *v);
    p = text;
    size_t line = 1;
    for (;;) {
        while (*p && isspace((unsigned char)*p)) {
            if (*p == '\n')
                line++;
            p++;
        }
        if (!*p)
            break;
        char *end;
        errno = 0;
        long long x = strtoll(p, &end, 10);
        if (end == p || errno || x < 0 || x > INT32_MAX ||
            (*end && !isspace((unsigned char)*end))) {
            char word[32];
            size_t wl = strcspn(p, " \t\r\n");
            snprintf(word, sizeof word, "%.*s", (int)(wl < 24 ? wl : 24), p);
            free(v);
            free(text);
            return fmb_fail(err, FMB_EINVAL, "%s:%zu: not a token id: '%s'", path, line, word);
        }
        if (cnt == cap) {
            cap *= 2;
            v = fmb_xrealloc(v, cap, sizeof *v);
        }
        v[cnt++] = (int32_t)x;
        p = end;
    }
    free(text);
    *ids = v;
    *n = cnt;
    return FMB_OK;
}

void fmb_cli_json_num(FILE *f, double x)
{
    if (!isfinite(x))
        fputs("null", f);
    else
        fprintf(f, "%.9g", x);
}

json_t *fmb_cli_nonfinite_weights(const fmb_st *st, size_t *n_bad, const char **first_name)
{
    json_t *a = json_array();
    *n_bad = 0;
    *first_name = NULL;
    for (size_t i = 0; i < fmb_st_count(st); i++) {
        const fmb_tensor *t = fmb_st_at(st, i);
        size_t first, n = fmb_tensor_count_nonfinite(t, &first);
        if (!n)
            continue;
        if (!*first_name)
            *first_name = t->name;
        json_t *o = json_object();
        json_object_set_new(o, "tensor", json_string(t->name));
        json_object_set_new(o, "dtype", json_string(fmb_dtype_name(t->dtype)));
        json_object_set_new(o, "values", json_integer((json_int_t)n));
        json_object_set_new(o, "first_index", json_integer((json_int_t)first));
        json_array_append_new(a, o);
        (*n_bad)++;
    }
    return a;
}

/* The options several commands share. */
static const fmb_cli_opt_help shared_help[] = {
    {"model", "DIR", "the model folder (HF layout: config.json, *.safetensors, tokenizer.json)"},
    {"tokenizer", "FILE", "a tokenizer.json (instead of --model DIR)"},
    {"ids-file", "FILE", "token ids, whitespace-separated or a JSON array"},
    {"text-file", "FILE", "text to encode (UTF-8)"},
    {"prompt", "TEXT", "the text itself"},
    {"backend", "auto|cpu|cuda", "engine backend (default auto: the GPU when there is one)"},
    {"dtype", "bf16|f32", "CUDA compute type (default bf16)"},
    {"chunk-tokens", "N", "prefill chunk length (default 4096 on CUDA)"},
    {"mem-limit", "SIZE", "device memory to stay under, e.g. 22GiB (default none)"},
    {"kernel", "K=V,...", "CUDA kernel choices (README); repeatable"},
    {"threads", "N", "CPU threads (default all cores)"},
    {"seed", "N", "random seed"},
    {"verbose", NULL, "more detail on stderr"},
    {"help", NULL, "this help"},
    {NULL, NULL, NULL}};

static const fmb_cli_opt_help *help_of(const char *name, const fmb_cli_opt_help *own)
{
    for (const fmb_cli_opt_help *h = own; h && h->name; h++)
        if (!strcmp(h->name, name))
            return h;
    for (const fmb_cli_opt_help *h = shared_help; h->name; h++)
        if (!strcmp(h->name, name))
            return h;
    return NULL;
}

void fmb_cli_help(const char *usage, const struct option *lo, const fmb_cli_opt_help *own)
{
    printf("usage: fmbatch %s\n\noptions:\n", usage);
    for (const struct option *o = lo; o->name; o++) {
        const fmb_cli_opt_help *h = help_of(o->name, own);
        const char *arg = h && h->arg ? h->arg : o->has_arg ? "VALUE" : NULL;
        char lhs[64];
        snprintf(lhs, sizeof lhs, "--%s%s%s", o->name, arg ? " " : "", arg ? arg : "");
        printf("  %-30s %s\n", lhs, h ? h->help : "");
    }
}
