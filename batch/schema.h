/* schema: the output database's schema (schemas/001_init.sql), compiled into the binary so that
 * fmbatch never depends on where it is installed. */
#ifndef FMB_SCHEMA_H
#define FMB_SCHEMA_H

#define FMB_SCHEMA_VERSION 1
#define FMB_SCHEMA_FILE    "schemas/001_init.sql"

extern const char fmb_schema_sql[];

#endif
