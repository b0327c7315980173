/*
 * source_archive: the `archive` source: tar, zip, 7z, each optionally gzip/bzip2/xz/zstd-
 * compressed. Only these formats and filters are registered (never *_all(): that can fork
 * external programs and pulls in the readers with most CVEs). Non-regular entries are skipped.
 * fmb_src_open_input is shared with source_jsonl.c (which reads through libarchive's raw format).
 *
 * What cannot be read is a failed item, never skipped: an entry libarchive fails (keyed by its
 * name), a damaged tar header (keyed "<archive>!@<byte offset>", for the stretch libarchive
 * passes over to the next good header), the rest of an archive after a fatal error, and a tar
 * that ends without its end-of-archive blocks (both keyed "<archive>!").
 *
 * Limits (from [source]): one document over max_entry_bytes, an archive over max_total_bytes,
 * or a compression ratio over max_ratio (once past ratio_floor_bytes) fail that item; the last
 * two also stop reading that archive. Buffers grow while counting and are never sized from an
 * entry's declared size (which may be missing or lie).
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "batch/source_impl.h"

static struct archive *open_reader(int raw)
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

/* ---------------------------------------------------------------------------------------- */
/* gzip input: inflated here, so that what precedes a cut is delivered before the error. */

struct fmb_src_gz {
    FILE *fp;
    z_stream z;
    int z_ready;      /* inflateInit2 done */
    int in_member;    /* inside a gzip member (between its header and its trailer) */
    int members;      /* members started */
    int at_end;       /* the input is over (cleanly) */
    int eof_in;       /* fread reached the end of the file */
    char error[160];  /* set: the next read fails with it */
    int64_t in_total; /* compressed bytes read from the file */
    unsigned char in[65536], out[65536];
};

static la_ssize_t gz_read(struct archive *a, void *data, const void **buf)
{
    fmb_src_gz *g = data;
    *buf = g->out;
    if (g->error[0]) {
        archive_set_error(a, EIO, "%s", g->error);
        return -1;
    }
    if (g->at_end)
        return 0;
    g->z.next_out = g->out;
    g->z.avail_out = sizeof g->out;
    while (g->z.avail_out > 0 && !g->at_end && !g->error[0]) {
        if (g->z.avail_in == 0) {
            size_t n = g->eof_in ? 0 : fread(g->in, 1, sizeof g->in, g->fp);
            if (n == 0) {
                g->eof_in = 1;
                if (ferror(g->fp))
                    snprintf(g->error, sizeof g->error, "read error: %s", strerror(errno));
                else if (g->in_member)
                    snprintf(g->error, sizeof g->error,
                             "truncated gzip input: the file ends inside the compressed stream "
                             "(after %llu bytes out)",
                             (unsigned long long)g->z.total_out);
                else
                    g->at_end = 1;
                break;
            }
            g->in_total += (int64_t)n;
            g->z.next_in = g->in;
            g->z.avail_in = (uInt)n;
        }
        if (!g->in_member) {
            /* A member after the first: another one, or trailing bytes to ignore (gzip -d
             * ignores them too, e.g. the zeros that pad a tape block). */
            if (g->members > 0 && g->z.next_in[0] != 0x1f) {
                g->at_end = 1;
                break;
            }
            if (inflateReset2(&g->z, 16 + MAX_WBITS) != Z_OK) {
                snprintf(g->error, sizeof g->error, "gzip: %s", g->z.msg ? g->z.msg : "reset");
                break;
            }
            g->in_member = 1;
            g->members++;
        }
        int r = inflate(&g->z, Z_NO_FLUSH);
        if (r == Z_STREAM_END) {
            g->in_member = 0;
        } else if (r == Z_BUF_ERROR && g->z.avail_in == 0) {
            continue; /* needs more input */
        } else if (r != Z_OK) {
            snprintf(g->error, sizeof g->error, "gzip data is damaged: %s",
                     g->z.msg ? g->z.msg : "inflate failed");
        }
    }
    size_t n = sizeof g->out - g->z.avail_out;
    if (n == 0 && g->error[0]) {
        archive_set_error(a, EIO, "%s", g->error);
        return -1;
    }
    return (la_ssize_t)n;
}

