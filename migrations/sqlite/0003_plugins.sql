-- Plugin registry (SQLite). Same tables, columns and meaning as
-- migrations/postgres/0003_plugins.sql.

-- Component bytes, content-addressed: the same bytes are stored once,
-- whoever uploads them and under whatever name.
CREATE TABLE plugin_blobs (
    sha256      TEXT PRIMARY KEY,
    bytes       BLOB NOT NULL,
    size_bytes  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
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
    builtin           INTEGER NOT NULL DEFAULT 0, -- 1: ships with the server
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE UNIQUE INDEX plugins_scope_name_idx ON plugins (scope, name);

-- Every uploaded version of a plugin.
CREATE TABLE plugin_versions (
    id                 TEXT PRIMARY KEY,
    plugin_id          TEXT NOT NULL REFERENCES plugins(id) ON DELETE CASCADE,
    org_id             TEXT REFERENCES organizations(id) ON DELETE CASCADE,
    version            TEXT NOT NULL,
    sha256             TEXT NOT NULL REFERENCES plugin_blobs(sha256),
    size_bytes         INTEGER NOT NULL,
    description        TEXT NOT NULL,
    manifest           TEXT NOT NULL,             -- the manifest as uploaded (TOML)
    info               TEXT NOT NULL,             -- JSON: what the component's info() said
    outbound_hosts     TEXT NOT NULL,             -- JSON array
    limits             TEXT NOT NULL,             -- JSON: effective limits of its calls
    config_schema      TEXT,                      -- JSON schema of its settings
    signed             INTEGER NOT NULL DEFAULT 0,
    hosts_approved_by  TEXT,                      -- user id, or 'platform' when none needed approval
    hosts_approved_at  INTEGER,
    uploaded_by        TEXT REFERENCES users(id) ON DELETE SET NULL,
    uploaded_at        INTEGER NOT NULL
);
CREATE UNIQUE INDEX plugin_versions_plugin_version_idx ON plugin_versions (plugin_id, version);
CREATE INDEX plugin_versions_sha_idx ON plugin_versions (sha256);
