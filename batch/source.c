/*
 * source: the shared part of the sources (path globs, filters, the document buffer), the
 * dispatch, and the `files` source (a directory tree walked in sorted order, lazily: one
 * directory listing per level is held, never the whole tree).
 */
#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <glob.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "batch/source_impl.h"

/* ---------------------------------------------------------------------------------------- */
/* Common helpers */

fmb_status fmb_src_expand_paths(fmb_source *src, fmb_err *err)
{
    const fmb_job *job = src->job;
    const fmb_source_cfg *cfg = &job->source;
    size_t cap = 16;
    src->files = fmb_xcalloc(cap, sizeof *src->files);
    src->file_keys = fmb_xcalloc(cap, sizeof *src->file_keys);
    for (size_t p = 0; p < cfg->n_paths; p++) {
        const char *pat = cfg->paths[p];
        char *full = fmb_job_resolve(job, pat);
        glob_t g;
        memset(&g, 0, sizeof g);
        int rc = glob(full, GLOB_BRACE, NULL, &g);
        if (rc == GLOB_NOMATCH || (rc == 0 && g.gl_pathc == 0)) {
            globfree(&g);
            free(full);
            return fmb_fail(err, FMB_EINVAL, "%s: [source].paths: '%s' matches nothing (in %s)",
                            job->path, pat, job->dir);
        }
        if (rc != 0) {
            globfree(&g);
            free(full);
            return fmb_fail(err, FMB_EIO, "%s: [source].paths: cannot expand '%s'", job->path, pat);
        }
        /* The key keeps the path as written: strip "<job dir>/" from relative patterns. */
        size_t dl = strlen(job->dir);
        for (size_t i = 0; i < g.gl_pathc; i++) {
            const char *m = g.gl_pathv[i];
            int dup = 0;
            for (size_t j = 0; j < src->n_files; j++)
                if (!strcmp(src->files[j], m))
                    dup = 1;
            if (dup)
                continue;
            if (src->n_files == cap) {
                cap *= 2;
                src->files = realloc(src->files, cap * sizeof *src->files);
                src->file_keys = realloc(src->file_keys, cap * sizeof *src->file_keys);
                FMB_ASSERT(src->files && src->file_keys);
            }
            src->files[src->n_files] = fmb_xstrdup(m);
            const char *k = m;
            if (pat[0] != '/' && !strncmp(m, job->dir, dl) && m[dl] == '/')
                k = m + dl + 1;
            src->file_keys[src->n_files] = fmb_xstrdup(k);
            src->n_files++;
        }
        globfree(&g);
        free(full);
    }
    return FMB_OK;
}

int fmb_src_wanted(const fmb_source_cfg *cfg, const char *name)
{
    int in = cfg->n_include == 0;
    for (size_t i = 0; i < cfg->n_include && !in; i++)
        if (!fnmatch(cfg->include[i], name, 0))
            in = 1;
    for (size_t i = 0; i < cfg->n_exclude && in; i++)
        if (!fnmatch(cfg->exclude[i], name, 0))
            in = 0;
    return in;
}

static char *vfmt(const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    FMB_ASSERT(n >= 0);
    char *s = fmb_xmalloc((size_t)n + 1);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

void fmb_src_set_key(fmb_source *src, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    free(src->key);
    src->key = vfmt(fmt, ap);
    va_end(ap);
}

void fmb_src_set_error(fmb_source *src, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    free(src->error);
    src->error = vfmt(fmt, ap);
    va_end(ap);
}

int fmb_src_reserve(fmb_source *src, size_t extra, size_t limit)
{
    if (src->len + extra > limit)
        return -1;
    size_t need = src->len + extra + 1;
    if (need <= src->cap)
        return 0;
    size_t cap = src->cap ? src->cap : 65536;
    while (cap < need)
        cap *= 2;
    char *nb = realloc(src->buf, cap);
    if (!nb)
        return -1;
    src->buf = nb;
    src->cap = cap;
    return 0;
}

void fmb_src_emit(fmb_source *src, fmb_doc *doc)
{
    doc->key = src->key;
    doc->error = src->error;
    if (src->error) {
        doc->data = NULL;
        doc->len = 0;
    } else {
        if (fmb_src_reserve(src, 0, (size_t)-1) == 0)
            src->buf[src->len] = 0;
        doc->data = src->buf ? src->buf : "";
        doc->len = src->len;
    }
}

void fmb_src_free_common(fmb_source *src)
{
    for (size_t i = 0; i < src->n_files; i++) {
        free(src->files[i]);
        free(src->file_keys[i]);
    }
    free(src->files);
    free(src->file_keys);
    free(src->key);
    free(src->buf);
    free(src->error);
}

/* ---------------------------------------------------------------------------------------- */
/* Dispatch */

fmb_status fmb_src_open(const fmb_job *job, fmb_source **out, fmb_err *err)
{
    *out = NULL;
    if (job->source.kind == FMB_SRC_SQLITE)
        return fmb_src_sqlite_open(job, out, err);
    fmb_source *src = job->source.kind == FMB_SRC_ARCHIVE ? fmb_src_archive_new()
                      : job->source.kind == FMB_SRC_JSONL ? fmb_src_jsonl_new()
                                                          : fmb_src_files_new();
    src->job = job;
    fmb_status s = fmb_src_expand_paths(src, err);
    if (s) {
        fmb_src_close(src);
        return s;
    }
    *out = src;
    return FMB_OK;
}

fmb_status fmb_src_next(fmb_source *src, fmb_doc *doc, int *eof, fmb_err *err)
{
    *eof = 0;
    free(src->error);
    src->error = NULL;
    src->len = 0;
    return src->vt->next(src, doc, eof, err);
}

void fmb_src_close(fmb_source *src)
{
    if (src)
        src->vt->close(src);
}

/* ---------------------------------------------------------------------------------------- */
/* files: each matched path; directories walked in sorted order. */

typedef struct {
    char *path;           /* absolute */
    char *key;            /* as written */
    struct dirent **ents; /* scandir result */
    int n, i;
} dir_level;

typedef struct {
    fmb_source base;
    dir_level *stack;
    size_t depth, cap;
} src_files;

static void pop_level(src_files *f)
{
    dir_level *d = &f->stack[--f->depth];
    for (int i = 0; i < d->n; i++)
        free(d->ents[i]);
    free(d->ents);
    free(d->path);
    free(d->key);
}

static char *join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = fmb_xmalloc(n);
    snprintf(p, n, "%s/%s", a, b);
    return p;
}

