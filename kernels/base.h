/*
 * base: the two error tiers shared by every layer of fmbatch.
 *
 * Tier 1 (data and environment): functions return fmb_status and write a message into a
 * caller-owned fmb_err. Tier 2 (broken invariants, CUDA/cuBLAS failures): FMB_ASSERT and
 * friends print the statement, function and file:line, then abort().
 *
 * This header sits at the bottom (kernels/) so that all layers can use it; it has no state.
 */
#ifndef FMB_BASE_H
#define FMB_BASE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Part of every job fingerprint: a version whose numbers differ from its predecessor's gets a
 * new one (0.2.0: batch-invariant decode kernels; 0.3.0: the default decode path's dt_proj
 * through the matvec), so a resumed job never mixes them. */
#define FMB_VERSION "0.3.0"

#define FMB_NODISCARD         __attribute__((warn_unused_result))
#define FMB_PRINTF_LIKE(a, b) __attribute__((format(printf, a, b)))
#define FMB_NORETURN          __attribute__((noreturn))

typedef enum {
    FMB_OK = 0,
    FMB_EINVAL = -1,   /* bad input: flag, file content, configuration */
    FMB_EIO = -2,      /* a file could not be opened, read or written */
    FMB_ENOMEM = -3,   /* an allocation failed */
    FMB_EUNSUP = -4,   /* valid but unsupported input (an unknown dtype, normalizer ...) */
    FMB_ELIMIT = -5,   /* a configured limit was hit (tokens, bytes, regex match limit) */
    FMB_EINTR = -6,    /* interrupted by a signal */
    FMB_EINTERNAL = -7 /* anything else */
} fmb_status;

/* A caller-owned message buffer: functions that fail write one line into it. */
typedef struct {
    char msg[1024];
} fmb_err;

/* Formats into err (if non-NULL) and returns code: `return fmb_fail(err, FMB_EINVAL, ...)`. */
fmb_status fmb_fail(fmb_err *err, fmb_status code, const char *fmt, ...) FMB_PRINTF_LIKE(3, 4);

/* Short name of a status ("invalid input" ...). Static string. */
const char *fmb_status_str(fmb_status s);

FMB_NORETURN void fmb_die(const char *file, int line, const char *func, const char *fmt, ...)
    FMB_PRINTF_LIKE(4, 5);

#define FMB_ASSERT(cond)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fmb_die(__FILE__, __LINE__, __func__, "assertion failed: %s", #cond);                  \
    } while (0)

#define FMB_ASSERTF(cond, ...)                                                                     \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fmb_die(__FILE__, __LINE__, __func__, __VA_ARGS__);                                    \
    } while (0)

/* malloc/calloc that abort on failure: for small bookkeeping allocations only. Big buffers
 * whose size depends on input go through plain malloc with a tier-1 FMB_ENOMEM status. */
void *fmb_xmalloc(size_t n);
void *fmb_xcalloc(size_t n, size_t size);
char *fmb_xstrdup(const char *s);
/* realloc of n elements of size bytes (n * size checked for overflow) that aborts on failure;
 * the same tier as fmb_xmalloc. p may be NULL. */
void *fmb_xrealloc(void *p, size_t n, size_t size);

/* A growable byte buffer / string builder. Zero-initialise (fmb_sb b = {0}); buf stays
 * NUL-terminated after any add (the NUL is not counted in len) and may hold NUL bytes.
 * Owned by the caller: fmb_sb_free, or fmb_sb_take to keep the string. Growth aborts on
 * out-of-memory (fmb_xrealloc), so it is for bookkeeping-sized text, not input-sized data. */
typedef struct {
    char *buf;
    size_t len, cap;
} fmb_sb;

void fmb_sb_reserve(fmb_sb *b, size_t extra); /* room for extra more bytes + the NUL */
void fmb_sb_add(fmb_sb *b, const void *data, size_t n);
void fmb_sb_puts(fmb_sb *b, const char *s);
void fmb_sb_putc(fmb_sb *b, char c);
void fmb_sb_printf(fmb_sb *b, const char *fmt, ...) FMB_PRINTF_LIKE(2, 3);
void fmb_sb_clear(fmb_sb *b); /* len 0, keeps the memory */
/* The string (never NULL; "" when nothing was added), now the caller's; b is reset. */
char *fmb_sb_take(fmb_sb *b);
void fmb_sb_free(fmb_sb *b);

/* Monotonic wall time in seconds. */
double fmb_now(void);

#ifdef __cplusplus
}
#endif

/* Length of the valid UTF-8 sequence at s[0..n) (1..4), or 0: overlong forms, surrogates and
 * code points over U+10FFFF are invalid (as for jansson). */
size_t fmb_utf8_seq(const unsigned char *s, size_t n);

#endif
