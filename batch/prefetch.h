/*
 * prefetch: a thread that reads a source ahead of the runner (batch/cli/cmd_job.c), so that
 * reading, decompressing, parsing and hashing documents overlap the engine's work on the
 * current batch instead of waiting for it.
 *
 * The thread owns the source from fmb_prefetch_start to fmb_prefetch_stop and fills a bounded
 * queue (at most max_docs documents and max_bytes bytes of data; one document larger than
 * max_bytes still passes, alone). Documents come out in source order, each an owned copy with
 * its content hash, or the source's per-item error; a failure of the whole source comes out
 * as a status once the documents before it are taken.
 */
#ifndef FMB_PREFETCH_H
#define FMB_PREFETCH_H

#include <stddef.h>

#include "batch/source.h"
#include "kernels/base.h"

typedef struct fmb_prefetch fmb_prefetch;

/* One document read ahead. key, data and error are owned (fmb_pdoc_free, or take them and
 * set the pointers to NULL); data is NUL-terminated; error is non-NULL for an item the source
 * could not read (data NULL then), as fmb_doc.error. */
typedef struct {
    char *key;
    char *data;
    size_t len;
    char *error;
    char *doc_id, *meta; /* as fmb_doc's, owned (NULL: none) */
    char hash[33];       /* fmb_hash_content of the data (of nothing when error is set) */
} fmb_pdoc;

void fmb_pdoc_free(fmb_pdoc *d);

/* Starts the reader thread over src, which it owns from now on (closed by fmb_prefetch_stop,
 * also when the start fails). */
FMB_NODISCARD fmb_status fmb_prefetch_start(
    fmb_source *src, size_t max_docs, size_t max_bytes, fmb_prefetch **out, fmb_err *err);

/* The next document into *d (blocks until one is read). *eof = 1 at the end. A status other
 * than FMB_OK: the source as a whole failed (err says why), after every document before the
 * failure was returned. */
FMB_NODISCARD fmb_status fmb_prefetch_next(fmb_prefetch *p, fmb_pdoc *d, int *eof, fmb_err *err);

/* Documents ready to be taken without waiting (the end counts as one). */
size_t fmb_prefetch_ready(fmb_prefetch *p);

/* Stops the thread (it finishes the document it is reading), frees what is queued, closes the
 * source. Accepts NULL. */
void fmb_prefetch_stop(fmb_prefetch *p);

#endif
