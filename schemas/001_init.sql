-- fmbatch output database, schema version 1 (PRAGMA user_version = 1).
-- One file holds one job: its queue (item) and its results (result). The sink applies this
-- text (embedded in the binary, batch/schema.c; tests/test_batch_job.c checks they match).
-- Times are unix seconds (REAL). Connections use WAL, busy_timeout and BEGIN IMMEDIATE.

-- Job identity: job_name, fingerprint (the settings that decide results, "key = value" lines),
-- fingerprint_hash, model, model_hash, tokenizer_hash, fmbatch_version, created_at.
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- The queue: one row per document the source yielded.
--   pending  waiting (new, released on SIGINT/SIGTERM, or put back by `retry --failed`)
--   running  leased by the worker (lease_host, lease_pid, lease_start) until lease_expires;
--            reclaimed at once when that process is gone (same host), else after expiry
--   done     result rows written in the same transaction
--   failed   the document failed (error says why); not retried unless its content changes
--   dead     a worker died on it max_attempts times
CREATE TABLE IF NOT EXISTS item (
    item_id       INTEGER PRIMARY KEY,
    job           TEXT NOT NULL,
    key           TEXT NOT NULL,            -- stable item key (source.h)
    content_hash  TEXT,                     -- 128-bit hash of the document bytes (hex)
    bytes         INTEGER,
    status        TEXT NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'running', 'done', 'failed', 'dead')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    lease_host    TEXT,
    lease_pid     INTEGER,
    lease_start   INTEGER,                  -- owner start time (ticks since boot, /proc)
    lease_token   INTEGER,                  -- fences a late completion after a lost lease
    lease_expires REAL,
    worker        TEXT,                     -- host:pid of the worker that took it last
    error         TEXT,
    tokens        INTEGER,                  -- document tokens processed
    seconds       REAL,                     -- wall time of the item
    enqueued_at   REAL NOT NULL,
    started_at    REAL,
    finished_at   REAL,
    UNIQUE (job, key)
) STRICT;
CREATE INDEX IF NOT EXISTS item_status ON item (job, status);

-- Results: one row per (job, item, task), written with the item's move to done.
CREATE TABLE IF NOT EXISTS result (
    job             TEXT NOT NULL,
    item_key        TEXT NOT NULL,
    task            TEXT NOT NULL,
    item_id         INTEGER NOT NULL REFERENCES item (item_id) ON DELETE CASCADE,
    kind            TEXT NOT NULL,          -- score | choice | generate
    status          TEXT NOT NULL CHECK (status IN ('ok', 'skipped')),
    note            TEXT,                   -- why skipped, or that the document was truncated
    doc_tokens      INTEGER,                -- document tokens used (after truncation)
    truncated       INTEGER NOT NULL DEFAULT 0,
    prompt_tokens   INTEGER,                -- generate: tokens after the document's state
    -- score: EOS is the context of the first token, so every token and byte is scored
    tokens          INTEGER,
    sum_nll         REAL,
    mean_nll        REAL,
    ppl             REAL,
    bits_per_byte   REAL,
    token_nll       BLOB,                   -- per_token: float32 LE [tokens]
    token_rank      BLOB,                   -- int32 LE [tokens], 0 = the model's top choice
    token_offset    BLOB,                   -- uint32 LE [tokens], byte offset of each token
    token_topk_ids  BLOB,                   -- int32 LE [tokens, top_k_tokens]
    token_topk_logprobs BLOB,               -- float32 LE [tokens, top_k_tokens]
    -- choice
    choices         TEXT,                   -- JSON [{"text","tokens","total","mean"}]
    best            TEXT,
    best_index      INTEGER,
    -- generate
    text            TEXT,
    ids             TEXT,                   -- JSON array of generated ids
    logprobs        TEXT,                   -- JSON array, one per generated id
    finish_reason   TEXT,                   -- length | eos | stop
    extract         TEXT,                   -- JSON {"ok": bool, "<group>": "..." | null}
    -- provenance
    seed            INTEGER,                -- the item's sampling seed (generate)
    sampling        TEXT,                   -- JSON of the sampling settings
    model           TEXT,
    model_hash      TEXT,
    tokenizer_hash  TEXT,
    fmbatch_version TEXT,
    prefill_seconds REAL,                   -- the document's shared prefill
    task_seconds    REAL,
    finished_at     REAL,
    PRIMARY KEY (job, item_key, task)
) STRICT;
CREATE INDEX IF NOT EXISTS result_item ON result (item_id);
