-- Rate limits per organization, user and API key (`limits/`): what each
-- subject may do per minute and per hour, and the counters of the current
-- windows. An instance takes a slice of a window's allowance at a time
-- (`granted` counts every slice handed out), so every instance together
-- never admits more than the limit.
CREATE TABLE rate_limit_rules (
    org_id               TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    scope                TEXT NOT NULL CHECK (scope IN ('organization', 'user', 'api_key')),
    subject_id           TEXT NOT NULL,            -- the organization, user or key
    requests_per_minute  BIGINT,
    requests_per_hour    BIGINT,
    tasks_per_hour       BIGINT,
    concurrent_tasks     BIGINT,                      -- unfinished tasks at once
    updated_at           BIGINT NOT NULL,
    PRIMARY KEY (org_id, scope, subject_id)
);

-- Counters are platform bookkeeping, written by the platform pool.
CREATE TABLE rate_limit_windows (
    subject       TEXT NOT NULL,                   -- scope and subject, e.g. u:<org>:<user>
    kind          TEXT NOT NULL,                   -- requests_per_minute, ...
    window_start  BIGINT NOT NULL,                 -- unix ms
    granted       BIGINT NOT NULL,
    PRIMARY KEY (subject, kind, window_start)
);

ALTER TABLE rate_limit_rules ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON rate_limit_rules TO vel_app
    USING (org_id = current_setting('app.org_id', true))
    WITH CHECK (org_id = current_setting('app.org_id', true));
CREATE POLICY platform_access ON rate_limit_rules TO vel_platform USING (true) WITH CHECK (true);

ALTER TABLE rate_limit_windows ENABLE ROW LEVEL SECURITY;
CREATE POLICY platform_access ON rate_limit_windows TO vel_platform USING (true) WITH CHECK (true);
