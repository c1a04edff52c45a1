-- Batches (SQLite). Same tables, columns and meaning as
-- migrations/postgres/0021_batches.sql.
--
-- A batch is up to thousands of task definitions run at most `parallelism`
-- at a time. Each definition is stored, checked and prepared, as an item;
-- an item becomes an ordinary task (its id chosen when the batch is
-- created, `tasks.batch_id` linking it) when it is released: the first
-- `parallelism` items when the batch is created, then one more in the
-- transaction that ends each of its tasks. `released` is that cursor, in
-- item order; the outcome counters are kept in the same transactions, so
-- the batch's progress is exact and read without counting its tasks.
CREATE TABLE batches (
    id               TEXT PRIMARY KEY,
    org_id           TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    user_id          TEXT REFERENCES users(id) ON DELETE SET NULL,
    api_key_id       TEXT,                       -- the API key it was submitted with; its tasks carry it
    description      TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('running', 'completed', 'cancelled')),
    parallelism      INTEGER NOT NULL,           -- tasks running at once, at most
    total            INTEGER NOT NULL,           -- items
    released         INTEGER NOT NULL,           -- items turned into tasks, in order
    completed        INTEGER NOT NULL DEFAULT 0, -- tasks ended completed
    failed           INTEGER NOT NULL DEFAULT 0, -- tasks ended failed
    cancelled        INTEGER NOT NULL DEFAULT 0, -- tasks ended cancelled
    idempotency_key  TEXT,
    request_hash     TEXT NOT NULL,              -- sha256 of the items, for idempotent replays
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    finished_at      INTEGER
);
CREATE INDEX batches_org_time_idx ON batches (org_id, created_at);
CREATE INDEX batches_user_status_idx ON batches (user_id, status);
CREATE UNIQUE INDEX batches_idempotency_idx ON batches (org_id, user_id, idempotency_key);

-- A batch's task definitions, prepared as a task is when submitted.
CREATE TABLE batch_items (
    batch_id      TEXT NOT NULL REFERENCES batches(id) ON DELETE CASCADE,
    idx           INTEGER NOT NULL,              -- 0-based position in the upload
    org_id        TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    task_id       TEXT NOT NULL,                 -- the task it becomes when released
    custom_id     TEXT,                          -- the caller's own id for it
    description   TEXT NOT NULL,
    task_type     TEXT NOT NULL,
    priority      INTEGER NOT NULL,
    agent_id      TEXT,
    request       TEXT NOT NULL,                 -- JSON: the canonical request
    request_hash  TEXT NOT NULL,
    stream        INTEGER NOT NULL,
    use_cache     INTEGER NOT NULL,
    PRIMARY KEY (batch_id, idx)
);

ALTER TABLE tasks ADD COLUMN batch_id TEXT REFERENCES batches(id) ON DELETE SET NULL;
CREATE INDEX tasks_batch_idx ON tasks (batch_id) WHERE batch_id IS NOT NULL;
