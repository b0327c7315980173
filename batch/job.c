/*
 * job: TOML job file -> fmb_job. The TOML itself is parsed by toml++ (batch/toml.cc); this file
 * checks the job schema: every table lists the keys it accepts, so a typo is an error that names
 * file:line:column instead of a setting silently ignored.
 */
#include "batch/job.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "batch/prompt.h"
#include "batch/toml.h"

int fmb_job_parse_size(const char *s, size_t *out)
{
    if (!s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno || !(v >= 0) || v > 1.8e19)
        return -1;
    static const struct {
        const char *suffix;
        double mult;
    } units[] = {{"", 1},
                 {"B", 1},
                 {"K", 1e3},
                 {"KB", 1e3},
                 {"KiB", 1024.0},
                 {"M", 1e6},
                 {"MB", 1e6},
                 {"MiB", 1048576.0},
                 {"G", 1e9},
                 {"GB", 1e9},
                 {"GiB", 1073741824.0},
                 {"T", 1e12},
                 {"TB", 1e12},
                 {"TiB", 1099511627776.0}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (!strcasecmp(end, units[i].suffix)) {
            double b = v * units[i].mult;
            if (b >= 1.8e19)
                return -1;
            *out = (size_t)b;
            return 0;
        }
    }
    return -1;
}

/* ---------------------------------------------------------------------------------------- */
/* Schema helpers: each returns FMB_OK, or FMB_EINVAL with "path:line:col: what" in err. */

typedef struct {
    const char *path;
    fmb_err *err;
} ctx;

static fmb_status at(ctx *c, const fmb_toml_value *v, const char *fmt, ...) FMB_PRINTF_LIKE(3, 4);
static fmb_status at(ctx *c, const fmb_toml_value *v, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int line = v ? (v->key ? v->key_line : v->line) : 1;
    int col = v ? (v->key ? v->key_col : v->col) : 1;
    return fmb_fail(c->err, FMB_EINVAL, "%s:%d:%d: %s", c->path, line, col, msg);
}

/* Rejects any key of tbl not in allowed (NULL-terminated). where names the table. */
static fmb_status
only_keys(ctx *c, const fmb_toml_value *tbl, const char *where, const char *const *allowed)
{
    for (size_t i = 0; i < tbl->n; i++) {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++)
            if (!strcmp(*a, tbl->kids[i].key))
                ok = 1;
        if (!ok) {
            char list[512] = "";
            for (const char *const *a = allowed; *a; a++) {
                strncat(list, *a, sizeof list - strlen(list) - 1);
                if (a[1])
                    strncat(list, ", ", sizeof list - strlen(list) - 1);
            }
            return at(c, &tbl->kids[i], "%s: unknown key '%s' (known: %s)", where, tbl->kids[i].key,
                      list);
        }
    }
    return FMB_OK;
}

static fmb_status want_type(ctx *c, const fmb_toml_value *v, const char *where, fmb_toml_type t)
{
    if (v->type == t || (t == FMB_TOML_FLOAT && v->type == FMB_TOML_INT))
        return FMB_OK;
    return at(c, v, "%s.%s: expected %s, got %s", where, v->key ? v->key : "?",
              fmb_toml_type_name(t), fmb_toml_type_name(v->type));
}

static fmb_status missing(ctx *c, const fmb_toml_value *tbl, const char *where, const char *key)
{
    return fmb_fail(c->err, FMB_EINVAL, "%s:%d:%d: %s: missing required key '%s'", c->path,
                    tbl->line, tbl->col, where, key);
}

static fmb_status get_str(
    ctx *c, const fmb_toml_value *tbl, const char *where, const char *key, int required, char **out)
{
    const fmb_toml_value *v = fmb_toml_get(tbl, key);
    if (!v)
        return required ? missing(c, tbl, where, key) : FMB_OK;
    fmb_status s = want_type(c, v, where, FMB_TOML_STRING);
    if (s)
        return s;
    if (strlen(v->str) != v->str_len)
        return at(c, v, "%s.%s: string contains a NUL character", where, key);
    free(*out);
    *out = fmb_xstrdup(v->str);
    return FMB_OK;
}

static fmb_status get_int(ctx *c,
                          const fmb_toml_value *tbl,
                          const char *where,
                          const char *key,
                          int64_t lo,
                          int64_t hi,
                          int64_t *out)
{
    const fmb_toml_value *v = fmb_toml_get(tbl, key);
    if (!v)
        return FMB_OK;
    fmb_status s = want_type(c, v, where, FMB_TOML_INT);
    if (s)
        return s;
    if (v->i < lo || v->i > hi)
        return at(c, v, "%s.%s: %lld is out of range [%lld, %lld]", where, key, (long long)v->i,
                  (long long)lo, (long long)hi);
    *out = v->i;
    return FMB_OK;
}

