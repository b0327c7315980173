/*
 * source_files: the `files` source: each matched path; a directory tree walked in sorted order,
 * lazily (one directory listing per level is held, never the whole tree).
 */
#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "batch/source_impl.h"

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
    int64_t n_items; /* items yielded so far: the position of each (1-based) */
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
        f->stack = fmb_xrealloc(f->stack, f->cap, sizeof *f->stack);
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
    size_t limit = fmb_src_doc_limit(src);
    struct stat st;
    if (fmb_src_doc_limit_is_job(src) && fstat(fileno(fp), &st) == 0 &&
        (uint64_t)st.st_size > limit) { /* too large: nothing of it is read */
        fmb_src_too_large(src, (uint64_t)st.st_size, 0);
        fclose(fp);
        return;
    }
    for (;;) {
        if (fmb_src_reserve(src, 65536, limit + 65536)) {
            fmb_src_set_error(src, "out of memory");
            break;
        }
        size_t r = fread(src->buf + src->len, 1, 65536, fp);
        src->len += r;
        if (src->len > limit) {
            if (fmb_src_doc_limit_is_job(src)) /* it grew while read */
                fmb_src_too_large(src, src->len, 1);
            else
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
                src->id_off = (int64_t)strlen(f->stack[0].key) + 1; /* inside the walked folder */
                src->loc = ++f->n_items;
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
            src->id_off = 0;
            src->loc = ++f->n_items;
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

/* A path yielded twice (matched by two of the paths, e.g. "docs" and "docs/a.txt"). */
static char *files_where(fmb_source *src, int64_t loc, int as_key)
{
    return as_key ? fmb_src_fmt("%s@%lld", src->key, (long long)loc)
                  : fmb_src_fmt("item %lld of the source", (long long)loc);
}

static const fmb_src_vt files_vt = {files_next, files_close, files_where};

fmb_source *fmb_src_files_new(void)
{
    src_files *f = fmb_xcalloc(1, sizeof *f);
    f->base.vt = &files_vt;
    return &f->base;
}
