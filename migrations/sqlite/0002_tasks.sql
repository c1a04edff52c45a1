-- Tasks (SQLite). Same tables, columns and meaning as
-- migrations/postgres/0002_tasks.sql.

-- A task is also its own queue entry: `pending` rows wait, a worker claims
-- one by setting `lease_owner` / `lease_expires_at` and extends the lease
-- while it runs; a task whose lease ran out is claimed again (rescued).
CREATE TABLE tasks (
    id                TEXT PRIMARY KEY,
    org_id            TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    user_id           TEXT REFERENCES users(id) ON DELETE SET NULL,
    agent_id          TEXT REFERENCES agents(id) ON DELETE SET NULL,
    source            TEXT NOT NULL CHECK (source IN ('api', 'gateway')),
    description       TEXT NOT NULL,
    task_type         TEXT NOT NULL,
    priority          INTEGER NOT NULL,           -- 0 low, 1 medium, 2 high
    status            TEXT NOT NULL CHECK (status IN ('pending', 'in_progress', 'completed', 'failed', 'cancelled')),
    request           TEXT NOT NULL,              -- JSON: messages and parameters as submitted
    stream            INTEGER NOT NULL,           -- 1: deltas are published as events
    use_cache         INTEGER NOT NULL,           -- 0: never served from the response cache
    idempotency_key   TEXT,
    request_hash      TEXT NOT NULL,              -- sha256 of the canonical request
    result            TEXT,                       -- JSON
    partial_output    TEXT,
    error             TEXT,                       -- JSON
    cached            INTEGER NOT NULL DEFAULT 0, -- 1: the result came from the response cache
    provider          TEXT,                       -- integration that answered
    model             TEXT,
    input_tokens      INTEGER NOT NULL DEFAULT 0,
    output_tokens     INTEGER NOT NULL DEFAULT 0,
    cost_usd          REAL NOT NULL DEFAULT 0,
    lease_owner       TEXT,
    lease_expires_at  INTEGER,
    claims            INTEGER NOT NULL DEFAULT 0, -- times a worker claimed it (>1: rescued)
    event_seq         INTEGER NOT NULL DEFAULT 0, -- last event number (serialises event writers)
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    started_at        INTEGER,
    finished_at       INTEGER
);
CREATE UNIQUE INDEX tasks_idempotency_idx ON tasks (org_id, user_id, idempotency_key);
CREATE INDEX tasks_queue_idx ON tasks (status, priority DESC, created_at);
CREATE INDEX tasks_org_time_idx ON tasks (org_id, created_at);
CREATE INDEX tasks_user_status_idx ON tasks (user_id, status);

-- Every provider call a task made.
CREATE TABLE task_attempts (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    task_id         TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL,
    provider        TEXT NOT NULL,                -- integration name
    integration_id  TEXT,
    plugin          TEXT NOT NULL,
    model           TEXT NOT NULL,
    outcome         TEXT NOT NULL CHECK (outcome IN ('ok', 'error', 'cancelled', 'skipped')),
    error_kind      TEXT,
    error_message   TEXT,
    latency_ms      INTEGER NOT NULL,
    input_tokens    INTEGER NOT NULL,
    output_tokens   INTEGER NOT NULL,
    cost_usd        REAL NOT NULL,
    started_at      INTEGER NOT NULL,
    UNIQUE (task_id, seq)
);
CREATE INDEX task_attempts_org_idx ON task_attempts (org_id, started_at);

-- What a task's watchers see, in order: status changes, attempts, deltas.
CREATE TABLE task_events (
    task_id     TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    org_id      TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,
    data        TEXT NOT NULL,                    -- JSON
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (task_id, seq)
);

-- Completed answers, reused for identical requests until they expire.
CREATE TABLE response_cache (
    org_id      TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    key         TEXT NOT NULL,                    -- request_hash
    response    TEXT NOT NULL,                    -- JSON
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (org_id, key)
);

ALTER TABLE agents ADD COLUMN last_test_at INTEGER;
ALTER TABLE agents ADD COLUMN last_test_result TEXT;   -- JSON
ALTER TABLE organizations ADD COLUMN routing_policy TEXT;  -- router plugin name
