/*
 * source: the factory and the dispatch of source.h: fmb_src_open picks the implementation from
 * [source].kind (source_archive.c, source_jsonl.c, source_files.c, source_sqlite.c).
 */
#include <stdlib.h>

#include "batch/source_impl.h"

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
