-- no-transaction
-- Tool-server plugins (the `tool-server` world, kind `tool`: MCP clients
-- such as the built-in `mcp`) join the registry. SQLite cannot change a
-- CHECK in place, so `plugins` is rebuilt with foreign keys off (as
-- SQLite's documented procedure does it), so that dropping the old table
-- does not cascade to `plugin_versions`, whose rows keep pointing at the
-- same ids.
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE plugins_new (
    id                TEXT PRIMARY KEY,
    org_id            TEXT REFERENCES organizations(id) ON DELETE CASCADE,
    scope             TEXT NOT NULL,              -- 'platform' or the organization id: unique with name
    name              TEXT NOT NULL,
    kind              TEXT NOT NULL CHECK (kind IN ('provider', 'router', 'condition', 'tool')),
    status            TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    active_version    TEXT,
    previous_version  TEXT,                       -- what a rollback goes back to
    builtin           INTEGER NOT NULL DEFAULT 0, -- 1: ships with the server
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
INSERT INTO plugins_new (id, org_id, scope, name, kind, status, active_version, previous_version,
                         builtin, created_at, updated_at)
    SELECT id, org_id, scope, name, kind, status, active_version, previous_version,
           builtin, created_at, updated_at FROM plugins;
DROP TABLE plugins;
ALTER TABLE plugins_new RENAME TO plugins;
CREATE UNIQUE INDEX plugins_scope_name_idx ON plugins (scope, name);
COMMIT;
PRAGMA foreign_keys = ON;