static int not_dot(const struct dirent *e)
{
    return strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
}

static void push_dir(src_files *f, const char *path, const char *key)
{
    if (f->depth == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 8;
        f->stack = realloc(f->stack, f->cap * sizeof *f->stack);
        FMB_ASSERT(f->stack);
    }
    dir_level *d = &f->stack[f->depth++];
    d->path = fmb_xstrdup(path);
    d->key = fmb_xstrdup(key);
    d->ents = NULL;
    d->i = 0;
    d->n = scandir(path, &d->ents, not_dot, alphasort);
    if (d->n < 0)
        d->n = 0;
}

/* Reads a regular file into the buffer, or sets the item's error. */
static void read_file(fmb_source *src, const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        fmb_src_set_error(src, "cannot open: %s", strerror(errno));
        return;
    }
    size_t limit = (size_t)src->job->source.max_entry_bytes;
    for (;;) {
        if (fmb_src_reserve(src, 65536, limit + 65536)) {
            fmb_src_set_error(src, "out of memory");
            break;
        }
        size_t r = fread(src->buf + src->len, 1, 65536, fp);
        src->len += r;
        if (src->len > limit) {
            fmb_src_set_error(src, "document is over max_entry_bytes (%zu bytes)", limit);
            break;
        }
        if (r == 0) {
            if (ferror(fp))
                fmb_src_set_error(src, "read error");
            break;
        }
    }
    fclose(fp);
}

/* 1 if path is a file to yield, 2 a directory to walk, 0 skip. */
static int classify(const char *path)
{
    struct stat ls, st;
    if (lstat(path, &ls))
        return 0;
    if (S_ISDIR(ls.st_mode))
        return 2;
    if (stat(path, &st))
        return 0;
    return S_ISREG(st.st_mode) ? 1 : 0;
}

static fmb_status files_next(fmb_source *src, fmb_doc *doc, int *eof, fmb_err *err)
{
    (void)err;
    src_files *f = (src_files *)src;
    for (;;) {
        if (f->depth > 0) {
            dir_level *d = &f->stack[f->depth - 1];
            if (d->i >= d->n) {
                pop_level(f);
                continue;
            }
            const char *name = d->ents[d->i++]->d_name;
            char *path = join(d->path, name);
            char *key = join(d->key, name);
            int c = classify(path);
            if (c == 2) {
                push_dir(f, path, key);
            } else if (c == 1 && fmb_src_wanted(&src->job->source, key)) {
                fmb_src_set_key(src, "%s", key);
                read_file(src, path);
                free(path);
                free(key);
                fmb_src_emit(src, doc);
                return FMB_OK;
            }
            free(path);
            free(key);
            continue;
        }
        if (src->cur_file >= src->n_files) {
            *eof = 1;
            return FMB_OK;
        }
        const char *path = src->files[src->cur_file];
        const char *key = src->file_keys[src->cur_file];
        src->cur_file++;
        int c = classify(path);
        if (c == 2) {
            push_dir(f, path, key);
        } else if (c == 1) {
            /* A file named explicitly is wanted whatever the filters say. */
            fmb_src_set_key(src, "%s", key);
            read_file(src, path);
            fmb_src_emit(src, doc);
            return FMB_OK;
        }
    }
}

static void files_close(fmb_source *src)
{
    src_files *f = (src_files *)src;
    while (f->depth)
        pop_level(f);
    free(f->stack);
    fmb_src_free_common(src);
    free(f);
}

static const fmb_src_vt files_vt = {files_next, files_close};

fmb_source *fmb_src_files_new(void)
{
    src_files *f = fmb_xcalloc(1, sizeof *f);
    f->base.vt = &files_vt;
    return &f->base;
}
