/*
 * check: the in-tree test harness. A test binary calls check() once per assertion that
 * names a test case; each prints "PASS name" or "FAIL name: why". tests/run.sh counts them.
 * Tests run from the repository root, so fixtures are at "tests/fixtures/...".
 */
#ifndef FMB_CHECK_H
#define FMB_CHECK_H

#include <stddef.h>
#include <stdint.h>

/* Prints PASS/FAIL for name; on failure the formatted reason follows. Returns ok. */
int check(int ok, const char *name, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prints "NOTE ..." (shown by the runner even on success): worst differences and the like. */
void check_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* 0 when every check passed, 1 otherwise: return it from main. */
int check_exit(void);

/* Seeded xorshift64* for test inputs. */
uint64_t check_rand_u64(uint64_t *s);
float check_rand_uniform(uint64_t *s); /* [0, 1) */
float check_rand_normal(uint64_t *s);

/* Rust's String::from_utf8_lossy, written independently of the tokenizer's: each maximal
 * invalid subpart of s[0..n) becomes U+FFFD. o must hold 3n bytes; returns the bytes written. */
size_t check_utf8_lossy(const unsigned char *s, size_t n, char *o);

/* Reads a whole file; returns NULL if it cannot. Caller frees. */
char *check_read_file(const char *path, size_t *len);
/* Writes a whole file; returns 0 on success. */
int check_write_file(const char *path, const void *data, size_t len);

#endif
