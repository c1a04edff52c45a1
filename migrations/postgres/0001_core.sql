-- vel core schema (PostgreSQL). Same tables, columns and meaning as
-- migrations/sqlite/0001_core.sql: ids are text UUIDs, timestamps are
-- integer unix milliseconds, JSON documents are text. Every tenant-owned
-- table carries org_id; the application scopes every query by it.

CREATE TABLE organizations (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE,          -- stored lower-cased
    name           TEXT,
    password_hash  TEXT NOT NULL,                 -- argon2id PHC string
    platform_role  TEXT CHECK (platform_role IN ('admin')),
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);

CREATE TABLE memberships (
    org_id      TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('org_admin', 'agent_manager', 'task_executor', 'viewer')),
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX memberships_user_idx ON memberships (user_id);

CREATE TABLE agents (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    created_by      TEXT REFERENCES users(id) ON DELETE SET NULL,
    name            TEXT NOT NULL,
    agent_type      TEXT NOT NULL CHECK (agent_type IN ('mcp_orchestrator', 'code_generator', 'researcher')),
    status          TEXT NOT NULL CHECK (status IN ('pending', 'active', 'inactive', 'error')),
    config          TEXT NOT NULL,                -- JSON
    config_version  BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    deleted_at      BIGINT                       -- soft delete
);
CREATE INDEX agents_org_idx ON agents (org_id, created_at);
CREATE INDEX agents_org_type_idx ON agents (org_id, agent_type);
CREATE INDEX agents_org_status_idx ON agents (org_id, status);

CREATE TABLE agent_config_history (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    agent_id    TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    version     BIGINT NOT NULL,
    config      TEXT NOT NULL,                    -- JSON, the config as of this version
    changed_by  TEXT REFERENCES users(id) ON DELETE SET NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (agent_id, version)
);
CREATE INDEX agent_config_history_org_idx ON agent_config_history (org_id, agent_id);

CREATE TABLE integrations (
    id               TEXT PRIMARY KEY,
    org_id           TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    provider         TEXT NOT NULL,
    plugin           TEXT NOT NULL,               -- provider plugin that talks to it
    base_url         TEXT,
    default_model    TEXT,
    timeout_ms       BIGINT NOT NULL,
    key_ciphertext   TEXT,                        -- AES-256-GCM, bound to the row id
    key_fingerprint  TEXT,
    status           TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    last_test_at     BIGINT,
    last_test_result TEXT,                        -- JSON
    created_by       TEXT REFERENCES users(id) ON DELETE SET NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE audit_logs (
    id          TEXT PRIMARY KEY,
    org_id      TEXT REFERENCES organizations(id) ON DELETE CASCADE,  -- NULL: platform event
    user_id     TEXT REFERENCES users(id) ON DELETE SET NULL,
    action      TEXT NOT NULL,
    payload     TEXT NOT NULL,                    -- JSON, secrets redacted
    ip_address  TEXT,
    user_agent  TEXT,
    created_at  BIGINT NOT NULL
);
CREATE INDEX audit_logs_org_time_idx ON audit_logs (org_id, created_at);
CREATE INDEX audit_logs_org_action_idx ON audit_logs (org_id, action, created_at);
CREATE INDEX audit_logs_org_user_idx ON audit_logs (org_id, user_id, created_at);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'org_admin', 'agent_manager', 'task_executor', 'viewer')),
    key_hash      TEXT NOT NULL UNIQUE,           -- sha256 of the full key
    prefix        TEXT NOT NULL,                  -- first characters, for recognition
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT,
    revoked_at    BIGINT
);
CREATE INDEX api_keys_org_idx ON api_keys (org_id, created_at);

-- Logged-out access tokens, shared by every instance until they expire.
CREATE TABLE revoked_tokens (
    jti         TEXT PRIMARY KEY,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX revoked_tokens_expiry_idx ON revoked_tokens (expires_at);

-- Recent attempts (login per IP and per email), shared by every instance:
-- a sliding window is the count of rows newer than a minute.
CREATE TABLE rate_limit_hits (
    bucket  TEXT NOT NULL,
    at      BIGINT NOT NULL
);
CREATE INDEX rate_limit_hits_bucket_idx ON rate_limit_hits (bucket, at);

-- Row-level security ---------------------------------------------------------
-- The server connects as whatever DATABASE_URL says (often a superuser, which
-- bypasses RLS) and switches every pooled connection to the NOLOGIN role
-- vel_app (`SET ROLE vel_app` in after_connect), which does not own the
-- tables, so these policies apply to it. Each request sets
-- `app.org_id` for its transaction; platform operations that legitimately
-- cross tenants (login lookups, API-key lookup, platform-admin endpoints)
-- set `app.rls_bypass = 'on'` instead, explicitly.

-- Roles are cluster-wide while this migration runs per database, possibly
-- concurrently (parallel test databases): tolerate both ways a concurrent
-- CREATE ROLE can lose the race.
DO $$
BEGIN
    CREATE ROLE vel_app NOLOGIN;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

DO $$
BEGIN
    EXECUTE format('GRANT vel_app TO %I', current_user);
EXCEPTION
    WHEN duplicate_object OR unique_violation OR invalid_grant_operation THEN NULL;
END
$$;

GRANT USAGE ON SCHEMA public TO vel_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO vel_app;
-- Tables added by later migrations get the same grants.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO vel_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO vel_app;

ALTER TABLE organizations ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON organizations
    USING (id = current_setting('app.org_id', true) OR current_setting('app.rls_bypass', true) = 'on')
    WITH CHECK (id = current_setting('app.org_id', true) OR current_setting('app.rls_bypass', true) = 'on');

ALTER TABLE memberships ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON memberships
    USING (org_id = current_setting('app.org_id', true) OR current_setting('app.rls_bypass', true) = 'on')
    WITH CHECK (org_id = current_setting('app.org_id', true) OR current_setting('app.rls_bypass', true) = 'on');

ALTER TABLE agents ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON agents
    USING (org_id = current_setting('app.org_id', true) OR current_setting('app.rls_bypass', true) = 'on')
    WITH CHECK (org_id = current_setting('app.org_id', true) OR current_setting('app.rls_bypass', true) = 'on');

ALTER TABLE agent_config_history ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON agent_config_history
    USING (org_id = current_setting('app.org_id', true) OR current_setting('app.rls_bypass', true) = 'on')
    WITH CHECK (org_id = current_setting('app.org_id', true) OR current_setting('app.rls_bypass', true) = 'on');

ALTER TABLE integrations ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON integrations
    USING (org_id = current_setting('app.org_id', true) OR current_setting('app.rls_bypass', true) = 'on')
    WITH CHECK (org_id = current_setting('app.org_id', true) OR current_setting('app.rls_bypass', true) = 'on');

ALTER TABLE audit_logs ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_logs
    USING (org_id = current_setting('app.org_id', true) OR current_setting('app.rls_bypass', true) = 'on')
    WITH CHECK (org_id = current_setting('app.org_id', true) OR current_setting('app.rls_bypass', true) = 'on');

ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON api_keys
    USING (org_id = current_setting('app.org_id', true) OR current_setting('app.rls_bypass', true) = 'on')
    WITH CHECK (org_id = current_setting('app.org_id', true) OR current_setting('app.rls_bypass', true) = 'on');
