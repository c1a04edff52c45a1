-- Usage analytics: append-only rows of counters and a latency sketch per
-- organization, bucket, provider, model, agent and source. Writers never
-- update a row; readers merge the rows of one bucket.
CREATE TABLE usage_buckets (
    org_id         TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    resolution     TEXT NOT NULL CHECK (resolution IN ('minute')),
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
