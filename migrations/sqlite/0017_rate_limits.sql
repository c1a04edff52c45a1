-- Rate limits per organization, user and API key (`limits/`): what each
-- subject may do per minute and per hour, and the counters of the current
-- windows. An instance takes a slice of a window's allowance at a time
-- (`granted` counts every slice handed out), so every instance together
-- never admits more than the limit.
CREATE TABLE rate_limit_rules (
    org_id               TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    scope                TEXT NOT NULL CHECK (scope IN ('organization', 'user', 'api_key')),
    subject_id           TEXT NOT NULL,            -- the organization, user or key
    requests_per_minute  INTEGER,
    requests_per_hour    INTEGER,
    tasks_per_hour       INTEGER,
    concurrent_tasks     INTEGER,                      -- unfinished tasks at once
    updated_at           INTEGER NOT NULL,
    PRIMARY KEY (org_id, scope, subject_id)
);

CREATE TABLE rate_limit_windows (
    subject       TEXT NOT NULL,                   -- scope and subject, e.g. u:<org>:<user>
    kind          TEXT NOT NULL,                   -- requests_per_minute, ...
    window_start  INTEGER NOT NULL,                -- unix ms
    granted       INTEGER NOT NULL,
    PRIMARY KEY (subject, kind, window_start)
);
