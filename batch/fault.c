/* fault: FMB_FAULT parsing and pass counting (batch/fault.h). */
#include "batch/fault.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const names[FMB_FAULT_N] = {
    "after-claim", "after-claim-window", "before-commit", "after-commit", "checkpoint", "prefill",
    "decode",      "sqlite-busy",        "sqlite-full",   "sqlite-ioerr",
};

struct fmb_fault {
    long long at[FMB_FAULT_N]; /* the pass that fires (1-based); 0: not armed */
    atomic_llong passes[FMB_FAULT_N];
};

const char *fmb_fault_name(fmb_fault_point p)
{
    return p >= 0 && p < FMB_FAULT_N ? names[p] : "?";
}

static int is_error_point(fmb_fault_point p)
{
    return p == FMB_FAULT_SQLITE_BUSY || p == FMB_FAULT_SQLITE_FULL || p == FMB_FAULT_SQLITE_IOERR;
}

fmb_status fmb_fault_parse(const char *spec, fmb_fault **out, fmb_err *err)
{
    *out = NULL;
    if (!spec || !*spec)
        return FMB_OK;
    fmb_fault *f = calloc(1, sizeof *f);
    if (!f)
        return fmb_fail(err, FMB_ENOMEM, "FMB_FAULT: out of memory");
    for (int i = 0; i < FMB_FAULT_N; i++)
        atomic_init(&f->passes[i], 0);
    const char *p = spec;
    while (*p) {
        size_t len = strcspn(p, ",");
        const char *colon = memchr(p, ':', len);
        int which = -1;
        for (int i = 0; colon && i < FMB_FAULT_N; i++)
            if ((size_t)(colon - p) == strlen(names[i]) && !strncmp(p, names[i], strlen(names[i])))
                which = i;
        char *end = NULL;
        long long n = colon ? strtoll(colon + 1, &end, 10) : 0;
        if (which < 0 || n < 1 || end != p + len) {
            fmb_fail(err, FMB_EINVAL,
                     "FMB_FAULT: '%.*s' is not NAME:N (N >= 1; names: after-claim, "
                     "after-claim-window, before-commit, after-commit, checkpoint, prefill, "
                     "decode, sqlite-busy, sqlite-full, sqlite-ioerr)",
                     (int)len, p);
            free(f);
            return FMB_EINVAL;
        }
        f->at[which] = n;
        p += len;
        if (*p == ',')
            p++;
    }
    *out = f;
    return FMB_OK;
}

void fmb_fault_free(fmb_fault *f)
{
    free(f);
}

int fmb_fault_armed(const fmb_fault *f, fmb_fault_point p)
{
    return f && p >= 0 && p < FMB_FAULT_N && f->at[p] > 0;
}

int fmb_fault_pass(fmb_fault *f, fmb_fault_point p)
{
    if (!fmb_fault_armed(f, p))
        return 0;
    long long n = atomic_fetch_add(&f->passes[p], 1) + 1;
    if (is_error_point(p))
        return p == FMB_FAULT_SQLITE_BUSY ? n == f->at[p] : n >= f->at[p];
    if (n != f->at[p])
        return 0;
    // the tests look for this line; then die as kill -9 would (no handler runs, nothing is
    // flushed or closed: the worker file and the WAL stay as they are)
    char msg[128];
    int m =
        snprintf(msg, sizeof msg, "fmbatch: FMB_FAULT %s:%lld: killing the process\n", names[p], n);
    if (write(2, msg, (size_t)m) < 0) {
        /* nothing to do: dying anyway */
    }
    kill(getpid(), SIGKILL);
    for (;;)
        pause();
}
