/*
 * fuzz_util: what the source-reader fuzz targets share (header only: each target is one .c).
 * A private scratch folder per process (/tmp/fmbfuzz-PID), the input written into a file there,
 * and a job over that file read to its end through the source layer (batch/source.h), checking
 * the layer's contract on every item: a key, and either data (NUL-terminated, len bytes) or an
 * error; never both.
 */
#ifndef FMB_FUZZ_UTIL_H
#define FMB_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "batch/job.h"
#include "batch/source.h"

static char fuzz_dir_path[64];

/* At exit: the scratch folder and what the targets leave in it. */
static inline void fuzz_dir_remove(void)
{
    static const char *const names[] = {"in.archive", "in.jsonl", "in.db",       "o.db",
                                        "o.db-wal",   "o.db-shm", "o.db.workers"};
    char p[256];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", fuzz_dir_path, names[i]);
        unlink(p);
    }
    rmdir(fuzz_dir_path);
}

static inline const char *fuzz_dir(void)
{
    char *dir = fuzz_dir_path;
    if (!dir[0]) { /* memory-backed when there is /dev/shm: the queue target syncs */
        snprintf(dir, sizeof fuzz_dir_path, "%s/fmbfuzz-%ld",
                 access("/dev/shm", W_OK) ? "/tmp" : "/dev/shm", (long)getpid());
        mkdir(dir, 0700);
        atexit(fuzz_dir_remove);
    }
    return dir;
}

/* Writes data to fuzz_dir()/name. Returns 0 on success. */
static inline int fuzz_write(const char *name, const uint8_t *data, size_t size)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", fuzz_dir(), name);
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int bad = size && fwrite(data, 1, size, f) != size;
    return fclose(f) || bad ? -1 : 0;
}

/* Parses the job text (relative paths against fuzz_dir()) and reads its source to the end.
 * Aborts (a finding) when an item breaks the contract. */
static inline void fuzz_read_source(const char *job_text)
{
    fmb_job *job = NULL;
    fmb_err err;
    if (fmb_job_parse(job_text, strlen(job_text), "fuzz.toml", fuzz_dir(), &job, &err)) {
        fprintf(stderr, "fuzz: the job does not parse: %s\n", err.msg);
        abort();
    }
    fmb_source *src = NULL;
    if (fmb_src_open(job, &src, &err) == FMB_OK) {
        for (int n = 0; n < 100000; n++) {
            fmb_doc d;
            int eof = 0;
            if (fmb_src_next(src, &d, &eof, &err) || eof)
                break;
            if (!d.key || (!d.data == !d.error) || (d.data && d.data[d.len] != 0))
                abort();
            if (d.data) /* touch every byte: ASan checks the length */
                for (size_t i = 0; i < d.len; i++)
                    if (d.data[i] == 0x7f && d.data[d.len] != 0)
                        abort();
        }
        fmb_src_close(src);
    }
    fmb_job_free(job);
}

#endif
