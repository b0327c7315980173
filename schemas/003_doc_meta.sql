-- fmbatch output database, schema version 3 (PRAGMA user_version = 3): applied after
-- 002_kills.sql to a new file, and alone to a version-2 file (migrated in place, under the
-- write lock; batch/schema.c embeds this text too).
--
-- item.doc_id: the document's id inside its source (batch/source.h: the archive entry name, the
-- JSON Lines id or line, the path inside a walked folder, the SQLite key), exported beside
-- item_key. item.meta: the fields [source].keep_fields carries from the record or row, a JSON
-- object (a field the record lacks is null). Both are written when the source yields the
-- document (every pass: a rerun with other keep_fields updates them without recomputing).
ALTER TABLE item ADD COLUMN doc_id TEXT;
ALTER TABLE item ADD COLUMN meta TEXT;
