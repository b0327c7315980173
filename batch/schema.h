/* schema: the output database's schema (schemas/001_init.sql), compiled into the binary so that
 * fmbatch never depends on where it is installed. */
#ifndef FMB_SCHEMA_H
#define FMB_SCHEMA_H

#define FMB_SCHEMA_VERSION 3
#define FMB_SCHEMA_FILE    "schemas/001_init.sql"

extern const char fmb_schema_sql[];

/* Migrations: fmb_schema_sql_N takes a version N-1 file to version N; a new file gets 001 and
 * then each migration in order, an older file only the ones it lacks (fmb_queue_open, under
 * the write lock). Each equals its file in schemas/ byte for byte (tests/test_batch_queue.c). */
#define FMB_SCHEMA_FILE_2 "schemas/002_kills.sql"
extern const char fmb_schema_sql_2[];
#define FMB_SCHEMA_FILE_3 "schemas/003_doc_meta.sql"
extern const char fmb_schema_sql_3[];

#endif
