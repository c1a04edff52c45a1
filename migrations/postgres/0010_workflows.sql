-- Workflows (PostgreSQL). Same tables, columns and meaning as
-- migrations/sqlite/0007_workflows.sql.
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
    attempt           BIGINT NOT NULL DEFAULT 1, -- attempt of the current step
    steps_run         BIGINT NOT NULL DEFAULT 0, -- steps started, against max_steps
    state_version     BIGINT NOT NULL DEFAULT 0, -- latest workflow_states.version
    output            TEXT,                       -- JSON, once completed
    error             TEXT,                       -- JSON, once failed
    cost_nanos        BIGINT NOT NULL DEFAULT 0, -- spent by its tasks
    wake_at           BIGINT,                    -- unix ms when the engine looks again; NULL: waiting or finished
    wakes             BIGINT NOT NULL DEFAULT 0,
    lease_owner       TEXT,
    lease_expires_at  BIGINT,
    claims            BIGINT NOT NULL DEFAULT 0, -- claims since it last parked (>1: rescued)
    event_seq         BIGINT NOT NULL DEFAULT 0, -- last event number (serialises event writers)
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    finished_at       BIGINT
);
CREATE INDEX workflows_wake_idx ON workflows (wake_at) WHERE wake_at IS NOT NULL;
CREATE INDEX workflows_org_time_idx ON workflows (org_id, created_at);
CREATE INDEX workflows_user_status_idx ON workflows (user_id, status);

-- Every run of a step, in order: its task, output, branch and timing.
CREATE TABLE workflow_steps (
    id             TEXT PRIMARY KEY,
    org_id         TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    workflow_id    TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    seq            BIGINT NOT NULL,              -- 1-based order within the workflow
    step_id        TEXT NOT NULL,
    kind           TEXT NOT NULL,
    attempt        BIGINT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('running', 'waiting', 'completed', 'failed', 'cancelled')),
    task_id        TEXT REFERENCES tasks(id) ON DELETE SET NULL,
    state_version  BIGINT NOT NULL,              -- the state version it read
    output         TEXT,                          -- JSON
    branch         TEXT,                          -- the branch label a choice took
    next_step      TEXT,                          -- where the workflow went from here
    evaluations    TEXT,                          -- JSON: a choice's condition verdicts
    decision       TEXT,                          -- JSON: an approval's decision
    error          TEXT,                          -- JSON
    deadline       BIGINT,                       -- unix ms: an approval's timeout
    cost_nanos     BIGINT NOT NULL DEFAULT 0,
    started_at     BIGINT NOT NULL,
    finished_at    BIGINT,
    UNIQUE (workflow_id, seq)
);

-- What a workflow's watchers see, in order: steps started and ended,
-- branches taken, approvals awaited, status changes.
CREATE TABLE workflow_events (
    workflow_id  TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    seq          BIGINT NOT NULL,
    org_id       TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    kind         TEXT NOT NULL,
    data         TEXT NOT NULL,                   -- JSON
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (workflow_id, seq)
);

-- The workflow's state, one immutable version per finished step.
CREATE TABLE workflow_states (
    workflow_id  TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    version      BIGINT NOT NULL,
    org_id       TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    step_seq     BIGINT,                         -- the step run that wrote it; NULL for the input
    state        TEXT NOT NULL,                   -- JSON
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (workflow_id, version)
);

ALTER TABLE tasks ADD COLUMN workflow_id TEXT REFERENCES workflows(id) ON DELETE SET NULL;

ALTER TABLE workflows ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON workflows TO vel_app
    USING (org_id = current_setting('app.org_id', true))
    WITH CHECK (org_id = current_setting('app.org_id', true));
CREATE POLICY platform_access ON workflows TO vel_platform USING (true) WITH CHECK (true);

ALTER TABLE workflow_steps ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON workflow_steps TO vel_app
    USING (org_id = current_setting('app.org_id', true))
    WITH CHECK (org_id = current_setting('app.org_id', true));
CREATE POLICY platform_access ON workflow_steps TO vel_platform USING (true) WITH CHECK (true);

ALTER TABLE workflow_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON workflow_events TO vel_app
    USING (org_id = current_setting('app.org_id', true))
    WITH CHECK (org_id = current_setting('app.org_id', true));
CREATE POLICY platform_access ON workflow_events TO vel_platform USING (true) WITH CHECK (true);

ALTER TABLE workflow_states ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON workflow_states TO vel_app
    USING (org_id = current_setting('app.org_id', true))
    WITH CHECK (org_id = current_setting('app.org_id', true));
CREATE POLICY platform_access ON workflow_states TO vel_platform USING (true) WITH CHECK (true);

-- A workflow due now wakes the other instances' workflow workers, in the
-- statement that made it due (see 0004_task_signals.sql).
CREATE FUNCTION vel_notify_workflow_due() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('vel_workflow_queue', coalesce(current_setting('app.origin', true), '') || ' ');
    RETURN NULL;
END
$$;

CREATE TRIGGER workflows_notify_due
    AFTER INSERT OR UPDATE OF wake_at ON workflows
    FOR EACH ROW WHEN (NEW.wake_at IS NOT NULL AND NEW.lease_owner IS NULL)
    EXECUTE FUNCTION vel_notify_workflow_due();

-- A workflow event wakes its watchers on every instance, on the channel
-- task events use (ids are unique across both).
CREATE FUNCTION vel_notify_workflow_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('vel_task_events',
                      coalesce(current_setting('app.origin', true), '') || ' ' || NEW.workflow_id);
    RETURN NULL;
END
$$;

CREATE TRIGGER workflow_events_notify
    AFTER INSERT ON workflow_events
    FOR EACH ROW EXECUTE FUNCTION vel_notify_workflow_event();
