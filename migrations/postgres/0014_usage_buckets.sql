-- Usage analytics: append-only rows of counters and a latency sketch per
-- organization, bucket, provider, model, agent and source. Writers never
-- update a row; readers merge the rows of one bucket. Minute rows are rolled
-- up into hour rows and hour rows into day rows (`jobs` keeps how far).
CREATE TABLE usage_buckets (
    org_id         TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    resolution     TEXT NOT NULL CHECK (resolution IN ('minute', 'hour', 'day')),
    bucket_start   BIGINT NOT NULL,              -- unix ms
    provider       TEXT NOT NULL,                -- '' when no provider answered
    model          TEXT NOT NULL,
    agent_id       TEXT NOT NULL,                -- '' when none
    source         TEXT NOT NULL,
    requests       BIGINT NOT NULL,
    completed      BIGINT NOT NULL,
    failed         BIGINT NOT NULL,
    cancelled      BIGINT NOT NULL,
    fallbacks      BIGINT NOT NULL,
    cache_hits     BIGINT NOT NULL,
    input_tokens   BIGINT NOT NULL,
    output_tokens  BIGINT NOT NULL,
    cost_nanos     BIGINT NOT NULL,
    latency        BYTEA NOT NULL,               -- DDSketch of microseconds
    created_at     BIGINT NOT NULL
);
CREATE INDEX usage_buckets_org_time_idx ON usage_buckets (org_id, resolution, bucket_start);

ALTER TABLE usage_buckets ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage_buckets TO vel_app
    USING (org_id = current_setting('app.org_id', true))
    WITH CHECK (org_id = current_setting('app.org_id', true));
CREATE POLICY platform_access ON usage_buckets TO vel_platform USING (true) WITH CHECK (true);

-- Background jobs that run once across all instances keep their progress
-- here: a period is done once the job's watermark has passed it, and the
-- transaction that does a period moves the watermark only from the value it
-- read, so no period is done twice.
CREATE TABLE jobs (
    name        TEXT PRIMARY KEY,
    watermark   BIGINT NOT NULL DEFAULT 0,   -- unix ms: done before this
    updated_at  BIGINT NOT NULL DEFAULT 0
);
INSERT INTO jobs (name) VALUES ('usage_hours'), ('usage_days');

ALTER TABLE jobs ENABLE ROW LEVEL SECURITY;
-- Tenants' readers see how far the roll-ups went (no tenant data here).
CREATE POLICY read_progress ON jobs FOR SELECT TO vel_app USING (true);
CREATE POLICY platform_access ON jobs TO vel_platform USING (true) WITH CHECK (true);
