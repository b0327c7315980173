/*
 * toml: job files parsed by toml++ (Debian's libtomlplusplus-dev, TOML 1.0) behind a C API.
 *
 * The shim (batch/toml.cc, C++17) parses a whole document and copies it into a plain C tree of
 * fmb_toml_value nodes, each with the line and column where it was defined, so that the job
 * layer can name file:line:column in every message. No exception crosses into C.
 *
 * Ownership: fmb_toml_parse returns a tree the caller frees with fmb_toml_free; every string and
 * child array inside belongs to the tree.
 */
#ifndef FMB_TOML_H
#define FMB_TOML_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    FMB_TOML_TABLE = 0,
    FMB_TOML_ARRAY,
    FMB_TOML_STRING,
    FMB_TOML_INT,
    FMB_TOML_FLOAT,
    FMB_TOML_BOOL,
    FMB_TOML_DATETIME /* date, time or date-time: kept as its TOML text in str */
} fmb_toml_type;

typedef struct fmb_toml_value fmb_toml_value;
struct fmb_toml_value {
    fmb_toml_type type;
    int line, col;         /* where the value starts (1-based; 0 when unknown) */
    char *key;             /* the key of a table entry (NUL-terminated); NULL in arrays/root */
    int key_line, key_col; /* where the key was written */
    char *str;             /* STRING/DATETIME: bytes, NUL-terminated (may hold NULs: str_len) */
    size_t str_len;
    int64_t i;            /* INT */
    double f;             /* FLOAT (also set for INT, converted) */
    int b;                /* BOOL */
    fmb_toml_value *kids; /* TABLE: entries sorted by source position; ARRAY: elements */
    size_t n;
};

/* Parses len bytes of TOML. path names the file in messages ("path:line:col: what").
 * On error *root is NULL. Caller frees *root with fmb_toml_free. */
FMB_NODISCARD fmb_status
fmb_toml_parse(const char *text, size_t len, const char *path, fmb_toml_value **root, fmb_err *err);
void fmb_toml_free(fmb_toml_value *root);

/* Entry key of a TABLE, or NULL. Borrowed from the tree. */
const fmb_toml_value *fmb_toml_get(const fmb_toml_value *table, const char *key);

/* "table", "array", "string", "integer", "float", "boolean", "date-time". Static. */
const char *fmb_toml_type_name(fmb_toml_type t);

#ifdef __cplusplus
}
#endif

#endif
