/* base: error tiers, checked allocation, a clock. No state. */
#include "kernels/base.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

fmb_status fmb_fail(fmb_err *err, fmb_status code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

const char *fmb_status_str(fmb_status s)
{
    switch (s) {
    case FMB_OK:
        return "ok";
    case FMB_EINVAL:
        return "invalid input";
    case FMB_EIO:
        return "i/o error";
    case FMB_ENOMEM:
        return "out of memory";
    case FMB_EUNSUP:
        return "unsupported";
    case FMB_ELIMIT:
        return "limit exceeded";
    case FMB_EINTR:
        return "interrupted";
    case FMB_EINTERNAL:
        return "internal error";
    }
    return "unknown status";
}

void fmb_die(const char *file, int line, const char *func, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "fmbatch: fatal: %s:%d: %s: ", file, line, func);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    abort();
}

void *fmb_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    FMB_ASSERTF(p, "out of memory allocating %zu bytes", n);
    return p;
}

void *fmb_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    FMB_ASSERTF(p, "out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

char *fmb_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = fmb_xmalloc(n);
    memcpy(p, s, n);
    return p;
}

double fmb_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