static fmb_status get_float(ctx *c,
                            const fmb_toml_value *tbl,
                            const char *where,
                            const char *key,
                            double lo,
                            double hi,
                            double *out)
{
    const fmb_toml_value *v = fmb_toml_get(tbl, key);
    if (!v)
        return FMB_OK;
    fmb_status s = want_type(c, v, where, FMB_TOML_FLOAT);
    if (s)
        return s;
    if (!(v->f >= lo && v->f <= hi))
        return at(c, v, "%s.%s: %g is out of range [%g, %g]", where, key, v->f, lo, hi);
    *out = v->f;
    return FMB_OK;
}

static fmb_status
get_bool(ctx *c, const fmb_toml_value *tbl, const char *where, const char *key, int *out)
{
    const fmb_toml_value *v = fmb_toml_get(tbl, key);
    if (!v)
        return FMB_OK;
    fmb_status s = want_type(c, v, where, FMB_TOML_BOOL);
    if (s)
        return s;
    *out = v->b;
    return FMB_OK;
}

/* A string or an array of strings (a lone string is a one-element list). */
static fmb_status get_str_list(ctx *c,
                               const fmb_toml_value *tbl,
                               const char *where,
                               const char *key,
                               int required,
                               char ***out,
                               size_t *n)
{
    const fmb_toml_value *v = fmb_toml_get(tbl, key);
    if (!v)
        return required ? missing(c, tbl, where, key) : FMB_OK;
    if (v->type == FMB_TOML_STRING) {
        *out = fmb_xcalloc(1, sizeof **out);
        (*out)[0] = fmb_xstrdup(v->str);
        *n = 1;
        return FMB_OK;
    }
    if (v->type != FMB_TOML_ARRAY)
        return at(c, v, "%s.%s: expected a string or an array of strings, got %s", where, key,
                  fmb_toml_type_name(v->type));
    *out = fmb_xcalloc(v->n ? v->n : 1, sizeof **out);
    *n = 0;
    for (size_t i = 0; i < v->n; i++) {
        const fmb_toml_value *e = &v->kids[i];
        if (e->type != FMB_TOML_STRING)
            return at(c, e, "%s.%s[%zu]: expected string, got %s", where, key, i,
                      fmb_toml_type_name(e->type));
        if (strlen(e->str) != e->str_len)
            return at(c, e, "%s.%s[%zu]: string contains a NUL character", where, key, i);
        (*out)[(*n)++] = fmb_xstrdup(e->str);
    }
    return FMB_OK;
}

