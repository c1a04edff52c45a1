-- Workflows (SQLite). Same tables, columns and meaning as
-- migrations/postgres/0010_workflows.sql.
--
-- A workflow is a durable state machine driven by the queue: a row whose
-- `wake_at` has come is claimed under a lease like a task, advanced as far
-- as it can go (a step's task started, a condition evaluated, an approval
-- awaited) and parked again with `wake_at` NULL (waiting for its task or a
-- decision) or a time (a retry's back-off, an approval's deadline). A step's
-- task is an ordinary task linked by `tasks.workflow_id`; when it ends, the
-- workflow's `wake_at` is set in the same transaction, and `wakes` counts
-- those wake-ups so that parking never loses one.
CREATE TABLE workflows (
    id                TEXT PRIMARY KEY,
    org_id            TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    user_id           TEXT REFERENCES users(id) ON DELETE SET NULL,
    name              TEXT NOT NULL,
    definition        TEXT NOT NULL,              -- JSON, checked when created
    input             TEXT NOT NULL,              -- JSON
    status            TEXT NOT NULL CHECK (status IN ('running', 'awaiting_approval', 'completed', 'failed', 'cancelled')),
    current_step      TEXT,                       -- the step to run or running
    current_run       TEXT,                       -- its run (workflow_steps.id) once started
    attempt           INTEGER NOT NULL DEFAULT 1, -- attempt of the current step
    steps_run         INTEGER NOT NULL DEFAULT 0, -- steps started, against max_steps
    state_version     INTEGER NOT NULL DEFAULT 0, -- latest workflow_states.version
    output            TEXT,                       -- JSON, once completed
    error             TEXT,                       -- JSON, once failed
    cost_nanos        INTEGER NOT NULL DEFAULT 0, -- spent by its tasks
    wake_at           INTEGER,                    -- unix ms when the engine looks again; NULL: waiting or finished
    wakes             INTEGER NOT NULL DEFAULT 0,
    lease_owner       TEXT,
    lease_expires_at  INTEGER,
    claims            INTEGER NOT NULL DEFAULT 0, -- claims since it last parked (>1: rescued)
    event_seq         INTEGER NOT NULL DEFAULT 0, -- last event number (serialises event writers)
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    finished_at       INTEGER
);
CREATE INDEX workflows_wake_idx ON workflows (wake_at) WHERE wake_at IS NOT NULL;
CREATE INDEX workflows_org_time_idx ON workflows (org_id, created_at);
CREATE INDEX workflows_user_status_idx ON workflows (user_id, status);

-- Every run of a step, in order: its task, output, branch and timing.
CREATE TABLE workflow_steps (
    id             TEXT PRIMARY KEY,
    org_id         TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    workflow_id    TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    seq            INTEGER NOT NULL,              -- 1-based order within the workflow
    step_id        TEXT NOT NULL,
    kind           TEXT NOT NULL,
    attempt        INTEGER NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('running', 'waiting', 'completed', 'failed', 'cancelled')),
    task_id        TEXT REFERENCES tasks(id) ON DELETE SET NULL,
    state_version  INTEGER NOT NULL,              -- the state version it read
    output         TEXT,                          -- JSON
    branch         TEXT,                          -- the branch label a choice took
    next_step      TEXT,                          -- where the workflow went from here
    evaluations    TEXT,                          -- JSON: a choice's condition verdicts
    decision       TEXT,                          -- JSON: an approval's decision
    error          TEXT,                          -- JSON
    deadline       INTEGER,                       -- unix ms: an approval's timeout
    cost_nanos     INTEGER NOT NULL DEFAULT 0,
    started_at     INTEGER NOT NULL,
    finished_at    INTEGER,
    UNIQUE (workflow_id, seq)
);

-- What a workflow's watchers see, in order: steps started and ended,
-- branches taken, approvals awaited, status changes.
CREATE TABLE workflow_events (
    workflow_id  TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    seq          INTEGER NOT NULL,
    org_id       TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    kind         TEXT NOT NULL,
    data         TEXT NOT NULL,                   -- JSON
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (workflow_id, seq)
);

-- The workflow's state, one immutable version per finished step.
CREATE TABLE workflow_states (
    workflow_id  TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    version      INTEGER NOT NULL,
    org_id       TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    step_seq     INTEGER,                         -- the step run that wrote it; NULL for the input
    state        TEXT NOT NULL,                   -- JSON
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (workflow_id, version)
);

ALTER TABLE tasks ADD COLUMN workflow_id TEXT REFERENCES workflows(id) ON DELETE SET NULL;
