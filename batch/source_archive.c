/*
 * source_archive: the `archive` source: tar, zip, 7z, each optionally gzip/bzip2/xz/zstd-
 * compressed. Only these formats and filters are registered (never *_all(): that can fork
 * external programs and pulls in the readers with most CVEs). Non-regular entries are skipped.
 * open_reader is shared with source_jsonl.c (which reads through libarchive's raw format).
 *
 * Limits (from [source]): one document over max_entry_bytes, an archive over max_total_bytes,
 * or a compression ratio over max_ratio (once past ratio_floor_bytes) fail that item; the last
 * two also stop reading that archive. Buffers grow while counting and are never sized from an
 * entry's declared size (which may be missing or lie).
 */
#include <archive.h>
#include <archive_entry.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch/source_impl.h"

struct archive *fmb_src_open_reader(int raw)
{
    struct archive *a = archive_read_new();
    FMB_ASSERT(a);
    archive_read_support_filter_gzip(a);
    archive_read_support_filter_bzip2(a);
    archive_read_support_filter_xz(a);
    archive_read_support_filter_zstd(a);
    if (raw) {
        archive_read_support_format_raw(a);
        archive_read_support_format_empty(a);
    } else {
        archive_read_support_format_tar(a);
        archive_read_support_format_zip(a);
        archive_read_support_format_7zip(a);
        archive_read_support_format_empty(a);
    }
    return a;
}

/* The ratio and total limits of one archive; 0 ok, else sets the item's error. */
int fmb_src_over_limits(fmb_source *src, struct archive *a, uint64_t total_out)
{
    const fmb_source_cfg *cfg = &src->job->source;
    if (cfg->max_total_bytes > 0 && total_out > (uint64_t)cfg->max_total_bytes) {
        fmb_src_set_error(src, "archive is over max_total_bytes (%lld bytes out)",
                          (long long)cfg->max_total_bytes);
        return 1;
    }
    int64_t in = archive_filter_bytes(a, -1);
    if (cfg->max_ratio > 0 && total_out > (uint64_t)cfg->ratio_floor && in > 0 &&
        (double)total_out > cfg->max_ratio * (double)in) {
        fmb_src_set_error(src, "compression ratio over max_ratio %g (%llu bytes out of %lld)",
                          cfg->max_ratio, (unsigned long long)total_out, (long long)in);
        return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* archive */

typedef struct {
    fmb_source base;
    struct archive *a; /* the open archive, or NULL between archives */
    const char *akey;  /* its key (borrowed from base.file_keys) */
    uint64_t total_out;
    int stop; /* stop reading this archive after the current item */
    char last_entry[256];
} src_archive;

static void close_current(src_archive *s)
{
    if (s->a)
        archive_read_free(s->a);
    s->a = NULL;
    s->stop = 0;
    s->total_out = 0;
    s->last_entry[0] = 0;
}

static fmb_status archive_next(fmb_source *src, fmb_doc *doc, int *eof, fmb_err *err)
{
    (void)err;
    src_archive *s = (src_archive *)src;
    const fmb_source_cfg *cfg = &src->job->source;
    for (;;) {
        if (s->a && s->stop)
            close_current(s);
        if (!s->a) {
            if (src->cur_file >= src->n_files) {
                *eof = 1;
                return FMB_OK;
            }
            const char *path = src->files[src->cur_file];
            s->akey = src->file_keys[src->cur_file];
            src->cur_file++;
            s->a = fmb_src_open_reader(0);
            if (archive_read_open_filename(s->a, path, 65536) != ARCHIVE_OK) {
                fmb_src_set_key(src, "%s", s->akey);
                fmb_src_set_error(src, "cannot open archive: %s", archive_error_string(s->a));
                close_current(s);
                fmb_src_emit(src, doc);
                return FMB_OK;
            }
        }
        struct archive_entry *e;
        int r = archive_read_next_header(s->a, &e);
        if (r == ARCHIVE_EOF) {
            close_current(s);
            continue;
        }
        if (r < ARCHIVE_WARN) {
            /* The rest of this archive cannot be read: one failed item says so. */
            fmb_src_set_key(src, "%s!", s->akey);
            fmb_src_set_error(src, "archive is corrupt after entry '%s': %s", s->last_entry,
                              archive_error_string(s->a) ? archive_error_string(s->a) : "?");
            s->stop = 1;
            fmb_src_emit(src, doc);
            return FMB_OK;
        }
        if (archive_entry_filetype(e) != AE_IFREG)
            continue;
        const char *name = archive_entry_pathname(e);
        if (!name)
            name = archive_entry_pathname_utf8(e);
        if (!name)
            name = "";
        snprintf(s->last_entry, sizeof s->last_entry, "%s", name);
        if (!fmb_src_wanted(cfg, name))
            continue;
        fmb_src_set_key(src, "%s!%s", s->akey, name);
        if (archive_entry_is_encrypted(e)) {
            fmb_src_set_error(src, "entry is encrypted");
            fmb_src_emit(src, doc);
            return FMB_OK;
        }
        size_t limit = (size_t)cfg->max_entry_bytes;
        for (;;) {
            const void *buf;
            size_t size;
            la_int64_t off;
            r = archive_read_data_block(s->a, &buf, &size, &off);
            if (r == ARCHIVE_EOF)
                break;
            if (r != ARCHIVE_OK) {
                fmb_src_set_error(src, "corrupt entry: %s",
                                  archive_error_string(s->a) ? archive_error_string(s->a) : "?");
                if (r == ARCHIVE_FATAL)
                    s->stop = 1;
                break;
            }
            /* Sparse entries: the holes read as zeros. */
            size_t at = off > 0 ? (size_t)off : 0;
            if (at < src->len)
                at = src->len;
            if (at + size > limit) {
                fmb_src_set_error(src, "entry is over max_entry_bytes (%zu bytes)", limit);
                break;
            }
            if (fmb_src_reserve(src, at - src->len + size, limit)) {
                fmb_src_set_error(src, "out of memory reading the entry");
                break;
            }
            memset(src->buf + src->len, 0, at - src->len);
            if (size)
                memcpy(src->buf + at, buf, size);
            src->len = at + size;
            s->total_out += size;
            if (fmb_src_over_limits(src, s->a, s->total_out)) {
                s->stop = 1;
                break;
            }
        }
        fmb_src_emit(src, doc);
        return FMB_OK;
    }
}

static void archive_close(fmb_source *src)
{
    src_archive *s = (src_archive *)src;
    close_current(s);
    fmb_src_free_common(src);
    free(s);
}

static const fmb_src_vt archive_vt = {archive_next, archive_close};

fmb_source *fmb_src_archive_new(void)
{
    src_archive *s = fmb_xcalloc(1, sizeof *s);
    s->base.vt = &archive_vt;
    return &s->base;
}
