/*
 * source_impl: what the source implementations (batch/source*.c) share. Not for other modules.
 */
#ifndef FMB_SOURCE_IMPL_H
#define FMB_SOURCE_IMPL_H

#include "batch/source.h"

typedef struct {
    fmb_status (*next)(fmb_source *src, fmb_doc *doc, int *eof, fmb_err *err);
    void (*close)(fmb_source *src);
} fmb_src_vt;

/* The common head of every source; implementations put it first in their struct. */
struct fmb_source {
    const fmb_src_vt *vt;
    const fmb_job *job; /* borrowed: the job outlives the source */
    char **files;       /* expanded paths (absolute) and their keys (as written) */
    char **file_keys;
    size_t n_files, cur_file;
    char *key; /* the current item's key (owned) */
    char *buf; /* the current document (owned, grows) */
    size_t len, cap;
    char *error; /* the current item's error (owned) */
};

/* Expands the job's path globs into src->files / src->file_keys (sorted, de-duplicated per
 * pattern). A pattern that matches nothing is an FMB_EINVAL naming it. */
FMB_NODISCARD fmb_status fmb_src_expand_paths(fmb_source *src, fmb_err *err);

/* include/exclude filters on a name: 1 if the document is wanted. */
int fmb_src_wanted(const fmb_source_cfg *cfg, const char *name);

/* Sets the current key / error (printf-style), replacing the previous ones. */
void fmb_src_set_key(fmb_source *src, const char *fmt, ...) FMB_PRINTF_LIKE(2, 3);
void fmb_src_set_error(fmb_source *src, const char *fmt, ...) FMB_PRINTF_LIKE(2, 3);

/* Makes room for len+extra+1 bytes in src->buf. Returns 0, or -1 when over limit bytes. */
int fmb_src_reserve(fmb_source *src, size_t extra, size_t limit);

/* Fills doc from the current key, buffer and error. */
void fmb_src_emit(fmb_source *src, fmb_doc *doc);

/* Frees the common head's members (not src itself). */
void fmb_src_free_common(fmb_source *src);

/* libarchive readers (source_archive.c): raw = 1 for the jsonl source's compressed streams,
 * 0 for tar/zip/7z; and the archive limits (total bytes, ratio), which set the item's error. */
struct archive;
struct archive *fmb_src_open_reader(int raw);
int fmb_src_over_limits(fmb_source *src, struct archive *a, uint64_t total_out);

fmb_source *fmb_src_archive_new(void);
fmb_source *fmb_src_jsonl_new(void);
fmb_source *fmb_src_files_new(void);
FMB_NODISCARD fmb_status fmb_src_sqlite_open(const fmb_job *job, fmb_source **out, fmb_err *err);

#endif
