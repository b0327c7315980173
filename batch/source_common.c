/*
 * source_common: what every source implementation shares: path globs, include/exclude
 * filters, the current key, error and document buffer (source_impl.h).
 */
#include <fnmatch.h>
#include <glob.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    char *cdir = job->dir ? realpath(job->dir, NULL) : NULL;
    size_t cdl = cdir ? strlen(cdir) : 0;
    for (size_t p = 0; p < cfg->n_paths; p++) {
        const char *pat = cfg->paths[p];
        char *full = fmb_job_resolve(job, pat);
        glob_t g;
        memset(&g, 0, sizeof g);
        int rc = glob(full, GLOB_BRACE, NULL, &g);
        if (rc == GLOB_NOMATCH || (rc == 0 && g.gl_pathc == 0)) {
            globfree(&g);
            free(full);
            free(cdir);
            return fmb_fail(err, FMB_EINVAL, "%s: [source].paths: '%s' matches nothing (in %s)",
                            job->path, pat, job->dir);
        }
        if (rc != 0) {
            globfree(&g);
            free(full);
            free(cdir);
            return fmb_fail(err, FMB_EIO, "%s: [source].paths: cannot expand '%s'", job->path, pat);
        }
        /* The key: the file's canonical path relative to the job's folder when it is inside
         * it, else the canonical absolute path, so that a relative and an absolute spelling of
         * the same file (or ./x and x) give the same key. */
        for (size_t i = 0; i < g.gl_pathc; i++) {
            char *m = realpath(g.gl_pathv[i], NULL);
            if (!m)
                m = fmb_xstrdup(g.gl_pathv[i]);
            int dup = 0;
            for (size_t j = 0; j < src->n_files; j++)
                if (!strcmp(src->files[j], m))
                    dup = 1;
            if (dup) {
                free(m);
                continue;
            }
            if (src->n_files == cap) {
                cap *= 2;
                src->files = fmb_xrealloc(src->files, cap, sizeof *src->files);
                src->file_keys = fmb_xrealloc(src->file_keys, cap, sizeof *src->file_keys);
            }
            src->files[src->n_files] = m;
            const char *k = m;
            if (cdir && !strncmp(m, cdir, cdl) && m[cdl] == '/')
                k = m + cdl + 1;
            src->file_keys[src->n_files] = fmb_xstrdup(k);
            src->n_files++;
        }
        globfree(&g);
        free(full);
    }
    free(cdir);
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

char *fmb_src_fmt(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = vfmt(fmt, ap);
    va_end(ap);
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

size_t fmb_src_doc_limit(const fmb_source *src)
{
    int64_t e = src->job->source.max_entry_bytes, d = src->job->max_document_bytes;
    return (size_t)(d > 0 && d < e ? d : e);
}

int fmb_src_doc_limit_is_job(const fmb_source *src)
{
    int64_t d = src->job->max_document_bytes;
    return d > 0 && d < src->job->source.max_entry_bytes;
}

void fmb_src_too_large(fmb_source *src, uint64_t n, int at_least)
{
    fmb_src_set_error(src, "document too large: %s%llu bytes > max_document_bytes (%lld)",
                      at_least ? "at least " : "", (unsigned long long)n,
                      (long long)src->job->max_document_bytes);
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
    doc->doc_id = NULL; /* fmb_src_next fills doc_id */
    doc->meta = src->meta;
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

const char *fmb_src_warning(const fmb_source *src)
{
    return src->warning;
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
    free(src->seen);
    free(src->doc_id);
    free(src->meta);
    free(src->warning);
    for (size_t i = 0; i < src->n_first_keys; i++)
        free(src->first_keys[i]);
    free(src->first_keys);
}
