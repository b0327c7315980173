-- fmbatch output database, schema version 2 (PRAGMA user_version = 2): applied after
-- 001_init.sql to a new file, and alone to a version-1 file (an existing output opens and is
-- migrated in place, under the write lock; batch/schema.c embeds this text too).
--
-- item.kills: how many times the item's worker was killed from outside (SIGKILL, the OOM
-- killer, a power loss) while it was processing the item. Such a death does not count as an
-- attempt (attempts counts the deaths the item may have caused: a crash signal the worker
-- raised itself); kills is bounded separately (queue.h), so that an item that, say, exhausts
-- memory every time cannot be retried forever.
ALTER TABLE item ADD COLUMN kills INTEGER NOT NULL DEFAULT 0;
