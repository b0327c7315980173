/*
 * source: documents streamed one at a time from an archive, JSON Lines, a directory tree or a
 * SQLite query. A source is a vtable (next, close) behind an opaque handle; fmb_src_open picks
 * the implementation from the job's [source].kind.
 *
 * Item keys are stable and independent of the working directory and of how a path is spelled
 * (a matched file's canonical path, relative to the job's folder when it is inside it, else
 * absolute: "data/x.jsonl", "./data/x.jsonl" and "/jobs/data/x.jsonl" name the same items):
 *   archive  "corpus/a.tar.gz!dir/entry.txt"; "corpus/a.tar.gz!@<byte>" a damaged header's
 *            stretch, "corpus/a.tar.gz!" the rest of an archive that cannot be read on
 *   jsonl    "data/x.jsonl.gz#<id>"  (id_field), "data/x.jsonl.gz:<line>" (no id, or a bad line)
 *   files    "docs/sub/a.txt"
 *   sqlite   the key column's value as text; "<database>:row <n>" a row with a NULL key, n its
 *            position in the query ordered by (key, text), 1-based
 *
 * With [source].key = "content" the key is "content:<32 hex>", fmb_hash_content of the
 * document's bytes, instead: identical documents are then the same key (a repeat below).
 *
 * doc_id is the key after its source prefix, the document's own id: the archive entry name, the
 * jsonl id (or line number), the path inside a walked folder (a file named in paths: the whole
 * key), the sqlite key. It stays the source's under key = "content".
 *
 * Documents over the job's max_document_bytes (or the source's max_entry_bytes, whichever is
 * smaller) fail their item; readers stop reading such a document at the limit.
 *
 * Keys are unique within a pass. A key met again is yielded as a failed item ("duplicate key:
 * '<key>', first at <where>") under the key of its own position, and the first occurrence keeps
 * the key:
 *   archive  "<archive>!<name>@<entry>"  (entry: its header's position in the archive, 1-based)
 *   jsonl    "<file>:<line>"
 *   files    "<path>@<n>"  (n: its position among the items, when two paths match one file)
 *   sqlite   "<database>:row <n>"
 *   content  the repeat's source key (the first is named by its source key too)
 * (with "~2", "~3", ... appended if that is a key of the source too). As long as the input does
 * not change, a rerun derives the same keys and the same reasons, so the queue skips them: a
 * repeat is recorded once, and neither it nor the first is recomputed.
 *
 * A document that cannot be read (corrupt entry, over a limit, bad JSON line, an archive that
 * does not open or ends early, a truncated compressed stream after its complete lines) is yielded
 * as an item with an error message instead of data: the caller records it as failed and goes on.
 * Only errors that make the whole source unusable (a glob that matches nothing, a bad query, a
 * source database that is locked or not a database) are returned as a status.
 */
#ifndef FMB_SOURCE_H
#define FMB_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "batch/job.h"
#include "kernels/base.h"

typedef struct {
    const char *key;  /* borrowed until the next fmb_src_next/close */
    const char *data; /* document bytes, NUL-terminated; NULL when error is set */
    size_t len;
    const char *error;  /* non-NULL: the item failed in the source, this says why */
    const char *doc_id; /* the document's id inside its source (borrowed as key), NULL if none */
    const char *meta;   /* [source].keep_fields as a JSON object text (borrowed), NULL if none */
} fmb_doc;

typedef struct fmb_source fmb_source;

/* Opens the job's source (paths resolved against the job folder). */
FMB_NODISCARD fmb_status fmb_src_open(const fmb_job *job, fmb_source **out, fmb_err *err);

/* Next document into *doc. Returns FMB_OK and sets *eof = 1 at the end. A status other than
 * FMB_OK means the source as a whole failed (err says why). */
FMB_NODISCARD fmb_status fmb_src_next(fmb_source *src, fmb_doc *doc, int *eof, fmb_err *err);

/* A warning about how the source will be read, for the user before a run (NULL: none; owned
 * by the source): a SQLite query whose pages each sort its whole result. */
const char *fmb_src_warning(const fmb_source *src);

void fmb_src_close(fmb_source *src);

#endif
