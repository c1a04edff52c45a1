-- Spend limits. A budget caps what an organization, or one of its agents,
-- API keys or users, spends per day or per month (UTC). Spend is counted
-- per period in `budget_periods`; an instance that enforces a hard budget
-- holds a lease of it in `budget_leases` (the part of the remaining room it
-- may hand out to its own requests without asking the database), so the
-- database's check `spent + every live lease <= limit` bounds the spend
-- across instances.
CREATE TABLE budgets (
    id           TEXT PRIMARY KEY,
    org_id       TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    scope        TEXT NOT NULL CHECK (scope IN ('organization', 'agent', 'api_key', 'user')),
    subject_id   TEXT NOT NULL,                -- the organization, agent, key or user
    period       TEXT NOT NULL CHECK (period IN ('day', 'month')),
    limit_nanos  BIGINT NOT NULL CHECK (limit_nanos > 0),
    hard         BIGINT NOT NULL,             -- 1: calls that would pass it are refused
    alert_at     TEXT NOT NULL,                -- JSON array of fractions of the limit, ascending
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    UNIQUE (org_id, scope, subject_id, period)
);

CREATE TABLE budget_periods (
    budget_id     TEXT NOT NULL REFERENCES budgets(id) ON DELETE CASCADE,
    org_id        TEXT NOT NULL,
    period_start  BIGINT NOT NULL,            -- unix ms, UTC
    spent_nanos   BIGINT NOT NULL DEFAULT 0,
    alerted       BIGINT NOT NULL DEFAULT 0,  -- how many of alert_at have alerted
    PRIMARY KEY (budget_id, period_start)
);

CREATE TABLE budget_leases (
    budget_id     TEXT NOT NULL REFERENCES budgets(id) ON DELETE CASCADE,
    org_id        TEXT NOT NULL,
    period_start  BIGINT NOT NULL,
    holder        TEXT NOT NULL,               -- the instance
    amount_nanos  BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,            -- unix ms; a dead instance's lease lapses
    PRIMARY KEY (budget_id, period_start, holder)
);

-- What needs someone's attention: budget thresholds passed, anomalies in
-- an organization's traffic (`analytics/anomaly.rs`).
CREATE TABLE alerts (
    id               TEXT PRIMARY KEY,
    org_id           TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    kind             TEXT NOT NULL,            -- budget_threshold, ...
    subject          TEXT NOT NULL,            -- what it is about (a budget id, ...)
    message          TEXT NOT NULL,
    details          TEXT NOT NULL,            -- JSON object
    created_at       BIGINT NOT NULL,
    acknowledged_at  BIGINT,
    acknowledged_by  TEXT
);
CREATE INDEX alerts_org_time_idx ON alerts (org_id, created_at);
CREATE INDEX alerts_subject_idx ON alerts (org_id, kind, subject, created_at);

-- The anomaly check looks at each minute once, across all instances.
INSERT INTO jobs (name) VALUES ('anomaly_minutes');

ALTER TABLE budgets ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON budgets TO vel_app
    USING (org_id = current_setting('app.org_id', true))
    WITH CHECK (org_id = current_setting('app.org_id', true));
CREATE POLICY platform_access ON budgets TO vel_platform USING (true) WITH CHECK (true);

ALTER TABLE budget_periods ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON budget_periods TO vel_app
    USING (org_id = current_setting('app.org_id', true))
    WITH CHECK (org_id = current_setting('app.org_id', true));
CREATE POLICY platform_access ON budget_periods TO vel_platform USING (true) WITH CHECK (true);

ALTER TABLE budget_leases ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON budget_leases TO vel_app
    USING (org_id = current_setting('app.org_id', true))
    WITH CHECK (org_id = current_setting('app.org_id', true));
CREATE POLICY platform_access ON budget_leases TO vel_platform USING (true) WITH CHECK (true);

ALTER TABLE alerts ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON alerts TO vel_app
    USING (org_id = current_setting('app.org_id', true))
    WITH CHECK (org_id = current_setting('app.org_id', true));
CREATE POLICY platform_access ON alerts TO vel_platform USING (true) WITH CHECK (true);
