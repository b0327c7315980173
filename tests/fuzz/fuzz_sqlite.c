/*
 * fuzz_sqlite: libFuzzer target for the SQLite reader (batch/source_sqlite.c) through the
 * source layer. First byte even: the rest describes rows of a table t(k, v) with no declared
 * types (each value: a type byte, NULL / integer / real / text / blob, then a length byte and
 * that many bytes), so keys and texts come NULL, numeric, duplicated, binary, invalid UTF-8 or
 * with NUL bytes, read in pages of 3 rows; bit 1 of the first byte adds an index on k (the
 * pages then seek; without it each sorts the table). Odd: the rest is the database file itself
 * (damaged files). `make fuzz` builds it; seeds: tests/fuzz/corpus_sqlite.
 */
#include <sqlite3.h>

#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void bind_value(sqlite3_stmt *st, int col, const uint8_t **p, const uint8_t *end)
{
    if (*p >= end) {
        sqlite3_bind_null(st, col);
        return;
    }
    int type = **p % 5;
    (*p)++;
    size_t n = *p < end ? **p : 0;
    if (*p < end)
        (*p)++;
    if (n > (size_t)(end - *p))
        n = (size_t)(end - *p);
    const uint8_t *v = *p;
    *p += n;
    int64_t i = 0;
    for (size_t k = 0; k < n && k < 8; k++)
        i = (int64_t)((uint64_t)i << 8 | v[k]);
    switch (type) {
    case 0:
        sqlite3_bind_null(st, col);
        break;
    case 1:
        sqlite3_bind_int64(st, col, n ? i : 0);
        break;
    case 2:
        sqlite3_bind_double(st, col, (double)i / 7.0);
        break;
    case 3:
        sqlite3_bind_text(st, col, (const char *)v, (int)n, SQLITE_TRANSIENT);
        break;
    default:
        sqlite3_bind_blob(st, col, v, (int)n, SQLITE_TRANSIENT);
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size)
        return 0;
    char path[256];
    snprintf(path, sizeof path, "%s/in.db", fuzz_dir());
    unlink(path);
    if (data[0] & 1) {
        if (fuzz_write("in.db", data + 1, size - 1))
            return 0;
    } else {
        sqlite3 *db = NULL;
        if (sqlite3_open(path, &db) != SQLITE_OK) {
            sqlite3_close(db);
            return 0;
        }
        // bit 1: an index on the key, so pages seek to their first key; without it every page
        // sorts the whole table (both plans are read the same way)
        sqlite3_exec(db,
                     data[0] & 2 ? "PRAGMA synchronous = OFF; CREATE TABLE t (k, v); "
                                   "CREATE INDEX t_k ON t (k); BEGIN"
                                 : "PRAGMA synchronous = OFF; CREATE TABLE t (k, v); BEGIN",
                     NULL, NULL, NULL);
        sqlite3_stmt *st = NULL;
        sqlite3_prepare_v2(db, "INSERT INTO t VALUES (?1, ?2)", -1, &st, NULL);
        const uint8_t *p = data + 1, *end = data + size;
        for (int rows = 0; st && p < end && rows < 1000; rows++) {
            bind_value(st, 1, &p, end);
            bind_value(st, 2, &p, end);
            sqlite3_step(st);
            sqlite3_reset(st);
        }
        sqlite3_finalize(st);
        sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
        sqlite3_close(db);
    }
    fuzz_read_source("[job]\nname = \"f\"\nmodel = \"m\"\noutput = \"o.db\"\n"
                     "[source]\nkind = \"sqlite\"\ndatabase = \"in.db\"\n"
                     "query = \"SELECT k, v FROM t\"\npage_rows = 3\nmax_entry_bytes = 64\n"
                     "[[task]]\nname = \"p\"\nkind = \"score\"\n");
    return 0;
}
