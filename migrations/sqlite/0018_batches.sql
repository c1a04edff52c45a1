-- Batches (SQLite). Same tables, columns and meaning as
-- migrations/postgres/0021_batches.sql.
--
-- A batch is up to thousands of task definitions run at most `parallelism`
-- at a time. Each definition is stored, checked and prepared, as an item;
-- an item becomes an ordinary task (its id chosen when the batch is
-- created, `tasks.batch_id` linking it) when it is released. The items are
-- dealt into `lanes` (min(parallelism, total)) chains: item i is released
-- by the end of item i - parallelism, in the transaction that ends it
-- (`tasks.batch_next` names the item a task's end releases), so no
-- counter is shared by the lanes and each lane runs one task at a time.
-- A lane's last task counts the lane done on the batch row; the last lane
-- done completes the batch. Progress is counted from the tasks.
CREATE TABLE batches (
    id               TEXT PRIMARY KEY,
    org_id           TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    user_id          TEXT REFERENCES users(id) ON DELETE SET NULL,
    api_key_id       TEXT,                       -- the API key it was submitted with; its tasks carry it
    description      TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('running', 'completed', 'cancelled')),
    parallelism      INTEGER NOT NULL,           -- tasks running at once, at most
    total            INTEGER NOT NULL,           -- items
    lanes            INTEGER NOT NULL,              -- min(parallelism, total)
    lanes_done       INTEGER NOT NULL DEFAULT 0,   -- lanes whose last task ended
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
    next_idx      INTEGER,                        -- the item its task's end releases; NULL: last of its lane
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
ALTER TABLE tasks ADD COLUMN batch_next INTEGER;      -- batch_items.next_idx of its item
CREATE INDEX tasks_batch_idx ON tasks (batch_id) WHERE batch_id IS NOT NULL;
