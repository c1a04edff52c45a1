-- Usage analytics: append-only rows of counters and a latency sketch per
-- organization, bucket, provider, model, agent and source. Writers never
-- update a row; readers merge the rows of one bucket. Minute rows are rolled
-- up into hour rows and hour rows into day rows (`jobs` keeps how far).
CREATE TABLE usage_buckets (
    org_id         TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    resolution     TEXT NOT NULL CHECK (resolution IN ('minute', 'hour', 'day')),
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

-- Background jobs that run once across all instances keep their progress
-- here: a period is done once the job's watermark has passed it, and the
-- transaction that does a period moves the watermark only from the value it
-- read, so no period is done twice.
CREATE TABLE jobs (
    name        TEXT PRIMARY KEY,
    watermark   INTEGER NOT NULL DEFAULT 0,   -- unix ms: done before this
    updated_at  INTEGER NOT NULL DEFAULT 0
);
INSERT INTO jobs (name) VALUES ('usage_hours'), ('usage_days');