static void free_list(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static const fmb_toml_value *get_table(const fmb_toml_value *root, const char *key)
{
    const fmb_toml_value *v = fmb_toml_get(root, key);
    return v;
}

char *fmb_job_resolve(const fmb_job *job, const char *path)
{
    if (!path)
        return NULL;
    if (path[0] == '/' || !job->dir)
        return fmb_xstrdup(path);
    size_t n = strlen(job->dir) + strlen(path) + 2;
    char *p = fmb_xmalloc(n);
    snprintf(p, n, "%s/%s", job->dir, path);
    return p;
}

/* ---------------------------------------------------------------------------------------- */

static fmb_status parse_job_table(ctx *c, const fmb_toml_value *t, fmb_job *job)
{
    static const char *const keys[] = {"name",
                                       "model",
                                       "tokenizer",
                                       "output",
                                       "backend",
                                       "dtype",
                                       "chunk_tokens",
                                       "threads",
                                       "max_batch",
                                       "mem_limit",
                                       "seed",
                                       "max_document_tokens",
                                       "too_long",
                                       "max_attempts",
                                       "lease_seconds",
                                       "kernel",
                                       "max_document_bytes",
                                       "shard",
                                       NULL};
    const char *w = "[job]";
    fmb_status s;
    char *model = NULL, *tokenizer = NULL, *output = NULL, *too_long = NULL, *kernel = NULL;
    int64_t seed = 0;
    if ((s = only_keys(c, t, w, keys)) || (s = get_str(c, t, w, "name", 1, &job->name)) ||
        (s = get_str(c, t, w, "model", 1, &model)) ||
        (s = get_str(c, t, w, "tokenizer", 0, &tokenizer)) ||
        (s = get_str(c, t, w, "output", 1, &output)) ||
        (s = get_str(c, t, w, "backend", 0, &job->backend)) ||
        (s = get_str(c, t, w, "dtype", 0, &job->dtype)) ||
        (s = get_int(c, t, w, "chunk_tokens", 1, INT32_MAX, &job->chunk_tokens)) ||
        (s = get_int(c, t, w, "threads", 0, 4096, &job->threads)) ||
        (s = get_int(c, t, w, "max_batch", 1, 4096, &job->max_batch)) ||
        (s = get_str(c, t, w, "mem_limit", 0, &job->mem_limit)) ||
        (s = get_int(c, t, w, "seed", INT64_MIN, INT64_MAX, &seed)) ||
        (s = get_int(c, t, w, "max_document_tokens", 0, INT64_MAX, &job->max_document_tokens)) ||
        (s = get_int(c, t, w, "max_document_bytes", 0, INT64_MAX, &job->max_document_bytes)) ||
        (s = get_str(c, t, w, "too_long", 0, &too_long)) ||
        (s = get_int(c, t, w, "max_attempts", 1, 1000, &job->max_attempts)) ||
        (s = get_int(c, t, w, "lease_seconds", 1, 86400 * 7, &job->lease_seconds)) ||
        (s = get_str(c, t, w, "kernel", 0, &kernel)) ||
        (s = get_str(c, t, w, "shard", 0, &job->shard)))
        goto out;
    if (kernel) {
        fmb_err ke;
        if (fmb_kernel_opts_parse(kernel, &job->kernel, &ke)) {
            s = at(c, fmb_toml_get(t, "kernel"), "[job].%s", ke.msg);
            goto out;
        }
    }
    job->seed = (uint64_t)seed;
    if (!job->backend)
        job->backend = fmb_xstrdup("auto");
    if (strcmp(job->backend, "auto") && strcmp(job->backend, "cpu") &&
        strcmp(job->backend, "cuda")) {
        s = at(c, fmb_toml_get(t, "backend"), "[job].backend: expected auto, cpu or cuda");
        goto out;
    }
    if (job->dtype && strcmp(job->dtype, "bf16") && strcmp(job->dtype, "f32")) {
        s = at(c, fmb_toml_get(t, "dtype"), "[job].dtype: expected bf16 or f32");
        goto out;
    }
    size_t mem_limit;
    if (job->mem_limit && fmb_job_parse_size(job->mem_limit, &mem_limit)) {
        s = at(c, fmb_toml_get(t, "mem_limit"),
               "[job].mem_limit: expected a size such as \"24GiB\", \"512MB\" or a byte count, "
               "got \"%s\"",
               job->mem_limit);
        goto out;
    }
    if (too_long) {
        if (!strcmp(too_long, "truncate"))
            job->too_long = FMB_TOO_LONG_TRUNCATE;
        else if (!strcmp(too_long, "skip"))
            job->too_long = FMB_TOO_LONG_SKIP;
        else {
            s = at(c, fmb_toml_get(t, "too_long"), "[job].too_long: expected truncate or skip");
            goto out;
        }
    }
    if (!job->name[0]) {
        s = at(c, fmb_toml_get(t, "name"), "[job].name: must not be empty");
        goto out;
    }
    job->model = fmb_job_resolve(job, model);
    if (tokenizer) {
        job->tokenizer = fmb_job_resolve(job, tokenizer);
    } else {
        size_t n = strlen(job->model) + 32;
        job->tokenizer = fmb_xmalloc(n);
        snprintf(job->tokenizer, n, "%s/tokenizer.json", job->model);
    }
    job->output = fmb_job_resolve(job, output);
out:
    free(model);
    free(tokenizer);
    free(output);
    free(too_long);
    free(kernel);
    return s;
}

static fmb_status parse_source(ctx *c, const fmb_toml_value *t, fmb_source_cfg *src)
{
    const char *w = "[source]";
    char *kind = NULL;
    fmb_status s = get_str(c, t, w, "kind", 1, &kind);
    if (s)
        return s;
    static const char *const archive_keys[] = {"kind",
                                               "paths",
                                               "include",
                                               "exclude",
                                               "max_entry_bytes",
                                               "max_total_bytes",
                                               "max_ratio",
                                               "ratio_floor_bytes",
                                               "key",
                                               NULL};
    static const char *const jsonl_keys[] = {"kind",
                                             "paths",
                                             "text_field",
                                             "id_field",
                                             "max_entry_bytes",
                                             "max_total_bytes",
                                             "max_ratio",
                                             "ratio_floor_bytes",
                                             "keep_fields",
                                             "key",
                                             NULL};
    static const char *const files_keys[] = {
        "kind", "paths", "include", "exclude", "max_entry_bytes", "key", NULL};
    static const char *const sqlite_keys[] = {
        "kind", "database", "query", "page_rows", "max_entry_bytes", "keep_fields", "key", NULL};
    const char *const *keys;
    if (!strcmp(kind, "archive")) {
        src->kind = FMB_SRC_ARCHIVE;
        keys = archive_keys;
    } else if (!strcmp(kind, "jsonl")) {
        src->kind = FMB_SRC_JSONL;
        keys = jsonl_keys;
    } else if (!strcmp(kind, "files")) {
        src->kind = FMB_SRC_FILES;
        keys = files_keys;
    } else if (!strcmp(kind, "sqlite")) {
        src->kind = FMB_SRC_SQLITE;
        keys = sqlite_keys;
    } else {
        s = at(c, fmb_toml_get(t, "kind"),
               "[source].kind: '%s' is not one of archive, jsonl, files, sqlite", kind);
        free(kind);
        return s;
    }
    free(kind);
    /* keep_fields needs records with fields: say so rather than "unknown key" */
    if ((src->kind == FMB_SRC_ARCHIVE || src->kind == FMB_SRC_FILES) &&
        fmb_toml_get(t, "keep_fields"))
        return at(c, fmb_toml_get(t, "keep_fields"),
                  "[source].keep_fields: %s source has no fields to keep (only jsonl records "
                  "and sqlite rows have them)",
                  src->kind == FMB_SRC_ARCHIVE ? "an archive" : "a files");
    src->max_entry_bytes = 256 << 20;
    src->max_total_bytes = 0;
    src->max_ratio = 1000;
    src->ratio_floor = 64 << 20;
    src->page_rows = 64;
    if ((s = only_keys(c, t, w, keys)) ||
        (s = get_int(c, t, w, "max_entry_bytes", 1, INT64_MAX, &src->max_entry_bytes)) ||
        (s = get_int(c, t, w, "max_total_bytes", 0, INT64_MAX, &src->max_total_bytes)) ||
        (s = get_float(c, t, w, "max_ratio", 0, 1e12, &src->max_ratio)) ||
        (s = get_int(c, t, w, "ratio_floor_bytes", 0, INT64_MAX, &src->ratio_floor)) ||
        (s = get_str_list(c, t, w, "include", 0, &src->include, &src->n_include)) ||
        (s = get_str_list(c, t, w, "exclude", 0, &src->exclude, &src->n_exclude)) ||
        (s = get_str(c, t, w, "text_field", 0, &src->text_field)) ||
        (s = get_str(c, t, w, "id_field", 0, &src->id_field)) ||
        (s = get_int(c, t, w, "page_rows", 1, 1 << 20, &src->page_rows)) ||
        (s = get_str_list(c, t, w, "keep_fields", 0, &src->keep_fields, &src->n_keep_fields)))
        return s;
    char *key = NULL;
    if ((s = get_str(c, t, w, "key", 0, &key)))
        return s;
    if (key && strcmp(key, "source") && strcmp(key, "content"))
        s = at(c, fmb_toml_get(t, "key"), "[source].key: expected source or content, got '%s'",
               key);
    src->key_content = key && !strcmp(key, "content");
    free(key);
    if (s)
        return s;
    for (size_t i = 0; i < src->n_keep_fields; i++)
        for (size_t j = 0; j < i; j++)
            if (!strcmp(src->keep_fields[i], src->keep_fields[j]))
                return at(c, fmb_toml_get(t, "keep_fields"),
                          "[source].keep_fields: '%s' is listed twice", src->keep_fields[i]);
    if (src->kind == FMB_SRC_SQLITE) {
        if ((s = get_str(c, t, w, "database", 1, &src->database)) ||
            (s = get_str(c, t, w, "query", 1, &src->query)))
            return s;
    } else {
        if ((s = get_str_list(c, t, w, "paths", 1, &src->paths, &src->n_paths)))
            return s;
        if (src->n_paths == 0)
            return at(c, fmb_toml_get(t, "paths"), "[source].paths: must not be empty");
    }
    if (src->kind == FMB_SRC_JSONL && !src->text_field)
        src->text_field = fmb_xstrdup("text");
    return FMB_OK;
}

/* Splits a template at its one {document}. */
static fmb_status split_template(ctx *c, const fmb_toml_value *v, const char *w, fmb_task_cfg *t)
{
    // the split of batch/prompt.h (the one the CLI's --document-file uses too)
    size_t before;
    const char *after;
    if (!fmb_prompt_parts(t->prompt, &before, &after))
        return at(c, v, "%s.prompt: has no {document}", w);
    if (strstr(after, FMB_PROMPT_DOC_MARK))
        return at(c, v, "%s.prompt: has more than one {document}", w);
    t->prefix = fmb_xmalloc(before + 1);
    memcpy(t->prefix, t->prompt, before);
    t->prefix[before] = 0;
    t->suffix = fmb_xstrdup(after);
    if (!t->suffix[0])
        return at(c, v,
                  "%s.prompt: needs text after {document} (the question or the cue the "
                  "answer continues)",
                  w);
    return FMB_OK;
}

static fmb_status parse_task(ctx *c, const fmb_toml_value *t, size_t idx, fmb_task_cfg *task)
{
    char w[96];
    snprintf(w, sizeof w, "[[task]] #%zu", idx + 1);
    char *kind = NULL;
    fmb_status s;
    if ((s = get_str(c, t, w, "name", 1, &task->name)) || (s = get_str(c, t, w, "kind", 1, &kind)))
        goto out;
    snprintf(w, sizeof w, "[[task]] '%s'", task->name);
    static const char *const score_keys[] = {"name", "kind", "per_token", "top_k_tokens", NULL};
    static const char *const choice_keys[] = {"name", "kind", "prompt", "choices", "best_by", NULL};
    static const char *const gen_keys[] = {"name",
                                           "kind",
                                           "prompt",
                                           "max_new_tokens",
                                           "temperature",
                                           "top_k",
                                           "top_p",
                                           "seed",
                                           "stop",
                                           "eos",
                                           "ignore_eos",
                                           "extract",
                                           "match_limit",
                                           "depth_limit",
                                           "repetition_penalty",
                                           "presence_penalty",
                                           "frequency_penalty",
                                           "min_p",
                                           "n",
                                           "logprobs",
                                           NULL};
    const char *const *keys;
    if (!strcmp(kind, "score")) {
        task->kind = FMB_TASK_SCORE;
        keys = score_keys;
    } else if (!strcmp(kind, "choice")) {
        task->kind = FMB_TASK_CHOICE;
        keys = choice_keys;
    } else if (!strcmp(kind, "generate")) {
        task->kind = FMB_TASK_GENERATE;
        keys = gen_keys;
    } else {
        s = at(c, fmb_toml_get(t, "kind"), "%s.kind: '%s' is not one of score, choice, generate", w,
               kind);
        goto out;
    }
    if ((s = only_keys(c, t, w, keys)))
        goto out;
    const char *bad = strpbrk(task->name, "\t\r\n\"'\\,");
    if (!task->name[0] || bad) {
        s = at(c, fmb_toml_get(t, "name"),
               "%s.name: must be non-empty, without quotes, commas "
               "or control characters",
               w);
        goto out;
    }
    task->max_new_tokens = 0;
    task->top_p = 1.0;
    task->match_limit = 1000000;
    task->depth_limit = 100000;
    task->repetition_penalty = 1.0;
    task->n = 1;
    int64_t top_k_tokens = 0, seed = 0;
    char *best_by = NULL;
    if ((s = get_bool(c, t, w, "per_token", &task->per_token)) ||
        (s = get_int(c, t, w, "top_k_tokens", 0, 64, &top_k_tokens)) ||
        (s = get_str(c, t, w, "prompt", task->kind != FMB_TASK_SCORE, &task->prompt)) ||
        (s = get_str_list(c, t, w, "choices", task->kind == FMB_TASK_CHOICE, &task->choices,
                          &task->n_choices)) ||
        (s = get_str(c, t, w, "best_by", 0, &best_by)) ||
        (s = get_int(c, t, w, "max_new_tokens", 1, 1 << 24, &task->max_new_tokens)) ||
        (s = get_float(c, t, w, "temperature", 0, 100, &task->temperature)) ||
        (s = get_int(c, t, w, "top_k", 0, INT32_MAX, &task->top_k)) ||
        (s = get_float(c, t, w, "top_p", 0, 1, &task->top_p)) ||
        (s = get_int(c, t, w, "seed", INT64_MIN, INT64_MAX, &seed)) ||
        (s = get_str_list(c, t, w, "stop", 0, &task->stop, &task->n_stop)) ||
        (s = get_bool(c, t, w, "ignore_eos", &task->ignore_eos)) ||
        (s = get_int(c, t, w, "match_limit", 1, INT32_MAX, &task->match_limit)) ||
        (s = get_int(c, t, w, "depth_limit", 1, INT32_MAX, &task->depth_limit)) ||
        (s = get_float(c, t, w, "repetition_penalty", 0, 100, &task->repetition_penalty)) ||
        (s = get_float(c, t, w, "presence_penalty", -2, 2, &task->presence_penalty)) ||
        (s = get_float(c, t, w, "frequency_penalty", -2, 2, &task->frequency_penalty)) ||
        (s = get_float(c, t, w, "min_p", 0, 1, &task->min_p)) ||
        (s = get_int(c, t, w, "n", 1, FMB_TASK_MAX_N, &task->n)) ||
        (s = get_int(c, t, w, "logprobs", 0, FMB_TASK_MAX_LOGPROBS, &task->logprobs))) {
        free(best_by);
        goto out;
    }
    if (task->repetition_penalty <= 0) {
        free(best_by);
        s = at(c, fmb_toml_get(t, "repetition_penalty"),
               "%s.repetition_penalty: must be > 0 (1 = off)", w);
        goto out;
    }
    task->top_k_tokens = (int)top_k_tokens;
    if (top_k_tokens && !task->per_token) {
        free(best_by);
        s = at(c, fmb_toml_get(t, "top_k_tokens"), "%s.top_k_tokens: needs per_token = true", w);
        goto out;
    }
    if (fmb_toml_get(t, "seed")) {
        task->has_seed = 1;
        task->seed = (uint64_t)seed;
    }
    if (best_by) {
        if (!strcmp(best_by, "mean"))
            task->choice_by_mean = 1;
        else if (!strcmp(best_by, "bytes"))
            task->choice_by_bytes = 1;
        else if (strcmp(best_by, "total") && strcmp(best_by, "sum")) {
            s = at(c, fmb_toml_get(t, "best_by"), "%s.best_by: expected total, sum, mean or bytes",
                   w);
            free(best_by);
            goto out;
        }
        free(best_by);
    }
    if (task->kind == FMB_TASK_CHOICE && task->n_choices < 1) {
        s = at(c, fmb_toml_get(t, "choices"), "%s.choices: needs at least one candidate", w);
        goto out;
    }
    for (size_t i = 0; i < task->n_choices; i++)
        if (!task->choices[i][0]) {
            s = at(c, fmb_toml_get(t, "choices"), "%s.choices[%zu]: must not be empty", w, i);
            goto out;
        }
    if (task->kind == FMB_TASK_GENERATE && !fmb_toml_get(t, "max_new_tokens")) {
        s = missing(c, t, w, "max_new_tokens");
        goto out;
    }
    for (size_t i = 0; i < task->n_stop; i++)
        if (!task->stop[i][0]) {
            s = at(c, fmb_toml_get(t, "stop"), "%s.stop[%zu]: must not be empty", w, i);
            goto out;
        }
    if (task->prompt && (s = split_template(c, fmb_toml_get(t, "prompt"), w, task)))
        goto out;
    const fmb_toml_value *eos = fmb_toml_get(t, "eos");
    if (eos) {
        if (eos->type == FMB_TOML_INT) {
            task->eos = fmb_xcalloc(1, sizeof *task->eos);
            if (eos->i < 0 || eos->i > INT32_MAX) {
                s = at(c, eos, "%s.eos: %lld is not a token id", w, (long long)eos->i);
                goto out;
            }
            task->eos[0] = (int32_t)eos->i;
            task->n_eos = 1;
        } else if (eos->type == FMB_TOML_ARRAY) {
            if (eos->n < 1 || eos->n > 64) {
                s = at(c, eos, "%s.eos: expected 1 to 64 token ids", w);
                goto out;
            }
            task->eos = fmb_xcalloc(eos->n, sizeof *task->eos);
            for (size_t i = 0; i < eos->n; i++) {
                const fmb_toml_value *e = &eos->kids[i];
                if (e->type != FMB_TOML_INT || e->i < 0 || e->i > INT32_MAX) {
                    s = at(c, e, "%s.eos[%zu]: expected a token id", w, i);
                    goto out;
                }
                task->eos[task->n_eos++] = (int32_t)e->i;
            }
        } else {
            s = at(c, eos, "%s.eos: expected a token id or an array of ids, got %s", w,
                   fmb_toml_type_name(eos->type));
            goto out;
        }
    }
    const fmb_toml_value *ex = fmb_toml_get(t, "extract");
    if (ex) {
        if ((s = want_type(c, ex, w, FMB_TOML_TABLE)))
            goto out;
        task->extract = fmb_xcalloc(ex->n ? ex->n : 1, sizeof *task->extract);
        for (size_t i = 0; i < ex->n; i++) {
            const fmb_toml_value *e = &ex->kids[i];
            if (e->type != FMB_TOML_STRING || strlen(e->str) != e->str_len) {
                s = at(c, e, "%s.extract.%s: expected a regex string, got %s", w, e->key,
                       fmb_toml_type_name(e->type));
                goto out;
            }
            fmb_extract_cfg *x = &task->extract[task->n_extract++];
            x->name = fmb_xstrdup(e->key);
            x->pattern = fmb_xstrdup(e->str);
            x->line = e->line;
            x->col = e->col;
        }
    }
out:
    free(kind);
    return s;
}

/* ---------------------------------------------------------------------------------------- */

fmb_status fmb_job_parse(
    const char *text, size_t len, const char *path, const char *dir, fmb_job **out, fmb_err *err)
{
    *out = NULL;
    ctx c = {path, err};
    fmb_toml_value *root = NULL;
    fmb_status s = fmb_toml_parse(text, len, path, &root, err);
    if (s)
        return s;
    fmb_job *job = fmb_xcalloc(1, sizeof *job);
    job->path = fmb_xstrdup(path);
    job->dir = fmb_xstrdup(dir ? dir : ".");
    job->max_attempts = 3;
    job->lease_seconds = 600;
    job->max_document_bytes = (int64_t)64 << 20;
    static const char *const top[] = {"job", "source", "task", NULL};
    const fmb_toml_value *jt = get_table(root, "job"), *st = get_table(root, "source"),
                         *tt = get_table(root, "task");
    if ((s = only_keys(&c, root, "top level", top)))
        goto fail;
    if (!jt) {
        s = fmb_fail(err, FMB_EINVAL, "%s:1:1: missing table [job]", path);
        goto fail;
    }
    if (!st) {
        s = fmb_fail(err, FMB_EINVAL, "%s:1:1: missing table [source]", path);
        goto fail;
    }
    if (!tt) {
        s = fmb_fail(err, FMB_EINVAL, "%s:1:1: missing [[task]] (at least one task)", path);
        goto fail;
    }
    if ((s = want_type(&c, jt, "top level", FMB_TOML_TABLE)) ||
        (s = want_type(&c, st, "top level", FMB_TOML_TABLE)) ||
        (s = want_type(&c, tt, "top level", FMB_TOML_ARRAY)))
        goto fail;
    if ((s = parse_job_table(&c, jt, job)) || (s = parse_source(&c, st, &job->source)))
        goto fail;
    if (tt->n == 0) {
        s = at(&c, tt, "task: at least one [[task]] is needed");
        goto fail;
    }
    job->tasks = fmb_xcalloc(tt->n, sizeof *job->tasks);
    for (size_t i = 0; i < tt->n; i++) {
        if (tt->kids[i].type != FMB_TOML_TABLE) {
            s = at(&c, &tt->kids[i], "task[%zu]: expected a table, got %s", i,
                   fmb_toml_type_name(tt->kids[i].type));
            goto fail;
        }
        job->n_tasks++;
        if ((s = parse_task(&c, &tt->kids[i], i, &job->tasks[i])))
            goto fail;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(job->tasks[j].name, job->tasks[i].name)) {
                s = at(&c, fmb_toml_get(&tt->kids[i], "name"), "[[task]]: name '%s' is used twice",
                       job->tasks[i].name);
                goto fail;
            }
    }
    fmb_toml_free(root);
    *out = job;
    return FMB_OK;
fail:
    fmb_toml_free(root);
    fmb_job_free(job);
    return s;
}

