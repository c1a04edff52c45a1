-- Usage analytics: append-only rows of counters and a latency sketch per
-- organization, bucket, provider, model, agent and source. Writers never
-- update a row; readers merge the rows of one bucket.
CREATE TABLE usage_buckets (
    org_id         TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    resolution     TEXT NOT NULL CHECK (resolution IN ('minute')),
    bucket_start   INTEGER NOT NULL,             -- unix ms
    provider       TEXT NOT NULL,                -- '' when no provider answered
    model          TEXT NOT NULL,
    agent_id       TEXT NOT NULL,                -- '' when none
    source         TEXT NOT NULL,
    requests       INTEGER NOT NULL,
    completed      INTEGER NOT NULL,
    failed         INTEGER NOT NULL,
    cancelled      INTEGER NOT NULL,
    fallbacks      INTEGER NOT NULL,
    cache_hits     INTEGER NOT NULL,
    input_tokens   INTEGER NOT NULL,
    output_tokens  INTEGER NOT NULL,
    cost_nanos     INTEGER NOT NULL,
    latency        BLOB NOT NULL,                -- DDSketch of microseconds
    created_at     INTEGER NOT NULL
);
CREATE INDEX usage_buckets_org_time_idx ON usage_buckets (org_id, resolution, bucket_start);
