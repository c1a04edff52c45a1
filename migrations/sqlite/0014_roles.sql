-- Custom roles: an organization's own named sets of permissions
-- (`auth/permissions.rs` names them), which memberships, invitations and
-- API keys may carry besides the four built-in roles. The role columns
-- lose their fixed lists (SQLite rebuilds the tables to drop a CHECK); the
-- application checks a name against the built-in roles and the
-- organization's `org_roles` before storing it.
CREATE TABLE org_roles (
    org_id       TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    description  TEXT,
    permissions  TEXT NOT NULL,               -- JSON array of permission names
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (org_id, name)
);

CREATE TABLE memberships_new (
    org_id      TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role <> '' AND role <> 'admin'),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
INSERT INTO memberships_new SELECT org_id, user_id, role, created_at, updated_at FROM memberships;
DROP TABLE memberships;
ALTER TABLE memberships_new RENAME TO memberships;
CREATE INDEX memberships_user_idx ON memberships (user_id);

CREATE TABLE invitations_new (
    id           TEXT PRIMARY KEY,
    org_id       TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    email        TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role <> '' AND role <> 'admin'),
    token_hash   TEXT NOT NULL UNIQUE,
    invited_by   TEXT REFERENCES users(id) ON DELETE SET NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    accepted_at  INTEGER,
    accepted_by  TEXT REFERENCES users(id) ON DELETE SET NULL
);
INSERT INTO invitations_new SELECT id, org_id, email, role, token_hash, invited_by, created_at,
    expires_at, accepted_at, accepted_by FROM invitations;
DROP TABLE invitations;
ALTER TABLE invitations_new RENAME TO invitations;
CREATE INDEX invitations_org_idx ON invitations (org_id, created_at);

CREATE TABLE api_keys_new (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    role            TEXT NOT NULL CHECK (role <> ''),
    key_hash        TEXT NOT NULL UNIQUE,           -- sha256 of the full key
    prefix          TEXT NOT NULL,                  -- first characters, for recognition
    created_at      INTEGER NOT NULL,
    last_used_at    INTEGER,
    revoked_at      INTEGER,
    expires_at      INTEGER,
    revoked_reason  TEXT
);
INSERT INTO api_keys_new SELECT id, org_id, user_id, name, role, key_hash, prefix, created_at,
    last_used_at, revoked_at, expires_at, revoked_reason FROM api_keys;
DROP TABLE api_keys;
ALTER TABLE api_keys_new RENAME TO api_keys;
CREATE INDEX api_keys_org_idx ON api_keys (org_id, created_at);
