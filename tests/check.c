/* check: see check.h. Test code only: a global failure count is fine here. */
#include "tests/check.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int n_fail;

int check(int ok, const char *name, const char *fmt, ...)
{
    if (ok) {
        printf("PASS %s\n", name);
    } else {
        va_list ap;
        printf("FAIL %s: ", name);
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        printf("\n");
        n_fail++;
    }
    fflush(stdout);
    return ok;
}

void check_note(const char *fmt, ...)
{
    va_list ap;
    printf("NOTE ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

int check_exit(void)
{
    return n_fail ? 1 : 0;
}

uint64_t check_rand_u64(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

float check_rand_uniform(uint64_t *s)
{
    return (float)(check_rand_u64(s) >> 40) * (1.0f / 16777216.0f);
}

float check_rand_normal(uint64_t *s)
{
    float u1 = check_rand_uniform(s), u2 = check_rand_uniform(s);
    if (u1 < 1e-7f)
        u1 = 1e-7f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

char *check_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return NULL;
    }
    long n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return NULL;
    }
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;
        if (len)
            *len = (size_t)n;
    }
    return buf;
}

int check_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, len, f);
    int rc = fclose(f);
    return (w == len && rc == 0) ? 0 : -1;
}

size_t check_utf8_lossy(const unsigned char *s, size_t n, char *o)
{
    size_t i = 0, w = 0;
    while (i < n) {
        unsigned c = s[i];
        // expected length from the lead byte; 0 = never valid (C0, C1, F5..FF, continuation)
        size_t need = c < 0x80                   ? 1
                      : (c >= 0xC2 && c <= 0xDF) ? 2
                      : (c >= 0xE0 && c <= 0xEF) ? 3
                      : (c >= 0xF0 && c <= 0xF4) ? 4
                                                 : 0;
        size_t k = 1;
        for (; need > 1 && k < need && i + k < n; k++) {
            // the second byte's range excludes overlongs, surrogates and code points > U+10FFFF
            unsigned x = s[i + k], lo = 0x80, hi = 0xBF;
            if (k == 1 && c == 0xE0)
                lo = 0xA0;
            if (k == 1 && c == 0xED)
                hi = 0x9F;
            if (k == 1 && c == 0xF0)
                lo = 0x90;
            if (k == 1 && c == 0xF4)
                hi = 0x8F;
            if (x < lo || x > hi)
                break;
        }
        if (need && k == need) {
            memcpy(o + w, s + i, need);
            w += need;
            i += need;
        } else {
            memcpy(o + w, "\xEF\xBF\xBD", 3);
            w += 3;
            i += need ? k : 1;
        }
    }
    return w;
}
