/* base: error tiers, checked allocation, a string builder, a clock. No state. */
#include "kernels/base.h"

#include <stdarg.h>
#include <stdint.h>
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

void *fmb_xrealloc(void *p, size_t n, size_t size)
{
    FMB_ASSERTF(size == 0 || n <= SIZE_MAX / size, "allocation size overflow: %zu x %zu", n, size);
    size_t bytes = n * size;
    void *q = realloc(p, bytes ? bytes : 1);
    FMB_ASSERTF(q, "out of memory reallocating %zu x %zu bytes", n, size);
    return q;
}

void fmb_sb_reserve(fmb_sb *b, size_t extra)
{
    FMB_ASSERTF(extra < SIZE_MAX - b->len - 1, "string builder overflow");
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    b->buf = fmb_xrealloc(b->buf, cap, 1);
    b->cap = cap;
    b->buf[b->len] = 0; /* a fresh buffer is a string too */
}

void fmb_sb_add(fmb_sb *b, const void *data, size_t n)
{
    fmb_sb_reserve(b, n);
    if (n)
        memcpy(b->buf + b->len, data, n);
    b->len += n;
    b->buf[b->len] = 0;
}

void fmb_sb_puts(fmb_sb *b, const char *s)
{
    fmb_sb_add(b, s, strlen(s));
}

void fmb_sb_putc(fmb_sb *b, char c)
{
    fmb_sb_add(b, &c, 1);
}

void fmb_sb_printf(fmb_sb *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    FMB_ASSERT(n >= 0);
    fmb_sb_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->buf + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void fmb_sb_clear(fmb_sb *b)
{
    b->len = 0;
    if (b->buf)
        b->buf[0] = 0;
}

char *fmb_sb_take(fmb_sb *b)
{
    fmb_sb_reserve(b, 0);
    char *s = b->buf;
    b->buf = NULL;
    b->len = b->cap = 0;
    return s;
}

void fmb_sb_free(fmb_sb *b)
{
    free(b->buf);
    b->buf = NULL;
    b->len = b->cap = 0;
}

double fmb_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Length of the valid UTF-8 sequence at s[0..n) (1..4), or 0 (overlong forms, surrogates and
 * code points over U+10FFFF are invalid, as for jansson). */
size_t fmb_utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned cp, min;
    if ((c & 0xe0) == 0xc0)
        len = 2, cp = c & 0x1f, min = 0x80;
    else if ((c & 0xf0) == 0xe0)
        len = 3, cp = c & 0x0f, min = 0x800;
    else if ((c & 0xf8) == 0xf0)
        len = 4, cp = c & 0x07, min = 0x10000;
    else
        return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}
