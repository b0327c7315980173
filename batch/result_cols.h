/*
 * result_cols: the columns of the output database's result table, defined once.
 *
 * X(name, sql, enc, value, failed) per column, in table order:
 *   name    the column name
 *   sql     its declaration after the name in schemas/001_init.sql (tests/test_batch_queue.c
 *           checks the .sql, the copy in batch/schema.c and this list agree)
 *   enc     how export turns the stored value into JSON/CSV:
 *             TEXT  a string         JSON  text holding JSON, exported as that value
 *             INT, REAL  numbers     F32LE, I32LE, U32LE  4-byte LE values in a blob, as an array
 *   value   where the INSERT's value comes from; a user of the list defines ROW_* and CTX
 *           for its purpose around the expansion (batch/queue.h: the fmb_result_row fields;
 *           batch/queue.c: the binds and the empty row):
 *             ROW_TEXT(f)   const char *f, NULL = SQL NULL
 *             ROW_TEXTN(f, n)  const char *f of n bytes (may hold NUL bytes)
 *             ROW_STATUS(f) const char *f, NULL = "ok"
 *             ROW_INT(f)    int64_t f, negative = SQL NULL
 *             ROW_FLAG(f)   int f, 0 or 1
 *             ROW_REAL(f)   double f, not finite = SQL NULL
 *             ROW_BLOB(f)   const void *f with size_t f##_bytes, NULL = SQL NULL
 *             CTX(what)     from the queue: JOB, KEY, ITEM_ID, MODEL, MODEL_HASH,
 *                           TOKENIZER_HASH, VERSION (FMB_VERSION), NOW (wall time)
 *   failed  the SQL expression over the item table that fills the column in the rows
 *           `export --include-failed` adds for failed and dead items
 */
#ifndef FMB_RESULT_COLS_H
#define FMB_RESULT_COLS_H

// clang-format off
#define FMB_RESULT_COLUMNS(X)                                                                    \
    X(job,             "TEXT NOT NULL",                                  TEXT, CTX(JOB),              "job")          \
    X(item_key,        "TEXT NOT NULL",                                  TEXT, CTX(KEY),              "key")          \
    X(task,            "TEXT NOT NULL",                                  TEXT, ROW_TEXT(task),        "NULL")         \
    X(item_id,         "INTEGER NOT NULL REFERENCES item (item_id) ON DELETE CASCADE",                                \
                                                                         INT,  CTX(ITEM_ID),          "item_id")      \
    X(kind,            "TEXT NOT NULL",                                  TEXT, ROW_TEXT(kind),        "NULL")         \
    X(status,          "TEXT NOT NULL CHECK (status IN ('ok', 'skipped'))",                                           \
                                                                         TEXT, ROW_STATUS(status),    "status")       \
    X(note,            "TEXT",                                           TEXT, ROW_TEXT(note),        "error")        \
    X(doc_tokens,      "INTEGER",                                        INT,  ROW_INT(doc_tokens),   "NULL")         \
    X(truncated,       "INTEGER NOT NULL DEFAULT 0",                     INT,  ROW_FLAG(truncated),   "0")            \
    X(prompt_tokens,   "INTEGER",                                        INT,  ROW_INT(prompt_tokens), "NULL")        \
    X(tokens,          "INTEGER",                                        INT,  ROW_INT(tokens),       "NULL")         \
    X(sum_nll,         "REAL",                                           REAL, ROW_REAL(sum_nll),     "NULL")         \
    X(mean_nll,        "REAL",                                           REAL, ROW_REAL(mean_nll),    "NULL")         \
    X(ppl,             "REAL",                                           REAL, ROW_REAL(ppl),         "NULL")         \
    X(bits_per_byte,   "REAL",                                           REAL, ROW_REAL(bits_per_byte), "NULL")       \
    X(token_nll,       "BLOB",                                           F32LE, ROW_BLOB(token_nll),  "NULL")         \
    X(token_rank,      "BLOB",                                           I32LE, ROW_BLOB(token_rank), "NULL")         \
    X(token_offset,    "BLOB",                                           U32LE, ROW_BLOB(token_offset), "NULL")       \
    X(token_topk_ids,  "BLOB",                                           I32LE, ROW_BLOB(token_topk_ids), "NULL")     \
    X(token_topk_logprobs, "BLOB",                                       F32LE, ROW_BLOB(token_topk_logprobs), "NULL") \
    X(choices,         "TEXT",                                           JSON, ROW_TEXT(choices_json), "NULL")        \
    X(best,            "TEXT",                                           TEXT, ROW_TEXT(best),        "NULL")         \
    X(best_index,      "INTEGER",                                        INT,  ROW_INT(best_index),   "NULL")         \
    X(text,            "TEXT",                                           TEXT, ROW_TEXTN(text, text_len), "NULL")     \
    X(ids,             "TEXT",                                           JSON, ROW_TEXT(ids_json),    "NULL")         \
    X(logprobs,        "TEXT",                                           JSON, ROW_TEXT(logprobs_json), "NULL")       \
    X(finish_reason,   "TEXT",                                           TEXT, ROW_TEXT(finish_reason), "NULL")       \
    X(extract,         "TEXT",                                           JSON, ROW_TEXT(extract_json), "NULL")        \
    X(seed,            "INTEGER",                                        INT,  ROW_INT(seed),         "NULL")         \
    X(sampling,        "TEXT",                                           JSON, ROW_TEXT(sampling_json), "NULL")       \
    X(model,           "TEXT",                                           TEXT, CTX(MODEL),            "NULL")         \
    X(model_hash,      "TEXT",                                           TEXT, CTX(MODEL_HASH),       "NULL")         \
    X(tokenizer_hash,  "TEXT",                                           TEXT, CTX(TOKENIZER_HASH),   "NULL")         \
    X(fmbatch_version, "TEXT",                                           TEXT, CTX(VERSION),          "NULL")         \
    X(prefill_seconds, "REAL",                                           REAL, ROW_REAL(prefill_seconds), "NULL")     \
    X(task_seconds,    "REAL",                                           REAL, ROW_REAL(task_seconds), "NULL")        \
    X(finished_at,     "REAL",                                           REAL, CTX(NOW),              "finished_at")
// clang-format on

/* The columns export adds from the item table (schemas/003_doc_meta.sql):
 * X(name, enc, after, sql): placed after the table column `after`, its value the SQL `sql`
 * over the item (alias i, in result rows and failed items' rows alike). */
#define FMB_EXPORT_EXTRA_COLUMNS(X)                                                                \
    X(doc_id, TEXT, item_key, "i.doc_id")                                                          \
    X(meta, JSON, finished_at, "i.meta")

/* The number of columns. */
#define FMB_RESULT_COL_ONE_(name, sql, enc, value, failed) +1
#define FMB_RESULT_NCOLS                                   (0 FMB_RESULT_COLUMNS(FMB_RESULT_COL_ONE_))

#endif