int fmb_src_open_input(fmb_src_input *in, const char *path, int raw)
{
    in->gz = NULL;
    in->a = open_reader(raw);
    FILE *fp = fopen(path, "rb");
    unsigned char magic[2] = {0, 0};
    if (fp && fread(magic, 1, 2, fp) == 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
        fmb_src_gz *g = fmb_xcalloc(1, sizeof *g);
        g->fp = fp;
        rewind(fp);
        FMB_ASSERT(inflateInit2(&g->z, 16 + MAX_WBITS) == Z_OK);
        g->z_ready = 1;
        in->gz = g;
        return archive_read_open(in->a, g, NULL, gz_read, NULL) == ARCHIVE_OK ? 0 : -1;
    }
    if (fp)
        fclose(fp);
    return archive_read_open_filename(in->a, path, 65536) == ARCHIVE_OK ? 0 : -1;
}

void fmb_src_close_input(fmb_src_input *in)
{
    if (in->a)
        archive_read_free(in->a);
    in->a = NULL;
    if (in->gz) {
        if (in->gz->z_ready)
            inflateEnd(&in->gz->z);
        fclose(in->gz->fp);
        free(in->gz);
    }
    in->gz = NULL;
}

const char *fmb_src_input_error(const fmb_src_input *in)
{
    const char *e = archive_error_string(in->a);
    if (e && *e)
        return e;
    if (in->gz && in->gz->error[0])
        return in->gz->error;
    /* libarchive's 7z reader, among others, fails some truncated files without a message. */
    const char *f = archive_format_name(in->a);
    if (f && !strcmp(f, "7-Zip"))
        return "the 7-Zip file is truncated or damaged (libarchive gives no reason)";
    return "the file is truncated or damaged (libarchive gives no reason)";
}

/* The ratio and total limits of one archive; 0 ok, else sets the item's error. */
int fmb_src_over_limits(fmb_source *src, const fmb_src_input *inp, uint64_t total_out)
{
    const fmb_source_cfg *cfg = &src->job->source;
    if (cfg->max_total_bytes > 0 && total_out > (uint64_t)cfg->max_total_bytes) {
        fmb_src_set_error(src, "archive is over max_total_bytes (%lld bytes out)",
                          (long long)cfg->max_total_bytes);
        return 1;
    }
    int64_t in = inp->gz ? inp->gz->in_total - (int64_t)inp->gz->z.avail_in
                         : archive_filter_bytes(inp->a, -1);
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
    fmb_src_input in; /* the open archive (in.a), or in.a NULL between archives */
    const char *akey; /* its key (borrowed from base.file_keys) */
    uint64_t total_out;
    int stop;        /* stop reading this archive after the current item */
    int64_t entries; /* headers read in this archive: the position of each (1-based) */
    int failed_run;  /* entries failed in a row */
    int pending;     /* a header result read ahead (past a damaged stretch), to go next */
    int pending_r;
    struct archive_entry *pending_e;
    char last_entry[256];
} src_archive;

static void close_current(src_archive *s)
{
    fmb_src_close_input(&s->in);
    s->stop = 0;
    s->total_out = 0;
    s->entries = 0;
    s->failed_run = 0;
    s->pending = 0;
    s->last_entry[0] = 0;
}

/* "after entry 'x'", or "before the first entry". */
static const char *after_what(src_archive *s, char *buf, size_t n)
{
    if (s->entries == 0)
        return "before the first entry";
    snprintf(buf, n, "after entry %lld '%s'", (long long)s->entries, s->last_entry);
    return buf;
}

