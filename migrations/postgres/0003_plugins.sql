-- Plugin registry (PostgreSQL). Same tables, columns and meaning as
-- migrations/sqlite/0003_plugins.sql.

-- Component bytes, content-addressed: the same bytes are stored once,
-- whoever uploads them and under whatever name. Belongs to no tenant (rows
-- are reached only through a version the caller may see).
CREATE TABLE plugin_blobs (
    sha256      TEXT PRIMARY KEY,
    bytes       BYTEA NOT NULL,
    size_bytes  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- A named plugin: a platform plugin (org_id NULL, every organization may use
-- it) or an organization's own (visible to and used by that organization only).
CREATE TABLE plugins (
    id                TEXT PRIMARY KEY,
    org_id            TEXT REFERENCES organizations(id) ON DELETE CASCADE,
    scope             TEXT NOT NULL,              -- 'platform' or the organization id: unique with name
    name              TEXT NOT NULL,
    kind              TEXT NOT NULL CHECK (kind IN ('provider', 'router', 'condition')),
    status            TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    active_version    TEXT,
    previous_version  TEXT,                       -- what a rollback goes back to
    builtin           BIGINT NOT NULL DEFAULT 0,  -- 1: ships with the server
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);
CREATE UNIQUE INDEX plugins_scope_name_idx ON plugins (scope, name);

-- Every uploaded version of a plugin.
CREATE TABLE plugin_versions (
    id                 TEXT PRIMARY KEY,
    plugin_id          TEXT NOT NULL REFERENCES plugins(id) ON DELETE CASCADE,
    org_id             TEXT REFERENCES organizations(id) ON DELETE CASCADE,
    version            TEXT NOT NULL,
    sha256             TEXT NOT NULL REFERENCES plugin_blobs(sha256),
    size_bytes         BIGINT NOT NULL,
    description        TEXT NOT NULL,
    manifest           TEXT NOT NULL,             -- the manifest as uploaded (TOML)
    info               TEXT NOT NULL,             -- JSON: what the component's info() said
    outbound_hosts     TEXT NOT NULL,             -- JSON array
    limits             TEXT NOT NULL,             -- JSON: effective limits of its calls
    config_schema      TEXT,                      -- JSON schema of its settings
    signed             BIGINT NOT NULL DEFAULT 0,
    hosts_approved_by  TEXT,                      -- user id, or 'platform' when none needed approval
    hosts_approved_at  BIGINT,
    uploaded_by        TEXT REFERENCES users(id) ON DELETE SET NULL,
    uploaded_at        BIGINT NOT NULL
);
CREATE UNIQUE INDEX plugin_versions_plugin_version_idx ON plugin_versions (plugin_id, version);
CREATE INDEX plugin_versions_sha_idx ON plugin_versions (sha256);

-- Tenants see the platform's plugins and their own; they write only their own.
ALTER TABLE plugins ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON plugins
    USING (org_id IS NULL OR org_id = current_setting('app.org_id', true) OR current_setting('app.rls_bypass', true) = 'on')
    WITH CHECK (org_id = current_setting('app.org_id', true) OR current_setting('app.rls_bypass', true) = 'on');
ALTER TABLE plugin_versions ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON plugin_versions
    USING (org_id IS NULL OR org_id = current_setting('app.org_id', true) OR current_setting('app.rls_bypass', true) = 'on')
    WITH CHECK (org_id = current_setting('app.org_id', true) OR current_setting('app.rls_bypass', true) = 'on');