fmb_status fmb_job_load(const char *path, fmb_job **out, fmb_err *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return fmb_fail(err, FMB_EINVAL, "%s: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = fmb_xmalloc(cap);
    for (;;) {
        if (n == cap) {
            /* cap grows to FMB_JOB_FILE_MAX + 1: filling that byte means the file is over */
            if (cap > FMB_JOB_FILE_MAX) {
                fclose(f);
                free(buf);
                return fmb_fail(err, FMB_EINVAL, "%s: a job file over %zu MiB", path,
                                FMB_JOB_FILE_MAX >> 20);
            }
            cap = cap * 2 > FMB_JOB_FILE_MAX ? FMB_JOB_FILE_MAX + 1 : cap * 2;
            buf = fmb_xrealloc(buf, cap, 1);
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        if (!r)
            break;
        n += r;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return fmb_fail(err, FMB_EIO, "%s: read error", path);
    }
    /* The folder relative paths resolve against: the job file's, made absolute. */
    char *copy = fmb_xstrdup(path);
    char *slash = strrchr(copy, '/');
    const char *d = ".";
    if (slash) {
        *slash = 0;
        d = copy[0] ? copy : "/";
    }
    char *abs = realpath(d, NULL);
    fmb_status s = fmb_job_parse(buf, n, path, abs ? abs : d, out, err);
    free(abs);
    free(copy);
    free(buf);
    return s;
}

static void free_task(fmb_task_cfg *t)
{
    free(t->name);
    free(t->prompt);
    free(t->prefix);
    free(t->suffix);
    free_list(t->choices, t->n_choices);
    free_list(t->stop, t->n_stop);
    free(t->eos);
    for (size_t i = 0; i < t->n_extract; i++) {
        free(t->extract[i].name);
        free(t->extract[i].pattern);
    }
    free(t->extract);
}

void fmb_job_free(fmb_job *job)
{
    if (!job)
        return;
    free(job->path);
    free(job->dir);
    free(job->name);
    free(job->model);
    free(job->tokenizer);
    free(job->output);
    free(job->output_template);
    free(job->shard);
    free(job->backend);
    free(job->dtype);
    free(job->mem_limit);
    fmb_source_cfg *s = &job->source;
    free_list(s->paths, s->n_paths);
    free_list(s->include, s->n_include);
    free_list(s->exclude, s->n_exclude);
    free(s->text_field);
    free(s->id_field);
    free_list(s->keep_fields, s->n_keep_fields);
    free(s->database);
    free(s->query);
    for (size_t i = 0; i < job->n_tasks; i++)
        free_task(&job->tasks[i]);
    free(job->tasks);
    free(job);
}

/* ---------------------------------------------------------------------------------------- */
/* Fingerprint: the settings that decide results, as "key = json-value" lines. */

static void sb_json_str(fmb_sb *b, const char *key, const char *s)
{
    json_t *j = json_string(s ? s : "");
    char *t = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    fmb_sb_printf(b, "%s = %s\n", key, t ? t : "\"?\"");
    free(t);
    json_decref(j);
}

static void sb_json_list(fmb_sb *b, const char *key, char **v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    char *t = json_dumps(a, JSON_ENCODE_ANY | JSON_COMPACT);
    fmb_sb_printf(b, "%s = %s\n", key, t ? t : "[]");
    free(t);
    json_decref(a);
}

char *
fmb_job_fingerprint_text(const fmb_job *job, const char *model_hash, const char *tokenizer_hash)
{
    fmb_sb b = {0};
    fmb_sb_printf(&b, "fmbatch_version = \"%s\"\n", FMB_VERSION);
    fmb_sb_printf(&b, "model_hash = \"%s\"\n", model_hash ? model_hash : "");
    fmb_sb_printf(&b, "tokenizer_hash = \"%s\"\n", tokenizer_hash ? tokenizer_hash : "");
    fmb_sb_printf(&b, "job.seed = %llu\n", (unsigned long long)job->seed);
    fmb_sb_printf(&b, "job.max_document_tokens = %lld\n", (long long)job->max_document_tokens);
    fmb_sb_printf(&b, "job.too_long = \"%s\"\n",
                  job->too_long == FMB_TOO_LONG_SKIP ? "skip" : "truncate");
    // Kernel choices that change numbers, only when not the defaults: the default text (and so
    // every database made before this line existed) stays as it was.
    char kern[256];
    fmb_kernel_opts_format(&job->kernel, FMB_KOPTS_NUMERIC, kern, sizeof kern);
    if (kern[0])
        fmb_sb_printf(&b, "job.kernel = \"%s\"\n", kern);
    // Content keys name other items than the source's keys (only written when set, as above).
    if (job->source.key_content)
        fmb_sb_printf(&b, "source.key = \"content\"\n");
    // Only a sharded job has the line: an unsharded job keeps its fingerprint (batch/shard.h).
    if (job->shard_count > 1)
        fmb_sb_printf(&b, "job.shard = %lld/%lld\n", (long long)job->shard_index,
                      (long long)job->shard_count);
    for (size_t i = 0; i < job->n_tasks; i++) {
        const fmb_task_cfg *t = &job->tasks[i];
        char k[256];
#define KEY(field) (snprintf(k, sizeof k, "task.%s.%s", t->name, field), k)
        fmb_sb_printf(&b, "%s = \"%s\"\n", KEY("kind"), fmb_task_kind_name(t->kind));
        if (t->kind == FMB_TASK_SCORE) {
            fmb_sb_printf(&b, "%s = %d\n", KEY("per_token"), t->per_token);
            fmb_sb_printf(&b, "%s = %d\n", KEY("top_k_tokens"), t->top_k_tokens);
            continue;
        }
        sb_json_str(&b, KEY("prompt"), t->prompt);
        if (t->kind == FMB_TASK_CHOICE) {
            sb_json_list(&b, KEY("choices"), t->choices, t->n_choices);
            fmb_sb_printf(&b, "%s = \"%s\"\n", KEY("best_by"),
                          t->choice_by_mean    ? "mean"
                          : t->choice_by_bytes ? "bytes"
                                               : "total"); /* "sum" is "total" */
            continue;
        }
        fmb_sb_printf(&b, "%s = %lld\n", KEY("max_new_tokens"), (long long)t->max_new_tokens);
        fmb_sb_printf(&b, "%s = %.17g\n", KEY("temperature"), t->temperature);
        fmb_sb_printf(&b, "%s = %lld\n", KEY("top_k"), (long long)t->top_k);
        fmb_sb_printf(&b, "%s = %.17g\n", KEY("top_p"), t->top_p);
        if (t->has_seed)
            fmb_sb_printf(&b, "%s = %llu\n", KEY("seed"), (unsigned long long)t->seed);
        sb_json_list(&b, KEY("stop"), t->stop, t->n_stop);
        fmb_sb_printf(&b, "%s = [", KEY("eos"));
        for (int e = 0; e < t->n_eos; e++)
            fmb_sb_printf(&b, "%s%d", e ? "," : "", t->eos[e]);
        fmb_sb_printf(&b, "]\n");
        fmb_sb_printf(&b, "%s = %d\n", KEY("ignore_eos"), t->ignore_eos);
        // the generation controls of issue 13, only when set: older fingerprints stay the same
        if (t->repetition_penalty != 1.0)
            fmb_sb_printf(&b, "%s = %.17g\n", KEY("repetition_penalty"), t->repetition_penalty);
        if (t->presence_penalty != 0.0)
            fmb_sb_printf(&b, "%s = %.17g\n", KEY("presence_penalty"), t->presence_penalty);
        if (t->frequency_penalty != 0.0)
            fmb_sb_printf(&b, "%s = %.17g\n", KEY("frequency_penalty"), t->frequency_penalty);
        if (t->min_p != 0.0)
            fmb_sb_printf(&b, "%s = %.17g\n", KEY("min_p"), t->min_p);
        if (t->n != 1)
            fmb_sb_printf(&b, "%s = %lld\n", KEY("n"), (long long)t->n);
        if (t->logprobs)
            fmb_sb_printf(&b, "%s = %lld\n", KEY("logprobs"), (long long)t->logprobs);
        for (size_t e = 0; e < t->n_extract; e++) {
            char kk[300];
            snprintf(kk, sizeof kk, "task.%s.extract.%s", t->name, t->extract[e].name);
            sb_json_str(&b, kk, t->extract[e].pattern);
        }
        if (t->n_extract) {
            fmb_sb_printf(&b, "%s = %lld\n", KEY("match_limit"), (long long)t->match_limit);
            fmb_sb_printf(&b, "%s = %lld\n", KEY("depth_limit"), (long long)t->depth_limit);
        }
#undef KEY
    }
    return fmb_sb_take(&b);
}

const char *fmb_task_kind_name(fmb_task_kind k)
{
    switch (k) {
    case FMB_TASK_SCORE:
        return "score";
    case FMB_TASK_CHOICE:
        return "choice";
    case FMB_TASK_GENERATE:
        return "generate";
    }
    return "?";
}

const char *fmb_src_kind_name(fmb_src_kind k)
{
    switch (k) {
    case FMB_SRC_ARCHIVE:
        return "archive";
    case FMB_SRC_JSONL:
        return "jsonl";
    case FMB_SRC_FILES:
        return "files";
    case FMB_SRC_SQLITE:
        return "sqlite";
    }
    return "?";
}
