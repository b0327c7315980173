/*
 * source_impl: what the source implementations (batch/source*.c) share. Not for other modules.
 */
#ifndef FMB_SOURCE_IMPL_H
#define FMB_SOURCE_IMPL_H

#include "batch/source.h"

typedef struct {
    fmb_status (*next)(fmb_source *src, fmb_doc *doc, int *eof, fmb_err *err);
    void (*close)(fmb_source *src);
    /* Where position loc (src->loc of an item yielded from the current file) is: as_key = 0 the
     * words for a message ("x.jsonl:3", "a.tar entry 2", "s.db row 7"); as_key = 1 the key a
     * repeated key found there is recorded under ("x.jsonl:3", "a.tar!x.txt@2", "s.db:row 7").
     * Returns a new string. */
    char *(*where)(fmb_source *src, int64_t loc, int as_key);
} fmb_src_vt;

/* The keys seen in this pass (source.c): 128-bit hashes of the keys with the position of their
 * first occurrence, open addressing at most 70% full: 24 bytes a slot (34 to 69 a key); the keys
 * themselves are not kept. */
typedef struct {
    uint64_t h[2]; /* {0, 0}: an empty slot */
    int64_t loc;
} fmb_src_seen_slot;

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
    int64_t loc; /* the current item's position in its file, for vt->where (set by next) */
    fmb_src_seen_slot *seen; /* keys seen in this pass (source.c) */
    size_t seen_n, seen_cap;
    int64_t id_off;    /* set by next: the doc_id is key + id_off (-1: no doc_id) */
    char *doc_id;      /* the current item's doc_id (owned, source.c) */
    char *meta;        /* the current item's keep_fields JSON (owned, set by next) */
    char **first_keys; /* key = "content": the source key of each content key's first item */
    size_t n_first_keys, cap_first_keys;
    char *warning; /* fmb_src_warning's text (owned), NULL: none */
};

/* Expands the job's path globs into src->files / src->file_keys (sorted, de-duplicated per
 * pattern). A pattern that matches nothing is an FMB_EINVAL naming it. */
FMB_NODISCARD fmb_status fmb_src_expand_paths(fmb_source *src, fmb_err *err);

/* include/exclude filters on a name: 1 if the document is wanted. */
int fmb_src_wanted(const fmb_source_cfg *cfg, const char *name);

/* Sets the current key / error (printf-style), replacing the previous ones. */
void fmb_src_set_key(fmb_source *src, const char *fmt, ...) FMB_PRINTF_LIKE(2, 3);
void fmb_src_set_error(fmb_source *src, const char *fmt, ...) FMB_PRINTF_LIKE(2, 3);

/* The bytes one document may have: the smaller of [source].max_entry_bytes and
 * [job].max_document_bytes (0: none). */
size_t fmb_src_doc_limit(const fmb_source *src);
/* 1 when [job].max_document_bytes is that limit (a reader then says "document too large"). */
int fmb_src_doc_limit_is_job(const fmb_source *src);
/* Sets the item's error for a document of n bytes over [job].max_document_bytes (at_least:
 * reading stopped there, the document has n bytes or more). */
void fmb_src_too_large(fmb_source *src, uint64_t n, int at_least);

/* Makes room for len+extra+1 bytes in src->buf. Returns 0, or -1 when over limit bytes. */
int fmb_src_reserve(fmb_source *src, size_t extra, size_t limit);

/* Fills doc from the current key, buffer and error. */
void fmb_src_emit(fmb_source *src, fmb_doc *doc);

/* A printf-style formatted new string. */
char *fmb_src_fmt(const char *fmt, ...) FMB_PRINTF_LIKE(1, 2);

/* Frees the common head's members (not src itself). */
void fmb_src_free_common(fmb_source *src);

/* libarchive readers (source_archive.c): raw = 1 for the jsonl source's compressed streams,
 * 0 for tar/zip/7z. fmb_src_open_input opens path into a new reader: a gzip file is inflated by
 * zlib in the read callback (libarchive's gzip filter drops everything it inflated into a
 * buffer that a truncated stream cuts short, so a small truncated .gz would yield nothing);
 * other files go through libarchive's own filters. On failure it returns the reader (for
 * archive_error_string) and the caller frees it with fmb_src_close_input as usual.
 * fmb_src_input_error: the reader's error, never NULL (libarchive leaves some unset).
 * fmb_src_over_limits: the archive limits (total bytes, ratio), which set the item's error. */
struct archive;
typedef struct fmb_src_gz fmb_src_gz;
typedef struct {
    struct archive *a;
    fmb_src_gz *gz; /* NULL unless the file is gzip */
} fmb_src_input;
int fmb_src_open_input(fmb_src_input *in, const char *path, int raw);
void fmb_src_close_input(fmb_src_input *in);
const char *fmb_src_input_error(const fmb_src_input *in);
int fmb_src_over_limits(fmb_source *src, const fmb_src_input *in, uint64_t total_out);

fmb_source *fmb_src_archive_new(void);
fmb_source *fmb_src_jsonl_new(void);
fmb_source *fmb_src_files_new(void);
FMB_NODISCARD fmb_status fmb_src_sqlite_open(const fmb_job *job, fmb_source **out, fmb_err *err);

#endif
