-- Provider benchmarks (PostgreSQL). Same tables, columns and meaning as
-- migrations/sqlite/0021_benchmarks.sql.
--
-- A benchmark runs each of its prompts on each of its targets
-- (`integration/model`) a number of times. Its runs are the items of a
-- batch (`batch_id`), so each is an ordinary task pinned to its target:
-- queued, routed, budgeted, costed and audited as any task. Run `i` is
-- target `i % T`, prompt `(i / T) % P`, repetition `i / (T * P)`, where T
-- and P count the stored targets and prompts: the targets take turns.
-- Benchmarks are kept: listed, never overwritten.
CREATE TABLE benchmarks (
    id           TEXT PRIMARY KEY,
    org_id       TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    user_id      TEXT REFERENCES users(id) ON DELETE SET NULL,
    name         TEXT NOT NULL,
    suite        TEXT,                            -- built-in suite it ran, if any
    task_type    TEXT NOT NULL,
    prompts      TEXT NOT NULL,                   -- JSON array of strings
    targets      TEXT NOT NULL,                   -- JSON array of `integration/model`
    repetitions  BIGINT NOT NULL,
    batch_id     TEXT NOT NULL REFERENCES batches(id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL
);
CREATE INDEX benchmarks_org_time_idx ON benchmarks (org_id, created_at);

-- A person's rating (1–5) of one run's output; rating again replaces it.
CREATE TABLE benchmark_ratings (
    benchmark_id  TEXT NOT NULL REFERENCES benchmarks(id) ON DELETE CASCADE,
    run           BIGINT NOT NULL,               -- the run's index
    org_id        TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    user_id       TEXT NOT NULL,                  -- who rated (kept if the user goes)
    rating        BIGINT NOT NULL CHECK (rating BETWEEN 1 AND 5),
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (benchmark_id, run, user_id)
);

ALTER TABLE benchmarks ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON benchmarks TO vel_app
    USING (org_id = current_setting('app.org_id', true))
    WITH CHECK (org_id = current_setting('app.org_id', true));
CREATE POLICY platform_access ON benchmarks TO vel_platform USING (true) WITH CHECK (true);

ALTER TABLE benchmark_ratings ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON benchmark_ratings TO vel_app
    USING (org_id = current_setting('app.org_id', true))
    WITH CHECK (org_id = current_setting('app.org_id', true));
CREATE POLICY platform_access ON benchmark_ratings TO vel_platform USING (true) WITH CHECK (true);