static fmb_status archive_next(fmb_source *src, fmb_doc *doc, int *eof, fmb_err *err)
{
    (void)err;
    src_archive *s = (src_archive *)src;
    const fmb_source_cfg *cfg = &src->job->source;
    char after[320];
    for (;;) {
        if (s->in.a && s->stop)
            close_current(s);
        if (!s->in.a) {
            if (src->cur_file >= src->n_files) {
                *eof = 1;
                return FMB_OK;
            }
            const char *path = src->files[src->cur_file];
            s->akey = src->file_keys[src->cur_file];
            src->cur_file++;
            if (fmb_src_open_input(&s->in, path, 0)) {
                fmb_src_set_key(src, "%s", s->akey);
                fmb_src_set_error(src, "cannot open archive: %s", fmb_src_input_error(&s->in));
                close_current(s);
                fmb_src_emit(src, doc);
                return FMB_OK;
            }
        }
        struct archive *a = s->in.a;
        struct archive_entry *e;
        int r;
        if (s->pending) {
            s->pending = 0;
            r = s->pending_r;
            e = s->pending_e;
        } else {
            r = archive_read_next_header(a, &e);
        }
        if (r == ARCHIVE_RETRY) {
            /* A damaged header (tar: its checksum is wrong): libarchive goes on at the next
             * block that is a header. One failed item for the stretch it passes over, keyed by
             * where the stretch starts in the archive's data. */
            int64_t at = archive_read_header_position(a);
            char why[200];
            snprintf(why, sizeof why, "%s", fmb_src_input_error(&s->in));
            int64_t pos = archive_filter_bytes(a, 0);
            do {
                r = archive_read_next_header(a, &e);
                int64_t now = archive_filter_bytes(a, 0);
                if (r == ARCHIVE_RETRY && now <= pos) { /* no progress: give up on it */
                    r = ARCHIVE_FATAL;
                    break;
                }
                pos = now;
            } while (r == ARCHIVE_RETRY);
            s->pending = 1;
            s->pending_r = r;
            s->pending_e = e;
            fmb_src_set_key(src, "%s!@%lld", s->akey, (long long)at);
            fmb_src_set_error(src,
                              "damaged header: at byte %lld of the archive, %s (%s); what it "
                              "held is lost up to byte %lld, reading goes on",
                              (long long)at, after_what(s, after, sizeof after), why,
                              (long long)archive_read_header_position(a));
            fmb_src_emit(src, doc);
            return FMB_OK;
        }
        if (r == ARCHIVE_EOF) {
            /* A tar ends with two zero blocks, which the reader consumes: a tar cut at an entry
             * boundary ends without them, and reads as if complete otherwise. */
            int tar = (archive_format(a) & ARCHIVE_FORMAT_BASE_MASK) == ARCHIVE_FORMAT_TAR;
            if (tar && s->entries > 0 &&
                archive_filter_bytes(a, 0) <= archive_read_header_position(a)) {
                fmb_src_set_key(src, "%s!", s->akey);
                fmb_src_set_error(src,
                                  "archive ends early: no end-of-archive blocks %s (byte %lld), "
                                  "it looks truncated",
                                  after_what(s, after, sizeof after),
                                  (long long)archive_filter_bytes(a, 0));
                s->stop = 1;
                fmb_src_emit(src, doc);
                return FMB_OK;
            }
            close_current(s);
            continue;
        }
        if (r == ARCHIVE_FAILED && ++s->failed_run > 1000)
            r = ARCHIVE_FATAL; /* the reader does not get past it */
        if (r == ARCHIVE_FAILED) {
            /* This entry cannot be read; the next one may be. */
            s->entries++;
            const char *name = e ? archive_entry_pathname(e) : NULL;
            src->loc = s->entries;
            if (name && *name)
                fmb_src_set_key(src, "%s!%s", s->akey, name);
            else
                fmb_src_set_key(src, "%s!@%lld", s->akey,
                                (long long)archive_read_header_position(a));
            fmb_src_set_error(src, "entry cannot be read: entry %lld: %s", (long long)s->entries,
                              fmb_src_input_error(&s->in));
            snprintf(s->last_entry, sizeof s->last_entry, "%s", name ? name : "?");
            fmb_src_emit(src, doc);
            return FMB_OK;
        }
        if (r < ARCHIVE_WARN) {
            /* The rest of this archive cannot be read: one failed item says so. */
            fmb_src_set_key(src, "%s!", s->akey);
            fmb_src_set_error(src, "archive is corrupt: %s: %s", after_what(s, after, sizeof after),
                              fmb_src_input_error(&s->in));
            s->stop = 1;
            fmb_src_emit(src, doc);
            return FMB_OK;
        }
        s->entries++;
        s->failed_run = 0;
        const char *name = archive_entry_pathname(e);
        if (!name)
            name = archive_entry_pathname_utf8(e);
        if (!name)
            name = "";
        snprintf(s->last_entry, sizeof s->last_entry, "%s", name);
        const char *hard = archive_entry_hardlink(e);
        mode_t type = archive_entry_filetype(e);
        if (type == AE_IFDIR && !hard)
            continue; /* folders hold no document */
        if (!fmb_src_wanted(cfg, name))
            continue;
        fmb_src_set_key(src, "%s!%s", s->akey, name);
        src->id_off = (int64_t)strlen(s->akey) + 1;
        src->loc = s->entries;
        if (type != AE_IFREG || hard) {
            // a link, device, FIFO or socket holds no document of its own: a failed item says
            // what it is, so that no name of the archive is dropped silently
            const char *sym = archive_entry_symlink(e);
            if (hard)
                fmb_src_set_error(src, "not a regular file: a hard link to '%s'", hard);
            else if (type == AE_IFLNK)
                fmb_src_set_error(src, "not a regular file: a symbolic link to '%s'",
                                  sym ? sym : "?");
            else
                fmb_src_set_error(src, "not a regular file: a %s",
                                  type == AE_IFCHR    ? "character device"
                                  : type == AE_IFBLK  ? "block device"
                                  : type == AE_IFIFO  ? "FIFO"
                                  : type == AE_IFSOCK ? "socket"
                                                      : "special entry");
            fmb_src_emit(src, doc);
            return FMB_OK;
        }
        if (archive_entry_is_encrypted(e)) {
            fmb_src_set_error(src, "entry is encrypted");
            fmb_src_emit(src, doc);
            return FMB_OK;
        }
        /* reading stops at the limit: the rest of the entry is skipped, never buffered */
        size_t limit = fmb_src_doc_limit(src);
        for (;;) {
            const void *buf;
            size_t size;
            la_int64_t off;
            r = archive_read_data_block(a, &buf, &size, &off);
            if (r == ARCHIVE_EOF)
                break;
            if (r != ARCHIVE_OK) {
                fmb_src_set_error(src, "corrupt entry: %s", fmb_src_input_error(&s->in));
                if (r == ARCHIVE_FATAL)
                    s->stop = 1;
                break;
            }
            /* Sparse entries: the holes read as zeros. */
            size_t at = off > 0 ? (size_t)off : 0;
            if (at < src->len)
                at = src->len;
            if (at + size > limit) {
                if (!fmb_src_doc_limit_is_job(src))
                    fmb_src_set_error(src, "entry is over max_entry_bytes (%zu bytes)", limit);
                else if (archive_entry_size_is_set(e) && archive_entry_size(e) > (la_int64_t)limit)
                    fmb_src_too_large(src, (uint64_t)archive_entry_size(e), 0);
                else
                    fmb_src_too_large(src, (uint64_t)(at + size), 1);
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
            if (fmb_src_over_limits(src, &s->in, s->total_out)) {
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

/* Entry loc of the current archive; a repeated name is keyed "<archive>!<name>@<entry>". */
static char *archive_where(fmb_source *src, int64_t loc, int as_key)
{
    src_archive *s = (src_archive *)src;
    return as_key ? fmb_src_fmt("%s@%lld", src->key, (long long)loc)
                  : fmb_src_fmt("%s entry %lld", s->akey, (long long)loc);
}

static const fmb_src_vt archive_vt = {archive_next, archive_close, archive_where};

fmb_source *fmb_src_archive_new(void)
{
    src_archive *s = fmb_xcalloc(1, sizeof *s);
    s->base.vt = &archive_vt;
    return &s->base;
}
